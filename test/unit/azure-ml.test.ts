// src/azure/ml.ts against an in-memory workspace (fake-ml-client.ts) and a clock that moves only when the code sleeps:
// what is sent to Azure, in what order, what is logged, and what the user is told when something goes wrong.
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { ConfigurationError } from "../../src/azure/errors.ts";
import {
  chooseSlot,
  DeploymentFailedError,
  MIRROR_API_VERSION,
  MlWorkspace,
  type MlWorkspaceOptions,
  parseModelReference,
} from "../../src/azure/ml.ts";
import { readModelFolder } from "../../src/azure/ml-model-folder.ts";
import { DeadlineExceededError } from "../../src/azure/retry.ts";
import {
  ARM,
  FakeMl,
  fakeClock,
  httpError,
  RG,
  recordingLogger,
  SUB,
  WORKSPACE_ID,
  WS,
} from "./fake-ml-client.ts";

function setup(options: Partial<MlWorkspaceOptions> = {}, timeoutMinutes = 30) {
  const fake = new FakeMl();
  const clock = fakeClock();
  const logger = recordingLogger(clock);
  const secrets: string[] = [];
  const ml = new MlWorkspace({
    client: fake.client,
    armEndpoint: ARM,
    subscriptionId: SUB,
    resourceGroup: RG,
    workspace: WS,
    deadline: clock.now() + timeoutMinutes * 60_000,
    clock,
    logger,
    setSecret: (s) => secrets.push(s),
    random: () => 0.5,
    ...options,
  });
  return { fake, clock, logger, secrets, ml };
}

const spec = (deployment: string) => ({
  endpoint: "credit",
  deployment,
  modelId: `${WORKSPACE_ID}/models/credit/versions/2`,
  instanceType: "Standard_DS3_v2",
  instanceCount: 2,
});

describe("parseModelReference", () => {
  it("takes azureml:NAME:VERSION as a registered version and anything else as a folder", () => {
    expect(parseModelReference("azureml:credit:3")).toEqual({
      kind: "registered",
      name: "credit",
      version: "3",
    });
    expect(parseModelReference("azureml:credit-model.v2:2024.1")).toEqual({
      kind: "registered",
      name: "credit-model.v2",
      version: "2024.1",
    });
    expect(parseModelReference("models/credit/2")).toEqual({ kind: "folder", path: "models/credit/2" });
  });

  it.each([
    "azureml:credit",
    "azureml:credit@latest",
    "azureml:credit:",
    "azureml::3",
    "azureml:a:b:c",
    "azureml:-x:1",
  ])("refuses %s, naming the input and the accepted form", (value) => {
    expect(() => parseModelReference(value)).toThrow(ConfigurationError);
    expect(() => parseModelReference(value)).toThrow(/^Input `model`: .*azureml:(NAME:VERSION|credit:3)/);
  });
});

describe("chooseSlot", () => {
  it("deploys beside the serving slot: blue serving → green, green serving → blue", () => {
    expect(chooseSlot({ blue: 100 }, "credit")).toBe("green");
    expect(chooseSlot({ blue: 100, green: 0 }, "credit")).toBe("green");
    expect(chooseSlot({ green: 100, blue: 0 }, "credit")).toBe("blue");
  });

  it("starts with blue when neither serves", () => {
    expect(chooseSlot({}, "credit")).toBe("blue");
    expect(chooseSlot({ blue: 0, green: 0 }, "credit")).toBe("blue");
    expect(chooseSlot({ legacy: 100 }, "credit")).toBe("blue");
  });

  it("refuses when both serve: a rollout is half done", () => {
    expect(() => chooseSlot({ blue: 90, green: 10 }, "credit")).toThrow(ConfigurationError);
    expect(() => chooseSlot({ blue: 90, green: 10 }, "credit")).toThrow(
      /blue \(90%\) and green \(10%\).*`deployment`/,
    );
  });
});

describe("deploy", () => {
  it("creates the deployment without touching the endpoint's traffic, so it starts at 0%", async () => {
    const { fake, ml } = setup();
    fake.addEndpoint("credit", { blue: 100 });
    const deployed = await ml.deploy(spec("green"));
    expect(deployed.properties.provisioningState).toBe("Succeeded");
    expect(fake.deploymentPuts).toHaveLength(1);
    const body = fake.deploymentPuts[0]?.body;
    expect(body).toEqual({
      location: "westeurope",
      sku: { name: "Default", capacity: 2 },
      properties: {
        endpointComputeType: "Managed",
        model: `${WORKSPACE_ID}/models/credit/versions/2`,
        instanceType: "Standard_DS3_v2",
      },
    });
    expect(JSON.stringify(body)).not.toMatch(/traffic/i);
    expect(fake.endpointPuts).toEqual([]);
    expect(fake.calls.filter((c) => c.startsWith("onlineEndpoints.beginCreateOrUpdate"))).toEqual([]);
    expect(fake.endpoints.get("credit")?.json.properties.traffic).toEqual({ blue: 100 });
  });

  it("passes environment, scoring code and environment variables as ManagedOnlineDeployment takes them", async () => {
    const { fake, ml } = setup();
    fake.addEndpoint("credit", {});
    await ml.deploy({
      ...spec("blue"),
      environmentId: `${WORKSPACE_ID}/environments/onnx/versions/4`,
      codeConfiguration: { codeId: `${WORKSPACE_ID}/codes/score/versions/2`, scoringScript: "score.py" },
      environmentVariables: { WORKERS: "2" },
    });
    expect(fake.deploymentPuts[0]?.body.properties).toMatchObject({
      environmentId: `${WORKSPACE_ID}/environments/onnx/versions/4`,
      codeConfiguration: { codeId: `${WORKSPACE_ID}/codes/score/versions/2`, scoringScript: "score.py" },
      environmentVariables: { WORKERS: "2" },
    });
  });

  it("prints a progress line with state and elapsed time at least every 30 s", async () => {
    const { fake, ml, logger, clock } = setup();
    fake.addEndpoint("credit", { blue: 100 });
    fake.lro = { polls: 40 }; // 40 polls × 5 s = 200 s
    const start = clock.now();
    await ml.deploy(spec("green"));
    const lines = logger.lines.filter((l) => l.kind === "info" && l.message.startsWith("Deployment green"));
    const progress = lines.filter((l) => /elapsed\)$/.test(l.message));
    expect(progress.length).toBeGreaterThanOrEqual(6);
    expect(progress[0]?.message).toBe("Deployment green on endpoint credit: Creating (30s elapsed)");
    const times = [start, ...lines.map((l) => l.at)];
    for (let i = 1; i < times.length; i++)
      expect((times[i] ?? 0) - (times[i - 1] ?? 0)).toBeLessThanOrEqual(30_000);
    expect(lines.at(-1)?.message).toBe("Deployment green on endpoint credit: done after 3m10s.");
    // Checks come quickly at first, then every 5 s, and a sleep ends where a progress line is due.
    expect(clock.sleeps.slice(0, 9)).toEqual([1000, 2000, 4000, 5000, 5000, 5000, 5000, 3000, 5000]);
  });

  it("on a failed provisioning, prints the container logs in collapsed groups and says what failed", async () => {
    const { fake, ml, logger } = setup();
    fake.addEndpoint("credit", { blue: 100 });
    fake.lro = { polls: 3, failWith: "ResourceNotReady. User container has crashed or terminated." };
    const error = await ml.deploy(spec("green")).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(DeploymentFailedError);
    const message = (error as Error).message;
    expect(message).toMatch(
      /^Deployment green on endpoint credit failed \(state Failed\): .*User container has crashed/,
    );
    expect(message).toMatch(/collapsed groups above/);
    expect(message).toMatch(/traffic was not changed/);
    expect(fake.getLogsCalls).toEqual([
      { containerType: "StorageInitializer", tail: 200 },
      { containerType: "InferenceServer", tail: 200 },
    ]);
    const kinds = logger.lines.filter((l) => l.kind !== "debug").slice(-6);
    expect(kinds.map((l) => l.kind)).toEqual([
      "startGroup",
      "info",
      "endGroup",
      "startGroup",
      "info",
      "endGroup",
    ]);
    expect(kinds[3]?.message).toBe("Logs of deployment green: InferenceServer (last 200 lines)");
    expect(kinds[4]?.message).toBe("line 1\nTraceback: boom");
    expect(fake.endpoints.get("credit")?.json.properties.traffic).toEqual({ blue: 100 });
  });

  it("treats a failure thrown by begin* itself (2.1.1 polls once there) the same way", async () => {
    const { fake, ml } = setup();
    fake.addEndpoint("credit", {});
    fake.lro = { polls: 1, failInBegin: "ImageBuildFailure. Conda failed." };
    await expect(ml.deploy(spec("blue"))).rejects.toThrow(/failed \(state Failed\): .*Conda failed/);
    expect(fake.getLogsCalls).toHaveLength(2);
  });

  it("reports an outright refusal (400) without logs, naming the settings to check", async () => {
    const { fake, ml } = setup();
    fake.addEndpoint("credit", {});
    fake.faults.set("onlineDeployments.beginCreateOrUpdate", [
      httpError(400, "Instance type Standard_X is not supported"),
    ]);
    await expect(ml.deploy(spec("blue"))).rejects.toThrow(
      /Azure refused the request \(HTTP 400\): Instance type Standard_X.*instance-type/,
    );
    expect(fake.getLogsCalls).toEqual([]);
  });

  it("stops waiting at the deadline, still showing the logs", async () => {
    const { fake, ml, clock } = setup({}, 1);
    fake.addEndpoint("credit", {});
    fake.lro = { polls: 1000 };
    const start = clock.now();
    const error = await ml.deploy(spec("blue")).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(DeadlineExceededError);
    expect((error as Error).message).toMatch(/not finished after 1m.*timeout-minutes/);
    expect(clock.now() - start).toBe(60_000);
    expect(fake.getLogsCalls).toHaveLength(2);
  });

  it("waits out 409 Conflict on the deployment PUT, then creates it", async () => {
    const { fake, ml, clock } = setup();
    fake.addEndpoint("credit", {});
    fake.faults.set("onlineDeployments.beginCreateOrUpdate", [
      httpError(409, "Conflict"),
      httpError(409, "Conflict"),
    ]);
    await ml.deploy(spec("blue"));
    // Backoff (ceilings 2 s and 4 s, jitter 0.5), then the 5 s polls of the operation.
    expect(clock.sleeps.slice(0, 2)).toEqual([1500, 3000]);
    expect(fake.calls.filter((c) => c.startsWith("onlineDeployments.beginCreateOrUpdate"))).toHaveLength(3);
  });

  it("runs operations on one endpoint one after another", async () => {
    const { fake, ml } = setup();
    fake.addEndpoint("credit", {});
    fake.lro = { polls: 3 };
    await Promise.all([ml.deploy(spec("blue")), ml.deploy(spec("green"))]);
    const relevant = fake.calls.filter((c) => /beginCreateOrUpdate|onlineDeployments.get/.test(c));
    const firstGreen = relevant.findIndex((c) => c.includes("credit/green"));
    expect(relevant.slice(firstGreen).some((c) => c.includes("credit/blue"))).toBe(false);
  });
});

describe("traffic", () => {
  it("GETs the endpoint, PUTs it whole with the new map, and re-GETs until the map shows", async () => {
    const { fake, ml, logger } = setup();
    fake.addEndpoint("credit", { blue: 100, green: 0 });
    fake.readLag = 3;
    const previous = await ml.setTraffic("credit", { blue: 90, green: 10 });
    expect(previous).toEqual({ blue: 100, green: 0 });
    expect(fake.endpointPuts).toEqual([
      {
        location: "westeurope",
        tags: { team: "risk" },
        properties: { authMode: "Key", description: "kept as is", traffic: { blue: 90, green: 10 } },
      },
    ]);
    const requests = fake.calls.filter((c) => c.startsWith("sendRequest"));
    expect(requests.map((c) => c.split(" ")[1])).toEqual(["GET", "PUT", "GET", "GET", "GET", "GET"]);
    expect(requests.every((c) => c.endsWith("api-version=2022-10-01"))).toBe(true);
    expect(logger.lines.at(-1)?.message).toMatch(/done after 7s/);
    expect(await ml.traffic("credit")).toEqual({ blue: 90, green: 10 });
  });

  it("gives up re-reading at the deadline, saying the PUT was accepted", async () => {
    const { fake, ml } = setup({}, 1);
    fake.addEndpoint("credit", { blue: 100, green: 0 });
    fake.readLag = 10_000;
    await expect(ml.setTraffic("credit", { green: 100 })).rejects.toThrow(
      /not finished after 1m.*PUT was accepted.*timeout-minutes/,
    );
  });

  it("refuses a map that does not add up to 100 or 0 before sending anything", () => {
    const { fake, ml } = setup();
    fake.addEndpoint("credit", { blue: 100 });
    expect(() => ml.setTraffic("credit", { blue: 90, green: 20 })).toThrow(/adds up to 110%/);
    expect(() => ml.setTraffic("credit", { blue: 99.5, green: 0.5 })).toThrow(/whole percentages/);
    expect(fake.calls).toEqual([]);
  });

  it("refuses mirror traffic at the SDK's api-version, before sending anything", () => {
    const { fake, ml } = setup();
    fake.addEndpoint("credit", { blue: 100 });
    expect(() => ml.setMirrorTraffic("credit", { green: 10 })).toThrow(
      /api-version 2023-04-01 or later.*2022-10-01/,
    );
    expect(fake.calls).toEqual([]);
  });

  it("sets mirror traffic as raw JSON at a newer api-version, keeping the live map", async () => {
    const { fake, ml } = setup({ endpointApiVersion: MIRROR_API_VERSION });
    fake.apiVersions = [MIRROR_API_VERSION];
    fake.addEndpoint("credit", { blue: 100, green: 0 });
    await ml.setMirrorTraffic("credit", { green: 10 });
    expect(fake.endpointPuts[0]?.properties).toEqual({
      authMode: "Key",
      description: "kept as is",
      traffic: { blue: 100, green: 0 },
      mirrorTraffic: { green: 10 },
    });
    await expect(ml.setMirrorTraffic("credit", { blue: 10 })).rejects.toThrow(/receives live traffic/);
    expect(() => ml.setMirrorTraffic("credit", { green: 60 })).toThrow(/up to 50%/);
  });

  it("waits out 409 and honours 429 Retry-After on the endpoint PUT", async () => {
    const { fake, ml, clock } = setup();
    fake.addEndpoint("credit", { blue: 100, green: 0 });
    fake.faults.set("sendRequest PUT", [
      httpError(409, "Conflict"),
      httpError(429, "Too Many Requests", { "retry-after": "9" }),
    ]);
    await ml.setTraffic("credit", { green: 100 });
    expect(clock.sleeps.slice(0, 2)).toEqual([1500, 9000]);
    expect(fake.endpointPuts).toHaveLength(1);
  });
});

describe("deleteDeployment", () => {
  it("refuses, before asking Azure, while the deployment has traffic", async () => {
    const { fake, ml } = setup();
    fake.addEndpoint("credit", { blue: 100, green: 0 });
    await expect(ml.deleteDeployment("credit", "blue")).rejects.toThrow(ConfigurationError);
    await expect(ml.deleteDeployment("credit", "blue")).rejects.toThrow(
      /blue on endpoint credit still receives 100% of live traffic.*Move its traffic/,
    );
    expect(fake.calls.some((c) => c.startsWith("onlineDeployments.beginDelete"))).toBe(false);
  });

  it("deletes one without traffic and waits for it", async () => {
    const { fake, ml } = setup();
    fake.addEndpoint("credit", { blue: 100, green: 0 });
    await ml.deleteDeployment("credit", "green");
    expect(fake.endpoints.get("credit")?.deployments.has("green")).toBe(false);
  });
});

describe("endpoint", () => {
  it("creates a missing endpoint with key auth in the workspace's region", async () => {
    const { fake, ml } = setup();
    const { endpoint, created } = await ml.ensureEndpoint("fresh");
    expect(created).toBe(true);
    expect(endpoint.properties.authMode).toBe("Key");
    expect(endpoint.location).toBe("westeurope");
    const again = await ml.ensureEndpoint("fresh");
    expect(again.created).toBe(false);
    expect(fake.calls.filter((c) => c.startsWith("onlineEndpoints.beginCreateOrUpdate"))).toHaveLength(1);
  });

  it("masks keys and tokens the moment they are read, and gives the token's times as dates", async () => {
    const { fake, ml, secrets } = setup();
    fake.addEndpoint("credit", { blue: 100 });
    expect(await ml.endpointKeys("credit")).toEqual({
      primaryKey: "primary-key-value",
      secondaryKey: "secondary-key-value",
    });
    const token = await ml.endpointToken("credit");
    expect(token.expiresAt?.toISOString()).toBe(new Date(1_800_000_000_000).toISOString());
    expect(token.refreshAfter?.getTime()).toBe(1_799_990_000_000);
    expect(secrets).toEqual(["primary-key-value", "secondary-key-value", "aml-token-value"]);
  });

  it("regenerates one key, waits until listKeys shows it, and masks the new value", async () => {
    const { fake, ml, secrets } = setup();
    fake.addEndpoint("credit", { blue: 100 });
    fake.keyReadLag = 2;
    const keys = await ml.regenerateEndpointKey("credit", "Secondary");
    expect(keys.primaryKey).toBe("primary-key-value");
    expect(keys.secondaryKey).not.toBe("secondary-key-value");
    expect(keys.secondaryKey).toMatch(/^secondary-key-/);
    expect(secrets).toContain(keys.secondaryKey);
    // One read before, the lagging reads, then the one that shows the new key.
    expect(fake.calls.filter((c) => c === "onlineEndpoints.listKeys credit")).toHaveLength(4);
    expect(fake.calls).toContain("onlineEndpoints.beginRegenerateKeys credit Secondary");
  });

  it("stops waiting for a regenerated key at the deadline", async () => {
    const { fake, ml } = setup({}, 1);
    fake.addEndpoint("credit", { blue: 100 });
    fake.keyReadLag = 1_000_000;
    await expect(ml.regenerateEndpointKey("credit", "Primary")).rejects.toThrow(DeadlineExceededError);
  });
});

describe("models", () => {
  let dir: string | undefined;
  afterEach(async () => {
    if (dir !== undefined) await rm(dir, { recursive: true, force: true });
  });

  it("verifies a registered version exists, and says how to fix one that does not", async () => {
    const { ml } = setup();
    expect(await ml.registeredModel("credit", "1")).toEqual({
      name: "credit",
      version: "1",
      id: `${WORKSPACE_ID}/models/credit/versions/1`,
      modelType: undefined,
    });
    await expect(ml.registeredModel("credit", "9")).rejects.toThrow(ConfigurationError);
    await expect(ml.registeredModel("credit", "9")).rejects.toThrow(
      /azureml:credit:9 is not registered in workspace aml-ws/,
    );
  });

  it("uploads a folder under a content-addressed prefix and registers the next integer version, once", async () => {
    const uploads: { target: string; path: string; data: string }[] = [];
    const { fake, ml, secrets } = setup({
      blobEndpoint: "https://127.0.0.1:10000/devstoreaccount1/",
      blobUploader: (target) => ({
        async upload(path, data) {
          uploads.push({
            target: `${target.serviceUrl} ${target.accountName} ${target.container} ${target.accountKey}`,
            path,
            data: data.toString(),
          });
        },
      }),
    });
    dir = await mkdtemp(join(tmpdir(), "aml-edge-model-"));
    await mkdir(join(dir, "sub"));
    await writeFile(join(dir, "model.onnx"), "onnx-bytes");
    await writeFile(join(dir, "sub", "labels.txt"), "a\nb");
    const folder = await readModelFolder(dir);
    const prefix = `aml-edge/models/credit/${folder.digest.slice(0, 32)}`;

    expect(await ml.registerModelFolder("credit", folder)).toEqual({
      name: "credit",
      version: "2",
      id: `${WORKSPACE_ID}/models/credit/versions/2`,
      modelType: "custom_model",
      reused: false,
    });
    const target = `https://127.0.0.1:10000/devstoreaccount1 acct azureml-blobstore ${fake.datastoreKey}`;
    expect(uploads).toEqual([
      { target, path: `${prefix}/model.onnx`, data: "onnx-bytes" },
      { target, path: `${prefix}/sub/labels.txt`, data: "a\nb" },
    ]);
    expect(secrets).toEqual([fake.datastoreKey]);
    expect(fake.models.get("credit")?.get("2")?.modelUri).toBe(
      `azureml://subscriptions/${SUB}/resourcegroups/${RG}/workspaces/${WS}/datastores/workspaceblobstore/paths/${prefix}/`,
    );

    // The same contents again: the version registered before, nothing uploaded.
    expect((await ml.registerModelFolder("credit", await readModelFolder(dir))).version).toBe("2");
    expect(uploads).toHaveLength(2);
    // Changed contents: a new prefix and the next version.
    await writeFile(join(dir, "model.onnx"), "onnx-bytes-v3");
    const changed = await readModelFolder(dir);
    expect(changed.digest).not.toBe(folder.digest);
    expect((await ml.registerModelFolder("credit", changed)).version).toBe("3");
    expect(uploads).toHaveLength(4);
  });

  it("registers version 1 of a model that has none yet, as an MLflow model when the folder has an MLmodel file", async () => {
    const { ml, fake } = setup({ blobUploader: () => ({ upload: async () => {} }) });
    dir = await mkdtemp(join(tmpdir(), "aml-edge-model-"));
    await writeFile(join(dir, "model.onnx"), "x");
    await writeFile(join(dir, "MLmodel"), "flavors: {}");
    const registered = await ml.registerModelFolder("fraud", await readModelFolder(dir));
    expect(registered).toMatchObject({ version: "1", modelType: "mlflow_model" });
    expect(fake.calls).toContain("modelVersions.createOrUpdate fraud:1");
  });

  it("refuses a missing or empty folder as the user's to fix", async () => {
    dir = await mkdtemp(join(tmpdir(), "aml-edge-model-"));
    await expect(readModelFolder(join(dir, "nope"))).rejects.toThrow(/Input `model`: .*does not exist/);
    await expect(readModelFolder(dir)).rejects.toThrow(/holds no files/);
    await expect(readModelFolder(dir)).rejects.toBeInstanceOf(ConfigurationError);
  });
});
