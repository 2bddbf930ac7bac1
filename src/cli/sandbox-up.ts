// `aml-edge sandbox up`: the local clouds (GitHub OIDC, Entra ID, Key Vault, Azurite, ARM for Azure ML with ONNX
// Runtime, Cloudflare with its edge in workerd) on loopback until Ctrl-C, with the environment and the inputs that
// point a job at them. The values printed are the sandbox's own (a local CA file, a request token only this sandbox
// accepts, the name of the Key Vault secret holding the Cloudflare bootstrap token, never the token); no cloud
// credential exists here.
import { startSandbox } from "../sandbox/sandbox.ts";
import { formatOptions, type OptionSpec, parseCommandArgs } from "./args.ts";
import { UsageError } from "./errors.ts";
import type { CliIo } from "./io.ts";

const COMMAND = "sandbox up";

const OPTIONS: OptionSpec[] = [
  {
    name: "deployment-seconds",
    type: "string",
    placeholder: "<s>",
    description: "how long a model deployment takes to provision (default 1)",
  },
  { name: "help", type: "boolean", short: "h", description: "show this help" },
];

export const SANDBOX_UP_HELP = `Usage: aml-edge sandbox up [--deployment-seconds <s>]

Starts the local clouds on 127.0.0.1 over HTTPS from a CA it generates: the GitHub Actions OIDC token service,
Entra ID (an app registration whose federated credential trusts the sandbox job), Key Vault, Azurite as the
workspace's default datastore, ARM for Azure ML, whose deployments run the registered ONNX model, and the
Cloudflare API (tokens, Worker versions and deployments) with an edge that runs deployed Worker versions in
workerd. The Cloudflare bootstrap token is in Key Vault. Prints the environment a job step needs and the inputs
that point the deploy-model and route actions at the sandbox. Ctrl-C stops everything.

Options:
${formatOptions(OPTIONS)}`;

export interface SandboxUpSettings {
  deploymentMs: number;
}

export function readSandboxUpSettings(args: readonly string[]): SandboxUpSettings | "help" {
  const options = parseCommandArgs(COMMAND, args, OPTIONS);
  if (options.help === true) return "help";
  const raw = options["deployment-seconds"];
  let deploymentMs = 1_000;
  if (typeof raw === "string") {
    const seconds = Number(raw);
    if (!/^[0-9]+(\.[0-9]+)?$/.test(raw) || seconds > 3600) {
      throw new UsageError(
        `aml-edge ${COMMAND}: --deployment-seconds ${JSON.stringify(raw)} is not a number of seconds; accepted: 0 to 3600, e.g. --deployment-seconds 5`,
      );
    }
    deploymentMs = Math.round(seconds * 1000);
  }
  return { deploymentMs };
}

/** Runs until `io.stop` aborts; resolves with the exit code. */
export async function runSandboxUp(settings: SandboxUpSettings, io: CliIo): Promise<number> {
  const started = performance.now();
  const sandbox = await startSandbox({ timings: { deploymentMs: settings.deploymentMs } });
  try {
    io.stdout(`sandbox ready in ${Math.round(performance.now() - started)} ms`);
    io.stdout("environment for a job step (sh):");
    for (const [name, value] of Object.entries(sandbox.environment()))
      io.stdout(`  export ${name}='${value}'`);
    io.stdout("action inputs (deploy-model, route, rotate-keys):");
    for (const [name, value] of Object.entries(sandbox.inputs())) io.stdout(`  ${name}: ${value}`);
    io.stdout(`Key Vault: ${sandbox.keyVault.vaultUrl}`);
    io.stdout(`Cloudflare API: ${sandbox.cloudflare.apiUrl}`);
    io.stdout(`Cloudflare account: ${sandbox.cloudflare.accountId}`);
    io.stdout(`gateway edge URL: ${sandbox.gatewayUrl} (404 until a gateway version is deployed)`);
    io.stdout(
      `Cloudflare bootstrap token: Key Vault secret ${sandbox.cloudflare.bootstrapTokenSecretName} (API Tokens Write only)`,
    );
    io.stdout("Ctrl-C stops the sandbox.");
    if (!io.stop.aborted) {
      await new Promise<void>((resolve) =>
        io.stop.addEventListener("abort", () => resolve(), { once: true }),
      );
    }
    return 0;
  } finally {
    await sandbox.close();
    io.stdout("sandbox stopped");
  }
}
