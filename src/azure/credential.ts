// The Azure credential of every job: the job's GitHub OIDC token, exchanged at Entra ID through a federated
// credential (ClientAssertionCredential), so no Azure secret is stored in GitHub. Two things Azure/login gets wrong are
// handled here (reference/azure.md §1.2, §1.5):
// - GitHub ID tokens live about 5 minutes and MSAL asks for the assertion more than once per token; the GitHub token is
//   kept until 60 s before it expires and fetched again after, so a job that waits 30 minutes on a deployment still
//   authenticates and MSAL's repeated calls cost one request to GitHub.
// - When Entra refuses the token (no matching federated credential, wrong case, expired), the error says what to fix:
//   the token's iss, sub and aud beside what a federated credential must match, and GitHub's subject forms.
// Tokens are masked the moment they exist and never logged; only their claims are.
import * as core from "@actions/core";
import {
  type AccessToken,
  ClientAssertionCredential,
  type GetTokenOptions,
  type TokenCredential,
} from "@azure/identity";
import { decodeJwt } from "jose";
import { ConfigurationError } from "./errors.ts";

export const DEFAULT_AUDIENCE = "api://AzureADTokenExchange";
export const GITHUB_ISSUER = "https://token.actions.githubusercontent.com";
/**
 * Fetch a new GitHub token once the cached one has less than this left (or half its lifetime, for tokens shorter
 * than two minutes: a 20-second token would otherwise never be reused at all).
 */
const REFRESH_MARGIN_SECONDS = 60;
/** Access tokens masked so far are remembered so each is masked once; a job sees a handful, the bound is a guard. */
const MASKED_ACCESS_TOKENS_LIMIT = 64;
/** Authorities MSAL knows; anything else (a sovereign proxy, the sandbox) must skip instance discovery. */
const KNOWN_AUTHORITY_HOSTS = [
  "login.microsoftonline.com",
  "login.microsoftonline.us",
  "login.chinacloudapi.cn",
];

export interface CredentialLogger {
  debug(message: string): void;
  info(message: string): void;
}

export interface GitHubOidcCredentialOptions {
  tenantId: string;
  clientId: string;
  /** The `aud` GitHub puts in the token; a federated credential lists it. Default `api://AzureADTokenExchange`. */
  audience?: string;
  /**
   * Default: the AZURE_AUTHORITY_HOST variable, then `https://login.microsoftonline.com`, as @azure/identity does. A
   * host MSAL does not know (the sandbox, a proxy) skips instance discovery, which would otherwise ask
   * login.microsoftonline.com whether it is an authority.
   */
  authorityHost?: string;
  /** Where AZURE_AUTHORITY_HOST is read from. Default `process.env`. */
  env?: Record<string, string | undefined>;
  /** Default `core.getIDToken`. */
  getIdToken?: (audience: string) => Promise<string>;
  /** Masks a credential in the job log. Default `core.setSecret`. */
  setSecret?: (secret: string) => void;
  /** Epoch milliseconds. Default `Date.now`. */
  now?: () => number;
  logger: CredentialLogger;
}

/** The claims of the GitHub token Entra was shown: what the user compares with the federated credential. */
export interface AssertionClaims {
  iss: string;
  sub: string;
  aud: string;
  job_workflow_ref?: string;
  repository?: string;
  iat?: number;
  exp?: number;
}

/** Entra refused the GitHub token: the federated credential and the job disagree. */
export class FederatedCredentialError extends ConfigurationError {
  override name = "FederatedCredentialError";
  readonly code: number;
  readonly claims: AssertionClaims | undefined;
  constructor(message: string, code: number, claims: AssertionClaims | undefined, options?: ErrorOptions) {
    super(message, options);
    this.code = code;
    this.claims = claims;
  }
}

/** AADSTS codes that mean "the assertion does not fit the federated credential", each with what it means. */
const FEDERATION_FAILURES: Record<number, string> = {
  70021: "no federated credential matches the token's issuer, subject and audience together",
  700211: "no federated credential has the token's issuer",
  700212: "no federated credential with the token's issuer and subject lists the token's audience",
  700213: "no federated credential has the token's subject",
  7002138:
    "a federated credential matches the token's subject only when case is ignored, and Entra compares case",
  700024: "the GitHub token was not within its valid time range when Entra checked it",
};

export function gitHubOidcCredential(options: GitHubOidcCredentialOptions): TokenCredential {
  const audience = options.audience ?? DEFAULT_AUDIENCE;
  const getIdToken = options.getIdToken ?? ((aud: string) => core.getIDToken(aud));
  const setSecret = options.setSecret ?? ((secret: string) => core.setSecret(secret));
  const now = options.now ?? Date.now;
  const { logger } = options;

  let cached: { token: string; refreshAt: number } | undefined;
  let inFlight: Promise<string> | undefined;
  let lastClaims: AssertionClaims | undefined;
  let fetchFailure: Error | undefined;
  let firstFetch = true;

  const fetchIdToken = async (): Promise<string> => {
    let token: string;
    try {
      token = await getIdToken(audience);
    } catch (error) {
      fetchFailure = idTokenFailure(error);
      throw fetchFailure;
    }
    // Masked before anything else can print it; core.getIDToken masks too, an injected fetcher may not.
    setSecret(token);
    let payload: ReturnType<typeof decodeJwt>;
    try {
      payload = decodeJwt(token);
    } catch {
      fetchFailure = new Error("GitHub's OIDC token service returned something that is not a JWT");
      throw fetchFailure;
    }
    lastClaims = {
      iss: typeof payload.iss === "string" ? payload.iss : "(none)",
      sub: typeof payload.sub === "string" ? payload.sub : "(none)",
      aud: Array.isArray(payload.aud) ? payload.aud.join(", ") : (payload.aud ?? "(none)"),
      ...(typeof payload.job_workflow_ref === "string" ? { job_workflow_ref: payload.job_workflow_ref } : {}),
      ...(typeof payload.repository === "string" ? { repository: payload.repository } : {}),
      ...(typeof payload.iat === "number" ? { iat: payload.iat } : {}),
      ...(typeof payload.exp === "number" ? { exp: payload.exp } : {}),
    };
    // The first token's claims are worth seeing in every log (as Azure/login shows them); refreshes only in debug.
    const summary =
      `GitHub OIDC token for Azure: iss=${lastClaims.iss} sub=${lastClaims.sub} aud=${lastClaims.aud}` +
      (payload.exp === undefined ? "" : ` expires=${new Date(payload.exp * 1000).toISOString()}`);
    if (firstFetch) logger.info(summary);
    else logger.debug(summary);
    firstFetch = false;
    // A token without exp is used once and not kept: there is no telling when it stops working.
    if (typeof payload.exp === "number") {
      const lifetime = typeof payload.iat === "number" ? payload.exp - payload.iat : Number.POSITIVE_INFINITY;
      const margin = Math.min(REFRESH_MARGIN_SECONDS, lifetime / 2);
      cached = { token, refreshAt: payload.exp - margin };
    } else {
      cached = undefined;
    }
    fetchFailure = undefined;
    return token;
  };

  const getAssertion = async (): Promise<string> => {
    const nowSeconds = now() / 1000;
    if (cached !== undefined && nowSeconds < cached.refreshAt) return cached.token;
    // MSAL may ask again while a fetch is under way; both wait on the same request.
    inFlight ??= fetchIdToken().finally(() => {
      inFlight = undefined;
    });
    return inFlight;
  };

  const configuredHost = options.authorityHost ?? (options.env ?? process.env).AZURE_AUTHORITY_HOST;
  const authorityHost = configuredHost === "" ? undefined : configuredHost;
  const inner = new ClientAssertionCredential(options.tenantId, options.clientId, getAssertion, {
    ...(authorityHost === undefined ? {} : { authorityHost }),
    ...(authorityHost !== undefined && !KNOWN_AUTHORITY_HOSTS.includes(new URL(authorityHost).hostname)
      ? { disableInstanceDiscovery: true }
      : {}),
  });

  const masked = new Set<string>();
  return {
    async getToken(
      scopes: string | string[],
      getTokenOptions?: GetTokenOptions,
    ): Promise<AccessToken | null> {
      try {
        const accessToken = await inner.getToken(scopes, getTokenOptions);
        // Azure access tokens are credentials too: masked once each, before the caller can print one.
        if (accessToken !== null && !masked.has(accessToken.token)) {
          setSecret(accessToken.token);
          if (masked.size >= MASKED_ACCESS_TOKENS_LIMIT) masked.clear();
          masked.add(accessToken.token);
        }
        return accessToken;
      } catch (error) {
        // MSAL wraps what the assertion callback threw; the user should see the original, which says what to fix.
        if (fetchFailure !== undefined && causeChainIncludes(error, fetchFailure)) throw fetchFailure;
        const code = aadstsCode(error);
        if (code !== undefined && code in FEDERATION_FAILURES) {
          // Entra found the token expired: it must not be offered again, whatever this process's clock says.
          if (code === 700024) cached = undefined;
          throw new FederatedCredentialError(
            guidance(code, entraDescription(error), lastClaims, options, audience),
            code,
            lastClaims,
            { cause: error },
          );
        }
        if (errorChainMentions(error, "endpoints_resolution_error")) {
          // MSAL reads the tenant's discovery document first; Entra answers a tenant it does not know there, and MSAL
          // reports only that it could not resolve the endpoints. A wrong tenant ID is the usual cause, an
          // unreachable authority the other, so this is reported as a failure that names both.
          const host = authorityHost ?? "https://login.microsoftonline.com";
          throw new Error(
            `Could not read the OpenID configuration of tenant ${options.tenantId} from ${host}: check the tenant ID ` +
              "(the Directory (tenant) ID on the app registration's overview page) and that the authority host is reachable.",
            { cause: error },
          );
        }
        const setupFix = code === undefined ? undefined : setupFailure(code, options);
        if (setupFix !== undefined) {
          const said = entraDescription(error);
          throw new ConfigurationError(`${setupFix}${said === undefined ? "" : `\nEntra said: ${said}`}`, {
            cause: error,
          });
        }
        throw error;
      }
    },
  };
}

/** Refusals that mean the client or tenant ID is wrong, not the federated credential. */
function setupFailure(code: number, options: GitHubOidcCredentialOptions): string | undefined {
  switch (code) {
    case 90002:
      return `Entra ID has no tenant ${options.tenantId}: check the tenant ID (the Directory (tenant) ID on the app registration's overview page).`;
    case 700016:
      return `Entra ID has no application with client ID ${options.clientId} in tenant ${options.tenantId}: check the client ID (the app registration's or managed identity's Application (client) ID) and that the tenant ID is the one it lives in.`;
    default:
      return undefined;
  }
}

/** Why no GitHub token could be had, as something the user can fix when it is one. */
function idTokenFailure(error: unknown): Error {
  const message = error instanceof Error ? error.message : String(error);
  if (/ACTIONS_ID_TOKEN_REQUEST_(URL|TOKEN)/.test(message)) {
    return new ConfigurationError(
      "This job cannot get a GitHub OIDC token: add `permissions: id-token: write` to the workflow or job " +
        "(with `contents: read`). Pull requests from forks get no OIDC token at all; run the deployment from a " +
        `branch, a tag or an environment of the repository itself. (${message})`,
      { cause: error },
    );
  }
  return new Error(`Could not get a GitHub OIDC token for Azure: ${message}`, { cause: error });
}

function guidance(
  code: number,
  description: string | undefined,
  claims: AssertionClaims | undefined,
  options: GitHubOidcCredentialOptions,
  audience: string,
): string {
  const repo = repositoryOf(claims);
  const lines = [
    `Entra ID refused this job's GitHub OIDC token for the app (client ID) ${options.clientId} in tenant ${options.tenantId}: ` +
      `AADSTS${code}, ${FEDERATION_FAILURES[code]}.`,
    "",
    "The token GitHub issued to this job has:",
    `  issuer   (iss): ${claims?.iss ?? "(unknown)"}`,
    `  subject  (sub): ${claims?.sub ?? "(unknown)"}`,
    `  audience (aud): ${claims?.aud ?? audience}`,
  ];
  if (claims?.job_workflow_ref !== undefined) lines.push(`  workflow:       ${claims.job_workflow_ref}`);
  lines.push(
    "",
    `A federated credential on the app ${options.clientId} must match all three exactly, case included:`,
    `  Issuer:   ${claims?.iss ?? GITHUB_ISSUER} (exactly; a trailing slash is a different issuer)`,
    `  Subject:  ${claims?.sub ?? "the job's subject, below"}`,
    `  Audience: ${claims?.aud ?? audience}`,
    "",
    "GitHub's subject depends on how the job runs; the first that applies wins:",
    `  a job with \`environment: NAME\`: repo:${repo}:environment:NAME`,
    `  a pull_request event:           repo:${repo}:pull_request`,
    `  a branch:                       repo:${repo}:ref:refs/heads/BRANCH`,
    `  a tag:                          repo:${repo}:ref:refs/tags/TAG`,
    "Repositories with immutable subject claims use repo:OWNER@OWNER_ID/REPO@REPO_ID:... in the same forms, and an " +
      "organization's custom subject template replaces them all.",
    "",
  );
  lines.push(`Fix: ${fixFor(code, claims, audience)}`);
  if (description !== undefined) lines.push("", `Entra said: ${description}`);
  return lines.join("\n");
}

function fixFor(code: number, claims: AssertionClaims | undefined, audience: string): string {
  const sub = claims?.sub ?? "the subject above";
  switch (code) {
    case 700211:
      return `set the federated credential's Issuer to exactly ${claims?.iss ?? GITHUB_ISSUER}.`;
    case 700212:
      return `list ${claims?.aud ?? audience} in the federated credential's audiences, or set this action's \`audience\` input to the audience the credential lists.`;
    case 7002138:
      return `change the federated credential's Subject to exactly ${sub}: owner, repository, branch and environment names as GitHub writes them.`;
    case 700024:
      return "check the runner's clock; this credential fetches a new GitHub token 60 s before the old one expires, so an expired token points at a clock more than a minute off.";
    default:
      return `add a federated credential with Subject ${sub} (or run the job the way an existing credential expects, for example with the environment it names).`;
  }
}

function repositoryOf(claims: AssertionClaims | undefined): string {
  if (claims?.repository !== undefined) return claims.repository;
  const match = /^repo:([^:]+):/.exec(claims?.sub ?? "");
  return match?.[1] ?? "OWNER/REPO";
}

/** The AADSTS code in an error or its causes: MSAL's ServerError carries it in `errorNo` and in the message. */
function aadstsCode(error: unknown): number | undefined {
  let current: unknown = error;
  for (let depth = 0; current !== undefined && current !== null && depth < 10; depth++) {
    const errorNo = (current as { errorNo?: unknown }).errorNo;
    if (typeof errorNo === "string" && /^\d+$/.test(errorNo)) return Number(errorNo);
    if (typeof errorNo === "number") return errorNo;
    const message = current instanceof Error ? current.message : String(current);
    const match = /AADSTS(\d+)/.exec(message);
    if (match?.[1] !== undefined) return Number(match[1]);
    current = current instanceof Error ? current.cause : undefined;
  }
  return undefined;
}

/** Entra's own sentence (`AADSTS700213: No matching ...`), without its trace and correlation ids. */
function entraDescription(error: unknown): string | undefined {
  let current: unknown = error;
  for (let depth = 0; current !== undefined && current !== null && depth < 10; depth++) {
    const message = current instanceof Error ? current.message : String(current);
    const match = /AADSTS\d+: .*?(?= Trace ID:|$)/s.exec(message);
    if (match !== null) return match[0].trim();
    current = current instanceof Error ? current.cause : undefined;
  }
  return undefined;
}

function errorChainMentions(error: unknown, text: string): boolean {
  let current: unknown = error;
  for (let depth = 0; current !== undefined && current !== null && depth < 10; depth++) {
    if ((current instanceof Error ? current.message : String(current)).includes(text)) return true;
    current = current instanceof Error ? current.cause : undefined;
  }
  return false;
}

function causeChainIncludes(error: unknown, target: Error): boolean {
  let current: unknown = error;
  for (let depth = 0; current !== undefined && current !== null && depth < 10; depth++) {
    if (current === target) return true;
    current = current instanceof Error ? current.cause : undefined;
  }
  return false;
}
