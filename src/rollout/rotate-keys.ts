// Rotating the Azure ML credentials the gateway holds, without losing a request (DESIGN.md decision 3).
//
// Key endpoints have two keys and the gateway sends one (`active`). The key not being sent is regenerated first,
// then a gateway version that sends it goes live and is checked through the edge; only then is the other key
// regenerated, and a version sending that one goes live and is checked. At every moment the key the live gateway
// sends is valid at Azure: a request in flight on the old version uses a key that is regenerated only after the new
// version serves and has been checked. Both keys end up new, and the gateway ends on the slot it started on.
//
// aml_token endpoints hold a token that Azure ML says to refresh after `refreshAfterTimeUtc`: the token is
// replaced when that time is near (or when asked), and the time is kept beside it as a plain-text binding so the
// next scheduled run knows without reading the secret.
//
// When the live deployment is a split between two versions (a canary in progress), each of them gets its
// successor with the same percentages: the new credential reaches both at once and the split stays as it was.
// Secrets change only through new versions, never through Cloudflare's secrets endpoint (which fails with 10215
// during a split and deploys at once otherwise).
import type { EndpointToken } from "../azure/ml.ts";
import { compileConfigBundle } from "../config/compile.ts";
import { keyFingerprint } from "../config/fingerprint.ts";
import type { ConfigBundle, GatewayConfig } from "../config/schema.ts";
import { routesCalling } from "../config/scoring-uri.ts";

export type KeySlot = "primary" | "secondary";

export interface LiveGatewayVersion {
  versionId: string;
  percentage: number;
  bundle: ConfigBundle;
  /** The version's plain-text bindings by name (not secrets: those Cloudflare never returns). */
  plainText: Record<string, string>;
}

export interface VersionToPublish {
  /** The version it succeeds: every binding not given here is inherited from it. */
  from: string;
  bundle: ConfigBundle;
  /** Secret bindings that change, by name. */
  secrets: Record<string, string>;
  /** Plain-text bindings that change, by name. */
  plainText: Record<string, string>;
  percentage: number;
}

/** The Cloudflare side, as the rotation needs it. */
export interface GatewayPlanePort {
  live(): Promise<LiveGatewayVersion[]>;
  /** Uploads the versions and deploys them together, at their percentages; returns their ids in order. */
  publish(versions: VersionToPublish[], message: string): Promise<string[]>;
  /** Resolves once the edge serves these config versions and no others. */
  waitForEdge(configVersions: string[]): Promise<void>;
  /** Deploys exactly these versions again. */
  restore(previous: { versionId: string; percentage: number }[], message: string): Promise<void>;
}

/** The gateway's status route, read through the edge from one version of the live deployment. */
export interface GatewayStatusPort {
  status(versionId: string): Promise<GatewayStatus>;
}

export interface GatewayStatus {
  configVersion: string;
  routes: {
    name: string;
    upstreamAuth:
      | { mode: "key"; active: KeySlot; primary: string; secondary: string }
      | { mode: "aml_token"; token: string };
  }[];
}

/** The Azure ML side: one endpoint. */
export interface EndpointPort {
  readonly name: string;
  scoringUri(): Promise<string>;
  /** Regenerates one key; returns both keys afterwards. */
  regenerate(slot: KeySlot): Promise<{ primaryKey: string; secondaryKey: string }>;
  token(): Promise<EndpointToken>;
}

export interface RotationLogger {
  info(message: string): void;
  startGroup(title: string): void;
  endGroup(): void;
}

export interface RotateOptions {
  gateway: GatewayPlanePort;
  status: GatewayStatusPort;
  endpoint: EndpointPort;
  logger: RotationLogger;
  now: () => number;
  /** aml_token: refresh when refreshAfter is this close (or past). */
  tokenRefreshMarginMs: number;
  /** aml_token: refresh even when not due. */
  forceTokenRefresh?: boolean;
  /** Shown in the version annotations (e.g. the run URL). */
  message: string;
}

export interface RotationStep {
  kind: "key" | "token";
  slot?: KeySlot;
  versionIds: string[];
  configVersions: string[];
  /** The fingerprint the status route showed for the new credential. */
  fingerprint: string;
}

export interface RotationResult {
  mode: "key" | "aml_token";
  /** The live deployment before the first change, to restore on failure. */
  previous: { versionId: string; percentage: number }[];
  steps: RotationStep[];
  /** aml_token: the token was still fresh and nothing was published. */
  skipped?: string;
}

export class RotationError extends Error {
  override name = "RotationError";
}

const REFRESH_AFTER_SUFFIX = "_REFRESH_AFTER";

const other = (slot: KeySlot): KeySlot => (slot === "primary" ? "secondary" : "primary");

interface RouteAuthSummary {
  mode: "key" | "aml_token";
  active?: KeySlot;
  secret: { primary: string; secondary: string } | { token: string };
}

/**
 * How the live versions authenticate to the endpoint. They must agree (same mode, same secret names, same active
 * key): a rotation that sent different keys from two live versions could not keep both valid.
 */
function liveAuth(live: LiveGatewayVersion[], scoringUri: string, endpoint: string): RouteAuthSummary {
  const seen = new Map<string, RouteAuthSummary>();
  for (const version of live) {
    for (const route of routesCalling(version.bundle.config, scoringUri)) {
      const auth = route.upstreamAuth;
      const summary: RouteAuthSummary =
        auth.mode === "key"
          ? {
              mode: "key",
              active: auth.active,
              secret: { primary: auth.primarySecret, secondary: auth.secondarySecret },
            }
          : { mode: "aml_token", secret: { token: auth.tokenSecret } };
      seen.set(`${version.versionId}/${route.name}`, summary);
    }
  }
  const summaries = [...seen.values()];
  const first = summaries[0];
  if (!first) {
    throw new RotationError(
      `No route of the live gateway config calls endpoint ${endpoint} (${scoringUri}); the routes call ${[
        ...new Set(live.flatMap((version) => version.bundle.config.routes.map((route) => route.scoringUri))),
      ].join(
        ", ",
      )}. Check the endpoint input, or publish a config whose route points at this endpoint first.`,
    );
  }
  const disagree = summaries.find((summary) => JSON.stringify(summary) !== JSON.stringify(first));
  if (disagree) {
    throw new RotationError(
      `The live gateway versions authenticate to endpoint ${endpoint} differently (${[...seen]
        .map(
          ([where, summary]) =>
            `${where}: ${summary.mode}${summary.active ? ` ${summary.active}` : ""} ${JSON.stringify(summary.secret)}`,
        )
        .join("; ")}). Finish or roll back the rollout in progress so one config is live, then rotate.`,
    );
  }
  return first;
}

/** The config with every route on the endpoint sending `slot`. */
function withActive(config: GatewayConfig, scoringUri: string, slot: KeySlot): GatewayConfig {
  const copy = structuredClone(config);
  for (const route of routesCalling(copy, scoringUri)) {
    if (route.upstreamAuth.mode === "key") route.upstreamAuth.active = slot;
  }
  return copy;
}

async function recompile(bundle: ConfigBundle, config: GatewayConfig): Promise<ConfigBundle> {
  return compileConfigBundle(config, {
    mode: bundle.mode,
    keySnapshots: bundle.keySnapshots,
    source: "live gateway config",
  });
}

export async function rotateEndpointCredentials(options: RotateOptions): Promise<RotationResult> {
  const { gateway, endpoint, logger } = options;
  const scoringUri = await endpoint.scoringUri();
  let live = await gateway.live();
  if (live.length === 0) {
    throw new RotationError(
      "The gateway Worker has no live deployment: publish it with the route action before rotating its keys.",
    );
  }
  const previous = live.map(({ versionId, percentage }) => ({ versionId, percentage }));
  const auth = liveAuth(live, scoringUri, endpoint.name);
  const routeNames = new Set(
    live.flatMap((version) => routesCalling(version.bundle.config, scoringUri).map((route) => route.name)),
  );
  const steps: RotationStep[] = [];

  if (auth.mode === "aml_token" && "token" in auth.secret) {
    const tokenSecret = auth.secret.token;
    const due = live.map((version) => version.plainText[`${tokenSecret}${REFRESH_AFTER_SUFFIX}`]);
    const dueAt = Math.min(...due.map((value) => (value === undefined ? 0 : Date.parse(value) || 0)));
    if (!options.forceTokenRefresh && dueAt - options.tokenRefreshMarginMs > options.now()) {
      const skipped = `the token is fresh until ${new Date(dueAt).toISOString()} (refreshed within ${Math.round(options.tokenRefreshMarginMs / 60_000)} min of that)`;
      logger.info(`Nothing to do: ${skipped}.`);
      return { mode: "aml_token", previous, steps, skipped };
    }
    logger.startGroup(`Refreshing the aml_token of endpoint ${endpoint.name}`);
    try {
      const token = await endpoint.token();
      if (!token.expiresAt)
        throw new RotationError(`Azure ML returned a token for ${endpoint.name} without an expiry.`);
      const secretValue = JSON.stringify({
        accessToken: token.accessToken,
        tokenType: token.tokenType ?? "Bearer",
        expiryTimeUtc: Math.floor(token.expiresAt.getTime() / 1000),
        refreshAfterTimeUtc: Math.floor((token.refreshAfter ?? token.expiresAt).getTime() / 1000),
      });
      const refreshAfter = (token.refreshAfter ?? token.expiresAt).toISOString();
      const step = await publishAndCheck(options, live, {
        kind: "token",
        secrets: { [tokenSecret]: secretValue },
        plainText: { [`${tokenSecret}${REFRESH_AFTER_SUFFIX}`]: refreshAfter },
        configFor: (version) => version.bundle.config,
        expectFingerprint: await keyFingerprint(secretValue),
        routeCheck: (route, fingerprint) =>
          route.upstreamAuth.mode === "aml_token" && route.upstreamAuth.token === fingerprint,
        routeNames,
      });
      steps.push(step);
      logger.info(`The gateway sends the new token; refresh it again after ${refreshAfter}.`);
    } finally {
      logger.endGroup();
    }
    return { mode: "aml_token", previous, steps };
  }

  if (!("primary" in auth.secret) || auth.active === undefined) {
    throw new RotationError(`Endpoint ${endpoint.name}: the live config names no key secrets.`);
  }
  const secretNames = auth.secret;
  const started = auth.active;
  for (const slot of [other(started), started]) {
    logger.startGroup(`Rotating the ${slot} key of endpoint ${endpoint.name}`);
    try {
      const keys = await endpoint.regenerate(slot);
      const value = slot === "primary" ? keys.primaryKey : keys.secondaryKey;
      logger.info(`Azure ML regenerated the ${slot} key; publishing a gateway version that sends it.`);
      const fingerprint = await keyFingerprint(value);
      const step = await publishAndCheck(options, live, {
        kind: "key",
        slot,
        secrets: { [secretNames[slot]]: value },
        plainText: {},
        configFor: (version) => withActive(version.bundle.config, scoringUri, slot),
        expectFingerprint: fingerprint,
        routeCheck: (route, expected) =>
          route.upstreamAuth.mode === "key" &&
          route.upstreamAuth.active === slot &&
          route.upstreamAuth[slot] === expected,
        routeNames,
      });
      steps.push(step);
      live = await gateway.live();
    } finally {
      logger.endGroup();
    }
  }
  return { mode: "key", previous, steps };
}

interface StepPlan {
  kind: "key" | "token";
  slot?: KeySlot;
  secrets: Record<string, string>;
  plainText: Record<string, string>;
  configFor: (version: LiveGatewayVersion) => GatewayConfig;
  expectFingerprint: string;
  routeCheck: (route: GatewayStatus["routes"][number], fingerprint: string) => boolean;
  /** The routes on the endpoint: the status route must show the new credential on each. */
  routeNames: Set<string>;
}

async function publishAndCheck(
  options: RotateOptions,
  live: LiveGatewayVersion[],
  plan: StepPlan,
): Promise<RotationStep> {
  const { gateway, logger } = options;
  const versions: VersionToPublish[] = [];
  for (const version of live) {
    versions.push({
      from: version.versionId,
      bundle: await recompile(version.bundle, plan.configFor(version)),
      secrets: plan.secrets,
      plainText: plan.plainText,
      percentage: version.percentage,
    });
  }
  const what = plan.kind === "key" ? `${plan.slot} key` : "aml_token";
  const versionIds = await gateway.publish(versions, `${options.message} (${what} rotated)`);
  const configVersions = [...new Set(versions.map((version) => version.bundle.version))];
  logger.info(
    `Deployed ${versionIds.map((id, index) => `${id} at ${versions[index]?.percentage}%`).join(" and ")}; waiting for the edge to serve config ${configVersions.join(", ")}.`,
  );
  try {
    await gateway.waitForEdge(configVersions);
    await checkStatus(
      options,
      versionIds.map((versionId, index) => ({
        versionId,
        configVersion: versions[index]?.bundle.version ?? "",
      })),
      plan,
    );
  } catch (error) {
    // The versions before this step send a key that is still valid (only the other one was regenerated), so putting
    // them back leaves every request working while someone looks.
    const before = live.map(({ versionId, percentage }) => ({ versionId, percentage }));
    const reason = error instanceof Error ? error.message : String(error);
    try {
      await gateway.restore(before, `${options.message} (restored after a failed ${what} rotation)`);
    } catch (restoreError) {
      throw new RotationError(
        `${reason} Restoring the deployment before this step failed too (${restoreError instanceof Error ? restoreError.message : String(restoreError)}); deploy it by hand: ${JSON.stringify(before)}.`,
        { cause: error },
      );
    }
    throw new RotationError(
      `${reason} The deployment before this step (${before.map((entry) => `${entry.versionId} at ${entry.percentage} %`).join(", ")}) was restored; its key is still valid.`,
      { cause: error },
    );
  }
  logger.info(`The status route shows the new ${what} (${plan.expectFingerprint}) in every live version.`);
  return {
    kind: plan.kind,
    ...(plan.slot === undefined ? {} : { slot: plan.slot }),
    versionIds,
    configVersions,
    fingerprint: plan.expectFingerprint,
  };
}

/**
 * Reads the status route of each new version (pinned to it through the edge) and requires the new credential on each
 * route of the endpoint. A version that shows another credential fails the rotation at once: the key it holds is
 * about to be regenerated.
 */
async function checkStatus(
  options: RotateOptions,
  published: { versionId: string; configVersion: string }[],
  plan: StepPlan,
): Promise<void> {
  for (const { versionId, configVersion } of published) {
    const status = await options.status.status(versionId);
    if (status.configVersion !== configVersion) {
      throw new RotationError(
        `The status route of version ${versionId} answered from config ${status.configVersion}, not ${configVersion}: the edge does not serve the new version. Nothing more was regenerated; check the Worker's deployments.`,
      );
    }
    const routes = status.routes.filter((route) => plan.routeNames.has(route.name));
    const wrong = routes.filter((route) => !plan.routeCheck(route, plan.expectFingerprint));
    if (routes.length === 0 || wrong.length > 0) {
      throw new RotationError(
        `The gateway (version ${versionId}, config ${status.configVersion}) does not send the new credential on ${
          routes.length === 0
            ? "the endpoint's routes (none listed)"
            : wrong.map((route) => route.name).join(", ")
        }: expected ${plan.expectFingerprint}, the status route shows ${JSON.stringify(
          (wrong[0] ?? status.routes[0])?.upstreamAuth,
        )}. Nothing more was regenerated.`,
      );
    }
  }
}
