// An in-memory Azure ML workspace behind the few client operations src/azure/ml.ts calls (MlClient), for unit tests.
// It keeps what a real workspace keeps (endpoints with their traffic, deployments, model versions, a default
// datastore), records every call, and refuses anything it was not built for, so a test fails when the code under
// test strays from the operations it is meant to use. Faults are queued per operation; long-running operations
// finish after a set number of polls, or fail the way 2.1.1's begin*/poll do (a plain Error).
import type { OnlineDeployment, OnlineEndpoint } from "@azure/arm-machinelearning";
import type { PagedAsyncIterableIterator } from "@azure/core-paging";
import {
  createHttpHeaders,
  createPipelineRequest,
  type PipelineRequest,
  type PipelineResponse,
  RestError,
} from "@azure/core-rest-pipeline";
import type { MlClient } from "../../src/azure/ml.ts";
import type { Clock } from "../../src/azure/retry.ts";

export const SUB = "00000000-0000-0000-0000-000000000001";
export const RG = "rg";
export const WS = "aml-ws";
export const ARM = "https://arm.test";
export const WORKSPACE_ID = `/subscriptions/${SUB}/resourceGroups/${RG}/providers/Microsoft.MachineLearningServices/workspaces/${WS}`;

type Json = Record<string, unknown>;

export interface FakeEndpoint {
  json: {
    location: string;
    tags?: Record<string, string>;
    properties: Json & { authMode: string; traffic: Record<string, number>; provisioningState: string };
  };
  deployments: Map<string, OnlineDeployment & { properties: { provisioningState?: string } }>;
}

export interface LroPlan {
  /** poll() calls before it is done. */
  polls: number;
  /** Fail at the last poll with this message (a plain Error, as core-lro throws). */
  failWith?: string;
  /** Fail inside begin* itself (2.1.1 polls once there). */
  failInBegin?: string;
}

export function httpError(status: number, message: string, headers: Record<string, string> = {}): RestError {
  const request = createPipelineRequest({ url: `${ARM}/x` });
  return new RestError(message, {
    statusCode: status,
    request,
    response: { request, status, headers: createHttpHeaders(headers), bodyAsText: "" },
  });
}

/** A clock that moves only when code sleeps; every sleep is recorded. */
export function fakeClock(start = 1_700_000_000_000): Clock & { sleeps: number[] } {
  let now = start;
  const sleeps: number[] = [];
  return {
    sleeps,
    now: () => now,
    async sleep(ms) {
      sleeps.push(ms);
      now += ms;
    },
  };
}

export interface RecordedLog {
  kind: "debug" | "info" | "warning" | "startGroup" | "endGroup";
  message: string;
  at: number;
}

export function recordingLogger(clock: Clock) {
  const lines: RecordedLog[] = [];
  const push =
    (kind: RecordedLog["kind"]) =>
    (message = "") => {
      lines.push({ kind, message, at: clock.now() });
    };
  return {
    lines,
    debug: push("debug"),
    info: push("info"),
    warning: push("warning"),
    startGroup: push("startGroup"),
    endGroup: () => push("endGroup")(""),
  };
}

function paged<T>(load: () => T[]): PagedAsyncIterableIterator<T> {
  let items: T[] | undefined;
  let index = 0;
  const iterator: PagedAsyncIterableIterator<T> = {
    async next() {
      items ??= load();
      const value = items[index++];
      return value === undefined ? { done: true, value: undefined } : { done: false, value };
    },
    [Symbol.asyncIterator]: () => iterator,
    byPage: () => {
      throw new Error("the fake lists items, not pages");
    },
  };
  return iterator;
}

export class FakeMl {
  readonly calls: string[] = [];
  readonly endpoints = new Map<string, FakeEndpoint>();
  readonly models = new Map<string, Map<string, { modelUri: string }>>();
  /** Bodies of endpoint PUTs sent as raw JSON. */
  readonly endpointPuts: Json[] = [];
  readonly deploymentPuts: { endpoint: string; deployment: string; body: OnlineDeployment }[] = [];
  readonly getLogsCalls: { containerType?: string; tail?: number }[] = [];
  /** Errors thrown by the next calls of an operation, in order ("onlineEndpoints.get", "sendRequest PUT", ...). */
  readonly faults = new Map<string, Error[]>();
  /** How each deployment PUT's operation goes. */
  lro: LroPlan = { polls: 2 };
  /** After a raw endpoint PUT, this many GETs still show the endpoint as it was. */
  readLag = 0;
  /** The endpoint keys listKeys answers; a regeneration shows only after `keyReadLag` more listKeys calls. */
  keys = { primaryKey: "primary-key-value", secondaryKey: "secondary-key-value" };
  keyReadLag = 0;
  private pendingKeys: { keys: { primaryKey: string; secondaryKey: string }; reads: number } | undefined;
  /** The api-versions the fake ARM serves; a request at another is refused, as ARM refuses it. */
  apiVersions = ["2022-10-01"];
  logs: Record<string, string> = {
    StorageInitializer: "storage ok",
    InferenceServer: "line 1\nTraceback: boom",
  };
  datastoreKey = "ZmFrZS1hY2NvdW50LWtleQ==";

  private lagged: { remaining: number; json: Json } | undefined;

  constructor() {
    this.models.set(
      "credit",
      new Map([["1", { modelUri: "azureml://datastores/workspaceblobstore/paths/v1/" }]]),
    );
  }

  addEndpoint(
    name: string,
    traffic: Record<string, number>,
    deployments: string[] = Object.keys(traffic),
  ): void {
    const ep: FakeEndpoint = {
      json: {
        location: "westeurope",
        tags: { team: "risk" },
        properties: { authMode: "Key", traffic, provisioningState: "Succeeded", description: "kept as is" },
      },
      deployments: new Map(),
    };
    for (const dep of deployments) {
      ep.deployments.set(dep, {
        location: "westeurope",
        properties: { endpointComputeType: "Managed", provisioningState: "Succeeded" },
      });
    }
    this.endpoints.set(name, ep);
  }

  private fault(operation: string): void {
    const error = this.faults.get(operation)?.shift();
    if (error !== undefined) throw error;
  }

  private record(operation: string, faultKey = operation.split(" ")[0] ?? operation): void {
    this.calls.push(operation);
    this.fault(faultKey);
  }

  private endpoint(name: string): FakeEndpoint {
    const ep = this.endpoints.get(name);
    if (ep === undefined) throw httpError(404, `Endpoint ${name} not found`);
    return ep;
  }

  private renderEndpoint(name: string, ep: FakeEndpoint): Json {
    return {
      id: `${WORKSPACE_ID}/onlineEndpoints/${name}`,
      name,
      type: "Microsoft.MachineLearningServices/workspaces/onlineEndpoints",
      systemData: { createdBy: "someone" },
      ...structuredClone(ep.json),
      properties: {
        ...structuredClone(ep.json.properties),
        scoringUri: `https://${name}.westeurope.inference.ml.azure.com/score`,
      },
    };
  }

  private poller<T>(plan: LroPlan, onDone: () => T, onFail: () => void = () => {}) {
    let polls = 0;
    let done = false;
    let result: T | undefined;
    return {
      poll: async () => {
        polls++;
        if (polls >= plan.polls) {
          if (plan.failWith !== undefined) {
            onFail();
            throw new Error(`The long-running operation has failed. ${plan.failWith}`);
          }
          result = onDone();
          done = true;
        }
      },
      isDone: () => done,
      getResult: () => result,
    };
  }

  readonly client: MlClient = {
    workspaces: {
      get: async (rg, ws) => {
        this.record("workspaces.get");
        if (rg !== RG || ws !== WS) throw httpError(404, "workspace not found");
        return { location: "westeurope" };
      },
    },
    datastores: {
      list: (_rg, _ws, options) => {
        this.calls.push(`datastores.list isDefault=${String(options?.isDefault)}`);
        return paged(() => [
          {
            name: "workspaceblobstore",
            properties: {
              datastoreType: "AzureBlob",
              isDefault: true,
              accountName: "acct",
              containerName: "azureml-blobstore",
              endpoint: "core.windows.net",
              protocol: "https",
              credentials: { credentialsType: "AccountKey" },
            },
          },
        ]);
      },
      listSecrets: async (_rg, _ws, name) => {
        this.record(`datastores.listSecrets ${name}`);
        return { secretsType: "AccountKey", key: this.datastoreKey } as never;
      },
    },
    modelVersions: {
      get: async (_rg, _ws, name, version) => {
        this.record(`modelVersions.get ${name}:${version}`);
        const v = this.models.get(name)?.get(version);
        if (v === undefined) throw httpError(404, `Model ${name}:${version} not found`);
        return {
          id: `${WORKSPACE_ID}/models/${name}/versions/${version}`,
          name: version,
          properties: { ...v },
        };
      },
      list: (_rg, _ws, name) => {
        this.calls.push(`modelVersions.list ${name}`);
        return paged(() => {
          const versions = this.models.get(name);
          if (versions === undefined) throw httpError(404, `Model ${name} not found`);
          return [...versions].map(([version, v]) => ({ name: version, properties: { ...v } }));
        });
      },
      createOrUpdate: async (_rg, _ws, name, version, body) => {
        this.record(`modelVersions.createOrUpdate ${name}:${version}`);
        const versions = this.models.get(name) ?? new Map<string, { modelUri: string }>();
        versions.set(version, { modelUri: body.properties.modelUri ?? "" });
        this.models.set(name, versions);
        return body;
      },
    },
    onlineEndpoints: {
      get: async (_rg, _ws, name) => {
        this.record(`onlineEndpoints.get ${name}`);
        return this.renderEndpoint(name, this.endpoint(name)) as unknown as OnlineEndpoint;
      },
      beginCreateOrUpdate: async (_rg, _ws, name, body) => {
        this.record(`onlineEndpoints.beginCreateOrUpdate ${name}`);
        return this.poller({ polls: 1 }, () => {
          this.endpoints.set(name, {
            json: {
              location: body.location,
              ...(body.tags === undefined ? {} : { tags: body.tags }),
              properties: {
                ...(body.properties as unknown as Json),
                authMode: body.properties.authMode,
                traffic: {},
                provisioningState: "Succeeded",
              },
            },
            deployments: new Map(),
          });
          return body;
        }) as never;
      },
      listKeys: async (_rg, _ws, name) => {
        this.record(`onlineEndpoints.listKeys ${name}`);
        if (this.pendingKeys && this.pendingKeys.reads-- <= 0) {
          this.keys = this.pendingKeys.keys;
          this.pendingKeys = undefined;
        }
        return { ...this.keys };
      },
      beginRegenerateKeys: async (_rg, _ws, name, body) => {
        this.record(`onlineEndpoints.beginRegenerateKeys ${name} ${body.keyType}`);
        return this.poller(this.lro, () => {
          const value = `${body.keyType.toLowerCase()}-key-${this.calls.length}`;
          const keys =
            body.keyType === "Primary"
              ? { ...this.keys, primaryKey: value }
              : { ...this.keys, secondaryKey: value };
          this.pendingKeys = { keys, reads: this.keyReadLag };
        }) as never;
      },
      getToken: async (_rg, _ws, name) => {
        this.record(`onlineEndpoints.getToken ${name}`);
        return {
          accessToken: "aml-token-value",
          tokenType: "Bearer",
          expiryTimeUtc: 1_800_000_000,
          refreshAfterTimeUtc: 1_799_990_000,
        };
      },
    },
    onlineDeployments: {
      get: async (_rg, _ws, endpoint, deployment) => {
        this.record(`onlineDeployments.get ${endpoint}/${deployment}`);
        const dep = this.endpoint(endpoint).deployments.get(deployment);
        if (dep === undefined) throw httpError(404, `Deployment ${deployment} not found`);
        return structuredClone(dep);
      },
      beginCreateOrUpdate: async (_rg, _ws, endpoint, deployment, body) => {
        this.record(`onlineDeployments.beginCreateOrUpdate ${endpoint}/${deployment}`);
        const ep = this.endpoint(endpoint);
        this.deploymentPuts.push({ endpoint, deployment, body: structuredClone(body) });
        const plan = this.lro;
        const setState = (state: string) => {
          ep.deployments.set(deployment, {
            ...body,
            properties: { ...body.properties, provisioningState: state },
          });
        };
        if (plan.failInBegin !== undefined) {
          setState("Failed");
          throw new Error(`The long-running operation has failed. ${plan.failInBegin}`);
        }
        setState("Creating");
        return this.poller(
          plan,
          () => setState("Succeeded"),
          () => setState("Failed"),
        ) as never;
      },
      beginDelete: async (_rg, _ws, endpoint, deployment) => {
        this.record(`onlineDeployments.beginDelete ${endpoint}/${deployment}`);
        const ep = this.endpoint(endpoint);
        if ((ep.json.properties.traffic[deployment] ?? 0) > 0) throw httpError(400, "has traffic");
        return this.poller({ polls: 1 }, () => {
          ep.deployments.delete(deployment);
        }) as never;
      },
      getLogs: async (_rg, _ws, endpoint, deployment, body) => {
        this.record(`onlineDeployments.getLogs ${endpoint}/${deployment} ${body.containerType}`);
        this.getLogsCalls.push({ ...body });
        return { content: this.logs[body.containerType ?? "InferenceServer"] ?? "" };
      },
    },
    sendRequest: async (request: PipelineRequest): Promise<PipelineResponse> => {
      const url = new URL(request.url);
      const apiVersion = url.searchParams.get("api-version") ?? "";
      this.calls.push(`sendRequest ${request.method} ${url.pathname} api-version=${apiVersion}`);
      this.fault(`sendRequest ${request.method}`);
      const respond = (status: number, body?: unknown): PipelineResponse => ({
        request,
        status,
        headers: createHttpHeaders(),
        bodyAsText: body === undefined ? "" : JSON.stringify(body),
      });
      const prefix = `${WORKSPACE_ID}/onlineEndpoints/`;
      if (!url.pathname.startsWith(prefix) || url.origin !== ARM) {
        throw new Error(`the fake has no route for ${request.method} ${request.url}`);
      }
      if (!this.apiVersions.includes(apiVersion)) {
        return respond(400, {
          error: { code: "NoRegisteredProviderFound", message: `api-version ${apiVersion}` },
        });
      }
      const name = decodeURIComponent(url.pathname.slice(prefix.length));
      const ep = this.endpoints.get(name);
      if (ep === undefined) return respond(404, { error: { code: "NotFound", message: `Endpoint ${name}` } });
      if (request.method === "GET") {
        if (this.lagged !== undefined && this.lagged.remaining > 0) {
          this.lagged.remaining--;
          return respond(200, this.lagged.json);
        }
        return respond(200, this.renderEndpoint(name, ep));
      }
      if (request.method === "PUT") {
        const body = JSON.parse(String(request.body)) as FakeEndpoint["json"];
        this.endpointPuts.push(structuredClone(body) as unknown as Json);
        this.lagged = { remaining: this.readLag, json: this.renderEndpoint(name, ep) };
        ep.json = {
          ...body,
          properties: {
            ...body.properties,
            provisioningState: "Succeeded",
            traffic: body.properties.traffic ?? {},
          },
        };
        return respond(201, this.renderEndpoint(name, ep));
      }
      throw new Error(`the fake has no route for ${request.method} ${request.url}`);
    },
  };
}
