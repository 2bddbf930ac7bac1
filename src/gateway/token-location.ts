// Where a token may come from: the Authorization header, once. A token anywhere else (query string, cookie, a
// custom header) or two tokens make the request ambiguous, and an ambiguous request is refused rather than
// resolved: a proxy that picks one token while a later hop picks another is a smuggling bug (Kong refuses too).
import { PrecheckError } from "./precheck.ts";

/** Query parameters that carry tokens in the wild (RFC 6750 §2.3 and common variants). */
const TOKEN_PARAMETERS = new Set(["access_token", "id_token", "token", "jwt", "bearer", "authorization"]);
/** A JWS header is a JSON object, so its base64url starts with `eyJ` (`{"`); two dots follow in a token. */
const TOKEN_LIKE = /eyJ[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]*\./;
/** `scheme credentials`, as one entry of a repeated Authorization header. */
const CREDENTIAL = /^[A-Za-z][A-Za-z0-9-]* +[A-Za-z0-9._~+/=-]+$/;
const TOKEN_CHARACTERS = /^[A-Za-z0-9._~+/=-]+$/;

/**
 * The client's headers, read in one pass: every Headers call crosses from JavaScript into the runtime, so the
 * request path reads each value it needs from here instead. The same pass notes the first header other than
 * Authorization that carries something token-like; it sees every entry, including each of several Set-Cookie
 * headers, which a lookup by name would not.
 */
export interface ClientHeaders {
  get(name: string): string | null;
  readonly tokenLikeHeader: string | undefined;
}

export function readClientHeaders(headers: Headers): ClientHeaders {
  const values = new Map<string, string>();
  let tokenLikeHeader: string | undefined;
  headers.forEach((value, name) => {
    if (tokenLikeHeader === undefined && name !== "authorization" && TOKEN_LIKE.test(value)) {
      tokenLikeHeader = name;
    }
    // Headers.get joins repeated headers with ", "; so does this. Only Set-Cookie is ever handed over twice (every
    // other name arrives already joined), so only it needs the second lookup.
    const earlier = name === "set-cookie" ? values.get(name) : undefined;
    values.set(name, earlier === undefined ? value : `${earlier}, ${value}`);
  });
  return { get: (name) => values.get(name) ?? null, tokenLikeHeader };
}

export function extractBearerToken(headers: ClientHeaders, url: URL): string {
  for (const [name, value] of url.search === "" ? [] : url.searchParams) {
    if (TOKEN_PARAMETERS.has(name.toLowerCase()) || TOKEN_LIKE.test(value)) {
      throw new PrecheckError("token_in_unexpected_location", "a token was sent in the query string");
    }
  }
  if (headers.tokenLikeHeader !== undefined) {
    throw new PrecheckError(
      "token_in_unexpected_location",
      `a token was sent in the ${headers.tokenLikeHeader} header`,
    );
  }
  const authorization = headers.get("authorization");
  if (authorization === null || authorization.trim() === "") {
    throw new PrecheckError("token_missing", "no Authorization header");
  }
  // Repeated Authorization headers reach the Worker joined with ", ". Only a value whose every part is itself a
  // credential counts as several tokens; anything else with a comma (a JWS JSON serialization) is just malformed.
  if (authorization.includes(",")) {
    const parts = authorization.split(",");
    if (parts.every((part) => CREDENTIAL.test(part.trim()))) {
      throw new PrecheckError("multiple_tokens", "more than one credential");
    }
    throw new PrecheckError("token_malformed", "Authorization header is malformed");
  }
  const match = /^([A-Za-z][A-Za-z0-9-]*)(?: +(.*))?$/.exec(authorization.trim());
  if (!match) throw new PrecheckError("token_malformed", "Authorization header is malformed");
  const [, scheme = "", credentials] = match;
  if (scheme.toLowerCase() !== "bearer") {
    throw new PrecheckError("unsupported_auth_scheme", "only the Bearer scheme is accepted");
  }
  if (credentials === undefined || credentials === "")
    throw new PrecheckError("token_missing", "empty bearer");
  if (/\s/.test(credentials)) {
    const several = credentials.split(/\s+/).every((piece) => TOKEN_CHARACTERS.test(piece));
    throw new PrecheckError(
      several ? "multiple_tokens" : "token_malformed",
      several ? "more than one credential" : "bearer value is malformed",
    );
  }
  return credentials;
}
