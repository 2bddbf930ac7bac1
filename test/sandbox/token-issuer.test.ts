import {
  createLocalJWKSet,
  decodeProtectedHeader,
  errors,
  exportJWK,
  generateKeyPair,
  jwtVerify,
} from "jose";
import { afterEach, describe, expect, it } from "vitest";
import { startTokenIssuer, type TokenIssuer } from "../../src/sandbox/token-issuer.ts";

const opened: TokenIssuer[] = [];
async function issuerWith(...args: Parameters<typeof startTokenIssuer>): Promise<TokenIssuer> {
  const issuer = await startTokenIssuer(...args);
  opened.push(issuer);
  return issuer;
}
afterEach(async () => {
  await Promise.all(opened.splice(0).map((i) => i.close()));
});

async function servedJwks(issuer: TokenIssuer) {
  const response = await fetch(issuer.jwksUri);
  expect(response.status).toBe(200);
  return (await response.json()) as { keys: Record<string, unknown>[] };
}

describe("token issuer", () => {
  it("serves discovery and a key set of public keys only, each with kid, alg and use", async () => {
    const issuer = await issuerWith({
      path: "/tenant-a/v2.0",
      algorithms: ["RS256", "ES256", "PS256", "EdDSA"],
    });
    expect(issuer.issuer).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/tenant-a\/v2\.0$/);
    expect(issuer.jwksUri).toBe(`${issuer.issuer}/jwks`);

    const discovery = (await (
      await fetch(`${issuer.issuer}/.well-known/openid-configuration`)
    ).json()) as Record<string, unknown>;
    expect(discovery.issuer).toBe(issuer.issuer);
    expect(discovery.jwks_uri).toBe(issuer.jwksUri);

    const jwks = await servedJwks(issuer);
    expect(jwks.keys.map((k) => k.alg)).toEqual(["RS256", "ES256", "PS256", "EdDSA"]);
    for (const key of jwks.keys) {
      expect(key.use).toBe("sig");
      expect(typeof key.kid).toBe("string");
      for (const privateMember of ["d", "p", "q", "dp", "dq", "qi"])
        expect(key).not.toHaveProperty(privateMember);
    }
    expect(new Set(jwks.keys.map((k) => k.kid)).size).toBe(4);
  });

  it("mints tokens that verify against the served key set, for every algorithm", async () => {
    const issuer = await issuerWith({
      issuer: "https://login.example.test/tenant/v2.0",
      algorithms: ["ES256", "RS256", "PS256", "EdDSA"],
    });
    expect(issuer.issuer).toBe("https://login.example.test/tenant/v2.0");
    const keySet = createLocalJWKSet(await servedJwks(issuer));
    for (const alg of ["ES256", "RS256", "PS256", "EdDSA"] as const) {
      const token = await issuer.mint({ sub: "alice", aud: "api://credit" }, { alg });
      const { payload, protectedHeader } = await jwtVerify(token, keySet, {
        issuer: "https://login.example.test/tenant/v2.0",
        audience: "api://credit",
        algorithms: [alg],
      });
      expect(protectedHeader.alg).toBe(alg);
      expect(payload.sub).toBe("alice");
      expect((payload.exp ?? 0) - (payload.iat ?? 0)).toBe(300);
      expect(typeof payload.jti).toBe("string");
    }
    // The first algorithm listed is the default signer.
    expect(decodeProtectedHeader(await issuer.mint({ sub: "bob" })).alg).toBe("ES256");
  });

  it("honours lifetimes, issued-at, not-before, extra headers and omitted claims", async () => {
    const issuer = await issuerWith();
    const keySet = createLocalJWKSet(await servedJwks(issuer));
    const now = Math.floor(Date.now() / 1000);

    const expired = await issuer.mint({ sub: "a" }, { issuedAt: now - 600, expiresInSeconds: 60 });
    await expect(jwtVerify(expired, keySet)).rejects.toBeInstanceOf(errors.JWTExpired);

    const future = await issuer.mint({ sub: "a" }, { notBefore: now + 600 });
    await expect(jwtVerify(future, keySet)).rejects.toBeInstanceOf(errors.JWTClaimValidationFailed);

    const typed = await issuer.mint({ sub: "a" }, { header: { typ: "at+jwt" } });
    expect(decodeProtectedHeader(typed).typ).toBe("at+jwt");

    const bare = await issuer.mint({ sub: "a" }, { omit: ["exp", "jti", "kid"] });
    expect(decodeProtectedHeader(bare).kid).toBeUndefined();
    const payload = JSON.parse(Buffer.from(bare.split(".")[1] ?? "", "base64url").toString()) as Record<
      string,
      unknown
    >;
    expect(payload).not.toHaveProperty("exp");
    expect(payload).not.toHaveProperty("jti");
    expect(payload.iss).toBe(issuer.issuer);
  });

  it("rotates: the new key signs and both are served until the old one is retired", async () => {
    const issuer = await issuerWith();
    const first = issuer.defaultKid;
    const oldToken = await issuer.mint({ sub: "a" });

    const second = await issuer.rotate();
    expect(second.kid).not.toBe(first);
    expect(issuer.defaultKid).toBe(second.kid);
    expect(decodeProtectedHeader(await issuer.mint({ sub: "a" })).kid).toBe(second.kid);
    expect((await servedJwks(issuer)).keys.map((k) => k.kid)).toEqual([first, second.kid]);

    const third = await issuer.rotate({ retireOld: true });
    expect((await servedJwks(issuer)).keys.map((k) => k.kid)).toEqual([first, third.kid]);
    const keySet = createLocalJWKSet(await servedJwks(issuer));
    await expect(jwtVerify(oldToken, keySet)).resolves.toBeDefined();
    // A retired key still signs on request, so tests can present tokens the key set no longer vouches for.
    const retiredToken = await issuer.mint({ sub: "a" }, { kid: second.kid });
    await expect(jwtVerify(retiredToken, keySet)).rejects.toBeInstanceOf(errors.JWKSNoMatchingKey);

    const es = await issuer.rotate("ES256", { retireOld: true });
    expect(es.alg).toBe("ES256");
    expect(decodeProtectedHeader(await issuer.mint({})).alg).toBe("ES256");
  });

  it("serves planted keys as given and can drop a key", async () => {
    const issuer = await issuerWith();
    const { publicKey } = await generateKeyPair("RSA-OAEP-256", { extractable: true });
    const encryptionKey = { ...(await exportJWK(publicKey)), kid: "enc-1", use: "enc", alg: "RSA-OAEP-256" };
    issuer.addKeyToJwks(encryptionKey);
    let jwks = await servedJwks(issuer);
    expect(jwks.keys).toHaveLength(2);
    expect(jwks.keys[1]).toEqual(encryptionKey);

    issuer.removeKeyFromJwks(issuer.defaultKid);
    issuer.removeKeyFromJwks("enc-1");
    jwks = await servedJwks(issuer);
    expect(jwks.keys).toEqual([]);
  });

  it("goes down with 503 and counts every key-set fetch", async () => {
    const issuer = await issuerWith();
    await servedJwks(issuer);
    await servedJwks(issuer);
    expect(issuer.jwksFetches).toBe(2);

    issuer.setDown(true);
    const down = await fetch(issuer.jwksUri);
    expect(down.status).toBe(503);
    expect(issuer.jwksFetches).toBe(3);

    issuer.setDown(false);
    issuer.resetCounts();
    expect(issuer.jwksFetches).toBe(0);
    await servedJwks(issuer);
    expect(issuer.jwksFetches).toBe(1);
  });

  it("delays key-set answers when asked", async () => {
    const issuer = await issuerWith();
    issuer.setJwksDelay(300);
    const started = performance.now();
    await servedJwks(issuer);
    expect(performance.now() - started).toBeGreaterThanOrEqual(250);
  });

  it("serves the key set at a given path and refuses other methods", async () => {
    const issuer = await issuerWith({ path: "/oidc", jwksPath: "/oidc/discovery/keys" });
    expect(issuer.jwksUri).toMatch(/\/oidc\/discovery\/keys$/);
    expect((await servedJwks(issuer)).keys).toHaveLength(1);
    expect((await fetch(issuer.jwksUri, { method: "POST" })).status).toBe(405);
    expect((await fetch(new URL("/oidc/jwks", issuer.jwksUri))).status).toBe(404);
  });

  it("closes its port", async () => {
    const issuer = await startTokenIssuer();
    await servedJwks(issuer);
    await issuer.close();
    await expect(fetch(issuer.jwksUri)).rejects.toThrow();
  });
});
