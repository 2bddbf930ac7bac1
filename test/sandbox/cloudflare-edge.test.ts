// The local Cloudflare's edge: deployed versions run in workerd and answer on the Worker's HTTPS edge URL. The real
// gateway bundle answers a scoring call; a 50/50 split lands on both versions within a binomial tolerance; the
// Version-Overrides header pins a live version (a 0 % one included) and is ignored for any other; and deployment
// switches under a bounded concurrent load lose no request, in-flight requests finishing where they started.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { bundleGateway } from "../../src/build/gateway-bundle.ts";
import { compileConfigBundle, fetchKeySnapshots } from "../../src/config/index.ts";
import { gatewayConfigSchema } from "../../src/config/schema.ts";
import { type CloudflareSandbox, startCloudflareSandbox } from "../../src/sandbox/cloudflare/index.ts";
import { startScoringServer } from "../../src/sandbox/scoring-server.ts";
import { createSandboxCa, trustInProcess } from "../../src/sandbox/tls.ts";
import { startTokenIssuer } from "../../src/sandbox/token-issuer.ts";
import { AUDIENCE, baseConfig, ROUTE_PATH, SCORING_BODY, TENANT } from "../gateway/fixture.ts";
import { call, labelBindings, putWorker, versionId } from "./cloudflare-helpers.ts";

/** Answers with its label and version id, after `?delay=<ms>` (at most 2 s), so requests can be in flight. */
const SLOW_LABEL_WORKER = `export default {
  async fetch(request, env) {
    const delay = Math.min(Number(new URL(request.url).searchParams.get("delay") ?? 0), 2000);
    if (delay > 0) await new Promise((resolve) => setTimeout(resolve, delay));
    return Response.json({ label: env.LABEL, version: env.VERSION.id });
  },
};`;

let cf: CloudflareSandbox;
let untrust: () => void;
let admin: string;

beforeAll(async () => {
  const ca = await createSandboxCa();
  untrust = trustInProcess(ca.caPem);
  cf = await startCloudflareSandbox({ ca });
  admin = cf.createToken({ permissions: ["Workers Scripts Write"] }).value;
});

afterAll(async () => {
  await cf?.close();
  untrust?.();
});

async function deploy(script: string, versions: [string, number][]): Promise<void> {
  const { status, body } = await call(cf, admin, "POST", `/workers/scripts/${script}/deployments`, {
    strategy: "percentage",
    versions: versions.map(([version_id, percentage]) => ({ version_id, percentage })),
  });
  if (status !== 200) throw new Error(`deployment refused: ${JSON.stringify(body.errors)}`);
}

async function ask(
  url: URL,
  init: RequestInit = {},
): Promise<{ status: number; label: string; version: string }> {
  const response = await fetch(url, init);
  const body = (await response.json()) as { label: string; version: string };
  return { status: response.status, ...body };
}

describe("the edge", () => {
  it("answers 404 on a Worker's edge URL until it is deployed, then serves it over HTTPS", async () => {
    const url = await cf.edgeUrl("hello");
    expect(url.protocol).toBe("https:");
    expect(url.hostname).toBe("127.0.0.1");
    expect((await fetch(url)).status).toBe(404);
    expect((await putWorker(cf, admin, "hello", labelBindings("hi"), SLOW_LABEL_WORKER)).status).toBe(200);
    const answer = await ask(url);
    expect(answer).toMatchObject({ status: 200, label: "hi" });
    expect(answer.version).toBe(cf.deployments("hello")[0]?.versions[0]?.version_id);
  });

  it("runs the real gateway bundle with its config and key secrets, and captures its audit records", async () => {
    const corp = await startTokenIssuer({ path: "/corp/v2.0", algorithms: ["RS256", "ES256"] });
    const github = await startTokenIssuer({ path: "/github" });
    const scoring = await startScoringServer({
      deployments: [
        { name: "blue", weight: 90 },
        { name: "green", weight: 10 },
      ],
    });
    try {
      const config = gatewayConfigSchema.parse(baseConfig(corp, github, scoring));
      const bundle = await compileConfigBundle(config, {
        mode: "local",
        keySnapshots: await fetchKeySnapshots(config, { fetch }),
      });
      const { status, body } = await putWorker(
        cf,
        admin,
        "aml-edge-gateway",
        [
          { type: "json", name: "AML_EDGE_CONFIG", json: bundle },
          { type: "secret_text", name: "AML_KEY_PRIMARY", text: scoring.keys.primary },
          { type: "secret_text", name: "AML_KEY_SECONDARY", text: scoring.keys.secondary },
        ],
        await bundleGateway(),
      );
      expect(status, JSON.stringify(body.errors)).toBe(200);
      const token = await corp.mint({ aud: AUDIENCE, sub: "user-1", tid: TENANT, roles: ["ml.score"] });
      const response = await fetch(new URL(ROUTE_PATH, await cf.edgeUrl("aml-edge-gateway")), {
        method: "POST",
        headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
        body: SCORING_BODY,
      });
      expect(response.status, await response.clone().text()).toBe(200);
      expect(["blue", "green"]).toContain(response.headers.get("x-aml-edge-deployment"));
      expect(scoring.requests[0]?.headers.authorization).toBe(`Bearer ${scoring.keys.primary}`);
      const requestId = response.headers.get("x-request-id");
      const deadline = Date.now() + 5_000;
      while (
        !cf.audit("aml-edge-gateway").some((a) => a.record.requestId === requestId) &&
        Date.now() < deadline
      ) {
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
      const audit = cf.audit("aml-edge-gateway").find((a) => a.record.requestId === requestId);
      expect(audit?.versionId).toBe(cf.versions("aml-edge-gateway")[0]?.id);
      expect(audit?.record).toMatchObject({ decision: "allow", status: 200, route: "credit" });
      expect(audit?.record.rayId, "the edge sets cf-ray, as Cloudflare does").toMatch(/-SBX$/);
    } finally {
      await Promise.all([corp.close(), github.close(), scoring.close()]);
    }
  });

  it("splits 50/50 across both versions within 5 standard deviations", async () => {
    expect((await putWorker(cf, admin, "split", labelBindings("one"), SLOW_LABEL_WORKER)).status).toBe(200);
    const one = cf.versions("split")[0]?.id as string;
    const two = await versionId(cf, admin, "split", "two");
    await deploy("split", [
      [one, 50],
      [two, 50],
    ]);
    const url = await cf.edgeUrl("split");
    const n = 200;
    const counts = new Map<string, number>();
    for (let batch = 0; batch < n / 20; batch++) {
      const answers = await Promise.all(Array.from({ length: 20 }, () => ask(url)));
      for (const answer of answers) counts.set(answer.version, (counts.get(answer.version) ?? 0) + 1);
    }
    // Binomial(200, 0.5): mean 100, sd √50 ≈ 7.1; ±35 is 5 sd, a false failure about once in 1.7 million runs.
    expect([...counts.keys()].sort()).toEqual([one, two].sort());
    for (const count of counts.values()) expect(Math.abs(count - n / 2)).toBeLessThanOrEqual(35);
  });

  it("pins a live version with Cloudflare-Workers-Version-Overrides, a 0 % one too, and ignores any other", async () => {
    const url = await cf.edgeUrl("split");
    const [latest, previous] = cf.versions("split").map((version) => version.id as string) as [
      string,
      string,
    ];
    await deploy("split", [
      [previous, 100],
      [latest, 0],
    ]);
    const pinned = await Promise.all(
      Array.from({ length: 20 }, () =>
        ask(url, { headers: { "cloudflare-workers-version-overrides": `split="${latest}"` } }),
      ),
    );
    expect(new Set(pinned.map((answer) => answer.version))).toEqual(new Set([latest]));
    const unpinned = await Promise.all(Array.from({ length: 20 }, () => ask(url)));
    expect(new Set(unpinned.map((answer) => answer.version))).toEqual(new Set([previous]));
    const notLive = await versionId(cf, admin, "split", "three");
    const ignored = await ask(url, {
      headers: { "cloudflare-workers-version-overrides": `split="${notLive}"` },
    });
    expect(ignored.version).toBe(previous);
    const otherWorker = await ask(url, {
      headers: { "cloudflare-workers-version-overrides": `hello="${latest}"` },
    });
    expect(otherWorker.version).toBe(previous);
  });

  it("lets an in-flight request finish on the version it started on, and stops that runtime once it drained", async () => {
    const url = await cf.edgeUrl("split");
    const [notLive, , previous] = cf.versions("split").map((version) => version.id as string) as [
      string,
      string,
      string,
    ];
    const slow = ask(new URL("/?delay=600", url));
    await new Promise((resolve) => setTimeout(resolve, 100));
    await deploy("split", [[notLive, 100]]);
    expect((await ask(url)).version).toBe(notLive);
    expect(cf.runtimes("split").find((runtime) => runtime.versionId === previous)).toMatchObject({
      state: "draining",
      inFlight: 1,
      live: false,
    });
    expect(await slow).toMatchObject({ status: 200, version: previous });
    await waitFor(() => cf.runtimes("split").every((runtime) => runtime.live), 3_000);
    expect(cf.runtimes("split").map((runtime) => runtime.versionId)).toEqual([notLive]);
  });

  it("loses no request while deployments switch under concurrent load", async () => {
    expect((await putWorker(cf, admin, "switch", labelBindings("v1"), SLOW_LABEL_WORKER)).status).toBe(200);
    const v1 = cf.versions("switch")[0]?.id as string;
    const v2 = await versionId(cf, admin, "switch", "v2");
    const v3 = await versionId(cf, admin, "switch", "v3");
    const target = new URL("/?delay=30", await cf.edgeUrl("switch"));

    const failures: string[] = [];
    const seen = new Set<string>();
    let sent = 0;
    let stop = false;
    const MAX_REQUESTS = 1_500;
    const deadline = Date.now() + 10_000;
    const worker = async () => {
      while (!stop && sent < MAX_REQUESTS && Date.now() < deadline) {
        sent += 1;
        try {
          const answer = await ask(target);
          if (answer.status !== 200) failures.push(`status ${answer.status}`);
          else seen.add(answer.version);
        } catch (error) {
          failures.push(String(error));
        }
      }
    };
    const load = Promise.all(Array.from({ length: 8 }, worker));
    const pause = () => new Promise((resolve) => setTimeout(resolve, 150));
    // New runtimes, a split, a version that left and comes back (its runtime restarted): every kind of switch.
    for (const step of [
      [[v2, 100]],
      [
        [v1, 50],
        [v3, 50],
      ],
      [[v3, 100]],
      [[v1, 100]],
    ] as [string, number][][]) {
      await pause();
      await deploy("switch", step);
    }
    await pause();
    stop = true;
    await load;

    expect(failures).toEqual([]);
    expect(sent).toBeGreaterThan(40);
    expect([...seen].sort()).toEqual([v1, v2, v3].sort());
    await waitFor(() => cf.runtimes("switch").every((runtime) => runtime.live), 3_000);
    expect(cf.runtimes("switch").map((runtime) => runtime.versionId)).toEqual([v1]);
  });
});

async function waitFor(condition: () => boolean, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition() && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 25));
}
