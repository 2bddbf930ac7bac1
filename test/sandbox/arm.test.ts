// The ARM sandbox driven only by the official clients, over HTTPS from the sandbox CA: @azure/arm-machinelearning
// 2.1.1 for the control plane, @azure/storage-blob for the datastore, fetch for the scoring URI. Every exchange is
// held to the 2022-10-01 REST specification, and every result is read through the SDK's own deserialisers.
//
// The tests share one sandbox and build on each other the way a rollout does: datastore → model versions →
// endpoint → blue at 0% → traffic to blue → green beside it → pinned scoring → keys → deletes.
import { randomBytes } from "node:crypto";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import type { AzureMachineLearningWorkspaces, OnlineDeployment } from "@azure/arm-machinelearning";
import { isRestError } from "@azure/core-rest-pipeline";
import { BlobServiceClient, StorageSharedKeyCredential } from "@azure/storage-blob";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { type ArmSandbox, type Azurite, startArmSandbox, startAzurite } from "../../src/sandbox/arm/index.ts";
import {
  type CreditModelWeights,
  createCreditModel,
  creditWeightsFor,
  type Prediction,
  SAMPLE_CREDIT_ROW,
} from "../../src/sandbox/credit-model.ts";
import { createSandboxCa, trustInProcess } from "../../src/sandbox/tls.ts";
import { armClient, checkAgainstSpec, type Exchange, pathOf, staticCredential } from "./arm-helpers.ts";

const TOKEN = randomBytes(24).toString("base64url");
// Fast polling so each long-running operation finishes in a fraction of a second.
const POLL = { updateIntervalInMs: 20 };
const ENDPOINT = "credit";

let untrust: () => void = () => undefined;
let azurite: Azurite | undefined;
let sandbox: ArmSandbox;
let client: AzureMachineLearningWorkspaces;
let exchanges: Exchange[];
let rg: string;
let ws: string;
const loaderCalls: string[] = [];

const V1: CreditModelWeights = creditWeightsFor("model-v1");
const V2: CreditModelWeights = creditWeightsFor("model-v2");

beforeAll(async () => {
  const ca = await createSandboxCa();
  untrust = trustInProcess(ca.caPem);
  const certificate = await ca.issueServerCertificate();
  azurite = await startAzurite({ tls: certificate });
  sandbox = await startArmSandbox({
    tls: certificate,
    azurite,
    // Only the one token the test's credential presents is let in, so a request without it would fail here.
    authorize: async (token) => (token === TOKEN ? { appid: "deployer-app", idtyp: "app" } : false),
    // The model comes from the datastore: the loader reads the weights the test uploaded to Azurite.
    modelLoader: async (model) => {
      loaderCalls.push(`${model.name}:${model.version}`);
      const folder = await model.download();
      const weights = JSON.parse(await readFile(join(folder, "weights.json"), "utf8")) as CreditModelWeights;
      return createCreditModel(weights);
    },
    timings: {
      endpointCreateMs: 60,
      endpointUpdateMs: 40,
      deploymentMs: 120,
      deleteMs: 40,
      regenerateKeysMs: 30,
    },
  });
  ({ client, exchanges } = armClient(
    sandbox,
    staticCredential(() => TOKEN),
  ));
  rg = sandbox.resourceGroup;
  ws = sandbox.workspace;
}, 30_000);

afterEach(() => {
  // Whatever a test did, everything that crossed the wire follows the spec.
  const report = checkAgainstSpec(exchanges);
  expect(report.violations).toEqual([]);
  expect(sandbox.specViolations).toEqual([]);
  sandbox.faults.clear();
});

afterAll(async () => {
  await sandbox?.close();
  await azurite?.close();
  untrust();
});

function operationsSince(start: number): string[] {
  return checkAgainstSpec(exchanges.slice(start)).operations;
}

async function expectRestError(
  promise: Promise<unknown>,
): Promise<{ statusCode: number; code: string; message: string }> {
  try {
    await promise;
  } catch (error) {
    if (!isRestError(error)) throw error;
    return { statusCode: error.statusCode ?? 0, code: error.code ?? "", message: error.message };
  }
  throw new Error("expected the call to fail");
}

function deploymentBody(modelVersion: string): OnlineDeployment {
  return {
    location: sandbox.location,
    sku: { name: "Default", capacity: 1 },
    properties: {
      endpointComputeType: "Managed",
      model: sandbox.modelVersionId("credit", modelVersion),
      instanceType: "Standard_DS3_v2",
      scaleSettings: { scaleType: "Default" },
      requestSettings: { requestTimeout: "PT5S", maxConcurrentRequestsPerInstance: 1 },
    },
  };
}

async function score(
  headers: Record<string, string>,
): Promise<{ status: number; deployment: string | null; body: unknown }> {
  const endpoint = await client.onlineEndpoints.get(rg, ws, ENDPOINT);
  const response = await fetch(endpoint.properties.scoringUri ?? "", {
    method: "POST",
    headers: { "content-type": "application/json", ...headers },
    body: JSON.stringify({ data: [SAMPLE_CREDIT_ROW] }),
  });
  return {
    status: response.status,
    deployment: response.headers.get("azureml-model-deployment"),
    body: await response.json(),
  };
}

async function expected(weights: CreditModelWeights): Promise<Prediction[]> {
  return createCreditModel(weights).score({ data: [SAMPLE_CREDIT_ROW] });
}

describe("the workspace's default datastore and model registry", () => {
  it("gives the datastore as Azure does, its key through listSecrets, and the blobs land in Azurite", async () => {
    const start = exchanges.length;
    const datastore = await client.datastores.get(rg, ws, "workspaceblobstore");
    expect(datastore.properties).toMatchObject({
      datastoreType: "AzureBlob",
      isDefault: true,
      accountName: "devstoreaccount1",
      endpoint: "core.windows.net",
      protocol: "https",
      credentials: { credentialsType: "AccountKey" },
    });
    expect(datastore.systemData?.createdAt).toBeInstanceOf(Date);
    const secrets = await client.datastores.listSecrets(rg, ws, "workspaceblobstore");
    expect(secrets.secretsType).toBe("AccountKey");
    const key = (secrets as { key?: string }).key ?? "";
    expect(key.length).toBeGreaterThan(40);

    // What production code does with those: a BlobServiceClient on the account, with the URL from configuration.
    const containerName = (datastore.properties as { containerName?: string }).containerName ?? "";
    const accountName = (datastore.properties as { accountName?: string }).accountName ?? "";
    const blobs = new BlobServiceClient(
      sandbox.blobServiceUrl ?? "",
      new StorageSharedKeyCredential(accountName, key),
    );
    const container = blobs.getContainerClient(containerName);
    for (const [version, weights] of [
      ["1", V1],
      ["2", V2],
    ] as const) {
      const text = JSON.stringify(weights);
      await container
        .getBlockBlobClient(`models/credit/${version}/weights.json`)
        .upload(text, Buffer.byteLength(text));
    }
    const listed: string[] = [];
    for await (const blob of container.listBlobsFlat({ prefix: "models/credit/" })) listed.push(blob.name);
    expect(listed).toEqual(["models/credit/1/weights.json", "models/credit/2/weights.json"]);
    expect(operationsSince(start)).toEqual(["Datastores_Get", "Datastores_ListSecrets"]);
  });

  it("answers the workspace and lists the default datastore as the SDK asks for it", async () => {
    const workspace = await client.workspaces.get(rg, ws);
    expect(workspace.name).toBe(ws);
    expect(workspace.location).toBe(sandbox.location);
    expect(workspace.id).toBe(sandbox.workspaceId);
    const defaults = [];
    for await (const d of client.datastores.list(rg, ws, { isDefault: true })) defaults.push(d.name);
    expect(defaults).toEqual(["workspaceblobstore"]);
    const others = [];
    for await (const d of client.datastores.list(rg, ws, { isDefault: false })) others.push(d.name);
    expect(others).toEqual([]);
  });

  it("registers model versions that point into the datastore, and lists them", async () => {
    const start = exchanges.length;
    for (const version of ["1", "2"]) {
      const created = await client.modelVersions.createOrUpdate(rg, ws, "credit", version, {
        properties: {
          modelUri: `azureml://subscriptions/${sandbox.subscriptionId}/resourcegroups/${rg}/workspaces/${ws}/datastores/workspaceblobstore/paths/models/credit/${version}/`,
          modelType: "custom_model",
          description: `credit model v${version}`,
          tags: { source: "test" },
        },
      });
      expect(created.id).toBe(sandbox.modelVersionId("credit", version));
      expect(created.systemData?.createdBy).toBe("deployer-app");
      expect(created.systemData?.createdByType).toBe("Application");
    }
    const fetched = await client.modelVersions.get(rg, ws, "credit", "2");
    expect(fetched.properties.modelUri).toContain("/paths/models/credit/2/");
    expect(fetched.properties.tags).toEqual({ source: "test" });
    const versions: string[] = [];
    for await (const v of client.modelVersions.list(rg, ws, "credit")) versions.push(v.name ?? "");
    expect(versions.sort()).toEqual(["1", "2"]);
    const container = await client.modelContainers.get(rg, ws, "credit");
    expect(container.properties.latestVersion).toBe("2");
    expect(container.properties.nextVersion).toBe("3");

    // The container takes a description of its own, and lists with its latest version.
    const described = await client.modelContainers.createOrUpdate(rg, ws, "credit", {
      properties: { description: "credit approval classifier", tags: { owner: "risk" } },
    });
    expect(described.properties.description).toBe("credit approval classifier");
    expect(described.properties.latestVersion).toBe("2");
    const containers = [];
    for await (const c of client.modelContainers.list(rg, ws)) containers.push(c.name);
    expect(containers).toEqual(["credit"]);

    // A version is immutable: a different artefact under an existing version is refused.
    const refused = await expectRestError(
      client.modelVersions.createOrUpdate(rg, ws, "credit", "1", {
        properties: {
          modelUri: `azureml://datastores/workspaceblobstore/paths/models/credit/2/`,
        },
      }),
    );
    expect(refused.statusCode).toBe(409);
    expect(operationsSince(start)).toEqual([
      "ModelVersions_CreateOrUpdate",
      "ModelVersions_CreateOrUpdate",
      "ModelVersions_Get",
      "ModelVersions_List",
      "ModelContainers_Get",
      "ModelContainers_CreateOrUpdate",
      "ModelContainers_List",
      "ModelVersions_CreateOrUpdate",
    ]);
  });
});

describe("online endpoints and deployments", () => {
  it("creates an endpoint as a long-running operation polled through Azure-AsyncOperation", async () => {
    const start = exchanges.length;
    const endpoint = await client.onlineEndpoints.beginCreateOrUpdateAndWait(
      rg,
      ws,
      ENDPOINT,
      {
        location: sandbox.location,
        tags: { team: "risk" },
        properties: { authMode: "Key", description: "credit" },
      },
      POLL,
    );
    expect(endpoint.properties.provisioningState).toBe("Succeeded");
    expect(endpoint.properties.authMode).toBe("Key");
    expect(endpoint.properties.traffic).toEqual({});
    expect(endpoint.properties.scoringUri).toMatch(/^https:\/\/127\.0\.0\.1:\d+\/endpoints\/credit\/score$/);
    expect(endpoint.systemData?.lastModifiedAt).toBeInstanceOf(Date);
    expect(endpoint.tags).toEqual({ team: "risk" });

    const mine = exchanges.slice(start);
    expect(mine[0]?.status).toBe(201);
    expect(mine[0]?.headers["azure-asyncoperation"]).toContain("/mfeOperationsStatus/");
    const polls = mine.filter((e) => pathOf(e).includes("/mfeOperationsStatus/"));
    expect(polls.length).toBeGreaterThan(0);
    // The Location URL of the same operation ends with the resource, for clients that poll that instead.
    const location = mine[0]?.headers.location ?? "";
    expect(location).toContain("/mfeOperationResults/");
    const result = await fetch(location, { headers: { authorization: `Bearer ${TOKEN}` } });
    expect(result.status).toBe(200);
    expect(
      ((await result.json()) as { properties: { provisioningState: string } }).properties.provisioningState,
    ).toBe("Succeeded");
    // core-lro's final GET on the original URI after the operation succeeded.
    expect(mine.at(-1)?.method).toBe("GET");
    expect(operationsSince(start)).toEqual(["OnlineEndpoints_CreateOrUpdate", "OnlineEndpoints_Get"]);

    const listed = [];
    for await (const e of client.onlineEndpoints.list(rg, ws)) listed.push(e.name);
    expect(listed).toEqual([ENDPOINT]);
  });

  it("creates blue at 0% traffic, running the model version it names", async () => {
    const start = exchanges.length;
    const blue = await client.onlineDeployments.beginCreateOrUpdateAndWait(
      rg,
      ws,
      ENDPOINT,
      "blue",
      deploymentBody("1"),
      POLL,
    );
    expect(blue.properties.provisioningState).toBe("Succeeded");
    expect(blue.properties.endpointComputeType).toBe("Managed");
    expect(blue.sku?.capacity).toBe(1);
    expect(blue.systemData?.createdBy).toBe("deployer-app");
    expect(loaderCalls).toContain("credit:1");
    const endpoint = await client.onlineEndpoints.get(rg, ws, ENDPOINT);
    expect(endpoint.properties.traffic).toEqual({});
    // While it ran, a GET showed it Creating: provisioningState moves from Creating to Succeeded.
    const creating = exchanges.slice(start).find((e) => e.status === 201);
    expect(JSON.parse(creating?.responseBody ?? "{}").properties.provisioningState).toBe("Creating");
    expect(operationsSince(start)).toContain("OnlineDeployments_CreateOrUpdate");
  });

  it("moves traffic with GET, full PUT and re-GET, and the scoring URI follows the map", async () => {
    const start = exchanges.length;
    const before = await client.onlineEndpoints.get(rg, ws, ENDPOINT);
    await client.onlineEndpoints.beginCreateOrUpdateAndWait(
      rg,
      ws,
      ENDPOINT,
      { ...before, properties: { ...before.properties, traffic: { blue: 100 } } },
      POLL,
    );
    const after = await client.onlineEndpoints.get(rg, ws, ENDPOINT);
    expect(after.properties.traffic).toEqual({ blue: 100 });
    expect(after.tags).toEqual({ team: "risk" });
    expect(sandbox.scoringServer(ENDPOINT)?.traffic).toEqual({ blue: 100 });

    const { primaryKey } = await client.onlineEndpoints.listKeys(rg, ws, ENDPOINT);
    const scored = await score({ authorization: `Bearer ${primaryKey}` });
    expect(scored).toEqual({ status: 200, deployment: "blue", body: await expected(V1) });
    expect(operationsSince(start)).toEqual([
      "OnlineEndpoints_Get",
      "OnlineEndpoints_CreateOrUpdate",
      "OnlineEndpoints_Get",
      "OnlineEndpoints_Get",
      "OnlineEndpoints_ListKeys",
      "OnlineEndpoints_Get",
    ]);
  });

  it("refuses traffic maps Azure refuses: unknown deployments and sums other than 0 or 100", async () => {
    const current = await client.onlineEndpoints.get(rg, ws, ENDPOINT);
    const unknown = await expectRestError(
      client.onlineEndpoints.beginCreateOrUpdate(rg, ws, ENDPOINT, {
        ...current,
        properties: { ...current.properties, traffic: { blue: 50, nobody: 50 } },
      }),
    );
    expect(unknown).toMatchObject({ statusCode: 400, code: "UserError" });
    expect(unknown.message).toContain("nobody");
    const badSum = await expectRestError(
      client.onlineEndpoints.beginCreateOrUpdate(rg, ws, ENDPOINT, {
        ...current,
        properties: { ...current.properties, traffic: { blue: 60 } },
      }),
    );
    expect(badSum.statusCode).toBe(400);
    expect(badSum.message).toContain("sum to 0 or 100");
    expect(sandbox.onlineEndpoint(ENDPOINT)?.traffic).toEqual({ blue: 100 });
  });

  it("creates green beside blue; a call pinned with azureml-model-deployment reaches green and its model", async () => {
    await client.onlineDeployments.beginCreateOrUpdateAndWait(
      rg,
      ws,
      ENDPOINT,
      "green",
      deploymentBody("2"),
      POLL,
    );
    const deployments = [];
    for await (const d of client.onlineDeployments.list(rg, ws, ENDPOINT)) deployments.push(d.name);
    expect(deployments.sort()).toEqual(["blue", "green"]);

    const { primaryKey } = await client.onlineEndpoints.listKeys(rg, ws, ENDPOINT);
    const pinned = await score({
      authorization: `Bearer ${primaryKey}`,
      "azureml-model-deployment": "green",
    });
    expect(pinned).toEqual({ status: 200, deployment: "green", body: await expected(V2) });
    // Green has 0% and the map still sends unpinned calls to blue.
    const unpinned = await score({ authorization: `Bearer ${primaryKey}` });
    expect(unpinned.deployment).toBe("blue");
    expect((await expected(V1))[0]?.probability).not.toBe((await expected(V2))[0]?.probability);
  });

  it("a deployment that fails to provision surfaces as the SDK's error; get shows Failed and getLogs the why", async () => {
    sandbox.faults.failProvisioning("red", {
      logLines: ["Traceback (most recent call last):", "ModuleNotFoundError: No module named 'sklearn'"],
    });
    const failure = client.onlineDeployments.beginCreateOrUpdateAndWait(
      rg,
      ws,
      ENDPOINT,
      "red",
      deploymentBody("2"),
      POLL,
    );
    await expect(failure).rejects.toThrow(/long-running operation has failed.*ResourceNotReady/i);

    const red = await client.onlineDeployments.get(rg, ws, ENDPOINT, "red");
    expect(red.properties.provisioningState).toBe("Failed");
    const logs = await client.onlineDeployments.getLogs(rg, ws, ENDPOINT, "red", {
      containerType: "InferenceServer",
      tail: 2,
    });
    expect(logs.content?.split("\n")).toHaveLength(2);
    expect(logs.content).toContain("ModuleNotFoundError: No module named 'sklearn'");
    const storage = await client.onlineDeployments.getLogs(rg, ws, ENDPOINT, "red", {
      containerType: "StorageInitializer",
    });
    expect(storage.content).toContain("Provisioning new deployment red");
    // The endpoint's traffic is untouched, and a failed deployment cannot take traffic.
    expect((await client.onlineEndpoints.get(rg, ws, ENDPOINT)).properties.traffic).toEqual({ blue: 100 });
    const current = await client.onlineEndpoints.get(rg, ws, ENDPOINT);
    const refused = await expectRestError(
      client.onlineEndpoints.beginCreateOrUpdate(rg, ws, ENDPOINT, {
        ...current,
        properties: { ...current.properties, traffic: { blue: 50, red: 50 } },
      }),
    );
    expect(refused.message).toContain("red is Failed");
    await client.onlineDeployments.beginDeleteAndWait(rg, ws, ENDPOINT, "red", POLL);
  });

  it("allows one operation at a time per endpoint: a second mutation while one runs gets 409", async () => {
    sandbox.faults.slowProvisioning("yellow", 300);
    const poller = await client.onlineDeployments.beginCreateOrUpdate(
      rg,
      ws,
      ENDPOINT,
      "yellow",
      deploymentBody("1"),
      POLL,
    );
    const current = await client.onlineEndpoints.get(rg, ws, ENDPOINT);
    const conflict = await expectRestError(
      client.onlineEndpoints.beginCreateOrUpdate(rg, ws, ENDPOINT, current, POLL),
    );
    expect(conflict.statusCode).toBe(409);
    expect(conflict.code).toBe("Conflict");
    expect(conflict.message).toContain("another operation on same entity is already running");
    expect(conflict.message).toContain("creation of deployment yellow");
    const yellow = await poller.pollUntilDone();
    expect(yellow.properties.provisioningState).toBe("Succeeded");
    await client.onlineDeployments.beginDeleteAndWait(rg, ws, ENDPOINT, "yellow", POLL);
  });

  it("a 409 storm: the next N mutations are refused, then the same request succeeds", async () => {
    sandbox.faults.conflicts(3, { method: "PUT", pathIncludes: "/onlineEndpoints/credit" });
    const current = await client.onlineEndpoints.get(rg, ws, ENDPOINT);
    const body = { ...current, tags: { ...current.tags, attempt: "storm" } };
    const statuses: number[] = [];
    for (let attempt = 0; attempt < 10; attempt++) {
      try {
        await client.onlineEndpoints.beginCreateOrUpdateAndWait(rg, ws, ENDPOINT, body, POLL);
        statuses.push(200);
        break;
      } catch (error) {
        if (!isRestError(error) || error.statusCode !== 409) throw error;
        statuses.push(409);
      }
    }
    expect(statuses).toEqual([409, 409, 409, 200]);
    expect((await client.onlineEndpoints.get(rg, ws, ENDPOINT)).tags).toMatchObject({ attempt: "storm" });
  });

  it("a 429 carries Retry-After, and the SDK's pipeline waits it out before retrying", async () => {
    sandbox.faults.throttle(1, 1, { method: "GET", pathIncludes: "/onlineEndpoints/credit" });
    const start = exchanges.length;
    const began = Date.now();
    const endpoint = await client.onlineEndpoints.get(rg, ws, ENDPOINT);
    expect(endpoint.properties.provisioningState).toBe("Succeeded");
    const mine = exchanges.slice(start);
    expect(mine.map((e) => e.status)).toEqual([429, 200]);
    expect(mine[0]?.headers["retry-after"]).toBe("1");
    expect(JSON.parse(mine[0]?.responseBody ?? "{}").error.code).toBe("TooManyRequests");
    expect((mine[1]?.time ?? 0) - (mine[0]?.time ?? 0)).toBeGreaterThanOrEqual(950);
    expect(Date.now() - began).toBeLessThan(5000);
  });

  it("read-after-write lag: right after a traffic PUT completes, GET still shows the old map for a while", async () => {
    sandbox.faults.readAfterWriteLag(400);
    const before = await client.onlineEndpoints.get(rg, ws, ENDPOINT);
    const done = await client.onlineEndpoints.beginCreateOrUpdateAndWait(
      rg,
      ws,
      ENDPOINT,
      { ...before, properties: { ...before.properties, traffic: { blue: 90, green: 10 } } },
      POLL,
    );
    // core-lro's own final GET is one of the stale reads.
    expect(done.properties.traffic).toEqual({ blue: 100 });
    expect((await client.onlineEndpoints.get(rg, ws, ENDPOINT)).properties.traffic).toEqual({ blue: 100 });
    // The sandbox (and the scoring URI) already run the new map.
    expect(sandbox.onlineEndpoint(ENDPOINT)?.traffic).toEqual({ blue: 90, green: 10 });
    const deadline = Date.now() + 3000;
    let seen: Record<string, number> | undefined;
    while (Date.now() < deadline) {
      seen = (await client.onlineEndpoints.get(rg, ws, ENDPOINT)).properties.traffic;
      if (seen?.green === 10) break;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    expect(seen).toEqual({ blue: 90, green: 10 });
  });

  it("lists and regenerates keys (a long-running operation via Location); the scoring URI follows", async () => {
    const start = exchanges.length;
    const before = await client.onlineEndpoints.listKeys(rg, ws, ENDPOINT);
    expect(before.primaryKey).toBeTruthy();
    expect(before.secondaryKey).toBeTruthy();
    await client.onlineEndpoints.beginRegenerateKeysAndWait(rg, ws, ENDPOINT, { keyType: "Primary" }, POLL);
    const after = await client.onlineEndpoints.listKeys(rg, ws, ENDPOINT);
    expect(after.primaryKey).not.toBe(before.primaryKey);
    expect(after.secondaryKey).toBe(before.secondaryKey);
    const regenerate = exchanges.slice(start).find((e) => pathOf(e).endsWith("/regenerateKeys"));
    expect(regenerate?.status).toBe(202);
    expect(regenerate?.headers.location).toContain("/mfeOperationResults/");

    expect((await score({ authorization: `Bearer ${before.primaryKey}` })).status).toBe(401);
    expect((await score({ authorization: `Bearer ${after.primaryKey}` })).status).toBe(200);
    expect((await score({ authorization: `Bearer ${after.secondaryKey}` })).status).toBe(200);

    // A chosen value, as a rotation that pre-stages the next key does.
    await client.onlineEndpoints.beginRegenerateKeysAndWait(
      rg,
      ws,
      ENDPOINT,
      { keyType: "Secondary", keyValue: "next-secondary-key-0123456789abcdef" },
      POLL,
    );
    expect((await client.onlineEndpoints.listKeys(rg, ws, ENDPOINT)).secondaryKey).toBe(
      "next-secondary-key-0123456789abcdef",
    );
    expect(operationsSince(start)).toContain("OnlineEndpoints_RegenerateKeys");
  });

  it("refuses to delete a deployment that has traffic; after traffic moves away the delete goes through", async () => {
    const refused = await expectRestError(
      client.onlineDeployments.beginDeleteAndWait(rg, ws, ENDPOINT, "blue", POLL),
    );
    expect(refused.statusCode).toBe(400);
    expect(refused.message).toContain("blue cannot be deleted");
    expect(refused.message).toContain("Set its traffic to 0 first");

    const current = await client.onlineEndpoints.get(rg, ws, ENDPOINT);
    await client.onlineEndpoints.beginCreateOrUpdateAndWait(
      rg,
      ws,
      ENDPOINT,
      { ...current, properties: { ...current.properties, traffic: { green: 100 } } },
      POLL,
    );
    const start = exchanges.length;
    await client.onlineDeployments.beginDeleteAndWait(rg, ws, ENDPOINT, "blue", POLL);
    const deleted = exchanges.slice(start);
    expect(deleted[0]?.status).toBe(202);
    expect(deleted[0]?.headers.location).toContain("/mfeOperationResults/");
    const missing = await expectRestError(client.onlineDeployments.get(rg, ws, ENDPOINT, "blue"));
    expect(missing).toMatchObject({ statusCode: 404, code: "ResourceNotFound" });
    expect(Object.keys(sandbox.onlineEndpoint(ENDPOINT)?.deployments ?? {})).toEqual(["green"]);
    expect(sandbox.scoringServer(ENDPOINT)?.traffic).toEqual({ green: 100 });
  });

  it("PATCH changes tags only, through a Location poll that ends with the resource", async () => {
    const updated = await client.onlineEndpoints.beginUpdateAndWait(
      rg,
      ws,
      ENDPOINT,
      { tags: { team: "credit-risk" } },
      POLL,
    );
    expect(updated.tags).toEqual({ team: "credit-risk" });
    expect(updated.properties.traffic).toEqual({ green: 100 });
    const scaled = await client.onlineDeployments.beginUpdateAndWait(
      rg,
      ws,
      ENDPOINT,
      "green",
      { sku: { capacity: 3 } },
      POLL,
    );
    expect(scaled.sku?.capacity).toBe(3);
    expect(scaled.properties.provisioningState).toBe("Succeeded");
  });

  it("an AMLToken endpoint gives tokens with epoch-second expiry and refresh times; a Key endpoint refuses", async () => {
    await client.onlineEndpoints.beginCreateOrUpdateAndWait(
      rg,
      ws,
      "tokened",
      { location: sandbox.location, properties: { authMode: "AMLToken" } },
      POLL,
    );
    const token = await client.onlineEndpoints.getToken(rg, ws, "tokened");
    const now = Date.now() / 1000;
    expect(token.accessToken).toBeTruthy();
    expect(token.tokenType).toBe("Bearer");
    expect(token.expiryTimeUtc).toBeGreaterThan(now + 3000);
    expect(token.refreshAfterTimeUtc).toBeGreaterThan(now);
    expect(token.refreshAfterTimeUtc).toBeLessThan(token.expiryTimeUtc ?? 0);
    const keyed = await expectRestError(client.onlineEndpoints.getToken(rg, ws, ENDPOINT));
    expect(keyed.statusCode).toBe(400);

    // The token scores, and keeps scoring after the deployment set changes (it is the endpoint's, not a pod's).
    const noModel: OnlineDeployment = {
      location: sandbox.location,
      properties: { endpointComputeType: "Managed" },
    };
    await client.onlineDeployments.beginCreateOrUpdateAndWait(rg, ws, "tokened", "alpha", noModel, POLL);
    const scoringUri = (await client.onlineEndpoints.get(rg, ws, "tokened")).properties.scoringUri ?? "";
    const call = (deployment: string, bearer: string) =>
      fetch(scoringUri, {
        method: "POST",
        headers: { authorization: `Bearer ${bearer}`, "azureml-model-deployment": deployment },
        body: JSON.stringify({ data: [SAMPLE_CREDIT_ROW] }),
      }).then((r) => r.status);
    expect(await call("alpha", token.accessToken ?? "")).toBe(200);
    await client.onlineDeployments.beginCreateOrUpdateAndWait(rg, ws, "tokened", "beta", noModel, POLL);
    expect(await call("beta", token.accessToken ?? "")).toBe(200);
    expect(await call("beta", "made-up-token")).toBe(401);
    await client.onlineEndpoints.beginDeleteAndWait(rg, ws, "tokened", POLL);
    expect(sandbox.onlineEndpoint("tokened")).toBeUndefined();
  });

  it("answers 401 as ARM does to a missing or refused bearer token", async () => {
    const { client: stranger } = armClient(
      sandbox,
      staticCredential(() => "not-the-token"),
    );
    const refused = await expectRestError(stranger.onlineEndpoints.get(rg, ws, ENDPOINT));
    expect(refused).toMatchObject({ statusCode: 401, code: "InvalidAuthenticationToken" });
    const anonymous = await fetch(
      `${sandbox.endpoint}${sandbox.workspaceId}/onlineEndpoints?api-version=2022-10-01`,
    );
    expect(anonymous.status).toBe(401);
    expect(anonymous.headers.get("www-authenticate")).toMatch(/^Bearer authorization_uri=/);
    expect(await anonymous.json()).toMatchObject({ error: { code: "AuthenticationFailed" } });
  });
});

describe("coverage", () => {
  it("every operation the sandbox implements was exercised in this file, and every exchange followed the spec", () => {
    const report = checkAgainstSpec(exchanges);
    expect(report.violations).toEqual([]);
    expect([...new Set(report.operations)].sort()).toEqual(
      [
        "Datastores_Get",
        "Datastores_List",
        "Datastores_ListSecrets",
        "ModelContainers_CreateOrUpdate",
        "ModelContainers_Get",
        "ModelContainers_List",
        "ModelVersions_CreateOrUpdate",
        "ModelVersions_Get",
        "ModelVersions_List",
        "OnlineDeployments_CreateOrUpdate",
        "OnlineDeployments_Delete",
        "OnlineDeployments_Get",
        "OnlineDeployments_GetLogs",
        "OnlineDeployments_List",
        "OnlineDeployments_Update",
        "OnlineEndpoints_CreateOrUpdate",
        "OnlineEndpoints_Delete",
        "OnlineEndpoints_Get",
        "OnlineEndpoints_GetToken",
        "OnlineEndpoints_List",
        "OnlineEndpoints_ListKeys",
        "OnlineEndpoints_RegenerateKeys",
        "OnlineEndpoints_Update",
      ].sort(),
    );
  });
});
