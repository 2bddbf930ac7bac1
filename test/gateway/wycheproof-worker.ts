// A Worker used only by test/gateway/wycheproof.test.ts: it runs Wycheproof's JWS vectors through the gateway's own
// token-verification steps inside workerd, so the crypto, base64url decoding and JSON parsing under test are the
// ones production runs on (jose decodes with workerd's `Uint8Array.fromBase64`, not Node's code path).
//
// The steps are the gateway's, imported rather than re-implemented: `precheckCompactJws` (the strict gate every
// token passes first), then jose's `compactVerify` against a resolver built as src/gateway/keys.ts builds one
// (`sanitizeJwks` + `createLocalJWKSet`), with every asymmetric algorithm the gateway can pin. verify.ts calls
// `jwtVerify`, which is `compactVerify` plus JWT claim checks; the claim checks are left out because Wycheproof's
// payloads are arbitrary bytes (RFC 7520's are prose), not claim sets, and they are not what these vectors test.
//
// Type-checked by ./tsconfig.worker.json with the Workers runtime types, like the gateway it imports (keys.ts uses
// `caches` and workerd's CryptoKey), and excluded from the Node-typed root project. The test never imports this
// file: it bundles it with esbuild and talks to it over HTTP.
import { type CompactVerifyGetKey, compactVerify, createLocalJWKSet, importJWK, type JWK } from "jose";
import { ASYMMETRIC_ALGORITHMS } from "../../src/config/schema.ts";
import { sanitizeJwks } from "../../src/gateway/keys.ts";
import { PrecheckError, precheckCompactJws } from "../../src/gateway/precheck.ts";

/** One group's key material and tokens. Exactly one of `jwks` and `secretJwk` is given. */
export interface VerifyBatchRequest {
  /** A key set, used as an issuer's key set is: through `sanitizeJwks`. */
  jwks?: unknown;
  /** An `oct` key, for the HS256 groups only (see `pinnedSecretVerifier`). */
  secretJwk?: JWK;
  /** Either one token (answered with one verdict) or many (answered with `{ verdicts }`, in order). */
  token?: string;
  tokens?: string[];
}

export interface Verdict {
  accepted: boolean;
  /** Which step decided: the pre-check, jose, or the key material given (which then refuses every token). */
  stage: "accepted" | "precheck" | "jose" | "key";
  /** The gateway's reason code or jose's error code, then the message. */
  reason: string;
}

type Verifier = (token: string) => Promise<Verdict>;

/** The gateway's path for a key-set issuer: any asymmetric algorithm the config can pin, keys via sanitizeJwks. */
function keySetVerifier(jwks: unknown): Verifier {
  const resolve: CompactVerifyGetKey = createLocalJWKSet(sanitizeJwks(jwks));
  const algorithms = [...ASYMMETRIC_ALGORITHMS];
  return (token) => verifyWith(token, (jws) => compactVerify(jws, resolve, { algorithms }));
}

/**
 * The gateway never verifies HS* against a key set: sanitizeJwks drops `oct` keys by design, and verify.ts filters
 * HS* out of every issuer's algorithms, because a symmetric key reachable from a key set reopens the alg-confusion
 * attacks. The only way a symmetric key could ever be used is the one modelled here: a single secret key pinned by
 * configuration, imported with jose `importJWK`, verifying HS256 and nothing else. The pre-check still runs first.
 */
async function pinnedSecretVerifier(secretJwk: JWK): Promise<Verifier> {
  const key = await importJWK(secretJwk, "HS256");
  return (token) => verifyWith(token, (jws) => compactVerify(jws, key, { algorithms: ["HS256"] }));
}

async function verifyWith(token: string, verify: (jws: string) => Promise<unknown>): Promise<Verdict> {
  try {
    precheckCompactJws(token);
  } catch (error) {
    if (error instanceof PrecheckError) {
      return { accepted: false, stage: "precheck", reason: `${error.reason}: ${error.message}` };
    }
    throw error;
  }
  try {
    await verify(token);
    return { accepted: true, stage: "accepted", reason: "accepted" };
  } catch (error) {
    return { accepted: false, stage: "jose", reason: describe(error) };
  }
}

function describe(error: unknown): string {
  const code = (error as { code?: unknown } | null)?.code;
  const message = error instanceof Error ? error.message : String(error);
  return `${typeof code === "string" ? code : error instanceof Error ? error.name : "error"}: ${message}`;
}

async function verifierFor(body: VerifyBatchRequest): Promise<Verifier> {
  if ((body.jwks === undefined) === (body.secretJwk === undefined)) {
    throw new TypeError("give exactly one of jwks and secretJwk");
  }
  try {
    return body.secretJwk !== undefined
      ? await pinnedSecretVerifier(body.secretJwk)
      : keySetVerifier(body.jwks);
  } catch (error) {
    // Unusable key material refuses every token, as an issuer with a broken key set would.
    const verdict: Verdict = { accepted: false, stage: "key", reason: describe(error) };
    return async () => verdict;
  }
}

function json(value: unknown, status = 200): Response {
  return new Response(JSON.stringify(value), { status, headers: { "content-type": "application/json" } });
}

export default {
  async fetch(request) {
    if (request.method !== "POST") return json({ error: "POST a VerifyBatchRequest" }, 405);
    let body: VerifyBatchRequest;
    let verify: Verifier;
    try {
      body = (await request.json()) as VerifyBatchRequest;
      verify = await verifierFor(body);
    } catch (error) {
      return json({ error: describe(error) }, 400);
    }
    if (Array.isArray(body.tokens)) {
      // One at a time, in request order: the test maps verdicts back to tcIds by position.
      const verdicts: Verdict[] = [];
      for (const token of body.tokens) verdicts.push(await verify(token));
      return json({ verdicts });
    }
    if (typeof body.token === "string") return json(await verify(body.token));
    return json({ error: "give token or tokens" }, 400);
  },
} satisfies ExportedHandler;
