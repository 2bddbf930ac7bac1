// Runs Workers in a workerd of the benchmark's own, from a config it writes, with each Worker's outbound `fetch`
// going straight to one loopback origin. Miniflare puts an interceptor Worker of its own (`outbound:N`: it copies
// the request's headers, sets CF-Worker and strips CF-Connecting-IP) in front of every user Worker's outbound
// fetch; a deployed Worker has no such hop, and under load it cost workerd about as much CPU per request as the
// pass-through Worker itself (test/bench/README.md). The gateway bundle and its bindings are the same as under
// Miniflare: only the runtime's plumbing around them differs.
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Readable } from "node:stream";

/** Time allowed for workerd to compile the Workers and report every socket. */
const READY_TIMEOUT_MS = 30_000;
const NAME = /^[a-z][a-z0-9-]*$/;
const BINDING = /^[A-Za-z_][A-Za-z0-9_]*$/;

export interface DirectWorker {
  /** Service and socket name: lowercase letters, digits and dashes. */
  name: string;
  /** The ES module's source. */
  module: string;
  compatibilityDate: string;
  /** Text bindings (secrets, URIs). */
  text?: Record<string, string>;
  /** JSON bindings: the value is serialised here and parsed by workerd. */
  json?: Record<string, unknown>;
}

export interface DirectWorkerd {
  /** `http://127.0.0.1:<port>` of the named Worker's socket. */
  url(name: string): URL;
  /** The workerd process (its id is how CPU is attributed). */
  readonly process: ChildProcess;
  close(): Promise<void>;
}

/**
 * Starts `binary` (workerd, or a wrapper that execs it) on a written config: one service per Worker with
 * `globalOutbound` an external HTTP service at `upstreamOrigin`, one loopback socket per Worker on a free port.
 * Resolves once workerd has reported every socket's port on its control descriptor.
 */
export async function startDirectWorkerd(options: {
  binary: string;
  workers: readonly DirectWorker[];
  upstreamOrigin: string;
}): Promise<DirectWorkerd> {
  const upstream = new URL(options.upstreamOrigin);
  if (upstream.protocol !== "http:" || upstream.port === "") {
    throw new Error(
      `startDirectWorkerd: upstreamOrigin must be http://host:port, got ${options.upstreamOrigin}`,
    );
  }
  const dir = mkdtempSync(join(tmpdir(), "aml-edge-workerd-"));
  try {
    // Every module and binding value is embedded from a file, so no value needs escaping in the config's text.
    const services = [`(name = "upstream", external = (address = "${upstream.host}", http = ()))`];
    const sockets: string[] = [];
    for (const worker of options.workers) {
      if (!NAME.test(worker.name)) throw new Error(`startDirectWorkerd: bad worker name ${worker.name}`);
      writeFileSync(join(dir, `${worker.name}.js`), worker.module);
      const bindings: string[] = [];
      const bind = (kind: "text" | "json", name: string, value: string) => {
        if (!BINDING.test(name)) throw new Error(`startDirectWorkerd: bad binding name ${name}`);
        const file = `${worker.name}.${name}.${kind}`;
        writeFileSync(join(dir, file), value);
        bindings.push(`(name = "${name}", ${kind} = embed "${file}")`);
      };
      for (const [name, value] of Object.entries(worker.text ?? {})) bind("text", name, value);
      for (const [name, value] of Object.entries(worker.json ?? {}))
        bind("json", name, JSON.stringify(value));
      services.push(
        `(name = "${worker.name}", worker = (modules = [(name = "${worker.name}.js", esModule = embed ` +
          `"${worker.name}.js")], compatibilityDate = "${worker.compatibilityDate}", bindings = [${bindings.join(", ")}], ` +
          `globalOutbound = "upstream"))`,
      );
      sockets.push(
        `(name = "${worker.name}", address = "127.0.0.1:0", http = (), service = "${worker.name}")`,
      );
    }
    const config =
      'using Workerd = import "/workerd/workerd.capnp";\n' +
      `const config :Workerd.Config = (services = [${services.join(", ")}], sockets = [${sockets.join(", ")}]);\n`;
    writeFileSync(join(dir, "config.capnp"), config);
  } catch (error) {
    rmSync(dir, { recursive: true, force: true });
    throw error;
  }

  const child = spawn(options.binary, ["serve", "--control-fd=3", join(dir, "config.capnp")], {
    stdio: ["ignore", "ignore", "pipe", "pipe"],
  });
  // stdout is not read here (the benchmark's wrapper sends it to a pipe); stderr is drained so that workerd never
  // blocks on it.
  (child.stderr as Readable).resume();
  const ports = new Map<string, number>();
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  const close = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill("SIGTERM");
      await exited;
    }
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`workerd did not report its sockets within ${READY_TIMEOUT_MS} ms`)),
        READY_TIMEOUT_MS,
      );
      child.once("error", (error) => {
        clearTimeout(timer);
        reject(error);
      });
      child.once("exit", (code, signal) => {
        clearTimeout(timer);
        reject(new Error(`workerd exited before it was ready (code ${code}, signal ${signal})`));
      });
      let pending = "";
      (child.stdio[3] as Readable).setEncoding("utf8").on("data", (chunk: string) => {
        const lines = (pending + chunk).split("\n");
        pending = lines.pop() ?? "";
        for (const line of lines) {
          const message = JSON.parse(line) as { event?: string; socket?: string; port?: number };
          if (message.event === "listen" && message.socket && message.port)
            ports.set(message.socket, message.port);
        }
        if (ports.size === options.workers.length) {
          clearTimeout(timer);
          resolve();
        }
      });
    });
  } catch (error) {
    await close();
    throw error;
  }
  return {
    url(name) {
      const port = ports.get(name);
      if (port === undefined) throw new Error(`no Worker named ${name} in this workerd`);
      return new URL(`http://127.0.0.1:${port}`);
    },
    process: child,
    close,
  };
}

/** The workerd binary Miniflare would run: the `workerd` package as Miniflare itself resolves it. */
export function workerdBinary(): string {
  const fromMiniflare = createRequire(import.meta.resolve("miniflare"));
  return (fromMiniflare("workerd") as { default: string }).default;
}
