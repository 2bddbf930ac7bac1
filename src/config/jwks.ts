// Which keys of an issuer's key set the gateway will ever verify with. One rule for both places keys enter: the
// snapshot taken when a config is compiled (it ships inside the Worker version) and the key sets the Worker
// fetches at run time. Runtime-agnostic: jose's base64url only.
import { base64url, type JSONWebKeySet, type JWK } from "jose";

/** Real key sets are a few KiB; a cap keeps a misconfigured URL (a web page, a large file) out. */
export const MAX_JWKS_BYTES = 256 * 1024;
const MAX_KEYS = 100;
/** Asymmetric only: an `oct` key would reopen HS* algorithm confusion. */
const PUBLIC_KEY_TYPES = new Set(["RSA", "EC", "OKP"]);
/** Private members of RSA (d, p, q, dp, dq, qi, oth), EC and OKP (d) keys, and a symmetric key's k. */
const PRIVATE_MEMBERS = new Set(["d", "p", "q", "dp", "dq", "qi", "oth", "k"]);
/** RFC 7518 §3.3: RSA keys for the RS and PS algorithms are at least 2048 bits (256 bytes of modulus). */
const MIN_RSA_MODULUS_BYTES = 256;
const CURVES: Record<string, ReadonlySet<string>> = {
  EC: new Set(["P-256", "P-384", "P-521"]),
  OKP: new Set(["Ed25519"]),
};

/**
 * Safe parameters: RSA only with the 65537 exponent and a modulus of at least 2048 bits (jose checks the size,
 * but nothing on the verify path checks the exponent unless workerd's strict crypto flag is on), EC and OKP only
 * on named curves.
 */
function hasSafeParameters(jwk: JWK): boolean {
  if (jwk.kty === "RSA") {
    if (jwk.e !== "AQAB" || typeof jwk.n !== "string") return false;
    try {
      const modulus = base64url.decode(jwk.n);
      const firstNonZero = modulus.findIndex((byte) => byte !== 0);
      return firstNonZero >= 0 && modulus.length - firstNonZero >= MIN_RSA_MODULUS_BYTES;
    } catch {
      return false;
    }
  }
  return typeof jwk.crv === "string" && (CURVES[jwk.kty as string]?.has(jwk.crv) ?? false);
}

/**
 * The public signature keys of a key set: asymmetric, `use` absent or `sig`, safe parameters, private members
 * removed (a key set that wrongly publishes one must not have it copied into a bundle). At most 100 keys.
 */
export function publicSigningKeys(value: unknown): JSONWebKeySet {
  if (typeof value !== "object" || value === null || !Array.isArray((value as { keys?: unknown }).keys)) {
    throw new Error("key set has no keys array");
  }
  const keys: JWK[] = [];
  for (const candidate of (value as { keys: unknown[] }).keys.slice(0, MAX_KEYS)) {
    if (typeof candidate !== "object" || candidate === null) continue;
    const jwk = candidate as JWK;
    if (typeof jwk.kty !== "string" || !PUBLIC_KEY_TYPES.has(jwk.kty)) continue;
    if (jwk.use !== undefined && jwk.use !== "sig") continue;
    if (!hasSafeParameters(jwk)) continue;
    keys.push(
      Object.fromEntries(Object.entries(jwk).filter(([member]) => !PRIVATE_MEMBERS.has(member))) as JWK,
    );
  }
  return { keys };
}
