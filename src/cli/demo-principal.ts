// Works out, from a gateway config's own policy, the claims of a caller who may score on a route, so that
// `gateway dev` can mint a token the gateway will accept without anyone writing claims by hand. It reads the policy
// the way the gateway evaluates it (src/gateway/policy.ts): every condition of a rule must hold, any listed value
// of a condition will do.
import type { GatewayConfig, IssuerConfig, Principal, Rule } from "../config/schema.ts";

export interface DemoPrincipal {
  issuer: IssuerConfig;
  rule: string;
  role: string;
  claims: Record<string, unknown>;
  /** Within the issuer's maxTokenAgeSeconds. */
  lifetimeSeconds: number;
}

export const DEMO_SUBJECT = "aml-edge-dev-user";
/** Long enough to paste a curl a few times; `gateway dev` rewrites the token file before it runs out. */
const DEFAULT_LIFETIME_SECONDS = 3600;

/**
 * The first rule, in config order, that grants `score:<route>` and whose conditions can be met by a token from one
 * of `mintable` (issuer names we hold signing keys for). Returns why not, when none can.
 */
export function demoPrincipal(
  config: GatewayConfig,
  routeName: string,
  mintable: ReadonlySet<string>,
): DemoPrincipal | { reason: string } {
  const grant = `score:${routeName}`;
  const granting = Object.entries(config.policy.roles)
    .filter(([, grants]) => grants.includes(grant))
    .map(([role]) => role);
  if (granting.length === 0) return { reason: `no role in policy.roles grants ${grant}` };
  const rules = config.policy.rules.filter((rule) => rule.roles.some((role) => granting.includes(role)));
  if (rules.length === 0) return { reason: `no rule grants a role with ${grant} (${granting.join(", ")})` };

  const reasons: string[] = [];
  for (const rule of rules) {
    const role = rule.roles.find((r) => granting.includes(r)) as string;
    const candidates = config.issuers.filter(
      (issuer) => mintable.has(issuer.name) && (rule.match.issuers?.includes(issuer.name) ?? true),
    );
    if (candidates.length === 0) {
      reasons.push(`rule ${rule.name}: none of its issuers has a local token issuer`);
      continue;
    }
    for (const issuer of candidates) {
      const claims = claimsFor(rule, issuer);
      if (typeof claims === "string") {
        reasons.push(`rule ${rule.name}, issuer ${issuer.name}: ${claims}`);
        continue;
      }
      const lifetimeSeconds = Math.min(
        issuer.maxTokenAgeSeconds ?? DEFAULT_LIFETIME_SECONDS,
        DEFAULT_LIFETIME_SECONDS,
      );
      return { issuer, rule: rule.name, role, claims, lifetimeSeconds };
    }
  }
  return { reason: reasons.join("; ") };
}

/** Claims meeting every condition of the rule for this issuer, or why they cannot. */
function claimsFor(rule: Rule, issuer: IssuerConfig): Record<string, unknown> | string {
  const match: Principal = rule.match;
  const claims: Record<string, unknown> = { sub: match.sub?.[0] ?? DEMO_SUBJECT };
  if (issuer.audiences?.[0] !== undefined) claims.aud = issuer.audiences[0];

  if (issuer.tenants !== undefined) {
    const tenants = issuer.tenants;
    const tid = match.tid === undefined ? tenants[0] : match.tid.find((t) => tenants.includes(t));
    if (tid === undefined) return "the rule's tid values are not among the issuer's tenants";
    claims.tid = tid;
  } else if (match.tid !== undefined) {
    claims.tid = match.tid[0];
  }
  if (match.oid !== undefined) claims.oid = match.oid[0];
  if (match.group !== undefined) claims.groups = [match.group[0]];
  if (match.app !== undefined) claims.azp = match.app[0];
  if (match.repositoryId !== undefined) claims.repository_id = match.repositoryId[0];
  if (match.repositoryOwnerId !== undefined) claims.repository_owner_id = match.repositoryOwnerId[0];
  if (match.environment !== undefined) claims.environment = match.environment[0];
  if (match.jobWorkflowRef !== undefined) claims.job_workflow_ref = match.jobWorkflowRef[0];
  if (match.role !== undefined) {
    const roleClaim = issuer.roleClaims[0];
    if (roleClaim === undefined) return "the rule needs a role but the issuer has no roleClaims";
    // `scp` is a space-separated string, other role claims are arrays (as Entra issues them).
    claims[roleClaim] = roleClaim === "scp" ? match.role[0] : [match.role[0]];
  }
  for (const [name, values] of Object.entries(match.claims ?? {})) {
    const existing = claims[name];
    if (
      existing !== undefined &&
      !values.some((v) => v === existing || (Array.isArray(existing) && existing.includes(v)))
    ) {
      return `claim ${name} must be both ${JSON.stringify(existing)} and one of ${JSON.stringify(values)}`;
    }
    if (existing === undefined) claims[name] = values[0];
  }
  return claims;
}
