// The security lint: config that the schema accepts but that would open the gateway to callers it should refuse
// (algorithm confusion, any-audience tokens, unbounded token age, plain http, everyone-matching rules, forwarded
// identity headers) or leave a route unusable. It runs before every publish; a finding says what is wrong, why it
// matters and what is accepted. Codes are stable: tests, CI output and docs refer to them.
import { ConfigError, type ConfigIssue, formatPath, type PathSegment } from "./errors.ts";
import { isLoopbackHostname } from "./hosts.ts";
import {
  ASYMMETRIC_ALGORITHMS,
  type GatewayConfig,
  type IssuerConfig,
  MAX_CLOCK_TOLERANCE_SECONDS,
  type Principal,
} from "./schema.ts";

export const LINT_CODES = [
  "hs-algorithm-on-key-set",
  "audience-missing",
  "audience-wildcard",
  "clock-tolerance-too-large",
  "max-token-age-missing",
  "jwks-uri-not-https",
  "scoring-uri-not-https",
  "weights-do-not-sum-to-100",
  "route-without-policy",
  "rule-matches-everyone",
  "wildcard-claim-value",
  "forward-header-unsafe",
  "github-sub-only",
  "entra-tenant-unpinned",
] as const;
export type LintCode = (typeof LINT_CODES)[number];

/** `local` allows http:// to loopback hosts only (gateway dev, the sandbox); everything else is the same. */
export type LintMode = "production" | "local";

export interface LintOptions {
  mode: LintMode;
}

export interface LintFinding {
  code: LintCode;
  path: string;
  message: string;
  severity: "error" | "warning";
}

const WEIGHT_TOLERANCE = 1e-9;

export function lintConfig(config: GatewayConfig, options: LintOptions): LintFinding[] {
  const findings: LintFinding[] = [];
  const error = (code: LintCode, segments: PathSegment[], message: string) =>
    findings.push({ code, path: formatPath(segments), message, severity: "error" });
  const warning = (code: LintCode, segments: PathSegment[], message: string) =>
    findings.push({ code, path: formatPath(segments), message, severity: "warning" });

  config.issuers.forEach((issuer, index) => {
    const at = (...rest: PathSegment[]): PathSegment[] => ["issuers", index, ...rest];
    issuer.algorithms.forEach((algorithm, algorithmIndex) => {
      if (algorithm.startsWith("HS")) {
        error(
          "hs-algorithm-on-key-set",
          at("algorithms", algorithmIndex),
          `${algorithm} is a shared-secret (HMAC) algorithm, but issuer ${quote(issuer.name)} is verified with a public key set: anyone holding the published key could sign an ${algorithm} token with it (algorithm confusion); pin asymmetric algorithms only: ${ASYMMETRIC_ALGORITHMS.join(", ")}`,
        );
      }
    });

    if (issuer.audiences === undefined || issuer.audiences.length === 0) {
      error(
        "audience-missing",
        at("audiences"),
        `issuer ${quote(issuer.name)} lists no audiences, so a token it minted for any other application would be accepted here; list this gateway's own audience, e.g. audiences: [api://aml-edge]`,
      );
    }
    issuer.audiences?.forEach((audience, audienceIndex) => {
      if (audience === "") {
        error(
          "audience-missing",
          at("audiences", audienceIndex),
          "is an empty audience; list this gateway's own audience, e.g. api://aml-edge",
        );
      } else if (audience.includes("*")) {
        error(
          "audience-wildcard",
          at("audiences", audienceIndex),
          `${quote(audience)} asks for a wildcard, but audiences are exact strings and any audience pattern would let in tokens minted for other applications; list the exact audience this gateway's tokens carry, e.g. api://aml-edge`,
        );
      }
    });

    if (issuer.clockToleranceSeconds > MAX_CLOCK_TOLERANCE_SECONDS) {
      error(
        "clock-tolerance-too-large",
        at("clockToleranceSeconds"),
        `is ${issuer.clockToleranceSeconds} seconds, which keeps expired tokens usable that much longer; at most ${MAX_CLOCK_TOLERANCE_SECONDS} is accepted (30 is the default)`,
      );
    }

    if (issuer.maxTokenAgeSeconds === undefined) {
      error(
        "max-token-age-missing",
        at("maxTokenAgeSeconds"),
        `is not set for issuer ${quote(issuer.name)}, so a token's age and lifetime are unbounded (a token issued with a far-off exp, or an iat in the future, stays valid); set the longest lifetime the issuer really issues, e.g. 5400 for Entra ID (60–90 min tokens) or 600 for GitHub Actions`,
      );
    }

    const jwksProblem = urlProblem(issuer.jwksUri, options.mode);
    if (jwksProblem) error("jwks-uri-not-https", at("jwksUri"), `the key set URL ${jwksProblem}`);

    if (isEntra(issuer) && issuer.tenants === undefined) {
      warning(
        "entra-tenant-unpinned",
        at("tenants"),
        `is not set for the Entra ID issuer ${quote(issuer.name)}; list the tenant ids (tid) whose tokens you accept, e.g. tenants: ["<tenant-id>"], so that a token from any other tenant is refused even where an issuer value is shared or templated`,
      );
    }
  });

  lintPolicy(config, error, warning);
  lintRoutes(config, options, error);

  config.forwardHeaders.forEach((header, index) => {
    const reason = unsafeHeaderReason(header);
    if (reason) {
      error(
        "forward-header-unsafe",
        ["forwardHeaders", index],
        `${quote(header)} ${reason}; forward only application headers, such as x-request-id or traceparent`,
      );
    }
  });

  return findings;
}

/**
 * Throws a ConfigError (each issue coded by its finding) when any finding is an error; returns the warnings, for
 * the caller to show. `source` names the config in the message, e.g. its file name.
 */
export function assertConfigSafe(
  config: GatewayConfig,
  options: LintOptions & { source?: string },
): LintFinding[] {
  const findings = lintConfig(config, { mode: options.mode });
  const errors = findings.filter((finding) => finding.severity === "error");
  if (errors.length > 0) {
    throw new ConfigError(options.source ?? "gateway config", errors.map(findingToIssue));
  }
  return findings.filter((finding) => finding.severity === "warning");
}

export function findingToIssue(finding: LintFinding): ConfigIssue {
  return { path: finding.path, code: finding.code, message: finding.message };
}

type Report = (code: LintCode, segments: PathSegment[], message: string) => void;

function lintPolicy(config: GatewayConfig, error: Report, warning: Report): void {
  const gitHubIssuers = config.issuers
    .filter((issuer) => isGitHubActions(issuer.issuer))
    .map((issuer) => issuer.name);

  config.policy.rules.forEach((rule, index) => {
    const at: PathSegment[] = ["policy", "rules", index, "match"];
    if (!hasCondition(rule.match)) {
      error(
        "rule-matches-everyone",
        at,
        `has no condition besides issuers, so it hands ${listOf(rule.roles)} to every caller with a valid token${rule.match.issuers ? ` from ${listOf(rule.match.issuers)}` : ""}; add a condition that names who, e.g. role, group, oid or repositoryId`,
      );
    }
    lintWildcards(rule.match, at, error);

    const appliesToGitHub = gitHubIssuers.some((name) => rule.match.issuers?.includes(name) ?? true);
    const hasSub = rule.match.sub !== undefined || rule.match.claims?.sub !== undefined;
    const hasRepositoryId =
      rule.match.repositoryId !== undefined || rule.match.claims?.repository_id !== undefined;
    if (appliesToGitHub && hasSub && !hasRepositoryId) {
      warning(
        "github-sub-only",
        [...at, rule.match.sub !== undefined ? "sub" : "claims"],
        `names GitHub Actions callers by sub only, and sub is built from repository and owner names, which can be deleted and registered again by someone else; pin the immutable repositoryId (and repositoryOwnerId) too, e.g. repositoryId: ["123456789"]`,
      );
    }
  });
}

function lintRoutes(config: GatewayConfig, options: LintOptions, error: Report): void {
  const { roles, rules } = config.policy;
  const handedOut = new Set(rules.flatMap((rule) => rule.roles));

  config.routes.forEach((route, index) => {
    const at = (...rest: PathSegment[]): PathSegment[] => ["routes", index, ...rest];

    const scoringProblem = urlProblem(route.scoringUri, options.mode);
    if (scoringProblem) error("scoring-uri-not-https", at("scoringUri"), `the scoring URI ${scoringProblem}`);

    const total = route.deployments.reduce((sum, deployment) => sum + deployment.weight, 0);
    if (Math.abs(total - 100) > WEIGHT_TOLERANCE) {
      const weights = route.deployments
        .map((deployment) => `${deployment.name} ${deployment.weight}`)
        .join(", ");
      error(
        "weights-do-not-sum-to-100",
        at("deployments"),
        `the weights add up to ${Number(total.toPrecision(12))} (${weights}); they are percentages of the route's traffic and must add up to 100`,
      );
    }

    const grant = `score:${route.name}`;
    const granting = Object.entries(roles)
      .filter(([, grants]) => grants.includes(grant))
      .map(([role]) => role);
    if (granting.length === 0) {
      error(
        "route-without-policy",
        at(),
        `no role grants ${quote(grant)}, so every call to route ${quote(route.name)} would be refused; add a role with it under policy.roles (e.g. scorer: [${quote(grant)}]) and a rule that hands the role out`,
      );
    } else if (!granting.some((role) => handedOut.has(role))) {
      error(
        "route-without-policy",
        at(),
        `the roles that grant ${quote(grant)} (${granting.join(", ")}) are not handed out by any rule, so every call to route ${quote(route.name)} would be refused; add a rule under policy.rules with roles: [${granting[0]}]`,
      );
    }

    route.cohorts.forEach((cohort, cohortIndex) => {
      const matchAt = at("cohorts", cohortIndex, "match");
      if (!hasCondition(cohort.match)) {
        error(
          "rule-matches-everyone",
          matchAt,
          `has no condition besides issuers, so every caller would go to the cohort's deployment ${quote(cohort.deployment)} and the weights would never apply; add a condition that names who, e.g. group: [beta-testers]`,
        );
      }
      lintWildcards(cohort.match, matchAt, error);
    });
  });
}

/** Every field of a match but `issuers` narrows who matches; `issuers` only says which issuer's tokens count. */
function hasCondition(match: Principal): boolean {
  return Object.entries(match).some(([field, value]) => {
    if (field === "issuers" || value === undefined) return false;
    return Array.isArray(value) ? value.length > 0 : Object.keys(value).length > 0;
  });
}

function lintWildcards(match: Principal, at: PathSegment[], error: Report): void {
  const { issuers: _issuers, claims, ...fields } = match;
  const lists: [PathSegment[], readonly string[]][] = [];
  for (const [field, values] of Object.entries(fields)) if (values) lists.push([[...at, field], values]);
  for (const [claim, values] of Object.entries(claims ?? {})) lists.push([[...at, "claims", claim], values]);
  for (const [segments, values] of lists) {
    values.forEach((value, index) => {
      if (value.includes("*")) {
        error(
          "wildcard-claim-value",
          [...segments, index],
          `${quote(value)} contains "*", but match values are exact strings, not patterns: it matches only a claim that is literally this text, never the callers it seems to name; list each exact value`,
        );
      }
    });
  }
}

/** Why a URL is not acceptable in this mode, or undefined when it is. */
function urlProblem(uri: string, mode: LintMode): string | undefined {
  let url: URL;
  try {
    url = new URL(uri);
  } catch {
    return `${quote(uri)} is not an absolute URL; use https://`;
  }
  if (url.protocol === "https:") return undefined;
  if (url.protocol !== "http:") return `${quote(uri)} uses ${url.protocol}; only https:// is accepted`;
  if (mode === "production") {
    return `${quote(uri)} is plain http://, which anyone on the path can read or alter; production requires https:// (http:// is accepted only in local mode, to a loopback host)`;
  }
  if (isLoopbackHostname(url.hostname)) return undefined;
  return `${quote(uri)} is plain http:// to ${url.hostname}, which is not a loopback host; use https://, or in local mode a loopback host: localhost, 127.0.0.0/8 or [::1]`;
}

function isGitHubActions(iss: string): boolean {
  // github.com's issuer, its per-enterprise form (…/<enterprise>), and GHE.com data residency (token.actions.<x>.ghe.com).
  return (
    iss === "https://token.actions.githubusercontent.com" ||
    iss.startsWith("https://token.actions.githubusercontent.com/") ||
    /^https:\/\/token\.actions\.[a-z0-9-]+\.ghe\.com(?:\/|$)/.test(iss)
  );
}

const ENTRA_HOSTS = new Set([
  "login.microsoftonline.com",
  "sts.windows.net",
  "login.microsoftonline.us",
  "login.partner.microsoftonline.cn",
]);

function isEntra(issuer: IssuerConfig): boolean {
  try {
    return ENTRA_HOSTS.has(new URL(issuer.issuer).hostname);
  } catch {
    return false;
  }
}

const CREDENTIAL_HEADERS = new Set(["authorization", "proxy-authorization", "cookie"]);
const HOP_BY_HOP_HEADERS = new Set([
  "host",
  "connection",
  "keep-alive",
  "proxy-connection",
  "te",
  "trailer",
  "transfer-encoding",
  "upgrade",
]);
const CLIENT_DESCRIBING = /^(?:forwarded|x-real-ip|x-forwarded-.*|x-original-.*|x-client-.*)$/;
const IDENTITY = /^(?:x-user.*|x-auth.*|x-ms-client-principal.*)$/;

function unsafeHeaderReason(header: string): string | undefined {
  if (CREDENTIAL_HEADERS.has(header)) {
    return "carries the caller's credentials, which must not reach Azure ML (the gateway authenticates with its own key)";
  }
  if (header.startsWith("azureml-")) {
    return "is an Azure ML control header (azureml-model-deployment chooses the deployment); the gateway sets these itself and a caller must never choose them";
  }
  if (CLIENT_DESCRIBING.test(header)) {
    return "describes the client or the original request, which a caller can forge and an upstream may trust";
  }
  if (IDENTITY.test(header)) return "names an identity, so a caller could claim to be someone else";
  if (header.startsWith("cf-")) return "is set by Cloudflare, and a caller's copy of it could be forged";
  if (header.startsWith("x-aml-edge-")) return "is in the gateway's own header namespace";
  if (HOP_BY_HOP_HEADERS.has(header)) {
    return "describes a single connection (hop-by-hop); forwarding it invites request smuggling";
  }
  return undefined;
}

function listOf(values: readonly string[]): string {
  return values.map(quote).join(", ");
}

function quote(value: string): string {
  return JSON.stringify(value);
}
