// Token verification for one request: the pre-checked token's unverified `iss` only picks the issuer profile;
// everything else is decided by jose with that issuer's pinned options and its own key set, plus the checks jose
// leaves to the caller (lifetime, tenant, revocation).
import { type JWTPayload, jwtVerify } from "jose";
import { ASYMMETRIC_ALGORITHMS, type IssuerConfig } from "../config/schema.ts";
import { type IssuerKeys, UnknownKeyError } from "./keys.ts";
import { PrecheckError, type PrecheckedToken } from "./precheck.ts";
import type { ReasonCode } from "./reasons.ts";

export interface IssuerProfile {
  config: IssuerConfig;
  keys: IssuerKeys;
  /** The pinned algorithms minus anything symmetric: HS* never verifies against a key set. */
  algorithms: string[];
  revoked: ReadonlySet<string>;
}

export function issuerProfile(config: IssuerConfig, keys: IssuerKeys): IssuerProfile {
  const asymmetric = new Set<string>(ASYMMETRIC_ALGORITHMS);
  return {
    config,
    keys,
    algorithms: config.algorithms.filter((alg) => asymmetric.has(alg)),
    revoked: new Set(config.revokedJti),
  };
}

export class VerificationError extends Error {
  readonly reason: ReasonCode;
  /** The issuer profile name, when one was chosen. */
  readonly issuer: string | undefined;
  constructor(reason: ReasonCode, message: string, issuer?: string) {
    super(message);
    this.name = "VerificationError";
    this.reason = reason;
    this.issuer = issuer;
  }
}

export interface VerifiedToken {
  issuer: IssuerProfile;
  claims: JWTPayload & Record<string, unknown>;
}

export async function verifyToken(
  prechecked: PrecheckedToken,
  issuersByIss: ReadonlyMap<string, IssuerProfile>,
  waitUntil: (promise: Promise<unknown>) => void,
): Promise<VerifiedToken> {
  const iss = prechecked.unverifiedClaims.iss;
  const profile = typeof iss === "string" ? issuersByIss.get(iss) : undefined;
  if (!profile) throw new VerificationError("unknown_issuer", "token issuer is not configured");
  const { config } = profile;
  const fail = (reason: ReasonCode, message: string) => new VerificationError(reason, message, config.name);

  const alg = prechecked.header.alg as string;
  if (!profile.algorithms.includes(alg)) throw fail("alg_not_allowed", `algorithm ${alg} is not pinned`);
  if (config.requireKid && typeof prechecked.header.kid !== "string") {
    throw fail("missing_kid", "token has no kid");
  }

  let claims: JWTPayload;
  try {
    const result = await jwtVerify(prechecked.token, profile.keys.resolverFor(waitUntil), {
      issuer: config.issuer,
      audience: config.audiences ?? [],
      algorithms: profile.algorithms,
      clockTolerance: config.clockToleranceSeconds,
      ...(config.maxTokenAgeSeconds !== undefined ? { maxTokenAge: config.maxTokenAgeSeconds } : {}),
      requiredClaims: ["exp", "iat"],
      ...(config.typ !== undefined ? { typ: config.typ } : {}),
    });
    claims = result.payload;
  } catch (error) {
    throw classifyJoseError(error, config.name);
  }

  // jose bounds the token's age but not its stated lifetime; a long-lived token is refused outright.
  const { exp, iat } = claims as { exp: number; iat: number };
  if (config.maxTokenAgeSeconds !== undefined && exp - iat > config.maxTokenAgeSeconds) {
    throw fail("lifetime_too_long", "token lifetime exceeds maxTokenAgeSeconds");
  }
  if (config.tenants && !(typeof claims.tid === "string" && config.tenants.includes(claims.tid))) {
    throw fail("tenant_not_allowed", "token tenant is not allowed");
  }
  if (typeof claims.jti === "string" && profile.revoked.has(claims.jti)) {
    throw fail("token_revoked", "token id is revoked");
  }
  return { issuer: profile, claims: claims as JWTPayload & Record<string, unknown> };
}

function classifyJoseError(error: unknown, issuer: string): VerificationError {
  if (error instanceof VerificationError || error instanceof PrecheckError) {
    return new VerificationError(error.reason, error.message, issuer);
  }
  if (error instanceof UnknownKeyError) {
    return new VerificationError(error.haveKeys ? "unknown_kid" : "keys_unavailable", error.message, issuer);
  }
  const { code, claim, reason } = (error ?? {}) as { code?: string; claim?: string; reason?: string };
  const message = error instanceof Error ? error.message : "verification failed";
  const as = (reasonCode: ReasonCode) => new VerificationError(reasonCode, message, issuer);
  switch (code) {
    case "ERR_JWT_EXPIRED":
      return as(claim === "iat" ? "token_too_old" : "token_expired");
    case "ERR_JWT_CLAIM_VALIDATION_FAILED":
      if (claim === "nbf") return as("token_not_yet_valid");
      if (claim === "iat" && reason === "check_failed") return as("iat_in_future");
      if (claim === "aud") return as("audience_mismatch");
      if (claim === "iss") return as("issuer_mismatch");
      if (claim === "typ") return as("typ_mismatch");
      return as("claim_invalid");
    case "ERR_JOSE_ALG_NOT_ALLOWED":
      return as("alg_not_allowed");
    case "ERR_JWS_SIGNATURE_VERIFICATION_FAILED":
      return as("signature_invalid");
    case "ERR_JWKS_NO_MATCHING_KEY":
    case "ERR_JWKS_MULTIPLE_MATCHING_KEYS":
      return as("unknown_kid");
    default:
      // Malformed keys, unsupported key sizes (RSA < 2048), crit/b64 and the like all end here.
      return as(code === undefined ? "signature_invalid" : "token_malformed");
  }
}
