// What a publish changes, for the people who approve it: the config about to go live compared with the one that is
// live, area by area (issuers, policy, routes and weights, the rest), with every change that lets more callers in,
// or more of a caller's request through, marked as widening access. The route action puts this in the job summary.
import type { GatewayConfig, IssuerConfig, Principal, RouteConfig, Rule } from "./schema.ts";

export type ConfigArea = "issuers" | "policy" | "routes" | "gateway";

export interface ConfigChange {
  area: ConfigArea;
  /** Where in the config, by names rather than indexes: `issuers.entra.audiences`, `routes.credit.weights`. */
  path: string;
  kind: "added" | "removed" | "changed";
  /** One sentence for the summary, naming the values before and after. */
  summary: string;
  /** More tokens accepted, more callers granted, more granted to a caller, or more of a request forwarded. */
  widensAccess: boolean;
}

export interface ConfigDiff {
  /** Nothing was live to compare with: everything in the config is new. */
  firstPublish: boolean;
  changes: ConfigChange[];
  widensAccess: boolean;
}

export function diffGatewayConfigs(before: GatewayConfig | undefined, after: GatewayConfig): ConfigDiff {
  const changes: ConfigChange[] = [];
  const previous: GatewayConfig = before ?? {
    issuers: [],
    policy: { roles: {}, rules: [] },
    routes: [],
    status: after.status,
    audit: after.audit,
    serverTiming: after.serverTiming,
    forwardHeaders: [],
  };
  diffIssuers(previous.issuers, after.issuers, changes);
  diffPolicy(previous.policy, after.policy, changes);
  diffRoutes(previous.routes, after.routes, changes);
  diffGateway(previous, after, changes);
  return {
    firstPublish: before === undefined,
    changes,
    widensAccess: changes.some((change) => change.widensAccess),
  };
}

function byName<T extends { name: string }>(items: readonly T[]): Map<string, T> {
  return new Map(items.map((item) => [item.name, item]));
}

function show(value: unknown): string {
  if (value === undefined) return "(none)";
  if (Array.isArray(value))
    return value.length === 0 ? "(none)" : value.map((item) => String(item)).join(", ");
  return typeof value === "string" ? value : JSON.stringify(value);
}

function sameJson(a: unknown, b: unknown): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}

/** Members of `after` that `before` lacks. */
function gained<T>(before: readonly T[] | undefined, after: readonly T[] | undefined): T[] {
  const had = new Set(before ?? []);
  return (after ?? []).filter((item) => !had.has(item));
}

function diffIssuers(before: IssuerConfig[], after: IssuerConfig[], changes: ConfigChange[]): void {
  const old = byName(before);
  const now = byName(after);
  for (const [name, issuer] of now) {
    const was = old.get(name);
    if (!was) {
      changes.push({
        area: "issuers",
        path: `issuers.${name}`,
        kind: "added",
        summary: `new issuer ${name} (${issuer.issuer}): its tokens can now be accepted`,
        widensAccess: true,
      });
      continue;
    }
    const field = (
      key: string,
      widens: boolean,
      beforeValue: unknown = (was as unknown as Record<string, unknown>)[key],
      afterValue: unknown = (issuer as unknown as Record<string, unknown>)[key],
    ) => {
      if (sameJson(beforeValue, afterValue)) return;
      changes.push({
        area: "issuers",
        path: `issuers.${name}.${key}`,
        kind: "changed",
        summary: `${name} ${key}: ${show(beforeValue)} → ${show(afterValue)}`,
        widensAccess: widens,
      });
    };
    // A different `iss` or key set is a different trust root: whoever controls it can now mint accepted tokens.
    field("issuer", true);
    field("jwksUri", true);
    field(
      "audiences",
      was.audiences === undefined
        ? false
        : gained(was.audiences, issuer.audiences).length > 0 || issuer.audiences === undefined,
    );
    field("algorithms", gained(was.algorithms, issuer.algorithms).length > 0);
    field("clockToleranceSeconds", issuer.clockToleranceSeconds > was.clockToleranceSeconds);
    field(
      "maxTokenAgeSeconds",
      issuer.maxTokenAgeSeconds === undefined ||
        (was.maxTokenAgeSeconds !== undefined && issuer.maxTokenAgeSeconds > was.maxTokenAgeSeconds),
    );
    field(
      "tenants",
      was.tenants !== undefined &&
        (issuer.tenants === undefined || gained(was.tenants, issuer.tenants).length > 0),
    );
    field("typ", was.typ !== undefined);
    field("roleClaims", gained(was.roleClaims, issuer.roleClaims).length > 0);
    field("requireKid", was.requireKid && !issuer.requireKid);
    field("revokedJti", gained(issuer.revokedJti, was.revokedJti).length > 0);
    field("keyMaxAgeSeconds", false);
    field("refetchCooldownSeconds", false);
  }
  for (const [name, issuer] of old) {
    if (!now.has(name)) {
      changes.push({
        area: "issuers",
        path: `issuers.${name}`,
        kind: "removed",
        summary: `issuer ${name} (${issuer.issuer}) removed: its tokens are refused`,
        widensAccess: false,
      });
    }
  }
}

const PRINCIPAL_FIELDS = [
  "issuers",
  "sub",
  "oid",
  "tid",
  "group",
  "app",
  "role",
  "repositoryId",
  "repositoryOwnerId",
  "environment",
  "jobWorkflowRef",
] as const;

/** Conditions of a principal, flattened to name → accepted values (all must hold; any value of one matches). */
function conditions(principal: Principal): Map<string, string[]> {
  const result = new Map<string, string[]>();
  for (const field of PRINCIPAL_FIELDS) {
    const values = principal[field];
    if (values) result.set(field, values);
  }
  for (const [claim, values] of Object.entries(principal.claims ?? {})) result.set(`claims.${claim}`, values);
  return result;
}

/** A matcher matches more callers when it drops a condition or accepts another value for one it keeps. */
function matchesMore(before: Principal, after: Principal): boolean {
  const old = conditions(before);
  const now = conditions(after);
  for (const [field, values] of old) {
    const kept = now.get(field);
    if (!kept || gained(values, kept).length > 0) return true;
  }
  return false;
}

function describeMatch(principal: Principal): string {
  const parts = [...conditions(principal)].map(([field, values]) => `${field} ∈ {${values.join(", ")}}`);
  return parts.length === 0 ? "everyone" : parts.join(" and ");
}

function diffPolicy(
  before: GatewayConfig["policy"],
  after: GatewayConfig["policy"],
  changes: ConfigChange[],
): void {
  for (const [role, grants] of Object.entries(after.roles)) {
    const had = before.roles[role];
    if (!had) {
      changes.push({
        area: "policy",
        path: `policy.roles.${role}`,
        kind: "added",
        summary: `new role ${role} grants ${show(grants)}`,
        widensAccess: true,
      });
      continue;
    }
    const added = gained(had, grants);
    const removed = gained(grants, had);
    if (added.length > 0 || removed.length > 0) {
      changes.push({
        area: "policy",
        path: `policy.roles.${role}`,
        kind: "changed",
        summary: `role ${role}: ${[
          added.length > 0 ? `grants ${show(added)} added` : "",
          removed.length > 0 ? `grants ${show(removed)} removed` : "",
        ]
          .filter(Boolean)
          .join("; ")}`,
        widensAccess: added.length > 0,
      });
    }
  }
  for (const role of Object.keys(before.roles)) {
    if (!(role in after.roles)) {
      changes.push({
        area: "policy",
        path: `policy.roles.${role}`,
        kind: "removed",
        summary: `role ${role} removed`,
        widensAccess: false,
      });
    }
  }
  const old = byName<Rule>(before.rules);
  const now = byName<Rule>(after.rules);
  for (const [name, rule] of now) {
    const was = old.get(name);
    if (!was) {
      changes.push({
        area: "policy",
        path: `policy.rules.${name}`,
        kind: "added",
        summary: `new rule ${name}: ${describeMatch(rule.match)} → roles ${show(rule.roles)}`,
        widensAccess: true,
      });
      continue;
    }
    if (!sameJson(was.match, rule.match)) {
      changes.push({
        area: "policy",
        path: `policy.rules.${name}.match`,
        kind: "changed",
        summary: `rule ${name} matches ${describeMatch(rule.match)} (was ${describeMatch(was.match)})`,
        widensAccess: matchesMore(was.match, rule.match),
      });
    }
    if (!sameJson(was.roles, rule.roles)) {
      changes.push({
        area: "policy",
        path: `policy.rules.${name}.roles`,
        kind: "changed",
        summary: `rule ${name} grants roles ${show(rule.roles)} (was ${show(was.roles)})`,
        widensAccess: gained(was.roles, rule.roles).length > 0,
      });
    }
  }
  for (const name of old.keys()) {
    if (!now.has(name)) {
      changes.push({
        area: "policy",
        path: `policy.rules.${name}`,
        kind: "removed",
        summary: `rule ${name} removed`,
        widensAccess: false,
      });
    }
  }
}

function weights(route: RouteConfig): string {
  return route.deployments.map((deployment) => `${deployment.name} ${deployment.weight}`).join(", ");
}

function describeAuth(route: RouteConfig): string {
  const auth = route.upstreamAuth;
  return auth.mode === "key"
    ? `key ${auth.active} (${auth.active === "primary" ? auth.primarySecret : auth.secondarySecret})`
    : `aml_token (${auth.tokenSecret})`;
}

function diffRoutes(before: RouteConfig[], after: RouteConfig[], changes: ConfigChange[]): void {
  const old = byName(before);
  const now = byName(after);
  for (const [name, route] of now) {
    const was = old.get(name);
    if (!was) {
      // A route serves no one until a role grants score on it, and that grant is listed under policy.
      changes.push({
        area: "routes",
        path: `routes.${name}`,
        kind: "added",
        summary: `new route ${name} ${route.path} → ${route.scoringUri} (${weights(route)})`,
        widensAccess: false,
      });
      continue;
    }
    const change = (key: string, summary: string, widens = false) =>
      changes.push({
        area: "routes",
        path: `routes.${name}.${key}`,
        kind: "changed",
        summary,
        widensAccess: widens,
      });
    if (was.path !== route.path) change("path", `route ${name} path ${was.path} → ${route.path}`);
    if (!sameJson(was.methods, route.methods)) {
      change(
        "methods",
        `route ${name} methods ${show(was.methods)} → ${show(route.methods)}`,
        gained(was.methods, route.methods).length > 0,
      );
    }
    if (was.scoringUri !== route.scoringUri) {
      change("scoringUri", `route ${name} scoring URI ${was.scoringUri} → ${route.scoringUri}`);
    }
    if (weights(was) !== weights(route)) {
      change("weights", `route ${name} weights ${weights(was)} → ${weights(route)}`);
    }
    if (!sameJson(was.sticky, route.sticky)) {
      change(
        "sticky",
        `route ${name} sticky key ${was.sticky.claim ?? "iss+sub"} → ${route.sticky.claim ?? "iss+sub"}`,
      );
    }
    const oldCohorts = byName(was.cohorts);
    for (const cohort of route.cohorts) {
      const had = oldCohorts.get(cohort.name);
      if (!had || !sameJson(had, cohort)) {
        change(
          `cohorts.${cohort.name}`,
          `route ${name} cohort ${cohort.name}: ${describeMatch(cohort.match)} → ${cohort.deployment}${had ? ` (was ${describeMatch(had.match)} → ${had.deployment})` : " (new)"}`,
        );
      }
    }
    for (const cohort of was.cohorts) {
      if (!route.cohorts.some((kept) => kept.name === cohort.name)) {
        change(`cohorts.${cohort.name}`, `route ${name} cohort ${cohort.name} removed`);
      }
    }
    if (!sameJson(was.limits, route.limits)) {
      change(
        "limits",
        `route ${name} limits body ≤ ${was.limits.maxBodyBytes} B, timeout ${was.limits.timeoutMs} ms → body ≤ ${route.limits.maxBodyBytes} B, timeout ${route.limits.timeoutMs} ms`,
      );
    }
    if (!sameJson(was.upstreamAuth, route.upstreamAuth)) {
      change(
        "upstreamAuth",
        `route ${name} upstream credential ${describeAuth(was)} → ${describeAuth(route)}`,
      );
    }
  }
  for (const [name, route] of old) {
    if (!now.has(name)) {
      changes.push({
        area: "routes",
        path: `routes.${name}`,
        kind: "removed",
        summary: `route ${name} ${route.path} removed: its callers get 404`,
        widensAccess: false,
      });
    }
  }
}

function diffGateway(before: GatewayConfig, after: GatewayConfig, changes: ConfigChange[]): void {
  const added = gained(before.forwardHeaders, after.forwardHeaders);
  if (!sameJson(before.forwardHeaders, after.forwardHeaders)) {
    changes.push({
      area: "gateway",
      path: "forwardHeaders",
      kind: "changed",
      summary: `client headers forwarded to Azure ML: ${show(before.forwardHeaders)} → ${show(after.forwardHeaders)}`,
      widensAccess: added.length > 0,
    });
  }
  if (before.status.path !== after.status.path) {
    changes.push({
      area: "gateway",
      path: "status.path",
      kind: "changed",
      summary: `status route ${before.status.path} → ${after.status.path}`,
      widensAccess: false,
    });
  }
  if (!sameJson(before.audit, after.audit)) {
    changes.push({
      area: "gateway",
      path: "audit",
      kind: "changed",
      summary: `audit ${JSON.stringify(before.audit)} → ${JSON.stringify(after.audit)}`,
      widensAccess: false,
    });
  }
  if (before.serverTiming !== after.serverTiming) {
    changes.push({
      area: "gateway",
      path: "serverTiming",
      kind: "changed",
      summary: `Server-Timing header ${before.serverTiming ? "on" : "off"} → ${after.serverTiming ? "on" : "off"}`,
      widensAccess: false,
    });
  }
}

const AREA_TITLES: Record<ConfigArea, string> = {
  issuers: "Issuers",
  policy: "Policy",
  routes: "Routes and weights",
  gateway: "Gateway",
};

/** Markdown for a job summary: a headline, access-widening changes first and marked, then the rest by area. */
export function formatConfigDiffMarkdown(diff: ConfigDiff): string {
  const lines: string[] = [];
  if (diff.changes.length === 0)
    return "No change to the gateway config: the same issuers, policy and routes.\n";
  if (diff.firstPublish)
    lines.push("First publish: nothing was live to compare with; everything below is new.", "");
  const widening = diff.changes.filter((change) => change.widensAccess);
  if (widening.length > 0) {
    lines.push(`**⚠ ${widening.length} change${widening.length === 1 ? "" : "s"} widen access:**`, "");
    for (const change of widening) lines.push(`- ⚠ ${escapeMarkdown(change.summary)}`);
    lines.push("");
  } else {
    lines.push("No change widens access.", "");
  }
  for (const area of Object.keys(AREA_TITLES) as ConfigArea[]) {
    const inArea = diff.changes.filter((change) => change.area === area);
    if (inArea.length === 0) continue;
    lines.push(`#### ${AREA_TITLES[area]}`, "", "| change | path | widens access |", "| --- | --- | --- |");
    for (const change of inArea) {
      lines.push(
        `| ${escapeMarkdown(change.summary)} | \`${change.path}\` | ${change.widensAccess ? "⚠ yes" : "no"} |`,
      );
    }
    lines.push("");
  }
  return `${lines.join("\n")}\n`;
}

/** Config values are user text: keep them from breaking the table or turning into markup. */
function escapeMarkdown(text: string): string {
  return text.replace(/[|\\`*_<>[\]]/g, (character) => `\\${character}`).replace(/\r?\n/g, " ");
}
