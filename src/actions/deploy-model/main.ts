// The deploy-model action: a model version onto an Azure ML managed online endpoint, beside what serves traffic now.
// It reads its inputs, resolves the model (a registered version, or a repository folder it uploads and registers),
// creates the endpoint when missing, and creates or updates the deployment at 0% traffic: the blue/green slot that
// is not serving, unless told which. It never changes the endpoint's traffic; promotion is a later step's decision.
import { resolve } from "node:path";
import * as core from "@actions/core";
import type { TokenCredential } from "@azure/core-auth";
import { gitHubOidcCredential } from "../../azure/credential.ts";
import {
  chooseSlot,
  createMlClient,
  type MlClient,
  MlWorkspace,
  NO_CODE_MODEL_TYPES,
  parseModelReference,
  type RegisteredModel,
} from "../../azure/ml.ts";
import {
  type BlobUploaderFactory,
  folderName,
  type ModelFolder,
  readModelFolder,
} from "../../azure/ml-model-folder.ts";
import { type Clock, systemClock } from "../../azure/retry.ts";
import { ConfigurationError, reportFailure } from "../common/errors.ts";
import { actionsInputs, type InputReader } from "../common/inputs.ts";
import { actionsLogger, type Logger } from "../common/logger.ts";
import { writeSummary } from "../common/summary.ts";
import { assetArmId, type DeployModelSettings, readDeployModelSettings } from "./settings.ts";

export interface DeployModelDependencies {
  readInput: InputReader;
  logger: Logger;
  clock: Clock;
  /** Where a relative model folder is looked for: the checkout (GITHUB_WORKSPACE), else the working directory. */
  workspaceDir: string;
  createCredential(settings: DeployModelSettings, logger: Logger): TokenCredential;
  createClient(settings: DeployModelSettings, credential: TokenCredential): MlClient;
  blobUploader?: BlobUploaderFactory;
  /** Waits between polls; tests shorten it. Default 5 s. */
  pollIntervalMs?: number;
}

export interface DeployModelResult {
  deployment: string;
  model: RegisteredModel & { uploaded: boolean };
  endpointCreated: boolean;
  scoringUri: string;
  previousTraffic: Record<string, number>;
  traffic: Record<string, number>;
}

export const defaultDependencies = (): DeployModelDependencies => ({
  readInput: actionsInputs,
  logger: actionsLogger,
  clock: systemClock,
  workspaceDir: process.env.GITHUB_WORKSPACE ?? process.cwd(),
  createCredential: (settings, logger) =>
    gitHubOidcCredential({
      tenantId: settings["tenant-id"],
      clientId: settings["client-id"],
      audience: settings["oidc-audience"],
      authorityHost: settings["authority-host"],
      logger,
    }),
  createClient: (settings, credential) =>
    createMlClient({
      credential,
      subscriptionId: settings["subscription-id"],
      armEndpoint: settings["arm-endpoint"],
    }),
});

/** The action: never throws; the step's outcome is set through @actions/core. */
export async function run(overrides: Partial<DeployModelDependencies> = {}): Promise<void> {
  const deps = { ...defaultDependencies(), ...overrides };
  try {
    const settings = readDeployModelSettings(deps.readInput);
    const result = await deployModel(settings, deps);
    core.setOutput("deployment", result.deployment);
    core.setOutput("model-id", result.model.id);
    core.setOutput("scoring-uri", result.scoringUri);
    core.setOutput("previous-traffic", JSON.stringify(result.previousTraffic));
    await writeSummary(
      {
        title: `Deployed ${result.model.name}:${result.model.version} to ${settings.endpoint}/${result.deployment}`,
        rows: [
          [
            "Model",
            `${result.model.name}:${result.model.version}${result.model.uploaded ? " (uploaded and registered now)" : ""}`,
          ],
          ["Model id", result.model.id],
          ["Workspace", `${settings["resource-group"]}/${settings.workspace}`],
          ["Endpoint", `${settings.endpoint}${result.endpointCreated ? " (created now, key auth)" : ""}`],
          ["Deployment", result.deployment],
          ["Instances", `${settings["instance-count"]} × ${settings["instance-type"]}`],
          ["Scoring URI", result.scoringUri],
          ["Traffic before", JSON.stringify(result.previousTraffic)],
          ["Traffic now", JSON.stringify(result.traffic)],
        ],
        notes: [
          `${result.deployment} receives no live traffic from this step. Call it directly with the header ` +
            `azureml-model-deployment: ${result.deployment}; shift traffic in a later step.`,
        ],
      },
      (message) => deps.logger.warning(message),
    );
  } catch (error) {
    reportFailure(error, core);
  }
}

/** The deployment itself, with every input already valid. Checks the model folder before touching Azure. */
export async function deployModel(
  settings: DeployModelSettings,
  deps: DeployModelDependencies,
): Promise<DeployModelResult> {
  const { logger } = deps;
  const reference = parseModelReference(settings.model);
  let folder: ModelFolder | undefined;
  let modelName: string | undefined;
  if (reference.kind === "folder") {
    folder = await readModelFolder(resolve(deps.workspaceDir, reference.path));
    modelName = settings["model-name"] ?? folder.declaredName ?? folderName(reference.path);
    if (!/^[a-zA-Z0-9][a-zA-Z0-9\-_.]{0,254}$/.test(modelName)) {
      throw new ConfigurationError(
        `Input \`model-name\`: the model folder ${reference.path} gives the name ${JSON.stringify(modelName)}, which ` +
          "Azure ML does not accept (letters, digits, '-', '_' or '.', starting with a letter or digit). Set " +
          "`model-name`.",
      );
    }
  }

  const credential = deps.createCredential(settings, logger);
  const ml = new MlWorkspace({
    client: deps.createClient(settings, credential),
    armEndpoint: settings["arm-endpoint"],
    subscriptionId: settings["subscription-id"],
    resourceGroup: settings["resource-group"],
    workspace: settings.workspace,
    deadline: deps.clock.now() + settings["timeout-minutes"] * 60_000,
    clock: deps.clock,
    logger,
    setSecret: (secret) => core.setSecret(secret),
    blobEndpoint: settings["blob-endpoint"],
    ...(deps.blobUploader === undefined ? {} : { blobUploader: deps.blobUploader }),
    ...(deps.pollIntervalMs === undefined ? {} : { pollIntervalMs: deps.pollIntervalMs }),
  });

  const existing = await ml.findEndpoint(settings.endpoint);
  const previousTraffic = existing?.properties.traffic ?? {};
  const deployment = settings.deployment ?? chooseSlot(previousTraffic, settings.endpoint);
  if (settings.deployment === undefined) {
    logger.info(
      existing === undefined
        ? `Endpoint ${settings.endpoint} does not exist yet; deploying to ${deployment}.`
        : `Endpoint ${settings.endpoint} sends traffic ${JSON.stringify(previousTraffic)}; deploying to ${deployment}, the slot not serving.`,
    );
  } else if ((previousTraffic[deployment] ?? 0) > 0) {
    logger.warning(
      `Deployment ${deployment} serves ${previousTraffic[deployment]}% of ${settings.endpoint}'s live traffic: its ` +
        "callers get the new model as soon as it provisions. Leave `deployment` unset to deploy beside it instead.",
    );
  }

  const model =
    reference.kind === "registered"
      ? { ...(await ml.registeredModel(reference.name, reference.version)), uploaded: false }
      : await registerFolder(ml, modelName ?? "", folder);

  if (settings.code === undefined && !NO_CODE_MODEL_TYPES.includes(model.modelType ?? "")) {
    // Not refused here: a workspace may serve it (the local sandbox does), and Azure's own answer names the gap.
    logger.warning(
      `Model ${model.name}:${model.version} is a ${model.modelType ?? "model of unstated type"}: Azure ML deploys ` +
        "only MLflow and Triton models without code. Set `environment`, `code` and `scoring-script` if the " +
        "deployment is refused.",
    );
  }
  const { created } = await ml.ensureEndpoint(settings.endpoint);
  await ml.deploy({
    endpoint: settings.endpoint,
    deployment,
    modelId: model.id,
    instanceType: settings["instance-type"],
    instanceCount: settings["instance-count"],
    environmentId:
      settings.environment === undefined
        ? undefined
        : assetArmId(settings.environment, ml.workspaceId, "environments"),
    codeConfiguration:
      settings.code === undefined || settings["scoring-script"] === undefined
        ? undefined
        : {
            codeId: assetArmId(settings.code, ml.workspaceId, "codes"),
            scoringScript: settings["scoring-script"],
          },
    environmentVariables: settings["environment-variables"],
    tags: { "aml-edge-model": `${model.name}:${model.version}` },
  });

  const after = await ml.findEndpoint(settings.endpoint);
  return {
    deployment,
    model,
    endpointCreated: created,
    scoringUri: after?.properties.scoringUri ?? "",
    previousTraffic,
    traffic: after?.properties.traffic ?? {},
  };
}

async function registerFolder(
  ml: MlWorkspace,
  name: string,
  folder: ModelFolder | undefined,
): Promise<RegisteredModel & { uploaded: boolean }> {
  if (folder === undefined) throw new Error("internal: a model folder reference without its folder");
  const registered = await ml.registerModelFolder(name, folder);
  return {
    name: registered.name,
    version: registered.version,
    id: registered.id,
    modelType: registered.modelType,
    uploaded: !registered.reused,
  };
}
