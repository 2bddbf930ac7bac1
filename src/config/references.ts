// Checks what the schema cannot see field by field: that names are unique and that every reference (a rule's roles,
// a grant's route, a match's issuers, a cohort's deployment) names something the config defines. A dangling
// reference would not fail loudly at runtime: it would silently grant nothing, or route nowhere.
// Written against the raw value rather than the parsed type, so that it runs, and reports, even when the schema
// has found problems elsewhere in the file: the user gets every issue in one pass.
import type { PathSegment } from "./errors.ts";
import { closest } from "./spelling.ts";

export interface ReferenceIssue {
  segments: PathSegment[];
  code: string;
  message: string;
}

const DEFAULT_STATUS_PATH = "/.aml-edge/status";

export function checkReferences(config: unknown): ReferenceIssue[] {
  const issues: ReferenceIssue[] = [];
  const report = (segments: PathSegment[], code: string, message: string) =>
    issues.push({ segments, code, message });
  const root = asRecord(config);

  const issuers = asList(root.issuers).map(asRecord);
  const issuerNames = strings(issuers.map((issuer) => issuer.name));
  firstOccurrence(
    issuers,
    (issuer) => asString(issuer.name),
    (index, first, name) =>
      report(
        ["issuers", index, "name"],
        "duplicate-issuer-name",
        `the issuer name ${quote(name)} is already used by issuers[${first}]; give each issuer its own name`,
      ),
  );
  firstOccurrence(
    issuers,
    (issuer) => asString(issuer.issuer),
    (index, first, iss) =>
      report(
        ["issuers", index, "issuer"],
        "duplicate-issuer",
        `${quote(iss)} is already the issuer of issuers[${first}]; configure each iss value once (keys and audiences are chosen by issuer, so two entries for one issuer would be ambiguous)`,
      ),
  );

  const routes = asList(root.routes).map(asRecord);
  const routeNames = strings(routes.map((route) => route.name));
  firstOccurrence(
    routes,
    (route) => asString(route.name),
    (index, first, name) =>
      report(
        ["routes", index, "name"],
        "duplicate-route-name",
        `the route name ${quote(name)} is already used by routes[${first}]; give each route its own name`,
      ),
  );
  firstOccurrence(
    routes,
    (route) => asString(route.path),
    (index, first, path) =>
      report(
        ["routes", index, "path"],
        "duplicate-route-path",
        `the path ${quote(path)} is already served by routes[${first}]; give each route its own path`,
      ),
  );

  const status = root.status === undefined ? undefined : asRecord(root.status);
  const statusPath = status === undefined ? DEFAULT_STATUS_PATH : asString(status.path);
  routes.forEach((route, index) => {
    if (statusPath !== undefined && route.path === statusPath) {
      report(
        ["routes", index, "path"],
        "status-path-conflict",
        `${quote(statusPath)} is also the gateway's status path (status.path${status === undefined ? ", by default" : ""}); give the route or the status endpoint (status: {path: ...}) a different path`,
      );
    }
  });

  const policy = asRecord(root.policy);
  const roles = asRecord(policy.roles);
  const roleNames = Object.keys(roles);
  for (const [role, grants] of Object.entries(roles)) {
    asList(grants).forEach((grant, index) => {
      const route =
        typeof grant === "string" ? /^(?:score|pin-deployment):(.+)$/.exec(grant)?.[1] : undefined;
      if (route !== undefined && !routeNames.includes(route)) {
        report(
          ["policy", "roles", role, index],
          "unknown-route",
          `grants ${quote(String(grant))} on the route ${quote(route)}, which is not defined${didYouMean(route, routeNames)}; name one of the routes: ${listOf(routeNames)}`,
        );
      }
    });
  }

  const rules = asList(policy.rules).map(asRecord);
  firstOccurrence(
    rules,
    (rule) => asString(rule.name),
    (index, first, name) =>
      report(
        ["policy", "rules", index, "name"],
        "duplicate-rule-name",
        `the rule name ${quote(name)} is already used by policy.rules[${first}]; give each rule its own name (audit records name the rule)`,
      ),
  );
  rules.forEach((rule, index) => {
    asList(rule.roles).forEach((role, roleIndex) => {
      if (typeof role === "string" && !roleNames.includes(role)) {
        report(
          ["policy", "rules", index, "roles", roleIndex],
          "unknown-role",
          `names the role ${quote(role)}, which policy.roles does not define${didYouMean(role, roleNames)}; name one of: ${listOf(roleNames)}`,
        );
      }
    });
    checkMatchIssuers(asRecord(rule.match), ["policy", "rules", index, "match"], issuerNames, report);
  });

  routes.forEach((route, routeIndex) => {
    const deployments = asList(route.deployments).map(asRecord);
    const deploymentNames = strings(deployments.map((deployment) => deployment.name));
    // Azure ML deployment names are case-insensitive: `Blue` and `blue` are the same deployment.
    firstOccurrence(
      deployments,
      (deployment) => asString(deployment.name)?.toLowerCase(),
      (index, first) =>
        report(
          ["routes", routeIndex, "deployments", index, "name"],
          "duplicate-deployment",
          `the deployment ${quote(String(deployments[index]?.name))} is already listed as routes[${routeIndex}].deployments[${first}] (Azure ML deployment names are case-insensitive); list each deployment once, with its whole weight`,
        ),
    );
    const cohorts = asList(route.cohorts).map(asRecord);
    firstOccurrence(
      cohorts,
      (cohort) => asString(cohort.name),
      (index, first, name) =>
        report(
          ["routes", routeIndex, "cohorts", index, "name"],
          "duplicate-cohort-name",
          `the cohort name ${quote(name)} is already used by routes[${routeIndex}].cohorts[${first}]; give each cohort of a route its own name`,
        ),
    );
    cohorts.forEach((cohort, cohortIndex) => {
      const deployment = asString(cohort.deployment);
      if (deployment !== undefined && !deploymentNames.includes(deployment)) {
        report(
          ["routes", routeIndex, "cohorts", cohortIndex, "deployment"],
          "unknown-deployment",
          `sends the cohort to ${quote(deployment)}, which is not one of this route's deployments${didYouMean(deployment, deploymentNames)}; name one of: ${listOf(deploymentNames)}`,
        );
      }
      checkMatchIssuers(
        asRecord(cohort.match),
        ["routes", routeIndex, "cohorts", cohortIndex, "match"],
        issuerNames,
        report,
      );
    });
  });

  return issues;
}

function checkMatchIssuers(
  match: Record<string, unknown>,
  segments: PathSegment[],
  issuerNames: readonly string[],
  report: (segments: PathSegment[], code: string, message: string) => void,
): void {
  asList(match.issuers).forEach((issuer, index) => {
    if (typeof issuer === "string" && !issuerNames.includes(issuer)) {
      report(
        [...segments, "issuers", index],
        "unknown-issuer",
        `names the issuer ${quote(issuer)}, which is not defined${didYouMean(issuer, issuerNames)}; name one of the issuers by its name: ${listOf(issuerNames)}`,
      );
    }
  });
}

/** Calls `onDuplicate` for every item whose key an earlier item already had. */
function firstOccurrence<T>(
  items: readonly T[],
  keyOf: (item: T) => string | undefined,
  onDuplicate: (index: number, firstIndex: number, key: string) => void,
): void {
  const seen = new Map<string, number>();
  items.forEach((item, index) => {
    const key = keyOf(item);
    if (key === undefined) return;
    const first = seen.get(key);
    if (first === undefined) seen.set(key, index);
    else onDuplicate(index, first, key);
  });
}

function didYouMean(name: string, names: readonly string[]): string {
  const suggestion = closest(name, names);
  return suggestion === undefined ? "" : ` (did you mean ${quote(suggestion)}?)`;
}

function listOf(names: readonly string[]): string {
  return names.length === 0 ? "(none are defined)" : [...new Set(names)].join(", ");
}

function quote(value: string): string {
  return JSON.stringify(value);
}

function asRecord(value: unknown): Record<string, unknown> {
  return value !== null && typeof value === "object" && !Array.isArray(value)
    ? (value as Record<string, unknown>)
    : {};
}

function asList(value: unknown): unknown[] {
  return Array.isArray(value) ? value : [];
}

function asString(value: unknown): string | undefined {
  return typeof value === "string" ? value : undefined;
}

function strings(values: readonly unknown[]): string[] {
  return values.filter((value): value is string => typeof value === "string");
}
