// The bundled rotate-keys action run the way the runner runs it, under steady load through the edge: an endpoint
// with a serving deployment (ONNX Runtime) behind the gateway, published by the bundled route action with Entra for
// the callers and the sandbox's GitHub issuer granting this workflow read-status; then clients score through the
// edge the whole time `node dist/rotate-keys/index.js` and its post step run. No request may fail: the key the live
// gateway sends is regenerated only after a version sending the other one serves (DESIGN.md decision 3).
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createMlClient, type MlWorkspace } from "../../src/azure/ml.ts";
import { readModelFolder } from "../../src/azure/ml-model-folder.ts";
import { createCloudflareApi } from "../../src/cloudflare/api.ts";
import { waitForEdgeConfig } from "../../src/cloudflare/edge.ts";
import { publishGateway, readLiveGateway } from "../../src/cloudflare/publish.ts";
import { systemClock } from "../../src/cloudflare/time.ts";
import { compileConfigBundle } from "../../src/config/compile.ts";
import { keyFingerprint } from "../../src/config/fingerprint.ts";
import { parseGatewayConfig } from "../../src/config/load.ts";
import { fetchKeySnapshots } from "../../src/config/snapshot.ts";
import { ARM_RESOURCE } from "../../src/sandbox/entra.ts";
import { creditSampleRows } from "../../src/sandbox/models/sample-rows.ts";
import { SANDBOX_MODELS_ROOT } from "../../src/sandbox/onnx-model.ts";
import { type Sandbox, startSandbox } from "../../src/sandbox/sandbox.ts";
import { adminWorkspace } from "./admin-workspace.ts";
import { CALLER_AUDIENCE, GATEWAY_AUDIENCE, SCORE_PATH, sandboxGatewayYaml } from "./gateway-config.ts";
import { runWithPost, type StepRun } from "./run-step.ts";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const ROTATE_KEYS = join(ROOT, "dist/rotate-keys/index.js");
const ROUTE = join(ROOT, "dist/route/index.js");
const WORKER = "aml-edge-gateway";
/** A second gateway, in front of an aml_token endpoint. */
const TOKEN_WORKER = "aml-edge-tokens";

/** The load: clients scoring in a loop, each request bounded in time, the whole run bounded in count and time. */
const CLIENTS = 8;
const MAX_REQUESTS = 50_000;
const MAX_LOAD_MS = 50_000;
const REQUEST_TIMEOUT_MS = 10_000;

let dir: string;
let local: Sandbox;
let ml: MlWorkspace;
let modelId: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "aml-edge-rotate-e2e-"));
  local = await startSandbox({
    timings: { endpointCreateMs: 50, endpointUpdateMs: 50, deploymentMs: 100, deleteMs: 50 },
  });
  ml = adminWorkspace(local);
  // An endpoint whose blue deployment runs the credit model and takes all its traffic.
  modelId = (
    await ml.registerModelFolder("credit", await readModelFolder(join(SANDBOX_MODELS_ROOT, "credit", "1")))
  ).id;
  await ml.ensureEndpoint("credit");
  const scoringUri = await serveBlue("credit");

  // The gateway's first version, published by the route action with the endpoint's keys as its secrets.
  await writeFile(join(dir, "gateway.yaml"), configYaml(scoringUri, "key"));
  const { main, post } = await runWithPost(
    step(ROUTE, { config: "gateway.yaml", endpoint: "credit", "lint-mode": "local" }),
  );
  expect(main.code, main.stdout).toBe(0);
  expect(post.code, post.stdout).toBe(0);
}, 60_000);

afterAll(async () => {
  await local?.close();
  if (dir !== undefined) await rm(dir, { recursive: true, force: true });
});

/** The endpoint's blue deployment runs the credit model and takes all its traffic; returns its scoring URI. */
async function serveBlue(endpoint: string): Promise<string> {
  await ml.deploy({
    endpoint,
    deployment: "blue",
    modelId,
    instanceType: "Standard_DS3_v2",
    instanceCount: 1,
  });
  await ml.setTraffic(endpoint, { blue: 100 });
  return (await ml.findEndpoint(endpoint))?.properties.scoringUri ?? "";
}

/** One deployment, the whole traffic; the job may read the status route. */
function configYaml(scoringUri: string, mode: "key" | "aml_token"): string {
  return sandboxGatewayYaml(local, {
    scoringUri,
    deployments: { blue: 100 },
    upstreamAuth: { mode },
    statusForJob: true,
  });
}

/** A step of this job against the sandbox: the sandbox's inputs, the job's environment, the checkout in dir. */
function step(bundle: string, inputs: Record<string, string>): StepRun {
  return { bundle, inputs: { ...local.inputs(), ...inputs }, env: local.environment(), workspace: dir };
}

interface Outcome {
  started: number;
  ended: number;
  /** Why it failed; undefined when it answered 200 with a prediction per row. */
  failure?: string;
}

/** Clients scoring through the edge until stopped (or the bounds are reached); every outcome is kept. */
function startLoad(token: string, gatewayUrl = local.gatewayUrl) {
  const outcomes: Outcome[] = [];
  const rows = creditSampleRows(2);
  const body = JSON.stringify({ data: rows });
  const hardStop = Date.now() + MAX_LOAD_MS;
  let stopped = false;
  const score = async (): Promise<Outcome> => {
    const started = Date.now();
    try {
      const response = await fetch(new URL(SCORE_PATH, gatewayUrl), {
        method: "POST",
        headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
        body,
        signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
      });
      const text = await response.text();
      const predictions = response.status === 200 ? (JSON.parse(text) as { probability?: unknown }[]) : [];
      const ok =
        predictions.length === rows.length &&
        predictions.every((prediction) => typeof prediction.probability === "number");
      return ok
        ? { started, ended: Date.now() }
        : { started, ended: Date.now(), failure: `HTTP ${response.status}: ${text.slice(0, 200)}` };
    } catch (error) {
      return { started, ended: Date.now(), failure: error instanceof Error ? error.message : String(error) };
    }
  };
  const client = async () => {
    while (!stopped && outcomes.length < MAX_REQUESTS && Date.now() < hardStop) outcomes.push(await score());
  };
  const clients = Array.from({ length: CLIENTS }, client);
  return {
    outcomes,
    async stop(): Promise<void> {
      stopped = true;
      await Promise.all(clients);
    },
  };
}

/** Resolves once `count` requests have completed (bounded by the load's own time limit). */
async function completed(outcomes: readonly Outcome[], count: number): Promise<void> {
  const until = Date.now() + MAX_LOAD_MS;
  while (outcomes.length < count && Date.now() < until)
    await new Promise((resolve) => setTimeout(resolve, 20));
}

async function statusRoute(gatewayUrl = local.gatewayUrl): Promise<{
  configVersion: string;
  routes: { name: string; upstreamAuth: Record<string, string> }[];
}> {
  const token = await local.github.mint(GATEWAY_AUDIENCE);
  const response = await fetch(new URL(".aml-edge/status", gatewayUrl), {
    headers: { authorization: `Bearer ${token}` },
  });
  expect(response.status).toBe(200);
  return response.json() as never;
}

describe("rotate-keys, bundled, under steady load through the edge", () => {
  it("rotates both keys with requests in flight the whole time and not one failing; the status route shows the new keys", async () => {
    const keysBefore = await ml.endpointKeys("credit");
    const deploymentsBefore = local.cloudflare.deployments(WORKER).length;
    const caller = await local.entra.issueUserToken({ audience: CALLER_AUDIENCE, roles: ["Scoring.Invoke"] });

    const load = startLoad(caller);
    await completed(load.outcomes, CLIENTS * 4);
    const { main, post } = await runWithPost(
      step(ROTATE_KEYS, { endpoint: "credit", "gateway-audience": GATEWAY_AUDIENCE, "timeout-minutes": "2" }),
    );
    // Still scoring after the step: the last version serves with the last key.
    const afterStep = load.outcomes.length;
    await completed(load.outcomes, afterStep + CLIENTS * 4);
    await load.stop();

    const outcomes = load.outcomes;
    const failed = outcomes.filter((outcome) => outcome.failure !== undefined);
    const first = Math.min(...outcomes.map((outcome) => outcome.started));
    const last = Math.max(...outcomes.map((outcome) => outcome.ended));
    console.log(
      `rotation under load: ${outcomes.length} requests, ${failed.length} failed, ${((last - first) / 1000).toFixed(1)} s`,
    );

    expect(main.code, main.stdout).toBe(0);
    expect(post.code, post.stdout).toBe(0);
    expect(failed.slice(0, 5)).toEqual([]);
    expect(outcomes.length).toBeGreaterThan(CLIENTS * 20);
    // Requests in flight from before the step started to after it ended.
    expect(first).toBeLessThan(main.started);
    expect(last).toBeGreaterThan(post.ended);

    // Two deployments, one per key; requests were inside the edge at each switch, and completed after each.
    const switches = local.cloudflare.requests
      .filter(
        (request) =>
          request.method === "POST" && request.path.endsWith(`/workers/scripts/${WORKER}/deployments`),
      )
      .filter((request) => request.time >= main.started && request.status === 200)
      .map((request) => request.time);
    expect(switches).toHaveLength(2);
    for (const at of switches) {
      expect(
        outcomes.filter((outcome) => outcome.started <= at && outcome.ended >= at).length,
      ).toBeGreaterThan(0);
      expect(outcomes.filter((outcome) => outcome.ended > at).length).toBeGreaterThan(CLIENTS);
    }
    // Each version of the run scored requests: the one before, and both new ones.
    const versionIds = JSON.parse(main.outputs["version-ids"] ?? "[]") as string[];
    const previous = JSON.parse(main.outputs["previous-deployment"] ?? "null") as {
      versions: { version_id: string }[];
    };
    expect(versionIds).toHaveLength(2);
    const scoredBy = new Set(
      local.cloudflare
        .audit(WORKER)
        .filter(({ record }) => record.route === "credit" && record.status === 200)
        .map(({ versionId }) => versionId),
    );
    for (const id of [previous.versions[0]?.version_id, ...versionIds]) expect(scoredBy).toContain(id);
    expect(local.cloudflare.deployments(WORKER).length).toBe(deploymentsBefore + 2);

    // Both keys are new, and the gateway holds exactly them.
    const keysAfter = await ml.endpointKeys("credit");
    expect(keysAfter.primaryKey).not.toBe(keysBefore.primaryKey);
    expect(keysAfter.secondaryKey).not.toBe(keysBefore.secondaryKey);
    const primary = await keyFingerprint(keysAfter.primaryKey);
    const secondary = await keyFingerprint(keysAfter.secondaryKey);
    expect(main.outputs["primary-fingerprint"]).toBe(primary);
    expect(main.outputs["secondary-fingerprint"]).toBe(secondary);
    const status = await statusRoute();
    expect(status.routes.find((route) => route.name === "credit")?.upstreamAuth).toEqual({
      mode: "key",
      active: "primary",
      primary,
      secondary,
    });
    expect(main.summary).toContain("Step 1: secondary key regenerated");
    expect(main.summary).toContain("Step 2: primary key regenerated");

    // The keys reach the log only in the runner's mask command; the minted tokens are gone.
    for (const line of main.stdout.split("\n")) {
      if (line.includes(keysAfter.primaryKey) || line.includes(keysAfter.secondaryKey)) {
        expect(line.startsWith("::add-mask::"), line).toBe(true);
      }
    }
    const minted = local.cloudflare.tokens().filter((token) => token.name.startsWith("aml-edge rotate-keys"));
    expect(minted.map((token) => token.name)).toEqual([
      "aml-edge rotate-keys read octo/models run 42.1",
      "aml-edge rotate-keys octo/models run 42.1",
    ]);
    expect(minted.every((token) => token.deleted)).toBe(true);
  }, 60_000);

  it("refreshes an aml_token that is due, under load, and leaves a fresh one alone", async () => {
    const gatewayUrl = await publishTokenGateway();
    const caller = await local.entra.issueAppToken({ audience: CALLER_AUDIENCE, roles: ["Scoring.Invoke"] });
    const rotate = (extra: Record<string, string>) =>
      runWithPost(
        step(ROTATE_KEYS, {
          endpoint: "tokens",
          "worker-name": TOKEN_WORKER,
          "gateway-url": gatewayUrl,
          "gateway-audience": GATEWAY_AUDIENCE,
          ...extra,
        }),
      );

    // The first version holds a token but not when to refresh it: due.
    const load = startLoad(caller, gatewayUrl);
    await completed(load.outcomes, CLIENTS * 2);
    const refreshed = await rotate({});
    await load.stop();
    const failed = load.outcomes.filter((outcome) => outcome.failure !== undefined);
    console.log(`aml_token refresh under load: ${load.outcomes.length} requests, ${failed.length} failed`);
    expect(refreshed.main.code, refreshed.main.stdout).toBe(0);
    expect(failed.slice(0, 5)).toEqual([]);
    expect(JSON.parse(refreshed.main.outputs["version-ids"] ?? "[]")).toHaveLength(1);
    const held = (await statusRoute(gatewayUrl)).routes[0]?.upstreamAuth;
    expect(held).toEqual({ mode: "aml_token", token: refreshed.main.outputs["token-fingerprint"] });
    expect(refreshed.main.summary).toContain("Refreshed the aml_token of endpoint tokens");

    // The sandbox's tokens are to be refreshed after 30 minutes: with a 10-minute margin, nothing is due.
    const fresh = await rotate({ "token-refresh-minutes": "10" });
    expect(fresh.main.code, fresh.main.stdout).toBe(0);
    expect(fresh.main.outputs["version-ids"]).toBe("[]");
    expect(fresh.main.outputs["token-fingerprint"]).toBe(refreshed.main.outputs["token-fingerprint"]);
    expect(fresh.main.stdout).toMatch(/Nothing to do: the token is fresh until /);
    expect(fresh.post.code).toBe(0);
  }, 60_000);
});

/**
 * An aml_token endpoint behind a gateway Worker of its own. The route action publishes endpoint keys only, so its
 * first version (holding a token from Azure ML, without its refresh time) is published here with the same plane code.
 */
async function publishTokenGateway(): Promise<string> {
  const { arm, cloudflare } = local;
  const client = createMlClient({
    credential: {
      getToken: async () => ({
        token: await local.entra.issueAppToken({ audience: ARM_RESOURCE }),
        expiresOnTimestamp: Date.now() + 3600_000,
      }),
    },
    subscriptionId: arm.subscriptionId,
    armEndpoint: arm.endpoint,
  });
  await client.onlineEndpoints.beginCreateOrUpdateAndWait(
    arm.resourceGroup,
    arm.workspace,
    "tokens",
    {
      location: arm.location,
      properties: { authMode: "AMLToken" },
    },
    { updateIntervalInMs: 50 },
  );
  const scoringUri = await serveBlue("tokens");
  const token = await ml.endpointToken("tokens");
  const config = parseGatewayConfig(configYaml(scoringUri, "aml_token"), "tokens.yaml");
  const bundle = await compileConfigBundle(config, {
    mode: "local",
    keySnapshots: await fetchKeySnapshots(config, { fetch }),
  });
  const api = createCloudflareApi({
    apiUrl: cloudflare.apiUrl,
    accountId: cloudflare.accountId,
    token: cloudflare.createToken({ permissions: ["Workers Scripts Write"] }).value,
    tokenDescription: "the test's token",
  });
  const quiet = { info() {}, warning() {}, debug() {} };
  const published = await publishGateway({
    api,
    live: await readLiveGateway(api, TOKEN_WORKER),
    bundle,
    workerModule: await readFile(join(ROOT, "dist/gateway/worker.js"), "utf8"),
    newSecrets: {
      AML_TOKEN: JSON.stringify({
        accessToken: token.accessToken,
        tokenType: token.tokenType,
        expiryTimeUtc: Math.floor((token.expiresAt?.getTime() ?? 0) / 1000),
        refreshAfterTimeUtc: Math.floor((token.refreshAfter?.getTime() ?? 0) / 1000),
      }),
    },
    percentage: 100,
    message: "aml_token gateway for the rotate-keys e2e",
    tag: bundle.version,
    logger: quiet,
  });
  const gatewayUrl = (await cloudflare.edgeUrl(TOKEN_WORKER)).href;
  await waitForEdgeConfig({
    gatewayUrl,
    script: TOKEN_WORKER,
    versionId: published.version.id,
    configVersion: bundle.version,
    servesAll: true,
    deadline: Date.now() + 20_000,
    clock: systemClock,
    logger: quiet,
  });
  return gatewayUrl;
}
