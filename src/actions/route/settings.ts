// The route action's inputs, read once into one typed settings object. Every input is checked here, so a bad one fails
// the step before Azure or Cloudflare is asked anything, with a message that names it, says what is wrong and what
// is accepted. The Cloudflare token input is never echoed back: no check is attached to it, and it is masked before
// anything is parsed.
import { z } from "zod";
import { CLOUDFLARE_API_URL } from "../../cloudflare/api.ts";
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

/** The minted token lives at most 30 minutes, and a little past the deadline: the deadline must fit inside. */
export const MAX_ROUTE_TIMEOUT_MINUTES = 25;
export const DEFAULT_WORKER_NAME = "aml-edge-gateway";
export const DEFAULT_BOOTSTRAP_SECRET = "cloudflare-bootstrap-token";

const GUID = /^[0-9a-z]{8}-[0-9a-z]{4}-[0-9a-z]{4}-[0-9a-z]{4}-[0-9a-z]{12}$/i;
const DEPLOYMENT_NAME = /^[a-zA-Z][a-zA-Z0-9-]{2,31}$/;

const guid = (what: string) =>
  z
    .string()
    .regex(GUID, { error: `must be the ${what}, a GUID such as 00000000-0000-0000-0000-000000000000` });

const httpsUrl = (what: string) =>
  z.string().refine(
    (value) => {
      try {
        return new URL(value).protocol === "https:";
      } catch {
        return false;
      }
    },
    { error: `must be an https URL of ${what}` },
  );

const wholeNumber = (min: number, max: number, fallback: number, why = "") =>
  z
    .string()
    .regex(/^\d+$/, { error: `must be a whole number from ${min} to ${max}${why}` })
    .transform(Number)
    .refine((n) => n >= min && n <= max, { error: `must be a whole number from ${min} to ${max}${why}` })
    .default(fallback);

const flag = (fallback: boolean) =>
  z
    .enum(["true", "false"], { error: "must be true or false" })
    .transform((value) => value === "true")
    .default(fallback);

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
    "cloudflare-account-id": z
      .string({
        error: "set it to the Cloudflare account ID (32 hexadecimal digits, on the account's overview page)",
      })
      .regex(/^[0-9a-f]{32}$/, {
        error:
          "must be a Cloudflare account ID: 32 lowercase hexadecimal digits (the account's overview page)",
      }),
    "worker-name": z
      .string()
      .regex(/^[a-z0-9](?:[a-z0-9_-]{0,61}[a-z0-9])?$/, {
        error:
          "must be a Worker name: up to 63 lowercase letters, digits, '-' or '_', not starting or ending with '-' or '_'",
      })
      .default(DEFAULT_WORKER_NAME),
    "gateway-url": httpsUrl(
      "the gateway Worker at the edge (its route, custom domain or workers.dev address)",
    ),
    "cloudflare-api-url": httpsUrl("the Cloudflare API").default(CLOUDFLARE_API_URL),
    "client-id": guid(
      "client ID of the Entra app or managed identity with the federated credential",
    ).optional(),
    "tenant-id": z
      .string()
      .regex(
        /^([0-9a-z]{8}-[0-9a-z]{4}-[0-9a-z]{4}-[0-9a-z]{4}-[0-9a-z]{12}|[a-z0-9][a-z0-9.-]*\.[a-z]{2,})$/i,
        {
          error: "must be the Entra tenant ID (a GUID) or its domain (contoso.onmicrosoft.com)",
        },
      )
      .optional(),
    "authority-host": httpsUrl("the Entra ID authority").default("https://login.microsoftonline.com"),
    "oidc-audience": z.string().default("api://AzureADTokenExchange"),
    "key-vault-url": httpsUrl(
      "the Key Vault holding the Cloudflare bootstrap token (https://NAME.vault.azure.net)",
    ).optional(),
    "cloudflare-bootstrap-secret": z
      .string()
      .regex(/^[0-9a-zA-Z-]{1,127}$/, {
        error: "must be a Key Vault secret name: 1-127 letters, digits or '-'",
      })
      .default(DEFAULT_BOOTSTRAP_SECRET),
    // No check here: a check's message would echo the value.
    "cloudflare-api-token": z.string().optional(),
    "subscription-id": guid("Azure subscription ID of the workspace").optional(),
    "resource-group": z
      .string()
      .regex(/^[-\w.()]{0,89}[-\w()]$/, {
        error:
          "must be a resource group name: up to 90 letters, digits, '-', '_', '.', '(' or ')', not ending in '.'",
      })
      .optional(),
    workspace: z
      .string()
      .regex(/^[a-zA-Z0-9][a-zA-Z0-9_-]{2,32}$/, {
        error:
          "must be an Azure ML workspace name: 3-33 letters, digits, '-' or '_', starting with a letter or digit",
      })
      .optional(),
    endpoint: z
      .string()
      .regex(/^[a-zA-Z][a-zA-Z0-9-]{1,30}[a-zA-Z0-9]$/, {
        error:
          "must be an online endpoint name: 3-32 letters, digits or '-', starting with a letter and not ending in '-'",
      })
      .optional(),
    "arm-endpoint": httpsUrl("Azure Resource Manager").default("https://management.azure.com"),
    "lint-mode": z
      .enum(["production", "local"], {
        error: "must be production (every URL https://) or local (http:// accepted to loopback hosts only)",
      })
      .default("production"),
    "restore-on-failure": flag(true),
    "timeout-minutes": wholeNumber(
      1,
      MAX_ROUTE_TIMEOUT_MINUTES,
      10,
      " (the job's minted Cloudflare token lives at most 30 minutes)",
    ),
  })
  .superRefine((value, context) => {
    const require = (input: string, why: string) => {
      if (value[input as keyof typeof value] === undefined) {
        context.addIssue({ code: "custom", path: [input], message: `is required ${why}` });
      }
    };
    const token = value["cloudflare-api-token"] !== undefined;
    if (token && value["key-vault-url"] !== undefined) {
      context.addIssue({
        code: "custom",
        path: ["key-vault-url"],
        message:
          "and `cloudflare-api-token` are both set: set `key-vault-url` (the job mints its own short-lived token, " +
          "recommended) or `cloudflare-api-token` (a token you manage), not both",
      });
    }
    if (!token) {
      const why =
        "to mint the job's Cloudflare token from the bootstrap token in Key Vault (or set `cloudflare-api-token`, " +
        "the weaker fallback)";
      require("key-vault-url", why);
      require("client-id", why);
      require("tenant-id", why);
    }
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
