// The route action's inputs, read once into one typed settings object. Every input is checked here, so a bad one fails
// the step before Azure or Cloudflare is asked anything, with a message that names it, says what is wrong and what
// is accepted. The Cloudflare token input is never echoed back: no check is attached to it, and it is masked before
// anything is parsed.
import { z } from "zod";
import {
  azureIdentityFields,
  checkCloudflareCredentialInputs,
  cloudflareFields,
  flag,
  requireInput,
  timeoutMinutesField,
  wholeNumber,
  workspaceFields,
} from "../common/cloudflare-inputs.ts";
import { type InputReader, parseInputs, readInputs } from "../common/inputs.ts";

export const ROUTE_INPUTS = [
  "config",
  "weights",
  "route",
  "version-percentage",
  "model-version",
  "cloudflare-account-id",
  "worker-name",
  "gateway-url",
  "cloudflare-api-url",
  "client-id",
  "tenant-id",
  "authority-host",
  "oidc-audience",
  "key-vault-url",
  "cloudflare-bootstrap-secret",
  "cloudflare-api-token",
  "subscription-id",
  "resource-group",
  "workspace",
  "endpoint",
  "arm-endpoint",
  "lint-mode",
  "restore-on-failure",
  "timeout-minutes",
] as const;

const DEPLOYMENT_NAME = /^[a-zA-Z][a-zA-Z0-9-]{2,31}$/;

/** `green=10,blue=90` (commas or new lines, spaces allowed) as deployment name → weight. */
export const weightsSchema = z.string().transform((value, context) => {
  const weights: Record<string, number> = {};
  const items = value
    .split(/[,\n]/)
    .map((item) => item.trim())
    .filter((item) => item !== "");
  for (const item of items) {
    const match = /^([^=\s]+)\s*=\s*(\d+(?:\.\d+)?)$/.exec(item);
    const name = match?.[1];
    const weight = Number(match?.[2]);
    if (name === undefined || !DEPLOYMENT_NAME.test(name) || !(weight >= 0 && weight <= 100)) {
      context.addIssue({
        code: "custom",
        message:
          `${JSON.stringify(item)} is not DEPLOYMENT=WEIGHT; expected Azure ML deployment names with weights from 0 ` +
          "to 100, comma-separated, such as green=10,blue=90",
      });
      return z.NEVER;
    }
    if (name in weights) {
      context.addIssue({ code: "custom", message: `names deployment ${name} twice; name each once` });
      return z.NEVER;
    }
    weights[name] = weight;
  }
  if (items.length === 0) {
    context.addIssue({
      code: "custom",
      message: "names no deployment; expected green=10,blue=90 or leave it unset",
    });
    return z.NEVER;
  }
  return weights;
});

const schema = z
  .object({
    config: z
      .string({
        error: "set it to the gateway config file (YAML) in the repository, such as gateway/production.yaml",
      })
      .refine((value) => !value.includes("\0"), { error: "must be a file path" }),
    weights: weightsSchema.optional(),
    route: z
      .string()
      .regex(/^[a-z][a-z0-9-]{0,62}$/, {
        error: "must be the name of a route in the config (lowercase letters, digits and '-')",
      })
      .optional(),
    "version-percentage": wholeNumber(1, 100, 100),
    "model-version": z
      .string()
      .max(200, { error: "must be at most 200 characters (it goes into the version's message)" })
      .optional(),
    ...cloudflareFields,
    ...azureIdentityFields,
    ...workspaceFields,
    "lint-mode": z
      .enum(["production", "local"], {
        error: "must be production (every URL https://) or local (http:// accepted to loopback hosts only)",
      })
      .default("production"),
    "restore-on-failure": flag(true),
    "timeout-minutes": timeoutMinutesField,
  })
  .superRefine((value, context) => {
    const require = (input: string, why: string) => requireInput(value, context, input, why);
    checkCloudflareCredentialInputs(value, context);
    // Endpoint keys are read only for secret bindings the live gateway lacks. `endpoint` asks for that; the workspace
    // inputs alone do not (a workflow may pass them to every aml-edge step alike).
    if (value.endpoint !== undefined) {
      const why =
        "with `endpoint`: together they name the Azure ML endpoint whose keys a new secret binding gets";
      for (const input of ["subscription-id", "resource-group", "workspace", "client-id", "tenant-id"])
        require(input, why);
    }
    if (value.route !== undefined && value.weights === undefined) {
      context.addIssue({
        code: "custom",
        path: ["route"],
        message: "is only used with `weights`: it names the route whose weights they set",
      });
    }
  });

export type RouteSettings = z.output<typeof schema>;

export function readRouteSettings(read: InputReader): RouteSettings {
  return parseInputs(schema, readInputs(ROUTE_INPUTS, read), "route");
}

/** Whether the settings name an Azure ML endpoint to read keys from. */
export function azureMlEndpoint(
  settings: RouteSettings,
): { subscriptionId: string; resourceGroup: string; workspace: string; endpoint: string } | undefined {
  const {
    "subscription-id": subscriptionId,
    "resource-group": resourceGroup,
    workspace,
    endpoint,
  } = settings;
  if (
    subscriptionId === undefined ||
    resourceGroup === undefined ||
    workspace === undefined ||
    endpoint === undefined
  ) {
    return undefined;
  }
  return { subscriptionId, resourceGroup, workspace, endpoint };
}
