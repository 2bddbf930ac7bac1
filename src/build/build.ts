// `npm run build`: everything in dist/, which is committed (actions and the `aml-edge` bin run from it) and
// checked by CI to be exactly what the sources build. Output must therefore be deterministic: no timestamps, no
// absolute paths, fixed esbuild options.
//   dist/gateway/worker.js  the gateway Worker, one ES module (what a Worker version uploads)
//   dist/cli/index.js       the `aml-edge` command
import { mkdir, rm, writeFile } from "node:fs/promises";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";
import { bundleGateway } from "./gateway-bundle.ts";

const root = fileURLToPath(new URL("../../", import.meta.url));
const dist = `${root}dist`;

/** Packages the command loads at run time instead of bundling: native binaries, or the bundler itself. */
const CLI_EXTERNALS = ["miniflare", "esbuild", "workerd"];

async function main(): Promise<void> {
  await rm(dist, { recursive: true, force: true });
  await mkdir(`${dist}/gateway`, { recursive: true });
  await writeFile(`${dist}/gateway/worker.js`, await bundleGateway());

  await build({
    entryPoints: [`${root}src/cli/main.ts`],
    outfile: `${dist}/cli/index.js`,
    bundle: true,
    format: "esm",
    platform: "node",
    target: "node24",
    external: CLI_EXTERNALS,
    // Bundled CommonJS dependencies call require(); an ES module has none until one is made.
    banner: {
      js: [
        "#!/usr/bin/env node",
        'import { createRequire as __amlEdgeCreateRequire } from "node:module";',
        "const require = __amlEdgeCreateRequire(import.meta.url);",
      ].join("\n"),
    },
    // The command uses the prebuilt Worker beside it rather than bundling sources it does not ship with.
    define: { "globalThis.AML_EDGE_PREBUILT_GATEWAY": '"../gateway/worker.js"' },
    legalComments: "none",
    logLevel: "warning",
  });
  console.log("built dist/gateway/worker.js and dist/cli/index.js");
}

main().catch((error: unknown) => {
  console.error(error instanceof Error ? error.message : String(error));
  process.exitCode = 1;
});
