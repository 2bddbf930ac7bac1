// Bundles the gateway Worker (src/gateway/index.ts and everything it imports, jose and zod included) into the one
// ES module that workerd runs: Miniflare resolves no npm imports, and a Worker version upload takes one module.
// The sandbox and `aml-edge gateway dev` bundle in-process; the action build embeds the same string.
import { readFile } from "node:fs/promises";
import { fileURLToPath } from "node:url";

declare global {
  /**
   * Set (by esbuild `define`) only in the built `aml-edge` command: the path, relative to the built module, of the
   * prebuilt Worker shipped beside it, since the sources and esbuild are not shipped with it.
   */
  var AML_EDGE_PREBUILT_GATEWAY: string | undefined;
}

export const GATEWAY_ENTRY = fileURLToPath(new URL("../gateway/index.ts", import.meta.url));

export interface BundleOptions {
  minify?: boolean;
}

const cache = new Map<string, Promise<string>>();

/** The gateway as one ESM module string, built once per process and option set. */
export function bundleGateway(options: BundleOptions = {}): Promise<string> {
  const prebuilt = globalThis.AML_EDGE_PREBUILT_GATEWAY;
  if (typeof prebuilt === "string")
    return cached(`prebuilt\0${prebuilt}`, () => readFile(new URL(prebuilt, import.meta.url), "utf8"));
  return bundleWorker(GATEWAY_ENTRY, options);
}

/** Any Worker entry bundled the way the gateway is (cached per entry and option set). */
export function bundleWorker(entryPoint: string, options: BundleOptions = {}): Promise<string> {
  const minify = options.minify ?? false;
  return cached(`${entryPoint}\0${minify}`, () => buildWorker(entryPoint, minify));
}

function cached(key: string, make: () => Promise<string>): Promise<string> {
  let pending = cache.get(key);
  if (pending === undefined) {
    pending = make();
    cache.set(key, pending);
    // A failed build (a syntax error mid-edit) must not stick: the next call tries again.
    pending.catch(() => cache.delete(key));
  }
  return pending;
}

async function buildWorker(entryPoint: string, minify: boolean): Promise<string> {
  // Loaded on demand: the built command reads the prebuilt Worker and must run where esbuild is not installed.
  const { build } = await import("esbuild");
  const result = await build({
    entryPoints: [entryPoint],
    bundle: true,
    write: false,
    format: "esm",
    // neutral, not node: a Node built-in imported by mistake fails the build instead of reaching workerd.
    platform: "neutral",
    target: "es2024",
    conditions: ["workerd", "worker", "browser"],
    mainFields: ["browser", "module", "main"],
    external: ["cloudflare:*"],
    minify,
    legalComments: minify ? "none" : "inline",
    logLevel: "silent",
  });
  const output = result.outputFiles[0];
  if (output === undefined) throw new Error(`esbuild produced no output for ${entryPoint}`);
  return output.text;
}
