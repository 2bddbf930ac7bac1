// Token verification for one request: the pre-checked token's unverified `iss` only picks the issuer profile;
// everything else is decided by jose with that issuer's pinned options and its own key set, plus the checks jose
// leaves to the caller (lifetime, tenant, revocation).
import { type JWTPayload, jwtVerify } from "jose";
import { ASYMMETRIC_ALGORITHMS, type IssuerConfig } from "../config/schema.ts";
import { type IssuerKeys, UnknownKeyError } from "./keys.ts";
import { PrecheckError, type PrecheckedToken, precheckToken } from "./precheck.ts";
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

/**
 * Successful verifications, by exact token text. Clients reuse one token for many requests, and pre-check plus
 * verification is most of the gateway's CPU per request (see the benchmark). Only successes are kept: a refusal
 * is always decided afresh, so nothing about a denial can be replayed from here, and a different spelling of a
 * token (ECDSA malleability) is just a miss that is verified in full. A hit is honoured only while the issuer
 * profile (config version) and its key set are the ones that verified it, and the time checks still pass.
 */
interface VerifiedEntry {
  profile: IssuerProfile;
  keyGeneration: number;
  claims: JWTPayload & Record<string, unknown>;
  exp: number;
  iat: number;
  cachedUntilMs: number;
}
const verified = new Map<string, VerifiedEntry>();
const MAX_VERIFIED_ENTRIES = 2048;
const MAX_VERIFIED_AGE_MS = 5 * 60 * 1000;

function cachedVerification(token: string, nowMs: number): VerifiedToken | undefined {
  const entry = verified.get(token);
  if (!entry) return undefined;
  const { profile } = entry;
  const now = Math.floor(nowMs / 1000);
  const tolerance = profile.config.clockToleranceSeconds;
  const maxAge = profile.config.maxTokenAgeSeconds;
  // nbf and a future iat can only have become valid since; expiry and age can only have run out.
  const stillValid =
    nowMs < entry.cachedUntilMs &&
    entry.keyGeneration === profile.keys.generation &&
    entry.exp > now - tolerance &&
    (maxAge === undefined || now - entry.iat - tolerance <= maxAge);
  if (!stillValid) {
    verified.delete(token);
    return undefined;
  }
  return { issuer: profile, claims: entry.claims };
}

function remember(token: string, result: VerifiedToken, nowMs: number): void {
  if (verified.size >= MAX_VERIFIED_ENTRIES) {
    // Maps iterate in insertion order: drop the oldest entry.
    const oldest = verified.keys().next();
    if (!oldest.done) verified.delete(oldest.value);
  }
  const { exp, iat } = result.claims as { exp: number; iat: number };
  verified.set(token, {
    profile: result.issuer,
    keyGeneration: result.issuer.keys.generation,
    claims: result.claims,
    exp,
    iat,
    cachedUntilMs: nowMs + MAX_VERIFIED_AGE_MS,
  });
}

export interface VerifyOptions {
  /** Use and fill the cache of successful verifications (default). The benchmark turns it off to time a full verify. */
  cache?: boolean;
}

export async function verifyToken(
  token: string,
  issuersByIss: ReadonlyMap<string, IssuerProfile>,
  waitUntil: (promise: Promise<unknown>) => void,
  options: VerifyOptions = {},
): Promise<VerifiedToken> {
  const useCache = options.cache ?? true;
  const nowMs = Date.now();
  if (useCache) {
    const hit = cachedVerification(token, nowMs);
    // The profile must still be the one configured for its issuer: a new config version builds new profiles.
    if (hit && issuersByIss.get(hit.issuer.config.issuer) === hit.issuer) return hit;
  }
  const result = await verifyUncached(precheckToken(token), issuersByIss, waitUntil);
  if (useCache) remember(token, result, nowMs);
  return result;
}

async function verifyUncached(
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
