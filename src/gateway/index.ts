// The aml-edge gateway Worker. Per request: pre-check → verify → authorize → route → call Azure ML → respond →
// audit. Every path out of `handle` writes exactly one audit record.
import { type AuditRecord, auditSink } from "./audit.ts";
import { callerContext } from "./caller.ts";
import { PrecheckError } from "./precheck.ts";
import { REASONS, type ReasonCode } from "./reasons.ts";
import { assignDeployment } from "./routing.ts";
import { ConfigLoadError, type RuntimeConfig, runtimeConfig } from "./runtime-config.ts";
import { statusDocument } from "./status.ts";
import { type ClientHeaders, extractBearerToken, readClientHeaders } from "./token-location.ts";
import { callUpstream, limitedBody, UpstreamError, upstreamCredential } from "./upstream.ts";
import { VerificationError, verifyToken } from "./verify.ts";

export interface GatewayEnv {
  AML_EDGE_CONFIG: unknown;
  [binding: string]: unknown;
}

/** A refusal decided by the gateway itself (policy, routing, limits). */
class Denial extends Error {
  readonly reason: ReasonCode;
  /** For 405: the methods the path accepts (RFC 9110 §15.5.6 requires an Allow header). */
  readonly allow: readonly string[] | undefined;
  constructor(reason: ReasonCode, allow?: readonly string[]) {
    super(reason);
    this.reason = reason;
    this.allow = allow;
  }
}

export default {
  fetch(request: Request, env: GatewayEnv, ctx: ExecutionContext): Promise<Response> {
    return handle(request, env, ctx);
  },
} satisfies ExportedHandler<GatewayEnv>;

async function handle(request: Request, env: GatewayEnv, ctx: ExecutionContext): Promise<Response> {
  const started = performance.now();
  const requestId = crypto.randomUUID();
  const url = new URL(request.url);
  const clientHeaders = readClientHeaders(request.headers);
  const waitUntil = (promise: Promise<unknown>) => ctx.waitUntil(promise);

  let runtime: RuntimeConfig;
  try {
    runtime = runtimeConfig(env.AML_EDGE_CONFIG);
  } catch (error) {
    const message = error instanceof ConfigLoadError ? error.message : "config could not be loaded";
    console.error(JSON.stringify({ type: "aml-edge.config-error", message }));
    const record = baseRecord(requestId, request.method, clientHeaders, url, "invalid");
    const response = errorResponse("config_invalid", requestId, "invalid");
    console.log(JSON.stringify(finishRecord(record, "config_invalid", response.status, started)));
    return response;
  }
  const { config } = runtime;
  const audit = auditSink(
    {
      console: config.audit.console,
      queue: config.audit.queue ? (env[config.audit.queue] as Queue) : undefined,
    },
    waitUntil,
  );
  const record = baseRecord(requestId, request.method, clientHeaders, url, runtime.version);
  // Server-Timing marks are taken only when the config asks for them: nothing extra on the request path otherwise.
  const timings: string[] | undefined = config.serverTiming ? [] : undefined;

  // Every response passed here was built by the gateway itself with x-request-id and x-aml-edge-config already
  // among its headers (set in the constructor, not one call at a time), so its headers are mutable and ours to set.
  const respond = (response: Response, reason: ReasonCode): Response => {
    if (timings && timings.length > 0) response.headers.set("server-timing", timings.join(", "));
    audit.write(finishRecord(record, reason, response.status, started));
    return response;
  };

  try {
    const verifyStarted = timings ? performance.now() : 0;
    const verified = await verifyToken(
      extractBearerToken(clientHeaders, url),
      runtime.issuersByIss,
      waitUntil,
    );
    timings?.push(`verify;dur=${(performance.now() - verifyStarted).toFixed(3)}`);

    const { caller, grants, identity, stickyPoint } = await callerContext(verified, config.policy);
    Object.assign(record, identity);
    record.roles = grants.roles;

    if (url.pathname === config.status.path) {
      if (request.method !== "GET") throw new Denial("method_not_allowed", ["GET"]);
      if (!grants.has("read-status")) throw new Denial("no_permission");
      const document = await statusDocument(runtime, env);
      const headers = { "cache-control": "no-store", ...gatewayHeaders(requestId, runtime.version) };
      return respond(Response.json(document, { headers }), "status_served");
    }

    const route = runtime.routesByPath.get(url.pathname);
    if (!route) throw new Denial("route_not_found");
    record.route = route.name;
    if (!(route.methods as readonly string[]).includes(request.method))
      throw new Denial("method_not_allowed", route.methods);
    if (!grants.has("score", route.name)) throw new Denial("no_permission");

    // A pin from a caller without pin-deployment is ignored (it never reaches Azure ML: headers are allowlisted).
    const pin = clientHeaders.get("azureml-model-deployment");
    let pinned: string | undefined;
    if (pin !== null && grants.has("pin-deployment", route.name)) {
      if (!route.deployments.some((deployment) => deployment.name === pin)) {
        throw new Denial("pin_unknown_deployment");
      }
      pinned = pin;
    }
    const assignment = await assignDeployment(route, caller, pinned, () => stickyPoint(route));
    if (assignment.kind === "none") throw new Denial("no_deployment");
    record.deployment = assignment.deployment;
    record.assignment = assignment.kind;
    if (assignment.kind === "cohort") record.cohort = assignment.cohort;

    const credential = upstreamCredential(route, env, Date.now());
    const body = await limitedBody(request, clientHeaders, route.limits.maxBodyBytes);
    const upstreamStarted = timings ? performance.now() : 0;
    const response = await callUpstream(request.method, clientHeaders, {
      route,
      deployment: assignment.deployment,
      credential,
      requestId,
      forwardHeaders: config.forwardHeaders,
      body,
      responseHeaders: {
        ...gatewayHeaders(requestId, runtime.version),
        "x-aml-edge-deployment": assignment.deployment,
      },
    });
    timings?.push(`upstream;dur=${(performance.now() - upstreamStarted).toFixed(3)}`);
    record.upstreamStatus = response.status;
    return respond(response, "allowed");
  } catch (error) {
    const reason = reasonOf(error);
    if (reason === "internal_error") {
      console.error(
        JSON.stringify({ type: "aml-edge.internal-error", requestId, message: describeInternal(error) }),
      );
    }
    if (error instanceof VerificationError && error.issuer !== undefined) {
      const profile = runtime.issuers.find((candidate) => candidate.config.name === error.issuer);
      if (profile) record.issuer = profile.config.issuer;
    }
    if (error instanceof UpstreamError && error.upstreamStatus !== undefined) {
      record.upstreamStatus = error.upstreamStatus;
    }
    const response = errorResponse(reason, requestId, runtime.version);
    if (error instanceof Denial && error.allow) response.headers.set("allow", error.allow.join(", "));
    return respond(response, reason);
  }
}

function reasonOf(error: unknown): ReasonCode {
  if (
    error instanceof Denial ||
    error instanceof PrecheckError ||
    error instanceof VerificationError ||
    error instanceof UpstreamError
  ) {
    return error.reason;
  }
  return "internal_error";
}

function describeInternal(error: unknown): string {
  return error instanceof Error ? `${error.name}: ${error.message}`.slice(0, 300) : "non-error thrown";
}

type PendingRecord = Omit<AuditRecord, "decision" | "reason" | "status" | "latencyMs">;

function baseRecord(
  requestId: string,
  method: string,
  headers: ClientHeaders,
  url: URL,
  configVersion: string,
): PendingRecord {
  const record: PendingRecord = {
    type: "aml-edge.audit",
    v: 1,
    time: new Date().toISOString(),
    requestId,
    method,
    path: url.pathname.slice(0, 512),
    configVersion,
  };
  const ray = headers.get("cf-ray");
  if (ray !== null && /^[A-Za-z0-9-]{1,64}$/.test(ray)) record.rayId = ray;
  return record;
}

function finishRecord(
  record: PendingRecord,
  reason: ReasonCode,
  status: number,
  started: number,
): AuditRecord {
  const allowed = reason === "allowed" || reason === "status_served";
  return {
    ...record,
    decision: allowed ? "allow" : "deny",
    reason,
    status,
    latencyMs: Math.round((performance.now() - started) * 1000) / 1000,
  };
}

/** What every response of the gateway carries: the request's id and the config version that answered it. */
function gatewayHeaders(requestId: string, configVersion: string): Record<string, string> {
  return { "x-request-id": requestId, "x-aml-edge-config": configVersion };
}

/** A refusal: fixed status and description from the reason, RFC 6750 challenge where a bearer token is involved. */
function errorResponse(reason: ReasonCode, requestId: string, configVersion: string): Response {
  const info = REASONS[reason];
  const headers = new Headers({
    "content-type": "application/json",
    "cache-control": "no-store",
    ...gatewayHeaders(requestId, configVersion),
  });
  const bearerError = "bearerError" in info ? info.bearerError : undefined;
  if (info.status === 401 || bearerError !== undefined) {
    const challenge = ['Bearer realm="aml-edge"'];
    if (bearerError) challenge.push(`error="${bearerError}"`, `error_description="${info.description}"`);
    headers.set("www-authenticate", challenge.join(", "));
  }
  const body = {
    error: bearerError ?? errorName(info.status),
    error_description: info.description,
    requestId,
  };
  return new Response(JSON.stringify(body), { status: info.status, headers });
}

function errorName(status: number): string {
  switch (status) {
    case 401:
      return "unauthorized";
    case 404:
      return "not_found";
    case 405:
      return "method_not_allowed";
    case 413:
      return "payload_too_large";
    case 502:
      return "bad_gateway";
    case 503:
      return "service_unavailable";
    case 504:
      return "gateway_timeout";
    default:
      return status >= 500 ? "server_error" : "bad_request";
  }
}
