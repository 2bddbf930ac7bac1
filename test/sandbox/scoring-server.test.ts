import { afterEach, describe, expect, it } from "vitest";
import {
  CREDIT_COLUMNS,
  createCreditModel,
  creditWeightsFor,
  ModelInputError,
  SAMPLE_CREDIT_ROW,
} from "../../src/sandbox/credit-model.ts";
import {
  type ScoringServer,
  type ScoringServerOptions,
  startScoringServer,
} from "../../src/sandbox/scoring-server.ts";

const opened: ScoringServer[] = [];
async function endpoint(options: Partial<ScoringServerOptions> = {}): Promise<ScoringServer> {
  const server = await startScoringServer({
    deployments: [
      { name: "blue", weight: 90 },
      { name: "green", weight: 10 },
    ],
    ...options,
  });
  opened.push(server);
  return server;
}
afterEach(async () => {
  await Promise.all(opened.splice(0).map((s) => s.close()));
});

const body = JSON.stringify({ input_data: { columns: [...CREDIT_COLUMNS], data: [[...SAMPLE_CREDIT_ROW]] } });

function score(server: ScoringServer, headers: Record<string, string>, payload = body): Promise<Response> {
  return fetch(server.url, {
    method: "POST",
    headers: { "content-type": "application/json", ...headers },
    body: payload,
  });
}
const bearer = (key: string) => ({ authorization: `Bearer ${key}` });

describe("scoring server", () => {
  it("accepts the primary and the secondary key and nothing else", async () => {
    const server = await endpoint();
    expect(server.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/score$/);
    expect(server.keys.primary).not.toBe(server.keys.secondary);
    expect(server.keys.primary).toHaveLength(32);

    expect((await score(server, bearer(server.keys.primary))).status).toBe(200);
    expect((await score(server, bearer(server.keys.secondary))).status).toBe(200);
    const wrong = await score(server, bearer(`${server.keys.primary}x`));
    expect(wrong.status).toBe(401);
    expect(await wrong.json()).toEqual({ error: { code: "Unauthorized", message: expect.any(String) } });
    expect((await score(server, {})).status).toBe(401);
    expect((await score(server, { authorization: server.keys.primary })).status).toBe(401);

    const old = server.keys.primary;
    server.setKeys({ primary: "new-primary-key", secondary: server.keys.secondary });
    expect((await score(server, bearer(old))).status).toBe(401);
    expect((await score(server, bearer("new-primary-key"))).status).toBe(200);
  });

  it("accepts AML tokens until they expire", async () => {
    const server = await endpoint();
    const token = server.issueAmlToken({ lifetimeSeconds: 600 });
    expect(token.refreshAfterTimeUtc).toBeLessThan(token.expiryTimeUtc);
    expect((await score(server, bearer(token.accessToken))).status).toBe(200);
    const expired = server.issueAmlToken({ lifetimeSeconds: -1 });
    expect((await score(server, bearer(expired.accessToken))).status).toBe(401);
  });

  it("routes by the deployment header, else by its traffic map", async () => {
    const draws = [0.95, 0.1, 0.899, 0.9];
    const server = await endpoint({ random: () => draws.shift() ?? 0 });
    const auth = bearer(server.keys.primary);

    const pinned = await score(server, { ...auth, "azureml-model-deployment": "green" });
    expect(pinned.status).toBe(200);
    expect(pinned.headers.get("azureml-model-deployment")).toBe("green");

    const chosen = [];
    for (let i = 0; i < 4; i++)
      chosen.push((await score(server, auth)).headers.get("azureml-model-deployment"));
    expect(chosen).toEqual(["green", "blue", "blue", "green"]);

    const unknown = await score(server, { ...auth, "azureml-model-deployment": "purple" });
    expect(unknown.status).toBe(404);
    expect(((await unknown.json()) as { error: { message: string } }).error.message).toContain("purple");

    server.setTraffic({ blue: 0, green: 0 });
    expect((await score(server, auth)).status).toBe(404);
    // A deployment at 0 % still answers when named, as in Azure ML.
    expect((await score(server, { ...auth, "azureml-model-deployment": "blue" })).status).toBe(200);
  });

  it("spreads unpinned traffic by weight", async () => {
    const server = await endpoint({
      deployments: [
        { name: "blue", weight: 75 },
        { name: "green", weight: 25 },
      ],
    });
    const auth = bearer(server.keys.primary);
    const counts: Record<string, number> = { blue: 0, green: 0 };
    for (let i = 0; i < 200; i++) {
      const deployment = (await score(server, auth)).headers.get("azureml-model-deployment") ?? "";
      counts[deployment] = (counts[deployment] ?? 0) + 1;
    }
    // 200 draws at p = 0.25: the green count is within 25–75 with probability > 0.9999.
    expect(counts.green).toBeGreaterThan(25);
    expect(counts.green).toBeLessThan(75);
  });

  it("scores with a different model per deployment, in both input shapes", async () => {
    const server = await endpoint();
    const auth = bearer(server.keys.primary);
    const rows = [[...SAMPLE_CREDIT_ROW], [25, 0.7, 1, 4, 40, 0]];
    const results: Record<string, { approved: boolean; probability: number }[]> = {};
    for (const deployment of ["blue", "green"]) {
      const response = await score(
        server,
        { ...auth, "azureml-model-deployment": deployment },
        JSON.stringify({ input_data: { columns: [...CREDIT_COLUMNS], data: rows } }),
      );
      expect(response.headers.get("content-type")).toContain("application/json");
      results[deployment] = (await response.json()) as { approved: boolean; probability: number }[];
    }
    const blue = results.blue ?? [];
    const green = results.green ?? [];
    expect(blue).toHaveLength(2);
    expect(blue[0]?.approved).toBe(true);
    expect(blue[1]?.approved).toBe(false);
    expect(blue[0]?.probability).not.toBe(green[0]?.probability);

    // The same rows as bare `data`, in the model's own column order, give the same answer.
    const bare = await score(
      server,
      { ...auth, "azureml-model-deployment": "blue" },
      JSON.stringify({ data: rows }),
    );
    expect(await bare.json()).toEqual(blue);

    // Columns may come in any order.
    const reversed = [...CREDIT_COLUMNS].reverse();
    const shuffled = await score(
      server,
      { ...auth, "azureml-model-deployment": "blue" },
      JSON.stringify({ input_data: { columns: reversed, data: rows.map((r) => [...r].reverse()) } }),
    );
    expect(await shuffled.json()).toEqual(blue);
  });

  it("reports bad input as Azure ML does: 424 with the container's status in a header", async () => {
    const server = await endpoint();
    const auth = bearer(server.keys.primary);
    const notJson = await score(server, auth, "{nope");
    expect(notJson.status).toBe(424);
    expect(notJson.headers.get("ms-azureml-model-error-statuscode")).toBe("400");
    const missing = await score(
      server,
      auth,
      JSON.stringify({ input_data: { columns: ["income_k"], data: [[1]] } }),
    );
    expect(missing.status).toBe(424);
    expect(JSON.stringify(await missing.json())).toContain("missing columns");
    const big = await score(server, auth, JSON.stringify({ data: "x".repeat(2 * 1024 * 1024) }));
    expect(big.status).toBe(413);
    expect((await fetch(server.url, { headers: auth })).status).toBe(405);
  });

  it("injects faults per deployment: status, Retry-After, body, count and delay", async () => {
    const server = await endpoint();
    const auth = bearer(server.keys.primary);
    const green = { ...auth, "azureml-model-deployment": "green" };
    const blue = { ...auth, "azureml-model-deployment": "blue" };

    server.setFault("green", { status: 429, retryAfterSeconds: 7, times: 2 });
    const limited = await score(server, green);
    expect(limited.status).toBe(429);
    expect(limited.headers.get("retry-after")).toBe("7");
    expect((await score(server, blue)).status).toBe(200);
    expect((await score(server, green)).status).toBe(429);
    expect((await score(server, green)).status).toBe(200);

    server.setFault("green", { status: 424 });
    const modelError = await score(server, green);
    expect(modelError.status).toBe(424);
    expect(modelError.headers.get("ms-azureml-model-error-statuscode")).toBe("500");

    server.setFault("green", { status: 500, body: "boom" });
    const failed = await score(server, green);
    expect(failed.status).toBe(500);
    expect(await failed.text()).toBe("boom");

    server.setFault("green", { delayMs: 400 });
    const started = performance.now();
    expect((await score(server, green)).status).toBe(200);
    expect(performance.now() - started).toBeGreaterThanOrEqual(350);

    // A request held far beyond any gateway timeout does not hold up close().
    server.setFault("green", { delayMs: 60_000 });
    const held = score(server, green);
    await new Promise((resolve) => setTimeout(resolve, 100));
    const closing = performance.now();
    await server.close();
    expect(performance.now() - closing).toBeLessThan(1000);
    await expect(held).rejects.toThrow();
  });

  it("records every request with its headers, body, deployment and status", async () => {
    const server = await endpoint();
    await score(server, {
      ...bearer(server.keys.primary),
      "azureml-model-deployment": "blue",
      "x-trace": "t1",
    });
    await score(server, bearer("wrong"));
    expect(server.requests).toHaveLength(2);
    const [first, second] = server.requests;
    expect(first).toMatchObject({ method: "POST", path: "/score", body, deployment: "blue", status: 200 });
    expect(first?.headers["x-trace"]).toBe("t1");
    expect(first?.time).toBeGreaterThan(Date.now() - 10_000);
    expect(second?.status).toBe(401);
    expect(second?.deployment).toBeUndefined();
    server.clearRequests();
    expect(server.requests).toHaveLength(0);
  });

  it("serves at another scoring path and refuses unknown fault targets", async () => {
    const server = await endpoint({ path: "/v1/score" });
    expect(server.url).toMatch(/\/v1\/score$/);
    expect((await score(server, bearer(server.keys.primary))).status).toBe(200);
    expect(() => server.setFault("purple", { status: 500 })).toThrow(/purple/);
    expect(() => server.setTraffic({ purple: 100 })).toThrow(/purple/);
  });
});

describe("credit model", () => {
  it("is fixed per deployment name and differs between names", async () => {
    expect(creditWeightsFor("blue")).toEqual(creditWeightsFor("blue"));
    expect(creditWeightsFor("blue")).not.toEqual(creditWeightsFor("green"));
    const model = createCreditModel(creditWeightsFor("blue"));
    const [prediction] = await model.score({ data: [[...SAMPLE_CREDIT_ROW]] });
    expect(prediction?.probability).toBeGreaterThan(0.5);
    expect(prediction?.probability).toBeLessThan(1);
  });

  it("refuses input it cannot score", async () => {
    const model = createCreditModel(creditWeightsFor("blue"));
    await expect(model.score([1, 2])).rejects.toBeInstanceOf(ModelInputError);
    await expect(model.score({ data: [[1, 2]] })).rejects.toThrow(/row 0/);
    await expect(model.score({ data: [[85, 0.25, 9, 0, 20, "six"]] })).rejects.toThrow(/employment_years/);
    await expect(model.score({ inputs: [] })).rejects.toThrow(/input_data/);
    expect(await model.score({ data: [] })).toEqual([]);
  });
});
