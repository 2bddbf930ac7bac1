// What the gateway derives from a verified token: the identity fields of the audit record, roles and grants, and
// sticky points. A client sends the same token many times and the verification cache hands back the same claims
// object for it, so all of this is computed once per token and config, not once per request.
import type { Policy, RouteConfig } from "../config/schema.ts";
import { type AuditRecord, actorChain, hashJti } from "./audit.ts";
import { type Caller, type Grants, grantsFor, tokenRoles } from "./policy.ts";
import { stickyPoint } from "./routing.ts";
import type { VerifiedToken } from "./verify.ts";

export type CallerIdentity = Pick<
  AuditRecord,
  "issuer" | "subject" | "oid" | "tid" | "appId" | "actors" | "jtiHash"
>;

export interface CallerContext {
  caller: Caller;
  grants: Grants;
  identity: CallerIdentity;
  /** The caller's point in [0, 1) for the route's sticky key. */
  stickyPoint(route: RouteConfig): Promise<number>;
}

// Keyed by the claims object: a new config or a new key set means a new verification and a new claims object,
// so a context never outlives the policy it was computed under.
const contexts = new WeakMap<object, CallerContext>();

export async function callerContext(verified: VerifiedToken, policy: Policy): Promise<CallerContext> {
  const known = contexts.get(verified.claims);
  if (known) return known;
  const { claims } = verified;
  const issuer = verified.issuer.config;
  const caller: Caller = { issuerName: issuer.name, claims, roles: tokenRoles(claims, issuer.roleClaims) };

  const identity: CallerIdentity = { issuer: issuer.issuer };
  if (typeof claims.sub === "string") identity.subject = claims.sub;
  if (typeof claims.oid === "string") identity.oid = claims.oid;
  if (typeof claims.tid === "string") identity.tid = claims.tid;
  const appId = claims.azp ?? claims.appid;
  if (typeof appId === "string") identity.appId = appId;
  const actors = actorChain(claims);
  if (actors) identity.actors = actors;
  if (typeof claims.jti === "string") identity.jtiHash = await hashJti(issuer.issuer, claims.jti);

  const points = new Map<string, number>();
  const context: CallerContext = {
    caller,
    grants: grantsFor(policy, caller),
    identity,
    async stickyPoint(route) {
      // The sticky key is iss + sub, or iss + the configured claim when the token has it.
      const claimName = route.sticky.claim;
      const claimValue = claimName === undefined ? undefined : claims[claimName];
      const useClaim = typeof claimValue === "string" || typeof claimValue === "number";
      const memoKey = useClaim ? `claim:${claimName}` : "sub";
      let point = points.get(memoKey);
      if (point === undefined) {
        point = await stickyPoint(
          String(claims.iss),
          useClaim ? String(claimValue) : String(claims.sub ?? ""),
        );
        points.set(memoKey, point);
      }
      return point;
    },
  };
  contexts.set(claims, context);
  return context;
}
