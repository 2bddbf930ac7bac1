// Chooses the Azure ML deployment for a request: a pin (only for callers granted pin-deployment), else the first
// matching cohort, else a sticky weighted choice. The sticky point is a hash of the issuer and the subject (or a
// configured claim), so one identity always lands on the same deployment while the weights stay the same.
import type { RouteConfig } from "../config/schema.ts";
import { type Caller, principalMatches } from "./policy.ts";

export type Assignment =
  | { kind: "pinned"; deployment: string }
  | { kind: "cohort"; deployment: string; cohort: string }
  | { kind: "weighted"; deployment: string }
  | { kind: "none" };

const encoder = new TextEncoder();

/** A point in [0, 1) from SHA-256 of the sticky key: uniform, stable, and not steerable by a caller. */
export async function stickyPoint(issuer: string, key: string): Promise<number> {
  const digest = await crypto.subtle.digest("SHA-256", encoder.encode(`${issuer}\n${key}`));
  return new DataView(digest).getUint32(0) / 2 ** 32;
}

export function pickByWeight(deployments: RouteConfig["deployments"], point: number): string | undefined {
  const total = deployments.reduce((sum, deployment) => sum + deployment.weight, 0);
  if (total <= 0) return undefined;
  let cumulative = 0;
  const target = point * total;
  for (const deployment of deployments) {
    if (deployment.weight <= 0) continue;
    cumulative += deployment.weight;
    if (target < cumulative) return deployment.name;
  }
  // Floating-point rounding can leave target ≥ the last sum: the last deployment with weight takes it.
  return deployments.findLast((deployment) => deployment.weight > 0)?.name;
}

export async function assignDeployment(
  route: RouteConfig,
  caller: Caller,
  pinned: string | undefined,
  point: () => Promise<number>,
): Promise<Assignment> {
  if (pinned !== undefined) return { kind: "pinned", deployment: pinned };
  for (const cohort of route.cohorts) {
    if (principalMatches(cohort.match, caller)) {
      return { kind: "cohort", deployment: cohort.deployment, cohort: cohort.name };
    }
  }
  const deployment = pickByWeight(route.deployments, await point());
  return deployment === undefined ? { kind: "none" } : { kind: "weighted", deployment };
}
