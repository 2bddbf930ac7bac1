// The local clouds, composed: a CA, the GitHub Actions OIDC token service, Entra ID with an app registration whose
// federated credential trusts the job's subject, Key Vault, Azurite as the workspace's default datastore, ARM for
// Azure ML with ONNX Runtime serving what is deployed, and Cloudflare (tokens, Workers versions and deployments, an
// edge running them in workerd) with its bootstrap token in Key Vault. `startSandbox()` is what tests call;
// `aml-edge sandbox up` runs it and prints the environment. Production code reaches all of it only through what
// `environment()` and `inputs()` give: base URLs, the authority host, the CA file and the OIDC variables.
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  type ArmSandbox,
  type ArmTimings,
  type Azurite,
  startArmSandbox,
  startAzurite,
} from "./arm/index.ts";
import { type CloudflareSandbox, startCloudflareSandbox } from "./cloudflare/index.ts";
import { ARM_RESOURCE, type Entra, KEY_VAULT_RESOURCE, startEntra } from "./entra.ts";
import { type GitHubOidc, startGitHubOidc } from "./github-oidc.ts";
import { type KeyVault, startKeyVault } from "./key-vault.ts";
import { loadOnnxModel, releaseOnnxModels } from "./onnx-model.ts";
import { createSandboxCa, trustInProcess } from "./tls.ts";

/** The app registration the deploy job signs in as (an obviously local id). */
export const SANDBOX_CLIENT_ID = "00000000-0000-4000-8000-00000000a11e";
/** The audience GitHub's token is requested for: Azure's token exchange, as azure/login uses. */
export const SANDBOX_OIDC_AUDIENCE = "api://AzureADTokenExchange";
/** The gateway Worker's name: the route action's default. */
export const SANDBOX_WORKER_NAME = "aml-edge-gateway";

export interface SandboxOptions {
  /** Provisioning and other operation times; the defaults are short so a rollout takes seconds. */
  timings?: ArmTimings;
  /** GitHub ID token lifetime in seconds (default 300, as GitHub's). */
  gitHubTokenLifetimeSeconds?: number;
  /** Make this process trust the sandbox CA (default true): in-process SDK clients then work unchanged. */
  trustInProcess?: boolean;
}

export interface Sandbox {
  readonly github: GitHubOidc;
  readonly entra: Entra;
  readonly keyVault: KeyVault;
  readonly azurite: Azurite;
  readonly arm: ArmSandbox;
  /** The Cloudflare API and edge; its bootstrap token is in Key Vault under `cloudflare.bootstrapTokenSecretName`. */
  readonly cloudflare: CloudflareSandbox;
  /** The gateway Worker's edge URL (its listener is open from the start; 404 until a version is deployed). */
  readonly gatewayUrl: string;
  /** The CA certificate file, for NODE_EXTRA_CA_CERTS in child processes. */
  readonly caFile: string;
  /** What a job step's process needs in its environment: the OIDC request variables and the CA. */
  environment(): Record<string, string>;
  /** The inputs that point the actions at this sandbox (kebab-case, as in action.yml): Azure and Cloudflare. */
  inputs(): Record<string, string>;
  close(): Promise<void>;
}

const DEFAULT_TIMINGS: ArmTimings = {
  endpointCreateMs: 200,
  endpointUpdateMs: 200,
  deploymentMs: 1_000,
  deleteMs: 200,
};

export async function startSandbox(options: SandboxOptions = {}): Promise<Sandbox> {
  const closers: (() => Promise<void> | void)[] = [];
  const close = async () => {
    // Reverse order: ARM before Azurite, everything before the CA file and in-process trust.
    for (const closer of closers.splice(0).reverse()) {
      try {
        await closer();
      } catch {
        // Closing is best effort: one stand-in that failed to stop must not keep the others running.
      }
    }
  };
  try {
    const dir = await mkdtemp(join(tmpdir(), "aml-edge-sandbox-"));
    closers.push(() => rm(dir, { recursive: true, force: true }));
    const ca = await createSandboxCa();
    const caFile = await ca.writeCaFile(dir);
    if (options.trustInProcess ?? true) closers.push(trustInProcess(ca.caPem));

    const github = await startGitHubOidc(
      options.gitHubTokenLifetimeSeconds === undefined
        ? {}
        : { lifetimeSeconds: options.gitHubTokenLifetimeSeconds },
    );
    closers.push(() => github.close());
    const entra = await startEntra({ ca });
    closers.push(() => entra.close());
    entra.setIssuerJwksUri(github.issuer, github.jwksUri);
    entra.registerApp({
      clientId: SANDBOX_CLIENT_ID,
      federatedCredentials: [
        { issuer: github.issuer, subject: github.subject(), audiences: [SANDBOX_OIDC_AUDIENCE] },
      ],
    });
    const keyVault = await startKeyVault({ entra, ca });
    closers.push(() => keyVault.close());
    const cloudflare = await startCloudflareSandbox({ ca });
    closers.push(() => cloudflare.close());
    keyVault.setSecret(cloudflare.bootstrapTokenSecretName, cloudflare.bootstrapToken.value, {
      contentType: "Cloudflare API token (API Tokens Write only)",
    });
    const gatewayUrl = (await cloudflare.edgeUrl(SANDBOX_WORKER_NAME)).href;
    const azurite = await startAzurite();
    closers.push(() => azurite.close());
    const arm = await startArmSandbox({
      tls: await ca.issueServerCertificate(),
      azurite,
      authorize: (token) => entra.verifyAccessToken(token, ARM_RESOURCE),
      modelLoader: async (model) => loadOnnxModel(await model.download()),
      timings: { ...DEFAULT_TIMINGS, ...options.timings },
    });
    closers.push(() => arm.close());
    closers.push(() => releaseOnnxModels());

    return {
      github,
      entra,
      keyVault,
      azurite,
      arm,
      cloudflare,
      gatewayUrl,
      caFile,
      environment: () => ({
        ...github.env(),
        NODE_EXTRA_CA_CERTS: caFile,
        AZURE_AUTHORITY_HOST: entra.authorityHost,
      }),
      inputs: () => ({
        "client-id": SANDBOX_CLIENT_ID,
        "tenant-id": entra.tenantId,
        "subscription-id": arm.subscriptionId,
        "resource-group": arm.resourceGroup,
        workspace: arm.workspace,
        "arm-endpoint": arm.endpoint,
        "authority-host": entra.authorityHost,
        "blob-endpoint": arm.blobServiceUrl ?? "",
        "oidc-audience": SANDBOX_OIDC_AUDIENCE,
        "cloudflare-account-id": cloudflare.accountId,
        "cloudflare-api-url": cloudflare.apiUrl,
        "key-vault-url": keyVault.vaultUrl,
        "cloudflare-bootstrap-secret": cloudflare.bootstrapTokenSecretName,
        "worker-name": SANDBOX_WORKER_NAME,
        "gateway-url": gatewayUrl,
      }),
      close,
    };
  } catch (error) {
    await close();
    throw error;
  }
}

export { ARM_RESOURCE, KEY_VAULT_RESOURCE };
