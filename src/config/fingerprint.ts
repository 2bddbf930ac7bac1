// Names a secret without showing it: `sha256:` and the first 16 hex digits of its SHA-256, enough to tell which
// key a gateway holds (and that two places hold the same one), nothing to authenticate with. One function for the
// Worker's status route and `aml-edge gateway dev`, so an operator can compare what each prints.
// Runtime-agnostic: WebCrypto only.
export async function keyFingerprint(secret: unknown): Promise<string> {
  if (typeof secret !== "string" || secret.length === 0) return "missing";
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(secret));
  return `sha256:${toHex(new Uint8Array(digest)).slice(0, 16)}`;
}

export function toHex(bytes: Uint8Array): string {
  let hex = "";
  for (const byte of bytes) hex += byte.toString(16).padStart(2, "0");
  return hex;
}
