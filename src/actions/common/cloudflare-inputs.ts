// The inputs every action that changes the gateway Worker reads alike (route, rotate-keys): where the Worker is
// (Cloudflare account, Worker name, edge URL), how the job gets its Cloudflare token (minted from the Key Vault
// bootstrap token with its OIDC-rooted Azure identity, or the fallback token), the Azure identity and the Azure ML
// workspace, and the step's deadline. One definition, so the same input is checked and explained the same way in
// each action. Fields that one action needs and another does not are optional here; each action's schema says when
// it requires them (`requireInput`), with why.
import { z } from "zod";
import { CLOUDFLARE_API_URL } from "../../cloudflare/api.ts";

/** The minted token lives at most 30 minutes, and a little past the deadline: the deadline must fit inside. */
export const MAX_TIMEOUT_MINUTES = 25;
export const DEFAULT_WORKER_NAME = "aml-edge-gateway";
export const DEFAULT_BOOTSTRAP_SECRET = "cloudflare-bootstrap-token";

const GUID = /^[0-9a-z]{8}-[0-9a-z]{4}-[0-9a-z]{4}-[0-9a-z]{4}-[0-9a-z]{12}$/i;

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

export const wholeNumber = (min: number, max: number, fallback: number, why = "") =>
  z
    .string()
    .regex(/^\d+$/, { error: `must be a whole number from ${min} to ${max}${why}` })
    .transform(Number)
    .refine((n) => n >= min && n <= max, { error: `must be a whole number from ${min} to ${max}${why}` })
    .default(fallback);

export const flag = (fallback: boolean) =>
  z
    .enum(["true", "false"], { error: "must be true or false" })
    .transform((value) => value === "true")
    .default(fallback);

/** The gateway Worker and the job's Cloudflare token. */
export const cloudflareFields = {
  "cloudflare-account-id": z
    .string({
      error: "set it to the Cloudflare account ID (32 hexadecimal digits, on the account's overview page)",
    })
    .regex(/^[0-9a-f]{32}$/, {
      error: "must be a Cloudflare account ID: 32 lowercase hexadecimal digits (the account's overview page)",
    }),
  "worker-name": z
    .string()
    .regex(/^[a-z0-9](?:[a-z0-9_-]{0,61}[a-z0-9])?$/, {
      error:
        "must be a Worker name: up to 63 lowercase letters, digits, '-' or '_', not starting or ending with '-' or '_'",
    })
    .default(DEFAULT_WORKER_NAME),
  "gateway-url": httpsUrl("the gateway Worker at the edge (its route, custom domain or workers.dev address)"),
  "cloudflare-api-url": httpsUrl("the Cloudflare API").default(CLOUDFLARE_API_URL),
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
};

/** The job's Azure identity: an Entra app or managed identity that trusts the job's GitHub OIDC token. */
export const azureIdentityFields = {
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
};

/** One Azure ML online endpoint. */
export const workspaceFields = {
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
};

export const timeoutMinutesField = wholeNumber(
  1,
  MAX_TIMEOUT_MINUTES,
  10,
  " (the job's minted Cloudflare token lives at most 30 minutes)",
);

/** A field optional here that an action always needs: unset, it says what to set it to; set, it is checked as here. */
export function required<Inner extends z.ZodType<unknown, string>>(
  field: z.ZodOptional<Inner>,
  what: string,
) {
  return z.string({ error: `set it to ${what}` }).pipe(field.unwrap());
}

type Values = Record<string, unknown>;

/** Reports `input` as required (for `why`) when it is unset. */
export function requireInput(value: Values, context: z.RefinementCtx, input: string, why: string): void {
  if (value[input] === undefined) {
    context.addIssue({ code: "custom", path: [input], message: `is required ${why}` });
  }
}

/** The job's Cloudflare token comes from Key Vault (with the Azure identity) or from the fallback input, not both. */
export function checkCloudflareCredentialInputs(value: Values, context: z.RefinementCtx): void {
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
    for (const input of ["key-vault-url", "client-id", "tenant-id"]) requireInput(value, context, input, why);
  }
}

/** The parsed inputs the Cloudflare credential and the Azure identity are made from. */
export interface CloudflareSettings {
  "cloudflare-account-id": string;
  "worker-name": string;
  "gateway-url": string;
  "cloudflare-api-url": string;
  "key-vault-url"?: string | undefined;
  "cloudflare-bootstrap-secret": string;
  "cloudflare-api-token"?: string | undefined;
  "client-id"?: string | undefined;
  "tenant-id"?: string | undefined;
  "authority-host": string;
  "oidc-audience": string;
  "timeout-minutes": number;
}
