// A real OIDC-style token issuer on loopback, for the sandbox and for tests of the gateway's token verification:
// discovery document, a JWKS of public keys, and tokens signed with jose. Tests can rotate and retire keys, plant
// hostile keys in the key set, take the key set down and count how often the gateway fetched it.
import { randomUUID } from "node:crypto";
import {
  type CryptoKey,
  calculateJwkThumbprint,
  exportJWK,
  generateKeyPair,
  type JWK,
  type JWTHeaderParameters,
  type JWTPayload,
  SignJWT,
} from "jose";
import { ASYMMETRIC_ALGORITHMS } from "../config/schema.ts";
import { type LoopbackServer, type Mount, sendJson, sleep, startLoopbackServer } from "./http-server.ts";

export type SigningAlgorithm = (typeof ASYMMETRIC_ALGORITHMS)[number];
export const SIGNING_ALGORITHMS: readonly SigningAlgorithm[] = ASYMMETRIC_ALGORITHMS;

export interface TokenIssuerOptions {
  /** The `iss` value. Default: the issuer's base URL, `http://127.0.0.1:<port><path>`. */
  issuer?: string;
  /** Path prefix of the discovery document and the key set, e.g. `/tenant-a/v2.0`. Default: none. */
  path?: string;
  /** Where the key set is served. Default: `<path>/jwks`. */
  jwksPath?: string;
  /** Ignored when `server` is given. Default: an ephemeral port. */
  port?: number;
  /** Serve on an existing loopback server (shared with other stand-ins) instead of starting one. */
  server?: LoopbackServer;
  /** One signing key per algorithm; the first is the default signer. Default: ["RS256"]. */
  algorithms?: SigningAlgorithm[];
}

export interface IssuerKey {
  readonly kid: string;
  readonly alg: SigningAlgorithm;
  readonly privateKey: CryptoKey;
  /** The public JWK as served, with kid, alg and use. */
  readonly publicJwk: JWK;
  /** Still in the served key set (false once retired). */
  readonly published: boolean;
}

export interface MintOptions {
  /** Sign with the current default key for this algorithm. Default: the issuer's default algorithm. */
  alg?: SigningAlgorithm;
  /** Sign with this key (published, retired or not). Overrides `alg`. */
  kid?: string;
  /** exp = iat + this. Default 300. */
  expiresInSeconds?: number;
  /** Epoch seconds. Default: now. */
  issuedAt?: number;
  /** Epoch seconds; no `nbf` unless given. */
  notBefore?: number;
  /** Extra or replacing protected-header parameters (e.g. `typ`, or a `kid` that names another key). */
  header?: Partial<JWTHeaderParameters>;
  /** Leave these out of the token, for tests of what a verifier requires. */
  omit?: ("iss" | "iat" | "exp" | "jti" | "kid")[];
}

export interface RotateOptions {
  /** Take the key being replaced out of the served key set (it stays available to `mint({kid})`). */
  retireOld?: boolean;
}

export interface TokenIssuer {
  readonly issuer: string;
  readonly discoveryUri: string;
  readonly jwksUri: string;
  /** The number of key-set requests served (including the ones answered 503 while down). */
  readonly jwksFetches: number;
  readonly discoveryFetches: number;
  /** Every key ever generated, newest last. */
  readonly keys: readonly IssuerKey[];
  /** The kid `mint` uses when given neither `alg` nor `kid`. */
  readonly defaultKid: string;
  mint(claims?: JWTPayload, options?: MintOptions): Promise<string>;
  signingKey(kid: string): CryptoKey;
  rotate(alg?: SigningAlgorithm | RotateOptions, options?: RotateOptions): Promise<IssuerKey>;
  /** Serve an arbitrary JWK in the key set, as given (hostile tests: weak RSA, `use: "enc"`, a private member). */
  addKeyToJwks(jwk: JWK): void;
  /** Stop serving the key with this kid. */
  removeKeyFromJwks(kid: string): void;
  /** While down, the key set and discovery document answer 503. */
  setDown(down: boolean): void;
  /** Delay every key-set response by this much (0 to stop). */
  setJwksDelay(ms: number): void;
  resetCounts(): void;
  close(): Promise<void>;
}

export async function startTokenIssuer(options: TokenIssuerOptions = {}): Promise<TokenIssuer> {
  const algorithms = options.algorithms ?? ["RS256"];
  const firstAlgorithm = algorithms[0];
  if (firstAlgorithm === undefined)
    throw new Error("startTokenIssuer: algorithms must list at least one algorithm");
  for (const alg of algorithms) {
    if (!SIGNING_ALGORITHMS.includes(alg)) {
      throw new Error(
        `startTokenIssuer: cannot sign with ${alg}; supported: ${SIGNING_ALGORITHMS.join(", ")}`,
      );
    }
  }
  const path = normalisePrefix(options.path ?? "");
  const jwksPath = options.jwksPath ?? `${path}/jwks`;
  const discoveryPath = `${path}/.well-known/openid-configuration`;

  const ownServer = options.server === undefined;
  const server =
    options.server ?? (await startLoopbackServer(options.port === undefined ? {} : { port: options.port }));
  const issuer = options.issuer ?? `${server.origin}${path}`;
  const jwksUri = `${server.origin}${jwksPath}`;

  const keys: GeneratedKey[] = [];
  /** Raw JWKs planted by tests, served after the generated keys. */
  const planted: JWK[] = [];
  const defaults = new Map<SigningAlgorithm, GeneratedKey>();
  let defaultAlg: SigningAlgorithm = firstAlgorithm;
  let down = false;
  let jwksDelayMs = 0;
  let jwksFetches = 0;
  let discoveryFetches = 0;

  for (const alg of algorithms) {
    if (!defaults.has(alg)) {
      const key = await generateSigningKey(alg);
      keys.push(key);
      defaults.set(alg, key);
    }
  }

  const servedJwks = (): { keys: JWK[] } => ({
    keys: [...keys.filter((k) => k.published).map((k) => k.publicJwk), ...planted],
  });

  const mount: Mount = {
    matches: (pathname) => pathname === jwksPath || pathname === discoveryPath,
    async handle(req, res, { url, signal }) {
      if (req.method !== "GET" && req.method !== "HEAD") {
        sendJson(res, 405, { error: "method_not_allowed" }, { allow: "GET, HEAD" });
        return;
      }
      // no-store: each fetch the gateway makes must reach this server, or the counts would lie.
      const headers = { "cache-control": "no-store" };
      if (url.pathname === jwksPath) {
        jwksFetches += 1;
        if (jwksDelayMs > 0 && !(await sleep(jwksDelayMs, signal))) return;
        if (down) {
          sendJson(res, 503, { error: "temporarily_unavailable" }, { ...headers, "retry-after": "30" });
          return;
        }
        sendJson(res, 200, servedJwks(), headers);
        return;
      }
      discoveryFetches += 1;
      if (down) {
        sendJson(res, 503, { error: "temporarily_unavailable" }, headers);
        return;
      }
      sendJson(
        res,
        200,
        {
          issuer,
          jwks_uri: jwksUri,
          response_types_supported: ["id_token", "token"],
          subject_types_supported: ["public"],
          id_token_signing_alg_values_supported: [
            ...new Set(keys.filter((k) => k.published).map((k) => k.alg)),
          ],
          claims_supported: ["iss", "sub", "aud", "exp", "iat", "nbf", "jti"],
        },
        headers,
      );
    },
  };
  const unmount = server.mount(mount);

  const findKey = (kid: string): GeneratedKey => {
    const key = keys.find((k) => k.kid === kid);
    if (key === undefined) throw new Error(`token issuer: no key with kid ${kid}`);
    return key;
  };

  return {
    issuer,
    discoveryUri: `${server.origin}${discoveryPath}`,
    jwksUri,
    get jwksFetches() {
      return jwksFetches;
    },
    get discoveryFetches() {
      return discoveryFetches;
    },
    get keys() {
      return keys.map(({ kid, alg, privateKey, publicJwk, published }) => ({
        kid,
        alg,
        privateKey,
        publicJwk,
        published,
      }));
    },
    get defaultKid() {
      return (defaults.get(defaultAlg) as GeneratedKey).kid;
    },
    async mint(claims = {}, mintOptions = {}) {
      const key =
        mintOptions.kid !== undefined
          ? findKey(mintOptions.kid)
          : defaults.get(mintOptions.alg ?? defaultAlg);
      if (key === undefined) {
        throw new Error(
          `token issuer: no key for ${mintOptions.alg}; this issuer signs with ${[...defaults.keys()]}`,
        );
      }
      const omit = new Set(mintOptions.omit ?? []);
      const iat = mintOptions.issuedAt ?? Math.floor(Date.now() / 1000);
      const payload: JWTPayload = {};
      if (!omit.has("iss")) payload.iss = issuer;
      if (!omit.has("iat")) payload.iat = iat;
      if (!omit.has("exp")) payload.exp = iat + (mintOptions.expiresInSeconds ?? 300);
      if (!omit.has("jti")) payload.jti = randomUUID();
      if (mintOptions.notBefore !== undefined) payload.nbf = mintOptions.notBefore;
      Object.assign(payload, claims);
      const header: JWTHeaderParameters = { alg: key.alg, typ: "JWT", ...mintOptions.header };
      if (omit.has("kid")) delete header.kid;
      else header.kid ??= key.kid;
      // SignJWT's setters would re-add what a test omitted, so the payload is given whole.
      return new SignJWT(payload).setProtectedHeader(header).sign(key.privateKey);
    },
    signingKey(kid) {
      return findKey(kid).privateKey;
    },
    async rotate(algOrOptions, rotateOptions) {
      const alg = typeof algOrOptions === "string" ? algOrOptions : defaultAlg;
      const { retireOld = false } = (typeof algOrOptions === "object" ? algOrOptions : rotateOptions) ?? {};
      const previous = defaults.get(alg);
      const key = await generateSigningKey(alg);
      keys.push(key);
      defaults.set(alg, key);
      defaultAlg = alg;
      if (retireOld && previous !== undefined) previous.published = false;
      return { ...key };
    },
    addKeyToJwks(jwk) {
      planted.push(structuredClone(jwk));
    },
    removeKeyFromJwks(kid) {
      for (const key of keys) if (key.kid === kid) key.published = false;
      for (let i = planted.length - 1; i >= 0; i--) if (planted[i]?.kid === kid) planted.splice(i, 1);
    },
    setDown(value) {
      down = value;
    },
    setJwksDelay(ms) {
      jwksDelayMs = ms;
    },
    resetCounts() {
      jwksFetches = 0;
      discoveryFetches = 0;
    },
    async close() {
      unmount();
      if (ownServer) await server.close();
    },
  };
}

interface GeneratedKey {
  kid: string;
  alg: SigningAlgorithm;
  privateKey: CryptoKey;
  publicJwk: JWK;
  published: boolean;
}

async function generateSigningKey(alg: SigningAlgorithm): Promise<GeneratedKey> {
  const { privateKey, publicKey } = await generateKeyPair(alg, { extractable: true });
  const exported = await exportJWK(publicKey);
  // The RFC 7638 thumbprint as kid: stable for a key, distinct across keys, as many real issuers do.
  const kid = await calculateJwkThumbprint(exported);
  return { kid, alg, privateKey, publicJwk: { ...exported, kid, alg, use: "sig" }, published: true };
}

function normalisePrefix(path: string): string {
  if (path === "" || path === "/") return "";
  const withSlash = path.startsWith("/") ? path : `/${path}`;
  return withSlash.endsWith("/") ? withSlash.slice(0, -1) : withSlash;
}
