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
import { createMlClient, MlWorkspace } from "../../azure/ml.ts";
import type { CloudflareApi } from "../../cloudflare/api.ts";
import { waitForEdgeConfig } from "../../cloudflare/edge.ts";
import { EdgeNotServingError } from "../../cloudflare/errors.ts";
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
import { formatSpan, systemClock } from "../../cloudflare/time.ts";
import { compileConfigBundle } from "../../config/compile.ts";
import { type ConfigDiff, diffGatewayConfigs, formatConfigDiffMarkdown } from "../../config/diff.ts";
import { ConfigError } from "../../config/errors.ts";
import type { ConfigBundle, GatewayConfig } from "../../config/schema.ts";
import { sameScoringUri } from "../../config/scoring-uri.ts";
import { fetchKeySnapshots, KeySnapshotError } from "../../config/snapshot.ts";
import {
  type CloudflareDependencies,
  cloudflareCredential,
  cloudflareReportable,
  defaultCloudflareDependencies,
  lazyAzureCredential,
  maskGivenToken,
} from "../common/cloudflare.ts";
import { ConfigurationError, reportFailure } from "../common/errors.ts";
import { actionsInputs, type InputReader } from "../common/inputs.ts";
import { actionsLogger, type Logger } from "../common/logger.ts";
import { withJobContext } from "../common/run.ts";
import { writeSummary } from "../common/summary.ts";
import { formatWeights, type PreparedConfig, prepareConfig } from "./config.ts";
import { azureMlEndpoint, type RouteSettings, readRouteSettings } from "./settings.ts";

export interface EndpointKeys {
  primaryKey: string;
  secondaryKey: string;
  scoringUri: string;
}

export interface RouteDependencies extends CloudflareDependencies {
  readInput: InputReader;
  /** Where a relative `config` path is looked for: the checkout (GITHUB_WORKSPACE), else the working directory. */
  workspaceDir: string;
  setOutput(name: string, value: string): void;
  /** The Azure ML endpoint's keys and scoring URI (masked). */
  endpointKeys(settings: RouteSettings, credential: TokenCredential, deadline: number): Promise<EndpointKeys>;
  snapshotKeys(config: GatewayConfig): Promise<ConfigBundle["keySnapshots"]>;
  /** The fetch that asks the edge; default global fetch. */
  edgeFetch?: typeof globalThis.fetch;
  /** First pause between edge polls (default 250 ms). */
  edgeInitialDelayMs?: number;
}

export const defaultDependencies = (): RouteDependencies => ({
  ...defaultCloudflareDependencies(),
  readInput: actionsInputs,
  workspaceDir: process.env.GITHUB_WORKSPACE ?? process.cwd(),
  setOutput: (name, value) => core.setOutput(name, value),
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
    maskGivenToken(deps.readInput, deps.setSecret);
    const settings = readRouteSettings(deps.readInput);
    const result = await route(settings, deps);
    deps.setOutput("version-id", result.published.version.id);
    await writeRouteSummary(result, deps);
  } catch (error) {
    reportFailure(reportable(error), core);
  }
}

/** The config's user-fixable errors are reported as what to fix, like any ConfigurationError; Cloudflare's too. */
function reportable(error: unknown): unknown {
  if (error instanceof ConfigError || error instanceof MissingSecretsError) {
    return new ConfigurationError(error.message, { cause: error });
  }
  return cloudflareReportable(error);
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

  const azureCredential = lazyAzureCredential(settings, deps);
  const { api, description: credential } = await cloudflareCredential(settings, deps, {
    action: "route",
    deadline,
    azureCredential,
  });

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
  return withJobContext(parts, env);
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
