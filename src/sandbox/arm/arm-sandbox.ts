// ARM for Microsoft.MachineLearningServices (api-version 2022-10-01, and 2023-04-01 for the endpoints' mirror
// traffic) on loopback: one workspace with its default datastore (Azurite), model containers and versions, online
// endpoints and deployments with real long-running operations, keys, AML tokens and logs. The official @azure/arm-machinelearning client talks to it unchanged,
// pointed here by its `endpoint` option; every response is checked against the vendored REST specification before
// it leaves, so a shape the real service would never send fails the test that provoked it.
//
// Behaviour copied from the service because callers must cope with it (reference/azure.md §2.4, §3):
// - PUT of an endpoint or deployment: 201 + Azure-AsyncOperation (+ Location), Creating/Updating until the
//   operation ends in Succeeded or Failed (with an error body); PATCH, DELETE and regenerateKeys: 202 + Location.
// - one operation at a time per endpoint (its deployments included): a second mutation gets 409.
// - an endpoint PUT replaces the whole resource; traffic must name existing deployments and sum to 0 or 100.
// - a deployment with traffic cannot be deleted (400).
// - faults: failed and slow provisioning, 409 storms, 429 with Retry-After, read-after-write lag.
import { randomUUID } from "node:crypto";
import type { IncomingMessage } from "node:http";
import { createCreditModel, creditWeightsFor, type ScoringModel } from "../credit-model.ts";
import {
  BodyTooLargeError,
  errorText,
  type LoopbackServer,
  readBody,
  sendJson,
  startLoopbackServer,
} from "../http-server.ts";
import { type EndpointKeys, generateEndpointKey, type ScoringServer } from "../scoring-server.ts";
import type { Azurite } from "./azurite.ts";
import { ArmError, badRequest, notFound, operationConflict } from "./errors.ts";
import { createModelStore, type ModelStore, type SandboxModelVersion } from "./models.ts";
import { createScoringHost, type ScoringHost } from "./scoring-host.ts";
import {
  ARM_API_VERSION,
  loadArmSpec,
  MIRROR_API_VERSION,
  type SpecViolation,
  SUPPORTED_API_VERSIONS,
  withoutLaterAdditions,
} from "./spec.ts";
import { type Caller, callerOf, type SystemData, systemDataFor } from "./system-data.ts";

type Json = Record<string, unknown>;

export const ARM_SCOPE = "https://management.azure.com/.default";
const PROVIDER = "Microsoft.MachineLearningServices";

/**
 * Decides whether a bearer token may call ARM. Return the token's claims (used for `systemData`) or true to allow,
 * false to refuse; a throw refuses with the error's message (never the token). Plug in
 * `(token) => entra.verifyAccessToken(token, "https://management.azure.com")`.
 */
export type ArmAuthorizer = (token: string) => Promise<boolean | Record<string, unknown>>;

/** Builds the model a succeeded deployment serves. Throwing fails the deployment, with the message in its logs. */
export type ModelLoader = (model: SandboxModelVersion) => Promise<ScoringModel>;

export interface ArmTimings {
  /** Endpoint creation. Default 500 ms. */
  endpointCreateMs?: number;
  /** Endpoint update (traffic, tags). Default 200 ms. */
  endpointUpdateMs?: number;
  /** Deployment creation or update, before the model loads. Default 2000 ms. */
  deploymentMs?: number;
  /** Deletes of endpoints and deployments. Default 300 ms. */
  deleteMs?: number;
  /** Key regeneration. Default 100 ms. */
  regenerateKeysMs?: number;
}

export interface ArmSandboxOptions {
  /** Serve on this loopback server (HTTPS when it is). Default: a new one, HTTPS when `tls` is given. */
  server?: LoopbackServer;
  /** Certificate for the server this starts (see tls.ts). Without it the server is plain http. */
  tls?: { certPem: string; keyPem: string };
  authorize: ArmAuthorizer;
  /** The default datastore's storage. Without it the workspace has no datastore. */
  azurite?: Azurite;
  /** Where endpoints score. Default: scoring stand-ins on the ARM server under /endpoints/<name>/score. */
  scoringHost?: ScoringHost;
  /** Default: the credit model, with weights derived from the model name and version. */
  modelLoader?: ModelLoader;
  subscriptionId?: string;
  resourceGroup?: string;
  workspace?: string;
  location?: string;
  timings?: ArmTimings;
  /**
   * `Retry-After` (seconds) on operation polls. Unset: no header, and the SDK polls at its own interval
   * (`updateIntervalInMs`). The spec's 202 responses only allow 10–600, so smaller values go on polls only.
   */
  pollRetryAfterSeconds?: number;
  /** What a response that breaks the REST spec does: `fail` answers 500 naming the violation (default). */
  onSpecViolation?: "fail" | "record";
}

export interface RequestMatch {
  /** HTTP method; default any. */
  method?: string;
  /** A substring of the path (e.g. `/deployments/green`); default any. */
  pathIncludes?: string;
}

export interface ProvisioningFailure {
  /** The operation's error message. Default: Azure ML's "User container has crashed or terminated". */
  message?: string;
  /** Lines the deployment's InferenceServer log gets, explaining why. */
  logLines?: string[];
  /** How many provisionings of this deployment fail. Default 1. */
  times?: number;
}

export interface ArmFaults {
  /** The next provisioning(s) of this deployment name fail, with these log lines. */
  failProvisioning(deployment: string, failure?: ProvisioningFailure): void;
  /** Provisioning of this deployment (or every one, with "*") takes this long instead of the default. */
  slowProvisioning(deployment: string, ms: number): void;
  /** The next `count` mutations (PUT, PATCH, DELETE, POST regenerateKeys) matching get 409 Conflict. */
  conflicts(count: number, match?: RequestMatch): void;
  /** The next `count` requests matching get 429 with this Retry-After. */
  throttle(count: number, retryAfterSeconds: number, match?: RequestMatch): void;
  /** For this long after an endpoint or deployment changes, GETs of it return the state before the change. */
  readAfterWriteLag(ms: number): void;
  clear(): void;
}

export interface ArmRequestRecord {
  method: string;
  path: string;
  status: number;
  /** Epoch ms at receipt. */
  time: number;
  operationId?: string;
}

export interface DeploymentSnapshot {
  provisioningState: string;
  model: string | undefined;
  instanceCount: number;
}

export interface EndpointSnapshot {
  provisioningState: string;
  authMode: string;
  traffic: Record<string, number>;
  mirrorTraffic: Record<string, number>;
  keys: EndpointKeys;
  scoringUri: string;
  deployments: Record<string, DeploymentSnapshot>;
  tags: Record<string, string>;
}

export interface ArmSandbox {
  /** The ARM base URL: the client's `endpoint` (with `credentialScopes: [ARM_SCOPE]`). */
  readonly endpoint: string;
  readonly subscriptionId: string;
  readonly resourceGroup: string;
  readonly workspace: string;
  readonly location: string;
  /** `/subscriptions/.../workspaces/<name>`: the prefix of every resource id. */
  readonly workspaceId: string;
  /**
   * Where the default datastore's blobs really are (Azurite, path-style). Production code computes
   * `<protocol>://<accountName>.blob.<endpoint>` from the datastore, which cannot reach a loopback emulator, so it
   * must take a blob endpoint override from configuration; this is the value to configure.
   */
  readonly blobServiceUrl: string | undefined;
  readonly faults: ArmFaults;
  readonly requests: readonly ArmRequestRecord[];
  readonly specViolations: readonly SpecViolation[];
  onlineEndpoint(name: string): EndpointSnapshot | undefined;
  /** The scoring stand-in behind an endpoint (once a deployment has succeeded). */
  scoringServer(endpoint: string): ScoringServer | undefined;
  /** The ARM id of a model version: `<workspaceId>/models/<name>/versions/<version>`. */
  modelVersionId(name: string, version: string): string;
  close(): Promise<void>;
}

interface DeploymentRecord {
  name: string;
  location: string;
  tags: Record<string, string>;
  sku: Json;
  kind: string | undefined;
  identity: Json | undefined;
  /** The deployment's properties as last PUT (minus the read-only ones). */
  properties: Json;
  provisioningState: string;
  systemData: SystemData;
  logs: { StorageInitializer: string[]; InferenceServer: string[] };
  /** The model it serves once provisioned (kept through a failed update, as the old containers keep running). */
  model: ScoringModel | undefined;
}

interface EndpointRecord {
  name: string;
  location: string;
  tags: Record<string, string>;
  identity: Json | undefined;
  kind: string | undefined;
  sku: Json | undefined;
  authMode: string;
  description: string | undefined;
  properties: Record<string, string>;
  publicNetworkAccess: string;
  compute: string | undefined;
  traffic: Record<string, number>;
  /** Only readable and writable at api-version 2023-04-01 or later; a PUT at an older version clears it. */
  mirrorTraffic: Record<string, number>;
  provisioningState: string;
  keys: EndpointKeys;
  systemData: SystemData;
  deployments: Map<string, DeploymentRecord>;
  /** The running operation, if any: a second mutation gets 409 while it is set. */
  busy: Operation | undefined;
}

interface Operation {
  id: string;
  description: string;
  status: "InProgress" | "Succeeded" | "Failed";
  startTime: string;
  endTime?: string;
  error?: { code: string; message: string };
  /** What the Location URL answers once the operation has succeeded (PATCH: the resource). */
  result?: () => Json | undefined;
}

interface Reply {
  status: number;
  body?: unknown;
  headers?: Record<string, string>;
}

interface Lagged {
  until: number;
  /** The JSON a GET returned before the change; undefined when the resource did not exist. */
  before: Json | undefined;
}

const DEFAULT_TIMINGS: Required<ArmTimings> = {
  endpointCreateMs: 500,
  endpointUpdateMs: 200,
  deploymentMs: 2000,
  deleteMs: 300,
  regenerateKeysMs: 100,
};
const MAX_BODY_BYTES = 4 * 1024 * 1024;
/**
 * Azure ML's own rule for endpoint and deployment names (stricter than the SDK's parameter pattern): a letter
 * first, then letters, digits and hyphens, 3 to 32 characters. Endpoint names also become DNS labels.
 */
const ENDPOINT_NAME = /^[a-zA-Z][a-zA-Z0-9-]{2,31}$/;

export async function startArmSandbox(options: ArmSandboxOptions): Promise<ArmSandbox> {
  const spec = loadArmSpec();
  const ownServer = options.server === undefined;
  const server =
    options.server ?? (await startLoopbackServer(options.tls === undefined ? {} : { tls: options.tls }));
  const subscriptionId = options.subscriptionId ?? "00000000-0000-0000-0000-000000000aml";
  const resourceGroup = options.resourceGroup ?? "aml-edge-rg";
  const workspace = options.workspace ?? "aml-edge-ws";
  const location = options.location ?? "westeurope";
  const timings = { ...DEFAULT_TIMINGS, ...options.timings };
  const workspaceId = `/subscriptions/${subscriptionId}/resourceGroups/${resourceGroup}/providers/${PROVIDER}/workspaces/${workspace}`;
  const workspaceGuid = randomUUID();
  const host = options.scoringHost ?? createScoringHost(server);
  const ownHost = options.scoringHost === undefined;
  const modelStore: ModelStore = createModelStore({
    workspaceId,
    workspace,
    resourceGroup,
    subscriptionId,
    azurite: options.azurite,
    containerName: `azureml-blobstore-${workspaceGuid}`,
  });
  try {
    await modelStore.init();
  } catch (error) {
    // Nothing is served yet; do not leave the server this call started listening.
    if (ownServer) await server.close();
    throw error;
  }
  const modelLoader: ModelLoader =
    options.modelLoader ?? (async (m) => createCreditModel(creditWeightsFor(`${m.name}:${m.version}`)));

  const endpoints = new Map<string, EndpointRecord>();
  const operations = new Map<string, Operation>();
  const lagged = new Map<string, Lagged>();
  const requests: ArmRequestRecord[] = [];
  const violations: SpecViolation[] = [];
  const timers = new Set<NodeJS.Timeout>();
  let closed = false;

  // Fault state.
  const failures = new Map<string, Required<ProvisioningFailure>>();
  const slow = new Map<string, number>();
  let conflictFaults: { remaining: number; match: RequestMatch }[] = [];
  let throttleFaults: { remaining: number; retryAfterSeconds: number; match: RequestMatch }[] = [];
  let lagMs = 0;

  /**
   * Runs the rest of an operation after `ms`. Should that throw, the operation fails with the error instead of
   * staying InProgress, which would hold the endpoint's one-operation lock forever.
   */
  const later = (ep: EndpointRecord, op: Operation, ms: number, task: () => Promise<void> | void) => {
    const timer = setTimeout(() => {
      timers.delete(timer);
      if (closed) return;
      Promise.resolve()
        .then(task)
        .catch((error: unknown) => {
          if (op.status === "InProgress") {
            finishOperation(ep, op, { code: "InternalServerError", message: errorText(error) });
          }
        });
    }, ms);
    timers.add(timer);
  };

  const now = () => new Date().toISOString();

  // ---- rendering -------------------------------------------------------------------------------------------

  const endpointId = (name: string) => `${workspaceId}/onlineEndpoints/${name}`;
  const deploymentId = (ep: string, name: string) => `${endpointId(ep)}/deployments/${name}`;

  const renderEndpoint = (ep: EndpointRecord): Json => ({
    id: endpointId(ep.name),
    name: ep.name,
    type: `${PROVIDER}/workspaces/onlineEndpoints`,
    location: ep.location,
    tags: { ...ep.tags },
    ...(ep.identity === undefined ? {} : { identity: ep.identity }),
    ...(ep.kind === undefined ? {} : { kind: ep.kind }),
    ...(ep.sku === undefined ? {} : { sku: ep.sku }),
    systemData: { ...ep.systemData },
    properties: {
      authMode: ep.authMode,
      ...(ep.description === undefined ? {} : { description: ep.description }),
      properties: { ...ep.properties },
      scoringUri: host.scoringUri(ep.name),
      provisioningState: ep.provisioningState,
      publicNetworkAccess: ep.publicNetworkAccess,
      traffic: { ...ep.traffic },
      // Removed again for callers at 2022-10-01 (see send), which does not know it.
      mirrorTraffic: { ...ep.mirrorTraffic },
      // Write-only: "This property will always be returned as null."
      keys: null,
      ...(ep.compute === undefined ? {} : { compute: ep.compute }),
    },
  });

  const renderDeployment = (ep: EndpointRecord, dep: DeploymentRecord): Json => ({
    id: deploymentId(ep.name, dep.name),
    name: dep.name,
    type: `${PROVIDER}/workspaces/onlineEndpoints/deployments`,
    location: dep.location,
    tags: { ...dep.tags },
    ...(dep.kind === undefined ? {} : { kind: dep.kind }),
    ...(dep.identity === undefined ? {} : { identity: dep.identity }),
    sku: { ...dep.sku },
    systemData: { ...dep.systemData },
    properties: { ...dep.properties, provisioningState: dep.provisioningState },
  });

  /** A GET during read-after-write lag sees the state from before the change. */
  const readThroughLag = (key: string, current: Json | undefined): Json | undefined => {
    const lag = lagged.get(key);
    if (lag === undefined) return current;
    if (Date.now() >= lag.until) {
      lagged.delete(key);
      return current;
    }
    return lag.before;
  };
  /** Call right before a change becomes visible: remembers what GET showed until then, for the lag. */
  const startLag = (key: string, before: Json | undefined) => {
    if (lagMs <= 0) return;
    const existing = lagged.get(key);
    // During an existing lag window the old state stays the one reported.
    lagged.set(key, { until: Date.now() + lagMs, before: existing?.before ?? before });
  };

  // ---- operations ------------------------------------------------------------------------------------------

  const operationsBase = () =>
    `${server.origin}/subscriptions/${subscriptionId}/providers/${PROVIDER}/locations/${location}`;
  const asyncOperationUrl = (op: Operation) =>
    `${operationsBase()}/mfeOperationsStatus/${op.id}?api-version=${ARM_API_VERSION}`;
  const locationUrl = (op: Operation) =>
    `${operationsBase()}/mfeOperationResults/${op.id}?api-version=${ARM_API_VERSION}`;

  const startOperation = (ep: EndpointRecord, description: string): Operation => {
    const op: Operation = { id: randomUUID(), description, status: "InProgress", startTime: now() };
    operations.set(op.id, op);
    ep.busy = op;
    return op;
  };
  const finishOperation = (
    ep: EndpointRecord | undefined,
    op: Operation,
    error?: { code: string; message: string },
  ) => {
    op.status = error === undefined ? "Succeeded" : "Failed";
    op.endTime = now();
    if (error !== undefined) op.error = error;
    if (ep !== undefined && ep.busy === op) ep.busy = undefined;
  };
  const retryAfterOnPoll = (): Record<string, string> =>
    options.pollRetryAfterSeconds === undefined
      ? {}
      : { "retry-after": String(options.pollRetryAfterSeconds) };
  const retryAfterOnAccept = (): Record<string, string> => {
    const seconds = options.pollRetryAfterSeconds;
    return seconds !== undefined && seconds >= 10 && seconds <= 600 ? { "retry-after": String(seconds) } : {};
  };
  const accepted = (op: Operation): Reply => ({
    status: 202,
    headers: {
      location: locationUrl(op),
      "x-ms-async-operation-timeout": "PT1H",
      ...retryAfterOnAccept(),
    },
  });
  const createdWithOperation = (op: Operation, body: Json): Reply => ({
    status: 201,
    body,
    // Azure-AsyncOperation is what core-lro polls (it outranks Location); Location answers 202 until the end and
    // then the resource, for clients that poll it instead.
    headers: {
      "azure-asyncoperation": asyncOperationUrl(op),
      location: locationUrl(op),
      "x-ms-async-operation-timeout": "PT1H",
    },
  });

  const assertIdle = (ep: EndpointRecord) => {
    if (ep.busy !== undefined) throw operationConflict(workspace, ep.busy.description);
  };

  // ---- scoring ---------------------------------------------------------------------------------------------

  const syncScoring = async (ep: EndpointRecord) => {
    const models: Record<string, ScoringModel> = {};
    for (const dep of ep.deployments.values()) if (dep.model !== undefined) models[dep.name] = dep.model;
    await host.sync(ep.name, { models, traffic: ep.traffic, keys: ep.keys });
  };

  const loadDeploymentModel = async (dep: DeploymentRecord): Promise<ScoringModel> => {
    const modelId = dep.properties.model;
    if (typeof modelId !== "string" || modelId === "") {
      // A deployment without a registered model runs its own scoring script; the stand-in for that is the
      // credit model the scoring server would pick for this deployment name.
      dep.logs.StorageInitializer.push("No model asset referenced; nothing to download.");
      return createCreditModel(creditWeightsFor(dep.name));
    }
    const version = modelStore.resolveId(modelId);
    if (version === undefined) throw new ProvisioningError(`Could not find model asset ${modelId}.`);
    dep.logs.StorageInitializer.push(
      `Downloading model ${version.name}:${version.version} from ${version.modelUri ?? "(no uri)"}`,
    );
    const model = await modelLoader(version);
    dep.logs.StorageInitializer.push("Model download complete.");
    return model;
  };

  const provisionDeployment = async (ep: EndpointRecord, dep: DeploymentRecord, op: Operation) => {
    const failure = failures.get(dep.name);
    try {
      dep.logs.InferenceServer.push(`${now()} Starting AzureML Inference Server for deployment ${dep.name}`);
      if (failure !== undefined) {
        failure.times -= 1;
        if (failure.times <= 0) failures.delete(dep.name);
        dep.logs.InferenceServer.push(...failure.logLines);
        throw new ProvisioningError(failure.message);
      }
      const model = await loadDeploymentModel(dep);
      if (closed) return;
      dep.model = model;
      dep.logs.InferenceServer.push(`${now()} Model loaded; listening on port 31311`);
      dep.logs.InferenceServer.push(`${now()} Readiness probe succeeded`);
      startLag(`dep:${ep.name}/${dep.name}`, renderDeployment(ep, dep));
      dep.provisioningState = "Succeeded";
      await syncScoring(ep);
      finishOperation(ep, op);
    } catch (error) {
      const message =
        error instanceof ProvisioningError
          ? error.message
          : `User container has crashed or terminated: ${errorText(error)}`;
      dep.logs.InferenceServer.push(`${now()} ERROR ${message}`);
      startLag(`dep:${ep.name}/${dep.name}`, renderDeployment(ep, dep));
      dep.provisioningState = "Failed";
      finishOperation(ep, op, {
        code: "ResourceNotReady",
        message: `${message} Please see troubleshooting guide, available here: https://aka.ms/oe-tsg#error-resourcenotready`,
      });
    }
  };

  // ---- handlers --------------------------------------------------------------------------------------------

  const getEndpoint = (name: string): EndpointRecord => {
    // An endpoint being deleted is still there (provisioningState Deleting) until the operation ends.
    const ep = endpoints.get(name);
    if (ep === undefined) {
      throw notFound(`${PROVIDER}/workspaces/${workspace}/onlineEndpoints`, name, resourceGroup);
    }
    return ep;
  };
  const getDeployment = (ep: EndpointRecord, name: string): DeploymentRecord => {
    const dep = ep.deployments.get(name);
    if (dep === undefined) {
      throw notFound(
        `${PROVIDER}/workspaces/${workspace}/onlineEndpoints/${ep.name}/deployments`,
        name,
        resourceGroup,
      );
    }
    return dep;
  };

  const validateTraffic = (ep: EndpointRecord, traffic: Record<string, number>) => {
    let total = 0;
    for (const [name, weight] of Object.entries(traffic)) {
      const dep = ep.deployments.get(name);
      if (dep === undefined) {
        throw badRequest(
          `Traffic rules are invalid: deployment ${name} does not exist on endpoint ${ep.name}.`,
        );
      }
      if (!Number.isInteger(weight) || weight < 0 || weight > 100) {
        throw badRequest(
          `Traffic rules are invalid: the traffic of ${name} must be an integer from 0 to 100.`,
        );
      }
      if (weight > 0 && dep.provisioningState !== "Succeeded") {
        throw badRequest(
          `Traffic rules are invalid: deployment ${name} is ${dep.provisioningState}; only a succeeded deployment can take traffic.`,
        );
      }
      total += weight;
    }
    if (total !== 0 && total !== 100) {
      throw badRequest(`Traffic rules are invalid: the values must sum to 0 or 100, not ${total}.`);
    }
  };

  /** Azure's mirror rules: one target, at most 50 %, succeeded, and never a deployment that takes live traffic. */
  const validateMirror = (
    ep: EndpointRecord,
    traffic: Record<string, number>,
    mirror: Record<string, number>,
  ) => {
    const targets = Object.entries(mirror).filter(([, weight]) => weight !== 0);
    if (targets.length > 1) {
      throw badRequest(
        `Mirror traffic can go to one deployment only; got ${targets.map(([n]) => n).join(", ")}.`,
      );
    }
    for (const [name, weight] of targets) {
      const dep = ep.deployments.get(name);
      if (dep === undefined) {
        throw badRequest(
          `Mirror traffic rules are invalid: deployment ${name} does not exist on endpoint ${ep.name}.`,
        );
      }
      if (!Number.isInteger(weight) || weight < 0 || weight > 50) {
        throw badRequest(
          `Mirror traffic rules are invalid: the mirror traffic of ${name} must be an integer from 0 to 50.`,
        );
      }
      if (dep.provisioningState !== "Succeeded") {
        throw badRequest(`Mirror traffic rules are invalid: deployment ${name} is ${dep.provisioningState}.`);
      }
      if ((traffic[name] ?? 0) > 0) {
        throw badRequest(`Deployment ${name} cannot receive both live and mirror traffic.`);
      }
    }
  };

  const putEndpoint = (name: string, body: Json, caller: Caller, apiVersion: string): Reply => {
    if (!ENDPOINT_NAME.test(name)) {
      throw badRequest(
        `${name} is not a valid endpoint name: it must start with a letter and have 3-32 letters, digits or hyphens.`,
      );
    }
    if (typeof body.location === "string" && body.location.toLowerCase() !== location.toLowerCase()) {
      throw badRequest(
        `Endpoint ${name} must be in its workspace's location ${location}, not ${body.location}.`,
      );
    }
    const properties = (body.properties ?? {}) as Json;
    const traffic = (properties.traffic ?? {}) as Record<string, number>;
    // Older api-versions do not know mirrorTraffic, and a PUT replaces the resource: the mirror setting is lost,
    // as Microsoft's docs warn for older CLI and SDK versions.
    const mirror =
      apiVersion >= MIRROR_API_VERSION ? ((properties.mirrorTraffic ?? {}) as Record<string, number>) : {};
    const existing = endpoints.get(name);
    if (existing !== undefined) {
      assertIdle(existing);
      validateTraffic(existing, traffic);
      validateMirror(existing, traffic, mirror);
      if (properties.authMode !== existing.authMode) {
        throw badRequest(`The auth mode of endpoint ${name} cannot change (it is ${existing.authMode}).`);
      }
      const before = renderEndpoint(existing);
      const op = startOperation(existing, `update of endpoint ${name}`);
      existing.provisioningState = "Updating";
      // Full replacement: what the PUT leaves out is gone, as with the real service.
      existing.tags = { ...((body.tags ?? {}) as Record<string, string>) };
      existing.identity = body.identity as Json | undefined;
      existing.kind = body.kind as string | undefined;
      existing.sku = body.sku as Json | undefined;
      existing.description = properties.description as string | undefined;
      existing.properties = {
        ...existing.properties,
        ...((properties.properties ?? {}) as Record<string, string>),
      };
      existing.publicNetworkAccess = (properties.publicNetworkAccess as string | undefined) ?? "Enabled";
      existing.compute = properties.compute as string | undefined;
      existing.systemData = systemDataFor(caller, existing.systemData);
      const nextTraffic = { ...traffic };
      const nextMirror = { ...mirror };
      later(existing, op, timings.endpointUpdateMs, () => {
        startLag(`ep:${name}`, before);
        existing.traffic = nextTraffic;
        existing.mirrorTraffic = nextMirror;
        host.setMirrorTraffic(name, nextMirror);
        existing.provisioningState = "Succeeded";
        host.setTraffic(name, nextTraffic);
        finishOperation(existing, op);
      });
      // The answer echoes what was asked for, Updating; GETs show the new maps once the operation has finished.
      const echoed = renderEndpoint(existing);
      echoed.properties = {
        ...(echoed.properties as Json),
        traffic: nextTraffic,
        mirrorTraffic: nextMirror,
      };
      op.result = () =>
        endpointAtVersion("OnlineEndpoints_Get", apiVersion, renderEndpoint(existing)) as Json;
      return createdWithOperation(op, echoed);
    }
    if ([...Object.values(traffic), ...Object.values(mirror)].some((w) => w !== 0)) {
      throw badRequest(`Traffic rules are invalid: endpoint ${name} has no deployments yet.`);
    }
    const initialKeys = properties.keys as { primaryKey?: string; secondaryKey?: string } | null | undefined;
    const ep: EndpointRecord = {
      name,
      location: (body.location as string | undefined) ?? location,
      tags: { ...((body.tags ?? {}) as Record<string, string>) },
      identity: body.identity as Json | undefined,
      kind: body.kind as string | undefined,
      sku: body.sku as Json | undefined,
      authMode: properties.authMode as string,
      description: properties.description as string | undefined,
      properties: { ...((properties.properties ?? {}) as Record<string, string>) },
      publicNetworkAccess: (properties.publicNetworkAccess as string | undefined) ?? "Enabled",
      compute: properties.compute as string | undefined,
      traffic: {},
      mirrorTraffic: {},
      provisioningState: "Creating",
      keys: {
        primary: initialKeys?.primaryKey ?? generateEndpointKey(),
        secondary: initialKeys?.secondaryKey ?? generateEndpointKey(),
      },
      systemData: systemDataFor(caller),
      deployments: new Map(),
      busy: undefined,
    };
    endpoints.set(name, ep);
    const op = startOperation(ep, `creation of endpoint ${name}`);
    later(ep, op, timings.endpointCreateMs, () => {
      startLag(`ep:${name}`, undefined);
      ep.provisioningState = "Succeeded";
      finishOperation(ep, op);
    });
    op.result = () => endpointAtVersion("OnlineEndpoints_Get", apiVersion, renderEndpoint(ep)) as Json;
    return createdWithOperation(op, renderEndpoint(ep));
  };

  const patchEndpoint = (name: string, body: Json, caller: Caller, apiVersion: string): Reply => {
    const ep = getEndpoint(name);
    assertIdle(ep);
    const op = startOperation(ep, `update of endpoint ${name}`);
    const before = renderEndpoint(ep);
    ep.provisioningState = "Updating";
    later(ep, op, timings.endpointUpdateMs, () => {
      startLag(`ep:${name}`, before);
      if (body.tags !== undefined) ep.tags = { ...(body.tags as Record<string, string>) };
      if (body.identity !== undefined) ep.identity = body.identity as Json;
      ep.systemData = systemDataFor(caller, ep.systemData);
      ep.provisioningState = "Succeeded";
      op.result = () => endpointAtVersion("OnlineEndpoints_Update", apiVersion, renderEndpoint(ep)) as Json;
      finishOperation(ep, op);
    });
    return accepted(op);
  };

  const deleteEndpoint = (name: string): Reply => {
    const ep = endpoints.get(name);
    if (ep === undefined) return { status: 204 };
    assertIdle(ep);
    const op = startOperation(ep, `deletion of endpoint ${name}`);
    ep.provisioningState = "Deleting";
    for (const dep of ep.deployments.values()) dep.provisioningState = "Deleting";
    later(ep, op, timings.deleteMs, async () => {
      try {
        await host.removeEndpoint(name);
      } catch (error) {
        // A delete that did not happen leaves the endpoint there, Failed, as Azure reports an unfinished delete.
        ep.provisioningState = "Failed";
        for (const dep of ep.deployments.values()) dep.provisioningState = "Failed";
        throw error;
      }
      endpoints.delete(name);
      lagged.delete(`ep:${name}`);
      finishOperation(ep, op);
    });
    return accepted(op);
  };

  const putDeployment = (epName: string, name: string, body: Json, caller: Caller): Reply => {
    if (!ENDPOINT_NAME.test(name)) {
      throw badRequest(
        `${name} is not a valid deployment name: it must start with a letter and have 3-32 letters, digits or hyphens.`,
      );
    }
    const ep = getEndpoint(epName);
    if (typeof body.location === "string" && body.location.toLowerCase() !== ep.location.toLowerCase()) {
      throw badRequest(
        `Deployment ${name} must be in its endpoint's location ${ep.location}, not ${body.location}.`,
      );
    }
    assertIdle(ep);
    const properties = { ...((body.properties ?? {}) as Json) };
    delete properties.provisioningState;
    if (properties.endpointComputeType !== "Managed") {
      throw badRequest(
        `Deployment ${name}: endpointComputeType ${String(properties.endpointComputeType)} is not supported here; managed online endpoints take "Managed".`,
      );
    }
    if (typeof properties.model === "string" && properties.model !== "") {
      if (modelStore.resolveId(properties.model) === undefined) {
        throw badRequest(
          `Deployment ${name}: model ${properties.model} was not found; give the ARM id of a registered model version (${workspaceId}/models/<name>/versions/<version>).`,
        );
      }
    }
    const existing = ep.deployments.get(name);
    const sku = { name: "Default", tier: "Standard", capacity: 1, ...((body.sku ?? {}) as Json) };
    const dep: DeploymentRecord = existing ?? {
      name,
      location: (body.location as string | undefined) ?? ep.location,
      tags: {},
      sku,
      kind: undefined,
      identity: undefined,
      properties: {},
      provisioningState: "Creating",
      systemData: systemDataFor(caller),
      logs: { StorageInitializer: [], InferenceServer: [] },
      model: undefined,
    };
    const before = existing === undefined ? undefined : renderDeployment(ep, existing);
    dep.tags = { ...((body.tags ?? {}) as Record<string, string>) };
    dep.sku = sku;
    dep.kind = body.kind as string | undefined;
    dep.identity = body.identity as Json | undefined;
    dep.properties = properties;
    dep.provisioningState = existing === undefined ? "Creating" : "Updating";
    dep.systemData = systemDataFor(caller, existing?.systemData);
    dep.logs.StorageInitializer.push(
      `${now()} Provisioning ${existing === undefined ? "new" : "updated"} deployment ${name}`,
    );
    if (existing === undefined) ep.deployments.set(name, dep);
    startLag(`dep:${epName}/${name}`, before);
    const op = startOperation(ep, `${existing === undefined ? "creation" : "update"} of deployment ${name}`);
    later(ep, op, slow.get(name) ?? slow.get("*") ?? timings.deploymentMs, () =>
      provisionDeployment(ep, dep, op),
    );
    op.result = () => renderDeployment(ep, dep);
    return createdWithOperation(op, renderDeployment(ep, dep));
  };

  const patchDeployment = (epName: string, name: string, body: Json, caller: Caller): Reply => {
    const ep = getEndpoint(epName);
    const dep = getDeployment(ep, name);
    assertIdle(ep);
    const op = startOperation(ep, `update of deployment ${name}`);
    const before = renderDeployment(ep, dep);
    dep.provisioningState = body.sku === undefined ? "Updating" : "Scaling";
    later(ep, op, timings.endpointUpdateMs, () => {
      startLag(`dep:${epName}/${name}`, before);
      if (body.tags !== undefined) dep.tags = { ...(body.tags as Record<string, string>) };
      if (body.sku !== undefined) dep.sku = { ...dep.sku, ...(body.sku as Json) };
      dep.systemData = systemDataFor(caller, dep.systemData);
      dep.provisioningState = "Succeeded";
      op.result = () => renderDeployment(ep, dep);
      finishOperation(ep, op);
    });
    return accepted(op);
  };

  const deleteDeployment = (epName: string, name: string): Reply => {
    const ep = getEndpoint(epName);
    const dep = ep.deployments.get(name);
    if (dep === undefined) return { status: 204 };
    // While another operation runs, the traffic it may be changing is not settled: conflict first.
    assertIdle(ep);
    const traffic = ep.traffic[name] ?? 0;
    if (traffic > 0) {
      throw badRequest(
        `Deployment ${name} cannot be deleted: it receives ${traffic}% of endpoint ${epName}'s traffic. Set its traffic to 0 first.`,
      );
    }
    const mirrored = ep.mirrorTraffic[name] ?? 0;
    if (mirrored > 0) {
      throw badRequest(
        `Deployment ${name} cannot be deleted: it receives ${mirrored}% of endpoint ${epName}'s mirror traffic. Set its mirror traffic to 0 first.`,
      );
    }
    const op = startOperation(ep, `deletion of deployment ${name}`);
    dep.provisioningState = "Deleting";
    later(ep, op, timings.deleteMs, async () => {
      const { [name]: _removed, ...rest } = ep.traffic;
      const { [name]: _unmirrored, ...mirrorRest } = ep.mirrorTraffic;
      const models: Record<string, ScoringModel> = {};
      for (const other of ep.deployments.values()) {
        if (other.name !== name && other.model !== undefined) models[other.name] = other.model;
      }
      try {
        // The scoring side first: if it cannot drop the deployment, ARM still has it (Failed), not a ghost.
        await host.sync(ep.name, { models, traffic: rest, keys: ep.keys });
      } catch (error) {
        dep.provisioningState = "Failed";
        throw error;
      }
      ep.deployments.delete(name);
      lagged.delete(`dep:${epName}/${name}`);
      ep.traffic = rest;
      ep.mirrorTraffic = mirrorRest;
      host.setMirrorTraffic(epName, mirrorRest);
      finishOperation(ep, op);
    });
    return accepted(op);
  };

  const regenerateKeys = (epName: string, body: Json): Reply => {
    const ep = getEndpoint(epName);
    if (ep.authMode !== "Key") {
      throw badRequest(
        `Endpoint ${epName} uses ${ep.authMode} authentication; only Key endpoints have keys.`,
      );
    }
    assertIdle(ep);
    const op = startOperation(ep, `key regeneration of endpoint ${epName}`);
    const value =
      typeof body.keyValue === "string" && body.keyValue !== "" ? body.keyValue : generateEndpointKey();
    later(ep, op, timings.regenerateKeysMs, () => {
      ep.keys =
        body.keyType === "Primary" ? { ...ep.keys, primary: value } : { ...ep.keys, secondary: value };
      host.setKeys(epName, ep.keys);
      finishOperation(ep, op);
    });
    return accepted(op);
  };

  const operationStatus = (id: string): Reply => {
    const op = operations.get(id);
    if (op === undefined) throw new ArmError(404, "NotFound", `Operation ${id} was not found.`);
    return {
      status: 200,
      body: {
        id: `/subscriptions/${subscriptionId}/providers/${PROVIDER}/locations/${location}/mfeOperationsStatus/${op.id}`,
        name: op.id,
        status: op.status,
        startTime: op.startTime,
        ...(op.endTime === undefined ? {} : { endTime: op.endTime }),
        ...(op.error === undefined ? {} : { error: op.error }),
      },
      headers: op.status === "InProgress" ? retryAfterOnPoll() : {},
    };
  };

  const operationResult = (id: string): Reply => {
    const op = operations.get(id);
    if (op === undefined) throw new ArmError(404, "NotFound", `Operation ${id} was not found.`);
    if (op.status === "InProgress") {
      return { status: 202, headers: { location: locationUrl(op), ...retryAfterOnPoll() } };
    }
    if (op.status === "Failed") {
      const error = op.error ?? { code: "InternalServerError", message: "the operation failed" };
      throw new ArmError(400, error.code, error.message);
    }
    const result = op.result?.();
    return result === undefined ? { status: 200 } : { status: 200, body: result };
  };

  // ---- routing ---------------------------------------------------------------------------------------------

  interface Route {
    operationId: string | undefined;
    run: () => Reply | Promise<Reply>;
  }

  const route = (
    method: string,
    path: string,
    query: URLSearchParams,
    body: () => Json,
    caller: Caller,
    apiVersion: string,
  ): Route => {
    const operationsMatch =
      /^\/subscriptions\/([^/]+)\/providers\/microsoft\.machinelearningservices\/locations\/([^/]+)\/(mfeoperationsstatus|mfeoperationresults)\/([^/]+)$/i.exec(
        path,
      );
    if (operationsMatch !== null && method === "GET") {
      const [, , , kind = "", id = ""] = operationsMatch;
      return {
        operationId: undefined,
        run: () => (kind.toLowerCase() === "mfeoperationsstatus" ? operationStatus(id) : operationResult(id)),
      };
    }
    const prefix =
      /^\/subscriptions\/([^/]+)\/resourcegroups\/([^/]+)\/providers\/microsoft\.machinelearningservices\/workspaces\/([^/]+)(\/.*)?$/i.exec(
        path,
      );
    if (prefix === null) throw new ArmError(404, "NotFound", `No route for ${method} ${path}.`);
    const [, sub = "", rg = "", ws = "", rest = ""] = prefix;
    if (sub !== subscriptionId) {
      throw new ArmError(404, "SubscriptionNotFound", `The subscription '${sub}' could not be found.`);
    }
    if (rg.toLowerCase() !== resourceGroup.toLowerCase()) {
      throw new ArmError(404, "ResourceGroupNotFound", `Resource group '${rg}' could not be found.`);
    }
    if (ws.toLowerCase() !== workspace.toLowerCase()) {
      throw notFound(`${PROVIDER}/workspaces`, ws, resourceGroup);
    }
    const parts = rest
      .split("/")
      .filter((p) => p !== "")
      .map(decodeURIComponent);
    const r = (operationId: string | undefined, run: () => Reply | Promise<Reply>): Route => ({
      operationId,
      run,
    });
    const collection = parts[0]?.toLowerCase();
    const key = `${method} ${parts.length}`;

    if (collection === undefined && method === "GET") {
      return r(undefined, () => ({ status: 200, body: renderWorkspace() }));
    }
    if (collection === "datastores") {
      const name = parts[1];
      if (key === "GET 1")
        return r("Datastores_List", () => {
          // The one datastore is the default: `isDefault=false` asks for the others, of which there are none.
          const all = modelStore.listDatastores();
          return { status: 200, body: { value: query.get("isDefault") === "false" ? [] : all } };
        });
      if (key === "GET 2" && name !== undefined)
        return r("Datastores_Get", () => ({ status: 200, body: modelStore.getDatastore(name) }));
      if (key === "POST 3" && name !== undefined && parts[2]?.toLowerCase() === "listsecrets") {
        return r("Datastores_ListSecrets", () => ({ status: 200, body: modelStore.datastoreSecrets(name) }));
      }
    }
    if (collection === "models") {
      const name = parts[1];
      const version = parts[3];
      if (key === "GET 1")
        return r("ModelContainers_List", () => ({
          status: 200,
          body: { value: modelStore.listContainers() },
        }));
      if (name !== undefined && parts.length === 2) {
        if (method === "GET")
          return r("ModelContainers_Get", () => ({ status: 200, body: modelStore.getContainer(name) }));
        if (method === "PUT")
          return r("ModelContainers_CreateOrUpdate", () => modelStore.putContainer(name, body(), caller));
      }
      if (name !== undefined && parts[2]?.toLowerCase() === "versions") {
        if (key === "GET 3")
          return r("ModelVersions_List", () => ({
            status: 200,
            body: { value: modelStore.listVersions(name) },
          }));
        if (version !== undefined && parts.length === 4) {
          if (method === "GET")
            return r("ModelVersions_Get", () => ({
              status: 200,
              body: modelStore.getVersion(name, version),
            }));
          if (method === "PUT")
            return r("ModelVersions_CreateOrUpdate", () =>
              modelStore.putVersion(name, version, body(), caller),
            );
        }
      }
    }
    if (collection === "onlineendpoints") {
      const epName = parts[1];
      if (key === "GET 1") {
        return r("OnlineEndpoints_List", () => ({
          status: 200,
          body: {
            value: [...endpoints.values()]
              .map((ep) => readThroughLag(`ep:${ep.name}`, renderEndpoint(ep)))
              .filter((ep) => ep !== undefined),
          },
        }));
      }
      if (epName === undefined) throw new ArmError(404, "NotFound", `No route for ${method} ${path}.`);
      if (parts.length === 2) {
        if (method === "GET") {
          return r("OnlineEndpoints_Get", () => {
            const ep = endpoints.get(epName);
            const seen = readThroughLag(`ep:${epName}`, ep === undefined ? undefined : renderEndpoint(ep));
            if (seen === undefined) getEndpoint(epName);
            return { status: 200, body: seen };
          });
        }
        if (method === "PUT")
          return r("OnlineEndpoints_CreateOrUpdate", () => putEndpoint(epName, body(), caller, apiVersion));
        if (method === "PATCH")
          return r("OnlineEndpoints_Update", () => patchEndpoint(epName, body(), caller, apiVersion));
        if (method === "DELETE") return r("OnlineEndpoints_Delete", () => deleteEndpoint(epName));
      }
      const action = parts[2]?.toLowerCase();
      if (parts.length === 3 && method === "POST") {
        if (action === "listkeys") {
          return r("OnlineEndpoints_ListKeys", () => {
            const ep = getEndpoint(epName);
            if (ep.authMode !== "Key") {
              throw badRequest(
                `Endpoint ${epName} uses ${ep.authMode} authentication; it has no keys to list.`,
              );
            }
            return { status: 200, body: { primaryKey: ep.keys.primary, secondaryKey: ep.keys.secondary } };
          });
        }
        if (action === "regeneratekeys")
          return r("OnlineEndpoints_RegenerateKeys", () => regenerateKeys(epName, body()));
        if (action === "token") return r("OnlineEndpoints_GetToken", () => amlToken(epName));
      }
      if (action === "deployments") {
        const depName = parts[3];
        if (key === "GET 3") {
          return r("OnlineDeployments_List", () => {
            const ep = getEndpoint(epName);
            return {
              status: 200,
              body: {
                value: [...ep.deployments.values()]
                  .map((dep) => readThroughLag(`dep:${epName}/${dep.name}`, renderDeployment(ep, dep)))
                  .filter((d) => d !== undefined),
              },
            };
          });
        }
        if (depName !== undefined && parts.length === 4) {
          if (method === "GET") {
            return r("OnlineDeployments_Get", () => {
              const ep = getEndpoint(epName);
              const dep = ep.deployments.get(depName);
              const seen = readThroughLag(
                `dep:${epName}/${depName}`,
                dep === undefined ? undefined : renderDeployment(ep, dep),
              );
              if (seen === undefined) getDeployment(ep, depName);
              return { status: 200, body: seen };
            });
          }
          if (method === "PUT")
            return r("OnlineDeployments_CreateOrUpdate", () =>
              putDeployment(epName, depName, body(), caller),
            );
          if (method === "PATCH")
            return r("OnlineDeployments_Update", () => patchDeployment(epName, depName, body(), caller));
          if (method === "DELETE")
            return r("OnlineDeployments_Delete", () => deleteDeployment(epName, depName));
        }
        if (
          depName !== undefined &&
          parts.length === 5 &&
          method === "POST" &&
          parts[4]?.toLowerCase() === "getlogs"
        ) {
          return r("OnlineDeployments_GetLogs", () => {
            const dep = getDeployment(getEndpoint(epName), depName);
            const request = body();
            const container =
              request.containerType === "StorageInitializer" ? "StorageInitializer" : "InferenceServer";
            const lines = dep.logs[container];
            const tail = typeof request.tail === "number" ? request.tail : lines.length;
            return {
              status: 200,
              body: { content: lines.slice(Math.max(0, lines.length - tail)).join("\n") },
            };
          });
        }
      }
    }
    throw new ArmError(404, "NotFound", `No route for ${method} ${path}.`);
  };

  const amlToken = (epName: string): Reply => {
    const ep = getEndpoint(epName);
    if (ep.authMode !== "AMLToken") {
      throw badRequest(
        `Endpoint ${epName} uses ${ep.authMode} authentication; AML tokens need auth mode AMLToken.`,
      );
    }
    // Issued by the host, not by a scoring instance: a token outlives deployment changes, as in Azure.
    const token = host.issueAmlToken(epName, 3600);
    return {
      status: 200,
      body: {
        accessToken: token.accessToken,
        tokenType: token.tokenType,
        expiryTimeUtc: token.expiryTimeUtc,
        refreshAfterTimeUtc: token.refreshAfterTimeUtc,
      },
    };
  };

  const renderWorkspace = (): Json => ({
    id: workspaceId,
    name: workspace,
    type: `${PROVIDER}/workspaces`,
    location,
    sku: { name: "Basic", tier: "Basic" },
    identity: { type: "SystemAssigned" },
    properties: {
      workspaceId: workspaceGuid,
      friendlyName: workspace,
      provisioningState: "Succeeded",
      discoveryUrl: `${server.origin}/discovery`,
      mlFlowTrackingUri: `azureml://${location}.api.azureml.ms/mlflow/v1.0${workspaceId}`,
    },
  });

  // ---- the HTTP side ---------------------------------------------------------------------------------------

  const matching = (match: RequestMatch, method: string, path: string) =>
    (match.method === undefined || match.method.toUpperCase() === method) &&
    (match.pathIncludes === undefined || path.includes(match.pathIncludes));
  const isMutation = (method: string, path: string) =>
    method === "PUT" ||
    method === "PATCH" ||
    method === "DELETE" ||
    (method === "POST" && /\/regenerateKeys$/i.test(path));

  const authenticate = async (req: IncomingMessage): Promise<Caller> => {
    const header = req.headers.authorization;
    if (header === undefined || header === "") {
      throw new ArmError(
        401,
        "AuthenticationFailed",
        "Authentication failed. The 'Authorization' header is missing.",
        {
          headers: {
            "www-authenticate": challenge(
              "invalid_token",
              "The authentication failed because of missing 'Authorization' header.",
            ),
          },
        },
      );
    }
    const match = /^Bearer ([^\s]+)$/i.exec(header);
    if (match?.[1] === undefined) {
      throw new ArmError(
        401,
        "InvalidAuthenticationToken",
        "The access token is invalid: the 'Authorization' header must be 'Bearer <token>'.",
        { headers: { "www-authenticate": challenge("invalid_token", "The access token is invalid.") } },
      );
    }
    let verdict: boolean | Record<string, unknown>;
    try {
      verdict = await options.authorize(match[1]);
    } catch (error) {
      const expired = /expire|"exp" claim/i.test(errorText(error));
      throw new ArmError(
        401,
        expired ? "ExpiredAuthenticationToken" : "InvalidAuthenticationToken",
        expired
          ? `The access token has expired: ${errorText(error)}`
          : `The access token is invalid: ${errorText(error)}`,
        {
          headers: {
            "www-authenticate": challenge(
              "invalid_token",
              expired ? "The access token has expired." : "The access token is invalid.",
            ),
          },
        },
      );
    }
    if (verdict === false) {
      throw new ArmError(401, "InvalidAuthenticationToken", "The access token is invalid.", {
        headers: { "www-authenticate": challenge("invalid_token", "The access token is invalid.") },
      });
    }
    return callerOf(verdict === true ? {} : verdict);
  };

  const send = (
    res: Parameters<typeof sendJson>[0],
    record: ArmRequestRecord,
    reply: Reply,
    operationId: string | undefined,
    apiVersion: string | null,
  ) => {
    let { status } = reply;
    let body =
      operationId === undefined ? reply.body : endpointAtVersion(operationId, apiVersion, reply.body);
    let headers: Record<string, string> = { "x-ms-request-id": randomUUID(), ...reply.headers };
    if (operationId !== undefined) {
      const checked = withoutLaterAdditions(operationId, apiVersion, body);
      const problems = spec.checkResponse(operationId, status, checked, headers);
      if (problems.length > 0) {
        violations.push(...problems);
        if ((options.onSpecViolation ?? "fail") === "fail") {
          status = 500;
          headers = { "x-ms-request-id": headers["x-ms-request-id"] ?? "" };
          body = new ArmError(
            500,
            "SandboxSpecViolation",
            `The ARM sandbox produced a response that breaks the 2022-10-01 spec: ${problems.map((p) => `${p.operationId} ${p.where}: ${p.message}`).join(" | ")}`,
          ).body();
        }
      }
    }
    record.status = status;
    if (body === undefined) {
      res.writeHead(status, { "content-length": 0, ...headers });
      res.end();
    } else {
      sendJson(res, status, body, headers);
    }
  };

  const unmount = server.mount({
    matches: (pathname) => /^\/subscriptions\//i.test(pathname),
    async handle(req, res, { url }) {
      const method = (req.method ?? "GET").toUpperCase();
      const path = url.pathname.replace(/\/+$/, "");
      const record: ArmRequestRecord = { method, path, status: 0, time: Date.now() };
      requests.push(record);
      if (requests.length > 5000) requests.splice(0, requests.length - 5000);
      let operationId: string | undefined;
      try {
        const text = await readBody(req, MAX_BODY_BYTES);
        const caller = await authenticate(req);
        const apiVersion = url.searchParams.get("api-version");
        if (apiVersion === null) {
          throw new ArmError(
            400,
            "MissingApiVersionParameter",
            "The api-version query parameter (?api-version=) is required for all requests.",
          );
        }
        if (!SUPPORTED_API_VERSIONS.includes(apiVersion)) {
          throw new ArmError(
            400,
            "NoRegisteredProviderFound",
            `No registered resource provider found for location '${location}' and API version '${apiVersion}'. The supported api-versions are '${SUPPORTED_API_VERSIONS.join(", ")}'.`,
          );
        }
        const throttle = throttleFaults.find((f) => f.remaining > 0 && matching(f.match, method, path));
        if (throttle !== undefined) {
          throttle.remaining -= 1;
          throttleFaults = throttleFaults.filter((f) => f.remaining > 0);
          throw new ArmError(
            429,
            "TooManyRequests",
            "The request is being throttled; retry after the interval in Retry-After.",
            {
              headers: { "retry-after": String(throttle.retryAfterSeconds) },
            },
          );
        }
        let parsed: Json | undefined;
        const body = (): Json => {
          if (parsed !== undefined) return parsed;
          if (text === "") {
            parsed = {};
            return parsed;
          }
          try {
            const value = JSON.parse(text) as unknown;
            if (typeof value !== "object" || value === null || Array.isArray(value))
              throw new Error("not an object");
            parsed = value as Json;
            return parsed;
          } catch {
            throw new ArmError(
              400,
              "InvalidRequestContent",
              "The request content was invalid and could not be deserialized.",
            );
          }
        };
        const found = route(method, path, url.searchParams, body, caller, apiVersion);
        operationId = found.operationId;
        if (operationId !== undefined) record.operationId = operationId;
        if (isMutation(method, path)) {
          const conflict = conflictFaults.find((f) => f.remaining > 0 && matching(f.match, method, path));
          if (conflict !== undefined) {
            conflict.remaining -= 1;
            conflictFaults = conflictFaults.filter((f) => f.remaining > 0);
            throw operationConflict(workspace, "an injected operation");
          }
        }
        if (operationId !== undefined && text !== "") {
          const problems = spec.checkRequest(
            operationId,
            withoutLaterAdditions(operationId, apiVersion, body()),
          );
          if (problems.length > 0) {
            throw new ArmError(
              400,
              "InvalidRequestContent",
              `The request content is invalid: ${problems.map((p) => p.message).join("; ")}`,
            );
          }
        }
        send(res, record, await found.run(), operationId, apiVersion);
      } catch (error) {
        if (error instanceof BodyTooLargeError) {
          send(
            res,
            record,
            { status: 413, body: new ArmError(413, "RequestEntityTooLarge", error.message).body() },
            undefined,
            null,
          );
          return;
        }
        if (!(error instanceof ArmError)) throw error;
        send(
          res,
          record,
          { status: error.status, body: error.body(), headers: error.headers },
          operationId,
          null,
        );
      }
    },
  });

  const snapshot = (ep: EndpointRecord): EndpointSnapshot => ({
    provisioningState: ep.provisioningState,
    authMode: ep.authMode,
    traffic: { ...ep.traffic },
    mirrorTraffic: { ...ep.mirrorTraffic },
    keys: { ...ep.keys },
    scoringUri: host.scoringUri(ep.name),
    tags: { ...ep.tags },
    deployments: Object.fromEntries(
      [...ep.deployments.values()].map((dep) => [
        dep.name,
        {
          provisioningState: dep.provisioningState,
          model: typeof dep.properties.model === "string" ? dep.properties.model : undefined,
          instanceCount: typeof dep.sku.capacity === "number" ? dep.sku.capacity : 1,
        },
      ]),
    ),
  });

  let closing: Promise<void> | undefined;
  return {
    endpoint: server.origin,
    subscriptionId,
    resourceGroup,
    workspace,
    location,
    workspaceId,
    blobServiceUrl: options.azurite?.blobServiceUrl,
    faults: {
      failProvisioning(deployment, failure = {}) {
        failures.set(deployment, {
          message:
            failure.message ??
            "User container has crashed or terminated: Liveness probe failed: the scoring container exited with code 1.",
          logLines: failure.logLines ?? [],
          times: failure.times ?? 1,
        });
      },
      slowProvisioning(deployment, ms) {
        slow.set(deployment, ms);
      },
      conflicts(count, match = {}) {
        conflictFaults.push({ remaining: count, match });
      },
      throttle(count, retryAfterSeconds, match = {}) {
        throttleFaults.push({ remaining: count, retryAfterSeconds, match });
      },
      readAfterWriteLag(ms) {
        lagMs = ms;
        if (ms <= 0) lagged.clear();
      },
      clear() {
        failures.clear();
        slow.clear();
        conflictFaults = [];
        throttleFaults = [];
        lagMs = 0;
        lagged.clear();
      },
    },
    get requests() {
      return requests;
    },
    get specViolations() {
      return violations;
    },
    onlineEndpoint(name) {
      const ep = endpoints.get(name);
      return ep === undefined ? undefined : snapshot(ep);
    },
    scoringServer: (name) => host.server(name),
    modelVersionId: (name, version) => `${workspaceId}/models/${name}/versions/${version}`,
    close() {
      closing ??= (async () => {
        closed = true;
        for (const timer of timers) clearTimeout(timer);
        timers.clear();
        unmount();
        if (ownHost) await host.close();
        await modelStore.close();
        if (ownServer) await server.close();
      })();
      return closing;
    },
  };
}

/** Endpoint JSON as a caller at `apiVersion` sees it: without `mirrorTraffic` before 2023-04-01. */
function endpointAtVersion(operationId: string, apiVersion: string | null, body: unknown): unknown {
  if (apiVersion !== null && apiVersion >= MIRROR_API_VERSION) return body;
  return withoutLaterAdditions(operationId, MIRROR_API_VERSION, body);
}

/** A failure the provisioning reports as is (a fault, a missing model), as opposed to a crash of the loader. */
class ProvisioningError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ProvisioningError";
  }
}

function challenge(error: string, description: string): string {
  return `Bearer authorization_uri="https://login.microsoftonline.com/common", error="${error}", error_description="${description}"`;
}
