// The Miniflare harness, tested with a small Worker of its own (not the gateway), so that a failure here points at
// the harness: bindings, audit capture from workerd's stdout, outbound recording and the loopback-only rule.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type ConfigBundle, configBundleSchema } from "../../src/config/schema.ts";
import { parseAuditLine, type RunningGateway, startGateway } from "../../src/sandbox/gateway-runtime.ts";
import { type ScoringServer, startScoringServer } from "../../src/sandbox/scoring-server.ts";

const STAND_IN_WORKER = `
export default {
  async fetch(request, env) {
    const url = new URL(request.url);
    const route = env.AML_EDGE_CONFIG.config.routes[0];
    if (url.pathname === "/env") {
      return Response.json({ description: env.AML_EDGE_CONFIG.config.description, key: env.AML_KEY_PRIMARY, extra: env.EXTRA });
    }
    if (url.pathname === "/outside") {
      const response = await fetch("https://example.com/jwks");
      return new Response(await response.text(), { status: response.status });
    }
    console.log("an ordinary log line");
    console.log(JSON.stringify({ type: "something-else", n: 1 }));
    const upstream = await fetch(route.scoringUri, {
      method: "POST",
      headers: {
        authorization: "Bearer " + env.AML_KEY_PRIMARY,
        "azureml-model-deployment": route.deployments[0].name,
        "content-type": "application/json",
      },
      body: await request.text(),
    });
    const text = await upstream.text();
    console.log(JSON.stringify({ type: "aml-edge.audit", route: route.name, status: upstream.status, path: url.pathname }));
    return new Response(text, { status: upstream.status, headers: { "x-upstream-deployment": upstream.headers.get("azureml-model-deployment") ?? "" } });
  },
};
`;

function bundleFor(scoringUri: string, description: string): ConfigBundle {
  return configBundleSchema.parse({
    format: "aml-edge/gateway-config@1",
    version: `test-${description}`,
    mode: "local",
    config: {
      description,
      issuers: [
        {
          name: "dev",
          issuer: "http://127.0.0.1:1/dev",
          jwksUri: "http://127.0.0.1:1/dev/jwks",
          algorithms: ["ES256"],
        },
      ],
      policy: { roles: { scorer: ["score:credit"] }, rules: [] },
      routes: [
        {
          name: "credit",
          path: "/v1/credit/score",
          scoringUri,
          deployments: [{ name: "blue", weight: 100 }],
          upstreamAuth: {
            mode: "key",
            primarySecret: "AML_KEY_PRIMARY",
            secondarySecret: "AML_KEY_SECONDARY",
          },
        },
      ],
    },
  });
}

const body = JSON.stringify({ data: [[85, 0.25, 9, 0, 20, 6]] });

describe("gateway runtime (Miniflare harness)", () => {
  let scoring: ScoringServer;
  let gateway: RunningGateway;

  beforeAll(async () => {
    scoring = await startScoringServer({ deployments: [{ name: "blue", weight: 100 }] });
    gateway = await startGateway({
      bundle: bundleFor(scoring.url, "first"),
      secrets: { AML_KEY_PRIMARY: scoring.keys.primary, AML_KEY_SECONDARY: scoring.keys.secondary },
      extraBindings: { EXTRA: "extra-value" },
      script: STAND_IN_WORKER,
    });
  }, 30_000);
  afterAll(async () => {
    await gateway?.dispose();
    await scoring?.close();
  });

  it("serves on loopback with the config bundle and secrets bound", async () => {
    expect(gateway.url.hostname).toBe("127.0.0.1");
    expect(gateway.startupMs).toBeGreaterThan(0);
    const response = await gateway.fetch("/env");
    expect(await response.json()).toEqual({
      description: "first",
      key: scoring.keys.primary,
      extra: "extra-value",
    });
  });

  it("captures audit records from workerd's stdout and keeps other lines apart", async () => {
    gateway.audit.clear();
    const response = await gateway.fetch("/v1/credit/score", { method: "POST", body });
    expect(response.status).toBe(200);
    expect(response.headers.get("x-upstream-deployment")).toBe("blue");
    const predictions = (await response.json()) as { approved: boolean; probability: number }[];
    expect(predictions).toHaveLength(1);

    const record = await gateway.audit.waitFor((r) => r.path === "/v1/credit/score", 5000);
    expect(record).toEqual({
      type: "aml-edge.audit",
      route: "credit",
      status: 200,
      path: "/v1/credit/score",
    });
    expect(gateway.audit.records.every((r) => r.type === "aml-edge.audit")).toBe(true);
    expect(gateway.logs.some((l) => l.stream === "stdout" && l.line === "an ordinary log line")).toBe(true);
    expect(gateway.logs.some((l) => l.line.includes('"something-else"'))).toBe(true);
  });

  it("waitFor also resolves for a record that arrives later, and times out otherwise", async () => {
    const later = gateway.audit.waitFor((r) => r.path === "/later", 5000);
    await gateway.fetch("/later", { method: "POST", body });
    expect((await later).path).toBe("/later");
    await expect(gateway.audit.waitFor((r) => r.path === "/never", 200)).rejects.toThrow(/within 200 ms/);
  });

  it("records outbound requests and forwards them without Miniflare's headers", async () => {
    gateway.outbound.clear();
    scoring.clearRequests();
    await gateway.fetch(
      new Request("https://gateway.example.test/v1/credit/score?x=1", { method: "POST", body }),
    );
    expect(gateway.outbound.requests).toEqual([
      { method: "POST", url: scoring.url, time: expect.any(Number), status: 200 },
    ]);
    const received = scoring.requests[0];
    expect(received?.body).toBe(body);
    expect(received?.headers.authorization).toBe(`Bearer ${scoring.keys.primary}`);
    expect(received?.headers["azureml-model-deployment"]).toBe("blue");
    expect(Object.keys(received?.headers ?? {}).filter((h) => h.startsWith("mf-"))).toEqual([]);
  });

  it("refuses, with 502, and records an outbound request that leaves loopback", async () => {
    gateway.outbound.clear();
    const response = await gateway.fetch("/outside");
    expect(response.status).toBe(502);
    expect(await response.text()).toContain("not a loopback address");
    expect(gateway.outbound.requests).toEqual([
      {
        method: "GET",
        url: "https://example.com/jwks",
        time: expect.any(Number),
        status: 502,
        refused: "https://example.com is not a loopback address",
      },
    ]);
  });

  it("reports a loopback upstream that does not answer as 502", async () => {
    const closed = await startScoringServer({ deployments: [{ name: "blue", weight: 100 }] });
    await closed.close();
    await gateway.update({ bundle: bundleFor(closed.url, "closed") });
    gateway.outbound.clear();
    const response = await gateway.fetch("/v1/credit/score", { method: "POST", body });
    expect(response.status).toBe(502);
    expect(gateway.outbound.requests[0]?.error).toBeDefined();
  });

  it("updates config and secrets in place, at the same address", async () => {
    const before = gateway.url.href;
    await gateway.update({
      bundle: bundleFor(scoring.url, "second"),
      secrets: { AML_KEY_PRIMARY: scoring.keys.secondary, AML_KEY_SECONDARY: scoring.keys.primary },
    });
    expect(gateway.url.href).toBe(before);
    expect(await (await gateway.fetch("/env")).json()).toEqual({
      description: "second",
      key: scoring.keys.secondary,
      extra: "extra-value",
    });
    // Audit capture survives the restart of workerd that setOptions causes.
    gateway.audit.clear();
    expect((await gateway.fetch("/v1/credit/score", { method: "POST", body })).status).toBe(200);
    await gateway.audit.waitFor((r) => r.status === 200, 5000);
  });

  it("refuses a secret that would shadow the config binding", async () => {
    await expect(
      startGateway({
        bundle: bundleFor(scoring.url, "x"),
        secrets: { AML_EDGE_CONFIG: "x" },
        script: STAND_IN_WORKER,
      }),
    ).rejects.toThrow(/AML_EDGE_CONFIG/);
  });

  it("with directOutbound, lets workerd call that origin itself and records nothing", async () => {
    const direct = await startGateway({
      bundle: bundleFor(scoring.url, "direct"),
      secrets: { AML_KEY_PRIMARY: scoring.keys.primary, AML_KEY_SECONDARY: scoring.keys.secondary },
      script: STAND_IN_WORKER,
      directOutbound: new URL(scoring.url).origin,
    });
    try {
      scoring.clearRequests();
      const response = await direct.fetch("/v1/credit/score", { method: "POST", body });
      expect(response.status).toBe(200);
      expect(scoring.requests).toHaveLength(1);
      expect(direct.outbound.requests).toEqual([]);
    } finally {
      await direct.dispose();
    }
  });

  it("refuses a directOutbound that is not a loopback origin, naming it", async () => {
    for (const origin of [
      "https://example.com",
      "http://10.0.0.1:8080",
      "http://127.0.0.1",
      "127.0.0.1:80",
    ]) {
      await expect(
        startGateway({
          bundle: bundleFor(scoring.url, "x"),
          secrets: {},
          script: STAND_IN_WORKER,
          directOutbound: origin,
        }),
      ).rejects.toThrow(
        `directOutbound must be a loopback origin such as http://127.0.0.1:8080, got "${origin}"`,
      );
    }
  });

  it("stops serving once disposed", async () => {
    const second = await startGateway({
      bundle: bundleFor(scoring.url, "short-lived"),
      secrets: {},
      script: STAND_IN_WORKER,
    });
    expect((await second.fetch("/env")).status).toBe(200);
    await second.dispose();
    await expect(second.fetch("/env")).rejects.toThrow();
  }, 30_000);
});

describe("parseAuditLine", () => {
  it("accepts only JSON objects of type aml-edge.audit", () => {
    expect(parseAuditLine('{"type":"aml-edge.audit","decision":"allow"}')).toEqual({
      type: "aml-edge.audit",
      decision: "allow",
    });
    expect(parseAuditLine('  {"type":"aml-edge.audit"}  ')).toEqual({ type: "aml-edge.audit" });
    expect(parseAuditLine('{"type":"aml-edge.config-error"}')).toBeUndefined();
    expect(parseAuditLine('["aml-edge.audit"]')).toBeUndefined();
    expect(parseAuditLine('{"type":"aml-edge.audit"')).toBeUndefined();
    expect(parseAuditLine("plain text")).toBeUndefined();
  });
});
