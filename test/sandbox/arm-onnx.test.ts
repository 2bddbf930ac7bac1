// The whole data path of a model version, as deploy-model will drive it: the model folder uploaded to the
// workspace's default datastore (Azurite) with the key from listSecrets, registered as a version whose modelUri
// points there, deployed, and served by ONNX Runtime from exactly the bytes the datastore holds. The ARM sandbox's
// model loader is the ONNX engineer's loadOnnxModel on the folder download() fetched from Azurite.
import { readdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import type { AzureMachineLearningWorkspaces } from "@azure/arm-machinelearning";
import { BlobServiceClient, StorageSharedKeyCredential } from "@azure/storage-blob";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type ArmSandbox, type Azurite, startArmSandbox, startAzurite } from "../../src/sandbox/arm/index.ts";
import { creditSampleRows } from "../../src/sandbox/models/sample-rows.ts";
import { loadOnnxModel, releaseOnnxModels, SANDBOX_MODELS_ROOT } from "../../src/sandbox/onnx-model.ts";
import { createSandboxCa, trustInProcess } from "../../src/sandbox/tls.ts";
import { armClient, checkAgainstSpec, type Exchange, staticCredential } from "./arm-helpers.ts";

const POLL = { updateIntervalInMs: 20 };

let untrust: () => void = () => undefined;
let azurite: Azurite;
let sandbox: ArmSandbox;
let client: AzureMachineLearningWorkspaces;
let exchanges: Exchange[];
const downloaded: string[] = [];

beforeAll(async () => {
  const ca = await createSandboxCa();
  untrust = trustInProcess(ca.caPem);
  azurite = await startAzurite();
  sandbox = await startArmSandbox({
    tls: await ca.issueServerCertificate(),
    azurite,
    authorize: async () => true,
    modelLoader: async (model) => {
      const folder = await model.download();
      downloaded.push(folder);
      return loadOnnxModel(folder);
    },
    timings: { endpointCreateMs: 30, endpointUpdateMs: 30, deploymentMs: 50, deleteMs: 30 },
  });
  ({ client, exchanges } = armClient(
    sandbox,
    staticCredential(() => "deployer"),
  ));
}, 30_000);

afterAll(async () => {
  await sandbox?.close();
  await azurite?.close();
  await releaseOnnxModels();
  untrust();
});

/** What deploy-model does with a model folder: datastore → key → upload → register. */
async function uploadAndRegister(version: string): Promise<string> {
  const rg = sandbox.resourceGroup;
  const ws = sandbox.workspace;
  const datastore = await client.datastores.get(rg, ws, "workspaceblobstore");
  const { accountName, containerName } = datastore.properties as {
    accountName?: string;
    containerName?: string;
  };
  const secrets = (await client.datastores.listSecrets(rg, ws, "workspaceblobstore")) as { key?: string };
  const service = new BlobServiceClient(
    sandbox.blobServiceUrl ?? "",
    new StorageSharedKeyCredential(accountName ?? "", secrets.key ?? ""),
  );
  const container = service.getContainerClient(containerName ?? "");
  const folder = join(SANDBOX_MODELS_ROOT, "credit", version);
  for (const file of await readdir(folder)) {
    const bytes = await readFile(join(folder, file));
    await container.getBlockBlobClient(`LocalUpload/credit/${version}/${file}`).uploadData(bytes);
  }
  const registered = await client.modelVersions.createOrUpdate(rg, ws, "credit", version, {
    properties: {
      modelUri: `azureml://subscriptions/${sandbox.subscriptionId}/resourcegroups/${rg}/workspaces/${ws}/datastores/workspaceblobstore/paths/LocalUpload/credit/${version}/`,
      modelType: "custom_model",
    },
  });
  return registered.id ?? "";
}

describe("a model folder from the datastore, served by ONNX Runtime", () => {
  it("deploys v1 and v2 from Azurite; a call pinned to green answers with v2's own predictions", async () => {
    const rg = sandbox.resourceGroup;
    const ws = sandbox.workspace;
    const v1 = await uploadAndRegister("1");
    const v2 = await uploadAndRegister("2");
    await client.onlineEndpoints.beginCreateOrUpdateAndWait(
      rg,
      ws,
      "credit",
      { location: sandbox.location, properties: { authMode: "Key" } },
      POLL,
    );
    for (const [name, model] of [
      ["blue", v1],
      ["green", v2],
    ] as const) {
      const deployed = await client.onlineDeployments.beginCreateOrUpdateAndWait(
        rg,
        ws,
        "credit",
        name,
        {
          location: sandbox.location,
          sku: { name: "Default", capacity: 1 },
          properties: { endpointComputeType: "Managed", model },
        },
        POLL,
      );
      expect(deployed.properties.provisioningState).toBe("Succeeded");
    }
    // The loader got the datastore's copy, not the repository's folder.
    expect(downloaded).toHaveLength(2);
    expect(downloaded.every((folder) => !folder.startsWith(SANDBOX_MODELS_ROOT))).toBe(true);
    expect((await readdir(downloaded[1] ?? "")).sort()).toEqual(["aml-edge-model.json", "model.onnx"]);

    const rows = creditSampleRows(5);
    const { primaryKey } = await client.onlineEndpoints.listKeys(rg, ws, "credit");
    const scoringUri = (await client.onlineEndpoints.get(rg, ws, "credit")).properties.scoringUri ?? "";
    const pinned = await fetch(scoringUri, {
      method: "POST",
      headers: {
        authorization: `Bearer ${primaryKey}`,
        "azureml-model-deployment": "green",
        "content-type": "application/json",
      },
      body: JSON.stringify({ data: rows }),
    });
    expect(pinned.status).toBe(200);
    expect(pinned.headers.get("azureml-model-deployment")).toBe("green");
    const local2 = await loadOnnxModel(join(SANDBOX_MODELS_ROOT, "credit", "2"));
    const local1 = await loadOnnxModel(join(SANDBOX_MODELS_ROOT, "credit", "1"));
    const answer = await pinned.json();
    expect(answer).toEqual(await local2.score({ data: rows }));
    expect(answer).not.toEqual(await local1.score({ data: rows }));
    expect(checkAgainstSpec(exchanges).violations).toEqual([]);
  });

  it("v3 provisions (its graph loads) but fails on rows its lookup table cannot index: 424, as Azure ML answers", async () => {
    const rg = sandbox.resourceGroup;
    const ws = sandbox.workspace;
    const v3 = await uploadAndRegister("3");
    const red = await client.onlineDeployments.beginCreateOrUpdateAndWait(
      rg,
      ws,
      "credit",
      "red",
      { location: sandbox.location, properties: { endpointComputeType: "Managed", model: v3 } },
      POLL,
    );
    expect(red.properties.provisioningState).toBe("Succeeded");
    const { primaryKey } = await client.onlineEndpoints.listKeys(rg, ws, "credit");
    const scoringUri = (await client.onlineEndpoints.get(rg, ws, "credit")).properties.scoringUri ?? "";
    const call = (row: number[]) =>
      fetch(scoringUri, {
        method: "POST",
        headers: { authorization: `Bearer ${primaryKey}`, "azureml-model-deployment": "red" },
        body: JSON.stringify({ data: [row] }),
      });
    expect((await call([85, 0.25, 9, 0, 20, 6])).status).toBe(200);
    const failed = await call([85, 0.25, 9, 5, 20, 6]);
    expect(failed.status).toBe(424);
    expect(failed.headers.get("ms-azureml-model-error-statuscode")).toBe("500");
    expect(checkAgainstSpec(exchanges).violations).toEqual([]);
  });
});
