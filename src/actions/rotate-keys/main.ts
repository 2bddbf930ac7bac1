// The rotate-keys action, meant for a scheduled workflow: regenerates the Azure ML endpoint's keys one at a time
// (or refreshes its aml_token when due), each time publishing a gateway version that sends the new credential and
// checking through the edge that it does, so no request fails (DESIGN.md decision 3; the order of operations is
// rotateEndpointCredentials in src/rollout/rotate-keys.ts). Here: the inputs, checked before any network call; the
// endpoint found before any token is minted; the job's Cloudflare token (common/cloudflare.ts); the live deployment
// recorded (`previous-deployment`) before anything changes; the status route read once before anything changes, so a
// gateway that does not grant this workflow read-status fails the step before a key is regenerated; then the rotation,
// the outputs and the summary. The post step (common/cloudflare-post.ts) deletes the minted token.
import * as core from "@actions/core";
import type { TokenCredential } from "@azure/core-auth";
import { ConfigurationError } from "../../azure/errors.ts";
import { createMlClient, MlWorkspace } from "../../azure/ml.ts";
import { describeDeployment, type LiveGateway, readLiveGateway } from "../../cloudflare/publish.ts";
import { systemClock } from "../../cloudflare/time.ts";
import { routesCalling } from "../../config/scoring-uri.ts";
import { cloudflareGatewayPlane, edgeStatus } from "../../rollout/gateway-plane.ts";
import {
  type EndpointPort,
  type GatewayStatus,
  type RotationResult,
  rotateEndpointCredentials,
} from "../../rollout/rotate-keys.ts";
import {
  type CloudflareDependencies,
  cloudflareCredential,
  cloudflareReportable,
  defaultCloudflareDependencies,
  lazyAzureCredential,
  maskGivenToken,
} from "../common/cloudflare.ts";
import { reportFailure } from "../common/errors.ts";
import { actionsInputs, type InputReader } from "../common/inputs.ts";
import { actionsLogger } from "../common/logger.ts";
import { withJobContext } from "../common/run.ts";
import { writeSummary } from "../common/summary.ts";
import { type RotateKeysSettings, readRotateKeysSettings } from "./settings.ts";

export interface RotateKeysDependencies extends CloudflareDependencies {
  readInput: InputReader;
  setOutput(name: string, value: string): void;
  /** The job's GitHub OIDC token for `audience`, masked: what the gateway's status route is shown. */
  gitHubIdToken(audience: string): Promise<string>;
  /** The Azure ML endpoint the settings name, reached with the job's Azure credential. */
  endpoint(settings: RotateKeysSettings, credential: TokenCredential, deadline: number): EndpointPort;
  /** The fetch that asks the edge (edge waits and the status route); default global fetch. */
  edgeFetch?: typeof globalThis.fetch;
  /** First pause between edge polls (default 250 ms). */
  edgeInitialDelayMs?: number;
}

export const defaultDependencies = (): RotateKeysDependencies => ({
  ...defaultCloudflareDependencies(),
  readInput: actionsInputs,
  setOutput: (name, value) => core.setOutput(name, value),
  gitHubIdToken: async (audience) => {
    let token: string;
    try {
      token = await core.getIDToken(audience);
    } catch (error) {
      throw new Error(
        `Could not get the job's GitHub OIDC token for the gateway (audience ${audience}): ` +
          `${error instanceof Error ? error.message : String(error)}. The job needs \`permissions: id-token: write\`.`,
        { cause: error },
      );
    }
    core.setSecret(token);
    return token;
  },
  endpoint: (settings, credential, deadline) =>
    mlEndpoint(
      new MlWorkspace({
        client: createMlClient({
          credential,
          subscriptionId: settings["subscription-id"],
          armEndpoint: settings["arm-endpoint"],
        }),
        armEndpoint: settings["arm-endpoint"],
        subscriptionId: settings["subscription-id"],
        resourceGroup: settings["resource-group"],
        workspace: settings.workspace,
        deadline,
        clock: systemClock,
        logger: actionsLogger,
        setSecret: (secret) => core.setSecret(secret),
      }),
      settings,
    ),
});

/** The endpoint as the rotation needs it; its scoring URI read once (it names the endpoint's routes). */
export function mlEndpoint(ml: MlWorkspace, settings: RotateKeysSettings): EndpointPort {
  const name = settings.endpoint;
  let scoringUri: Promise<string> | undefined;
  const readScoringUri = async () => {
    const found = await ml.findEndpoint(name);
    if (found === undefined) {
      throw new ConfigurationError(
        `Input \`endpoint\`: there is no online endpoint ${name} in workspace ${settings.workspace} (resource ` +
          `group ${settings["resource-group"]}); check the endpoint, workspace and resource-group inputs.`,
      );
    }
    const uri = found.properties.scoringUri;
    if (uri === undefined || uri === "") {
      throw new Error(`Azure ML returned endpoint ${name} without a scoring URI; is it provisioned?`);
    }
    return uri;
  };
  return {
    name,
    scoringUri: () => {
      scoringUri ??= readScoringUri();
      return scoringUri;
    },
    regenerate: (slot) => ml.regenerateEndpointKey(name, slot === "primary" ? "Primary" : "Secondary"),
    token: () => ml.endpointToken(name),
  };
}

export interface RotateKeysResult {
  settings: RotateKeysSettings;
  scoringUri: string;
  before: LiveGateway;
  /** What the status route showed for the endpoint's routes before anything changed. */
  statusBefore: GatewayStatus["routes"];
  rotation: RotationResult;
  after: LiveGateway;
  credential: string;
}

/** The action: never throws; the step's outcome is set through @actions/core. */
export async function run(overrides: Partial<RotateKeysDependencies> = {}): Promise<void> {
  const deps = { ...defaultDependencies(), ...overrides };
  try {
    maskGivenToken(deps.readInput, deps.setSecret);
    const settings = readRotateKeysSettings(deps.readInput);
    const result = await rotateKeys(settings, deps);
    setRotationOutputs(result, deps);
    await writeRotationSummary(result, deps);
  } catch (error) {
    reportFailure(cloudflareReportable(error), core);
  }
}

/** The rotation itself, with every input already valid. */
export async function rotateKeys(
  settings: RotateKeysSettings,
  deps: RotateKeysDependencies,
): Promise<RotateKeysResult> {
  const { logger, clock } = deps;
  const deadline = clock.now() + settings["timeout-minutes"] * 60_000;
  const script = settings["worker-name"];
  const workerModule = await deps.gatewayModule();

  const azureCredential = lazyAzureCredential(settings, deps);
  // The endpoint first: a wrong name fails the step before a Cloudflare token is minted.
  const endpoint = deps.endpoint(settings, azureCredential(), deadline);
  const scoringUri = await endpoint.scoringUri();

  const { api, description: credential } = await cloudflareCredential(settings, deps, {
    action: "rotate-keys",
    deadline,
    azureCredential,
  });
  const before = await readLiveGateway(api, script);
  // Recorded before anything changes, so a later step (or a person) can see exactly what was live.
  deps.setOutput("previous-deployment", JSON.stringify(before.deployment ?? null));
  const first = before.deployment?.versions[0];
  if (first === undefined) {
    throw new ConfigurationError(
      `Worker ${script} has no live deployment: publish the gateway with the route action before rotating its keys.`,
    );
  }
  logger.info(`Worker ${script} serves ${describeDeployment(before.deployment)}.`);

  const status = edgeStatus({
    gatewayUrl: settings["gateway-url"],
    script,
    statusPath: before.bundle?.config.status.path ?? "/.aml-edge/status",
    token: () => deps.gitHubIdToken(settings["gateway-audience"]),
    ...(deps.edgeFetch === undefined ? {} : { fetch: deps.edgeFetch }),
  });
  // Before anything changes: a gateway that refuses this workflow its status route would fail the rotation only
  // after a key was regenerated.
  const liveStatus = await status.status(first.version_id);
  const routeNames = new Set(
    before.bundle === undefined
      ? []
      : routesCalling(before.bundle.config, scoringUri).map((route) => route.name),
  );
  const statusBefore = liveStatus.routes.filter((route) => routeNames.has(route.name));

  const rotation = await rotateEndpointCredentials({
    gateway: cloudflareGatewayPlane({
      api,
      script,
      gatewayUrl: settings["gateway-url"],
      workerModule,
      deadline,
      clock,
      logger,
      ...(deps.edgeFetch === undefined ? {} : { fetch: deps.edgeFetch }),
      ...(deps.edgeInitialDelayMs === undefined ? {} : { edgeInitialDelayMs: deps.edgeInitialDelayMs }),
    }),
    status,
    endpoint,
    logger,
    now: () => clock.now(),
    tokenRefreshMarginMs: settings["token-refresh-minutes"] * 60_000,
    forceTokenRefresh: settings["force-token-refresh"],
    message: versionMessage(settings.endpoint, deps.env),
  });
  const after = rotation.steps.length === 0 ? before : await readLiveGateway(api, script);
  return { settings, scoringUri, before, statusBefore, rotation, after, credential };
}

/** `workers/message` of each version published: what was rotated, from which commit and run. */
export function versionMessage(endpoint: string, env: Readonly<Record<string, string | undefined>>): string {
  return withJobContext([`aml-edge rotate-keys: endpoint ${endpoint}`], env);
}

function setRotationOutputs(result: RotateKeysResult, deps: RotateKeysDependencies): void {
  const { rotation, statusBefore } = result;
  deps.setOutput("version-ids", JSON.stringify(rotation.steps.flatMap((step) => step.versionIds)));
  if (rotation.mode === "key") {
    for (const slot of ["primary", "secondary"] as const) {
      const step = rotation.steps.find((candidate) => candidate.slot === slot);
      if (step !== undefined) deps.setOutput(`${slot}-fingerprint`, step.fingerprint);
    }
    return;
  }
  // A token still fresh was not replaced: the fingerprint is the one the gateway holds.
  const step = rotation.steps.find((candidate) => candidate.kind === "token");
  const held = statusBefore.find((route) => route.upstreamAuth.mode === "aml_token")?.upstreamAuth;
  const fingerprint = step?.fingerprint ?? (held?.mode === "aml_token" ? held.token : undefined);
  if (fingerprint !== undefined) deps.setOutput("token-fingerprint", fingerprint);
}

function describeAuth(auth: GatewayStatus["routes"][number]["upstreamAuth"]): string {
  return auth.mode === "key"
    ? `sends the ${auth.active} key; primary ${auth.primary}, secondary ${auth.secondary}`
    : `aml_token ${auth.token}`;
}

async function writeRotationSummary(result: RotateKeysResult, deps: RotateKeysDependencies): Promise<void> {
  const { settings, rotation, before, after } = result;
  const script = settings["worker-name"];
  const rows: [string, string][] = [
    [
      "Endpoint",
      `${settings.endpoint} (${rotation.mode === "key" ? "keys" : "aml_token"}, ${result.scoringUri})`,
    ],
    ["Worker", script],
    ["Deployment before", describeDeployment(before.deployment)],
  ];
  for (const route of result.statusBefore) {
    rows.push([`Route ${route.name} before`, describeAuth(route.upstreamAuth)]);
  }
  rotation.steps.forEach((step, index) => {
    const what = step.kind === "key" ? `${step.slot} key regenerated` : "aml_token refreshed";
    rows.push([
      `Step ${index + 1}: ${what}`,
      `versions ${step.versionIds.join(", ")} (config ${step.configVersions.join(", ")}); the status route shows ${step.fingerprint}`,
    ]);
  });
  if (rotation.skipped !== undefined) rows.push(["Nothing to do", rotation.skipped]);
  rows.push(["Deployment now", describeDeployment(after.deployment)]);
  rows.push(["Cloudflare token", result.credential]);
  const notes =
    rotation.mode === "key"
      ? [
          `Both keys of endpoint ${settings.endpoint} are new. The versions live before this step send a key that ` +
            "no longer works: do not deploy them again (the previous-deployment output is a record, not a way back).",
        ]
      : rotation.steps.length > 0
        ? [
            "The token the versions before this step hold stays valid until it expires; the new one is live and " +
              "is refreshed again by a later run.",
          ]
        : [];
  await writeSummary(
    {
      title:
        rotation.mode === "key"
          ? `Rotated the keys of endpoint ${settings.endpoint} behind Worker ${script}`
          : rotation.steps.length > 0
            ? `Refreshed the aml_token of endpoint ${settings.endpoint} behind Worker ${script}`
            : `The aml_token of endpoint ${settings.endpoint} is fresh: nothing to do`,
      rows,
      notes,
    },
    (message) => deps.logger.warning(message),
  );
}
