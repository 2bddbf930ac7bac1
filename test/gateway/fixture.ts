// The gateway under test: the real bundle in workerd (Miniflare), two real token issuers and an Azure ML scoring
// stand-in on loopback, and helpers that assert a refusal the way the issue asks: status, RFC 6750 error, one
// audit record with the reason, and nothing sent to the upstream.
import { webcrypto } from "node:crypto";
import { base64url } from "jose";
import { expect } from "vitest";
import { compileConfigBundle, fetchKeySnapshots } from "../../src/config/index.ts";
import { type ConfigBundle, type GatewayConfigInput, gatewayConfigSchema } from "../../src/config/schema.ts";
import { type AuditRecord, type RunningGateway, startGateway } from "../../src/sandbox/gateway-runtime.ts";
import { type ScoringServer, startScoringServer } from "../../src/sandbox/scoring-server.ts";
import { type MintOptions, startTokenIssuer, type TokenIssuer } from "../../src/sandbox/token-issuer.ts";

export const AUDIENCE = "api://aml-edge-test";
export const GITHUB_AUDIENCE = "https://github.com/aml-edge-test";
export const TENANT = "11111111-2222-3333-4444-555555555555";
export const ROUTE_PATH = "/v1/credit/score";
export const STATUS_PATH = "/.aml-edge/status";
export const SCORING_BODY = JSON.stringify({ data: [[85, 0.25, 9, 0, 20, 6]] });

export interface FixtureOptions {
  /** Adjust the test config before it is compiled. */
  configure?: (config: GatewayConfigInput) => void;
  /** Ship key snapshots in the bundle (the production path). Default true. */
  snapshot?: boolean;
  /**
   * Let workerd call the scoring stand-in directly, as a deployed Worker calls Azure ML, instead of through the
   * sandbox's recording forwarder, so that a call the gateway drops closes its connection. Every outbound request
   * then goes to the stand-in: key sets come only from the bundle's snapshot. Default false.
   */
  directUpstream?: boolean;
}

export interface GatewayFixture {
  corp: TokenIssuer;
  github: TokenIssuer;
  scoring: ScoringServer;
  gateway: RunningGateway;
  /** The compiled config bundle the gateway runs. */
  bundle: ConfigBundle;
  /** A token from the corp issuer that the policy lets score the credit route; claims may be added or replaced. */
  token(claims?: Record<string, unknown>, options?: MintOptions): Promise<string>;
  /** POST a scoring request to the credit route. */
  score(
    token: string | undefined,
    init?: { headers?: Record<string, string>; body?: string; path?: string },
  ): Promise<Response>;
  /** The audit record of a response (by its x-request-id). */
  auditOf(response: Response): Promise<AuditRecord>;
  /**
   * Asserts a refusal: status, the RFC 6750 error in WWW-Authenticate (or none), one deny record with the
   * reason, and that the scoring endpoint received nothing.
   */
  expectRefused(
    response: Response,
    expected: {
      status: number;
      error?: "invalid_token" | "invalid_request" | "insufficient_scope" | null;
      reason: string;
    },
  ): Promise<AuditRecord>;
  reset(): void;
  dispose(): Promise<void>;
}

export function baseConfig(
  corp: TokenIssuer,
  github: TokenIssuer,
  scoring: ScoringServer,
): GatewayConfigInput {
  return {
    description: "gateway tests",
    issuers: [
      {
        name: "corp",
        issuer: corp.issuer,
        jwksUri: corp.jwksUri,
        audiences: [AUDIENCE],
        algorithms: ["RS256", "ES256"],
        clockToleranceSeconds: 30,
        maxTokenAgeSeconds: 3600,
        tenants: [TENANT],
        roleClaims: ["roles", "scp"],
        refetchCooldownSeconds: 30,
      },
      {
        name: "github",
        issuer: github.issuer,
        jwksUri: github.jwksUri,
        audiences: [GITHUB_AUDIENCE],
        algorithms: ["RS256"],
        clockToleranceSeconds: 30,
        maxTokenAgeSeconds: 600,
      },
    ],
    policy: {
      roles: {
        scorer: ["score:credit"],
        releaser: ["score:credit", "pin-deployment:credit"],
        operator: ["read-status"],
      },
      rules: [
        { name: "corp-scorers", match: { issuers: ["corp"], role: ["ml.score"] }, roles: ["scorer"] },
        { name: "corp-releasers", match: { issuers: ["corp"], role: ["ml.release"] }, roles: ["releaser"] },
        { name: "corp-operators", match: { issuers: ["corp"], role: ["ml.operator"] }, roles: ["operator"] },
        {
          name: "deploy-workflow",
          match: { issuers: ["github"], repositoryId: ["424242"], environment: ["production"] },
          roles: ["scorer", "operator"],
        },
      ],
    },
    routes: [
      {
        name: "credit",
        path: ROUTE_PATH,
        scoringUri: scoring.url,
        deployments: [
          { name: "blue", weight: 90 },
          { name: "green", weight: 10 },
        ],
        cohorts: [{ name: "beta", match: { group: ["beta-testers"] }, deployment: "green" }],
        limits: { maxBodyBytes: 64 * 1024, timeoutMs: 2_000 },
        upstreamAuth: { mode: "key", primarySecret: "AML_KEY_PRIMARY", secondarySecret: "AML_KEY_SECONDARY" },
      },
    ],
  };
}

export async function startGatewayFixture(options: FixtureOptions = {}): Promise<GatewayFixture> {
  const corp = await startTokenIssuer({ path: "/corp/v2.0", algorithms: ["RS256", "ES256"] });
  const github = await startTokenIssuer({ path: "/github" });
  const scoring = await startScoringServer({
    deployments: [
      { name: "blue", weight: 90 },
      { name: "green", weight: 10 },
    ],
  });
  const input = baseConfig(corp, github, scoring);
  options.configure?.(input);
  const config = gatewayConfigSchema.parse(input);
  const keySnapshots = options.snapshot === false ? {} : await fetchKeySnapshots(config, { fetch });
  const bundle = await compileConfigBundle(config, { mode: "local", keySnapshots });
  const gateway = await startGateway({
    bundle,
    secrets: { AML_KEY_PRIMARY: scoring.keys.primary, AML_KEY_SECONDARY: scoring.keys.secondary },
    ...(options.directUpstream ? { directOutbound: new URL(scoring.url).origin } : {}),
  });
  corp.resetCounts();
  github.resetCounts();

  const fixture: GatewayFixture = {
    corp,
    github,
    scoring,
    gateway,
    bundle,
    token: (claims = {}, mintOptions = {}) =>
      corp.mint({ aud: AUDIENCE, sub: "user-1", tid: TENANT, roles: ["ml.score"], ...claims }, mintOptions),
    score: (token, init = {}) =>
      gateway.fetch(init.path ?? ROUTE_PATH, {
        method: "POST",
        headers: {
          "content-type": "application/json",
          ...(token === undefined ? {} : { authorization: `Bearer ${token}` }),
          ...init.headers,
        },
        body: init.body ?? SCORING_BODY,
      }),
    auditOf: async (response) => {
      const requestId = response.headers.get("x-request-id");
      expect(requestId, "every response carries x-request-id").toBeTruthy();
      return gateway.audit.waitFor((record) => record.requestId === requestId, 5_000);
    },
    expectRefused: async (response, expected) => {
      const body = await response.text();
      expect(response.status, `status (body: ${body})`).toBe(expected.status);
      const challenge = response.headers.get("www-authenticate");
      if (expected.error === undefined || expected.error === null) {
        if (expected.status === 401) expect(challenge).toBe('Bearer realm="aml-edge"');
      } else {
        expect(challenge).toContain(`error="${expected.error}"`);
      }
      const record = await fixture.auditOf(response);
      expect(record.decision).toBe("deny");
      expect(record.reason).toBe(expected.reason);
      expect(record.status).toBe(expected.status);
      const requestId = response.headers.get("x-request-id");
      expect(gateway.audit.records.filter((r) => r.requestId === requestId)).toHaveLength(1);
      expect(scoring.requests, "nothing reached the upstream").toHaveLength(0);
      return record;
    },
    reset: () => {
      scoring.clearRequests();
      scoring.clearFaults();
      gateway.audit.clear();
      gateway.outbound.clear();
      corp.resetCounts();
      github.resetCounts();
    },
    dispose: async () => {
      await gateway.dispose();
      await Promise.all([corp.close(), github.close(), scoring.close()]);
    },
  };
  return fixture;
}

/**
 * Signs an exact header and payload text with one of the issuer's keys, for tokens no JWT library would build
 * (duplicate members, odd types). The signature is WebCrypto's; only the framing is done here.
 */
export async function signRaw(
  issuer: TokenIssuer,
  kid: string,
  headerJson: string,
  payloadJson: string,
): Promise<string> {
  const key = issuer.keys.find((candidate) => candidate.kid === kid);
  if (!key) throw new Error(`no key ${kid}`);
  const signingInput = `${base64url.encode(headerJson)}.${base64url.encode(payloadJson)}`;
  const algorithm =
    key.alg === "ES256"
      ? { name: "ECDSA", hash: "SHA-256" }
      : key.alg.startsWith("PS")
        ? { name: "RSA-PSS", saltLength: 32 }
        : { name: "RSASSA-PKCS1-v1_5" };
  const signature = await webcrypto.subtle.sign(
    algorithm,
    key.privateKey as unknown as webcrypto.CryptoKey,
    new TextEncoder().encode(signingInput),
  );
  return `${signingInput}.${base64url.encode(new Uint8Array(signature))}`;
}

/** Standard claims for a raw token from the corp issuer, valid now. */
export function corpClaims(
  fixture: GatewayFixture,
  extra: Record<string, unknown> = {},
): Record<string, unknown> {
  const now = Math.floor(Date.now() / 1000);
  return {
    iss: fixture.corp.issuer,
    aud: AUDIENCE,
    sub: "user-1",
    tid: TENANT,
    roles: ["ml.score"],
    iat: now,
    exp: now + 300,
    jti: `jti-${now}-${Math.random()}`,
    ...extra,
  };
}

export function defaultKid(issuer: TokenIssuer, alg = "RS256"): string {
  const key = issuer.keys.find((candidate) => candidate.alg === alg && candidate.published);
  if (!key) throw new Error(`no ${alg} key`);
  return key.kid;
}
