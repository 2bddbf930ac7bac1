import { createLocalJWKSet, jwtVerify } from "jose";
import { describe, expect, it } from "vitest";
import { type GatewayConfig, gatewayConfigSchema } from "../../src/config/schema.ts";
import { isLoopbackHostname } from "../../src/sandbox/http-server.ts";
import { isLoopbackUrl, startLocalStandIns } from "../../src/sandbox/local-stand-ins.ts";
import { freePort } from "./cli-helpers.ts";

function configWith(issuers: object[], routes: object[]): GatewayConfig {
  return gatewayConfigSchema.parse({ issuers, policy: { roles: {}, rules: [] }, routes });
}
const keyAuth = { mode: "key", primarySecret: "K_A", secondarySecret: "K_B" };

describe("local stand-ins", () => {
  it("serves issuers and endpoints at the configured addresses, sharing ports and endpoints", async () => {
    const port = await freePort();
    const config = configWith(
      [
        {
          name: "dev",
          issuer: `http://127.0.0.1:${port}/dev`,
          jwksUri: `http://127.0.0.1:${port}/dev/keys`,
          algorithms: ["HS256", "EdDSA", "RS256"],
        },
        {
          name: "remote",
          issuer: "https://idp.test",
          jwksUri: "https://idp.test/jwks",
          algorithms: ["RS256"],
        },
        { name: "symmetric", issuer: "sym", jwksUri: `http://127.0.0.1:${port}/sym`, algorithms: ["HS256"] },
      ],
      [
        {
          name: "credit",
          path: "/credit",
          scoringUri: `http://localhost:${port}/score`,
          deployments: [{ name: "blue", weight: 100 }],
          upstreamAuth: keyAuth,
        },
        {
          name: "credit-canary",
          path: "/credit-canary",
          scoringUri: `http://localhost:${port}/score`,
          deployments: [{ name: "green", weight: 100 }],
          upstreamAuth: keyAuth,
        },
        {
          name: "fraud",
          path: "/fraud",
          scoringUri: "https://127.0.0.1:9/score",
          deployments: [{ name: "blue", weight: 100 }],
          upstreamAuth: keyAuth,
        },
        {
          name: "elsewhere",
          path: "/elsewhere",
          scoringUri: "http://127.0.0.2:9/score",
          deployments: [{ name: "blue", weight: 100 }],
          upstreamAuth: keyAuth,
        },
      ],
    );
    const standIns = await startLocalStandIns(config, { keysFor: () => ({ primary: "given-primary" }) });
    try {
      expect(standIns.notes).toEqual([
        { kind: "issuer", name: "dev", url: `http://127.0.0.1:${port}/dev/keys`, started: true },
        {
          kind: "issuer",
          name: "symmetric",
          url: `http://127.0.0.1:${port}/sym`,
          started: false,
          reason: "it pins no asymmetric algorithm",
        },
        { kind: "scoring", name: "credit", url: `http://localhost:${port}/score`, started: true },
        { kind: "scoring", name: "credit-canary", url: `http://localhost:${port}/score`, started: true },
        {
          kind: "scoring",
          name: "fraud",
          url: "https://127.0.0.1:9/score",
          started: false,
          reason: expect.stringMatching(/^https: stand-ins are not available/),
        },
        {
          kind: "scoring",
          name: "elsewhere",
          url: "http://127.0.0.2:9/score",
          started: false,
          reason: expect.stringMatching(/bind 127\.0\.0\.1 only/),
        },
      ]);

      // The issuer signs with its first asymmetric algorithm, as `iss` the config names, and serves discovery
      // under the issuer URL.
      const issuer = standIns.issuers.get("dev");
      if (issuer === undefined) throw new Error("no issuer");
      const discovery = (await (
        await fetch(`http://127.0.0.1:${port}/dev/.well-known/openid-configuration`)
      ).json()) as {
        jwks_uri: string;
      };
      expect(discovery.jwks_uri).toBe(`http://127.0.0.1:${port}/dev/keys`);
      const jwks = await (await fetch(`http://127.0.0.1:${port}/dev/keys`)).json();
      const { protectedHeader, payload } = await jwtVerify(
        await issuer.mint({ sub: "x" }),
        createLocalJWKSet(jwks as never),
      );
      expect(protectedHeader.alg).toBe("EdDSA");
      expect(payload.iss).toBe(`http://127.0.0.1:${port}/dev`);

      // One endpoint serves both routes' deployments, with the given primary key and a generated secondary.
      const endpoint = standIns.scoring.get("credit");
      expect(standIns.scoring.get("credit-canary")).toBe(endpoint);
      expect(endpoint?.traffic).toEqual({ blue: 100, green: 100 });
      expect(endpoint?.keys.primary).toBe("given-primary");
      expect(endpoint?.keys.secondary).toHaveLength(32);
      const scored = await fetch(`http://127.0.0.1:${port}/score`, {
        method: "POST",
        headers: { authorization: "Bearer given-primary", "azureml-model-deployment": "green" },
        body: JSON.stringify({ data: [[85, 0.25, 9, 0, 20, 6]] }),
      });
      expect(scored.status).toBe(200);
    } finally {
      await standIns.close();
    }
    await expect(fetch(`http://127.0.0.1:${port}/dev/keys`)).rejects.toThrow();
  });
});

describe("loopback addresses", () => {
  it.each([
    ["127.0.0.1", true],
    ["127.1.2.3", true],
    ["localhost", true],
    ["LOCALHOST", true],
    ["[::1]", true],
    ["128.0.0.1", false],
    ["127.0.0.1.nip.io", false],
    ["localhost.example.com", false],
    ["10.0.0.1", false],
    ["[::ffff:127.0.0.1]", false],
  ])("%s → %s", (host, loopback) => {
    expect(isLoopbackHostname(host)).toBe(loopback);
  });

  it("reads URLs, and is false for what is not one", () => {
    expect(isLoopbackUrl("http://127.0.0.1:8781/jwks")).toBe(true);
    expect(isLoopbackUrl("https://login.microsoftonline.com/x")).toBe(false);
    expect(isLoopbackUrl("not a url")).toBe(false);
  });
});
