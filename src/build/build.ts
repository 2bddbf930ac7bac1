// `npm run build`: everything in dist/, which is committed (actions and the `aml-edge` bin run from it) and
// checked by CI to be exactly what the sources build. Output must therefore be deterministic: no timestamps, no
// absolute paths, fixed esbuild options.
//   dist/gateway/worker.js  the gateway Worker, one ES module (what a Worker version uploads)
//   dist/cli/index.js       the `aml-edge` command
//   dist/<name>/index.js    each GitHub Action, from its entry src/actions/<name>.ts (actions/<name>/action.yml runs
//                           it; dist/main/index.js is the umbrella action at the repository root)
import { mkdir, readdir, rm, writeFile } from "node:fs/promises";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";
import { bundleGateway } from "./gateway-bundle.ts";

const root = fileURLToPath(new URL("../../", import.meta.url));
const dist = `${root}dist`;

/** Packages the command loads at run time instead of bundling: native binaries, or the bundler itself. */
const CLI_EXTERNALS = ["miniflare", "esbuild", "workerd", "onnxruntime-node", "azurite"];

// Bundled CommonJS dependencies call require(); an ES module has none until one is made.
const CREATE_REQUIRE = [
  'import { createRequire as __amlEdgeCreateRequire } from "node:module";',
  "const require = __amlEdgeCreateRequire(import.meta.url);",
];

/** Every action entry: the .ts files directly in src/actions (their logic sits in subfolders). */
async function actionEntries(): Promise<string[]> {
  const entries = await readdir(`${root}src/actions`, { withFileTypes: true });
  return entries
    .filter((entry) => entry.isFile() && entry.name.endsWith(".ts"))
    .map((entry) => entry.name.slice(0, -".ts".length))
    .sort();
}

async function main(): Promise<void> {
  await rm(dist, { recursive: true, force: true });
  await mkdir(`${dist}/gateway`, { recursive: true });
  const gatewayWorker = await bundleGateway();
  await writeFile(`${dist}/gateway/worker.js`, gatewayWorker);

  await build({
    entryPoints: [`${root}src/cli/main.ts`],
    outfile: `${dist}/cli/index.js`,
    bundle: true,
    format: "esm",
    platform: "node",
    target: "node24",
    external: CLI_EXTERNALS,
    // Bundled CommonJS dependencies call require(); an ES module has none until one is made.
    banner: { js: ["#!/usr/bin/env node", ...CREATE_REQUIRE].join("\n") },
    // The command uses the prebuilt Worker beside it rather than bundling sources it does not ship with.
    define: { "globalThis.AML_EDGE_PREBUILT_GATEWAY": '"../gateway/worker.js"' },
    legalComments: "none",
    logLevel: "warning",
  });

  const actions = await actionEntries();
  for (const name of actions) {
    // One self-contained ES module per action: the runner runs `node dist/<name>/index.js` with no node_modules
    // (node24; @actions/core 3 is ESM-only).
    await build({
      entryPoints: [`${root}src/actions/${name}.ts`],
      outfile: `${dist}/${name}/index.js`,
      bundle: true,
      format: "esm",
      platform: "node",
      target: "node24",
      banner: { js: CREATE_REQUIRE.join("\n") },
      // The gateway Worker rides inside the action bundles that publish it (route, and the umbrella), so a runner
      // needs nothing beside dist/<name>/index.js; bundles that never read it do not carry it.
      define: { "globalThis.AML_EDGE_GATEWAY_WORKER": JSON.stringify(gatewayWorker) },
      legalComments: "none",
      logLevel: "warning",
    });
  }
  console.log(
    `built dist/gateway/worker.js, dist/cli/index.js and ${actions.map((name) => `dist/${name}/index.js`).join(", ")}`,
  );
}

main().catch((error: unknown) => {
  console.error(error instanceof Error ? error.message : String(error));
  process.exitCode = 1;
});
