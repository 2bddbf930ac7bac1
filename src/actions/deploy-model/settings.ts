// The deploy-model action's inputs, read once into one typed settings object. Every input is checked here, so a bad
// one fails the step before anything in Azure is read or changed, with a message that names it, says what is wrong
// and what is accepted.
import { z } from "zod";
import { parseModelReference } from "../../azure/ml.ts";
import { type InputReader, parseInputs, readInputs } from "../common/inputs.ts";

export const DEPLOY_MODEL_INPUTS = [
  "client-id",
  "tenant-id",
  "subscription-id",
  "resource-group",
  "workspace",
  "endpoint",
  "model",
  "model-name",
  "deployment",
  "instance-type",
  "instance-count",
  "environment",
  "code",
  "scoring-script",
  "environment-variables",
  "timeout-minutes",
  "oidc-audience",
  "arm-endpoint",
  "authority-host",
  "blob-endpoint",
] as const;

// GUID-shaped: Azure's own ids are hex, but emulators (the sandbox) use letters too; Azure rejects a wrong one anyway.
const GUID = /^[0-9a-z]{8}-[0-9a-z]{4}-[0-9a-z]{4}-[0-9a-z]{4}-[0-9a-z]{12}$/i;
const ASSET_ID = /^azureml:([a-zA-Z0-9][a-zA-Z0-9\-_.]{0,254}):([a-zA-Z0-9][a-zA-Z0-9\-_.]{0,63})$/;

const required = (description: string) => z.string({ error: description });

const guid = (what: string) =>
  required(`set it to the ${what} (a GUID such as 00000000-0000-0000-0000-000000000000)`).regex(GUID, {
    error: `must be the ${what}, a GUID such as 00000000-0000-0000-0000-000000000000`,
  });

const httpsUrl = (what: string, allowHttp = false) =>
  z.string().refine(
    (value) => {
      try {
        const url = new URL(value);
        return url.protocol === "https:" || (allowHttp && url.protocol === "http:");
      } catch {
        return false;
      }
    },
    { error: `must be ${allowHttp ? "an http(s)" : "an https"} URL of ${what}` },
  );

const wholeNumber = (min: number, max: number, fallback: number) =>
  z
    .string()
    .regex(/^\d+$/, { error: `must be a whole number from ${min} to ${max}` })
    .transform(Number)
    .refine((n) => n >= min && n <= max, { error: `must be a whole number from ${min} to ${max}` })
    .default(fallback);

/** An asset version as `azureml:NAME:VERSION` or its ARM id; both become the ARM id a deployment takes. */
const assetVersion = (kind: "environments" | "codes", example: string) =>
  z.string().refine((value) => ASSET_ID.test(value) || isAssetArmId(value, kind), {
    error: `must be a registered ${kind === "codes" ? "code asset" : "environment"} version: azureml:NAME:VERSION (for example ${example}) or its ARM id (/subscriptions/.../workspaces/WS/${kind}/NAME/versions/VERSION)`,
  });

function isAssetArmId(value: string, kind: string): boolean {
  return new RegExp(
    `^/subscriptions/[^/]+/resourceGroups/[^/]+/providers/Microsoft\\.MachineLearningServices/workspaces/[^/]+/${kind}/[^/]+/versions/[^/]+$`,
    "i",
  ).test(value);
}

const schema = z
  .object({
    "client-id": guid("client ID of the Entra app or managed identity with the federated credential"),
    "tenant-id": required("set it to the Entra tenant ID (a GUID) or its domain").regex(
      /^([0-9a-z]{8}-[0-9a-z]{4}-[0-9a-z]{4}-[0-9a-z]{4}-[0-9a-z]{12}|[a-z0-9][a-z0-9.-]*\.[a-z]{2,})$/i,
      { error: "must be the Entra tenant ID (a GUID) or its domain (contoso.onmicrosoft.com)" },
    ),
    "subscription-id": guid("Azure subscription ID"),
    "resource-group": required("set it to the workspace's resource group").regex(/^[-\w.()]{0,89}[-\w()]$/, {
      error:
        "must be a resource group name: up to 90 letters, digits, '-', '_', '.', '(' or ')', not ending in '.'",
    }),
    workspace: required("set it to the Azure ML workspace name").regex(/^[a-zA-Z0-9][a-zA-Z0-9_-]{2,32}$/, {
      error:
        "must be an Azure ML workspace name: 3-33 letters, digits, '-' or '_', starting with a letter or digit",
    }),
    endpoint: required("set it to the online endpoint's name (it is created when missing)").regex(
      /^[a-zA-Z][a-zA-Z0-9-]{1,30}[a-zA-Z0-9]$/,
      {
        error:
          "must be an online endpoint name: 3-32 letters, digits or '-', starting with a letter and not ending in '-'",
      },
    ),
    model: required(
      "set it to a model folder in the repository or a registered model as azureml:NAME:VERSION",
    ).superRefine((value, context) => {
      try {
        parseModelReference(value);
      } catch (error) {
        context.addIssue({
          code: "custom",
          message: (error as Error).message.replace(/^Input `model`: /, ""),
        });
      }
    }),
    "model-name": z
      .string()
      .regex(/^[a-zA-Z0-9][a-zA-Z0-9\-_.]{0,254}$/, {
        error: "must be a model name: letters, digits, '-', '_' or '.', starting with a letter or digit",
      })
      .optional(),
    deployment: z
      .string()
      .regex(/^[a-zA-Z][a-zA-Z0-9-]{1,30}[a-zA-Z0-9]$/, {
        error:
          "must be a deployment name: 3-32 letters, digits or '-', starting with a letter and not ending in '-' (or leave it unset to alternate blue and green)",
      })
      .optional(),
    "instance-type": z
      .string()
      .regex(/^[A-Za-z][A-Za-z0-9_]*$/, { error: "must be a VM size such as Standard_DS3_v2" })
      .default("Standard_DS3_v2"),
    "instance-count": wholeNumber(1, 100, 1),
    environment: assetVersion("environments", "azureml:onnx-runtime:4").optional(),
    code: assetVersion("codes", "azureml:score-credit:2").optional(),
    "scoring-script": z
      .string()
      .refine((value) => !value.startsWith("/") && !value.split(/[\\/]/).includes(".."), {
        error: "must be a path inside the code asset, such as score.py",
      })
      .optional(),
    "environment-variables": z
      .string()
      .transform((value, context) => {
        const variables: Record<string, string> = {};
        for (const line of value.split("\n")) {
          if (line.trim() === "") continue;
          const match = /^\s*([A-Za-z_][A-Za-z0-9_]*)\s*=(.*)$/.exec(line);
          if (match?.[1] === undefined || match[2] === undefined) {
            context.addIssue({
              code: "custom",
              message: `must be one NAME=value per line; ${JSON.stringify(line.trim())} is not`,
            });
            return z.NEVER;
          }
          variables[match[1]] = match[2].trim();
        }
        return variables;
      })
      .optional(),
    "timeout-minutes": wholeNumber(1, 360, 30),
    "oidc-audience": z.string().default("api://AzureADTokenExchange"),
    "arm-endpoint": httpsUrl("Azure Resource Manager").default("https://management.azure.com"),
    "authority-host": httpsUrl("the Entra ID authority").default("https://login.microsoftonline.com"),
    "blob-endpoint": httpsUrl("the datastore's blob service", true).optional(),
  })
  .superRefine((value, context) => {
    // A scoring script lives in a code asset and runs in an environment: each is useless without the others.
    const code = value.code !== undefined;
    const script = value["scoring-script"] !== undefined;
    if (code !== script) {
      context.addIssue({
        code: "custom",
        path: [code ? "scoring-script" : "code"],
        message: code
          ? "is required with `code`: the script in the code asset that Azure ML runs (for example score.py)"
          : "is required with `scoring-script`: the registered code asset that holds the script",
      });
    }
    if (code && value.environment === undefined) {
      context.addIssue({
        code: "custom",
        path: ["environment"],
        message:
          "is required with `code` and `scoring-script`: a scoring script runs in a registered environment",
      });
    }
  });

export type DeployModelSettings = z.output<typeof schema>;

export function readDeployModelSettings(read: InputReader): DeployModelSettings {
  return parseInputs(schema, readInputs(DEPLOY_MODEL_INPUTS, read), "deploy-model");
}

/** An `environment` or `code` input as the ARM id a deployment takes. */
export function assetArmId(value: string, workspaceId: string, kind: "environments" | "codes"): string {
  const match = ASSET_ID.exec(value);
  if (match === null) return value;
  return `${workspaceId}/${kind}/${match[1]}/versions/${match[2]}`;
}
