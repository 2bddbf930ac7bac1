// The local Cloudflare edge: one HTTPS listener per Worker (sandbox CA) serving that Worker's live deployment.
// Each request picks a version by the deployment's percentages, or the one a Cloudflare-Workers-Version-Overrides
// header names when that version is live (otherwise the header is ignored, as on Cloudflare), and is relayed to
// the version's workerd. A new deployment becomes live only once all its runtimes are ready; a request keeps the
// runtime it picked until its response was read; runtimes that left the deployment stop after they drained. So a
// deployment switch under load loses no request.
import type { IncomingMessage, ServerResponse } from "node:http";
import type { AuditRecord } from "../gateway-runtime.ts";
import {
  BodyTooLargeError,
  errorText,
  type HandlerContext,
  type LoopbackServer,
  readBodyBytes,
  startLoopbackServer,
} from "../http-server.ts";
import { createRuntimePool, type Runtime, type RuntimeInfo } from "./runtimes.ts";
import { randomHex } from "./tokens.ts";
import { checkWorkerName, type DeploymentActivator, type StoredVersion } from "./workers.ts";

export const VERSION_OVERRIDES_HEADER = "cloudflare-workers-version-overrides";
/** Cloudflare's request body limit on the largest plans. */
const MAX_REQUEST_BYTES = 100 * 1024 * 1024;
const MAX_AUDIT_RECORDS = 10_000;
/** Hop-by-hop headers, and the ones Node's fetch sets itself or that would describe bytes it already decoded. */
const DROPPED_REQUEST_HEADERS = new Set([
  "host",
  "connection",
  "keep-alive",
  "transfer-encoding",
  "content-length",
  "accept-encoding",
  "upgrade",
  "te",
  "trailer",
  "proxy-connection",
]);
const DROPPED_RESPONSE_HEADERS = new Set([
  "content-encoding",
  "content-length",
  "transfer-encoding",
  "connection",
]);

export interface EdgeAuditRecord {
  versionId: string;
  record: AuditRecord;
}

export interface EdgeRuntimeInfo extends RuntimeInfo {
  /** Whether the live deployment includes this version. */
  live: boolean;
}

export interface EdgeOptions {
  tls: { certPem: string; keyPem: string };
  forwardFetch?: typeof fetch;
  startTimeoutMs?: number;
  drainTimeoutMs?: number;
}

export interface Edge extends DeploymentActivator {
  /** The Worker's edge URL; opens its listener on the first call, even before the Worker exists. */
  url(script: string): Promise<URL>;
  runtimes(script: string): EdgeRuntimeInfo[];
  audit(script: string): readonly EdgeAuditRecord[];
  close(): Promise<void>;
}

interface LiveEntry {
  versionId: string;
  percentage: number;
  runtime: Runtime;
}

interface LiveDeployment {
  deploymentId: string;
  entries: LiveEntry[];
}

export function createEdge(options: EdgeOptions): Edge {
  const live = new Map<string, LiveDeployment>();
  const listeners = new Map<string, Promise<LoopbackServer>>();
  const audits = new Map<string, EdgeAuditRecord[]>();
  let closed = false;

  const pool = createRuntimePool({
    forwardFetch: options.forwardFetch,
    startTimeoutMs: options.startTimeoutMs ?? 30_000,
    drainTimeoutMs: options.drainTimeoutMs ?? 30_000,
    onAudit(script, versionId, record) {
      let records = audits.get(script);
      if (records === undefined) {
        records = [];
        audits.set(script, records);
      }
      records.push({ versionId, record });
      if (records.length > MAX_AUDIT_RECORDS) records.splice(0, records.length - MAX_AUDIT_RECORDS);
    },
  });

  const serve = async (
    script: string,
    req: IncomingMessage,
    res: ServerResponse,
    context: HandlerContext,
  ) => {
    const deployment = live.get(script);
    if (deployment === undefined) {
      sendText(res, 404, `aml-edge sandbox: Worker ${script} has no deployment yet`);
      return;
    }
    const override = parseVersionOverrides(headerValue(req, VERSION_OVERRIDES_HEADER)).get(script);
    const entry =
      deployment.entries.find((candidate) => candidate.versionId === override) ??
      pickByPercentage(deployment.entries);
    // Chosen and counted in the same turn: a switch cannot stop this runtime before the request is inside it.
    const { runtime } = entry;
    pool.acquire(runtime);
    let status: number;
    let headers: [string, string][];
    let body: Buffer;
    try {
      const requestBody = await readBodyBytes(req, MAX_REQUEST_BYTES);
      const gateway = runtime.gateway;
      if (gateway === undefined) throw new Error(`version ${runtime.versionId} has no running runtime`);
      const target = new URL(context.url.pathname + context.url.search, gateway.url);
      const response = await fetch(target, {
        method: req.method ?? "GET",
        headers: forwardedHeaders(req),
        redirect: "manual",
        signal: context.signal,
        ...(["GET", "HEAD"].includes(req.method ?? "GET") ? {} : { body: requestBody }),
      });
      body = Buffer.from(await response.arrayBuffer());
      status = response.status;
      headers = [];
      response.headers.forEach((value, name) => {
        if (!DROPPED_RESPONSE_HEADERS.has(name) && name !== "set-cookie") headers.push([name, value]);
      });
      for (const cookie of response.headers.getSetCookie()) headers.push(["set-cookie", cookie]);
    } catch (error) {
      if (error instanceof BodyTooLargeError) {
        sendText(res, 413, `aml-edge sandbox: ${error.message}`);
        return;
      }
      if (context.signal.aborted) return;
      sendText(
        res,
        502,
        `aml-edge sandbox: version ${runtime.versionId} did not answer: ${errorText(error)}`,
      );
      return;
    } finally {
      pool.release(runtime);
    }
    res.writeHead(status, [...headers, ["content-length", String(body.length)]].flat());
    res.end(req.method === "HEAD" ? undefined : body);
  };

  const open = async (script: string): Promise<LoopbackServer> => {
    const server = await startLoopbackServer({ tls: options.tls });
    server.mount({ matches: () => true, handle: (req, res, context) => serve(script, req, res, context) });
    return server;
  };

  return {
    async url(script) {
      checkWorkerName(script);
      if (closed) throw new Error("the Cloudflare sandbox edge is closed");
      let listener = listeners.get(script);
      if (listener === undefined) {
        listener = open(script);
        listeners.set(script, listener);
        listener.catch(() => listeners.delete(script));
      }
      return new URL(`${(await listener).origin}/`);
    },
    async prepare(script, entries: { version: StoredVersion; percentage: number }[]) {
      if (closed) throw new Error("the Cloudflare sandbox edge is closed");
      const runtimes = entries.map(({ version }) => pool.obtain(version));
      try {
        await Promise.all(runtimes.map((runtime) => runtime.ready));
      } catch (error) {
        const current = new Set(live.get(script)?.entries.map((entry) => entry.runtime));
        for (const runtime of runtimes) if (!current.has(runtime)) pool.retire(runtime);
        throw error;
      }
      return (deploymentId) => {
        const previous = live.get(script);
        const next: LiveDeployment = {
          deploymentId,
          entries: entries.map(({ version, percentage }, index) => ({
            versionId: version.id,
            percentage,
            runtime: runtimes[index] as Runtime,
          })),
        };
        live.set(script, next);
        const kept = new Set(next.entries.map((entry) => entry.runtime));
        for (const entry of previous?.entries ?? []) if (!kept.has(entry.runtime)) pool.retire(entry.runtime);
      };
    },
    runtimes(script) {
      const liveVersions = new Set(live.get(script)?.entries.map((entry) => entry.versionId));
      return pool
        .list()
        .filter((runtime) => runtime.script === script)
        .map((runtime) => ({ ...runtime, live: liveVersions.has(runtime.versionId) }));
    },
    audit: (script) => audits.get(script) ?? [],
    async close() {
      closed = true;
      const servers = await Promise.allSettled([...listeners.values()]);
      await Promise.all(
        servers.map((server) => (server.status === "fulfilled" ? server.value.close() : undefined)),
      );
      live.clear();
      await pool.close();
    },
  };
}

/** RFC 8941 dictionary of strings, `worker="version-id", other="..."`; a malformed header counts as absent. */
export function parseVersionOverrides(header: string | undefined): Map<string, string> {
  const overrides = new Map<string, string>();
  if (header === undefined || header.trim() === "") return overrides;
  for (const member of header.split(",")) {
    const match = /^\s*([a-z*][a-z0-9_\-.*]*)\s*=\s*"([^"\\]*)"\s*(?:;.*)?$/.exec(member);
    if (match === null) return new Map();
    overrides.set(match[1] as string, match[2] as string);
  }
  return overrides;
}

/** A random version by percentage; a version at 0 % is never picked this way. */
function pickByPercentage(entries: LiveEntry[]): LiveEntry {
  const point = Math.random() * 100;
  let upTo = 0;
  for (const entry of entries) {
    upTo += entry.percentage;
    if (entry.percentage > 0 && point < upTo) return entry;
  }
  // Rounding left the point past the last boundary: the last version that has any share.
  return [...entries].reverse().find((entry) => entry.percentage > 0) ?? (entries[0] as LiveEntry);
}

function forwardedHeaders(req: IncomingMessage): Headers {
  const headers = new Headers();
  for (let index = 0; index + 1 < req.rawHeaders.length; index += 2) {
    const name = (req.rawHeaders[index] as string).toLowerCase();
    if (!DROPPED_REQUEST_HEADERS.has(name)) headers.append(name, req.rawHeaders[index + 1] as string);
  }
  // What Cloudflare's edge adds in front of every Worker; the gateway reads cf-ray into its audit record.
  headers.set("cf-connecting-ip", req.socket.remoteAddress ?? "127.0.0.1");
  headers.set("x-forwarded-proto", "https");
  headers.set("cf-ray", `${randomHex(8)}-SBX`);
  return headers;
}

function headerValue(req: IncomingMessage, name: string): string | undefined {
  const value = req.headers[name];
  return Array.isArray(value) ? value.join(", ") : value;
}

function sendText(res: ServerResponse, status: number, text: string): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  res.writeHead(status, {
    "content-type": "text/plain; charset=utf-8",
    "content-length": Buffer.byteLength(text),
  });
  res.end(text);
}
