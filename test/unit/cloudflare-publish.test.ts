// Publishing the gateway against the in-memory Cloudflare: what is live is read first; the new version carries the
// config as a JSON binding, new secrets as secret_text and unchanged ones inherited by version id; a split keeps the
// live version beside the new one; a first publish creates the Worker; a restore deploys exactly what was recorded,
// with force only after 10220; and the edge wait polls the gateway, pinned to the new version, until it serves it.
import { describe, expect, it } from "vitest";
import { waitForEdgeConfig } from "../../src/cloudflare/edge.ts";
import { EdgeNotServingError } from "../../src/cloudflare/errors.ts";
import {
  MissingSecretsError,
  parseRecordedDeployment,
  planBindings,
  publishGateway,
  readLiveGateway,
  restoreDeployment,
} from "../../src/cloudflare/publish.ts";
import type { Clock } from "../../src/cloudflare/time.ts";
import { FakeCloudflare } from "./fake-cloudflare.ts";
import { configBundle } from "./gateway-config-fixture.ts";

const SCRIPT = "aml-edge-gateway";
const logger = { info: () => {}, warning: () => {} };

function cloudflare() {
  const cf = new FakeCloudflare();
  const token = cf.addToken({ value: "write", permissions: ["Workers Scripts Write"] });
  return { cf, api: cf.client(token.value) };
}

async function liveWorker(cf: FakeCloudflare, extra: { type: string; name: string }[] = []) {
  const old = await configBundle({ blue: 100, green: 0 });
  return cf.addWorker(SCRIPT, [
    { type: "json", name: "AML_EDGE_CONFIG", json: old },
    { type: "secret_text", name: "AML_KEY_PRIMARY" },
    { type: "secret_text", name: "AML_KEY_SECONDARY" },
    ...extra,
  ]);
}

describe("readLiveGateway", () => {
  it("reads the live deployment, its versions and the config the main one carries", async () => {
    const { cf, api } = cloudflare();
    const v1 = await liveWorker(cf);
    const live = await readLiveGateway(api, SCRIPT);
    expect(live.exists).toBe(true);
    expect(live.deployment?.versions).toEqual([{ version_id: v1.id, percentage: 100 }]);
    expect(live.primary?.id).toBe(v1.id);
    expect(live.bundle?.config.routes[0]?.deployments).toEqual([
      { name: "blue", weight: 100 },
      { name: "green", weight: 0 },
    ]);
  });

  it("reports a Worker that does not exist as such, not as an error", async () => {
    const { api } = cloudflare();
    await expect(readLiveGateway(api, SCRIPT)).resolves.toMatchObject({
      exists: false,
      deployment: undefined,
    });
  });
});

describe("planBindings", () => {
  it("inherits unchanged secrets by version id, sends new ones, keeps other bindings and drops unused secrets", async () => {
    const { cf, api } = cloudflare();
    const v1 = await liveWorker(cf, [
      { type: "queue", name: "AUDIT" },
      { type: "secret_text", name: "OLD_KEY" },
    ]);
    const live = await readLiveGateway(api, SCRIPT);
    const bundle = await configBundle();
    const plan = planBindings(live, bundle, { AML_KEY_PRIMARY: "new-primary" });
    expect(plan.bindings).toEqual([
      { type: "json", name: "AML_EDGE_CONFIG", json: bundle },
      { type: "secret_text", name: "AML_KEY_PRIMARY", text: "new-primary" },
      { type: "inherit", name: "AML_KEY_SECONDARY", version_id: v1.id },
      { type: "inherit", name: "AUDIT", version_id: v1.id },
    ]);
    expect(plan).toMatchObject({
      changed: ["AML_KEY_PRIMARY"],
      inherited: ["AML_KEY_SECONDARY"],
      dropped: ["OLD_KEY"],
    });
  });

  it("names every secret binding that nobody provides", async () => {
    const { cf, api } = cloudflare();
    await liveWorker(cf);
    const live = await readLiveGateway(api, SCRIPT);
    const bundle = await configBundle({ primary: "AML_KEY_PRIMARY_V2" });
    const error = (() => {
      try {
        planBindings(live, bundle, {});
      } catch (caught) {
        return caught;
      }
      return undefined;
    })();
    expect(error).toBeInstanceOf(MissingSecretsError);
    expect((error as MissingSecretsError).bindings).toEqual(["AML_KEY_PRIMARY_V2"]);
    expect((error as Error).message).toBe(
      "The config names secret binding AML_KEY_PRIMARY_V2, which no live version of Worker aml-edge-gateway holds " +
        "and no value was given for.",
    );
  });
});

describe("publishGateway", () => {
  it("uploads a version with the config and deploys it at 100 %, returning the deployment that was live", async () => {
    const { cf, api } = cloudflare();
    const v1 = await liveWorker(cf);
    const live = await readLiveGateway(api, SCRIPT);
    const bundle = await configBundle();
    const result = await publishGateway({
      api,
      live,
      bundle,
      workerModule: "export default {}",
      percentage: 100,
      message: "aml-edge route: config x",
      tag: bundle.version,
      logger,
    });
    expect(result.previous?.versions).toEqual([{ version_id: v1.id, percentage: 100 }]);
    expect(result.deployment.versions).toEqual([{ version_id: result.version.id, percentage: 100 }]);
    expect(result.version.annotations).toEqual({
      "workers/message": "aml-edge route: config x",
      "workers/tag": bundle.version,
    });
    expect(cf.live(SCRIPT)?.annotations).toEqual({ "workers/message": "aml-edge route: config x" });
    expect(cf.calls.map((call) => call.call)).toEqual([
      "listDeployments",
      "getVersion",
      "uploadVersion",
      "createDeployment",
    ]);
  });

  it("splits with the live version: the new one gets the percentage, the live one the rest", async () => {
    const { cf, api } = cloudflare();
    const v1 = await liveWorker(cf);
    const bundle = await configBundle();
    const result = await publishGateway({
      api,
      live: await readLiveGateway(api, SCRIPT),
      bundle,
      workerModule: "export default {}",
      percentage: 10,
      message: "m",
      tag: "t",
      logger,
    });
    expect(result.deployment.versions).toEqual([
      { version_id: result.version.id, percentage: 10 },
      { version_id: v1.id, percentage: 90 },
    ]);
    // A second publish during the split, with a secret change: a new version carries it, and the split continues
    // with the larger share's version. No secret endpoint exists in this API at all.
    const again = await publishGateway({
      api,
      live: await readLiveGateway(api, SCRIPT),
      bundle,
      workerModule: "export default {}",
      newSecrets: { AML_KEY_PRIMARY: "rotated" },
      percentage: 50,
      message: "m",
      tag: "t",
      logger,
    });
    expect(again.plan.changed).toEqual(["AML_KEY_PRIMARY"]);
    expect(again.deployment.versions).toEqual([
      { version_id: again.version.id, percentage: 50 },
      { version_id: v1.id, percentage: 50 },
    ]);
  });

  it("deploys with force when Cloudflare says secrets changed since a version (10220)", async () => {
    const { cf, api } = cloudflare();
    const v1 = await liveWorker(cf);
    const bundle = await configBundle();
    cf.fail("createDeployment", 400, [{ code: 10220, message: "secrets changed since version" }]);
    const result = await publishGateway({
      api,
      live: await readLiveGateway(api, SCRIPT),
      bundle,
      workerModule: "export default {}",
      newSecrets: { AML_KEY_PRIMARY: "rotated" },
      percentage: 20,
      message: "m",
      tag: "t",
      logger,
    });
    expect(result.deployment.versions.map((version) => version.version_id)).toEqual([
      result.version.id,
      v1.id,
    ]);
    expect(cf.calls.filter((call) => call.call === "createDeployment").map((call) => call.codes)).toEqual([
      [10220],
      [],
    ]);
  });

  it("creates a Worker that does not exist with the script upload, which deploys it at 100 %", async () => {
    const cf = new FakeCloudflare();
    const token = cf.addToken({ value: "account-write", permissions: ["Workers Scripts Write"] });
    const api = cf.client(token.value);
    const bundle = await configBundle();
    const live = await readLiveGateway(api, SCRIPT);
    const warnings: string[] = [];
    const result = await publishGateway({
      api,
      live,
      bundle,
      workerModule: "export default {}",
      newSecrets: { AML_KEY_PRIMARY: "p", AML_KEY_SECONDARY: "s" },
      percentage: 10,
      message: "m",
      tag: "t",
      logger: { info: () => {}, warning: (message) => warnings.push(message) },
    });
    expect(result).toMatchObject({ created: true, previous: undefined });
    expect(result.deployment.versions).toEqual([{ version_id: result.version.id, percentage: 100 }]);
    expect(result.version.bindings.map((binding) => `${binding.type} ${binding.name}`)).toEqual([
      "json AML_EDGE_CONFIG",
      "secret_text AML_KEY_PRIMARY",
      "secret_text AML_KEY_SECONDARY",
    ]);
    expect(warnings).toEqual([
      "Worker aml-edge-gateway is new: its first version serves 100 % of requests, not 10 %, as there is no " +
        "earlier version to split with.",
    ]);
  });

  it("a Worker-scoped token cannot create the Worker, and the error names the account-wide permission", async () => {
    const cf = new FakeCloudflare();
    cf.addWorker("other");
    const token = cf.addToken({
      value: "scoped",
      permissions: ["Workers Scripts Write"],
      workerTag: cf.tagOf("other"),
    });
    const api = cf.client(token.value);
    await expect(
      publishGateway({
        api,
        live: await readLiveGateway(api, SCRIPT).catch(() => ({
          script: SCRIPT,
          exists: false,
          deployment: undefined,
          versions: [],
          primary: undefined,
          bundle: undefined,
        })),
        bundle: await configBundle(),
        workerModule: "export default {}",
        newSecrets: { AML_KEY_PRIMARY: "p", AML_KEY_SECONDARY: "s" },
        percentage: 100,
        message: "m",
        tag: "t",
        logger,
      }),
    ).rejects.toMatchObject({ status: 403, userFixable: true });
  });
});

describe("restoreDeployment", () => {
  it("deploys exactly the recorded versions and percentages; force only after 10220", async () => {
    const { cf, api } = cloudflare();
    const v1 = await liveWorker(cf);
    const bundle = await configBundle();
    const published = await publishGateway({
      api,
      live: await readLiveGateway(api, SCRIPT),
      bundle,
      workerModule: "export default {}",
      percentage: 30,
      message: "m",
      tag: "t",
      logger,
    });
    const recorded = parseRecordedDeployment(JSON.stringify(published.deployment));
    await publishGateway({
      api,
      live: await readLiveGateway(api, SCRIPT),
      bundle,
      workerModule: "export default {}",
      percentage: 100,
      message: "m",
      tag: "t",
      logger,
    });
    cf.requireForceFor.add(`${published.version.id}+${v1.id}`);
    const restored = await restoreDeployment(api, SCRIPT, recorded, { message: "restore", logger });
    expect(restored.versions).toEqual(published.deployment.versions);
    expect(cf.live(SCRIPT)?.versions).toEqual([
      { version_id: published.version.id, percentage: 30 },
      { version_id: v1.id, percentage: 70 },
    ]);
    expect(cf.calls.filter((call) => call.call === "createDeployment").map((call) => call.codes)).toEqual([
      [],
      [],
      [10220],
      [],
    ]);
  });

  it("refuses a recorded deployment that is not one", () => {
    expect(() => parseRecordedDeployment("{")).toThrow("is not JSON");
    expect(() => parseRecordedDeployment('{"versions":[{"version_id":"a","percentage":60}]}')).toThrow(
      "must be a deployment with 1 or 2 versions whose percentages sum to 100",
    );
  });
});

describe("waitForEdgeConfig", () => {
  function fakeClock(start = 0): Clock & { sleeps: number[] } {
    let now = start;
    const sleeps: number[] = [];
    return {
      sleeps,
      now: () => now,
      sleep: async (ms) => {
        sleeps.push(ms);
        now += ms;
      },
    };
  }

  function edge(answers: (string | undefined)[]) {
    const requests: Headers[] = [];
    const fetch = (async (_input: string | URL | Request, init?: RequestInit) => {
      requests.push(new Headers(init?.headers));
      const served = answers.length > 1 ? answers.shift() : answers[0];
      return new Response("{}", {
        status: served === undefined ? 404 : 401,
        headers: served === undefined ? {} : { "x-aml-edge-config": served },
      });
    }) as typeof globalThis.fetch;
    return { fetch, requests };
  }

  it("polls with backoff, pinned to the new version, until the edge serves its config", async () => {
    const clock = fakeClock();
    const { fetch, requests } = edge([undefined, "sha256:old", "sha256:old", "sha256:new"]);
    const result = await waitForEdgeConfig({
      gatewayUrl: "https://gateway.example",
      script: SCRIPT,
      versionId: "v-2",
      configVersion: "sha256:new",
      servesAll: false,
      deadline: 60_000,
      clock,
      fetch,
      logger: { info: () => {}, warning: () => {} },
    });
    expect(result.polls).toBe(4);
    expect(clock.sleeps).toEqual([250, 500, 1000]);
    expect(
      requests.every((headers) => headers.get("cloudflare-workers-version-overrides") === `${SCRIPT}="v-2"`),
    ).toBe(true);
  });

  it("at 100 %, also asks without the pin", async () => {
    const { fetch, requests } = edge(["sha256:new"]);
    await waitForEdgeConfig({
      gatewayUrl: "https://gateway.example",
      script: SCRIPT,
      versionId: "v-2",
      configVersion: "sha256:new",
      servesAll: true,
      deadline: 60_000,
      clock: fakeClock(),
      fetch,
      logger: { info: () => {}, warning: () => {} },
    });
    expect(requests.map((headers) => headers.has("cloudflare-workers-version-overrides"))).toEqual([
      true,
      false,
    ]);
  });

  it("fails at the deadline, saying what the edge last answered", async () => {
    const clock = fakeClock();
    const { fetch } = edge(["sha256:old"]);
    const error = await waitForEdgeConfig({
      gatewayUrl: "https://gateway.example",
      script: SCRIPT,
      versionId: "v-2",
      configVersion: "sha256:new",
      servesAll: false,
      deadline: 20_000,
      clock,
      fetch,
      logger: { info: () => {}, warning: () => {} },
    }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(EdgeNotServingError);
    expect((error as Error).message).toBe(
      "The edge at https://gateway.example did not serve config sha256:new (version v-2 of Worker " +
        "aml-edge-gateway) within 20s, by the deadline (timeout-minutes). Last answer: HTTP 401 with " +
        "x-aml-edge-config: sha256:old. Check that `gateway-url` is an address of Worker aml-edge-gateway (its " +
        "route, custom domain or workers.dev URL); a deployment usually reaches every location within seconds.",
    );
    expect(clock.now()).toBe(20_000);
    expect(Math.max(...clock.sleeps)).toBeLessThanOrEqual(5_000);
  });
});
