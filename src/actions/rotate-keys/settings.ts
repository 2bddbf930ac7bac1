// The rotate-keys action's inputs, read once into one typed settings object. Every input is checked here, so a bad one
// fails the step before Azure or Cloudflare is asked anything, with a message that names it, says what is wrong and
// what is accepted. The Cloudflare token input is never echoed back: no check is attached to it, and it is masked
// before anything is parsed.
import { z } from "zod";
import {
  azureIdentityFields,
  checkCloudflareCredentialInputs,
  cloudflareFields,
  flag,
  required,
  timeoutMinutesField,
  wholeNumber,
  workspaceFields,
} from "../common/cloudflare-inputs.ts";
import { type InputReader, parseInputs, readInputs } from "../common/inputs.ts";

export const ROTATE_KEYS_INPUTS = [
  "client-id",
  "tenant-id",
  "authority-host",
  "oidc-audience",
  "subscription-id",
  "resource-group",
  "workspace",
  "endpoint",
  "arm-endpoint",
  "cloudflare-account-id",
  "worker-name",
  "gateway-url",
  "cloudflare-api-url",
  "key-vault-url",
  "cloudflare-bootstrap-secret",
  "cloudflare-api-token",
  "gateway-audience",
  "token-refresh-minutes",
  "force-token-refresh",
  "timeout-minutes",
] as const;

/**
 * An aml_token is refreshed when its refresh time is this close. A scheduled run must come at least this often, or
 * the token passes its refresh time between two runs; hourly schedules fit the default.
 */
export const DEFAULT_TOKEN_REFRESH_MINUTES = 60;

const schema = z
  .object({
    ...azureIdentityFields,
    ...workspaceFields,
    ...cloudflareFields,
    // Azure is always asked: the keys are regenerated there, whichever way the Cloudflare token comes.
    "client-id": required(
      azureIdentityFields["client-id"],
      "the client ID of the Entra app or managed identity that may regenerate the endpoint's keys",
    ),
    "tenant-id": required(azureIdentityFields["tenant-id"], "the Entra tenant ID of that app"),
    "subscription-id": required(
      workspaceFields["subscription-id"],
      "the Azure subscription ID of the workspace",
    ),
    "resource-group": required(
      workspaceFields["resource-group"],
      "the resource group of the Azure ML workspace",
    ),
    workspace: required(workspaceFields.workspace, "the Azure ML workspace name"),
    endpoint: required(workspaceFields.endpoint, "the online endpoint whose credentials are rotated"),
    "gateway-audience": z
      .string({
        error:
          "set it to the audience the gateway's GitHub issuer accepts (an entry of its `audiences`, such as " +
          "api://aml-edge-gateway): the job shows its GitHub OIDC token for it to the gateway's status route",
      })
      .regex(/^[\x21-\x7e]{1,256}$/, {
        error:
          "must be an audience: 1-256 printable characters without spaces, such as api://aml-edge-gateway",
      }),
    "token-refresh-minutes": wholeNumber(
      0,
      10_080,
      DEFAULT_TOKEN_REFRESH_MINUTES,
      " (aml_token endpoints: refresh when the token's refresh time is at most this many minutes away)",
    ),
    "force-token-refresh": flag(false),
    "timeout-minutes": timeoutMinutesField,
  })
  // The job's Cloudflare token: from Key Vault (with the Azure identity), or the fallback input, not both.
  .superRefine(checkCloudflareCredentialInputs);

export type RotateKeysSettings = z.output<typeof schema>;

export function readRotateKeysSettings(read: InputReader): RotateKeysSettings {
  return parseInputs(schema, readInputs(ROTATE_KEYS_INPUTS, read), "rotate-keys");
}
