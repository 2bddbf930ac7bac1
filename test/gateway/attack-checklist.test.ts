// The attack checklist of shared/reference/security.md §1.2, one test per line and in its order, each attack sent
// through the real gateway bundle in workerd with real crafted tokens (jose, node:crypto, WebCrypto), never mocks.
// Every refusal is asserted the same way: status, the RFC 6750 error in WWW-Authenticate, exactly one deny audit
// record with the reason code, and nothing at the scoring endpoint. The last test checks that all 32 lines are here.
//
// Four gateways: `fx` (the test config, plus a revoked jti), `fxAlt` (corp requires typ at+jwt and also pins PS256),
// `fxKeys` (no key snapshot, so hostile keys planted before the first request are in the key set it fetches) and
// `fxFlood` (the test config, used only by the kid flood so that its cooldown is untouched when the flood starts).
import {
  constants,
  createHash,
  createHmac,
  createPublicKey,
  generateKeyPairSync,
  type JsonWebKey,
  KeyObject,
  privateEncrypt,
  randomUUID,
  sign,
  type webcrypto,
} from "node:crypto";
import { request as httpRequest } from "node:http";
import {
  base64url,
  CompactEncrypt,
  exportJWK,
  FlattenedSign,
  GeneralSign,
  generateKeyPair,
  importJWK,
  type JWK,
  SignJWT,
} from "jose";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import type { GatewayConfigInput } from "../../src/config/schema.ts";
import type { TokenIssuer } from "../../src/sandbox/token-issuer.ts";
import {
  AUDIENCE,
  corpClaims,
  defaultKid,
  type GatewayFixture,
  GITHUB_AUDIENCE,
  ROUTE_PATH,
  SCORING_BODY,
  STATUS_PATH,
  signRaw,
  startGatewayFixture,
  TENANT,
} from "./fixture.ts";

const REVOKED_JTI = "revoked-1";
/** P-256 group order. */
const P256_N = 0xffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551n;
/** DER prefix of a PKCS#1 v1.5 DigestInfo for SHA-256 (RFC 8017 §9.2, note 1). */
const SHA256_DIGEST_INFO = Buffer.from("3031300d060960864801650304020105000420", "hex");

type Expected = Parameters<GatewayFixture["expectRefused"]>[1];

let fx: GatewayFixture;
let fxAlt: GatewayFixture;
let fxKeys: GatewayFixture;
let fxFlood: GatewayFixture;

/** Keys planted in fxKeys's key set before its first request (it has no snapshot, so it fetches them). */
const hostile = {
  weak: generateKeyPairSync("rsa", { modulusLength: 1024 }),
  exponent3: generateKeyPairSync("rsa", { modulusLength: 2048, publicExponent: 3 }),
  encUse: generateKeyPairSync("rsa", { modulusLength: 2048 }),
  encOps: generateKeyPairSync("rsa", { modulusLength: 2048 }),
};

function corpIssuerConfig(config: GatewayConfigInput): GatewayConfigInput["issuers"][number] {
  const corp = config.issuers.find((issuer) => issuer.name === "corp");
  if (!corp) throw new Error("the test config has no corp issuer");
  return corp;
}

beforeAll(async () => {
  [fx, fxAlt, fxKeys, fxFlood] = await Promise.all([
    startGatewayFixture({
      configure: (config) => {
        corpIssuerConfig(config).revokedJti = [REVOKED_JTI];
      },
    }),
    startGatewayFixture({
      configure: (config) => {
        const corp = corpIssuerConfig(config);
        corp.typ = "at+jwt";
        corp.algorithms = ["RS256", "ES256", "PS256"];
      },
    }),
    startGatewayFixture({ snapshot: false }),
    startGatewayFixture(),
  ]);
  const publicJwk = (pair: { publicKey: KeyObject }) => pair.publicKey.export({ format: "jwk" }) as JWK;
  fxKeys.corp.addKeyToJwks({ ...publicJwk(hostile.weak), kid: "weak", alg: "RS256", use: "sig" });
  fxKeys.corp.addKeyToJwks({ ...publicJwk(hostile.exponent3), kid: "e3", alg: "RS256", use: "sig" });
  fxKeys.corp.addKeyToJwks({ ...publicJwk(hostile.encUse), kid: "enc-use", use: "enc" });
  fxKeys.corp.addKeyToJwks({ ...publicJwk(hostile.encOps), kid: "enc-ops", key_ops: ["encrypt"] });
}, 60_000);

afterAll(async () => {
  await Promise.all([fx?.dispose(), fxAlt?.dispose(), fxKeys?.dispose(), fxFlood?.dispose()]);
});

beforeEach(() => {
  fx.reset();
  fxAlt.reset();
  fxKeys.reset();
  fxFlood.reset();
});

// ---------------------------------------------------------------------------------------------------------------
// Token crafting

const seg = (value: string | Uint8Array): string => base64url.encode(value);
const jsonSeg = (value: unknown): string => seg(JSON.stringify(value));
const nowSeconds = (): number => Math.floor(Date.now() / 1000);
const splitToken = (token: string): [string, string, string] => {
  const [header = "", payload = "", signature = ""] = token.split(".");
  return [header, payload, signature];
};

function issuerKeyObject(issuer: TokenIssuer, kid: string): KeyObject {
  const key = issuer.keys.find((candidate) => candidate.kid === kid);
  if (!key) throw new Error(`no key ${kid}`);
  return KeyObject.from(key.privateKey as unknown as webcrypto.CryptoKey);
}

/** Signs an exact signing input (segments already encoded, any bytes inside) with a private key, as `alg` says. */
function signInput(key: KeyObject, alg: "RS256" | "PS256" | "ES256", signingInput: string): string {
  const data = Buffer.from(signingInput, "ascii");
  if (alg === "ES256") return seg(sign("sha256", data, { key, dsaEncoding: "ieee-p1363" }));
  if (alg === "PS256") {
    return seg(sign("sha256", data, { key, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: 32 }));
  }
  return seg(sign("sha256", data, key));
}

/** A token with the given header and payload segments, signed by one of the issuer's keys. */
function signSegments(issuer: TokenIssuer, kid: string, header: string, payload: string): string {
  const key = issuer.keys.find((candidate) => candidate.kid === kid);
  if (!key || (key.alg !== "RS256" && key.alg !== "ES256")) throw new Error(`no RS256/ES256 key ${kid}`);
  const input = `${header}.${payload}`;
  return `${input}.${signInput(issuerKeyObject(issuer, kid), key.alg, input)}`;
}

function hs256(secret: string | Uint8Array, header: Record<string, unknown>, claims: unknown): string {
  const input = `${jsonSeg(header)}.${jsonSeg(claims)}`;
  return `${input}.${seg(createHmac("sha256", secret).update(input).digest())}`;
}

/** A PKCS#1 v1.5 "signature": the RSA private operation over an encoded message built here, byte for byte. */
function rsaOverEncodedMessage(key: KeyObject, encodedMessage: Buffer): string {
  return seg(privateEncrypt({ key, padding: constants.RSA_NO_PADDING }, encodedMessage));
}

/** EM = 00 01 FF…FF 00 T (RFC 8017 §9.2) for a modulus of `k` bytes, with `blockType` and `t` as given. */
function encodedMessage(k: number, t: Buffer, blockType = 0x01): Buffer {
  const padding = Buffer.alloc(k - 3 - t.length, 0xff);
  return Buffer.concat([Buffer.from([0x00, blockType]), padding, Buffer.from([0x00]), t]);
}

function bigintTo32Bytes(value: bigint): Buffer {
  return Buffer.from(value.toString(16).padStart(64, "0"), "hex");
}

/** Adds a variant's label to a failed refusal assertion, so a failure says which variant it was. */
async function refused(fixture: GatewayFixture, label: string, response: Response, expected: Expected) {
  try {
    return await fixture.expectRefused(response, expected);
  } catch (error) {
    if (error instanceof Error) error.message = `[${label}] ${error.message}`;
    throw error;
  }
}

/** The corp key set the gateway holds (kids and where it came from), read from its status route. */
async function corpKeySet(fixture: GatewayFixture): Promise<{ kids: string[]; source: string }> {
  const operator = await fixture.token({ roles: ["ml.operator"] });
  const response = await fixture.gateway.fetch(STATUS_PATH, {
    headers: { authorization: `Bearer ${operator}` },
  });
  expect(response.status).toBe(200);
  const status = (await response.json()) as { issuers: { issuer: string; kids: string[]; source: string }[] };
  const corp = status.issuers.find((issuer) => issuer.issuer === "corp");
  if (!corp) throw new Error("the status document has no corp key set");
  return corp;
}

const INVALID = (reason: string): Expected => ({ status: 401, error: "invalid_token", reason });
const BAD_REQUEST = (reason: string): Expected => ({ status: 400, error: "invalid_request", reason });

/** A request with two Authorization header lines, which fetch would merge before sending: sent with node:http. */
function postWithHeaderLines(fixture: GatewayFixture, lines: [string, string[]][]): Promise<Response> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(new URL(ROUTE_PATH, fixture.gateway.url), { method: "POST" }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (chunk: Buffer) => chunks.push(chunk));
      res.on("error", reject);
      res.on("end", () => {
        const headers = new Headers();
        for (const [name, value] of Object.entries(res.headers)) {
          for (const item of Array.isArray(value) ? value : [value ?? ""]) headers.append(name, item);
        }
        resolve(new Response(Buffer.concat(chunks), { status: res.statusCode ?? 0, headers }));
      });
    });
    req.on("error", reject);
    req.setHeader("content-type", "application/json");
    for (const [name, values] of lines) req.setHeader(name, values);
    req.end(SCORING_BODY);
  });
}

// ---------------------------------------------------------------------------------------------------------------

describe("attack checklist (security.md §1.2)", () => {
  it("#1 alg none in every casing", async () => {
    for (const alg of ["none", "None", "NONE", "nOnE"]) {
      const unsigned = `${jsonSeg({ alg, typ: "JWT" })}.${jsonSeg(corpClaims(fx))}`;
      // An empty third segment fails the shape check before anything is decoded.
      await refused(
        fx,
        `${alg}, empty signature`,
        await fx.score(`${unsigned}.`),
        INVALID("token_malformed"),
      );
      // A junk (canonical) signature gets past the shape check to the algorithm allowlist.
      await refused(
        fx,
        `${alg}, junk signature`,
        await fx.score(`${unsigned}.AAAA`),
        INVALID("alg_not_allowed"),
      );
      const withKid = `${jsonSeg({ alg, kid: defaultKid(fx.corp) })}.${jsonSeg(corpClaims(fx))}.AAAA`;
      await refused(fx, `${alg}, real kid`, await fx.score(withKid), INVALID("alg_not_allowed"));
    }
  });

  it("#2 RS→HS algorithm confusion with the issuer's public key as the HMAC secret", async () => {
    const kid = defaultKid(fx.corp);
    const jwk = fx.corp.keys.find((key) => key.kid === kid)?.publicJwk;
    if (!jwk?.n) throw new Error("corp has no RSA key");
    const publicKey = createPublicKey({ key: jwk as JsonWebKey, format: "jwk" });
    const pem = publicKey.export({ type: "spki", format: "pem" }) as string;
    const secrets: [string, string | Uint8Array][] = [
      ["PEM", pem],
      ["PEM with leading whitespace", ` \n${pem}`],
      ["PKCS#1 PEM", publicKey.export({ type: "pkcs1", format: "pem" }) as string],
      ["SPKI DER", publicKey.export({ type: "spki", format: "der" })],
      ["JWK n (text)", jwk.n],
      ["JWK n (bytes)", base64url.decode(jwk.n)],
      ["JWK JSON", JSON.stringify(jwk)],
    ];
    for (const [label, secret] of secrets) {
      for (const alg of ["HS256", "HS384", "HS512"]) {
        const input = `${jsonSeg({ alg, typ: "JWT", kid })}.${jsonSeg(corpClaims(fx))}`;
        const mac = createHmac(`sha${alg.slice(2)}`, secret)
          .update(input)
          .digest();
        await refused(
          fx,
          `${alg} ${label}`,
          await fx.score(`${input}.${seg(mac)}`),
          INVALID("alg_not_allowed"),
        );
      }
    }
  });

  it("#3 token alg differs from the key's alg or type", async () => {
    // PS256 signed with the RSA key the issuer publishes as RS256 (a genuine PSS signature by that key).
    const psToken = (fixture: GatewayFixture, typ: string) => {
      const kid = defaultKid(fixture.corp);
      const input = `${jsonSeg({ alg: "PS256", typ, kid })}.${jsonSeg(corpClaims(fixture))}`;
      return `${input}.${signInput(issuerKeyObject(fixture.corp, kid), "PS256", input)}`;
    };
    // Where PS256 is not pinned, the allowlist refuses it.
    await refused(fx, "PS256, not pinned", await fx.score(psToken(fx, "JWT")), INVALID("alg_not_allowed"));
    // Where PS256 is pinned, the RS256 key still does not verify it: one key, one algorithm.
    await refused(
      fxAlt,
      "PS256 pinned, RS256 key",
      await fxAlt.score(psToken(fxAlt, "at+jwt")),
      INVALID("unknown_kid"),
    );
    // ES256 header naming the RSA key: signed with the EC key, and also with the RSA key itself.
    const rsaKid = defaultKid(fx.corp);
    const esWithRsaKid = await fx.token({}, { alg: "ES256", header: { kid: rsaKid } });
    await refused(fx, "ES256 header, RSA kid", await fx.score(esWithRsaKid), INVALID("unknown_kid"));
    const rsaSignedAsEs = await signRaw(
      fx.corp,
      rsaKid,
      JSON.stringify({ alg: "ES256", kid: rsaKid }),
      JSON.stringify(corpClaims(fx)),
    );
    await refused(fx, "ES256 header, RSA signature", await fx.score(rsaSignedAsEs), INVALID("unknown_kid"));
    // RS256 header naming the EC key.
    const esKid = defaultKid(fx.corp, "ES256");
    const rsWithEsKid = await fx.token({}, { alg: "RS256", header: { kid: esKid } });
    await refused(fx, "RS256 header, EC kid", await fx.score(rsWithEsKid), INVALID("unknown_kid"));
  });

  it("#4 embedded jwk, jku, x5u and x5c headers", async () => {
    const attacker = await generateKeyPair("RS256", { extractable: true });
    const attackerJwk = await exportJWK(attacker.publicKey);
    const embedded = await new SignJWT(corpClaims(fx))
      .setProtectedHeader({ alg: "RS256", typ: "JWT", kid: "attacker", jwk: attackerJwk })
      .sign(attacker.privateKey);
    await refused(fx, "jwk, attacker-signed", await fx.score(embedded), INVALID("header_forbidden_member"));

    const kid = defaultKid(fx.corp);
    const headers: [string, Record<string, unknown>][] = [
      ["jwk, issuer-signed", { jwk: fx.corp.keys[0]?.publicJwk }],
      ["jku", { jku: "http://127.0.0.1:9/attacker/jwks.json" }],
      ["x5u", { x5u: "https://attacker.example/cert.pem" }],
      ["x5c", { x5c: [Buffer.from("not a certificate").toString("base64")] }],
    ];
    for (const [label, extra] of headers) {
      // Signed with the issuer's real key: the member alone is the reason for refusal.
      const token = await signRaw(
        fx.corp,
        kid,
        JSON.stringify({ alg: "RS256", typ: "JWT", kid, ...extra }),
        JSON.stringify(corpClaims(fx)),
      );
      await refused(fx, label, await fx.score(token), INVALID("header_forbidden_member"));
    }
    expect(fx.gateway.outbound.requests, "no header URL was fetched").toEqual([]);
  });

  it("#5 kid injection", async () => {
    const kids: [string, string][] = [
      ["../../dev/null", "unknown_kid"],
      ["../../../../../../etc/passwd", "unknown_kid"],
      ["x' UNION SELECT '1';--", "unknown_kid"],
      ["|sleep 10", "unknown_kid"],
      ["$(sleep 10)", "unknown_kid"],
      ["", "unknown_kid"],
      ["k".repeat(300), "token_malformed"],
    ];
    const started = performance.now();
    for (const [kid, reason] of kids) {
      const token = await fx.token({}, { header: { kid } });
      await refused(fx, `kid ${kid.slice(0, 30)}`, await fx.score(token), INVALID(reason));
    }
    expect(performance.now() - started, "no kid made the gateway wait").toBeLessThan(10_000);
    // A kid that is not a string is malformed too.
    const numericKid = await signRaw(
      fx.corp,
      defaultKid(fx.corp),
      JSON.stringify({ alg: "RS256", kid: 1 }),
      JSON.stringify(corpClaims(fx)),
    );
    await refused(fx, "numeric kid", await fx.score(numericKid), INVALID("token_malformed"));
    expect(fx.corp.jwksFetches, "key set fetched at most once for the whole case").toBeLessThanOrEqual(1);
  });

  it("#6 random-kid flood", async () => {
    // On a gateway that has not fetched since it started, so the first unknown kid may fetch: 50 concurrent misses
    // may cause one fetch between them, no more (single flight within the 30 s cooldown).
    const tokens = await Promise.all(
      Array.from({ length: 50 }, () => fxFlood.token({}, { header: { kid: randomUUID() } })),
    );
    const responses = await Promise.all(tokens.map((token) => fxFlood.score(token)));
    await Promise.all(
      responses.map((response, i) => refused(fxFlood, `flood ${i}`, response, INVALID("unknown_kid"))),
    );
    expect(fxFlood.corp.jwksFetches, "at most one key-set fetch per cooldown").toBeLessThanOrEqual(1);
    expect(fxFlood.github.jwksFetches).toBe(0);
    // A second wave inside the cooldown fetches nothing at all.
    fxFlood.reset();
    const again = await Promise.all(
      Array.from({ length: 10 }, async () =>
        fxFlood.score(await fxFlood.token({}, { header: { kid: randomUUID() } })),
      ),
    );
    await Promise.all(
      again.map((response, i) => refused(fxFlood, `wave 2, ${i}`, response, INVALID("unknown_kid"))),
    );
    expect(fxFlood.corp.jwksFetches, "no fetch inside the cooldown").toBe(0);
  });

  it("#7 no kid with a multi-key key set", async () => {
    expect(fx.corp.keys.filter((key) => key.published).length).toBeGreaterThan(1);
    for (const alg of ["RS256", "ES256"] as const) {
      const token = await fx.token({}, { alg, omit: ["kid"] });
      await refused(fx, `${alg} without kid`, await fx.score(token), INVALID("missing_kid"));
    }
  });

  it("#8 crit: unknown, empty, duplicated", async () => {
    const kid = defaultKid(fx.corp);
    const headers: [string, Record<string, unknown>][] = [
      ["unknown", { crit: ["exp2"], exp2: true }],
      ["empty", { crit: [] }],
      ["duplicated", { crit: ["exp2", "exp2"], exp2: true }],
      ["known parameter", { crit: ["kid"] }],
    ];
    for (const [label, extra] of headers) {
      const token = await signRaw(
        fx.corp,
        kid,
        JSON.stringify({ alg: "RS256", kid, ...extra }),
        JSON.stringify(corpClaims(fx)),
      );
      await refused(fx, `crit ${label}`, await fx.score(token), INVALID("header_forbidden_member"));
    }
  });

  it("#9 b64:false (unencoded payload)", async () => {
    const kid = defaultKid(fx.corp);
    const claims = JSON.stringify(corpClaims(fx));
    for (const [label, extra] of [
      ["with crit", { b64: false, crit: ["b64"] }],
      ["without crit", { b64: false }],
    ] as const) {
      const header = jsonSeg({ alg: "RS256", kid, ...extra });
      // The payload segment is base64url (as a confused verifier might expect), signed as RFC 7797 would.
      const token = signSegments(fx.corp, kid, header, seg(claims));
      await refused(fx, `b64:false ${label}`, await fx.score(token), INVALID("header_forbidden_member"));
    }
    // Truly unencoded: the JSON payload sits in the compact token as is. Its commas do not make it a list of
    // credentials (the parts are not credentials), so both forms are malformed tokens.
    const header = jsonSeg({ alg: "RS256", kid, b64: false, crit: ["b64"] });
    const rawClaims = signSegments(fx.corp, kid, header, claims);
    await refused(fx, "raw JSON claims", await fx.score(rawClaims), INVALID("token_malformed"));
    const rawMember = signSegments(fx.corp, kid, header, `{"sub":"admin"}`);
    await refused(fx, "raw one-member JSON", await fx.score(rawMember), INVALID("token_malformed"));
  });

  it("#10 JWE and a JWE-wrapped unsigned JWT", async () => {
    const kid = defaultKid(fx.corp);
    const { alg: _alg, use: _use, ...rsaJwk } = fx.corp.keys.find((key) => key.kid === kid)?.publicJwk ?? {};
    // Encrypted to the issuer's own published RSA key, as in CVE-2026-29000 (pac4j-jwt).
    const encryptionKey = await importJWK({ ...rsaJwk, alg: "RSA-OAEP-256" }, "RSA-OAEP-256");
    const encrypt = (plaintext: string, cty?: string) =>
      new CompactEncrypt(new TextEncoder().encode(plaintext))
        .setProtectedHeader({ alg: "RSA-OAEP-256", enc: "A256GCM", kid, ...(cty ? { cty } : {}) })
        .encrypt(encryptionKey);
    const unsigned = `${jsonSeg({ alg: "none" })}.${jsonSeg(corpClaims(fx))}.`;
    const cases: [string, string][] = [
      ["JWE of a claims set", await encrypt(JSON.stringify(corpClaims(fx)))],
      ["JWE-wrapped unsigned JWT", await encrypt(unsigned, "JWT")],
      ["JWE-wrapped signed JWT (nested)", await encrypt(await fx.token(), "JWT")],
    ];
    for (const [label, token] of cases) {
      expect(token.split(".")).toHaveLength(5);
      await refused(fx, label, await fx.score(token), INVALID("token_malformed"));
    }
  });

  it("#11 JWS JSON serialization as the bearer value", async () => {
    const kid = defaultKid(fx.corp);
    const key = fx.corp.signingKey(kid);
    const payload = new TextEncoder().encode(JSON.stringify(corpClaims(fx)));
    const flattened = await new FlattenedSign(payload).setProtectedHeader({ alg: "RS256", kid }).sign(key);
    const general = await new GeneralSign(payload)
      .addSignature(key)
      .setProtectedHeader({ alg: "RS256", kid })
      .sign();
    // Both are validly signed by the issuer, and both are refused as malformed before any decoding: a JSON
    // serialization's commas do not make it a list of credentials.
    for (const [label, value] of [
      ["flattened", JSON.stringify(flattened)],
      ["general", JSON.stringify(general)],
    ] as const) {
      await refused(fx, label, await fx.score(value), INVALID("token_malformed"));
    }
  });

  it("#12 non-canonical base64url", async () => {
    const token = await fx.token();
    const [header, payload, signature] = splitToken(token);
    expect(/[-_]/.test(token), "the token has a - or _ to respell").toBe(true);
    // 256 signature bytes leave 4 unused bits in the last character; setting one keeps the bytes the same.
    const last = signature.at(-1) ?? "A";
    const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    const trailing = alphabet[alphabet.indexOf(last) | 0b0001] ?? "";
    expect(trailing).not.toBe(last);
    const variants: [string, string][] = [
      ["+ and / for - and _", token.replaceAll("-", "+").replaceAll("_", "/")],
      ["padding on the signature", `${token}==`],
      ["padding on the header", `${header}==.${payload}.${signature}`],
      ["percent-encoded padding", `${token}%3D%3D`],
      [
        "non-zero trailing bits in the signature",
        `${header}.${payload}.${signature.slice(0, -1)}${trailing}`,
      ],
    ];
    // A header whose last character carries non-zero trailing bits (the JSON bytes decode the same).
    if (header.length % 4 !== 0) {
      const respelt = alphabet[alphabet.indexOf(header.at(-1) ?? "A") | 0b0001] ?? "";
      variants.push([
        "non-zero trailing bits in the header",
        `${header.slice(0, -1)}${respelt}.${payload}.${signature}`,
      ]);
    }
    for (const [label, value] of variants) {
      await refused(fx, label, await fx.score(value), INVALID("token_malformed"));
    }
    // A space inside the token splits it into two credentials.
    const spaced = `${header}.${payload.slice(0, 10)} ${payload.slice(10)}.${signature}`;
    await refused(fx, "space inside", await fx.score(spaced), BAD_REQUEST("multiple_tokens"));
  });

  it("#13 oversized token", async () => {
    // A validly signed token of about 20 KiB.
    const token = await fx.token({ pad: "x".repeat(15_000) });
    expect(token.length).toBeGreaterThan(20_000);
    expect(token.length).toBeLessThan(21 * 1024);
    await refused(fx, "20 KiB", await fx.score(token), INVALID("token_too_large"));
  });

  it("#14 duplicate JSON members", async () => {
    const kid = defaultKid(fx.corp);
    const claims = JSON.stringify(corpClaims(fx)).slice(1, -1);
    const header = JSON.stringify({ alg: "RS256", kid }).slice(1, -1);
    const cases: [string, string, string][] = [
      ["alg none then RS256 in the header", `{"alg":"none","alg":"RS256","kid":"${kid}"}`, `{${claims}}`],
      ["sub attacker then admin", `{${header}}`, `{${claims},"sub":"attacker","sub":"admin"}`],
      ["sub spelt with an escape", `{${header}}`, `{${claims},"s\\u0075b":"admin"}`],
      ["nested duplicate", `{${header}}`, `{${claims},"act":{"sub":"agent","sub":"admin"}}`],
    ];
    for (const [label, headerJson, payloadJson] of cases) {
      const token = await signRaw(fx.corp, kid, headerJson, payloadJson);
      await refused(fx, label, await fx.score(token), INVALID("duplicate_json_member"));
    }
  });

  it("#15 non-UTF-8 header, array header, string payload", async () => {
    const kid = defaultKid(fx.corp);
    const claims = jsonSeg(corpClaims(fx));
    const headerText = JSON.stringify({ alg: "RS256", kid, x: "_" });
    const withBytes = (bytes: number[]) => {
      const at = headerText.indexOf("_");
      const encoded = new TextEncoder().encode(headerText);
      return seg(new Uint8Array([...encoded.subarray(0, at), ...bytes, ...encoded.subarray(at + 1)]));
    };
    const cases: [string, string, string][] = [
      ["invalid byte 0xFF", withBytes([0xff]), claims],
      ["overlong '/' (C0 AF)", withBytes([0xc0, 0xaf]), claims],
      ["UTF-8-encoded surrogate", withBytes([0xed, 0xa0, 0x80]), claims],
      [
        "byte-order mark before the header",
        seg(
          new Uint8Array([
            0xef,
            0xbb,
            0xbf,
            ...new TextEncoder().encode(JSON.stringify({ alg: "RS256", kid })),
          ]),
        ),
        claims,
      ],
      ["header is a JSON array", jsonSeg([{ alg: "RS256", kid }]), claims],
      ["payload is a string", jsonSeg({ alg: "RS256", kid }), jsonSeg("admin")],
      ["payload is an array", jsonSeg({ alg: "RS256", kid }), jsonSeg([corpClaims(fx)])],
      ["payload is empty", jsonSeg({ alg: "RS256", kid }), ""],
    ];
    for (const [label, header, payload] of cases) {
      const token = signSegments(fx.corp, kid, header, payload);
      await refused(fx, label, await fx.score(token), INVALID("token_malformed"));
    }
  });

  it("#16 no exp", async () => {
    const token = await fx.token({}, { omit: ["exp"] });
    await refused(fx, "no exp", await fx.score(token), INVALID("claim_invalid"));
    const noIat = await fx.token({}, { omit: ["iat"] });
    await refused(fx, "no iat", await fx.score(noIat), INVALID("claim_invalid"));
  });

  it("#17 exp as a string", async () => {
    const exp = nowSeconds() + 300;
    for (const value of [String(exp), new Date(exp * 1000).toISOString(), [exp], { exp }]) {
      const token = await fx.token({ exp: value });
      await refused(fx, `exp ${JSON.stringify(value)}`, await fx.score(token), INVALID("claim_invalid"));
    }
  });

  it("#18 clock skew and lifetime", async () => {
    const now = nowSeconds();
    const cases: [string, Promise<string>, string][] = [
      ["exp 2 min ago", fx.token({}, { issuedAt: now - 420, expiresInSeconds: 300 }), "token_expired"],
      ["nbf 2 min ahead", fx.token({}, { notBefore: now + 120 }), "token_not_yet_valid"],
      ["iat 2 min ahead", fx.token({}, { issuedAt: now + 120 }), "iat_in_future"],
      ["exp − iat over maxTokenAge", fx.token({}, { expiresInSeconds: 7200 }), "lifetime_too_long"],
      [
        "iat older than maxTokenAge",
        fx.token({}, { issuedAt: now - 4000, expiresInSeconds: 4300 }),
        "token_too_old",
      ],
    ];
    for (const [label, token, reason] of cases) {
      await refused(fx, label, await fx.score(await token), INVALID(reason));
    }
  });

  it("#19 audience", async () => {
    const cases: [string, Promise<string>][] = [
      ["aud missing", fx.corp.mint({ sub: "user-1", tid: TENANT, roles: ["ml.score"] })],
      [
        "an ID token for another app",
        fx.token({
          aud: "00000000-aaaa-bbbb-cccc-000000000001",
          azp: "00000000-aaaa-bbbb-cccc-000000000001",
          nonce: "n-0S6_WzA2Mj",
          email: "user@corp.example",
        }),
      ],
      ["aud array without ours", fx.token({ aud: ["api://other-app", GITHUB_AUDIENCE] })],
      ["aud is ours with a trailing slash", fx.token({ aud: `${AUDIENCE}/` })],
      ["aud empty array", fx.token({ aud: [] })],
    ];
    for (const [label, token] of cases) {
      await refused(fx, label, await fx.score(await token), INVALID("audience_mismatch"));
    }
  });

  it("#20 issuer confusion", async () => {
    const claims = { aud: AUDIENCE, sub: "user-1", tid: TENANT, roles: ["ml.score"] };
    const cases: [string, Promise<string>, string][] = [
      ["iss with a trailing slash", fx.token({ iss: `${fx.corp.issuer}/` }), "unknown_issuer"],
      [
        "iss of corp, github's key and kid",
        fx.github.mint({ ...claims, iss: fx.corp.issuer }),
        "unknown_kid",
      ],
      [
        "iss of corp, github's key, corp's kid",
        fx.github.mint({ ...claims, iss: fx.corp.issuer }, { header: { kid: defaultKid(fx.corp) } }),
        "signature_invalid",
      ],
      ["unknown iss", fx.token({ iss: "https://login.evil.example/v2.0" }), "unknown_issuer"],
      ["no iss", fx.token({}, { omit: ["iss"] }), "unknown_issuer"],
    ];
    for (const [label, token, reason] of cases) {
      await refused(fx, label, await fx.score(await token), INVALID(reason));
    }
  });

  it("#21 typ confusion", async () => {
    const kid = defaultKid(fxAlt.corp);
    const cases: [string, Promise<string>][] = [
      ["typ JWT", fxAlt.token({}, { header: { typ: "JWT" } })],
      ["typ at+jwt+x", fxAlt.token({}, { header: { typ: "at+jwt+x" } })],
      ["typ jwt", fxAlt.token({}, { header: { typ: "jwt" } })],
      [
        "no typ",
        signRaw(fxAlt.corp, kid, JSON.stringify({ alg: "RS256", kid }), JSON.stringify(corpClaims(fxAlt))),
      ],
    ];
    for (const [label, token] of cases) {
      await refused(fxAlt, label, await fxAlt.score(await token), INVALID("typ_mismatch"));
    }
    // Control: the same issuer's at+jwt token is served, so the refusals above are about typ alone.
    const accepted = await fxAlt.score(await fxAlt.token({}, { header: { typ: "at+jwt" } }));
    expect(accepted.status).toBe(200);
    expect((await fxAlt.auditOf(accepted)).reason).toBe("allowed");
  });

  it("#22 mutable identity claims grant nothing", async () => {
    const admin = {
      email: "admin@corp.example",
      upn: "admin@corp.example",
      preferred_username: "admin@corp.example",
      unique_name: "admin@corp.example",
      name: "Administrator",
    };
    const forbidden: Expected = { status: 403, error: "insufficient_scope", reason: "no_permission" };
    const token = await fx.token({ ...admin, roles: [] });
    await refused(fx, "no roles", await fx.score(token), forbidden);
    const noRoles = await fx.token({ ...admin, roles: undefined });
    await refused(fx, "roles absent", await fx.score(noRoles), forbidden);
    const status = await fx.gateway.fetch(STATUS_PATH, { headers: { authorization: `Bearer ${noRoles}` } });
    await refused(fx, "status route", status, forbidden);
  });

  it("#23 psychic ECDSA signatures", async () => {
    const token = await fx.token({}, { alg: "ES256" });
    const [header, payload] = splitToken(token);
    const n = bigintTo32Bytes(P256_N);
    const cases: [string, Uint8Array][] = [
      ["r = s = 0", new Uint8Array(64)],
      ["r = s = n", Buffer.concat([n, n])],
      ["r = 0, s = n", Buffer.concat([Buffer.alloc(32), n])],
      ["r = n, s = 0", Buffer.concat([n, Buffer.alloc(32)])],
    ];
    for (const [label, signature] of cases) {
      const forged = `${header}.${payload}.${seg(signature)}`;
      await refused(fx, label, await fx.score(forged), INVALID("signature_invalid"));
    }
  });

  it("#24 ECDSA malleability does not evade revocation", async () => {
    const token = await fx.token({ jti: REVOKED_JTI }, { alg: "ES256" });
    const [header, payload, signature] = splitToken(token);
    const bytes = base64url.decode(signature);
    const s = BigInt(`0x${Buffer.from(bytes.subarray(32)).toString("hex")}`);
    const twin = `${header}.${payload}.${seg(Buffer.concat([bytes.subarray(0, 32), bigintTo32Bytes(P256_N - s)]))}`;
    expect(twin === token, "the malleated twin is a different token text").toBe(false);
    await refused(fx, "original", await fx.score(token), INVALID("token_revoked"));
    // The twin verifies (it is refused as revoked, not as a bad signature): revocation keys on (iss, jti).
    await refused(fx, "malleated twin (s → n − s)", await fx.score(twin), INVALID("token_revoked"));
  });

  it("#25 weak RSA keys in the key set", async () => {
    // The issuer serves a 1024-bit key and a 2048-bit key with e = 3 (both planted before fxKeys's first fetch). The
    // checklist asks for them to be rejected at import: they are not in the key set the gateway holds, so a token
    // naming them finds no key.
    const claims = corpClaims(fxKeys);
    const weak = (kid: string, key: KeyObject) => {
      const input = `${jsonSeg({ alg: "RS256", typ: "JWT", kid })}.${jsonSeg(claims)}`;
      return `${input}.${signInput(key, "RS256", input)}`;
    };
    const cases: [string, string][] = [
      ["1024-bit modulus", weak("weak", hostile.weak.privateKey)],
      ["public exponent 3", weak("e3", hostile.exponent3.privateKey)],
    ];
    for (const [label, token] of cases) {
      await refused(fxKeys, label, await fxKeys.score(token), INVALID("unknown_kid"));
    }
    const keySet = await corpKeySet(fxKeys);
    expect(keySet.source, "the key set was fetched after the weak keys were planted").toBe("fetched");
    expect(keySet.kids).toContain(defaultKid(fxKeys.corp));
    expect(keySet.kids).not.toContain("weak");
    expect(keySet.kids).not.toContain("e3");
  });

  it("#26 PKCS#1 v1.5 signature malleation", async () => {
    const kid = defaultKid(fx.corp);
    const key = issuerKeyObject(fx.corp, kid);
    const token = await fx.token();
    const [header, payload, signature] = splitToken(token);
    const input = `${header}.${payload}`;
    const digest = createHash("sha256").update(input).digest();
    const k = base64url.decode(signature).length;
    // The construction below reproduces the real signature exactly, so the variants differ only where intended.
    const canonical = rsaOverEncodedMessage(
      key,
      encodedMessage(k, Buffer.concat([SHA256_DIGEST_INFO, digest])),
    );
    expect(canonical === signature, "the hand-built PKCS#1 v1.5 signature equals the real one").toBe(true);

    const withoutNull = Buffer.concat([
      Buffer.from("302f300b0609608648016503040201", "hex"),
      Buffer.from("0420", "hex"),
      digest,
    ]);
    const bytes = Buffer.from(base64url.decode(signature));
    const flipped = Buffer.from(bytes);
    flipped[100] = (flipped[100] ?? 0) ^ 0x01;
    const variants: [string, string, string][] = [
      ["one byte flipped", seg(flipped), "signature_invalid"],
      ["last byte truncated", seg(bytes.subarray(0, -1)), "signature_invalid"],
      ["leading zero byte added", seg(Buffer.concat([Buffer.alloc(1), bytes])), "signature_invalid"],
      ["last character truncated", signature.slice(0, -1), "token_malformed"],
      [
        "DigestInfo without NULL parameters",
        rsaOverEncodedMessage(key, encodedMessage(k, withoutNull)),
        "signature_invalid",
      ],
      [
        "garbage after the digest",
        rsaOverEncodedMessage(
          key,
          encodedMessage(k, Buffer.concat([SHA256_DIGEST_INFO, digest, Buffer.alloc(16, 0xaa)])),
        ),
        "signature_invalid",
      ],
      [
        "block type 2",
        rsaOverEncodedMessage(key, encodedMessage(k, Buffer.concat([SHA256_DIGEST_INFO, digest]), 0x02)),
        "signature_invalid",
      ],
    ];
    for (const [label, sig, reason] of variants) {
      await refused(fx, label, await fx.score(`${input}.${sig}`), INVALID(reason));
    }
  });

  it("#27 encryption keys in the key set", async () => {
    const claims = corpClaims(fxKeys);
    const cases: [string, string, KeyObject][] = [
      ['use "enc"', "enc-use", hostile.encUse.privateKey],
      ['key_ops ["encrypt"]', "enc-ops", hostile.encOps.privateKey],
    ];
    for (const [label, kid, key] of cases) {
      const input = `${jsonSeg({ alg: "RS256", typ: "JWT", kid })}.${jsonSeg(claims)}`;
      const token = `${input}.${signInput(key, "RS256", input)}`;
      await refused(fxKeys, label, await fxKeys.score(token), INVALID("unknown_kid"));
    }
    const keySet = await corpKeySet(fxKeys);
    expect(keySet.source, "the key set was fetched after the encryption keys were planted").toBe("fetched");
    expect(keySet.kids).toContain(defaultKid(fxKeys.corp));
  });

  it("#28 more than one token", async () => {
    const [a, b] = await Promise.all([fx.token(), fx.token()]);
    const twoLines = await postWithHeaderLines(fx, [["authorization", [`Bearer ${a}`, `Bearer ${b}`]]]);
    await refused(fx, "two Authorization headers", twoLines, BAD_REQUEST("multiple_tokens"));
    await refused(
      fx,
      "two credentials in one header",
      await fx.gateway.fetch(ROUTE_PATH, {
        method: "POST",
        headers: { authorization: `Bearer ${a}, Bearer ${b}`, "content-type": "application/json" },
        body: SCORING_BODY,
      }),
      BAD_REQUEST("multiple_tokens"),
    );
    const elsewhere: [string, Promise<Response>][] = [
      ["?access_token=", fx.score(a, { path: `${ROUTE_PATH}?access_token=${b}` })],
      ["?access_token= (same token)", fx.score(a, { path: `${ROUTE_PATH}?access_token=${a}` })],
      ["token in another query parameter", fx.score(a, { path: `${ROUTE_PATH}?q=${b}` })],
      ["cookie", fx.score(a, { headers: { cookie: `access_token=${b}` } })],
      ["cookie without Authorization", fx.score(undefined, { headers: { cookie: `session=${b}` } })],
      ["X-Access-Token", fx.score(a, { headers: { "x-access-token": b } })],
    ];
    for (const [label, response] of elsewhere) {
      await refused(fx, label, await response, BAD_REQUEST("token_in_unexpected_location"));
    }
    // Two lines of one header reach the Worker joined; a token in either line is still found.
    const repeated = await postWithHeaderLines(fx, [
      ["authorization", [`Bearer ${a}`]],
      ["x-access-token", [`s=${b}`, "t=1"]],
    ]);
    await refused(
      fx,
      "token in the first of two header lines",
      repeated,
      BAD_REQUEST("token_in_unexpected_location"),
    );
  });

  it("#29 identity-header spoofing", async () => {
    const spoofed: Record<string, string> = {
      "x-forwarded-user": "admin",
      x_forwarded_user: "admin",
      "x-forwarded-email": "admin@corp.example",
      "x-forwarded-groups": "admins",
      "x-auth-request-user": "admin",
      "x-ms-client-principal-name": "admin@corp.example",
      "x-original-url": STATUS_PATH,
      "x-rewrite-url": STATUS_PATH,
      "x-forwarded-uri": STATUS_PATH,
      "x-forwarded-prefix": "/.aml-edge",
    };
    const untokened = await fx.score(undefined, { headers: spoofed });
    await refused(fx, "no token", untokened, { status: 401, error: null, reason: "token_missing" });
    const toStatus = await fx.gateway.fetch(STATUS_PATH, { headers: spoofed });
    await refused(fx, "status route, no token", toStatus, {
      status: 401,
      error: null,
      reason: "token_missing",
    });

    // With a valid scorer token the request is served on the route it was sent to, and none of it goes upstream.
    const served = await fx.score(await fx.token(), { headers: spoofed });
    expect(served.status).toBe(200);
    expect(Array.isArray(await served.json()), "a prediction, not the status document").toBe(true);
    const record = await fx.auditOf(served);
    expect(record).toMatchObject({
      decision: "allow",
      reason: "allowed",
      route: "credit",
      roles: ["scorer"],
    });
    expect(fx.scoring.requests).toHaveLength(1);
    const sent = fx.scoring.requests[0];
    expect(sent?.path).toBe(new URL(fx.scoring.url).pathname);
    for (const name of Object.keys(sent?.headers ?? {})) {
      expect(name).not.toMatch(/forwarded|original|rewrite|x[-_]auth|principal|x[-_]user/i);
    }
    const sentText = JSON.stringify(sent?.headers);
    // Booleans, so a failure does not print the headers (they carry the endpoint key).
    expect(sentText.includes("admin"), "a spoofed identity value reached the upstream").toBe(false);
    expect(sentText.includes(STATUS_PATH), "a spoofed path reached the upstream").toBe(false);
  });

  it("#30 SSRF and issuer mix-up", async () => {
    const kid = defaultKid(fx.corp);
    const withHeader = (claims: Record<string, unknown>, header: Record<string, unknown>) =>
      signRaw(
        fx.corp,
        kid,
        JSON.stringify({ alg: "RS256", kid, ...header }),
        JSON.stringify(corpClaims(fx, claims)),
      );
    const cases: [string, Promise<string>, string][] = [
      ["iss metadata address", fx.token({ iss: "http://169.254.169.254/" }), "unknown_issuer"],
      ["iss evil.example", fx.token({ iss: "https://evil.example/" }), "unknown_issuer"],
      [
        "iss evil.example with a jku",
        withHeader({ iss: "https://evil.example/" }, { jku: "https://evil.example/jwks.json" }),
        "header_forbidden_member",
      ],
      [
        "corp iss with a jku at the metadata address",
        withHeader({}, { jku: "http://169.254.169.254/latest/meta-data/" }),
        "header_forbidden_member",
      ],
      [
        "kid that is a URL",
        fx.token({}, { header: { kid: "http://169.254.169.254/latest/meta-data/iam" } }),
        "unknown_kid",
      ],
    ];
    for (const [label, token, reason] of cases) {
      await refused(fx, label, await fx.score(await token), INVALID(reason));
    }
    const configured = new Set([fx.corp.jwksUri, fx.github.jwksUri]);
    for (const outbound of fx.gateway.outbound.requests) {
      expect(configured.has(outbound.url), `outbound request to ${outbound.url}`).toBe(true);
      expect(outbound.refused).toBeUndefined();
    }
    expect(fx.corp.discoveryFetches + fx.github.discoveryFetches, "no discovery is fetched").toBe(0);
  });

  it("#31 weak HS secret", async () => {
    for (const secret of ["secret", "your-256-bit-secret", "password"]) {
      const corp = hs256(secret, { alg: "HS256", typ: "JWT", kid: defaultKid(fx.corp) }, corpClaims(fx));
      await refused(fx, `corp, ${secret}`, await fx.score(corp), INVALID("alg_not_allowed"));
      const now = nowSeconds();
      const github = hs256(
        secret,
        { alg: "HS256", typ: "JWT" },
        {
          iss: fx.github.issuer,
          aud: GITHUB_AUDIENCE,
          sub: "repo:acme/models:environment:production",
          repository_id: "424242",
          environment: "production",
          iat: now,
          exp: now + 300,
        },
      );
      await refused(fx, `github, ${secret}`, await fx.score(github), INVALID("alg_not_allowed"));
    }
  });

  it("#32 stolen-token replay and long lifetimes", async () => {
    const revoked = await fx.token({ jti: REVOKED_JTI });
    for (const attempt of [1, 2, 3]) {
      await refused(fx, `revoked jti, replay ${attempt}`, await fx.score(revoked), INVALID("token_revoked"));
    }
    const thirtyDays = await fx.token({}, { expiresInSeconds: 30 * 24 * 3600 });
    await refused(fx, "30-day lifetime", await fx.score(thirtyDays), INVALID("lifetime_too_long"));
    const revokedLongLived = await fx.token({ jti: REVOKED_JTI }, { expiresInSeconds: 30 * 24 * 3600 });
    await refused(fx, "revoked and 30-day", await fx.score(revokedLongLived), INVALID("lifetime_too_long"));
  });

  it("defines exactly the 32 checklist cases, numbered in order, none skipped", ({ task }) => {
    const names: { name: string; mode: string }[] = [];
    const collect = (tasks: readonly { name: string; mode: string; type: string; tasks?: unknown }[]) => {
      for (const child of tasks) {
        if (child.type === "suite") collect((child.tasks ?? []) as typeof tasks);
        else if (/^#\d+ /.test(child.name)) names.push({ name: child.name, mode: child.mode });
      }
    };
    collect(task.file.tasks);
    expect(names.map(({ name }) => Number(/^#(\d+) /.exec(name)?.[1]))).toEqual(
      Array.from({ length: 32 }, (_, i) => i + 1),
    );
    expect(names.filter(({ mode }) => mode === "skip" || mode === "todo")).toEqual([]);
  });
});
