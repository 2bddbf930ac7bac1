// The post step (runs: post-if: always()) of every action that mints a Cloudflare token (route, rotate-keys): deletes
// the tokens the main step minted, whether the main step succeeded, failed or was cancelled after minting. It needs
// the bootstrap token to delete them, so it reads it again from Key Vault with the job's OIDC-rooted Azure
// credential; what it needs to find it is in the step's state, written by the main step the moment each token
// existed. A cleanup that cannot finish warns and names what is left (each token expires on its own within 30
// minutes); it never fails the job.
import * as core from "@actions/core";
import type { CloudflareApi } from "../../cloudflare/api.ts";
import { deleteMintedTokens } from "../../cloudflare/credential.ts";
import {
  CLEANUP_STATE,
  type CleanupState,
  type CloudflareDependencies,
  defaultCloudflareDependencies,
} from "./cloudflare.ts";
import { errorMessage } from "./errors.ts";
import type { Logger } from "./logger.ts";

export interface PostDependencies
  extends Pick<
    CloudflareDependencies,
    "logger" | "createAzureCredential" | "readBootstrapToken" | "connectCloudflare"
  > {
  getState(name: string): string;
  setSecret(secret: string): void;
}

export const defaultPostDependencies = (): PostDependencies => ({
  ...defaultCloudflareDependencies(),
  getState: (name) => core.getState(name),
  setSecret: (secret) => core.setSecret(secret),
});

/** Never throws and never fails the step. */
export async function post(overrides: Partial<PostDependencies> = {}): Promise<void> {
  const deps = { ...defaultPostDependencies(), ...overrides };
  const { logger } = deps;
  let state: CleanupState | undefined;
  try {
    state = parseCleanupState(deps.getState(CLEANUP_STATE));
    if (state === undefined || state.tokens.length === 0) {
      logger.debug("No minted Cloudflare token to delete.");
      return;
    }
    const bootstrap = await bootstrapClient(state, deps);
    const result = await deleteMintedTokens(bootstrap, state.tokens, logger);
    if (result.failed.length > 0) {
      logger.warning(
        `Could not delete ${result.failed.length} of the job's Cloudflare tokens: ` +
          `${result.failed.map((failure) => `${nameOf(state, failure.id)} (${failure.reason})`).join("; ")}. ` +
          "They expire on their own within 30 minutes of being minted; delete them sooner in the dashboard " +
          "(Manage Account → API Tokens) if this job's logs may have leaked.",
      );
    }
  } catch (error) {
    warnLeftover(logger, state, errorMessage(error));
  }
}

async function bootstrapClient(state: CleanupState, deps: PostDependencies): Promise<CloudflareApi> {
  const credential = deps.createAzureCredential(
    {
      clientId: state.clientId,
      tenantId: state.tenantId,
      authorityHost: state.authorityHost,
      audience: state.audience,
    },
    deps.logger,
  );
  const token = await deps.readBootstrapToken({
    vaultUrl: state.vaultUrl,
    secretName: state.secretName,
    credential,
  });
  deps.setSecret(token);
  return deps.connectCloudflare({
    apiUrl: state.apiUrl,
    accountId: state.accountId,
    token,
    tokenDescription: `the bootstrap token (Key Vault secret ${state.secretName})`,
  });
}

function parseCleanupState(text: string): CleanupState | undefined {
  if (text.trim() === "") return undefined;
  const value = JSON.parse(text) as Partial<CleanupState>;
  if (!Array.isArray(value.tokens)) throw new Error("the main step's cleanup state holds no token list");
  return value as CleanupState;
}

function nameOf(state: CleanupState | undefined, id: string): string {
  const token = state?.tokens.find((candidate) => candidate.id === id);
  return token === undefined ? "a token" : JSON.stringify(token.name);
}

function warnLeftover(logger: Logger, state: CleanupState | undefined, reason: string): void {
  const names = state?.tokens.map((token) => JSON.stringify(token.name)).join(", ");
  logger.warning(
    `Could not delete the job's Cloudflare token${names === undefined || names === "" ? "s" : `s ${names}`}: ${reason}. ` +
      "They expire on their own within 30 minutes of being minted; delete them sooner in the dashboard " +
      "(Manage Account → API Tokens) if this job's logs may have leaked.",
  );
}
