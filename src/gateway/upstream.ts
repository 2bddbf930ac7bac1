// The call to Azure ML. Only an allowlist of client headers crosses: the client's Authorization, any pin it was
// not entitled to, and every identity or forwarding header (in any spelling, underscores included) stay behind,
// because nothing but the allowlist is ever copied. The endpoint credential is injected here and nowhere else.
import type { RouteConfig } from "../config/schema.ts";
import type { ReasonCode } from "./reasons.ts";
import type { ClientHeaders } from "./token-location.ts";

/** Client headers that describe the payload; everything else is dropped unless the config adds it. */
const CONTENT_HEADERS = ["content-type", "content-encoding", "accept"];
/** Upstream response headers returned to the client (plus ours, set by the caller). */
const RESPONSE_HEADERS = ["content-type", "content-encoding", "retry-after", "x-ms-request-id"];
/** Azure ML statuses passed through with their Retry-After: model error, throttling, overload. */
const PASS_THROUGH_RETRY = new Set([424, 429, 503]);
/** What the timer's side of the race resolves to. */
const TIMED_OUT = Symbol("timed out");

export class UpstreamError extends Error {
  readonly reason: ReasonCode;
  readonly upstreamStatus: number | undefined;
  constructor(reason: ReasonCode, message: string, upstreamStatus?: number) {
    super(message);
    this.name = "UpstreamError";
    this.reason = reason;
    this.upstreamStatus = upstreamStatus;
  }
}

export type SecretEnv = Record<string, unknown>;

/** The bearer credential for the route's endpoint, from Worker secrets. Never logged, never returned. */
export function upstreamCredential(route: RouteConfig, env: SecretEnv, nowMs: number): string {
  const auth = route.upstreamAuth;
  if (auth.mode === "key") {
    const binding = auth.active === "primary" ? auth.primarySecret : auth.secondarySecret;
    const key = env[binding];
    if (typeof key !== "string" || key.length === 0) {
      throw new UpstreamError("upstream_credential_missing", `secret ${binding} is not set`);
    }
    return key;
  }
  const token = parseAmlToken(env[auth.tokenSecret]);
  if (!token)
    throw new UpstreamError("upstream_credential_missing", `secret ${auth.tokenSecret} is not a token`);
  if (token.expiresAtMs <= nowMs) {
    throw new UpstreamError(
      "upstream_credential_expired",
      `secret ${auth.tokenSecret} holds an expired token`,
    );
  }
  return token.accessToken;
}

const amlTokenCache = new Map<string, { accessToken: string; expiresAtMs: number }>();

/** The JSON Azure ML's getToken returns: accessToken, expiryTimeUtc (epoch seconds), refreshAfterTimeUtc. */
function parseAmlToken(value: unknown): { accessToken: string; expiresAtMs: number } | undefined {
  if (typeof value !== "string") return undefined;
  const cached = amlTokenCache.get(value);
  if (cached) return cached;
  try {
    const parsed = JSON.parse(value) as { accessToken?: unknown; expiryTimeUtc?: unknown };
    if (typeof parsed.accessToken !== "string" || typeof parsed.expiryTimeUtc !== "number") return undefined;
    const token = { accessToken: parsed.accessToken, expiresAtMs: parsed.expiryTimeUtc * 1000 };
    amlTokenCache.clear();
    amlTokenCache.set(value, token);
    return token;
  } catch {
    return undefined;
  }
}

/**
 * The body to send upstream, refused when larger than the route's limit before anything is sent. With a declared
 * Content-Length the runtime holds the body to that length, so it streams through untouched; without one it is
 * read and counted here.
 */
export async function limitedBody(
  request: Request,
  headers: ClientHeaders,
  maxBytes: number,
): Promise<ReadableStream | ArrayBuffer | null> {
  if (!request.body) return null;
  const declared = headers.get("content-length");
  if (declared !== null && /^[0-9]+$/.test(declared)) {
    if (Number(declared) > maxBytes)
      throw new UpstreamError("body_too_large", "declared body exceeds the route limit");
    return request.body;
  }
  const reader = request.body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.byteLength;
    if (size > maxBytes) {
      await reader.cancel();
      throw new UpstreamError("body_too_large", "body exceeds the route limit");
    }
    chunks.push(value);
  }
  const body = new Uint8Array(size);
  let offset = 0;
  for (const chunk of chunks) {
    body.set(chunk, offset);
    offset += chunk.byteLength;
  }
  return body.buffer;
}

export interface UpstreamCall {
  route: RouteConfig;
  deployment: string;
  credential: string;
  requestId: string;
  forwardHeaders: readonly string[];
  body: ReadableStream | ArrayBuffer | null;
  /** The gateway's own headers for the client's response, set beside the allowlisted upstream ones. */
  responseHeaders: Record<string, string>;
}

// Headers are built as plain records, not Headers objects: fetch and the Response constructor read a record in
// one call, where every Headers.set or .get is a separate crossing into the runtime and each Headers object is
// one more runtime object to create and collect.
export function buildUpstreamHeaders(client: ClientHeaders, call: UpstreamCall): Record<string, string> {
  const headers: Record<string, string> = {};
  for (const names of [CONTENT_HEADERS, call.forwardHeaders]) {
    for (const name of names) {
      const value = client.get(name);
      if (value !== null) headers[name] = value;
    }
  }
  headers.authorization = `Bearer ${call.credential}`;
  headers["azureml-model-deployment"] = call.deployment;
  // Azure's correlation header. Azure ML's traffic log (the AmlOnlineEndpointTrafficLog table) keeps it as
  // XMSClientRequestId, so an audit record and Azure ML's line for the same call share this id.
  headers["x-ms-client-request-id"] = call.requestId;
  return headers;
}

/**
 * Calls Azure ML and maps its answer: pass-through for success and client errors (the allowlisted headers plus
 * `call.responseHeaders`, in one new Response), 502/504 for failures.
 */
export async function callUpstream(
  method: string,
  client: ClientHeaders,
  call: UpstreamCall,
): Promise<Response> {
  // The limit is on the time to the upstream's response headers: a timer races the call and is cleared as soon as
  // the headers arrive. A timed-out call is not aborted here: the 504 ends the request, and the runtime cancels the
  // request's outstanding calls when it ends, so Azure ML sees the connection close at the limit
  // (test/gateway/upstream.test.ts checks it). Work handed to ctx.waitUntil (the Queue copy of the audit record, a
  // key-set refresh) keeps the request alive, and the timed-out call open, until it finishes. In exchange, no
  // AbortController and signal are made for every request: about 6 µs of workerd's CPU a request under the
  // benchmark. AbortSignal.timeout would leave its timer pending for the full limit after every request.
  const limit = Promise.withResolvers<typeof TIMED_OUT>();
  const timer = setTimeout(() => limit.resolve(TIMED_OUT), call.route.limits.timeoutMs);
  let outcome: Response | typeof TIMED_OUT;
  try {
    outcome = await Promise.race([
      fetch(call.route.scoringUri, {
        method,
        headers: buildUpstreamHeaders(client, call),
        body: call.body,
        redirect: "manual",
      }),
      limit.promise,
    ]);
  } catch {
    throw new UpstreamError("upstream_error", "upstream unreachable");
  } finally {
    clearTimeout(timer);
  }
  if (outcome === TIMED_OUT) throw new UpstreamError("upstream_timeout", "upstream timed out");
  const response = outcome;
  const status = response.status;
  if (status === 401 || status === 403) {
    // Our endpoint key was refused: the client's token is fine, so the client must not see an auth error.
    await response.body?.cancel();
    throw new UpstreamError("upstream_auth_failed", "upstream refused the endpoint credential", status);
  }
  if ((status >= 500 && !PASS_THROUGH_RETRY.has(status)) || (status >= 300 && status < 400)) {
    await response.body?.cancel();
    throw new UpstreamError("upstream_error", `upstream answered ${status}`, status);
  }
  const upstreamHeaders = response.headers;
  const headers: Record<string, string> = {};
  for (const name of RESPONSE_HEADERS) {
    const value = upstreamHeaders.get(name);
    if (value !== null) headers[name] = value;
  }
  Object.assign(headers, call.responseHeaders);
  return new Response(response.body, { status, headers });
}
