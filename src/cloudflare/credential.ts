// The Cloudflare credential of a job. Cloudflare has no OIDC federation, so the job's GitHub OIDC token reaches it
// through Azure: the Azure credential (from the OIDC token) reads a bootstrap token from Key Vault that can only mint
// tokens, and the job mints its own, for the gateway Worker alone, living no longer than the step needs (at most 30
// minutes), and deletes it in the post step. Finding the Worker's tag (what a per-Worker policy names) takes a read,
// done with a read-only token minted for minutes and deleted at once; only when the Worker does not exist yet is an
// account-wide write token minted, because creating a Worker needs one. A plain token input is the weaker fallback.
// Every token is verified before use and refused when disabled, not yet valid, expired or expiring before the step's
// deadline. Token values are masked the moment they exist and never logged; ids are not logged either (names are).
import type { TokenCredential } from "@azure/core-auth";
import { SecretClient } from "@azure/keyvault-secrets";
import { isLoopbackHostname } from "../config/hosts.ts";
import type { CloudflareApi, MintedToken, PermissionGroup, TokenResources, TokenStatus } from "./api.ts";
import { CF_CODES, CloudflareApiError, CloudflareCredentialError } from "./errors.ts";
import { type Clock, formatSpan, rfc3339 } from "./time.ts";

export const PERMISSIONS = {
  scriptsWrite: "Workers Scripts Write",
  scriptsRead: "Workers Scripts Read",
  tokensWrite: "API Tokens Write",
} as const;

/** The longest a minted write token lives (DESIGN.md 5). */
export const MAX_MINTED_LIFETIME_MS = 30 * 60_000;
/** The read-only token that finds the Worker's tag is deleted at once; this bounds it if the delete fails. */
export const READ_TOKEN_LIFETIME_MS = 5 * 60_000;
/**
 * A minted token outlives the step's deadline by this much, so that a restore after a failed wait still
 * authenticates; the post step deletes it sooner.
 */
export const DEADLINE_MARGIN_MS = 5 * 60_000;
/** Cloudflare's limit on token names is 120 characters. */
const MAX_TOKEN_NAME = 120;

export interface CredentialLogger {
  info(message: string): void;
  warning(message: string): void;
  debug(message: string): void;
}

// ---- verification

export interface TokenCheck {
  /** Names the token in messages: "The `cloudflare-api-token` input". */
  what: string;
  now: number;
  /** Epoch ms the token must stay valid until. */
  validUntil: number;
  /** What validUntil is, in messages: "this step's deadline (timeout-minutes 10)". */
  validUntilWhat: string;
  /** What to do about a token that cannot be used. */
  fix: string;
}

/** Throws a CloudflareCredentialError saying which problem the token has and since or until when. */
export function checkTokenStatus(status: TokenStatus, check: TokenCheck): void {
  const at = (value: string | undefined) => (value === undefined ? Number.NaN : Date.parse(value));
  const expiresAt = at(status.expires_on);
  const notBefore = at(status.not_before);
  const { what, now, fix } = check;
  if (status.status === "disabled") {
    throw new CloudflareCredentialError(`${what} is disabled on Cloudflare: ${fix}`);
  }
  if (status.status === "expired" || (!Number.isNaN(expiresAt) && expiresAt <= now)) {
    const when = Number.isNaN(expiresAt)
      ? ""
      : ` at ${rfc3339(expiresAt)} (${formatSpan(now - expiresAt)} ago)`;
    throw new CloudflareCredentialError(`${what} expired${when}: ${fix}`);
  }
  if (!Number.isNaN(notBefore) && notBefore > now) {
    throw new CloudflareCredentialError(
      `${what} is not valid yet: Cloudflare accepts it from ${rfc3339(notBefore)} (in ${formatSpan(notBefore - now)}). ` +
        `Use a token that is valid now, or run the step after that time. ${fix}`,
    );
  }
  if (status.status !== "active") {
    throw new CloudflareCredentialError(
      `${what} has status ${JSON.stringify(status.status)}, not active: ${fix}`,
    );
  }
  if (!Number.isNaN(expiresAt) && expiresAt < check.validUntil) {
    throw new CloudflareCredentialError(
      `${what} expires at ${rfc3339(expiresAt)} (in ${formatSpan(expiresAt - now)}), before ` +
        `${check.validUntilWhat} at ${rfc3339(check.validUntil)}: it would stop working part way. ${fix}`,
    );
  }
}

/**
 * Verifies a token that may be an account token or a user token: the account endpoint first, then the user one,
 * since each answers 401 for the other kind. Then checks it as checkTokenStatus does.
 */
export async function verifyGivenToken(api: CloudflareApi, check: TokenCheck): Promise<TokenStatus> {
  let status: TokenStatus;
  try {
    status = await api.verifyToken("account");
  } catch (error) {
    if (!isInvalidToken(error)) throw error;
    try {
      status = await api.verifyToken("user");
    } catch (userError) {
      if (!isInvalidToken(userError)) throw userError;
      throw new CloudflareCredentialError(
        `${check.what} is not a token Cloudflare knows, as an account token of account ${api.accountId} or as a ` +
          `user token (it may have been deleted, or mistyped). ${check.fix}`,
        { cause: userError },
      );
    }
  }
  checkTokenStatus(status, check);
  return status;
}

function isInvalidToken(error: unknown): boolean {
  return error instanceof CloudflareApiError && (error.status === 401 || error.has(CF_CODES.invalidToken));
}

// ---- the bootstrap token in Key Vault

export interface BootstrapSecret {
  vaultUrl: string;
  secretName: string;
  credential: TokenCredential;
}

/** Reads the bootstrap token from Key Vault with the job's Azure credential, masked at once. */
export async function readBootstrapToken(
  source: BootstrapSecret,
  setSecret: (secret: string) => void,
): Promise<string> {
  const client = new SecretClient(source.vaultUrl, source.credential, {
    // The SDK refuses a challenge whose resource is not the vault's own domain (*.vault.azure.net); a vault on
    // loopback (the local sandbox) has no such domain. Real vaults keep the check.
    ...(isLoopbackHostname(new URL(source.vaultUrl).hostname)
      ? { disableChallengeResourceVerification: true }
      : {}),
  });
  let value: string | undefined;
  try {
    value = (await client.getSecret(source.secretName)).value;
  } catch (error) {
    const status = (error as { statusCode?: unknown }).statusCode;
    if (status === 404) {
      throw new CloudflareCredentialError(
        `Key Vault ${source.vaultUrl} has no secret ${JSON.stringify(source.secretName)}: store the Cloudflare ` +
          'bootstrap token there (an account API token holding only "API Tokens Write"), or set ' +
          "`cloudflare-bootstrap-secret` to the secret's name.",
        { cause: error },
      );
    }
    if (status === 403) {
      throw new CloudflareCredentialError(
        `The job's Azure identity may not read secret ${JSON.stringify(source.secretName)} in Key Vault ` +
          `${source.vaultUrl}: give it the "Key Vault Secrets User" role on the vault (or a "get" secret access ` +
          "policy on a vault that uses access policies).",
        { cause: error },
      );
    }
    // No HTTP status: the job's Azure credential failed before Key Vault was asked, and its error already says what
    // to fix (the federated credential, the workflow's permissions); it is passed on as it is.
    if (typeof status !== "number") throw error;
    throw new Error(
      `Could not read the Cloudflare bootstrap token from Key Vault ${source.vaultUrl} (secret ` +
        `${JSON.stringify(source.secretName)}): ${error instanceof Error ? error.message : String(error)}`,
      { cause: error },
    );
  }
  if (value === undefined || value.trim() === "") {
    throw new CloudflareCredentialError(
      `Key Vault secret ${JSON.stringify(source.secretName)} in ${source.vaultUrl} is empty: store the Cloudflare ` +
        "bootstrap token in it.",
    );
  }
  const token = value.trim();
  setSecret(token);
  return token;
}

// ---- minting the job's token

export interface MintOptions {
  /** A client holding the bootstrap token. */
  bootstrap: CloudflareApi;
  /** Where the bootstrap token came from, for messages: "the bootstrap token (Key Vault secret cloudflare-bootstrap-token)". */
  bootstrapWhat: string;
  /** A client for a minted token. */
  connect(token: string, tokenDescription: string): CloudflareApi;
  /** The gateway Worker. */
  script: string;
  /** The action minting, first in the token names ("route" → "aml-edge route octo/repo run 42.1"). */
  action: string;
  /** Epoch ms: the step's deadline. The minted token lives until it plus DEADLINE_MARGIN_MS, 30 minutes at most. */
  deadline: number;
  /** Names minted tokens after the job, so a leftover one says where it came from: "octo/repo run 42.1". */
  jobLabel: string;
  clock: Clock;
  logger: CredentialLogger;
  setSecret(secret: string): void;
  /** Called with each token the moment it exists, before anything else can fail: the post step deletes it. */
  onMinted(token: { id: string; name: string }): void;
  /** Called when a token was deleted during the step, so the post step does not try again. */
  onDeleted(id: string): void;
}

export interface GatewayCredential {
  /** A client holding the minted write token. */
  api: CloudflareApi;
  tokenId: string;
  tokenName: string;
  /** `worker`: Workers Scripts Write on the gateway Worker only; `account`: account-wide, to create it. */
  scope: "worker" | "account";
  /** Whether the Worker existed when the token was minted. */
  workerExists: boolean;
  expiresOn: string;
}

/**
 * Verifies the bootstrap token, finds the gateway Worker with a short-lived read token (deleted at once), and mints
 * the write token for this job: scoped to that Worker, or account-wide only when the Worker must be created.
 */
export async function mintGatewayCredential(options: MintOptions): Promise<GatewayCredential> {
  const { bootstrap, clock, logger, script } = options;
  const now = clock.now();
  await verifyGivenToken(bootstrap, {
    what: capitalize(options.bootstrapWhat),
    now,
    validUntil: options.deadline,
    validUntilWhat: "this step's deadline (timeout-minutes)",
    fix: 'store an active account API token holding "API Tokens Write" there.',
  });

  const groups = await mintingCall(options, () => bootstrap.permissionGroups(), "list permission groups");
  const read = permissionGroup(groups, PERMISSIONS.scriptsRead, bootstrap.accountId);
  const write = permissionGroup(groups, PERMISSIONS.scriptsWrite, bootstrap.accountId);
  const account = `com.cloudflare.api.account.${bootstrap.accountId}`;

  const worker = await findWorker(options, read, account);

  const expiresAt = Math.min(now + MAX_MINTED_LIFETIME_MS, options.deadline + DEADLINE_MARGIN_MS);
  const scope = worker === undefined ? "account" : "worker";
  if (worker === undefined) {
    logger.info(
      `Worker ${script} does not exist yet on account ${bootstrap.accountId}: minting a token with "Workers ` +
        'Scripts Write" on the whole account, which creating it needs (for this step only).',
    );
  }
  const resources: TokenResources =
    worker === undefined
      ? { [account]: "*" }
      : { [account]: { [`com.cloudflare.edge.worker.script.${worker.tag}`]: "*" } };
  const minted = await mint(
    options,
    {
      name: tokenName(options.action, options.jobLabel),
      policies: [{ effect: "allow", permission_groups: [{ id: write.id }], resources }],
      expires_on: rfc3339(roundUpToSecond(expiresAt)),
    },
    worker === undefined
      ? `"${PERMISSIONS.scriptsWrite}" on the whole account ${bootstrap.accountId} (Worker ${script} does not ` +
          "exist yet, and creating it needs that)"
      : `"${PERMISSIONS.scriptsWrite}" on Worker ${script}`,
  );
  logger.info(
    `Minted the job's Cloudflare token ${JSON.stringify(minted.name)}: "${PERMISSIONS.scriptsWrite}" on ` +
      `${worker === undefined ? `the whole account (to create Worker ${script})` : `Worker ${script} only`}, ` +
      `expiring ${rfc3339(roundUpToSecond(expiresAt))}; the post step deletes it.`,
  );
  return {
    api: options.connect(minted.value, "the job's Cloudflare token (minted from the bootstrap token)"),
    tokenId: minted.id,
    tokenName: minted.name,
    scope,
    workerExists: worker !== undefined,
    expiresOn: minted.expires_on ?? rfc3339(roundUpToSecond(expiresAt)),
  };
}

/** Lists the account's Workers with a read-only token that lives minutes and is deleted as soon as the list is in. */
async function findWorker(
  options: MintOptions,
  read: PermissionGroup,
  account: string,
): Promise<{ id: string; tag: string } | undefined> {
  const { bootstrap, clock, logger, script } = options;
  const minted = await mint(
    options,
    {
      name: tokenName(`${options.action} read`, options.jobLabel),
      policies: [{ effect: "allow", permission_groups: [{ id: read.id }], resources: { [account]: "*" } }],
      expires_on: rfc3339(roundUpToSecond(clock.now() + READ_TOKEN_LIFETIME_MS)),
    },
    `"${PERMISSIONS.scriptsRead}" on the account (to find Worker ${script}'s tag)`,
  );
  try {
    const reader = options.connect(minted.value, "the job's read-only Cloudflare token");
    const scripts = await reader.listScripts();
    return scripts.find((candidate) => candidate.id === script);
  } finally {
    try {
      await bootstrap.deleteToken(minted.id, minted.name);
      options.onDeleted(minted.id);
    } catch (error) {
      // Not fatal: it expires within minutes, and the post step tries again.
      logger.warning(
        `Could not delete the read-only token ${JSON.stringify(minted.name)} at once (${messageOf(error)}); the ` +
          "post step tries again, and it expires within minutes anyway.",
      );
    }
  }
}

async function mint(
  options: MintOptions,
  request: Parameters<CloudflareApi["createToken"]>[0],
  grant: string,
): Promise<MintedToken> {
  const minted = await mintingCall(options, () => options.bootstrap.createToken(request), `mint ${grant}`);
  // Masked before anything can print it, and recorded before anything can fail, so the post step deletes it.
  options.setSecret(minted.value);
  options.onMinted({ id: minted.id, name: minted.name });
  return minted;
}

/** A call made with the bootstrap token; a refusal says the bootstrap token lacks what minting needs. */
async function mintingCall<T>(options: MintOptions, call: () => Promise<T>, purpose: string): Promise<T> {
  try {
    return await call();
  } catch (error) {
    if (
      error instanceof CloudflareApiError &&
      (error.status === 403 || error.has(CF_CODES.authenticationError))
    ) {
      throw new CloudflareCredentialError(
        `Cloudflare refused to let ${options.bootstrapWhat} ${purpose}: the bootstrap token needs ` +
          `"${PERMISSIONS.tokensWrite}" on account ${options.bootstrap.accountId} (dashboard: Manage Account → ` +
          `API Tokens → the token → "API Tokens" Edit). Cloudflare said: ${error.errors.map((e) => `${e.code} ${e.message}`).join("; ") || `HTTP ${error.status}`}`,
        { cause: error },
      );
    }
    throw error;
  }
}

function permissionGroup(groups: PermissionGroup[], name: string, accountId: string): PermissionGroup {
  const group = groups.find((candidate) => candidate.name === name);
  if (group === undefined) {
    throw new CloudflareCredentialError(
      `Account ${accountId} offers no permission group named "${name}" to mint a token with; check ` +
        "`cloudflare-account-id` (it must be the account that owns the gateway Worker).",
    );
  }
  return group;
}

// ---- cleanup

export interface CleanupResult {
  deleted: string[];
  failed: { id: string; reason: string }[];
}

/** Deletes the job's minted tokens with the bootstrap token; one already gone counts as deleted. Never throws. */
export async function deleteMintedTokens(
  bootstrap: CloudflareApi,
  tokens: readonly { id: string; name: string }[],
  logger: CredentialLogger,
): Promise<CleanupResult> {
  const result: CleanupResult = { deleted: [], failed: [] };
  for (const token of tokens) {
    try {
      await bootstrap.deleteToken(token.id, token.name);
      logger.info(`Deleted the job's Cloudflare token ${JSON.stringify(token.name)}.`);
      result.deleted.push(token.id);
    } catch (error) {
      if (error instanceof CloudflareApiError && error.status === 404) {
        logger.info(`The job's Cloudflare token ${JSON.stringify(token.name)} was already deleted.`);
        result.deleted.push(token.id);
        continue;
      }
      result.failed.push({ id: token.id, reason: messageOf(error) });
    }
  }
  return result;
}

function tokenName(purpose: string, jobLabel: string): string {
  return `aml-edge ${purpose} ${jobLabel}`.slice(0, MAX_TOKEN_NAME);
}

function roundUpToSecond(ms: number): number {
  return Math.ceil(ms / 1000) * 1000;
}

function capitalize(text: string): string {
  return text.charAt(0).toUpperCase() + text.slice(1);
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
