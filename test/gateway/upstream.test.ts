// The call to Azure ML and how its failures reach the client: pass-through of 424/429 with Retry-After, 502/504 for
// upstream failures (never a 401 for the gateway's own credential), body limits before anything is sent, route
// and method misses, and the endpoint credential: key (primary/secondary), AML token, missing or expired.
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { generateEndpointKey, type ScoringFault } from "../../src/sandbox/scoring-server.ts";
import { type GatewayFixture, ROUTE_PATH, SCORING_BODY, startGatewayFixture } from "./fixture.ts";

const MAX_BODY_BYTES = 64 * 1024;
const DEPLOYMENTS = ["blue", "green"] as const;

/** A valid scoring body of exactly `size` bytes (JSON allows trailing whitespace). */
function bodyOfSize(size: number): string {
  if (size < SCORING_BODY.length) throw new Error("too small for the scoring body");
  return SCORING_BODY + " ".repeat(size - SCORING_BODY.length);
}

/** A request body as a stream of `total` bytes in 8 KiB chunks: sent chunked, with no content-length. */
function streamOf(body: string): ReadableStream<Uint8Array> {
  const bytes = new TextEncoder().encode(body);
  let offset = 0;
  return new ReadableStream<Uint8Array>({
    pull(controller) {
      if (offset >= bytes.length) {
        controller.close();
        return;
      }
      controller.enqueue(bytes.slice(offset, offset + 8 * 1024));
      offset += 8 * 1024;
    },
  });
}

function postStream(fx: GatewayFixture, token: string, body: string): Promise<Response> {
  return fx.gateway.fetch(ROUTE_PATH, {
    method: "POST",
    headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
    body: streamOf(body),
    duplex: "half",
  } as RequestInit);
}

/** The same fault on every deployment, so the route's weighted choice cannot avoid it. */
function setFaultEverywhere(fx: GatewayFixture, fault: ScoringFault): void {
  for (const deployment of DEPLOYMENTS) fx.scoring.setFault(deployment, fault);
}

/** Asserts a 5xx decided after the upstream was called: status, no Bearer challenge, the audit reason. */
async function expectUpstreamFailure(
  fx: GatewayFixture,
  response: Response,
  expected: { status: number; reason: string; upstreamStatus?: number },
) {
  const body = (await response.json()) as { error: string };
  expect(response.status).toBe(expected.status);
  expect(response.headers.get("www-authenticate")).toBeNull();
  expect(response.headers.get("x-aml-edge-deployment")).toBeNull();
  expect(body.error).not.toMatch(/token|unauthori[sz]ed/);
  const record = await fx.auditOf(response);
  expect(record).toMatchObject({ decision: "deny", reason: expected.reason, status: expected.status });
  if (expected.upstreamStatus === undefined) expect(record.upstreamStatus).toBeUndefined();
  else expect(record.upstreamStatus).toBe(expected.upstreamStatus);
  return record;
}

describe("upstream answers and limits (key auth, primary)", () => {
  let fx: GatewayFixture;
  beforeAll(async () => {
    fx = await startGatewayFixture();
  });
  afterAll(async () => {
    await fx?.dispose();
  });
  beforeEach(() => fx.reset());

  for (const status of [424, 429]) {
    it(`passes a ${status} through with its Retry-After`, async () => {
      setFaultEverywhere(fx, { status, retryAfterSeconds: 17 });
      const response = await fx.score(await fx.token());
      expect(response.status).toBe(status);
      expect(response.headers.get("retry-after")).toBe("17");
      const body = (await response.json()) as { error?: { code?: string } };
      expect(body.error?.code).toBe(status === 424 ? "ModelError" : "TooManyRequests");
      const record = await fx.auditOf(response);
      expect(record).toMatchObject({ status, upstreamStatus: status });
      expect(fx.scoring.requests).toHaveLength(1);
    });
  }

  it("turns an upstream 500 into 502 upstream_error and audits upstreamStatus 500", async () => {
    setFaultEverywhere(fx, { status: 500 });
    const response = await fx.score(await fx.token());
    await expectUpstreamFailure(fx, response, { status: 502, reason: "upstream_error", upstreamStatus: 500 });
    expect(fx.scoring.requests).toHaveLength(1);
  });

  it("answers 504 upstream_timeout when the upstream takes longer than the route's 2 s timeout", async () => {
    setFaultEverywhere(fx, { delayMs: 3_000 });
    const started = performance.now();
    const response = await fx.score(await fx.token());
    const elapsed = performance.now() - started;
    await expectUpstreamFailure(fx, response, { status: 504, reason: "upstream_timeout" });
    expect(elapsed).toBeGreaterThanOrEqual(1_900);
    expect(elapsed).toBeLessThan(2_900);
  });

  it("answers 502 upstream_auth_failed, never 401, when the upstream refuses the gateway's endpoint key", async () => {
    const original = fx.scoring.keys;
    fx.scoring.setKeys({ primary: generateEndpointKey(), secondary: generateEndpointKey() });
    try {
      const response = await fx.score(await fx.token());
      await expectUpstreamFailure(fx, response, {
        status: 502,
        reason: "upstream_auth_failed",
        upstreamStatus: 401,
      });
      expect(fx.scoring.requests[0]?.status).toBe(401);
    } finally {
      fx.scoring.setKeys(original);
    }
  });

  it("serves a body of exactly maxBodyBytes (64 KiB), with and without content-length", async () => {
    const body = bodyOfSize(MAX_BODY_BYTES);
    const declared = await fx.score(await fx.token(), { body });
    expect(declared.status, await declared.clone().text()).toBe(200);
    const streamed = await postStream(fx, await fx.token(), body);
    expect(streamed.status, await streamed.clone().text()).toBe(200);
    expect(fx.scoring.requests.map((request) => request.body.length)).toEqual([
      MAX_BODY_BYTES,
      MAX_BODY_BYTES,
    ]);
  });

  it("refuses maxBodyBytes + 1 with a content-length header: 413, nothing upstream", async () => {
    const response = await fx.score(await fx.token(), { body: bodyOfSize(MAX_BODY_BYTES + 1) });
    await fx.expectRefused(response, { status: 413, error: null, reason: "body_too_large" });
  });

  it("refuses maxBodyBytes + 1 sent chunked without content-length: 413, nothing upstream", async () => {
    const response = await postStream(fx, await fx.token(), bodyOfSize(MAX_BODY_BYTES + 1));
    await fx.expectRefused(response, { status: 413, error: null, reason: "body_too_large" });
  });

  it("answers 404 route_not_found for an unknown path, with a valid token", async () => {
    const response = await fx.score(await fx.token(), { path: "/v1/credit/scores" });
    const record = await fx.expectRefused(response, { status: 404, error: null, reason: "route_not_found" });
    expect(record.route).toBeUndefined();
  });

  it("answers 405 method_not_allowed, with Allow, for GET on the POST route", async () => {
    const response = await fx.gateway.fetch(ROUTE_PATH, {
      method: "GET",
      headers: { authorization: `Bearer ${await fx.token()}` },
    });
    expect(response.headers.get("allow")).toBe("POST");
    const record = await fx.expectRefused(response, {
      status: 405,
      error: null,
      reason: "method_not_allowed",
    });
    expect(record.route).toBe("credit");
  });

  it("sends the primary key by default", async () => {
    const response = await fx.score(await fx.token());
    expect(response.status).toBe(200);
    expect(fx.scoring.requests[0]?.headers.authorization).toBe(`Bearer ${fx.scoring.keys.primary}`);
  });
});

describe("a missing endpoint key secret", () => {
  let fx: GatewayFixture;
  beforeAll(async () => {
    fx = await startGatewayFixture();
    await fx.gateway.update({ secrets: { AML_KEY_SECONDARY: fx.scoring.keys.secondary } });
  });
  afterAll(async () => {
    await fx?.dispose();
  });
  beforeEach(() => fx.reset());

  it("answers 502 upstream_credential_missing when AML_KEY_PRIMARY is not set, nothing upstream", async () => {
    const response = await fx.score(await fx.token());
    await fx.expectRefused(response, { status: 502, error: null, reason: "upstream_credential_missing" });
    expect(response.headers.get("www-authenticate")).toBeNull();
  });
});

describe("upstreamAuth active: secondary", () => {
  let fx: GatewayFixture;
  beforeAll(async () => {
    fx = await startGatewayFixture({
      configure: (config) => {
        const route = config.routes[0];
        if (route)
          route.upstreamAuth = {
            mode: "key",
            primarySecret: "AML_KEY_PRIMARY",
            secondarySecret: "AML_KEY_SECONDARY",
            active: "secondary",
          };
      },
    });
  });
  afterAll(async () => {
    await fx?.dispose();
  });
  beforeEach(() => fx.reset());

  it("sends the secondary key upstream", async () => {
    const response = await fx.score(await fx.token());
    expect(response.status).toBe(200);
    expect(fx.scoring.requests).toHaveLength(1);
    expect(fx.scoring.requests[0]?.headers.authorization).toBe(`Bearer ${fx.scoring.keys.secondary}`);
  });
});

describe("upstreamAuth mode aml_token", () => {
  let fx: GatewayFixture;
  beforeAll(async () => {
    fx = await startGatewayFixture({
      configure: (config) => {
        const route = config.routes[0];
        if (route) route.upstreamAuth = { mode: "aml_token", tokenSecret: "AML_TOKEN" };
      },
    });
  });
  afterAll(async () => {
    await fx?.dispose();
  });
  beforeEach(() => fx.reset());

  /** Replaces the Worker's secrets with just AML_TOKEN (a new version; the endpoint keys are not needed). */
  const setAmlToken = (token: object) => fx.gateway.update({ secrets: { AML_TOKEN: JSON.stringify(token) } });

  it("sends the AML token from the secret and is served", async () => {
    const amlToken = fx.scoring.issueAmlToken();
    await setAmlToken(amlToken);
    const response = await fx.score(await fx.token());
    expect(response.status, await response.clone().text()).toBe(200);
    expect(fx.scoring.requests).toHaveLength(1);
    expect(fx.scoring.requests[0]?.headers.authorization).toBe(`Bearer ${amlToken.accessToken}`);
  });

  it("answers 502 upstream_credential_expired for an expired AML token, nothing upstream", async () => {
    await setAmlToken(fx.scoring.issueAmlToken({ lifetimeSeconds: -60 }));
    const response = await fx.score(await fx.token());
    await fx.expectRefused(response, { status: 502, error: null, reason: "upstream_credential_expired" });
  });

  it("answers 502 upstream_credential_missing when the AML token secret is not set", async () => {
    await fx.gateway.update({ secrets: {} });
    const response = await fx.score(await fx.token());
    await fx.expectRefused(response, { status: 502, error: null, reason: "upstream_credential_missing" });
  });
});

describe("a call past the route's timeout, with workerd calling the stand-in directly", () => {
  let fx: GatewayFixture;
  beforeAll(async () => {
    fx = await startGatewayFixture({
      directUpstream: true,
      configure: (config) => {
        const [route] = config.routes;
        if (route) route.limits = { maxBodyBytes: MAX_BODY_BYTES, timeoutMs: 500 };
      },
    });
  });
  afterAll(async () => {
    await fx?.dispose();
  });

  it("is dropped at the limit: the client gets 504 and Azure ML sees its caller go away, not 3 s later", async () => {
    setFaultEverywhere(fx, { delayMs: 3_000 });
    const response = await fx.score(await fx.token());
    await expectUpstreamFailure(fx, response, { status: 504, reason: "upstream_timeout" });
    await expect
      .poll(() => fx.scoring.requests[0]?.abandonedAt, { timeout: 1_000, interval: 20 })
      .toBeDefined();
    const [call] = fx.scoring.requests;
    const heldMs = (call?.abandonedAt ?? Number.POSITIVE_INFINITY) - (call?.time ?? 0);
    expect(heldMs).toBeGreaterThanOrEqual(450);
    expect(heldMs).toBeLessThan(1_500);
    expect(fx.scoring.requests).toHaveLength(1);
  });
});
