// The bundled deploy-model action run the way the runner runs it: `node dist/deploy-model/index.js` with INPUT_*,
// GITHUB_OUTPUT, GITHUB_STEP_SUMMARY and the OIDC request variables, against the local Azure: the GitHub OIDC token
// service, Entra checking the federated credential, ARM for Azure ML, Azurite as the default datastore, and ONNX
// Runtime serving what was deployed. Only configuration (inputs, NODE_EXTRA_CA_CERTS) points the action at it.
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type ArmSandbox, AZURITE_ACCOUNT_KEY } from "../../src/sandbox/arm/index.ts";
import type { Entra } from "../../src/sandbox/entra.ts";
import type { GitHubOidc } from "../../src/sandbox/github-oidc.ts";
import { creditSampleRows } from "../../src/sandbox/models/sample-rows.ts";
import { loadOnnxModel, SANDBOX_MODELS_ROOT } from "../../src/sandbox/onnx-model.ts";
import { SANDBOX_CLIENT_ID, type Sandbox, startSandbox } from "../../src/sandbox/sandbox.ts";
import { adminWorkspace as sandboxAdminWorkspace } from "./admin-workspace.ts";
import { runStep as runBundledStep, type StepResult } from "./run-step.ts";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const BUNDLE = join(ROOT, "dist/deploy-model/index.js");
/** The umbrella action at the repository root: `command` picks the action. */
const UMBRELLA = join(ROOT, "dist/main/index.js");
const CLIENT_ID = SANDBOX_CLIENT_ID;

let dir: string;
let local: Sandbox;
/** The workspace as an administrator's script sees it: to set traffic and read keys around the action's runs. */
const adminWorkspace = () => sandboxAdminWorkspace(local);
let caFile: string;
let github: GitHubOidc;
let entra: Entra;
let sandbox: ArmSandbox;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "aml-edge-deploy-e2e-"));
  // This process only sets traffic and scores (it trusts the CA in process); the action trusts it through
  // NODE_EXTRA_CA_CERTS, as a job step would.
  local = await startSandbox({
    timings: { endpointCreateMs: 100, endpointUpdateMs: 100, deploymentMs: 300, deleteMs: 100 },
  });
  ({ github, entra, arm: sandbox, caFile } = local);
}, 60_000);

afterAll(async () => {
  await local?.close();
  if (dir !== undefined) await rm(dir, { recursive: true, force: true });
});

/** Runs the bundle as a workflow step (run-step.ts), with the deploy-model inputs that point it at the sandbox. */
function runStep(inputs: Record<string, string>, bundle = BUNDLE): Promise<StepResult> {
  return runBundledStep({
    bundle,
    inputs: {
      "client-id": CLIENT_ID,
      "tenant-id": entra.tenantId,
      "subscription-id": sandbox.subscriptionId,
      "resource-group": sandbox.resourceGroup,
      workspace: sandbox.workspace,
      endpoint: "credit",
      "arm-endpoint": sandbox.endpoint,
      "authority-host": entra.authorityHost,
      "blob-endpoint": sandbox.blobServiceUrl ?? "",
      "timeout-minutes": "5",
      ...inputs,
    },
    env: { ...github.env(), NODE_EXTRA_CA_CERTS: caFile },
    // The checkout: model folders are given relative to it, as a workflow gives them.
    workspace: ROOT,
    filesDir: dir,
  });
}

async function score(deployment: string): Promise<unknown> {
  const ml = adminWorkspace();
  const { primaryKey } = await ml.endpointKeys("credit");
  const scoringUri = (await ml.findEndpoint("credit"))?.properties.scoringUri ?? "";
  const response = await fetch(scoringUri, {
    method: "POST",
    headers: {
      authorization: `Bearer ${primaryKey}`,
      "azureml-model-deployment": deployment,
      "content-type": "application/json",
    },
    body: JSON.stringify({ data: creditSampleRows(5) }),
  });
  expect(response.status).toBe(200);
  expect(response.headers.get("azureml-model-deployment")).toBe(deployment);
  return response.json();
}

describe("deploy-model, bundled, against the local Azure", () => {
  it("puts v2 beside v1 at 0% traffic; a call pinned to it answers from v2", async () => {
    // v1 on blue, serving everything, as a previous release left it.
    const first = await runStep({ model: "src/sandbox/models/credit/1" });
    expect(first.code, first.stdout).toBe(0);
    expect(first.outputs).toMatchObject({ deployment: "blue", "previous-traffic": "{}" });
    expect(first.outputs["model-id"]).toBe(sandbox.modelVersionId("credit", "1"));
    const ml = adminWorkspace();
    expect(await ml.setTraffic("credit", { blue: 100 })).toEqual({});

    const second = await runStep({ model: "src/sandbox/models/credit/2" });
    expect(second.code, second.stdout).toBe(0);
    expect(second.outputs).toEqual({
      deployment: "green",
      "model-id": sandbox.modelVersionId("credit", "2"),
      "scoring-uri": sandbox.onlineEndpoint("credit")?.scoringUri,
      "previous-traffic": '{"blue":100}',
    });
    const endpoint = sandbox.onlineEndpoint("credit");
    expect(endpoint?.traffic).toEqual({ blue: 100 });
    expect(endpoint?.deployments.green).toMatchObject({
      provisioningState: "Succeeded",
      model: sandbox.modelVersionId("credit", "2"),
    });
    expect(endpoint?.deployments.blue?.model).toBe(sandbox.modelVersionId("credit", "1"));
    expect(second.stdout).toMatch(/Deployment green on endpoint credit: done after/);
    expect(second.summary).toContain("Deployed credit:2 to credit/green");

    // The datastore key reaches the log only in the runner's mask command.
    const keyLines = second.stdout.split("\n").filter((line) => line.includes(AZURITE_ACCOUNT_KEY));
    expect(keyLines.every((line) => line.startsWith("::add-mask::"))).toBe(true);

    const rows = creditSampleRows(5);
    const v2 = await loadOnnxModel(join(SANDBOX_MODELS_ROOT, "credit", "2"));
    const v1 = await loadOnnxModel(join(SANDBOX_MODELS_ROOT, "credit", "1"));
    const answer = await score("green");
    expect(answer).toEqual(await v2.score({ data: rows }));
    expect(answer).not.toEqual(await v1.score({ data: rows }));

    // The same folder again: its version is reused, nothing new is registered.
    const again = await runStep({ model: "src/sandbox/models/credit/2" });
    expect(again.code, again.stdout).toBe(0);
    expect(again.outputs["model-id"]).toBe(sandbox.modelVersionId("credit", "2"));
    expect(again.stdout).toMatch(/already registered as credit:2; reusing it/);
    // Everything the action sent, and everything the sandbox answered, held to the 2022-10-01 specification.
    expect(sandbox.specViolations).toEqual([]);
  }, 120_000);

  it("a failed provisioning shows the container logs in a group, fails the step and leaves traffic alone", async () => {
    sandbox.faults.failProvisioning("green", {
      message: "User container has crashed or terminated.",
      logLines: ["Loading model", "onnxruntime: Load model failed: invalid graph"],
    });
    const failed = await runStep({ model: "src/sandbox/models/credit/3" });
    expect(failed.code).toBe(1);
    expect(failed.stdout).toMatch(/::group::Logs of deployment green: InferenceServer \(last 200 lines\)/);
    expect(failed.stdout).toContain("onnxruntime: Load model failed: invalid graph");
    expect(failed.stdout).toMatch(/::error::Deployment green on endpoint credit failed \(state Failed\)/);
    expect(failed.outputs).toEqual({});
    expect(sandbox.onlineEndpoint("credit")?.traffic).toEqual({ blue: 100 });
  }, 120_000);

  it("waits out a 409 storm and a 429 from ARM, then deploys", async () => {
    sandbox.faults.conflicts(3, { method: "PUT", pathIncludes: "/deployments/" });
    sandbox.faults.throttle(2, 1, { method: "GET", pathIncludes: "/onlineEndpoints/credit" });
    const step = await runStep({ model: "azureml:credit:2", "instance-count": "2" });
    expect(step.code, step.stdout).toBe(0);
    expect(
      step.stdout.match(/Azure answered 409 Conflict: another operation on the same endpoint/g),
    ).toHaveLength(3);
    expect(step.outputs.deployment).toBe("green");
    expect(sandbox.onlineEndpoint("credit")?.deployments.green?.instanceCount).toBe(2);
    expect(sandbox.onlineEndpoint("credit")?.traffic).toEqual({ blue: 100 });
  }, 120_000);

  it("a 65-second deployment outlives 20-second GitHub tokens: the credential fetches new ones as it goes", async () => {
    github.setLifetime(20);
    entra.setAccessTokenLifetime(30);
    // 65 s, not 60: the action's clock starts after the PUT that starts the sandbox's, so a 60-second deployment
    // could finish just before the action's 1-minute progress line is due, and the line would race the end.
    sandbox.faults.slowProvisioning("green", 65_000);
    const issuedBefore = github.issued;
    try {
      const step = await runStep({ model: "azureml:credit:2" });
      expect(step.code, step.stdout).toBe(0);
      expect(step.outputs.deployment).toBe("green");
      // Progress lines while it provisions, 30 s apart.
      expect(step.stdout).toMatch(/^Deployment green on endpoint credit: Updating \(30s elapsed\)$/m);
      expect(step.stdout).toMatch(/^Deployment green on endpoint credit: Updating \(1m elapsed\)$/m);
      // No token lived through the wait: a later one carried the polls.
      expect(github.issued - issuedBefore).toBeGreaterThanOrEqual(3);
    } finally {
      github.setLifetime(300);
      entra.setAccessTokenLifetime(3600);
      sandbox.faults.slowProvisioning("green", 300);
    }
  }, 150_000);

  it("the umbrella action runs deploy-model when command says so, and refuses an unknown command", async () => {
    const unknown = await runStep({ command: "deploy-everything" }, UMBRELLA);
    expect(unknown.code).toBe(1);
    expect(unknown.stdout).toContain(
      '::error::Input `command`: "deploy-everything" is not a command; accepted: deploy-model, route, rotate-keys.',
    );
    const step = await runStep({ command: "deploy-model", model: "azureml:credit:2" }, UMBRELLA);
    expect(step.code, step.stdout).toBe(0);
    expect(step.outputs).toMatchObject({
      deployment: "green",
      "model-id": sandbox.modelVersionId("credit", "2"),
    });
  }, 120_000);

  it("bad inputs fail the step before Azure is asked anything", async () => {
    const before = sandbox.requests.length;
    const bad = await runStep({ model: "azureml:credit", "instance-count": "0" });
    expect(bad.code).toBe(1);
    expect(bad.stdout).toMatch(/::error::deploy-model: 2 inputs need fixing/);
    expect(bad.stdout).toContain("Input `instance-count`");
    expect(bad.stdout).toContain("Input `model`");
    expect(sandbox.requests.length).toBe(before);
  }, 60_000);
});
