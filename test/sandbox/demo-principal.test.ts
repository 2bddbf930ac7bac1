import { describe, expect, it } from "vitest";
import { DEMO_SUBJECT, demoPrincipal } from "../../src/cli/demo-principal.ts";
import { type GatewayConfig, type GatewayConfigInput, gatewayConfigSchema } from "../../src/config/schema.ts";
import { grantsFor, tokenRoles } from "../../src/gateway/policy.ts";

function config(overrides: Partial<GatewayConfigInput>): GatewayConfig {
  return gatewayConfigSchema.parse({
    issuers: [
      {
        name: "entra",
        issuer: "https://login.example.test/t-1/v2.0",
        jwksUri: "http://127.0.0.1:9/keys",
        audiences: ["api://credit", "api://other"],
        algorithms: ["RS256"],
        tenants: ["t-1", "t-2"],
        maxTokenAgeSeconds: 600,
        roleClaims: ["scp", "roles"],
      },
      {
        name: "github",
        issuer: "https://token.actions.githubusercontent.com",
        jwksUri: "http://127.0.0.1:9/gh",
        audiences: ["aml-edge"],
        algorithms: ["RS256"],
      },
    ],
    policy: {
      roles: { scorer: ["score:credit"], viewer: ["read-status"] },
      rules: [
        { name: "viewers", match: { role: ["status.read"] }, roles: ["viewer"] },
        {
          name: "ci",
          match: { issuers: ["github"], repositoryId: ["123"], environment: ["prod"] },
          roles: ["scorer"],
        },
        {
          name: "analysts",
          match: {
            issuers: ["entra"],
            role: ["Credit.Score"],
            group: ["g-analysts"],
            app: ["app-1"],
            claims: { department: ["risk"] },
          },
          roles: ["scorer"],
        },
      ],
    },
    routes: [
      {
        name: "credit",
        path: "/v1/credit/score",
        scoringUri: "http://127.0.0.1:9/score",
        deployments: [{ name: "blue", weight: 100 }],
        upstreamAuth: { mode: "key", primarySecret: "AML_KEY_PRIMARY", secondarySecret: "AML_KEY_SECONDARY" },
      },
    ],
    ...overrides,
  });
}

describe("demoPrincipal", () => {
  it("derives claims that the gateway's own policy grants score on the route", () => {
    const cfg = config({});
    const principal = demoPrincipal(cfg, "credit", new Set(["entra"]));
    if ("reason" in principal) throw new Error(principal.reason);
    expect(principal.rule).toBe("analysts");
    expect(principal.issuer.name).toBe("entra");
    expect(principal.lifetimeSeconds).toBe(600);
    expect(principal.claims).toEqual({
      sub: DEMO_SUBJECT,
      aud: "api://credit",
      tid: "t-1",
      groups: ["g-analysts"],
      azp: "app-1",
      scp: "Credit.Score",
      department: "risk",
    });
    // The gateway's policy evaluation agrees.
    const grants = grantsFor(cfg.policy, {
      issuerName: "entra",
      claims: principal.claims,
      roles: tokenRoles(principal.claims, ["scp", "roles"]),
    });
    expect(grants.has("score", "credit")).toBe(true);
  });

  it("uses the first rule whose issuer can be minted for", () => {
    const principal = demoPrincipal(config({}), "credit", new Set(["github", "entra"]));
    if ("reason" in principal) throw new Error(principal.reason);
    expect(principal.rule).toBe("ci");
    expect(principal.claims).toEqual({
      sub: DEMO_SUBJECT,
      aud: "aml-edge",
      repository_id: "123",
      environment: "prod",
    });
    expect(principal.lifetimeSeconds).toBe(3600);
  });

  it("says why when no local issuer can satisfy a granting rule", () => {
    const none = demoPrincipal(config({}), "credit", new Set());
    expect(none).toEqual({
      reason: expect.stringContaining("rule ci: none of its issuers has a local token issuer"),
    });
    expect(demoPrincipal(config({}), "fraud", new Set(["entra"]))).toEqual({
      reason: "no role in policy.roles grants score:fraud",
    });
  });

  it("refuses contradictory conditions instead of minting a token the gateway would refuse", () => {
    const cfg = config({});
    const analysts = cfg.policy.rules[2];
    if (analysts === undefined) throw new Error("fixture changed");
    analysts.match.tid = ["t-9"];
    const result = demoPrincipal(cfg, "credit", new Set(["entra"]));
    expect(result).toEqual({
      reason: expect.stringContaining("tid values are not among the issuer's tenants"),
    });

    analysts.match.tid = undefined;
    analysts.match.claims = { sub: ["someone-else"] };
    analysts.match.sub = ["me"];
    expect(demoPrincipal(cfg, "credit", new Set(["entra"]))).toEqual({
      reason: expect.stringContaining("claim sub must be both"),
    });
  });
});
