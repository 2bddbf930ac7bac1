// Publishing the gateway: a Worker version is the gateway code, its config (the JSON binding AML_EDGE_CONFIG) and the
// Azure ML credentials (secret bindings), and a deployment puts one version, or a split between two, in front of
// callers (DESIGN.md 1). What is live is read first and handed back, so a caller can restore exactly that. Secrets
// change only by uploading a version that carries them (`secret_text`); unchanged ones are `inherit`ed from the live
// version by id. PUT /secrets is never used: it deploys at once and is refused (10215) while a split is in place.
import {
  CONFIG_BINDING,
  type ConfigBundle,
  configBundleSchema,
  type GatewayConfig,
} from "../config/schema.ts";
import type { CloudflareApi, DeploymentVersion, WorkerDeployment, WorkerVersion } from "./api.ts";
import { CF_CODES, CloudflareApiError } from "./errors.ts";
import type { WorkerBinding, WorkerUpload } from "./upload.ts";

/** The Workers runtime date the gateway is built and tested for (the sandbox runs it at the same date). */
export const GATEWAY_COMPATIBILITY_DATE = "2026-07-01";
/** The module name the gateway is uploaded under. */
export const GATEWAY_MODULE_NAME = "worker.js";

export interface PublishLogger {
  info(message: string): void;
  warning(message: string): void;
}

/** What serves callers now, as read before any change. */
export interface LiveGateway {
  script: string;
  exists: boolean;
  /** The live deployment: the first Cloudflare lists. Undefined for a Worker that does not exist or never deployed. */
  deployment: WorkerDeployment | undefined;
  /** The versions of the live deployment, in its order. */
  versions: WorkerVersion[];
  /** The live version with the largest share: its config is "what is live", and bindings are inherited from it. */
  primary: WorkerVersion | undefined;
  /** The config bundle the primary version carries, when it carries a valid one. */
  bundle: ConfigBundle | undefined;
}

/** Reads the live deployment and its versions. A Worker that does not exist is not an error here. */
export async function readLiveGateway(api: CloudflareApi, script: string): Promise<LiveGateway> {
  let deployments: WorkerDeployment[];
  try {
    deployments = await api.listDeployments(script);
  } catch (error) {
    if (error instanceof CloudflareApiError && error.has(CF_CODES.workerNotFound)) {
      return {
        script,
        exists: false,
        deployment: undefined,
        versions: [],
        primary: undefined,
        bundle: undefined,
      };
    }
    throw error;
  }
  const deployment = deployments[0];
  if (deployment === undefined) {
    return {
      script,
      exists: true,
      deployment: undefined,
      versions: [],
      primary: undefined,
      bundle: undefined,
    };
  }
  const versions = await Promise.all(
    deployment.versions.map((version) => api.getVersion(script, version.version_id)),
  );
  const primaryId = [...deployment.versions].sort((a, b) => b.percentage - a.percentage)[0]?.version_id;
  const primary = versions.find((version) => version.id === primaryId);
  return { script, exists: true, deployment, versions, primary, bundle: boundConfig(primary) };
}

/** The config bundle a version carries, or undefined when it carries none or one this code cannot read. */
export function boundConfig(version: WorkerVersion | undefined): ConfigBundle | undefined {
  const binding = version?.bindings.find((candidate) => candidate.name === CONFIG_BINDING);
  if (binding === undefined || binding.type !== "json") return undefined;
  const parsed = configBundleSchema.safeParse(binding.json);
  return parsed.success ? parsed.data : undefined;
}

/** The secret bindings a config reads: every route's upstream credentials. */
export function secretBindingNames(config: GatewayConfig): string[] {
  const names = new Set<string>();
  for (const route of config.routes) {
    const auth = route.upstreamAuth;
    if (auth.mode === "key") {
      names.add(auth.primarySecret);
      names.add(auth.secondarySecret);
    } else {
      names.add(auth.tokenSecret);
    }
  }
  return [...names];
}

/** Secret bindings the config names that no live version holds: their values must come with the publish. */
export function missingSecretBindings(live: LiveGateway, names: readonly string[]): string[] {
  return names.filter((name) => holderOf(live, name) === undefined);
}

/** The live version holding a binding, the primary first. */
function holderOf(live: LiveGateway, name: string): WorkerVersion | undefined {
  const ordered = live.primary === undefined ? live.versions : [live.primary, ...live.versions];
  return ordered.find((version) => version.bindings.some((binding) => binding.name === name));
}

/** A config names secret bindings that neither the live Worker nor this publish provides. */
export class MissingSecretsError extends Error {
  override name = "MissingSecretsError";
  readonly bindings: readonly string[];
  constructor(message: string, bindings: readonly string[]) {
    super(message);
    this.bindings = bindings;
  }
}

export interface BindingPlan {
  bindings: WorkerBinding[];
  /** Secrets carried over from a live version unchanged. */
  inherited: string[];
  /** Secrets carried with new values. */
  changed: string[];
  /** Secret bindings of the live version that the config no longer names: not carried into the new version. */
  dropped: string[];
}

/**
 * The new version's bindings: the config; each secret the config names, with its new value or inherited by version
 * id from the live version that holds it; and every other non-secret binding of the primary version (a queue for
 * audit records, say) inherited as it is. Secrets the config no longer names are left behind, so a version carries
 * only the credentials its config uses.
 */
export function planBindings(
  live: LiveGateway,
  bundle: ConfigBundle,
  newSecrets: Readonly<Record<string, string>>,
): BindingPlan {
  const names = secretBindingNames(bundle.config);
  const missing = names.filter((name) => !(name in newSecrets) && holderOf(live, name) === undefined);
  if (missing.length > 0) {
    throw new MissingSecretsError(
      `The config names secret binding${missing.length === 1 ? "" : "s"} ${missing.join(", ")}, which ` +
        `${live.exists ? `no live version of Worker ${live.script} holds` : `Worker ${live.script} cannot hold yet (it does not exist)`}` +
        " and no value was given for.",
      missing,
    );
  }
  const bindings: WorkerBinding[] = [{ type: "json", name: CONFIG_BINDING, json: bundle }];
  const plan: BindingPlan = { bindings, inherited: [], changed: [], dropped: [] };
  const placed = new Set<string>([CONFIG_BINDING]);
  for (const name of [...names, ...Object.keys(newSecrets).filter((name) => !names.includes(name))]) {
    if (placed.has(name)) continue;
    placed.add(name);
    const value = newSecrets[name];
    if (value !== undefined) {
      bindings.push({ type: "secret_text", name, text: value });
      plan.changed.push(name);
      continue;
    }
    const holder = holderOf(live, name);
    if (holder === undefined) continue;
    bindings.push({ type: "inherit", name, version_id: holder.id });
    plan.inherited.push(name);
  }
  for (const binding of live.primary?.bindings ?? []) {
    if (placed.has(binding.name)) continue;
    placed.add(binding.name);
    if (binding.type === "secret_text") {
      plan.dropped.push(binding.name);
      continue;
    }
    bindings.push({ type: "inherit", name: binding.name, version_id: live.primary?.id ?? "" });
  }
  return plan;
}

export interface PublishRequest {
  api: CloudflareApi;
  live: LiveGateway;
  bundle: ConfigBundle;
  /** The gateway Worker's one ES module (dist/gateway/worker.js). */
  workerModule: string;
  /** New values of secret bindings: ones the live Worker lacks, or ones that change. */
  newSecrets?: Readonly<Record<string, string>>;
  /** The new version's share of requests (1-100); the rest stays with the live primary version. */
  percentage: number;
  /** Version annotations: `workers/message` (≤ 1000 bytes, cut if longer) and `workers/tag` (≤ 100 bytes). */
  message: string;
  tag: string;
  logger: PublishLogger;
}

export interface PublishResult {
  /** The deployment that was live before, for an exact restore; undefined on a first publish. */
  previous: WorkerDeployment | undefined;
  version: WorkerVersion;
  deployment: WorkerDeployment;
  /** The Worker was created by this publish. */
  created: boolean;
  plan: BindingPlan;
}

/** Uploads the gateway with its config as a new version and deploys it. Does not wait for the edge (see edge.ts). */
export async function publishGateway(request: PublishRequest): Promise<PublishResult> {
  const { api, live, logger } = request;
  const script = live.script;
  const plan = planBindings(live, request.bundle, request.newSecrets ?? {});
  if (plan.dropped.length > 0) {
    logger.info(
      `Not carried into the new version: secret binding(s) ${plan.dropped.join(", ")}, which the config no longer names.`,
    );
  }
  const upload: WorkerUpload = {
    mainModule: GATEWAY_MODULE_NAME,
    modules: [{ name: GATEWAY_MODULE_NAME, content: request.workerModule }],
    compatibilityDate: GATEWAY_COMPATIBILITY_DATE,
    bindings: plan.bindings,
    annotations: { message: request.message, tag: request.tag },
  };

  if (!live.exists) {
    // A Worker is created by the script upload, which also deploys it at 100 %: there is nothing to split with.
    if (request.percentage !== 100) {
      logger.warning(
        `Worker ${script} is new: its first version serves 100 % of requests, not ${request.percentage} %, as ` +
          "there is no earlier version to split with.",
      );
    }
    await api.uploadScript(script, upload);
    const deployment = (await api.listDeployments(script))[0];
    const versionId = deployment?.versions[0]?.version_id;
    if (deployment === undefined || versionId === undefined) {
      throw new Error(
        `Creating Worker ${script}: Cloudflare reported success, but lists no deployment of it.`,
      );
    }
    const version = await api.getVersion(script, versionId);
    logger.info(`Created Worker ${script}; version ${version.id} serves 100 % of requests.`);
    return { previous: undefined, version, deployment, created: true, plan };
  }

  const version = await api.uploadVersion(script, upload);
  logger.info(
    `Uploaded version ${version.id}${version.number === undefined ? "" : ` (#${version.number})`} of Worker ${script}` +
      ` with config ${request.bundle.version}` +
      (plan.changed.length > 0 ? `; new secret values for ${plan.changed.join(", ")}` : "") +
      (plan.inherited.length > 0 ? `; inherited ${plan.inherited.join(", ")}` : "") +
      ".",
  );
  let versions: DeploymentVersion[];
  if (request.percentage === 100) {
    versions = [{ version_id: version.id, percentage: 100 }];
  } else {
    const stays = live.primary;
    if (stays === undefined) {
      throw new Error(
        `Worker ${script} has no live version to split with: deploy the new version at 100 % (version-percentage 100).`,
      );
    }
    versions = [
      { version_id: version.id, percentage: request.percentage },
      { version_id: stays.id, percentage: 100 - request.percentage },
    ];
  }
  const deployment = await deployWithForceOnSecretChange(api, script, versions, request.message, logger);
  return { previous: live.deployment, version, deployment, created: false, plan };
}

/**
 * Creates a deployment; when Cloudflare blocks it only because secrets changed since one of its versions (10220),
 * deploys again with force: the versions are exactly the ones asked for, and the changed secrets are the point.
 */
export async function deployWithForceOnSecretChange(
  api: CloudflareApi,
  script: string,
  versions: DeploymentVersion[],
  message: string,
  logger: PublishLogger,
): Promise<WorkerDeployment> {
  try {
    return await api.createDeployment(script, { versions, message });
  } catch (error) {
    if (!(error instanceof CloudflareApiError && error.has(CF_CODES.secretsChangedSinceVersion))) throw error;
    logger.info(
      "Cloudflare blocks this deployment because secrets changed since one of its versions (10220); deploying " +
        "it with force, as it names exactly the versions intended.",
    );
    return api.createDeployment(script, { versions, message, force: true });
  }
}

/** A deployment as recorded for a restore: its versions and their percentages. */
export interface RecordedDeployment {
  id?: string | undefined;
  versions: DeploymentVersion[];
}

/** Reads a recorded deployment (the `previous-deployment` output); throws saying what is wrong with it. */
export function parseRecordedDeployment(text: string): RecordedDeployment {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw new Error(
      "is not JSON; expected a deployment as the route action's previous-deployment output gives it",
    );
  }
  const versions = (value as { versions?: unknown } | null)?.versions;
  if (
    !Array.isArray(versions) ||
    versions.length < 1 ||
    versions.length > 2 ||
    !versions.every(
      (version) =>
        typeof version?.version_id === "string" &&
        typeof version.percentage === "number" &&
        version.percentage >= 0 &&
        version.percentage <= 100,
    ) ||
    Math.abs(
      versions.reduce((sum: number, version: DeploymentVersion) => sum + version.percentage, 0) - 100,
    ) > 1e-9
  ) {
    throw new Error(
      'must be a deployment with 1 or 2 versions whose percentages sum to 100: {"versions":[{"version_id":"...","percentage":100}]}',
    );
  }
  const id = (value as { id?: unknown }).id;
  return {
    ...(typeof id === "string" ? { id } : {}),
    versions: versions.map((version: DeploymentVersion) => ({
      version_id: version.version_id,
      percentage: version.percentage,
    })),
  };
}

/**
 * Deploys exactly a recorded deployment again: the same versions at the same percentages. Force is used only when
 * Cloudflare says secrets changed since one of them (10220), as `wrangler rollback` does.
 */
export async function restoreDeployment(
  api: CloudflareApi,
  script: string,
  recorded: RecordedDeployment,
  options: { message: string; logger: PublishLogger },
): Promise<WorkerDeployment> {
  const deployment = await deployWithForceOnSecretChange(
    api,
    script,
    recorded.versions.map((version) => ({ version_id: version.version_id, percentage: version.percentage })),
    options.message,
    options.logger,
  );
  options.logger.info(
    `Restored Worker ${script} to ${describeDeployment(recorded)}${recorded.id === undefined ? "" : ` (deployment ${recorded.id})`}.`,
  );
  return deployment;
}

export function describeDeployment(
  deployment: { versions: readonly DeploymentVersion[] } | undefined,
): string {
  if (deployment === undefined) return "(none)";
  return deployment.versions.map((version) => `${version.version_id} at ${version.percentage} %`).join(", ");
}
