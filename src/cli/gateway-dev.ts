// `aml-edge gateway dev`: the gateway running locally in workerd with a config file, and local clouds for whatever
// that config puts on loopback, so a person can send a real request through the real Worker in one command. Tokens
// and keys stay out of the terminal: the demo token goes to a file only its owner can read, keys show as fingerprints.
import { rmSync } from "node:fs";
import { mkdtemp, readFile, rename, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { keyFingerprint } from "../config/fingerprint.ts";
import {
  compileConfigBundle,
  fetchKeySnapshots,
  type GatewayConfig,
  KeySnapshotError,
  type LintMode,
  loadGatewayConfig,
  parseGatewayConfig,
  type RouteConfig,
} from "../config/index.ts";
import { CREDIT_COLUMNS, SAMPLE_CREDIT_ROW } from "../sandbox/credit-model.ts";
import { type AuditRecord, type RunningGateway, startGateway } from "../sandbox/gateway-runtime.ts";
import { AddressInUseError } from "../sandbox/http-server.ts";
import { isLoopbackUrl, type LocalStandIns, startLocalStandIns } from "../sandbox/local-stand-ins.ts";
import { generateEndpointKey, type ScoringServer } from "../sandbox/scoring-server.ts";
import type { TokenIssuer } from "../sandbox/token-issuer.ts";
import { formatOptions, type OptionSpec, parseCommandArgs, parsePort, requireString } from "./args.ts";
import { demoPrincipal } from "./demo-principal.ts";
import { errorMessage, SetupError } from "./errors.ts";
import type { CliIo } from "./io.ts";

const COMMAND = "gateway dev";
export const DEFAULT_GATEWAY_PORT = 8787;

const OPTIONS: OptionSpec[] = [
  {
    name: "config",
    type: "string",
    placeholder: "<file>",
    description: "the gateway config (YAML), required",
  },
  {
    name: "port",
    type: "string",
    placeholder: "<n>",
    description: `the gateway's port on 127.0.0.1 (default ${DEFAULT_GATEWAY_PORT}; 0 picks a free port)`,
  },
  {
    name: "local",
    type: "boolean",
    negatable: true,
    description: "start no local stand-ins: use whatever answers at the configured URLs",
  },
  { name: "help", type: "boolean", short: "h", description: "show this help" },
];

export const GATEWAY_DEV_HELP = `Usage: aml-edge gateway dev --config <file> [--port <n>] [--no-local]

Runs the gateway Worker in workerd (Miniflare) on 127.0.0.1 with the given config. For each issuer key set and
each Azure ML scoring URI that the config puts on loopback, a local stand-in starts at that address (a token issuer
with the config's issuer; an endpoint running a model per deployment), unless --no-local or something already
listens there. Each route's upstream secrets (e.g. AML_KEY_PRIMARY) are read from environment variables of the same
names, else taken from the local stand-in. Prints the gateway URL, a curl command whose demo token is read from a
file only you can read, and a fingerprint of each upstream key. Ctrl-C stops everything and removes the token.

Options:
${formatOptions(OPTIONS)}`;

export interface GatewayDevSettings {
  configPath: string;
  port: number;
  local: boolean;
}

/** The settings, or "help" when help was asked for. Throws UsageError naming the bad argument. */
export function readGatewayDevSettings(args: readonly string[]): GatewayDevSettings | "help" {
  const options = parseCommandArgs(COMMAND, args, OPTIONS);
  if (options.help === true) return "help";
  const configSpec = OPTIONS[0] as OptionSpec;
  const configPath = requireString(COMMAND, options, configSpec, "--config src/examples/gateway.yaml");
  const port =
    typeof options.port === "string" ? parsePort(COMMAND, "port", options.port) : DEFAULT_GATEWAY_PORT;
  return { configPath, port, local: options.local !== false };
}

/** Runs until `io.stop` aborts, then stops everything it started. Resolves with the exit code. */
export async function runGatewayDev(settings: GatewayDevSettings, io: CliIo): Promise<number> {
  const cleanups: { what: string; run: () => Promise<unknown> }[] = [];
  try {
    const { config, mode } = await readConfig(settings.configPath, io);

    const generatedKeys = new Map<string, string>();
    const keyFor = (binding: string) => {
      const fromEnv = nonEmpty(io.env[binding]);
      if (fromEnv !== undefined) return fromEnv;
      const key = generatedKeys.get(binding) ?? generateEndpointKey();
      generatedKeys.set(binding, key);
      return key;
    };
    const standIns: LocalStandIns | undefined = settings.local
      ? await startLocalStandIns(config, {
          keysFor: (route) =>
            route.upstreamAuth.mode === "key"
              ? {
                  primary: keyFor(route.upstreamAuth.primarySecret),
                  secondary: keyFor(route.upstreamAuth.secondarySecret),
                }
              : {},
        })
      : undefined;
    if (standIns !== undefined) cleanups.push({ what: "local stand-ins", run: () => standIns.close() });
    for (const note of standIns?.notes ?? []) {
      const what =
        note.kind === "issuer" ? `issuer ${note.name}: key set` : `route ${note.name}: Azure ML endpoint`;
      io.stdout(
        note.started
          ? `${what} served locally at ${note.url}`
          : `${what} ${note.url}: no stand-in (${note.reason})`,
      );
    }
    if (io.stop.aborted) return 0;

    const { secrets, lines } = await upstreamSecrets(config, io.env, standIns?.scoring ?? new Map());
    for (const line of lines) io.stdout(line);

    const keySnapshots = await snapshotKeys(config, io);
    const bundle = await compileConfigBundle(config, { mode, keySnapshots, source: settings.configPath });
    if (io.stop.aborted) return 0;

    let gateway: RunningGateway;
    try {
      gateway = await startGateway({
        bundle,
        secrets,
        port: settings.port,
        // This command owns Ctrl-C: it must remove the token file and close the stand-ins before the process ends.
        exitOnSignal: false,
        onAudit: (record) => io.stdout(describeAudit(record)),
        onLog: ({ line }) => io.stderr(`workerd: ${line}`),
      });
    } catch (error) {
      if (error instanceof AddressInUseError) {
        throw new SetupError(
          `aml-edge ${COMMAND}: 127.0.0.1:${settings.port} is already in use; stop what runs there or pass --port <n> (0 picks a free port)`,
        );
      }
      throw error;
    }
    cleanups.push({ what: "the gateway (Miniflare)", run: () => gateway.dispose() });
    io.stdout(
      `gateway ${bundle.version} (${mode} mode) listening on ${gateway.url.href} (workerd ready in ${gateway.startupMs} ms)`,
    );

    const demo = await startDemoToken(config, standIns?.issuers ?? new Map(), gateway, io);
    if (demo !== undefined) cleanups.push({ what: "the demo token", run: demo.stop });
    io.stdout("Ctrl-C stops the gateway and the local stand-ins.");

    await new Promise<void>((resolve) => {
      if (io.stop.aborted) resolve();
      else io.stop.addEventListener("abort", () => resolve(), { once: true });
    });
    io.stdout("stopping");
    return 0;
  } finally {
    for (const cleanup of cleanups.reverse()) {
      // A failed cleanup is reported but does not stop the others, nor turn a clean stop into a failure.
      await cleanup
        .run()
        .catch((error: unknown) =>
          io.stderr(`warning: could not stop ${cleanup.what}: ${errorMessage(error)}`),
        );
    }
  }
}

async function readConfig(path: string, io: CliIo): Promise<{ config: GatewayConfig; mode: LintMode }> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    throw new SetupError(
      code === "ENOENT"
        ? `aml-edge ${COMMAND}: --config ${path}: no such file; give the path of a gateway config (YAML), e.g. src/examples/gateway.yaml`
        : `aml-edge ${COMMAND}: --config ${path} could not be read: ${errorMessage(error)}`,
    );
  }
  // Local mode (http:// key sets and upstreams allowed on loopback only) exactly when the config points at this
  // machine; a config for real clouds is held to the production lint even here.
  const parsed = parseGatewayConfig(text, path);
  const mode: LintMode = usesLoopback(parsed) ? "local" : "production";
  const { config, warnings } = loadGatewayConfig(text, path, { mode });
  for (const warning of warnings) {
    const where = warning.line === undefined ? path : `${path}:${warning.line}:${warning.column ?? 1}`;
    io.stderr(`warning: ${where} ${warning.path}: ${warning.message}`);
  }
  return { config, mode };
}

function usesLoopback(config: GatewayConfig): boolean {
  return (
    config.issuers.some((issuer) => isLoopbackUrl(issuer.jwksUri)) ||
    config.routes.some((route) => isLoopbackUrl(route.scoringUri))
  );
}

/**
 * The Worker secrets each route reads, from the environment, else from its local stand-in. Only the key a route
 * sends (the active one, or its AML token) is required; lines describe each secret by fingerprint.
 */
async function upstreamSecrets(
  config: GatewayConfig,
  env: Readonly<Record<string, string | undefined>>,
  scoring: ReadonlyMap<string, ScoringServer>,
): Promise<{ secrets: Record<string, string>; lines: string[] }> {
  const secrets: Record<string, string> = {};
  const lines: Promise<string>[] = [];
  const missing: string[] = [];
  const add = (
    route: RouteConfig,
    binding: string,
    value: string | undefined,
    label: string,
    required: boolean,
  ) => {
    const fromEnv = nonEmpty(env[binding]);
    const chosen = fromEnv ?? value;
    if (chosen === undefined) {
      if (required) missing.push(`${binding} (route ${route.name}, ${label})`);
      return;
    }
    secrets[binding] = chosen;
    const origin = fromEnv !== undefined ? "from the environment" : "from the local endpoint";
    lines.push(
      keyFingerprint(chosen).then(
        (fingerprint) =>
          `upstream secret ${binding} (route ${route.name}, ${label}, ${origin}): ${fingerprint}`,
      ),
    );
  };
  for (const route of config.routes) {
    const standIn = scoring.get(route.name);
    const auth = route.upstreamAuth;
    if (auth.mode === "key") {
      add(
        route,
        auth.primarySecret,
        standIn?.keys.primary,
        `primary key${auth.active === "primary" ? ", in use" : ""}`,
        auth.active === "primary",
      );
      add(
        route,
        auth.secondarySecret,
        standIn?.keys.secondary,
        `secondary key${auth.active === "secondary" ? ", in use" : ""}`,
        auth.active === "secondary",
      );
    } else {
      const token = standIn?.issueAmlToken({ lifetimeSeconds: 24 * 3600 });
      add(
        route,
        auth.tokenSecret,
        token === undefined ? undefined : JSON.stringify(token),
        "AML token",
        true,
      );
    }
  }
  if (missing.length > 0) {
    throw new SetupError(
      `aml-edge ${COMMAND}: no value for ${missing.join(", ")}; set each as an environment variable of that name (the endpoint's key, or for aml_token the JSON from the endpoint's getToken), or point the route's scoringUri at 127.0.0.1 to use a local stand-in`,
    );
  }
  return { secrets, lines: await Promise.all(lines) };
}

/** One issuer at a time, so that a key set out of reach (no internet here) costs a warning, not the others. */
async function snapshotKeys(config: GatewayConfig, io: CliIo) {
  const snapshots: Awaited<ReturnType<typeof fetchKeySnapshots>> = {};
  for (const issuer of config.issuers) {
    try {
      Object.assign(snapshots, await fetchKeySnapshots({ ...config, issuers: [issuer] }, { fetch }));
    } catch (error) {
      if (!(error instanceof KeySnapshotError)) throw error;
      io.stderr(`warning: ${error.message}; the gateway will try to fetch it on first use`);
    }
  }
  return snapshots;
}

/** Mints a token for the first route, keeps its file fresh, and prints the curl that uses it. */
async function startDemoToken(
  config: GatewayConfig,
  issuers: ReadonlyMap<string, TokenIssuer>,
  gateway: RunningGateway,
  io: CliIo,
): Promise<{ stop: () => Promise<void> } | undefined> {
  const route = config.routes[0] as RouteConfig;
  const principal = demoPrincipal(config, route.name, new Set(issuers.keys()));
  if ("reason" in principal) {
    io.stdout(
      `no demo token for route ${route.name}: ${principal.reason}. Bring a token from the route's issuer.`,
    );
    return undefined;
  }
  // The stand-in signs by default with the first algorithm the issuer pins, so no algorithm is chosen here.
  const issuer = issuers.get(principal.issuer.name) as TokenIssuer;
  const mint = () =>
    issuer.mint(principal.claims, {
      expiresInSeconds: principal.lifetimeSeconds,
      ...(principal.issuer.typ !== undefined ? { header: { typ: principal.issuer.typ } } : {}),
    });

  // mkdtemp makes the directory 0700; the file is 0600 besides, and replaced by rename so it is never half-written.
  const directory = await mkdtemp(join(tmpdir(), "aml-edge-dev-"));
  const tokenPath = join(directory, "token");
  const writeToken = async () => {
    const next = `${tokenPath}.next`;
    await writeFile(next, await mint(), { mode: 0o600 });
    await rename(next, tokenPath);
  };
  let timer: NodeJS.Timeout | undefined;
  // However the process ends (an uncaught error, process.exit elsewhere), the token does not outlive it.
  const removeNow = () => rmSync(directory, { recursive: true, force: true });
  process.once("exit", removeNow);
  const stop = async () => {
    clearInterval(timer);
    process.removeListener("exit", removeNow);
    await rm(directory, { recursive: true, force: true });
  };
  try {
    await writeToken();
  } catch (error) {
    await stop();
    throw error;
  }
  const refreshSeconds = Math.max(5, Math.floor(principal.lifetimeSeconds / 2));
  timer = setInterval(() => {
    writeToken().catch((error: unknown) =>
      io.stderr(`warning: could not refresh the demo token: ${errorMessage(error)}`),
    );
  }, refreshSeconds * 1000);

  io.stdout(
    `demo token: rule ${principal.rule} (role ${principal.role}) via issuer ${principal.issuer.name}, sub ${String(principal.claims.sub)}; valid ${principal.lifetimeSeconds} s, rewritten every ${refreshSeconds} s in ${tokenPath}`,
  );
  io.stdout("try it:");
  io.stdout(curlCommand(new URL(route.path, gateway.url).href, tokenPath, route));
  return { stop };
}

export const SAMPLE_BODY = JSON.stringify({
  input_data: { columns: [...CREDIT_COLUMNS], data: [[...SAMPLE_CREDIT_ROW]] },
});

function curlCommand(url: string, tokenPath: string, route: RouteConfig): string {
  const auth = `-H "Authorization: Bearer $(cat ${shellQuote(tokenPath)})"`;
  if (!route.methods.includes("POST")) return `curl -sS ${url} ${auth}`;
  return `curl -sS ${url} ${auth} -H 'content-type: application/json' -d '${SAMPLE_BODY}'`;
}

function shellQuote(value: string): string {
  return /^[A-Za-z0-9_./-]+$/.test(value) ? value : `'${value.replaceAll("'", "'\\''")}'`;
}

function describeAudit(record: AuditRecord): string {
  const field = (name: string) => (record[name] === undefined ? "-" : String(record[name]));
  return `audit ${field("decision")} ${field("status")} ${field("reason")} route=${field("route")} deployment=${field("deployment")} sub=${field("subject")} ${field("latencyMs")} ms`;
}

function nonEmpty(value: string | undefined): string | undefined {
  return value === undefined || value === "" ? undefined : value;
}
