// Every decision the gateway makes has one reason code. The code goes into the audit record; the HTTP status and
// the RFC 6750 error follow from it, so a cause never leaks to the client beyond a short description.

export interface ReasonInfo {
  status: number;
  /** RFC 6750 §3.1 error code for the WWW-Authenticate header; absent when no Bearer challenge applies. */
  bearerError?: "invalid_request" | "invalid_token" | "insufficient_scope";
  /** A short, fixed description safe to show any client. */
  description: string;
}

const invalidToken = (description: string): ReasonInfo => ({
  status: 401,
  bearerError: "invalid_token",
  description,
});

export const REASONS = {
  allowed: { status: 200, description: "allowed" },
  status_served: { status: 200, description: "status served" },
  token_missing: { status: 401, description: "a bearer token is required" },
  unsupported_auth_scheme: { status: 401, description: "only the Bearer scheme is accepted" },
  multiple_tokens: {
    status: 400,
    bearerError: "invalid_request",
    description: "more than one token was sent",
  },
  token_in_unexpected_location: {
    status: 400,
    bearerError: "invalid_request",
    description: "tokens are accepted only in the Authorization header",
  },
  token_too_large: invalidToken("the token is too large"),
  token_malformed: invalidToken("the token is malformed"),
  duplicate_json_member: invalidToken("the token is malformed"),
  header_forbidden_member: invalidToken("the token header is not accepted"),
  unknown_issuer: invalidToken("the token issuer is not accepted"),
  alg_not_allowed: invalidToken("the token algorithm is not accepted"),
  missing_kid: invalidToken("the token has no key id"),
  unknown_kid: invalidToken("the token key is not known"),
  keys_unavailable: { status: 503, description: "signing keys are unavailable; retry later" },
  signature_invalid: invalidToken("the token signature is invalid"),
  token_expired: invalidToken("the token has expired"),
  token_not_yet_valid: invalidToken("the token is not yet valid"),
  iat_in_future: invalidToken("the token was issued in the future"),
  token_too_old: invalidToken("the token is too old"),
  lifetime_too_long: invalidToken("the token lifetime is too long"),
  audience_mismatch: invalidToken("the token audience is not accepted"),
  issuer_mismatch: invalidToken("the token issuer is not accepted"),
  tenant_not_allowed: invalidToken("the token tenant is not accepted"),
  typ_mismatch: invalidToken("the token type is not accepted"),
  claim_invalid: invalidToken("the token claims are invalid"),
  token_revoked: invalidToken("the token has been revoked"),
  no_permission: {
    status: 403,
    bearerError: "insufficient_scope",
    description: "the token does not grant this operation",
  },
  route_not_found: { status: 404, description: "no such route" },
  method_not_allowed: { status: 405, description: "method not allowed on this route" },
  pin_unknown_deployment: { status: 400, description: "the pinned deployment does not serve this route" },
  body_too_large: { status: 413, description: "the request body is too large" },
  upstream_credential_missing: { status: 502, description: "the upstream is not available" },
  upstream_credential_expired: { status: 502, description: "the upstream is not available" },
  upstream_auth_failed: { status: 502, description: "the upstream is not available" },
  upstream_error: { status: 502, description: "the upstream failed" },
  upstream_timeout: { status: 504, description: "the upstream did not answer in time" },
  no_deployment: { status: 503, description: "no deployment takes traffic on this route" },
  config_invalid: { status: 503, description: "the gateway is not configured" },
  internal_error: { status: 500, description: "internal error" },
} as const satisfies Record<string, ReasonInfo>;

export type ReasonCode = keyof typeof REASONS;
