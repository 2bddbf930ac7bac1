// The sandbox's Azure ML workspace as an administrator's script sees it, signed in as the sandbox app with a token
// Entra issues directly: to set up endpoints, deployments and traffic, and to read keys around the actions' runs.
import { createMlClient, MlWorkspace } from "../../src/azure/ml.ts";
import { systemClock } from "../../src/azure/retry.ts";
import { ARM_RESOURCE } from "../../src/sandbox/entra.ts";
import { SANDBOX_CLIENT_ID, type Sandbox } from "../../src/sandbox/sandbox.ts";

export function adminWorkspace(local: Sandbox): MlWorkspace {
  const { arm, entra } = local;
  return new MlWorkspace({
    client: createMlClient({
      credential: {
        getToken: async () => ({
          token: await entra.issueAppToken({ audience: ARM_RESOURCE, clientId: SANDBOX_CLIENT_ID }),
          expiresOnTimestamp: Date.now() + 3600_000,
        }),
      },
      subscriptionId: arm.subscriptionId,
      armEndpoint: arm.endpoint,
    }),
    armEndpoint: arm.endpoint,
    subscriptionId: arm.subscriptionId,
    resourceGroup: arm.resourceGroup,
    workspace: arm.workspace,
    deadline: Date.now() + 60_000,
    clock: systemClock,
    logger: { debug() {}, info() {}, warning() {}, startGroup() {}, endGroup() {} },
    setSecret() {},
    ...(arm.blobServiceUrl === undefined ? {} : { blobEndpoint: arm.blobServiceUrl }),
    pollIntervalMs: 50,
  });
}
