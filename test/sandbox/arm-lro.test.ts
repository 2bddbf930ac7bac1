// The ARM sandbox with the real Entra stand-in as its authorizer, the edges of provisioning (a model that will not
// load, a modelUri with nothing behind it, an unknown model), Retry-After on operation polls, and the sandbox's own
// check of its responses against the REST spec. Driven through the official clients; raw fetch only where a test
// must send what the SDK never would.
import { randomUUID } from "node:crypto";
import type { AzureMachineLearningWorkspaces, OnlineDeployment } from "@azure/arm-machinelearning";
import { createHttpHeaders, createPipelineRequest, isRestError } from "@azure/core-rest-pipeline";
import { BlobServiceClient, StorageSharedKeyCredential } from "@azure/storage-blob";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  type ArmSandbox,
  type Azurite,
  createScoringHost,
  MIRRORED_HEADER,
  startArmSandbox,
  startAzurite,
} from "../../src/sandbox/arm/index.ts";
import { createCreditModel, creditWeightsFor } from "../../src/sandbox/credit-model.ts";
import { ARM_RESOURCE, type Entra, startEntra } from "../../src/sandbox/entra.ts";
import { startLoopbackServer } from "../../src/sandbox/http-server.ts";
import { createSandboxCa, type SandboxCa, trustInProcess } from "../../src/sandbox/tls.ts";
import { armClient, checkAgainstSpec, type Exchange, staticCredential } from "./arm-helpers.ts";

const POLL = { updateIntervalInMs: 20 };
const DEPLOYER = randomUUID();

let ca: SandboxCa;
let untrust: () => void = () => undefined;
let entra: Entra;
let azurite: Azurite;
let sandbox: ArmSandbox;
let client: AzureMachineLearningWorkspaces;
let exchanges: Exchange[];

beforeAll(async () => {
  ca = await createSandboxCa();
  untrust = trustInProcess(ca.caPem);
  entra = await startEntra({ ca });
  // Plain http here (the other file runs Azurite over HTTPS): the storage SDK accepts both.
  azurite = await startAzurite();
  sandbox = await startArmSandbox({
    tls: await ca.issueServerCertificate(),
    azurite,
    authorize: (token) => entra.verifyAccessToken(token, ARM_RESOURCE),
    modelLoader: async (model) => {
      if (model.name === "broken") throw new Error("onnxruntime: Load model failed: invalid protobuf");
      await model.download();
      return createCreditModel(creditWeightsFor(`${model.name}:${model.version}`));
    },
    timings: {
      endpointCreateMs: 40,
      endpointUpdateMs: 30,
      deploymentMs: 60,
      deleteMs: 30,
      regenerateKeysMs: 20,
    },
  });
  const credential = staticCredential(() =>
    entra.issueAppToken({ audience: ARM_RESOURCE, clientId: DEPLOYER }),
  );
  ({ client, exchanges } = armClient(sandbox, credential));
  await client.onlineEndpoints.beginCreateOrUpdateAndWait(
    sandbox.resourceGroup,
    sandbox.workspace,
    "edge",
    { location: sandbox.location, properties: { authMode: "Key" } },
    POLL,
  );
}, 30_000);

afterAll(async () => {
  await sandbox?.close();
  await azurite?.close();
  await entra?.close();
  untrust();
});

function deployment(model: string | undefined): OnlineDeployment {
  return {
    location: sandbox.location,
    sku: { name: "Default", capacity: 1 },
    properties: { endpointComputeType: "Managed", ...(model === undefined ? {} : { model }) },
  };
}

async function register(name: string, version: string, path: string): Promise<string> {
  const created = await client.modelVersions.createOrUpdate(
    sandbox.resourceGroup,
    sandbox.workspace,
    name,
    version,
    {
      properties: { modelUri: `azureml://datastores/workspaceblobstore/paths/${path}` },
    },
  );
  return created.id ?? "";
}

describe("authorization through Entra", () => {
  it("accepts Entra's ARM tokens and records the application in systemData", async () => {
    const endpoint = await client.onlineEndpoints.get(sandbox.resourceGroup, sandbox.workspace, "edge");
    expect(endpoint.systemData?.createdBy).toBe(DEPLOYER);
    expect(endpoint.systemData?.createdByType).toBe("Application");
  });

  it("refuses a token for another audience and an expired one, with ARM's codes", async () => {
    const { client: wrongAudience } = armClient(
      sandbox,
      staticCredential(() => entra.issueAppToken({ audience: "https://vault.azure.net" })),
    );
    const refused = await wrongAudience.onlineEndpoints
      .get(sandbox.resourceGroup, sandbox.workspace, "edge")
      .then(
        () => undefined,
        (error: unknown) => error,
      );
    expect(isRestError(refused) && refused.statusCode).toBe(401);
    expect(isRestError(refused) && refused.code).toBe("InvalidAuthenticationToken");

    const expired = await entra.issueAppToken({
      audience: ARM_RESOURCE,
      issuedAt: Math.floor(Date.now() / 1000) - 7200,
      expiresInSeconds: 3600,
    });
    const response = await fetch(
      `${sandbox.endpoint}${sandbox.workspaceId}/onlineEndpoints?api-version=2022-10-01`,
      {
        headers: { authorization: `Bearer ${expired}` },
      },
    );
    expect(response.status).toBe(401);
    const body = (await response.json()) as { error: { code: string; message: string } };
    expect(body.error.code).toBe("ExpiredAuthenticationToken");
    expect(body.error.message).not.toContain(expired);
  });

  it("requires the api-version the spec defines", async () => {
    const token = await entra.issueAppToken({ audience: ARM_RESOURCE });
    const response = await fetch(
      `${sandbox.endpoint}${sandbox.workspaceId}/onlineEndpoints?api-version=2024-04-01`,
      {
        headers: { authorization: `Bearer ${token}` },
      },
    );
    expect(response.status).toBe(400);
    expect(((await response.json()) as { error: { code: string } }).error.code).toBe(
      "NoRegisteredProviderFound",
    );
  });
});

describe("provisioning edges", () => {
  it("a model the loader cannot load fails the deployment, and the logs say why", async () => {
    // The artefact exists in the datastore; loading it is what fails.
    const blobs = new BlobServiceClient(
      azurite.blobServiceUrl,
      new StorageSharedKeyCredential(azurite.accountName, azurite.accountKey),
    );
    const datastore = await client.datastores.get(
      sandbox.resourceGroup,
      sandbox.workspace,
      "workspaceblobstore",
    );
    const container = blobs.getContainerClient(
      (datastore.properties as { containerName?: string }).containerName ?? "",
    );
    await container.getBlockBlobClient("models/broken/1/model.onnx").upload("not onnx", 8);
    const id = await register("broken", "1", "models/broken/1");

    await expect(
      client.onlineDeployments.beginCreateOrUpdateAndWait(
        sandbox.resourceGroup,
        sandbox.workspace,
        "edge",
        "bad",
        deployment(id),
        POLL,
      ),
    ).rejects.toThrow(/ResourceNotReady/);
    const logs = await client.onlineDeployments.getLogs(
      sandbox.resourceGroup,
      sandbox.workspace,
      "edge",
      "bad",
      {},
    );
    expect(logs.content).toContain("onnxruntime: Load model failed: invalid protobuf");
    await client.onlineDeployments.beginDeleteAndWait(
      sandbox.resourceGroup,
      sandbox.workspace,
      "edge",
      "bad",
      POLL,
    );
  });

  it("a modelUri with nothing behind it fails at the storage initializer", async () => {
    const id = await register("ghost", "1", "models/ghost/1/");
    await expect(
      client.onlineDeployments.beginCreateOrUpdateAndWait(
        sandbox.resourceGroup,
        sandbox.workspace,
        "edge",
        "ghost",
        deployment(id),
        POLL,
      ),
    ).rejects.toThrow(/ResourceNotReady/);
    const failed = await client.onlineDeployments.get(
      sandbox.resourceGroup,
      sandbox.workspace,
      "edge",
      "ghost",
    );
    expect(failed.properties.provisioningState).toBe("Failed");
    const logs = await client.onlineDeployments.getLogs(
      sandbox.resourceGroup,
      sandbox.workspace,
      "edge",
      "ghost",
      {
        containerType: "InferenceServer",
      },
    );
    expect(logs.content).toContain(
      "no blobs at azureml://datastores/workspaceblobstore/paths/models/ghost/1/",
    );
    await client.onlineDeployments.beginDeleteAndWait(
      sandbox.resourceGroup,
      sandbox.workspace,
      "edge",
      "ghost",
      POLL,
    );
  });

  it("refuses a deployment of a model version that is not registered, before anything starts", async () => {
    const error = await client.onlineDeployments
      .beginCreateOrUpdate(
        sandbox.resourceGroup,
        sandbox.workspace,
        "edge",
        "nomodel",
        deployment(sandbox.modelVersionId("credit", "99")),
      )
      .then(
        () => undefined,
        (e: unknown) => e,
      );
    expect(isRestError(error) && error.statusCode).toBe(400);
    expect(isRestError(error) && error.message).toContain("was not found");
    expect(sandbox.onlineEndpoint("edge")?.deployments).toEqual({});
  });

  it("holds names and locations to Azure ML's rules, which are stricter than the SDK's patterns", async () => {
    const refusal = (promise: Promise<unknown>) =>
      promise.then(
        () => "accepted",
        (e: unknown) => (isRestError(e) ? `${e.statusCode} ${e.message}` : String(e)),
      );
    const rg = sandbox.resourceGroup;
    const ws = sandbox.workspace;
    expect(
      await refusal(
        client.onlineDeployments.beginCreateOrUpdate(rg, ws, "edge", "v2_model", deployment(undefined)),
      ),
    ).toMatch(/^400 v2_model is not a valid deployment name/);
    expect(
      await refusal(
        client.onlineEndpoints.beginCreateOrUpdate(rg, ws, "9lives", {
          location: sandbox.location,
          properties: { authMode: "Key" },
        }),
      ),
    ).toMatch(/^400 9lives is not a valid endpoint name/);
    expect(
      await refusal(
        client.onlineEndpoints.beginCreateOrUpdate(rg, ws, "elsewhere", {
          location: "eastus",
          properties: { authMode: "Key" },
        }),
      ),
    ).toContain("must be in its workspace's location");
    expect(
      await refusal(
        client.onlineDeployments.beginCreateOrUpdate(rg, ws, "edge", "far", {
          ...deployment(undefined),
          location: "eastus",
        }),
      ),
    ).toContain("must be in its endpoint's location");
  });

  it("deleting an endpoint takes its deployments and its scoring URI with it", async () => {
    await client.onlineEndpoints.beginCreateOrUpdateAndWait(
      sandbox.resourceGroup,
      sandbox.workspace,
      "short-lived",
      { location: sandbox.location, properties: { authMode: "Key" } },
      POLL,
    );
    const live = await client.onlineDeployments.beginCreateOrUpdateAndWait(
      sandbox.resourceGroup,
      sandbox.workspace,
      "short-lived",
      "only",
      deployment(undefined),
      POLL,
    );
    expect(live.properties.provisioningState).toBe("Succeeded");
    const endpoint = await client.onlineEndpoints.get(
      sandbox.resourceGroup,
      sandbox.workspace,
      "short-lived",
    );
    const current = await client.onlineEndpoints.beginCreateOrUpdateAndWait(
      sandbox.resourceGroup,
      sandbox.workspace,
      "short-lived",
      { ...endpoint, properties: { ...endpoint.properties, traffic: { only: 100 } } },
      POLL,
    );
    expect(current.properties.traffic).toEqual({ only: 100 });
    // Deleting the endpoint is allowed with traffic; only a deployment delete is refused.
    const deleting = await client.onlineEndpoints.beginDelete(
      sandbox.resourceGroup,
      sandbox.workspace,
      "short-lived",
      POLL,
    );
    // Until the operation ends the endpoint is still there, Deleting, and takes no other change.
    const during = await client.onlineEndpoints.get(sandbox.resourceGroup, sandbox.workspace, "short-lived");
    expect(during.properties.provisioningState).toBe("Deleting");
    const blocked = await client.onlineDeployments
      .beginDelete(sandbox.resourceGroup, sandbox.workspace, "short-lived", "only")
      .then(
        () => undefined,
        (e: unknown) => e,
      );
    expect(isRestError(blocked) && blocked.statusCode).toBe(409);
    await deleting.pollUntilDone();
    expect(sandbox.onlineEndpoint("short-lived")).toBeUndefined();
    expect(sandbox.scoringServer("short-lived")).toBeUndefined();
    const scoring = await fetch(endpoint.properties.scoringUri ?? "", { method: "POST", body: "{}" });
    expect(scoring.status).toBe(404);
    const gone = await client.onlineEndpoints
      .get(sandbox.resourceGroup, sandbox.workspace, "short-lived")
      .then(
        () => undefined,
        (e: unknown) => e,
      );
    expect(isRestError(gone) && gone.statusCode).toBe(404);
  });

  it("every exchange in this file followed the spec", () => {
    const report = checkAgainstSpec(exchanges);
    expect(report.violations).toEqual([]);
    expect(new Set(report.operations)).toEqual(
      new Set([
        "OnlineEndpoints_CreateOrUpdate",
        "OnlineEndpoints_Get",
        "OnlineEndpoints_Delete",
        "Datastores_Get",
        "ModelVersions_CreateOrUpdate",
        "OnlineDeployments_CreateOrUpdate",
        "OnlineDeployments_Get",
        "OnlineDeployments_GetLogs",
        "OnlineDeployments_Delete",
      ]),
    );
    expect(sandbox.specViolations).toEqual([]);
  });
});

describe("mirror traffic at api-version 2023-04-01", () => {
  const rg = () => sandbox.resourceGroup;
  const ws = () => sandbox.workspace;

  /** The endpoint as raw JSON through the client's pipeline, as production code writes mirror traffic. */
  async function endpointJson(
    method: "GET" | "PUT",
    apiVersion: string,
    body?: unknown,
  ): Promise<{ status: number; json: { properties: Record<string, unknown> } & Record<string, unknown> }> {
    const response = await client.sendRequest(
      createPipelineRequest({
        url: `${sandbox.endpoint}${sandbox.workspaceId}/onlineEndpoints/mirrored?api-version=${apiVersion}`,
        method,
        headers: createHttpHeaders({ "content-type": "application/json" }),
        ...(body === undefined ? {} : { body: JSON.stringify(body) }),
      }),
    );
    return { status: response.status, json: JSON.parse(response.bodyAsText ?? "{}") };
  }

  async function settled(): Promise<Record<string, unknown>> {
    const deadline = Date.now() + 5000;
    while (Date.now() < deadline) {
      const { json } = await endpointJson("GET", "2023-04-01");
      if (json.properties.provisioningState === "Succeeded") return json.properties;
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    throw new Error("the endpoint update did not finish");
  }

  it("reads and writes mirrorTraffic at 2023-04-01 with Azure's rules; a 2022-10-01 PUT loses it", async () => {
    await client.onlineEndpoints.beginCreateOrUpdateAndWait(
      rg(),
      ws(),
      "mirrored",
      { location: sandbox.location, properties: { authMode: "Key" } },
      POLL,
    );
    for (const name of ["blue", "green"]) {
      await client.onlineDeployments.beginCreateOrUpdateAndWait(
        rg(),
        ws(),
        "mirrored",
        name,
        deployment(undefined),
        POLL,
      );
    }
    const start = exchanges.length;
    const before = await endpointJson("GET", "2023-04-01");
    expect(before.json.properties.mirrorTraffic).toEqual({});
    const { id: _id, name: _name, type: _type, systemData: _systemData, ...writable } = before.json;
    const { scoringUri: _s, provisioningState: _p, keys: _k, ...props } = before.json.properties;
    const put = (properties: Record<string, unknown>) =>
      endpointJson("PUT", "2023-04-01", { ...writable, properties: { ...props, ...properties } });

    expect((await put({ traffic: { blue: 100 }, mirrorTraffic: { green: 10 } })).status).toBe(201);
    expect(await settled()).toMatchObject({ traffic: { blue: 100 }, mirrorTraffic: { green: 10 } });

    const tooMuch = await put({ traffic: { blue: 100 }, mirrorTraffic: { green: 60 } });
    expect(tooMuch.status).toBe(400);
    expect(JSON.stringify(tooMuch.json)).toContain("from 0 to 50");
    const both = await put({ traffic: { blue: 100 }, mirrorTraffic: { blue: 10 } });
    expect(JSON.stringify(both.json)).toContain("both live and mirror traffic");
    const refused = await client.onlineDeployments
      .beginDeleteAndWait(rg(), ws(), "mirrored", "green", POLL)
      .then(
        () => undefined,
        (e: unknown) => e,
      );
    expect(isRestError(refused) && refused.message).toContain("mirror traffic");

    // The SDK (2022-10-01) neither sees the mirror setting nor keeps it: its full PUT clears it, as in Azure.
    const typed = await client.onlineEndpoints.get(rg(), ws(), "mirrored");
    const typedExchange = exchanges.at(-1);
    expect(typedExchange?.responseBody).not.toContain("mirrorTraffic");
    await client.onlineEndpoints.beginCreateOrUpdateAndWait(rg(), ws(), "mirrored", typed, POLL);
    expect(await settled()).toMatchObject({ traffic: { blue: 100 }, mirrorTraffic: {} });
    expect(sandbox.onlineEndpoint("mirrored")?.traffic).toEqual({ blue: 100 });
    expect(checkAgainstSpec(exchanges.slice(start)).violations).toEqual([]);
    await client.onlineEndpoints.beginDeleteAndWait(rg(), ws(), "mirrored", POLL);
  });
});

describe("mirror traffic on the scoring side", () => {
  it("copies unpinned calls to the mirror target and discards its answers; pinned calls are never mirrored", async () => {
    const server = await startLoopbackServer({ tls: await ca.issueServerCertificate() });
    // Every draw falls inside the mirror share, so each unpinned call is copied: deterministic.
    const host = createScoringHost(server, { random: () => 0 });
    const shadowed = await startArmSandbox({
      server,
      scoringHost: host,
      authorize: async () => true,
      timings: { endpointCreateMs: 10, endpointUpdateMs: 10, deploymentMs: 10 },
    });
    try {
      const { client: c } = armClient(
        shadowed,
        staticCredential(() => "any"),
      );
      const rg = shadowed.resourceGroup;
      const ws = shadowed.workspace;
      await c.onlineEndpoints.beginCreateOrUpdateAndWait(
        rg,
        ws,
        "shadowed",
        { location: shadowed.location, properties: { authMode: "Key" } },
        POLL,
      );
      for (const name of ["blue", "green"]) {
        await c.onlineDeployments.beginCreateOrUpdateAndWait(
          rg,
          ws,
          "shadowed",
          name,
          { location: shadowed.location, properties: { endpointComputeType: "Managed" } },
          POLL,
        );
      }
      const current = await c.onlineEndpoints.get(rg, ws, "shadowed");
      const url = `${shadowed.endpoint}${shadowed.workspaceId}/onlineEndpoints/shadowed?api-version=2023-04-01`;
      const put = await fetch(url, {
        method: "PUT",
        headers: { authorization: "Bearer any", "content-type": "application/json" },
        body: JSON.stringify({
          location: current.location,
          properties: { authMode: "Key", traffic: { blue: 100 }, mirrorTraffic: { green: 20 } },
        }),
      });
      expect(put.status).toBe(201);
      const deadline = Date.now() + 3000;
      while (
        shadowed.onlineEndpoint("shadowed")?.provisioningState !== "Succeeded" &&
        Date.now() < deadline
      ) {
        await new Promise((resolve) => setTimeout(resolve, 10));
      }

      const { primaryKey } = await c.onlineEndpoints.listKeys(rg, ws, "shadowed");
      const call = (headers: Record<string, string>) =>
        fetch(current.properties.scoringUri ?? "", {
          method: "POST",
          headers: { authorization: `Bearer ${primaryKey}`, "content-type": "application/json", ...headers },
          body: JSON.stringify({ data: [[85, 0.25, 9, 0, 20, 6]] }),
        });
      for (let i = 0; i < 3; i++) {
        const live = await call({});
        expect(live.headers.get("azureml-model-deployment")).toBe("blue");
      }
      expect((await call({ "azureml-model-deployment": "blue" })).status).toBe(200);
      const scoring = shadowed.scoringServer("shadowed");
      const copies = () => (scoring?.requests ?? []).filter((r) => r.headers[MIRRORED_HEADER] === "1");
      while (copies().length < 3 && Date.now() < deadline) {
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
      expect(copies().map((r) => [r.deployment, r.status])).toEqual([
        ["green", 200],
        ["green", 200],
        ["green", 200],
      ]);
      // The pinned call was not copied: three live calls, three copies.
      await new Promise((resolve) => setTimeout(resolve, 50));
      expect(copies()).toHaveLength(3);
    } finally {
      await shadowed.close();
      await host.close();
      await server.close();
    }
  });
});

describe("Retry-After on operation polls", () => {
  it("the SDK waits as long as the operation status asks, not its own shorter interval", async () => {
    const paced = await startArmSandbox({
      tls: await ca.issueServerCertificate(),
      authorize: async () => true,
      pollRetryAfterSeconds: 1,
      timings: { endpointCreateMs: 1500 },
    });
    try {
      const { client: pacedClient, exchanges: seen } = armClient(
        paced,
        staticCredential(() => "any"),
      );
      await pacedClient.onlineEndpoints.beginCreateOrUpdateAndWait(
        paced.resourceGroup,
        paced.workspace,
        "paced",
        { location: paced.location, properties: { authMode: "Key" } },
        POLL,
      );
      const polls = seen.filter((e) => e.url.includes("/mfeOperationsStatus/"));
      expect(polls[0]?.headers["retry-after"]).toBe("1");
      // With updateIntervalInMs 20 and no Retry-After there would be dozens of polls in 1.5 s. The 2.1.1 client
      // polls once in begin* and once more as pollUntilDone starts; every wait after that is the Retry-After.
      expect(polls.length).toBeLessThanOrEqual(4);
      expect(polls.length).toBeGreaterThanOrEqual(3);
      for (let i = 2; i < polls.length; i++) {
        expect((polls[i]?.time ?? 0) - (polls[i - 1]?.time ?? 0)).toBeGreaterThanOrEqual(950);
      }
      expect(checkAgainstSpec(seen).violations).toEqual([]);
    } finally {
      await paced.close();
    }
  });
});

describe("an operation whose work throws", () => {
  it("fails with the error and releases the endpoint's lock instead of staying InProgress", async () => {
    const server = await startLoopbackServer({ tls: await ca.issueServerCertificate() });
    const realHost = createScoringHost(server);
    const failing = await startArmSandbox({
      server,
      authorize: async () => true,
      scoringHost: {
        ...realHost,
        removeEndpoint: async () => {
          throw new Error("the scoring backend is gone");
        },
      },
      timings: { endpointCreateMs: 10, deleteMs: 10 },
    });
    try {
      const { client: c } = armClient(
        failing,
        staticCredential(() => "any"),
      );
      const rg = failing.resourceGroup;
      const ws = failing.workspace;
      await c.onlineEndpoints.beginCreateOrUpdateAndWait(
        rg,
        ws,
        "doomed",
        { location: failing.location, properties: { authMode: "Key" } },
        POLL,
      );
      await expect(c.onlineEndpoints.beginDeleteAndWait(rg, ws, "doomed", POLL)).rejects.toThrow(
        "the scoring backend is gone",
      );
      // The delete did not happen: the endpoint is still there, Failed.
      expect((await c.onlineEndpoints.get(rg, ws, "doomed")).properties.provisioningState).toBe("Failed");
      // Not locked: the next change is judged on its own merits (here: a valid tag update).
      const patched = await c.onlineEndpoints.beginUpdateAndWait(
        rg,
        ws,
        "doomed",
        { tags: { retried: "yes" } },
        POLL,
      );
      expect(patched.tags).toEqual({ retried: "yes" });
    } finally {
      await failing.close();
      await realHost.close();
      await server.close();
    }
  });
});

describe("the sandbox holds its own responses to the spec", () => {
  it("a response that would break the spec becomes a 500 naming the violation, and is recorded", async () => {
    const server = await startLoopbackServer({ tls: await ca.issueServerCertificate() });
    const realHost = createScoringHost(server);
    const broken = await startArmSandbox({
      server,
      authorize: async () => true,
      // scoringUri must be a URI (format: uri); this host gives something that is not one.
      scoringHost: { ...realHost, scoringUri: () => "not a uri" },
      timings: { endpointCreateMs: 10 },
    });
    try {
      const response = await fetch(
        `${broken.endpoint}${broken.workspaceId}/onlineEndpoints/spec-check?api-version=2022-10-01`,
        {
          method: "PUT",
          headers: { authorization: "Bearer any", "content-type": "application/json" },
          body: JSON.stringify({ location: broken.location, properties: { authMode: "Key" } }),
        },
      );
      expect(response.status).toBe(500);
      const body = (await response.json()) as { error: { code: string; message: string } };
      expect(body.error.code).toBe("SandboxSpecViolation");
      expect(body.error.message).toContain("OnlineEndpoints_CreateOrUpdate response 201");
      expect(body.error.message).toContain("scoringUri");
      expect(broken.specViolations.map((v) => v.operationId)).toEqual(["OnlineEndpoints_CreateOrUpdate"]);
    } finally {
      await broken.close();
      await realHost.close();
      await server.close();
    }
  });
});
