// The GitHub Actions OIDC token service, as a job reaches it: the runner puts ACTIONS_ID_TOKEN_REQUEST_URL and
// ACTIONS_ID_TOKEN_REQUEST_TOKEN in the environment, and `core.getIDToken(audience)` sends
// GET `<url>&audience=<aud>` with `Authorization: Bearer <request token>` and reads `.value`. The tokens are RS256
// JWTs with GitHub's claims (subject forms as in reference/azure.md §1.3), signed by this service's own key and
// verifiable through its discovery document and key set, so Entra's stand-in checks them the way Entra checks
// GitHub's. Tests shorten the lifetime to exercise refresh and count issued tokens to check memoization.
import { randomBytes, randomUUID, timingSafeEqual } from "node:crypto";
import { calculateJwkThumbprint, exportJWK, generateKeyPair, type JWK, type JWTPayload, SignJWT } from "jose";
import { type LoopbackServer, type Mount, sendJson, startLoopbackServer } from "./http-server.ts";

export const GITHUB_OIDC_PATH = "/github-oidc";
const DEFAULT_LIFETIME_SECONDS = 300;

/** The claims a GitHub job's ID token carries, apart from the registered JWT claims (iss, aud, iat, nbf, exp, jti). */
export interface GitHubJobClaims {
  repository: string;
  repository_id: string;
  repository_owner: string;
  repository_owner_id: string;
  repository_visibility: "public" | "private" | "internal";
  /** The job's `environment:`, when it has one: it decides the subject over every other form. */
  environment?: string;
  ref: string;
  ref_type: "branch" | "tag";
  ref_protected: "true" | "false";
  sha: string;
  head_ref: string;
  base_ref: string;
  event_name: string;
  actor: string;
  actor_id: string;
  workflow: string;
  workflow_ref: string;
  workflow_sha: string;
  job_workflow_ref: string;
  job_workflow_sha: string;
  run_id: string;
  run_number: string;
  run_attempt: string;
  runner_environment: "github-hosted" | "self-hosted";
  /**
   * `name` (default): `repo:OWNER/REPO:...`. `immutable`: `repo:OWNER@OWNER_ID/REPO@REPO_ID:...`, the form GitHub uses
   * for repositories created after 2026-07-15 or opted in (§1.3).
   */
  subject_format?: "name" | "immutable";
  /** Replaces the derived subject, for custom subject templates. */
  sub?: string;
}

/** Claims to change; `undefined` removes an optional one (environment, sub, subject_format). */
export type GitHubClaimChanges = { [K in keyof GitHubJobClaims]?: GitHubJobClaims[K] | undefined };

export interface GitHubOidcOptions {
  /** Serve on this loopback server (HTTP or HTTPS). Default: a new plain-HTTP server of its own. */
  server?: LoopbackServer;
  /** Default 300 s, as GitHub's. */
  lifetimeSeconds?: number;
  claims?: Partial<GitHubJobClaims>;
  /** The `iss` claim. Default `<server origin>/github-oidc`, whose discovery document this service serves. */
  issuer?: string;
  /** Epoch milliseconds, for `iat`. Default `Date.now`; tests share a fake clock with Entra to skip long waits. */
  now?: () => number;
}

export interface MintOptions {
  /** Epoch seconds. Default: now. */
  issuedAt?: number;
  lifetimeSeconds?: number;
  claims?: Partial<GitHubJobClaims>;
}

export interface GitHubOidc {
  /** ACTIONS_ID_TOKEN_REQUEST_URL: already has a query string, as the runner's does, so `&audience=` can be appended. */
  readonly requestUrl: string;
  /** ACTIONS_ID_TOKEN_REQUEST_TOKEN */
  readonly requestToken: string;
  readonly issuer: string;
  readonly discoveryUri: string;
  readonly jwksUri: string;
  /** ID tokens served through the request URL (not those made with `mint`). */
  readonly issued: number;
  /** Merges into the claims of every later token (an explicit `sub` sticks until set to undefined). */
  setClaims(claims: GitHubClaimChanges): void;
  setLifetime(seconds: number): void;
  /** The subject the next token will carry. */
  subject(): string;
  /** A token signed by this service without an HTTP request: for tests that need a particular `iat` or audience. */
  mint(audience: string, options?: MintOptions): Promise<string>;
  /** The variables a job step sees: ACTIONS_ID_TOKEN_REQUEST_URL and ACTIONS_ID_TOKEN_REQUEST_TOKEN. */
  env(): Record<string, string>;
  close(): Promise<void>;
}

export const DEFAULT_JOB_CLAIMS: GitHubJobClaims = {
  repository: "octo-org/octo-models",
  repository_id: "712345678",
  repository_owner: "octo-org",
  repository_owner_id: "98765432",
  repository_visibility: "private",
  ref: "refs/heads/main",
  ref_type: "branch",
  ref_protected: "true",
  sha: "3f786850e387550fdab836ed7e6dc881de23001b",
  head_ref: "",
  base_ref: "",
  event_name: "push",
  actor: "octocat",
  actor_id: "583231",
  workflow: "deploy-model",
  workflow_ref: "octo-org/octo-models/.github/workflows/deploy.yml@refs/heads/main",
  workflow_sha: "3f786850e387550fdab836ed7e6dc881de23001b",
  job_workflow_ref: "octo-org/octo-models/.github/workflows/deploy.yml@refs/heads/main",
  job_workflow_sha: "3f786850e387550fdab836ed7e6dc881de23001b",
  run_id: "11223344556",
  run_number: "42",
  run_attempt: "1",
  runner_environment: "github-hosted",
};

/**
 * The `sub` GitHub gives a job (reference/azure.md §1.3): an environment wins over everything; then a pull_request
 * event; then the ref (branch or tag).
 */
export function gitHubSubject(claims: GitHubJobClaims): string {
  if (claims.sub !== undefined) return claims.sub;
  const repo =
    claims.subject_format === "immutable"
      ? immutableRepository(claims)
      : `${claims.repository_owner}/${repositoryName(claims)}`;
  if (claims.environment !== undefined && claims.environment !== "") {
    return `repo:${repo}:environment:${claims.environment}`;
  }
  if (claims.event_name === "pull_request") return `repo:${repo}:pull_request`;
  return `repo:${repo}:ref:${claims.ref}`;
}

function repositoryName(claims: GitHubJobClaims): string {
  const slash = claims.repository.indexOf("/");
  return slash < 0 ? claims.repository : claims.repository.slice(slash + 1);
}

function immutableRepository(claims: GitHubJobClaims): string {
  return `${claims.repository_owner}@${claims.repository_owner_id}/${repositoryName(claims)}@${claims.repository_id}`;
}

export async function startGitHubOidc(options: GitHubOidcOptions = {}): Promise<GitHubOidc> {
  const ownServer = options.server === undefined;
  const now = options.now ?? Date.now;
  const server = options.server ?? (await startLoopbackServer());
  const base = `${server.origin}${GITHUB_OIDC_PATH}`;
  const issuer = options.issuer ?? base;
  const discoveryPath = `${GITHUB_OIDC_PATH}/.well-known/openid-configuration`;
  const jwksPath = `${GITHUB_OIDC_PATH}/.well-known/jwks`;
  // The runner's request URL is an opaque per-job URL with `?api-version=2.0`; the shape here only has to keep that
  // query string so that `&audience=` appends correctly.
  const tokenPath = `${GITHUB_OIDC_PATH}/_apis/distributedtask/idtoken`;
  const requestUrl = `${server.origin}${tokenPath}?api-version=2.0`;
  const requestToken = randomBytes(32).toString("base64url");

  let lifetimeSeconds = checkLifetime(options.lifetimeSeconds ?? DEFAULT_LIFETIME_SECONDS);
  let claims: GitHubJobClaims = {
    ...DEFAULT_JOB_CLAIMS,
    ...withoutUndefined<GitHubJobClaims>(options.claims ?? {}),
  };
  let issued = 0;

  const { privateKey, publicKey } = await generateKeyPair("RS256", { extractable: true });
  const exported = await exportJWK(publicKey);
  const kid = await calculateJwkThumbprint(exported);
  const publicJwk: JWK = { ...exported, kid, alg: "RS256", use: "sig" };

  const mint = async (audience: string, mintOptions: MintOptions = {}): Promise<string> => {
    const job: GitHubJobClaims = {
      ...claims,
      ...withoutUndefined<GitHubJobClaims>(mintOptions.claims ?? {}),
    };
    const iat = mintOptions.issuedAt ?? Math.floor(now() / 1000);
    const { subject_format: _format, sub: _sub, environment, ...rest } = job;
    const payload: JWTPayload = {
      jti: randomUUID(),
      sub: gitHubSubject(job),
      aud: audience,
      ...rest,
      ...(environment === undefined ? {} : { environment }),
      iss: issuer,
      // GitHub back-dates nbf by a few minutes against clock skew; exp is iat + the lifetime.
      nbf: iat - 300,
      iat,
      exp: iat + (mintOptions.lifetimeSeconds ?? lifetimeSeconds),
    };
    return new SignJWT(payload).setProtectedHeader({ alg: "RS256", typ: "JWT", kid }).sign(privateKey);
  };

  const mount: Mount = {
    matches: (pathname) => pathname === discoveryPath || pathname === jwksPath || pathname === tokenPath,
    async handle(req, res, { url }) {
      if (req.method !== "GET") {
        sendJson(res, 405, { message: "Method not allowed" }, { allow: "GET" });
        return;
      }
      if (url.pathname === discoveryPath) {
        sendJson(res, 200, {
          issuer,
          jwks_uri: `${server.origin}${jwksPath}`,
          subject_types_supported: ["public", "pairwise"],
          response_types_supported: ["id_token"],
          claims_supported: [
            "sub",
            "aud",
            "exp",
            "iat",
            "iss",
            "jti",
            "nbf",
            "ref",
            "repository",
            "environment",
          ],
          id_token_signing_alg_values_supported: ["RS256"],
          scopes_supported: ["openid"],
        });
        return;
      }
      if (url.pathname === jwksPath) {
        sendJson(res, 200, { keys: [publicJwk] });
        return;
      }
      if (!bearerMatches(req.headers.authorization, requestToken)) {
        sendJson(res, 401, { message: "Unauthorized: the request token is missing or wrong" });
        return;
      }
      // Without an audience GitHub uses the URL of the repository owner.
      const audience = url.searchParams.get("audience") ?? `https://github.com/${claims.repository_owner}`;
      const value = await mint(audience);
      issued += 1;
      sendJson(res, 200, { count: 1, value }, { "cache-control": "no-store" });
    },
  };
  const unmount = server.mount(mount);

  return {
    requestUrl,
    requestToken,
    issuer,
    discoveryUri: `${server.origin}${discoveryPath}`,
    jwksUri: `${server.origin}${jwksPath}`,
    get issued() {
      return issued;
    },
    setClaims(partial) {
      // An explicit undefined removes an optional claim (environment, sub): the spread keeps the key, the filter drops it.
      // A required claim set to undefined falls back to its default rather than vanishing from the token.
      claims = { ...DEFAULT_JOB_CLAIMS, ...withoutUndefined<GitHubJobClaims>({ ...claims, ...partial }) };
    },
    setLifetime(seconds) {
      lifetimeSeconds = checkLifetime(seconds);
    },
    subject: () => gitHubSubject(claims),
    mint,
    env: () => ({ ACTIONS_ID_TOKEN_REQUEST_URL: requestUrl, ACTIONS_ID_TOKEN_REQUEST_TOKEN: requestToken }),
    async close() {
      unmount();
      if (ownServer) await server.close();
    },
  };
}

function checkLifetime(seconds: number): number {
  if (!Number.isInteger(seconds) || seconds < 1) {
    throw new Error(`GitHub OIDC: the token lifetime must be a whole number of seconds >= 1, got ${seconds}`);
  }
  return seconds;
}

function bearerMatches(header: string | undefined, expected: string): boolean {
  const match = /^Bearer (.+)$/i.exec(header ?? "");
  if (match?.[1] === undefined) return false;
  const given = Buffer.from(match[1]);
  const wanted = Buffer.from(expected);
  return given.length === wanted.length && timingSafeEqual(given, wanted);
}

function withoutUndefined<T extends object>(value: { [K in keyof T]?: T[K] | undefined }): Partial<T> {
  return Object.fromEntries(Object.entries(value).filter(([, v]) => v !== undefined)) as Partial<T>;
}
