// Runs the real gateway bundle in workerd through Miniflare, on loopback, the way a Worker version runs: the config
// bundle as the AML_EDGE_CONFIG JSON binding, upstream keys as string secrets. It captures the Worker's audit
// records from workerd's stdout and records every outbound fetch, which it forwards to loopback only. The local
// Cloudflare (cloudflare/) runs uploaded Worker versions with it too: their own modules, their own bindings.
import { createInterface } from "node:readline";
import type { Readable } from "node:stream";
import {
  type Json,
  Log,
  LogLevel,
  Miniflare,
  type MiniflareOptions,
  Response as MiniflareResponse,
  type WorkerOptions,
} from "miniflare";
import { bundleGateway } from "../build/gateway-bundle.ts";
import { CONFIG_BINDING, type ConfigBundle } from "../config/schema.ts";
import { AddressInUseError, errorText, isLoopbackHostname, LOOPBACK_HOST } from "./http-server.ts";

export const AUDIT_RECORD_TYPE = "aml-edge.audit";
/** A date the bundled workerd supports; Miniflare refuses dates newer than its runtime. */
export const COMPATIBILITY_DATE = "2026-07-01";
const GATEWAY_WORKER_NAME = "aml-edge-gateway";

export interface AuditRecord {
  type: typeof AUDIT_RECORD_TYPE;
  [field: string]: unknown;
}

export interface OutboundRequest {
  method: string;
  url: string;
  /** Epoch milliseconds when the Worker made the request. */
  time: number;
  /** The upstream's status, once it answered. */
  status?: number;
  /** Why the request was answered 502 without being forwarded (not loopback), or why forwarding failed. */
  refused?: string;
  error?: string;
}

export interface RuntimeLogLine {
  /** workerd's stdout or stderr, or Miniflare's own log. */
  stream: "stdout" | "stderr" | "miniflare";
  line: string;
  time: number;
}

/** Worker options the caller may add to the gateway Worker (queue producers, KV, service bindings, ...). */
export type ExtraWorkerOptions = Omit<
  WorkerOptions,
  "name" | "modules" | "script" | "scriptPath" | "bindings" | "compatibilityDate" | "outboundService"
>;

/** One module of a Worker, as a version upload carries it. */
export interface WorkerModule {
  type: "ESModule" | "CommonJS" | "Text" | "Data" | "CompiledWasm";
  /** The module's name, relative (what other modules import it as). */
  path: string;
  contents: string | Uint8Array;
}

export interface StartGatewayOptions {
  /** Bound as AML_EDGE_CONFIG. Omitted for a Worker whose bindings all come from `extraBindings` (an uploaded version). */
  bundle?: ConfigBundle;
  /** Worker secrets by binding name, e.g. AML_KEY_PRIMARY. */
  secrets: Record<string, string>;
  /** Default: an ephemeral port. */
  port?: number;
  /** More plain (JSON or string) bindings. */
  extraBindings?: Record<string, Json>;
  /** Merged into the gateway Worker's Miniflare options, e.g. `{ queueProducers: { AUDIT: "audit" } }`. */
  workerOptions?: ExtraWorkerOptions;
  /** More Workers in the same runtime (e.g. a queue consumer). Each needs a name. */
  additionalWorkers?: WorkerOptions[];
  /** The Worker module to run instead of the gateway bundle (tests of this harness). Default: bundleGateway(). */
  script?: string;
  /** The Worker's modules, the main module first: an uploaded version. Replaces `script`. */
  modules?: WorkerModule[];
  compatibilityDate?: string;
  compatibilityFlags?: string[];
  /** How outbound requests are forwarded once allowed (e.g. a fetch that trusts the sandbox CA). Default: fetch. */
  forwardFetch?: typeof fetch;
  /**
   * A loopback origin (`http://127.0.0.1:<port>`) that every outbound request goes to straight from workerd, as a
   * deployed Worker's go straight to the network. Then nothing is recorded in `outbound`, but a call the Worker
   * drops closes its connection, which the recording forwarder (a Node callback) cannot pass on. Default: the
   * recording forwarder.
   */
  directOutbound?: string;
  /**
   * Miniflare's default: on SIGINT or SIGTERM it stops workerd and exits the process at once, before any async
   * cleanup of the caller's can run. false removes those handlers; the caller then owns the signals and must
   * dispose() on them (workerd is still stopped when the process exits).
   */
  exitOnSignal?: boolean;
  /** Called with every audit record as it arrives. */
  onAudit?: (record: AuditRecord) => void;
  /** Called with every other line the runtime writes. */
  onLog?: (line: RuntimeLogLine) => void;
}

export interface GatewayAudit {
  readonly records: readonly AuditRecord[];
  /** The first record, already captured or still to come, that satisfies the predicate. */
  waitFor(predicate: (record: AuditRecord) => boolean, timeoutMs?: number): Promise<AuditRecord>;
  clear(): void;
}

export interface RunningGateway {
  /** The gateway's base URL, e.g. http://127.0.0.1:8787/ */
  readonly url: URL;
  /** Milliseconds from `new Miniflare` to ready (the cold start of workerd, not the bundling). */
  readonly startupMs: number;
  /** A real HTTP request to the gateway: a path, or a Request/URL whose path and query are sent to the gateway. */
  fetch(input: string | URL | Request, init?: RequestInit): Promise<Response>;
  readonly audit: GatewayAudit;
  readonly outbound: { readonly requests: readonly OutboundRequest[]; clear(): void };
  /** Lines of workerd output that were not audit records (the newest 1000). */
  readonly logs: readonly RuntimeLogLine[];
  /** A new version: Miniflare restarts the Worker with the new config and/or secrets (secrets are replaced whole). */
  update(changes: { bundle?: ConfigBundle; secrets?: Record<string, string> }): Promise<void>;
  dispose(): Promise<void>;
}

/** Hop-by-hop and Miniflare-internal headers that make Node's fetch fail or lie when a Worker request is re-sent. */
const DROPPED_REQUEST_HEADERS = new Set([
  "host",
  "content-length",
  "connection",
  "transfer-encoding",
  "keep-alive",
]);
/** Node's fetch has already decoded the body, so these would describe bytes the Worker never gets. */
const DROPPED_RESPONSE_HEADERS = new Set([
  "content-encoding",
  "content-length",
  "transfer-encoding",
  "connection",
]);
const MAX_LOG_LINES = 1000;
const SIGNALS = ["SIGINT", "SIGTERM"] as const;

export async function startGateway(options: StartGatewayOptions): Promise<RunningGateway> {
  if (options.modules !== undefined && options.script !== undefined)
    throw new Error("startGateway: pass either script or modules, not both");
  if (options.modules !== undefined && options.modules[0]?.type !== "ESModule")
    throw new Error("startGateway: modules must start with the main module, an ES module");
  const modules: WorkerModule[] = options.modules ?? [
    { type: "ESModule", path: "gateway.js", contents: options.script ?? (await bundleGateway()) },
  ];
  let configBundle = options.bundle;
  let secrets = checkSecrets(options.secrets, options.extraBindings, configBundle !== undefined);
  const forwardFetch = options.forwardFetch ?? fetch;
  const direct =
    options.directOutbound === undefined ? undefined : directOutboundService(options.directOutbound);

  const records: AuditRecord[] = [];
  const waiters = new Set<{ predicate: (r: AuditRecord) => boolean; resolve: (r: AuditRecord) => void }>();
  const logs: RuntimeLogLine[] = [];
  const outbound: OutboundRequest[] = [];
  const disposing = new AbortController();

  const onLine = (stream: RuntimeLogLine["stream"], line: string) => {
    const record = parseAuditLine(line);
    if (record === undefined) {
      const entry = { stream, line, time: Date.now() };
      logs.push(entry);
      if (logs.length > MAX_LOG_LINES) logs.splice(0, logs.length - MAX_LOG_LINES);
      options.onLog?.(entry);
      return;
    }
    records.push(record);
    options.onAudit?.(record);
    for (const waiter of waiters) {
      if (waiter.predicate(record)) {
        waiters.delete(waiter);
        waiter.resolve(record);
      }
    }
  };

  const outboundService = async (request: Request): Promise<MiniflareResponse> => {
    const entry: OutboundRequest = { method: request.method, url: request.url, time: Date.now() };
    outbound.push(entry);
    const target = new URL(request.url);
    if (
      !isLoopbackHostname(target.hostname) ||
      (target.protocol !== "http:" && target.protocol !== "https:")
    ) {
      // This machine has no internet, and a sandbox that silently reached one would hide a misconfigured URL.
      entry.refused = `${target.protocol}//${target.host} is not a loopback address`;
      entry.status = 502;
      return new MiniflareResponse(`aml-edge sandbox: outbound request refused: ${entry.refused}`, {
        status: 502,
      });
    }
    const headers = new Headers();
    request.headers.forEach((value, name) => {
      if (!DROPPED_REQUEST_HEADERS.has(name) && !name.startsWith("mf-")) headers.append(name, value);
    });
    try {
      const hasBody = request.method !== "GET" && request.method !== "HEAD";
      const response = await forwardFetch(target, {
        method: request.method,
        headers,
        redirect: "manual",
        signal: disposing.signal,
        ...(hasBody ? { body: await request.arrayBuffer() } : {}),
      });
      entry.status = response.status;
      const responseHeaders = new Headers();
      response.headers.forEach((value, name) => {
        if (!DROPPED_RESPONSE_HEADERS.has(name)) responseHeaders.append(name, value);
      });
      const nullBody = response.status === 204 || response.status === 304 || request.method === "HEAD";
      return new MiniflareResponse(nullBody ? null : await response.arrayBuffer(), {
        status: response.status,
        statusText: response.statusText,
        headers: [...responseHeaders],
      });
    } catch (error) {
      entry.error = errorText(error);
      entry.status = 502;
      return new MiniflareResponse(`aml-edge sandbox: outbound request failed: ${entry.error}`, {
        status: 502,
      });
    }
  };
  // workerd's outbound for the gateway and every additional Worker that brings none of its own.
  const workerOutbound = direct ?? outboundService;

  const log = new CapturingLog((message) => onLine("miniflare", message));
  const handleRuntimeStdio = (stdout: Readable, stderr: Readable) => {
    // Called again on every workerd restart (setOptions), with fresh streams.
    createInterface({ input: stdout, crlfDelay: Number.POSITIVE_INFINITY }).on("line", (l) =>
      onLine("stdout", l),
    );
    createInterface({ input: stderr, crlfDelay: Number.POSITIVE_INFINITY }).on("line", (l) =>
      onLine("stderr", l),
    );
  };

  let boundPort = options.port ?? 0;
  const miniflareOptions = (): MiniflareOptions => {
    const gateway: WorkerOptions = {
      ...options.workerOptions,
      name: GATEWAY_WORKER_NAME,
      modules,
      compatibilityDate: options.compatibilityDate ?? COMPATIBILITY_DATE,
      compatibilityFlags: options.compatibilityFlags ?? [],
      bindings: {
        ...options.extraBindings,
        ...secrets,
        ...(configBundle === undefined ? {} : { [CONFIG_BINDING]: configBundle as unknown as Json }),
      },
      outboundService: workerOutbound,
    };
    const additional = (options.additionalWorkers ?? []).map((worker) => ({
      outboundService: workerOutbound,
      ...worker,
    }));
    return {
      host: LOOPBACK_HOST,
      port: boundPort,
      log,
      logRequests: false,
      // No `Request.cf` download from workers.cloudflare.com: this machine has no internet.
      cf: false,
      handleRuntimeStdio,
      workers: [gateway, ...additional],
    };
  };

  const started = performance.now();
  const signalListeners = new Map(SIGNALS.map((signal) => [signal, new Set(process.listeners(signal))]));
  const miniflare = new Miniflare(miniflareOptions());
  if (options.exitOnSignal === false) {
    for (const [signal, before] of signalListeners) {
      for (const listener of process.listeners(signal)) {
        if (!before.has(listener)) process.removeListener(signal, listener);
      }
    }
  }
  let url: URL;
  try {
    url = await miniflare.ready;
  } catch (error) {
    await miniflare.dispose().catch(() => {});
    if ((error as { code?: unknown }).code === "ERR_ADDRESS_IN_USE")
      throw new AddressInUseError(options.port ?? 0);
    throw error;
  }
  const startupMs = Math.round(performance.now() - started);
  // setOptions must keep the address the caller was given, even when the first port was ephemeral.
  boundPort = Number(url.port);

  let queue: Promise<void> = Promise.resolve();
  let disposed: Promise<void> | undefined;

  return {
    get url() {
      return new URL(url);
    },
    startupMs,
    fetch(input, init) {
      const requested = new URL(input instanceof Request ? input.url : String(input), url);
      const target = new URL(`${requested.pathname}${requested.search}`, url);
      return input instanceof Request ? fetch(new Request(target, input), init) : fetch(target, init);
    },
    audit: {
      get records() {
        return records;
      },
      waitFor(predicate, timeoutMs = 5000) {
        const found = records.find(predicate);
        if (found !== undefined) return Promise.resolve(found);
        return new Promise((resolve, reject) => {
          const waiter = {
            predicate,
            resolve: (record: AuditRecord) => {
              clearTimeout(timer);
              resolve(record);
            },
          };
          const timer = setTimeout(() => {
            waiters.delete(waiter);
            reject(
              new Error(
                `no matching audit record within ${timeoutMs} ms (${records.length} records captured)`,
              ),
            );
          }, timeoutMs);
          waiters.add(waiter);
        });
      },
      clear() {
        records.length = 0;
      },
    },
    outbound: {
      get requests() {
        return outbound;
      },
      clear() {
        outbound.length = 0;
      },
    },
    get logs() {
      return logs;
    },
    update(changes) {
      queue = queue.then(async () => {
        if (changes.bundle !== undefined) configBundle = changes.bundle;
        if (changes.secrets !== undefined)
          secrets = checkSecrets(changes.secrets, options.extraBindings, configBundle !== undefined);
        await miniflare.setOptions(miniflareOptions());
        url = await miniflare.ready;
      });
      return queue;
    },
    dispose() {
      disposed ??= (async () => {
        disposing.abort();
        await queue.catch(() => {});
        await miniflare.dispose();
        for (const waiter of waiters) waiters.delete(waiter);
      })();
      return disposed;
    },
  };
}

/** A workerd output line that is a JSON object with type "aml-edge.audit", else undefined. */
export function parseAuditLine(line: string): AuditRecord | undefined {
  const trimmed = line.trim();
  if (!trimmed.startsWith("{")) return undefined;
  try {
    const value: unknown = JSON.parse(trimmed);
    if (
      typeof value === "object" &&
      value !== null &&
      (value as { type?: unknown }).type === AUDIT_RECORD_TYPE
    ) {
      return value as AuditRecord;
    }
  } catch {
    // Not JSON: an ordinary log line.
  }
  return undefined;
}

function checkSecrets(
  secrets: Record<string, string>,
  extra: Record<string, Json> | undefined,
  hasConfig: boolean,
): Record<string, string> {
  for (const name of Object.keys(secrets)) {
    if (hasConfig && name === CONFIG_BINDING)
      throw new Error(`startGateway: a secret cannot be named ${CONFIG_BINDING}`);
    if (extra !== undefined && name in extra)
      throw new Error(`startGateway: ${name} is both a secret and a binding`);
  }
  return { ...secrets };
}

/** Miniflare's own messages (worker errors, warnings) go to the same line handler as workerd's output. */
class CapturingLog extends Log {
  readonly #emit: (message: string) => void;
  constructor(emit: (message: string) => void) {
    super(LogLevel.WARN);
    this.#emit = emit;
  }
  protected override log(message: string): void {
    this.#emit(message);
  }
}

/**
 * Miniflare's `external` outbound service for a loopback origin (`directOutbound`: stand-ins on loopback):
 * workerd then calls it itself. Anything but an `http://` loopback origin with a port is refused.
 */
function directOutboundService(origin: string): {
  external: { address: string; http: Record<string, never> };
} {
  const url = URL.canParse(origin) ? new URL(origin) : undefined;
  if (
    url === undefined ||
    url.protocol !== "http:" ||
    !isLoopbackHostname(url.hostname) ||
    url.port === "" ||
    url.pathname !== "/"
  ) {
    throw new Error(
      `startGateway: directOutbound must be a loopback origin such as http://127.0.0.1:8080, got ${JSON.stringify(origin)}`,
    );
  }
  return { external: { address: url.host, http: {} } };
}
