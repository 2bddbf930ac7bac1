// The request path end to end: what a served request looks like, what reaches Azure ML, and the status route.
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { startGateway } from "../../src/sandbox/gateway-runtime.ts";
import { type GatewayFixture, ROUTE_PATH, STATUS_PATH, startGatewayFixture } from "./fixture.ts";

let fx: GatewayFixture;
beforeAll(async () => {
  fx = await startGatewayFixture();
});
afterAll(async () => {
  await fx?.dispose();
});
beforeEach(() => fx.reset());

describe("a served request", () => {
  it("returns the prediction with the deployment, config version and request id, and audits the allow", async () => {
    const response = await fx.score(await fx.token());
    expect(response.status).toBe(200);
    const body = (await response.json()) as unknown[];
    expect(Array.isArray(body)).toBe(true);
    const deployment = response.headers.get("x-aml-edge-deployment");
    expect(["blue", "green"]).toContain(deployment);
    expect(response.headers.get("x-aml-edge-config")).toMatch(/^sha256:[0-9a-f]{16}$/);
    const record = await fx.auditOf(response);
    expect(record).toMatchObject({
      decision: "allow",
      reason: "allowed",
      status: 200,
      route: "credit",
      deployment,
      subject: "user-1",
      issuer: fx.corp.issuer,
      roles: ["scorer"],
      upstreamStatus: 200,
    });
    expect(record.jtiHash).toMatch(/^[0-9a-f]{32}$/);
    expect(fx.scoring.requests).toHaveLength(1);
  });

  it("sends Azure ML the endpoint key and the chosen deployment, and nothing of the caller's identity", async () => {
    const token = await fx.token();
    const response = await fx.score(token, {
      headers: {
        "x-forwarded-user": "admin",
        x_forwarded_user: "admin",
        "X-Forwarded-For": "10.0.0.1",
        "x-ms-client-principal-name": "admin@corp.example",
        "x-user-id": "admin",
        cookie: "session=abc",
        "x-ms-client-request-id": "chosen-by-the-caller",
      },
    });
    expect(response.status).toBe(200);
    const [sent] = fx.scoring.requests;
    expect(sent?.headers.authorization).toBe(`Bearer ${fx.scoring.keys.primary}`);
    expect(sent?.headers["azureml-model-deployment"]).toBe(response.headers.get("x-aml-edge-deployment"));
    // Azure ML logs this id with the call: it is the gateway's request id, never one the caller picked.
    expect(sent?.headers["x-ms-client-request-id"]).toBe(response.headers.get("x-request-id"));
    const names = Object.keys(sent?.headers ?? {});
    for (const name of names) {
      expect(name).not.toMatch(/forwarded|x[-_]user|principal|cookie/i);
    }
    expect(JSON.stringify(sent?.headers)).not.toContain(token);
  });

  it("records the actor chain of an agent acting for a user, and never the token", async () => {
    const token = await fx.token({
      act: { sub: "agent-7", azp: "copilot-app", act: { sub: "orchestrator" } },
    });
    const response = await fx.score(token);
    expect(response.status).toBe(200);
    const record = await fx.auditOf(response);
    expect(record.actors).toEqual([{ sub: "agent-7", azp: "copilot-app" }, { sub: "orchestrator" }]);
    for (const stored of fx.gateway.audit.records) expect(JSON.stringify(stored)).not.toContain(token);
  });
});

describe("the status route", () => {
  it("shows config version, weights, key fingerprints (never keys) and key-set state to read-status holders", async () => {
    const token = await fx.token({ roles: ["ml.operator"] });
    const response = await fx.gateway.fetch(STATUS_PATH, { headers: { authorization: `Bearer ${token}` } });
    expect(response.status).toBe(200);
    const text = await response.text();
    expect(text).not.toContain(fx.scoring.keys.primary);
    expect(text).not.toContain(fx.scoring.keys.secondary);
    const status = JSON.parse(text);
    expect(status.configVersion).toBe(response.headers.get("x-aml-edge-config"));
    expect(status.routes[0].deployments).toEqual([
      { name: "blue", weight: 90 },
      { name: "green", weight: 10 },
    ]);
    expect(status.routes[0].upstreamAuth).toMatchObject({
      mode: "key",
      active: "primary",
      primary: expect.stringMatching(/^sha256:[0-9a-f]{16}$/),
      secondary: expect.stringMatching(/^sha256:[0-9a-f]{16}$/),
    });
    const corp = status.issuers.find((issuer: { issuer: string }) => issuer.issuer === "corp");
    expect(corp.kids.length).toBeGreaterThan(0);
    expect(corp.source).toBe("snapshot");
  });

  it("refuses a scorer without read-status", async () => {
    const token = await fx.token();
    const response = await fx.gateway.fetch(STATUS_PATH, { headers: { authorization: `Bearer ${token}` } });
    await fx.expectRefused(response, { status: 403, error: "insufficient_scope", reason: "no_permission" });
  });
});

describe("a config bundle that fails the checks", () => {
  it("serves nothing: every request gets 503 config_invalid and is audited", async () => {
    const bundle = structuredClone(fx.bundle);
    const issuer = bundle.config.issuers[0];
    if (!issuer) throw new Error("fixture has no issuer");
    issuer.algorithms = ["RS256", "HS256"];
    const unsafe = await startGateway({ bundle, secrets: {} });
    try {
      const response = await unsafe.fetch(ROUTE_PATH, {
        method: "POST",
        headers: { authorization: `Bearer ${await fx.token()}` },
        body: "{}",
      });
      expect(response.status).toBe(503);
      const record = await unsafe.audit.waitFor((r) => r.requestId === response.headers.get("x-request-id"));
      expect(record).toMatchObject({ decision: "deny", reason: "config_invalid", configVersion: "invalid" });
      expect(
        unsafe.logs.some((line) => line.line.includes("hs-algorithm") || line.line.includes("HS256")),
      ).toBe(true);
    } finally {
      await unsafe.dispose();
    }
  });
});
