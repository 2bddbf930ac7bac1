// The job's Cloudflare token, for every action that changes the gateway Worker (route, rotate-keys): minted from the
// Key Vault bootstrap token with the job's OIDC-rooted Azure credential and scoped to the gateway Worker, or the
// `cloudflare-api-token` fallback, verified against the step's deadline. Each minted token is written to the step's
// state the moment it exists, so the post step (cloudflare-post.ts) deletes it whatever happens after. Also the
// gateway Worker module the build embeds, which both actions upload.
import * as core from "@actions/core";
import type { TokenCredential } from "@azure/core-auth";
import { gitHubOidcCredential } from "../../azure/credential.ts";
import { type CloudflareApi, createCloudflareApi } from "../../cloudflare/api.ts";
import {
  type BootstrapSecret,
  mintGatewayCredential,
  readBootstrapToken,
  verifyGivenToken,
} from "../../cloudflare/credential.ts";
import { CloudflareApiError, CloudflareCredentialError } from "../../cloudflare/errors.ts";
import { type Clock, systemClock } from "../../cloudflare/time.ts";
import type { CloudflareSettings } from "./cloudflare-inputs.ts";
import { ConfigurationError } from "./errors.ts";
import type { InputReader } from "./inputs.ts";
import { actionsLogger, type Logger } from "./logger.ts";
import { jobLabel } from "./run.ts";

/** Set by an entry in the main step, so the same bundle knows it runs as the post step. */
export const IS_POST_STATE = "isPost";
/** What the post step needs to delete the job's minted tokens: ids and names, and where the bootstrap token is. */
export const CLEANUP_STATE = "cloudflare-cleanup";

declare global {
  /** The gateway Worker module (dist/gateway/worker.js), embedded by esbuild `define` into the built actions. */
  var AML_EDGE_GATEWAY_WORKER: string | undefined;
}

export interface CleanupState {
  tokens: { id: string; name: string }[];
  accountId: string;
  apiUrl: string;
  vaultUrl: string;
  secretName: string;
  clientId: string;
  tenantId: string;
  authorityHost: string;
  audience: string;
}

export interface AzureIdentity {
  clientId: string;
  tenantId: string;
  authorityHost: string;
  audience: string;
}

/** What reaching Cloudflare (and Azure, for Key Vault) takes; each action's dependencies extend it. */
export interface CloudflareDependencies {
  logger: Logger;
  clock: Clock;
  /** The workflow's variables: repository and run, for the token names. */
  env: Readonly<Record<string, string | undefined>>;
  setSecret(secret: string): void;
  saveState(name: string, value: string): void;
  /** The gateway Worker's module. The built action carries it; tests hand in a bundle of the sources. */
  gatewayModule(): Promise<string>;
  createAzureCredential(identity: AzureIdentity, logger: Logger): TokenCredential;
  readBootstrapToken(source: BootstrapSecret): Promise<string>;
  connectCloudflare(options: {
    apiUrl: string;
    accountId: string;
    token: string;
    tokenDescription: string;
  }): CloudflareApi;
}

export const defaultCloudflareDependencies = (): CloudflareDependencies => ({
  logger: actionsLogger,
  clock: systemClock,
  env: process.env,
  setSecret: (secret) => core.setSecret(secret),
  saveState: (name, value) => core.saveState(name, value),
  gatewayModule: async () => {
    const worker = globalThis.AML_EDGE_GATEWAY_WORKER;
    if (typeof worker !== "string" || worker === "") {
      throw new Error(
        "The gateway Worker is not part of this build: run the action from its bundle (dist/<action>/index.js, " +
          "built by `npm run build`), which carries it.",
      );
    }
    return worker;
  },
  createAzureCredential: (identity, logger) =>
    gitHubOidcCredential({
      tenantId: identity.tenantId,
      clientId: identity.clientId,
      audience: identity.audience,
      authorityHost: identity.authorityHost,
      logger,
    }),
  readBootstrapToken: (source) => readBootstrapToken(source, (secret) => core.setSecret(secret)),
  connectCloudflare: (options) => createCloudflareApi({ ...options, logger: actionsLogger }),
});

/** The fallback token input, masked before anything is parsed or reported, so no later message can show it. */
export function maskGivenToken(readInput: InputReader, setSecret: (secret: string) => void): void {
  const givenToken = readInput("cloudflare-api-token").trim();
  if (givenToken !== "") setSecret(givenToken);
}

/** Cloudflare's user-fixable errors are reported as what to fix, like any ConfigurationError. */
export function cloudflareReportable(error: unknown): unknown {
  if (
    error instanceof CloudflareCredentialError ||
    (error instanceof CloudflareApiError && error.userFixable)
  ) {
    return new ConfigurationError(error.message, { cause: error });
  }
  return error;
}

/**
 * The job's Azure credential, made on first use and kept: a step that never reaches Azure (the fallback token, no
 * endpoint) never asks GitHub for an OIDC token.
 */
export function lazyAzureCredential(
  settings: CloudflareSettings,
  deps: Pick<CloudflareDependencies, "createAzureCredential" | "logger">,
): () => TokenCredential {
  let credential: TokenCredential | undefined;
  return () => {
    const clientId = settings["client-id"];
    const tenantId = settings["tenant-id"];
    if (clientId === undefined || tenantId === undefined) {
      throw new Error("internal: an Azure credential asked for without client-id and tenant-id");
    }
    credential ??= deps.createAzureCredential(
      {
        clientId,
        tenantId,
        authorityHost: settings["authority-host"],
        audience: settings["oidc-audience"],
      },
      deps.logger,
    );
    return credential;
  };
}

export interface CredentialRequest {
  /** The action, first in the minted tokens' names: "route", "rotate-keys". */
  action: string;
  /** Epoch ms: the step's deadline; the token must outlive it. */
  deadline: number;
  azureCredential: () => TokenCredential;
}

/** The Cloudflare client this step works with: a minted, Worker-scoped token, or the verified fallback token. */
export async function cloudflareCredential(
  settings: CloudflareSettings,
  deps: CloudflareDependencies,
  request: CredentialRequest,
): Promise<{ api: CloudflareApi; description: string }> {
  const { logger, clock } = deps;
  const { deadline } = request;
  const accountId = settings["cloudflare-account-id"];
  const apiUrl = settings["cloudflare-api-url"];
  const givenToken = settings["cloudflare-api-token"];
  if (givenToken !== undefined) {
    const api = deps.connectCloudflare({
      apiUrl,
      accountId,
      token: givenToken,
      tokenDescription: "the `cloudflare-api-token` input",
    });
    const status = await verifyGivenToken(api, {
      what: "The `cloudflare-api-token` input",
      now: clock.now(),
      validUntil: deadline,
      validUntilWhat: `this step's deadline (timeout-minutes ${settings["timeout-minutes"]})`,
      fix:
        "issue a new token (Workers Scripts Write on the gateway Worker) and store it in the secret, or drop " +
        "`cloudflare-api-token` and let the job mint its own from Key Vault (`key-vault-url`, recommended).",
    });
    logger.info(
      "Using the `cloudflare-api-token` input (a token managed outside the job: the weaker option; " +
        `expires ${status.expires_on ?? "never"}).`,
    );
    return {
      api,
      description: `the \`cloudflare-api-token\` input (expires ${status.expires_on ?? "never"})`,
    };
  }

  const vaultUrl = settings["key-vault-url"];
  const clientId = settings["client-id"];
  const tenantId = settings["tenant-id"];
  if (vaultUrl === undefined || clientId === undefined || tenantId === undefined) {
    throw new Error("internal: the Key Vault path without its inputs");
  }
  const secretName = settings["cloudflare-bootstrap-secret"];
  const bootstrapToken = await deps.readBootstrapToken({
    vaultUrl,
    secretName,
    credential: request.azureCredential(),
  });
  deps.setSecret(bootstrapToken);
  const bootstrapWhat = `the bootstrap token (Key Vault secret ${secretName})`;
  const bootstrap = deps.connectCloudflare({
    apiUrl,
    accountId,
    token: bootstrapToken,
    tokenDescription: bootstrapWhat,
  });

  const cleanup: CleanupState = {
    tokens: [],
    accountId,
    apiUrl,
    vaultUrl,
    secretName,
    clientId,
    tenantId,
    authorityHost: settings["authority-host"],
    audience: settings["oidc-audience"],
  };
  const save = () => deps.saveState(CLEANUP_STATE, JSON.stringify(cleanup));
  const minted = await mintGatewayCredential({
    bootstrap,
    bootstrapWhat,
    connect: (token, tokenDescription) =>
      deps.connectCloudflare({ apiUrl, accountId, token, tokenDescription }),
    script: settings["worker-name"],
    action: request.action,
    deadline,
    jobLabel: jobLabel(deps.env),
    clock,
    logger,
    setSecret: (secret) => deps.setSecret(secret),
    onMinted: (token) => {
      cleanup.tokens.push(token);
      save();
    },
    onDeleted: (id) => {
      cleanup.tokens = cleanup.tokens.filter((token) => token.id !== id);
      save();
    },
  });
  return {
    api: minted.api,
    description:
      `minted for this job: "Workers Scripts Write" on ` +
      `${minted.scope === "worker" ? `Worker ${settings["worker-name"]} only` : "the whole account (to create the Worker)"}` +
      `, expires ${minted.expiresOn}, deleted by the post step`,
  };
}
