// src/azure/ml.ts with the real SDK client against the ARM sandbox, for what the unit fake cannot vouch for: the
// endpoint JSON sent raw through the client's pipeline at two api-versions. Mirror traffic exists only from
// 2023-04-01, and a PUT at the SDK's 2022-10-01 clears it (as Azure does): that is why traffic is written as JSON at a
// configurable api-version, and why mirroring is refused at the SDK's.
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ConfigurationError } from "../../src/azure/errors.ts";
import { createMlClient, MIRROR_API_VERSION, MlWorkspace } from "../../src/azure/ml.ts";
import { readModelFolder } from "../../src/azure/ml-model-folder.ts";
import { systemClock } from "../../src/azure/retry.ts";
import { type ArmSandbox, type Azurite, startArmSandbox, startAzurite } from "../../src/sandbox/arm/index.ts";
import { ARM_RESOURCE, type Entra, startEntra } from "../../src/sandbox/entra.ts";
import { createSandboxCa, trustInProcess } from "../../src/sandbox/tls.ts";

let untrust: () => void = () => undefined;
let entra: Entra;
let azurite: Azurite;
let sandbox: ArmSandbox;
let dir: string;
const masked: string[] = [];

beforeAll(async () => {
  const ca = await createSandboxCa();
  untrust = trustInProcess(ca.caPem);
  entra = await startEntra({ ca });
  azurite = await startAzurite();
  sandbox = await startArmSandbox({
    tls: await ca.issueServerCertificate(),
    azurite,
    authorize: (token) => entra.verifyAccessToken(token, ARM_RESOURCE),
    timings: { endpointCreateMs: 30, endpointUpdateMs: 30, deploymentMs: 50, deleteMs: 30 },
  });
  dir = await mkdtemp(join(tmpdir(), "aml-edge-ml-integration-"));
}, 60_000);

afterAll(async () => {
  await sandbox?.close();
  await azurite?.close();
  await entra?.close();
  untrust();
  if (dir !== undefined) await rm(dir, { recursive: true, force: true });
});

function workspace(endpointApiVersion?: string): MlWorkspace {
  return new MlWorkspace({
    client: createMlClient({
      credential: {
        getToken: async () => ({
          token: await entra.issueAppToken({ audience: ARM_RESOURCE }),
          expiresOnTimestamp: Date.now() + 3600_000,
        }),
      },
      subscriptionId: sandbox.subscriptionId,
      armEndpoint: sandbox.endpoint,
    }),
    armEndpoint: sandbox.endpoint,
    subscriptionId: sandbox.subscriptionId,
    resourceGroup: sandbox.resourceGroup,
    workspace: sandbox.workspace,
    deadline: Date.now() + 60_000,
    clock: systemClock,
    logger: { debug() {}, info() {}, warning() {}, startGroup() {}, endGroup() {} },
    setSecret: (secret) => masked.push(secret),
    blobEndpoint: sandbox.blobServiceUrl,
    pollIntervalMs: 50,
    ...(endpointApiVersion === undefined ? {} : { endpointApiVersion }),
  });
}

describe("ml.ts against the ARM sandbox", () => {
  it("sets live and mirror traffic as endpoint JSON, keeping each when the other changes at 2023-04-01", async () => {
    const ml = workspace();
    const mirroring = workspace(MIRROR_API_VERSION);
    await writeFile(
      join(dir, "model.onnx"),
      "not really onnx; the default loader scores by name and version",
    );
    const model = await ml.registerModelFolder("credit", await readModelFolder(dir));
    await ml.ensureEndpoint("mirror");
    for (const deployment of ["blue", "green"]) {
      await ml.deploy({
        endpoint: "mirror",
        deployment,
        modelId: model.id,
        instanceType: "Standard_DS3_v2",
        instanceCount: 1,
      });
    }
    expect(await ml.setTraffic("mirror", { blue: 100 })).toEqual({});
    expect(ml.setMirrorTraffic.bind(ml, "mirror", { green: 10 })).toThrow(ConfigurationError);

    expect(await mirroring.setMirrorTraffic("mirror", { green: 10 })).toEqual({});
    expect(await mirroring.mirrorTraffic("mirror")).toEqual({ green: 10 });
    await expect(mirroring.setMirrorTraffic("mirror", { blue: 10 })).rejects.toThrow(/receives live traffic/);
    // Refused here before Azure is asked: green is mirrored.
    await expect(mirroring.deleteDeployment("mirror", "green")).rejects.toThrow(/10% of mirrored traffic/);

    // Live traffic written at 2023-04-01 keeps the mirror; ...
    await mirroring.setTraffic("mirror", { blue: 100, green: 0 });
    expect(await mirroring.mirrorTraffic("mirror")).toEqual({ green: 10 });
    // ... written at the SDK's 2022-10-01, which has no mirrorTraffic, it loses it, as Azure's own PUT does.
    await ml.setTraffic("mirror", { blue: 100 });
    expect(await mirroring.mirrorTraffic("mirror")).toEqual({});
    expect(sandbox.onlineEndpoint("mirror")?.traffic).toEqual({ blue: 100 });

    await ml.deleteDeployment("mirror", "green");
    expect(sandbox.onlineEndpoint("mirror")?.deployments.green).toBeUndefined();
    const keys = await ml.endpointKeys("mirror");
    expect(masked).toEqual(expect.arrayContaining([keys.primaryKey, keys.secondaryKey]));
    expect(sandbox.specViolations).toEqual([]);
  }, 60_000);
});
