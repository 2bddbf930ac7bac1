// Azure ML control-plane operations on one workspace, through @azure/arm-machinelearning 2.1.1 (api-version
// 2022-10-01): model versions, online endpoints, deployments, traffic, keys and tokens. What the SDK leaves to its
// callers is done here (reference/azure.md §2):
// - begin* failures are a plain Error with no code, so a failed deployment is followed by a get and its logs;
// - a traffic change is a full PUT of the endpoint, seen by a GET only after a while, so it is re-read until it shows;
// - the endpoint PUT replaces the whole resource, and 2.1.1's serializer drops what it does not know (mirrorTraffic),
//   so traffic is written as the endpoint's own JSON, read and written at one api-version (see setTraffic);
// - Azure runs one operation per endpoint and answers others with 409: operations on one endpoint are queued in this
//   process, and 409/429 from anyone else are waited out (retry.ts) until the user's deadline.
// Every key and token is masked the moment it exists.

import type {
  Datastores,
  ModelVersions,
  OnlineDeployment,
  OnlineDeployments,
  OnlineEndpoint,
  OnlineEndpoints,
  Workspaces,
} from "@azure/arm-machinelearning";
import { AzureMachineLearningWorkspaces } from "@azure/arm-machinelearning";
import type { TokenCredential } from "@azure/core-auth";
import type { PipelineRequest, PipelineResponse } from "@azure/core-rest-pipeline";
import { createHttpHeaders, createPipelineRequest, RestError } from "@azure/core-rest-pipeline";
import { ConfigurationError, errorMessage } from "./errors.ts";
import {
  checkTraffic,
  type EndpointJson,
  sameMap,
  type TrafficKind,
  writableEndpoint,
} from "./ml-endpoint-json.ts";
import {
  type BlobUploaderFactory,
  blobServiceUrl,
  contentPrefix,
  type ModelFolder,
  storageBlobUploader,
} from "./ml-model-folder.ts";
import { type Clock, DeadlineExceededError, formatDuration, statusOf, withAzureRetry } from "./retry.ts";

export { chooseSlot, type ModelReference, parseModelReference, type Slot } from "./ml-references.ts";

/** The ARM scope tokens are asked for: the SDK would otherwise derive it from `endpoint`, wrong for an emulator. */
export const ARM_SCOPE = "https://management.azure.com/.default";
/** The api-version @azure/arm-machinelearning 2.1.1 speaks. */
export const SDK_API_VERSION = "2022-10-01";
/** The first stable api-version whose endpoints carry mirrorTraffic. */
export const MIRROR_API_VERSION = "2023-04-01";
/** Sovereign ARM hosts whose tokens are scoped to themselves rather than to the public cloud. */
const SOVEREIGN_ARM_HOSTS = ["management.usgovcloudapi.net", "management.chinacloudapi.cn"];

/** The parts of the SDK client this module calls; the unit tests' fake implements exactly these. */
export interface MlClient {
  workspaces: Pick<Workspaces, "get">;
  datastores: Pick<Datastores, "list" | "listSecrets">;
  modelVersions: Pick<ModelVersions, "get" | "list" | "createOrUpdate">;
  onlineEndpoints: Pick<
    OnlineEndpoints,
    "get" | "beginCreateOrUpdate" | "listKeys" | "getToken" | "beginRegenerateKeys"
  >;
  onlineDeployments: Pick<OnlineDeployments, "get" | "beginCreateOrUpdate" | "beginDelete" | "getLogs">;
  /** The client's own pipeline (credential, retries, TLS): for the endpoint JSON the typed methods would mangle. */
  sendRequest(request: PipelineRequest): Promise<PipelineResponse>;
}

export function createMlClient(options: {
  credential: TokenCredential;
  subscriptionId: string;
  armEndpoint: string;
}): AzureMachineLearningWorkspaces {
  const endpoint = options.armEndpoint.replace(/\/+$/, "");
  const host = new URL(endpoint).hostname;
  return new AzureMachineLearningWorkspaces(options.credential, options.subscriptionId, {
    endpoint,
    credentialScopes: [SOVEREIGN_ARM_HOSTS.includes(host) ? `${endpoint}/.default` : ARM_SCOPE],
  });
}

export interface MlLogger {
  debug(message: string): void;
  info(message: string): void;
  warning(message: string): void;
  startGroup(title: string): void;
  endGroup(): void;
}

export interface MlWorkspaceOptions {
  client: MlClient;
  /** The client's ARM base URL, for the requests sent as raw JSON. */
  armEndpoint: string;
  subscriptionId: string;
  resourceGroup: string;
  workspace: string;
  /** Epoch ms: no wait (backoff, long-running operation, traffic propagation) goes past it. */
  deadline: number;
  clock: Clock;
  logger: MlLogger;
  setSecret: (secret: string) => void;
  /**
   * The default datastore's blob service, when its accountName/endpoint do not reach it: Azurite or another emulator
   * answers on a path-style URL (`https://127.0.0.1:10000/devstoreaccount1`). Default: derived from the datastore.
   */
  blobEndpoint?: string | undefined;
  blobUploader?: BlobUploaderFactory;
  /**
   * The api-version endpoint JSON is read and written at for traffic. 2022-10-01 (the SDK's) knows no mirrorTraffic,
   * and Azure clears a mirror setting on a PUT at that version; set MIRROR_API_VERSION when mirror traffic is used.
   */
  endpointApiVersion?: string;
  /** How often a long-running operation or a traffic change is checked. Default 5 s. */
  pollIntervalMs?: number;
  /** Longest gap between progress lines. Default 30 s. */
  progressIntervalMs?: number;
  /** Log lines fetched per container when a deployment fails. Default 200. */
  logTailLines?: number;
  random?: () => number;
}

export interface RegisteredModel {
  name: string;
  version: string;
  /** The ARM id a deployment's `model` takes. */
  id: string;
  /** custom_model, mlflow_model, triton_model...; undefined when the registration does not say. */
  modelType: string | undefined;
}

/** Model types Azure ML deploys without an environment and a scoring script ("no-code" deployment). */
export const NO_CODE_MODEL_TYPES = ["mlflow_model", "triton_model"];

export interface EndpointToken {
  accessToken: string;
  tokenType: string | undefined;
  expiresAt: Date | undefined;
  refreshAfter: Date | undefined;
}

export interface DeploymentSpec {
  endpoint: string;
  deployment: string;
  /** ARM id of the model version. */
  modelId: string;
  instanceType: string;
  instanceCount: number;
  /** ARM id of an environment version; none for a no-code (MLflow/ONNX-ready) model. */
  environmentId?: string | undefined;
  codeConfiguration?: { codeId: string; scoringScript: string } | undefined;
  environmentVariables?: Record<string, string> | undefined;
  tags?: Record<string, string> | undefined;
}

/** A deployment did not provision; its logs were printed in groups before this was thrown. */
export class DeploymentFailedError extends Error {
  override name = "DeploymentFailedError";
}

interface Poller<T> {
  poll(): Promise<void>;
  isDone(): boolean;
  getResult(): T | undefined;
}

export class MlWorkspace {
  readonly workspaceId: string;
  private readonly options: MlWorkspaceOptions;
  private readonly client: MlClient;
  private readonly clock: Clock;
  private readonly logger: MlLogger;
  private readonly queues = new Map<string, Promise<unknown>>();
  private locationPromise: Promise<string> | undefined;

  constructor(options: MlWorkspaceOptions) {
    this.options = options;
    this.client = options.client;
    this.clock = options.clock;
    this.logger = options.logger;
    this.workspaceId =
      `/subscriptions/${options.subscriptionId}/resourceGroups/${options.resourceGroup}` +
      `/providers/Microsoft.MachineLearningServices/workspaces/${options.workspace}`;
  }

  modelVersionId(name: string, version: string): string {
    return `${this.workspaceId}/models/${name}/versions/${version}`;
  }

  /** The workspace's region: new endpoints and deployments are created in it. */
  location(): Promise<string> {
    this.locationPromise ??= this.retry(`Reading workspace ${this.options.workspace}`, () =>
      this.client.workspaces.get(this.options.resourceGroup, this.options.workspace),
    ).then(
      (ws) => ws.location ?? "",
      (error: unknown) => {
        // A failed read is not kept: the next caller asks again.
        this.locationPromise = undefined;
        throw error;
      },
    );
    return this.locationPromise;
  }

  // ---- models

  /** A registered model version, checked to exist. */
  async registeredModel(name: string, version: string): Promise<RegisteredModel> {
    try {
      const found = await this.retry(`Reading model ${name}:${version}`, () =>
        this.client.modelVersions.get(this.options.resourceGroup, this.options.workspace, name, version),
      );
      return {
        name,
        version,
        id: found.id ?? this.modelVersionId(name, version),
        modelType: found.properties.modelType,
      };
    } catch (error) {
      if (statusOf(error) !== 404) throw error;
      throw new ConfigurationError(
        `Model azureml:${name}:${version} is not registered in workspace ${this.options.workspace} ` +
          `(resource group ${this.options.resourceGroup}). Check the name and version (az ml model list), or give ` +
          "a model folder to upload and register.",
        { cause: error },
      );
    }
  }

  /**
   * Uploads a model folder to the workspace's default datastore and registers it as the next integer version of
   * `name`. The same contents registered before are reused rather than registered again.
   */
  async registerModelFolder(
    name: string,
    folder: ModelFolder,
  ): Promise<RegisteredModel & { reused: boolean }> {
    const { resourceGroup, workspace, subscriptionId } = this.options;
    const datastore = await this.defaultDatastore();
    const prefix = contentPrefix(name, folder.digest);
    const modelUri =
      `azureml://subscriptions/${subscriptionId}/resourcegroups/${resourceGroup}/workspaces/${workspace}` +
      `/datastores/${datastore.name}/paths/${prefix}/`;
    const versions = await this.modelVersions(name);
    const same = versions.find((v) => sameUri(v.modelUri, modelUri));
    if (same !== undefined) {
      this.logger.info(
        `Model folder ${folder.folder} is already registered as ${name}:${same.version}; reusing it.`,
      );
      return {
        name,
        version: same.version,
        id: this.modelVersionId(name, same.version),
        modelType: folder.modelType,
        reused: true,
      };
    }

    const secrets = await this.retry(`Reading the secrets of datastore ${datastore.name}`, () =>
      this.client.datastores.listSecrets(resourceGroup, workspace, datastore.name),
    );
    const accountKey = (secrets as { key?: unknown }).key;
    if (secrets.secretsType !== "AccountKey" || typeof accountKey !== "string" || accountKey === "") {
      throw new ConfigurationError(
        `The default datastore ${datastore.name} of workspace ${workspace} has no account key to upload with ` +
          `(secrets type ${secrets.secretsType}). aml-edge uploads model folders with the datastore's account key; ` +
          "give the datastore account-key credentials, or register the model yourself and pass azureml:NAME:VERSION.",
      );
    }
    this.options.setSecret(accountKey);
    const serviceUrl = blobServiceUrl(datastore, this.options.blobEndpoint);
    const uploader = (this.options.blobUploader ?? storageBlobUploader)({
      serviceUrl,
      accountName: datastore.accountName,
      accountKey,
      container: datastore.containerName,
    });
    this.logger.info(
      `Uploading ${folder.files.length} file(s) from ${folder.folder} to ${serviceUrl}/${datastore.containerName}/${prefix}/`,
    );
    for (const file of folder.files) {
      try {
        await uploader.upload(`${prefix}/${file.path}`, file.data);
      } catch (error) {
        throw new Error(
          `Uploading ${file.path} to datastore ${datastore.name} (${serviceUrl}) failed: ${errorMessage(error)}. ` +
            "The identity needs the storage account's key (listSecrets) and the runner must reach the blob service.",
          { cause: error },
        );
      }
    }

    const next =
      versions.reduce((max, v) => (/^\d+$/.test(v.version) ? Math.max(max, Number(v.version)) : max), 0) + 1;
    const version = String(next);
    await this.retry(`Registering model ${name}:${version}`, () =>
      this.client.modelVersions.createOrUpdate(resourceGroup, workspace, name, version, {
        properties: {
          modelUri,
          modelType: folder.modelType,
          description: `Uploaded by aml-edge from ${folder.folder}`,
          tags: { "aml-edge-digest": folder.digest },
        },
      }),
    );
    this.logger.info(`Registered model ${name}:${version} (${modelUri}).`);
    return {
      name,
      version,
      id: this.modelVersionId(name, version),
      modelType: folder.modelType,
      reused: false,
    };
  }

  private async modelVersions(name: string): Promise<{ version: string; modelUri: string | undefined }[]> {
    const versions: { version: string; modelUri: string | undefined }[] = [];
    try {
      for await (const v of this.client.modelVersions.list(
        this.options.resourceGroup,
        this.options.workspace,
        name,
      )) {
        if (v.name !== undefined) versions.push({ version: v.name, modelUri: v.properties.modelUri });
      }
    } catch (error) {
      // No container yet: this is the model's first version.
      if (statusOf(error) !== 404) throw error;
    }
    return versions;
  }

  private async defaultDatastore(): Promise<{
    name: string;
    accountName: string;
    containerName: string;
    endpoint: string | undefined;
    protocol: string | undefined;
  }> {
    const { resourceGroup, workspace } = this.options;
    for await (const ds of this.client.datastores.list(resourceGroup, workspace, { isDefault: true })) {
      const p = ds.properties as {
        datastoreType?: string;
        isDefault?: boolean;
        accountName?: string;
        containerName?: string;
        endpoint?: string;
        protocol?: string;
      };
      if (p.isDefault === false) continue;
      if (p.datastoreType !== "AzureBlob" || p.accountName === undefined || p.containerName === undefined) {
        throw new ConfigurationError(
          `The default datastore ${ds.name ?? ""} of workspace ${workspace} is ${p.datastoreType ?? "of unknown type"}; ` +
            "aml-edge uploads model folders to an AzureBlob datastore. Make a blob datastore the default, or register " +
            "the model yourself and pass azureml:NAME:VERSION.",
        );
      }
      return {
        name: ds.name ?? "workspaceblobstore",
        accountName: p.accountName,
        containerName: p.containerName,
        endpoint: p.endpoint,
        protocol: p.protocol,
      };
    }
    throw new ConfigurationError(
      `Workspace ${workspace} has no default datastore to upload the model folder to; register the model yourself ` +
        "and pass azureml:NAME:VERSION.",
    );
  }

  // ---- endpoints

  /** The endpoint, or undefined when it does not exist. */
  async findEndpoint(name: string): Promise<OnlineEndpoint | undefined> {
    try {
      return await this.retry(`Reading endpoint ${name}`, () =>
        this.client.onlineEndpoints.get(this.options.resourceGroup, this.options.workspace, name),
      );
    } catch (error) {
      if (statusOf(error) === 404) return undefined;
      throw error;
    }
  }

  /** The endpoint, created with key authentication when missing. */
  ensureEndpoint(name: string): Promise<{ endpoint: OnlineEndpoint; created: boolean }> {
    return this.serialize(name, async () => {
      const existing = await this.findEndpoint(name);
      if (existing !== undefined) return { endpoint: existing, created: false };
      const location = await this.location();
      const what = `Creating endpoint ${name}`;
      const poller = await this.retry(what, () =>
        this.client.onlineEndpoints.beginCreateOrUpdate(
          this.options.resourceGroup,
          this.options.workspace,
          name,
          {
            location,
            tags: { "managed-by": "aml-edge" },
            properties: { authMode: "Key", description: "Created by aml-edge deploy-model." },
          },
        ),
      );
      await this.waitForOperation(
        poller,
        what,
        async () => (await this.findEndpoint(name))?.properties.provisioningState,
      );
      const endpoint = await this.findEndpoint(name);
      if (endpoint === undefined)
        throw new Error(`${what}: Azure reported success, but the endpoint cannot be read.`);
      return { endpoint, created: true };
    });
  }

  /** The endpoint's keys, masked in the log. */
  async endpointKeys(name: string): Promise<{ primaryKey: string; secondaryKey: string }> {
    const keys = await this.retry(`Listing the keys of endpoint ${name}`, () =>
      this.client.onlineEndpoints.listKeys(this.options.resourceGroup, this.options.workspace, name),
    );
    const primaryKey = keys.primaryKey ?? "";
    const secondaryKey = keys.secondaryKey ?? "";
    if (primaryKey !== "") this.options.setSecret(primaryKey);
    if (secondaryKey !== "") this.options.setSecret(secondaryKey);
    return { primaryKey, secondaryKey };
  }

  /**
   * Regenerates one of the endpoint's keys and returns both keys as they are afterwards (masked). Azure answers a
   * listKeys with the old value for a while after the operation ends, so the keys are read until the regenerated one
   * differs from what it was (bounded by the deadline).
   */
  regenerateEndpointKey(
    name: string,
    keyType: "Primary" | "Secondary",
  ): Promise<{ primaryKey: string; secondaryKey: string }> {
    return this.serialize(name, async () => {
      const before = await this.endpointKeys(name);
      const field = keyType === "Primary" ? "primaryKey" : "secondaryKey";
      const what = `Regenerating the ${keyType.toLowerCase()} key of endpoint ${name}`;
      const poller = await this.retry(what, () =>
        this.client.onlineEndpoints.beginRegenerateKeys(
          this.options.resourceGroup,
          this.options.workspace,
          name,
          {
            keyType,
          },
        ),
      );
      await this.waitForOperation(
        poller,
        what,
        async () => (await this.findEndpoint(name))?.properties.provisioningState,
      );
      const pace = this.pacer(
        `${what}: waiting for the new key to be readable`,
        "The key was regenerated; its new value will show in listKeys.",
      );
      for (;;) {
        const after = await this.endpointKeys(name);
        if (after[field] !== "" && after[field] !== before[field]) return after;
        // The pacer's sleeps stop at each due progress line: taking the line moves the next one on.
        if (pace.lineDue()) this.logger.info(`${what}: listKeys still shows the old key.`);
        await pace.sleep();
      }
    });
  }

  /** An aml_token for the endpoint (masked), with when to refresh it and when it stops working. */
  async endpointToken(name: string): Promise<EndpointToken> {
    const token = await this.retry(`Getting a token for endpoint ${name}`, () =>
      this.client.onlineEndpoints.getToken(this.options.resourceGroup, this.options.workspace, name),
    );
    const accessToken = token.accessToken ?? "";
    if (accessToken !== "") this.options.setSecret(accessToken);
    // Unix seconds (reference/azure.md §2.3).
    const at = (seconds: number | undefined) =>
      seconds === undefined ? undefined : new Date(seconds * 1000);
    return {
      accessToken,
      tokenType: token.tokenType,
      expiresAt: at(token.expiryTimeUtc),
      refreshAfter: at(token.refreshAfterTimeUtc),
    };
  }

  // ---- deployments

  /**
   * Creates or replaces a deployment and waits for it. Only the deployment is written: the endpoint's traffic map is
   * never part of this request, so a new deployment starts at 0% and an existing one keeps its share.
   */
  deploy(spec: DeploymentSpec): Promise<OnlineDeployment> {
    return this.serialize(spec.endpoint, async () => {
      const { resourceGroup, workspace } = this.options;
      const location = await this.location();
      const body: OnlineDeployment = {
        location,
        ...(spec.tags === undefined ? {} : { tags: spec.tags }),
        // For managed deployments the SKU capacity is the instance count.
        sku: { name: "Default", capacity: spec.instanceCount },
        properties: {
          endpointComputeType: "Managed",
          model: spec.modelId,
          instanceType: spec.instanceType,
          ...(spec.environmentId === undefined ? {} : { environmentId: spec.environmentId }),
          ...(spec.codeConfiguration === undefined ? {} : { codeConfiguration: spec.codeConfiguration }),
          ...(spec.environmentVariables === undefined
            ? {}
            : { environmentVariables: spec.environmentVariables }),
        },
      };
      const what = `Deployment ${spec.deployment} on endpoint ${spec.endpoint}`;
      let poller: Poller<unknown>;
      try {
        poller = await this.retry(`${what}: creating`, () =>
          this.client.onlineDeployments.beginCreateOrUpdate(
            resourceGroup,
            workspace,
            spec.endpoint,
            spec.deployment,
            body,
          ),
        );
      } catch (error) {
        const status = statusOf(error);
        if (error instanceof DeadlineExceededError) throw error;
        // Refused outright (400, 403, 404...): nothing was started, so there are no logs to show.
        if (status !== undefined) {
          throw new Error(
            `${what}: Azure refused the request (HTTP ${status}): ${errorMessage(error)}. Nothing was deployed and ` +
              "the endpoint's traffic was not changed. Check the model, instance-type, instance-count, environment " +
              "and code settings, and the identity's role on the workspace.",
            { cause: error },
          );
        }
        // A plain Error from begin*: the operation started and failed at its first poll.
        return this.deploymentFailed(spec, what, error);
      }
      try {
        await this.waitForOperation(poller, what, () => this.deploymentState(spec.endpoint, spec.deployment));
      } catch (error) {
        return this.deploymentFailed(spec, what, error);
      }
      return await this.retry(`Reading ${what}`, () =>
        this.client.onlineDeployments.get(resourceGroup, workspace, spec.endpoint, spec.deployment),
      );
    });
  }

  private async deploymentState(endpoint: string, deployment: string): Promise<string | undefined> {
    try {
      const dep = await this.client.onlineDeployments.get(
        this.options.resourceGroup,
        this.options.workspace,
        endpoint,
        deployment,
      );
      return dep.properties.provisioningState;
    } catch (error) {
      // Right after creation a GET may not find it yet (eventual consistency); the next line will.
      this.logger.debug(`Reading the state of deployment ${deployment}: ${errorMessage(error)}`);
      return undefined;
    }
  }

  /** Prints the deployment's container logs in collapsed groups and throws what went wrong. */
  private async deploymentFailed(spec: DeploymentSpec, what: string, error: unknown): Promise<never> {
    const state = await this.deploymentState(spec.endpoint, spec.deployment);
    const tail = this.options.logTailLines ?? 200;
    let printed = 0;
    for (const containerType of ["StorageInitializer", "InferenceServer"] as const) {
      try {
        const logs = await this.client.onlineDeployments.getLogs(
          this.options.resourceGroup,
          this.options.workspace,
          spec.endpoint,
          spec.deployment,
          { containerType, tail },
        );
        this.logger.startGroup(
          `Logs of deployment ${spec.deployment}: ${containerType} (last ${tail} lines)`,
        );
        this.logger.info(logs.content === undefined || logs.content === "" ? "(no log lines)" : logs.content);
        this.logger.endGroup();
        printed++;
      } catch (logError) {
        this.logger.warning(
          `Could not fetch the ${containerType} logs of ${spec.deployment}: ${errorMessage(logError)}`,
        );
      }
    }
    const timedOut = error instanceof DeadlineExceededError;
    const message =
      (timedOut
        ? `${errorMessage(error)}`
        : `${what} failed (state ${state ?? "unknown"}): ${errorMessage(error)}.`) +
      (printed > 0 ? " The container logs are in the collapsed groups above." : "") +
      " The endpoint's traffic was not changed." +
      (timedOut
        ? ""
        : " Fix what the logs show (the model files, the environment or the scoring script) and run again.");
    throw timedOut
      ? new DeadlineExceededError(message, { cause: error })
      : new DeploymentFailedError(message, { cause: error });
  }

  /** Deletes a deployment, refused here (before Azure is asked) while it receives live or mirrored traffic. */
  deleteDeployment(endpoint: string, deployment: string): Promise<void> {
    return this.serialize(endpoint, async () => {
      const json = await this.readEndpointJson(endpoint);
      const live = json.properties?.traffic?.[deployment] ?? 0;
      const mirrored = json.properties?.mirrorTraffic?.[deployment] ?? 0;
      if (live > 0 || mirrored > 0) {
        throw new ConfigurationError(
          `Deployment ${deployment} on endpoint ${endpoint} still receives ${live > 0 ? `${live}% of live traffic` : `${mirrored}% of mirrored traffic`}` +
            ` (traffic ${JSON.stringify(json.properties?.traffic ?? {})}). Move its traffic to other deployments first, ` +
            "then delete it; deleting it now would fail those requests.",
        );
      }
      const what = `Deleting deployment ${deployment} on endpoint ${endpoint}`;
      const poller = await this.retry(what, () =>
        this.client.onlineDeployments.beginDelete(
          this.options.resourceGroup,
          this.options.workspace,
          endpoint,
          deployment,
        ),
      );
      await this.waitForOperation(poller, what, () => this.deploymentState(endpoint, deployment));
    });
  }

  // ---- traffic

  /** The endpoint's live traffic map ({} when it has none). */
  async traffic(endpoint: string): Promise<Record<string, number>> {
    return (await this.readEndpointJson(endpoint)).properties?.traffic ?? {};
  }

  /**
   * The endpoint's mirror traffic map ({} when none). Read at `endpointApiVersion`: at the SDK's 2022-10-01 Azure
   * never shows it, so this is {} there whatever the endpoint has.
   */
  async mirrorTraffic(endpoint: string): Promise<Record<string, number>> {
    return (await this.readEndpointJson(endpoint)).properties?.mirrorTraffic ?? {};
  }

  /**
   * Sets the live traffic map: GET the endpoint's JSON, PUT it back whole with the new map, then GET until the map
   * shows (Azure's reads lag its writes). Returns the map before the change.
   */
  setTraffic(endpoint: string, traffic: Record<string, number>): Promise<Record<string, number>> {
    checkTraffic(traffic, "traffic");
    const total = Object.values(traffic).reduce((a, b) => a + b, 0);
    if (total !== 0 && total !== 100) {
      throw new ConfigurationError(
        `Traffic for endpoint ${endpoint} adds up to ${total}%: Azure ML takes a map that sums to 100 (or 0 to stop ` +
          `all traffic). Got ${JSON.stringify(traffic)}.`,
      );
    }
    return this.writeTrafficMap(endpoint, "traffic", traffic);
  }

  /**
   * Mirrors a share of live traffic to one deployment (its answers are discarded). @azure/arm-machinelearning 2.1.1
   * has no mirrorTraffic and its PUT drops it, so this goes through the client's pipeline as raw JSON at
   * `endpointApiVersion`, which must be 2023-04-01 or later; with the SDK's 2022-10-01 it is refused here, before
   * anything is sent.
   */
  setMirrorTraffic(endpoint: string, mirror: Record<string, number>): Promise<Record<string, number>> {
    const apiVersion = this.endpointApiVersion();
    if (apiVersion < MIRROR_API_VERSION) {
      throw new ConfigurationError(
        `Mirror traffic needs Azure ML api-version ${MIRROR_API_VERSION} or later, and endpoints are written at ` +
          `${apiVersion} (what @azure/arm-machinelearning 2.1.1 speaks), which has no mirrorTraffic. Set the ` +
          `endpoint api-version to ${MIRROR_API_VERSION} to use mirroring.`,
      );
    }
    checkTraffic(mirror, "mirror traffic");
    const targets = Object.entries(mirror).filter(([, share]) => share > 0);
    if (targets.length > 1 || targets.some(([, share]) => share > 50)) {
      throw new ConfigurationError(
        `Mirror traffic for endpoint ${endpoint} takes one deployment at up to 50%; got ${JSON.stringify(mirror)}.`,
      );
    }
    return this.writeTrafficMap(endpoint, "mirrorTraffic", mirror);
  }

  private endpointApiVersion(): string {
    return this.options.endpointApiVersion ?? SDK_API_VERSION;
  }

  private writeTrafficMap(endpoint: string, kind: TrafficKind, map: Record<string, number>) {
    return this.serialize(endpoint, async () => {
      const label = kind === "traffic" ? "traffic" : "mirror traffic";
      const before = await this.readEndpointJson(endpoint);
      const previous = before.properties?.[kind] ?? {};
      if (kind === "mirrorTraffic") {
        const live = Object.entries(map).find(
          ([name, share]) => share > 0 && (before.properties?.traffic?.[name] ?? 0) > 0,
        );
        if (live !== undefined) {
          throw new ConfigurationError(
            `Deployment ${live[0]} on endpoint ${endpoint} receives live traffic; Azure ML mirrors only to a deployment ` +
              "with no live traffic.",
          );
        }
      }
      const body = writableEndpoint(before);
      body.properties = { ...body.properties, [kind]: map };
      const what = `Setting the ${label} of endpoint ${endpoint} to ${JSON.stringify(map)}`;
      this.logger.info(`${what} (was ${JSON.stringify(previous)}).`);
      await this.retry(what, () => this.sendEndpointJson(endpoint, "PUT", body));
      await this.waitForMap(endpoint, kind, map, what);
      return previous;
    });
  }

  /** Re-reads the endpoint until `map` shows and the update has finished. */
  private async waitForMap(endpoint: string, kind: TrafficKind, map: Record<string, number>, what: string) {
    const pace = this.pacer(what, "The PUT was accepted; the map may still show later.");
    for (;;) {
      const json = await this.readEndpointJson(endpoint);
      const state = json.properties?.provisioningState;
      const shown = sameMap(json.properties?.[kind] ?? {}, map);
      if (shown && (state === undefined || state === "Succeeded")) {
        this.logger.info(`${what}: done after ${formatDuration(pace.elapsed())}.`);
        return;
      }
      if (state === "Failed" || state === "Canceled") {
        throw new Error(
          `${what}: the endpoint update ended ${state}, and it shows ${JSON.stringify(json.properties?.[kind] ?? {})}. ` +
            "Check the endpoint in Azure ML studio; the deployments named must exist and be Succeeded.",
        );
      }
      if (pace.lineDue()) {
        this.logger.info(
          `${what}: ${state ?? "waiting"}, the endpoint shows ${JSON.stringify(json.properties?.[kind] ?? {})} (${formatDuration(pace.elapsed())} elapsed)`,
        );
      }
      await pace.sleep();
    }
  }

  private async readEndpointJson(endpoint: string): Promise<EndpointJson> {
    const response = await this.retry(`Reading endpoint ${endpoint}`, () =>
      this.sendEndpointJson(endpoint, "GET"),
    );
    return response;
  }

  /** GET or PUT the endpoint as JSON through the client's pipeline (its credential, retries and TLS). */
  private async sendEndpointJson(
    endpoint: string,
    method: "GET" | "PUT",
    body?: EndpointJson,
  ): Promise<EndpointJson> {
    const url =
      `${this.options.armEndpoint.replace(/\/+$/, "")}${this.workspaceId}/onlineEndpoints/${encodeURIComponent(endpoint)}` +
      `?api-version=${encodeURIComponent(this.endpointApiVersion())}`;
    const request = createPipelineRequest({
      url,
      method,
      headers: createHttpHeaders({ accept: "application/json", "content-type": "application/json" }),
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
    const response = await this.client.sendRequest(request);
    const text = response.bodyAsText ?? "";
    if (response.status >= 400) {
      let detail = text;
      try {
        const parsed = JSON.parse(text) as { error?: { code?: string; message?: string } };
        if (parsed.error?.message !== undefined)
          detail = `${parsed.error.code ?? "Error"}: ${parsed.error.message}`;
      } catch {
        // Not JSON: the text itself is the best detail there is.
      }
      // A RestError carries the status and headers retry.ts needs (409, 429 with Retry-After).
      throw new RestError(`${method} endpoint ${endpoint} answered HTTP ${response.status}: ${detail}`, {
        statusCode: response.status,
        request,
        response,
      });
    }
    if (method === "PUT" || text === "") return {};
    return JSON.parse(text) as EndpointJson;
  }

  // ---- waiting

  private progressInterval(): number {
    return this.options.progressIntervalMs ?? 30_000;
  }

  /** Polls a long-running operation to its end, with a progress line at least every progressIntervalMs. */
  private async waitForOperation<T>(
    poller: Poller<T>,
    what: string,
    stateOf: () => Promise<string | undefined>,
  ): Promise<T | undefined> {
    const pace = this.pacer(what, "Azure carries on with the operation; check it in Azure ML studio.");
    this.logger.info(`${what}: started.`);
    while (!poller.isDone()) {
      await pace.sleep();
      // A failed operation throws here (a plain Error: "The long-running operation has failed...").
      await poller.poll();
      if (!poller.isDone() && pace.lineDue()) {
        const state = await stateOf();
        this.logger.info(`${what}: ${state ?? "in progress"} (${formatDuration(pace.elapsed())} elapsed)`);
      }
    }
    this.logger.info(`${what}: done after ${formatDuration(pace.elapsed())}.`);
    return poller.getResult();
  }

  /**
   * Paces one wait. Checks come 1 s, 2 s and 4 s apart, then every pollIntervalMs: most operations that finish fast
   * finish within seconds, and slow ones need not be asked more often. A sleep never runs past the next progress line
   * (so lines come every progressIntervalMs however the checks fall) or past the deadline, where the wait stops.
   */
  private pacer(what: string, meanwhile: string) {
    const pollInterval = this.options.pollIntervalMs ?? 5000;
    const started = this.clock.now();
    let lastLine = started;
    let wait = Math.min(1000, pollInterval);
    return {
      elapsed: () => this.clock.now() - started,
      /** Whether a progress line is due now; if so, the next one is due a progress interval from now. */
      lineDue: () => {
        const now = this.clock.now();
        if (now - lastLine < this.progressInterval()) return false;
        lastLine = now;
        return true;
      },
      sleep: async () => {
        const now = this.clock.now();
        const left = this.options.deadline - now;
        if (left <= 0) {
          throw new DeadlineExceededError(
            `${what}: not finished after ${formatDuration(now - started)}, and the deadline (timeout-minutes) has ` +
              `passed. ${meanwhile} Raise timeout-minutes if it routinely takes this long.`,
          );
        }
        const untilLine = Math.max(0, lastLine + this.progressInterval() - now);
        await this.clock.sleep(Math.min(wait, left, untilLine));
        wait = Math.min(wait * 2, pollInterval);
      },
    };
  }

  private retry<T>(what: string, operation: () => Promise<T>): Promise<T> {
    return withAzureRetry(operation, {
      what,
      deadline: this.options.deadline,
      clock: this.clock,
      logger: this.logger,
      ...(this.options.random === undefined ? {} : { random: this.options.random }),
    });
  }

  /** Runs operations on one endpoint one after another within this process. */
  private serialize<T>(endpoint: string, operation: () => Promise<T>): Promise<T> {
    const key = endpoint.toLowerCase();
    const previous = this.queues.get(key) ?? Promise.resolve();
    const next = previous.then(operation, operation);
    // The queue continues whether this one succeeds or fails.
    this.queues.set(
      key,
      next.then(
        () => undefined,
        () => undefined,
      ),
    );
    return next;
  }
}

function sameUri(a: string | undefined, b: string): boolean {
  return a !== undefined && a.replace(/\/+$/, "").toLowerCase() === b.replace(/\/+$/, "").toLowerCase();
}
