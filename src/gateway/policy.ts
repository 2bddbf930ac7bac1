// Authorization: verified claims → gateway roles (by the config's rules) → permissions on routes. Default deny.
// Identity is read from immutable identifiers only (sub, oid, tid, repository ids, ...); mutable claims such as
// email never grant anything unless a config names them explicitly under `claims`.
import type { Permission, Policy, Principal } from "../config/schema.ts";

export type Claims = Record<string, unknown>;

/** Role names a token carries in its issuer's role claims; `scp` is a space-separated list. */
export function tokenRoles(claims: Claims, roleClaims: readonly string[]): string[] {
  const roles: string[] = [];
  for (const claim of roleClaims) {
    const value = claims[claim];
    if (typeof value === "string") {
      roles.push(...(claim === "scp" ? value.split(" ").filter(Boolean) : [value]));
    } else if (Array.isArray(value)) {
      for (const item of value) if (typeof item === "string") roles.push(item);
    }
  }
  return roles;
}

/** True when any of the claim's values (a scalar or an array of scalars) equals an accepted value. */
function claimMatches(value: unknown, accepted: readonly string[]): boolean {
  const values = Array.isArray(value) ? value : [value];
  return values.some(
    (item) => (typeof item === "string" || typeof item === "number") && accepted.includes(String(item)),
  );
}

export interface Caller {
  issuerName: string;
  claims: Claims;
  roles: readonly string[];
}

export function principalMatches(principal: Principal, caller: Caller): boolean {
  const { claims } = caller;
  if (principal.issuers && !principal.issuers.includes(caller.issuerName)) return false;
  const checks: [unknown, readonly string[] | undefined][] = [
    [claims.sub, principal.sub],
    [claims.oid, principal.oid],
    [claims.tid, principal.tid],
    [claims.groups, principal.group],
    [claims.azp ?? claims.appid, principal.app],
    [caller.roles, principal.role],
    [claims.repository_id, principal.repositoryId],
    [claims.repository_owner_id, principal.repositoryOwnerId],
    [claims.environment, principal.environment],
    [claims.job_workflow_ref, principal.jobWorkflowRef],
  ];
  for (const [value, accepted] of checks) {
    if (accepted && !claimMatches(value, accepted)) return false;
  }
  for (const [claim, accepted] of Object.entries(principal.claims ?? {})) {
    if (!claimMatches(claims[claim], accepted)) return false;
  }
  return true;
}

export interface Grants {
  /** Gateway roles the caller holds, in config order. */
  roles: string[];
  has(permission: Permission, route?: string): boolean;
}

export function grantsFor(policy: Policy, caller: Caller): Grants {
  const roles: string[] = [];
  for (const rule of policy.rules) {
    if (!principalMatches(rule.match, caller)) continue;
    for (const role of rule.roles) if (!roles.includes(role)) roles.push(role);
  }
  const granted = new Set<string>();
  for (const role of roles) for (const grant of policy.roles[role] ?? []) granted.add(grant);
  return {
    roles,
    has: (permission, route) =>
      granted.has(permission === "read-status" ? permission : `${permission}:${route}`),
  };
}
