// What counts as loopback, once: the lint accepts plain http:// only to these hosts in local mode, and the sandbox
// talks only to these hosts. The two must agree, or `gateway dev` would start stand-ins the lint then refuses.
/** localhost, 127.0.0.0/8 or [::1], as the WHATWG URL parser writes a hostname (it normalises `127.1`). */
export function isLoopbackHostname(hostname: string): boolean {
  const host = hostname.toLowerCase();
  if (host === "localhost" || host === "[::1]" || host === "::1") return true;
  return /^127(?:\.(?:25[0-5]|2[0-4]\d|1?\d?\d)){3}$/.test(host);
}
