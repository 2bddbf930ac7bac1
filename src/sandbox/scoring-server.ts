// A local stand-in for an Azure ML managed online endpoint's scoring URI: key (or AML token) auth, routing by the
// `azureml-model-deployment` header or by the endpoint's traffic map, a real model per deployment, and the status
// codes Azure ML answers with (401, 404, 413, 424, 429, 500). Tests inject faults and read every request it got.
import { randomBytes, randomUUID, timingSafeEqual } from "node:crypto";
import type { ServerResponse } from "node:http";
import { createCreditModel, creditWeightsFor, ModelInputError, type ScoringModel } from "./credit-model.ts";
import {
  BodyTooLargeError,
  headerRecord,
  type LoopbackServer,
  type Mount,
  readBody,
  sendJson,
  sleep,
  startLoopbackServer,
} from "./http-server.ts";

export interface EndpointKeys {
  primary: string;
  secondary: string;
}

export interface DeploymentSpec {
  name: string;
  /** Share of the endpoint's traffic map, 0–100. */
  weight: number;
}

export interface ScoringServerOptions {
  deployments: DeploymentSpec[];
  /** Default: two freshly generated keys. */
  keys?: EndpointKeys;
  /** Ignored when `server` is given. Default: an ephemeral port. */
  port?: number;
  /** Serve on an existing loopback server (shared with other stand-ins) instead of starting one. */
  server?: LoopbackServer;
  /** Default `/score`, as Azure ML scoring URIs end. */
  path?: string;
  /** A model per deployment name. Default: the credit model with that deployment's weights. */
  models?: Record<string, ScoringModel>;
  /** Draws the traffic-map choice; inject a fixed sequence for deterministic tests. Default Math.random. */
  random?: () => number;
  /** Older Azure ML docs give 1.5 MB as the payload limit (413 above it). */
  maxBodyBytes?: number;
  /** Only the newest requests are kept, so a long benchmark does not grow memory without bound. */
  maxRecordedRequests?: number;
}

export interface ScoringFault {
  /** Answer with this status instead of scoring. Unset: score normally (after `delayMs`). */
  status?: number;
  /** Sent as `Retry-After` (e.g. with 429 or 503). */
  retryAfterSeconds?: number;
  /** Wait this long before answering, e.g. beyond the gateway's upstream timeout. */
  delayMs?: number;
  /** Response body (a string as is, anything else as JSON). Default: an Azure-style error object. */
  body?: unknown;
  /** Apply to this many requests, then clear. Default: until cleared. */
  times?: number;
}

export interface ScoringRequest {
  method: string;
  /** Path and query as received. */
  path: string;
  headers: Record<string, string>;
  body: string;
  /** Epoch milliseconds at receipt. */
  time: number;
  /** The deployment that served it, when routing got that far. */
  deployment?: string;
  /** The status answered, once answered. */
  status?: number;
  /** Epoch milliseconds at which the caller went away (or the stand-in closed) while a delayed answer was pending. */
  abandonedAt?: number;
}

/** What Azure ML's `POST .../token` returns for an `aml_token` endpoint; times are epoch seconds. */
export interface AmlToken {
  accessToken: string;
  tokenType: "Bearer";
  expiryTimeUtc: number;
  refreshAfterTimeUtc: number;
}

export interface ScoringServer {
  /** The scoring URI. */
  readonly url: string;
  readonly origin: string;
  readonly keys: EndpointKeys;
  /** The endpoint's traffic map. */
  readonly traffic: Readonly<Record<string, number>>;
  readonly requests: readonly ScoringRequest[];
  clearRequests(): void;
  setKeys(keys: EndpointKeys): void;
  /** Replace the traffic map; every name must be a deployment of this endpoint. */
  setTraffic(traffic: Record<string, number>): void;
  setFault(deployment: string, fault: ScoringFault | null): void;
  clearFaults(): void;
  /** Issue an AML token that this endpoint accepts until it expires. Default lifetime 3600 s. */
  issueAmlToken(options?: { lifetimeSeconds?: number }): AmlToken;
  close(): Promise<void>;
}

const DEPLOYMENT_HEADER = "azureml-model-deployment";

export async function startScoringServer(options: ScoringServerOptions): Promise<ScoringServer> {
  if (options.deployments.length === 0) throw new Error("startScoringServer: list at least one deployment");
  const names = options.deployments.map((d) => d.name);
  const models = new Map<string, ScoringModel>();
  for (const name of names) {
    models.set(name, options.models?.[name] ?? createCreditModel(creditWeightsFor(name)));
  }
  let traffic: Record<string, number> = {};
  const setTraffic = (next: Record<string, number>) => {
    for (const [name, weight] of Object.entries(next)) {
      if (!models.has(name)) throw new Error(`setTraffic: ${name} is not a deployment of this endpoint`);
      if (!(weight >= 0 && weight <= 100)) throw new Error(`setTraffic: weight of ${name} must be 0–100`);
    }
    traffic = { ...next };
  };
  setTraffic(Object.fromEntries(options.deployments.map((d) => [d.name, d.weight])));

  let keys: EndpointKeys = options.keys ?? {
    primary: generateEndpointKey(),
    secondary: generateEndpointKey(),
  };
  const amlTokens = new Map<string, number>();
  const faults = new Map<string, ScoringFault & { remaining: number }>();
  const requests: ScoringRequest[] = [];
  const random = options.random ?? Math.random;
  const maxBodyBytes = options.maxBodyBytes ?? 1.5 * 1024 * 1024;
  const maxRecorded = options.maxRecordedRequests ?? 10_000;
  const path = options.path ?? "/score";

  const authorized = (header: string | undefined): boolean => {
    const match = /^Bearer (.+)$/.exec(header ?? "");
    const presented = match?.[1];
    if (presented === undefined) return false;
    if (safeEqual(presented, keys.primary) || safeEqual(presented, keys.secondary)) return true;
    const expiry = amlTokens.get(presented);
    return expiry !== undefined && expiry > Date.now() / 1000;
  };

  const chooseByTraffic = (): string | undefined => {
    const entries = Object.entries(traffic).filter(([, weight]) => weight > 0);
    const total = entries.reduce((sum, [, weight]) => sum + weight, 0);
    let draw = random() * total;
    for (const [name, weight] of entries) {
      draw -= weight;
      if (draw < 0) return name;
    }
    return entries.at(-1)?.[0];
  };

  const mount: Mount = {
    matches: (pathname) => pathname === path,
    async handle(req, res, { url, signal }) {
      const record: ScoringRequest = {
        method: req.method ?? "",
        path: `${url.pathname}${url.search}`,
        headers: headerRecord(req),
        body: "",
        time: Date.now(),
      };
      requests.push(record);
      if (requests.length > maxRecorded) requests.splice(0, requests.length - maxRecorded);
      const answer = (status: number, body: unknown, headers: Record<string, string> = {}) => {
        record.status = status;
        send(res, status, body, { "x-request-id": randomUUID(), ...headers });
      };

      try {
        record.body = await readBody(req, maxBodyBytes);
      } catch (error) {
        if (!(error instanceof BodyTooLargeError)) throw error;
        answer(413, azureError("PayloadTooLarge", error.message), { connection: "close" });
        return;
      }
      if (req.method !== "POST") {
        answer(405, azureError("MethodNotAllowed", "the scoring URI accepts POST"), { allow: "POST" });
        return;
      }
      if (!authorized(req.headers.authorization)) {
        answer(401, azureError("Unauthorized", "missing or invalid endpoint key or token"), {
          "www-authenticate": 'Bearer realm="azureml"',
        });
        return;
      }
      const requested = req.headers[DEPLOYMENT_HEADER];
      const deployment = typeof requested === "string" && requested !== "" ? requested : chooseByTraffic();
      if (deployment === undefined) {
        answer(
          404,
          azureError(
            "NoDeployment",
            "no deployment has traffic: set the traffic map or send the azureml-model-deployment header",
          ),
        );
        return;
      }
      const model = models.get(deployment);
      if (model === undefined) {
        answer(
          404,
          azureError("DeploymentNotFound", `deployment ${deployment} does not exist on this endpoint`),
        );
        return;
      }
      record.deployment = deployment;
      const deploymentHeader = { [DEPLOYMENT_HEADER]: deployment };

      const fault = faults.get(deployment);
      if (fault !== undefined) {
        fault.remaining -= 1;
        if (fault.remaining <= 0) faults.delete(deployment);
        if (fault.delayMs !== undefined && !(await sleep(fault.delayMs, signal))) {
          record.abandonedAt = Date.now();
          return;
        }
        if (fault.status !== undefined) {
          const headers: Record<string, string> = { ...deploymentHeader };
          if (fault.retryAfterSeconds !== undefined) headers["retry-after"] = String(fault.retryAfterSeconds);
          if (fault.status === 424) {
            headers["ms-azureml-model-error-statuscode"] = "500";
            headers["ms-azureml-model-error-reason"] = "model_error";
          }
          answer(fault.status, fault.body ?? azureError(faultCode(fault.status), "injected fault"), headers);
          return;
        }
      }

      let predictions: unknown;
      try {
        predictions = await model.score(JSON.parse(record.body));
      } catch (error) {
        // The container said 400; Azure ML reports a container's non-200 answer as 424 with the reason in headers.
        const reason = error instanceof SyntaxError ? "the body is not JSON" : errorMessage(error);
        const status = error instanceof SyntaxError || error instanceof ModelInputError ? "400" : "500";
        answer(424, azureError("ModelError", reason), {
          ...deploymentHeader,
          "ms-azureml-model-error-statuscode": status,
          "ms-azureml-model-error-reason": "model_error",
        });
        return;
      }
      answer(200, predictions, deploymentHeader);
    },
  };

  const ownServer = options.server === undefined;
  const server =
    options.server ?? (await startLoopbackServer(options.port === undefined ? {} : { port: options.port }));
  const unmount = server.mount(mount);

  return {
    url: `${server.origin}${path}`,
    origin: server.origin,
    get keys() {
      return { ...keys };
    },
    get traffic() {
      return { ...traffic };
    },
    get requests() {
      return requests;
    },
    clearRequests() {
      requests.length = 0;
    },
    setKeys(next) {
      keys = { ...next };
    },
    setTraffic,
    setFault(deployment, fault) {
      if (!models.has(deployment))
        throw new Error(`setFault: ${deployment} is not a deployment of this endpoint`);
      if (fault === null) faults.delete(deployment);
      else faults.set(deployment, { ...fault, remaining: fault.times ?? Number.POSITIVE_INFINITY });
    },
    clearFaults() {
      faults.clear();
    },
    issueAmlToken({ lifetimeSeconds = 3600 } = {}) {
      const now = Math.floor(Date.now() / 1000);
      const accessToken = randomBytes(32).toString("base64url");
      amlTokens.set(accessToken, now + lifetimeSeconds);
      return {
        accessToken,
        tokenType: "Bearer",
        expiryTimeUtc: now + lifetimeSeconds,
        refreshAfterTimeUtc: now + Math.floor(lifetimeSeconds / 2),
      };
    },
    async close() {
      unmount();
      if (ownServer) await server.close();
    },
  };
}

/** Azure ML endpoint keys are 32 random characters. */
export function generateEndpointKey(): string {
  return randomBytes(24).toString("base64url");
}

function send(res: ServerResponse, status: number, body: unknown, headers: Record<string, string>): void {
  if (typeof body === "string") {
    res.writeHead(status, { "content-type": "text/plain; charset=utf-8", ...headers });
    res.end(body);
    return;
  }
  sendJson(res, status, body, headers);
}

function azureError(code: string, message: string): { error: { code: string; message: string } } {
  return { error: { code, message } };
}

function faultCode(status: number): string {
  switch (status) {
    case 408:
      return "RequestTimeout";
    case 424:
      return "ModelError";
    case 429:
      return "TooManyRequests";
    case 503:
      return "ServiceUnavailable";
    default:
      return status >= 500 ? "InternalServerError" : "InjectedFault";
  }
}

function safeEqual(a: string, b: string): boolean {
  const left = Buffer.from(a);
  const right = Buffer.from(b);
  return left.length === right.length && timingSafeEqual(left, right);
}

function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
