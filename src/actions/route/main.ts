// The route action: publishes the gateway config (routes, weights, policy) as a new version of the gateway Worker and
// deploys it, at 100 % or beside the live version, then waits until the edge serves it. It reads the config file and
// the inputs first (a bad one fails the step before any network call), takes the job's Cloudflare token (minted from
// the Key Vault bootstrap token with the job's OIDC-rooted Azure credential, or the given fallback token, verified),
// records what is live (the `previous-deployment` output, for an exact restore), reads Azure ML endpoint keys only for
// secret bindings the live gateway lacks, publishes, and waits for the edge. When the edge never serves the new
// version, the previous deployment is restored (unless `restore-on-failure` is false). The post step (post.ts) deletes
// the minted token, whatever happened here.
import * as core from "@actions/core";
import type { TokenCredential } from "@azure/core-auth";
import { gitHubOidcCredential } from "../../azure/credential.ts";
import { createMlClient, MlWorkspace } from "../../azure/ml.ts";
import { type CloudflareApi, createCloudflareApi } from "../../cloudflare/api.ts";
import {
  type BootstrapSecret,
  mintGatewayCredential,
  readBootstrapToken,
  verifyGivenToken,
} from "../../cloudflare/credential.ts";
import { waitForEdgeConfig } from "../../cloudflare/edge.ts";
import {
  CloudflareApiError,
  CloudflareCredentialError,
  EdgeNotServingError,
} from "../../cloudflare/errors.ts";
import {
  describeDeployment,
  type LiveGateway,
  MissingSecretsError,
  missingSecretBindings,
  type PublishResult,
  publishGateway,
  readLiveGateway,
  restoreDeployment,
  secretBindingNames,
} from "../../cloudflare/publish.ts";
import { type Clock, formatSpan, systemClock } from "../../cloudflare/time.ts";
import { compileConfigBundle } from "../../config/compile.ts";
import { type ConfigDiff, diffGatewayConfigs, formatConfigDiffMarkdown } from "../../config/diff.ts";
import { ConfigError } from "../../config/errors.ts";
import type { ConfigBundle, GatewayConfig } from "../../config/schema.ts";
import { fetchKeySnapshots, KeySnapshotError } from "../../config/snapshot.ts";
import { ConfigurationError, reportFailure } from "../common/errors.ts";
import { actionsInputs, type InputReader } from "../common/inputs.ts";
import { actionsLogger, type Logger } from "../common/logger.ts";
import { writeSummary } from "../common/summary.ts";
import { formatWeights, type PreparedConfig, prepareConfig } from "./config.ts";
import { azureMlEndpoint, type RouteSettings, readRouteSettings } from "./settings.ts";

/** Set by the entry in the main step, so the same bundle knows it runs as the post step. */
export const IS_POST_STATE = "isPost";
/** What the post step needs to delete the job's minted tokens: ids and names, and where the bootstrap token is. */
export const CLEANUP_STATE = "cloudflare-cleanup";

declare global {
  /** The gateway Worker module (dist/gateway/worker.js), embedded by esbuild `define` into the built actions. */
  var AML_EDGE_GATEWAY_WORKER: string | undefined;
}

export interface CleanupState {
  tokens: { id: string; name: string }[];
  accountId: string;
  apiUrl: string;
  vaultUrl: string;
  secretName: string;
  clientId: string;
  tenantId: string;
  authorityHost: string;
  audience: string;
}

export interface AzureIdentity {
  clientId: string;
  tenantId: string;
  authorityHost: string;
  audience: string;
}

export interface EndpointKeys {
  primaryKey: string;
  secondaryKey: string;
  scoringUri: string;
}

export interface RouteDependencies {
  readInput: InputReader;
  logger: Logger;
  clock: Clock;
  /** Where a relative `config` path is looked for: the checkout (GITHUB_WORKSPACE), else the working directory. */
  workspaceDir: string;
  /** The workflow's variables: commit, repository, run (for the version's message and the token names). */
  env: Readonly<Record<string, string | undefined>>;
  setSecret(secret: string): void;
  setOutput(name: string, value: string): void;
  saveState(name: string, value: string): void;
  /** The gateway Worker's module. The built action carries it; tests hand in a bundle of the sources. */
  gatewayModule(): Promise<string>;
  createAzureCredential(identity: AzureIdentity, logger: Logger): TokenCredential;
  readBootstrapToken(source: BootstrapSecret): Promise<string>;
  connectCloudflare(options: {
    apiUrl: string;
    accountId: string;
    token: string;
    tokenDescription: string;
  }): CloudflareApi;
  /** The Azure ML endpoint's keys and scoring URI (masked). */
  endpointKeys(settings: RouteSettings, credential: TokenCredential, deadline: number): Promise<EndpointKeys>;
  snapshotKeys(config: GatewayConfig): Promise<ConfigBundle["keySnapshots"]>;
  /** The fetch that asks the edge; default global fetch. */
  edgeFetch?: typeof globalThis.fetch;
  /** First pause between edge polls (default 250 ms). */
  edgeInitialDelayMs?: number;
}

export const defaultDependencies = (): RouteDependencies => ({
  readInput: actionsInputs,
  logger: actionsLogger,
  clock: systemClock,
  workspaceDir: process.env.GITHUB_WORKSPACE ?? process.cwd(),
  env: process.env,
  setSecret: (secret) => core.setSecret(secret),
  setOutput: (name, value) => core.setOutput(name, value),
  saveState: (name, value) => core.saveState(name, value),
  gatewayModule: async () => {
    const worker = globalThis.AML_EDGE_GATEWAY_WORKER;
    if (typeof worker !== "string" || worker === "") {
      throw new Error(
        "The gateway Worker is not part of this build: run the action from its bundle (dist/route/index.js, built " +
          "by `npm run build`), which carries it.",
      );
    }
    return worker;
  },
  createAzureCredential: (identity, logger) =>
    gitHubOidcCredential({
      tenantId: identity.tenantId,
      clientId: identity.clientId,
      audience: identity.audience,
      authorityHost: identity.authorityHost,
      logger,
    }),
  readBootstrapToken: (source) => readBootstrapToken(source, (secret) => core.setSecret(secret)),
  connectCloudflare: (options) => createCloudflareApi({ ...options, logger: actionsLogger }),
  endpointKeys: async (settings, credential, deadline) => {
    const endpoint = azureMlEndpoint(settings);
    if (endpoint === undefined) throw new Error("internal: endpoint keys asked for without an endpoint");
    const ml = new MlWorkspace({
      client: createMlClient({
        credential,
        subscriptionId: endpoint.subscriptionId,
        armEndpoint: settings["arm-endpoint"],
      }),
      armEndpoint: settings["arm-endpoint"],
      subscriptionId: endpoint.subscriptionId,
      resourceGroup: endpoint.resourceGroup,
      workspace: endpoint.workspace,
      deadline,
      clock: systemClock,
      logger: actionsLogger,
      setSecret: (secret) => core.setSecret(secret),
    });
    const found = await ml.findEndpoint(endpoint.endpoint);
    if (found === undefined) {
      throw new ConfigurationError(
        `Input \`endpoint\`: there is no online endpoint ${endpoint.endpoint} in workspace ${endpoint.workspace} ` +
          `(resource group ${endpoint.resourceGroup}); deploy a model to it first (the deploy-model action).`,
      );
    }
    const keys = await ml.endpointKeys(endpoint.endpoint);
    return { ...keys, scoringUri: found.properties.scoringUri ?? "" };
  },
  snapshotKeys: (config) => fetchKeySnapshots(config, { fetch: globalThis.fetch }),
});

export interface RouteResult {
  settings: RouteSettings;
  prepared: PreparedConfig;
  bundle: ConfigBundle;
  live: LiveGateway;
  published: PublishResult;
  diff: ConfigDiff;
  edgeElapsedMs: number;
  credential: string;
}

/** The action: never throws; the step's outcome is set through @actions/core. */
export async function run(overrides: Partial<RouteDependencies> = {}): Promise<void> {
  const deps = { ...defaultDependencies(), ...overrides };
  try {
    // Masked before anything is parsed or reported, so no later message can show it.
    const givenToken = deps.readInput("cloudflare-api-token").trim();
    if (givenToken !== "") deps.setSecret(givenToken);
    const settings = readRouteSettings(deps.readInput);
    const result = await route(settings, deps);
    deps.setOutput("version-id", result.published.version.id);
    await writeRouteSummary(result, deps);
  } catch (error) {
    reportFailure(reportable(error), core);
  }
}

/** Cloudflare's and the config's user-fixable errors are reported as what to fix, like any ConfigurationError. */
function reportable(error: unknown): unknown {
  if (
    error instanceof ConfigError ||
    error instanceof MissingSecretsError ||
    error instanceof CloudflareCredentialError ||
    (error instanceof CloudflareApiError && error.userFixable)
  ) {
    return new ConfigurationError(error.message, { cause: error });
  }
  return error;
}

/** The publish itself, with every input already valid. */
export async function route(settings: RouteSettings, deps: RouteDependencies): Promise<RouteResult> {
  const { logger, clock } = deps;
  const deadline = clock.now() + settings["timeout-minutes"] * 60_000;
  const script = settings["worker-name"];

  // Local first: the file, the weights, the lint, the Worker module.
  const prepared = await prepareConfig(settings, deps.workspaceDir);
  for (const warning of prepared.warnings)
    logger.warning(`${prepared.source} ${warning.path}: ${warning.message}`);
  const workerModule = await deps.gatewayModule();

  let keySnapshots: ConfigBundle["keySnapshots"];
  try {
    keySnapshots = await deps.snapshotKeys(prepared.config);
  } catch (error) {
    if (!(error instanceof KeySnapshotError)) throw error;
    throw new Error(
      `Could not take the issuers' key sets into the config bundle (a cold gateway verifies its first tokens with ` +
        `them):\n${error.message}`,
      { cause: error },
    );
  }
  const bundle = await compileConfigBundle(prepared.config, {
    mode: settings["lint-mode"],
    keySnapshots,
    source: prepared.source,
  });
  deps.setOutput("config-version", bundle.version);
  logger.info(`Config ${prepared.source} is version ${bundle.version}.`);

  let azure: TokenCredential | undefined;
  const azureCredential = (): TokenCredential => {
    const clientId = settings["client-id"];
    const tenantId = settings["tenant-id"];
    if (clientId === undefined || tenantId === undefined) {
      throw new Error("internal: an Azure credential asked for without client-id and tenant-id");
    }
    azure ??= deps.createAzureCredential(
      {
        clientId,
        tenantId,
        authorityHost: settings["authority-host"],
        audience: settings["oidc-audience"],
      },
      logger,
    );
    return azure;
  };

  const { api, description: credential } = await cloudflareCredential(
    settings,
    deps,
    deadline,
    azureCredential,
  );

  const live = await readLiveGateway(api, script);
  // Recorded before anything changes, so a later step (or a person) can restore exactly this.
  deps.setOutput("previous-deployment", JSON.stringify(live.deployment ?? null));
  logger.info(
    live.exists
      ? `Worker ${script} serves ${describeDeployment(live.deployment)}` +
          (live.bundle === undefined ? "." : ` with config ${live.bundle.version}.`)
      : `Worker ${script} does not exist yet: this first publish creates it.`,
  );

  const newSecrets = await secretsForMissingBindings(
    settings,
    deps,
    prepared.config,
    live,
    deadline,
    azureCredential,
  );
  const published = await publishGateway({
    api,
    live,
    bundle,
    workerModule,
    newSecrets,
    percentage: settings["version-percentage"],
    message: versionMessage(
      bundle.version,
      settings["model-version"] ?? prepared.config.description,
      deps.env,
    ),
    tag: bundle.version,
    logger,
  });
  logger.info(`Worker ${script} now serves ${describeDeployment(published.deployment)}.`);

  let edgeElapsedMs: number;
  try {
    ({ elapsedMs: edgeElapsedMs } = await waitForEdgeConfig({
      gatewayUrl: settings["gateway-url"],
      script,
      versionId: published.version.id,
      configVersion: bundle.version,
      servesAll: published.deployment.versions.length === 1,
      deadline,
      clock,
      logger,
      ...(deps.edgeFetch === undefined ? {} : { fetch: deps.edgeFetch }),
      ...(deps.edgeInitialDelayMs === undefined ? {} : { initialDelayMs: deps.edgeInitialDelayMs }),
    }));
  } catch (error) {
    throw await restoreAfterFailedWait(error, settings, api, published, logger);
  }
  return {
    settings,
    prepared,
    bundle,
    live,
    published,
    diff: diffGatewayConfigs(live.bundle?.config, prepared.config),
    edgeElapsedMs,
    credential,
  };
}

/** The Cloudflare client this step publishes with: a minted, Worker-scoped token, or the verified fallback token. */
async function cloudflareCredential(
  settings: RouteSettings,
  deps: RouteDependencies,
  deadline: number,
  azureCredential: () => TokenCredential,
): Promise<{ api: CloudflareApi; description: string }> {
  const { logger, clock } = deps;
  const accountId = settings["cloudflare-account-id"];
  const apiUrl = settings["cloudflare-api-url"];
  const givenToken = settings["cloudflare-api-token"];
  if (givenToken !== undefined) {
    const api = deps.connectCloudflare({
      apiUrl,
      accountId,
      token: givenToken,
      tokenDescription: "the `cloudflare-api-token` input",
    });
    const status = await verifyGivenToken(api, {
      what: "The `cloudflare-api-token` input",
      now: clock.now(),
      validUntil: deadline,
      validUntilWhat: `this step's deadline (timeout-minutes ${settings["timeout-minutes"]})`,
      fix:
        "issue a new token (Workers Scripts Write on the gateway Worker) and store it in the secret, or drop " +
        "`cloudflare-api-token` and let the job mint its own from Key Vault (`key-vault-url`, recommended).",
    });
    logger.info(
      "Using the `cloudflare-api-token` input (a token managed outside the job: the weaker option; " +
        `expires ${status.expires_on ?? "never"}).`,
    );
    return {
      api,
      description: `the \`cloudflare-api-token\` input (expires ${status.expires_on ?? "never"})`,
    };
  }

  const vaultUrl = settings["key-vault-url"];
  const clientId = settings["client-id"];
  const tenantId = settings["tenant-id"];
  if (vaultUrl === undefined || clientId === undefined || tenantId === undefined) {
    throw new Error("internal: the Key Vault path without its inputs");
  }
  const secretName = settings["cloudflare-bootstrap-secret"];
  const bootstrapToken = await deps.readBootstrapToken({
    vaultUrl,
    secretName,
    credential: azureCredential(),
  });
  deps.setSecret(bootstrapToken);
  const bootstrapWhat = `the bootstrap token (Key Vault secret ${secretName})`;
  const bootstrap = deps.connectCloudflare({
    apiUrl,
    accountId,
    token: bootstrapToken,
    tokenDescription: bootstrapWhat,
  });

  const cleanup: CleanupState = {
    tokens: [],
    accountId,
    apiUrl,
    vaultUrl,
    secretName,
    clientId,
    tenantId,
    authorityHost: settings["authority-host"],
    audience: settings["oidc-audience"],
  };
  const save = () => deps.saveState(CLEANUP_STATE, JSON.stringify(cleanup));
  const minted = await mintGatewayCredential({
    bootstrap,
    bootstrapWhat,
    connect: (token, tokenDescription) =>
      deps.connectCloudflare({ apiUrl, accountId, token, tokenDescription }),
    script: settings["worker-name"],
    deadline,
    jobLabel: jobLabel(deps.env),
    clock,
    logger,
    setSecret: (secret) => deps.setSecret(secret),
    onMinted: (token) => {
      cleanup.tokens.push(token);
      save();
    },
    onDeleted: (id) => {
      cleanup.tokens = cleanup.tokens.filter((token) => token.id !== id);
      save();
    },
  });
  return {
    api: minted.api,
    description:
      `minted for this job: "Workers Scripts Write" on ` +
      `${minted.scope === "worker" ? `Worker ${settings["worker-name"]} only` : "the whole account (to create the Worker)"}` +
      `, expires ${minted.expiresOn}, deleted by the post step`,
  };
}

/**
 * Values for the secret bindings the config names and the live gateway lacks (a first publish, or a renamed binding):
 * the Azure ML endpoint's keys, bound to routes whose scoring URI is that endpoint's, and only in key mode.
 */
async function secretsForMissingBindings(
  settings: RouteSettings,
  deps: RouteDependencies,
  config: GatewayConfig,
  live: LiveGateway,
  deadline: number,
  azureCredential: () => TokenCredential,
): Promise<Record<string, string>> {
  const missing = missingSecretBindings(live, secretBindingNames(config));
  if (missing.length === 0) return {};
  const endpoint = azureMlEndpoint(settings);
  const plural = missing.length === 1 ? "" : "s";
  const lacking = live.exists
    ? `no live version of Worker ${settings["worker-name"]} holds`
    : `Worker ${settings["worker-name"]} does not hold yet (it is created now)`;
  if (endpoint === undefined) {
    const unset = (
      ["subscription-id", "resource-group", "workspace", "endpoint", "client-id", "tenant-id"] as const
    )
      .filter((input) => settings[input] === undefined)
      .map((input) => `\`${input}\``);
    throw new ConfigurationError(
      `The config names secret binding${plural} ${missing.join(", ")}, which ${lacking}. Set ` +
        `${unset.length === 1 ? unset[0] : `${unset.slice(0, -1).join(", ")} and ${unset.at(-1)}`} so the step ` +
        "reads the keys of the Azure ML endpoint the route calls and publishes them as the new version's secrets.",
    );
  }
  deps.logger.info(
    `Secret binding${plural} ${missing.join(", ")}: ${lacking}; reading the keys of Azure ML endpoint ${endpoint.endpoint}.`,
  );
  const keys = await deps.endpointKeys(settings, azureCredential(), deadline);
  const secrets: Record<string, string> = {};
  for (const routeConfig of config.routes) {
    const auth = routeConfig.upstreamAuth;
    const names = auth.mode === "key" ? [auth.primarySecret, auth.secondarySecret] : [auth.tokenSecret];
    const needed = names.filter((name) => missing.includes(name) && !(name in secrets));
    if (needed.length === 0) continue;
    if (auth.mode !== "key") {
      throw new ConfigurationError(
        `Route ${routeConfig.name} authenticates to Azure ML with aml_token, and secret binding ${auth.tokenSecret} ` +
          `${lacking}. The route action publishes endpoint keys only: switch the route to key mode, or publish ` +
          "once with a gateway that already holds the token secret.",
      );
    }
    if (!sameScoringUri(routeConfig.scoringUri, keys.scoringUri)) {
      throw new ConfigurationError(
        `Route ${routeConfig.name} needs secret binding${needed.length === 1 ? "" : "s"} ${needed.join(", ")}, but ` +
          `its scoringUri ${routeConfig.scoringUri} is not the scoring URI of endpoint ${endpoint.endpoint} ` +
          `(${keys.scoringUri}): that endpoint's keys would not open it. Set \`endpoint\` to the route's endpoint, ` +
          "or correct the route's scoringUri.",
      );
    }
    if (keys.primaryKey === "" || keys.secondaryKey === "") {
      throw new Error(
        `Azure ML returned no keys for endpoint ${endpoint.endpoint}; is it a key-authenticated endpoint?`,
      );
    }
    for (const name of needed)
      secrets[name] = name === auth.primarySecret ? keys.primaryKey : keys.secondaryKey;
  }
  return secrets;
}

function sameScoringUri(a: string, b: string): boolean {
  const normalize = (uri: string) => {
    try {
      const url = new URL(uri);
      return `${url.origin}${url.pathname.replace(/\/+$/, "")}`.toLowerCase();
    } catch {
      return uri;
    }
  };
  return normalize(a) === normalize(b);
}

/** The previous deployment back in place after the edge failed to serve the new one, when allowed and possible. */
async function restoreAfterFailedWait(
  error: unknown,
  settings: RouteSettings,
  api: CloudflareApi,
  published: PublishResult,
  logger: Logger,
): Promise<unknown> {
  if (!(error instanceof EdgeNotServingError)) return error;
  const previous = published.previous;
  if (previous === undefined) return error;
  const recorded = JSON.stringify({ versions: previous.versions });
  if (!settings["restore-on-failure"]) {
    return new EdgeNotServingError(
      `${error.message} The new deployment stays in place (restore-on-failure is false); the previous one was ` +
        `${recorded} (the \`previous-deployment\` output).`,
    );
  }
  logger.warning(
    `Restoring the previous deployment of Worker ${settings["worker-name"]}: ${describeDeployment(previous)}.`,
  );
  try {
    await restoreDeployment(api, settings["worker-name"], previous, {
      message: `aml-edge route: restored deployment ${previous.id} after the edge did not serve version ${published.version.id}`,
      logger,
    });
  } catch (restoreError) {
    return new EdgeNotServingError(
      `${error.message} Restoring the previous deployment failed too (${restoreError instanceof Error ? restoreError.message : String(restoreError)}); ` +
        `deploy it again by hand: ${recorded}.`,
    );
  }
  return new EdgeNotServingError(
    `${error.message} The previous deployment (${describeDeployment(previous)}) was restored.`,
  );
}

/** `workers/message`: what was published, from which commit and run, so a version explains itself in the dashboard. */
export function versionMessage(
  configVersion: string,
  model: string | undefined,
  env: Readonly<Record<string, string | undefined>>,
): string {
  const parts = [`aml-edge route: config ${configVersion}`];
  if (model !== undefined && model.trim() !== "") parts.push(`model ${model.trim()}`);
  if (env.GITHUB_SHA !== undefined && env.GITHUB_SHA !== "") parts.push(`commit ${env.GITHUB_SHA}`);
  const run = runUrl(env);
  if (run !== undefined) parts.push(`run ${run}`);
  return parts.join("; ");
}

function runUrl(env: Readonly<Record<string, string | undefined>>): string | undefined {
  const { GITHUB_SERVER_URL: server, GITHUB_REPOSITORY: repository, GITHUB_RUN_ID: runId } = env;
  if (server === undefined || repository === undefined || runId === undefined) return undefined;
  const attempt = env.GITHUB_RUN_ATTEMPT;
  return `${server}/${repository}/actions/runs/${runId}${attempt === undefined || attempt === "" ? "" : `/attempts/${attempt}`}`;
}

function jobLabel(env: Readonly<Record<string, string | undefined>>): string {
  if (env.GITHUB_REPOSITORY === undefined || env.GITHUB_RUN_ID === undefined) return "local run";
  return `${env.GITHUB_REPOSITORY} run ${env.GITHUB_RUN_ID}.${env.GITHUB_RUN_ATTEMPT ?? "1"}`;
}

async function writeRouteSummary(result: RouteResult, deps: RouteDependencies): Promise<void> {
  const { settings, bundle, live, published, prepared } = result;
  const script = settings["worker-name"];
  const rows: [string, string][] = [
    ["Worker", `${script}${published.created ? " (created now)" : ""}`],
    [
      "Config version",
      `${bundle.version}${live.bundle === undefined ? "" : live.bundle.version === bundle.version ? " (unchanged)" : ` (was ${live.bundle.version})`}`,
    ],
    [
      "Version",
      `${published.version.id}${published.version.number === undefined ? "" : ` (#${published.version.number})`}`,
    ],
    ["Deployment before", describeDeployment(live.deployment)],
    ["Deployment now", describeDeployment(published.deployment)],
  ];
  if (prepared.weights !== undefined) {
    rows.push([
      `Weights of route ${prepared.weights.route}`,
      `${formatWeights(prepared.weights.before)} in the file → ${formatWeights(prepared.weights.after)}`,
    ]);
  }
  if (published.plan.changed.length > 0)
    rows.push(["Secrets with new values", published.plan.changed.join(", ")]);
  if (published.plan.inherited.length > 0)
    rows.push(["Secrets inherited", published.plan.inherited.join(", ")]);
  rows.push([
    "Edge",
    `serves ${bundle.version} at ${settings["gateway-url"]} after ${formatSpan(result.edgeElapsedMs)}`,
  ]);
  rows.push(["Cloudflare token", result.credential]);
  const notes = [
    live.deployment === undefined
      ? `This step created Worker ${script}: there is no earlier deployment to go back to.`
      : `To go back, deploy the previous-deployment output again: ${JSON.stringify({ versions: live.deployment.versions })}.`,
    ...prepared.warnings.map((warning) => `Lint warning: ${warning.path}: ${warning.message}`),
  ];
  if (live.exists && live.bundle === undefined) {
    notes.push(
      "The live version carries no config this action can read: the changes below compare with nothing.",
    );
  }
  await writeSummary(
    {
      title: `Published gateway config ${bundle.version} to Worker ${script}`,
      rows,
      notes,
      sections: [
        { heading: "Config changes against what was live", markdown: formatConfigDiffMarkdown(result.diff) },
      ],
    },
    (message) => deps.logger.warning(message),
  );
}
