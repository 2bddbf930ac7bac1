// One workerd (one Miniflare, through startGateway) per running Worker version, so starting or stopping one never
// restarts another. A runtime is started when a deployment needs it, counts the edge requests inside it, and is
// stopped only after no deployment uses it and those requests finished (or a bounded drain time passed).

import type { Json } from "miniflare";
import { supportedCompatibilityDate } from "miniflare";
import { type AuditRecord, type RunningGateway, startGateway } from "../gateway-runtime.ts";
import { errorText } from "../http-server.ts";
import { invalidUpload } from "./errors.ts";
import type { StoredVersion } from "./workers.ts";

/** Miniflare's own default for a Worker that names no compatibility date. */
const FALLBACK_COMPATIBILITY_DATE = "2000-01-01";
const MAX_STARTUP_MESSAGE = 2000;

export type RuntimeState = "starting" | "ready" | "draining";

export interface RuntimeInfo {
  script: string;
  versionId: string;
  state: RuntimeState;
  inFlight: number;
}

export interface Runtime {
  readonly script: string;
  readonly versionId: string;
  /** Resolves once workerd serves the version; rejects (10021) when it cannot start or takes too long. */
  readonly ready: Promise<RunningGateway>;
  /** Set once ready. */
  gateway: RunningGateway | undefined;
  state: RuntimeState | "stopped";
  inFlight: number;
  drainTimer: NodeJS.Timeout | undefined;
}

export interface RuntimePoolOptions {
  /** How outbound fetches of the Workers are forwarded (a fetch that trusts the sandbox CA). */
  forwardFetch: typeof fetch | undefined;
  /** Longest wait for a runtime to start. */
  startTimeoutMs: number;
  /** Longest wait for in-flight requests before a retired runtime is stopped anyway. */
  drainTimeoutMs: number;
  onAudit(script: string, versionId: string, record: AuditRecord): void;
}

export interface RuntimePool {
  /** The version's runtime: the one running (kept, even if it was draining), or a new one starting. */
  obtain(version: StoredVersion): Runtime;
  /** No deployment uses it any more: stop it once its requests finished. */
  retire(runtime: Runtime): void;
  /** A request entered the runtime; call `release` when its response was read. */
  acquire(runtime: Runtime): void;
  release(runtime: Runtime): void;
  list(): RuntimeInfo[];
  close(): Promise<void>;
}

export function createRuntimePool(options: RuntimePoolOptions): RuntimePool {
  const runtimes = new Map<string, Runtime>();
  const stopping = new Set<Promise<void>>();

  const stop = (runtime: Runtime) => {
    if (runtime.state === "stopped") return;
    runtime.state = "stopped";
    clearTimeout(runtime.drainTimer);
    if (runtimes.get(runtime.versionId) === runtime) runtimes.delete(runtime.versionId);
    const done = runtime.ready
      .then((gateway) => gateway.dispose())
      .catch(() => undefined)
      .finally(() => stopping.delete(done));
    stopping.add(done);
  };

  const start = (version: StoredVersion): Runtime => {
    const { promise: ready, resolve, reject } = Promise.withResolvers<RunningGateway>();
    // Nobody may be waiting yet; the rejection is reported to whoever awaits `ready`.
    ready.catch(() => undefined);
    const runtime: Runtime = {
      script: version.script,
      versionId: version.id,
      ready,
      gateway: undefined,
      state: "starting",
      inFlight: 0,
      drainTimer: undefined,
    };
    runtimes.set(version.id, runtime);
    const starting = startGateway({
      modules: version.modules.map((module) => ({
        type: module.type,
        path: module.name,
        contents: module.contents,
      })),
      secrets: {},
      extraBindings: bindingsOf(version),
      compatibilityDate: runnableDate(version.compatibilityDate),
      compatibilityFlags: version.compatibilityFlags,
      ...(options.forwardFetch === undefined ? {} : { forwardFetch: options.forwardFetch }),
      // The sandbox owns the signals: `aml-edge sandbox up` must get to close everything on Ctrl-C.
      exitOnSignal: false,
      onAudit: (record) => options.onAudit(version.script, version.id, record),
    });
    const timer = setTimeout(
      () => fail(new Error(`workerd did not start within ${options.startTimeoutMs} ms`)),
      options.startTimeoutMs,
    );
    const fail = (error: unknown) => {
      clearTimeout(timer);
      // A runtime that comes up after its timeout still has to be stopped.
      void starting.then((gateway) => gateway.dispose()).catch(() => undefined);
      runtime.state = "stopped";
      if (runtimes.get(runtime.versionId) === runtime) runtimes.delete(runtime.versionId);
      reject(
        invalidUpload(
          `version ${version.id} of Worker ${version.script} failed to start: ${errorText(error).slice(0, MAX_STARTUP_MESSAGE)}`,
        ),
      );
    };
    starting.then((gateway) => {
      clearTimeout(timer);
      runtime.gateway = gateway;
      if (runtime.state === "starting") runtime.state = "ready";
      resolve(gateway);
    }, fail);
    return runtime;
  };

  const drainIfIdle = (runtime: Runtime) => {
    if (runtime.state === "draining" && runtime.inFlight === 0) stop(runtime);
  };

  return {
    obtain(version) {
      const running = runtimes.get(version.id);
      if (running === undefined) return start(version);
      if (running.state === "draining") {
        clearTimeout(running.drainTimer);
        running.drainTimer = undefined;
        running.state = "ready";
      }
      return running;
    },
    retire(runtime) {
      if (runtime.state === "stopped" || runtime.state === "draining") return;
      if (runtime.state === "starting") {
        stop(runtime);
        return;
      }
      runtime.state = "draining";
      runtime.drainTimer = setTimeout(() => stop(runtime), options.drainTimeoutMs);
      runtime.drainTimer.unref();
      drainIfIdle(runtime);
    },
    acquire(runtime) {
      runtime.inFlight += 1;
    },
    release(runtime) {
      runtime.inFlight -= 1;
      drainIfIdle(runtime);
    },
    list: () =>
      [...runtimes.values()].map((runtime) => ({
        script: runtime.script,
        versionId: runtime.versionId,
        state: runtime.state as RuntimeState,
        inFlight: runtime.inFlight,
      })),
    async close() {
      for (const runtime of [...runtimes.values()]) stop(runtime);
      await Promise.all([...stopping]);
    },
  };
}

/** The version's bindings as workerd sees them: JSON values, strings, and the version metadata object. */
function bindingsOf(version: StoredVersion): Record<string, Json> {
  const bindings: Record<string, Json> = {};
  for (const binding of version.bindings) {
    switch (binding.type) {
      case "json":
        bindings[binding.name] = binding.json as Json;
        break;
      case "secret_text":
      case "plain_text":
        bindings[binding.name] = binding.text;
        break;
      case "version_metadata":
        bindings[binding.name] = {
          id: version.id,
          tag: version.annotations["workers/tag"] ?? "",
          timestamp: new Date(version.createdOn).toISOString(),
        };
        break;
    }
  }
  return bindings;
}

/**
 * Cloudflare accepts any date up to today; the bundled workerd only up to its own release. A later date runs at the
 * newest one it supports, which changes nothing for Workers that need no newer behaviour.
 */
function runnableDate(date: string | undefined): string {
  if (date === undefined) return FALLBACK_COMPATIBILITY_DATE;
  return date > supportedCompatibilityDate ? supportedCompatibilityDate : date;
}
