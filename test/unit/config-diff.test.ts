// The config diff a release manager reads before a publish: each kind of change is found, named by path, and
// marked as widening access exactly when it lets more callers in or grants them more.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { diffGatewayConfigs, formatConfigDiffMarkdown } from "../../src/config/diff.ts";
import { parseGatewayConfig } from "../../src/config/index.ts";
import type { GatewayConfig } from "../../src/config/schema.ts";

const example = parseGatewayConfig(
  readFileSync(join(import.meta.dirname, "../../src/examples/gateway.yaml"), "utf8"),
  "gateway.yaml",
);

/** A deep copy to edit: the diff must see two independent configs. */
function edited(change: (config: GatewayConfig) => void): GatewayConfig {
  const copy = structuredClone(example);
  change(copy);
  return copy;
}

function only(before: GatewayConfig, after: GatewayConfig) {
  const diff = diffGatewayConfigs(before, after);
  expect(diff.changes).toHaveLength(1);
  return diff.changes[0];
}

describe("config diff", () => {
  it("finds nothing between a config and itself", () => {
    const diff = diffGatewayConfigs(example, structuredClone(example));
    expect(diff).toEqual({ firstPublish: false, changes: [], widensAccess: false });
    expect(formatConfigDiffMarkdown(diff)).toContain("No change to the gateway config");
  });

  it("treats a first publish as all new, widening access", () => {
    const diff = diffGatewayConfigs(undefined, example);
    expect(diff.firstPublish).toBe(true);
    expect(diff.widensAccess).toBe(true);
    expect(diff.changes.map((change) => change.path)).toEqual(
      expect.arrayContaining(["issuers.example", "policy.rules.scorers", "routes.credit"]),
    );
    expect(formatConfigDiffMarkdown(diff)).toMatch(/^First publish/);
  });

  it("reports weights as a routing change that does not widen access", () => {
    const change = only(
      example,
      edited((config) => {
        const deployments = config.routes[0]?.deployments ?? [];
        if (deployments[0]) deployments[0].weight = 50;
        if (deployments[1]) deployments[1].weight = 50;
      }),
    );
    expect(change).toMatchObject({
      area: "routes",
      path: "routes.credit.weights",
      widensAccess: false,
      summary: "route credit weights blue 90, green 10 → blue 50, green 50",
    });
  });

  it.each([
    [
      "an added audience",
      (c: GatewayConfig) => c.issuers[0]?.audiences?.push("api://other"),
      "issuers.example.audiences",
    ],
    [
      "a removed audience list",
      (c: GatewayConfig) => (c.issuers[0] ? delete c.issuers[0].audiences : undefined),
      "issuers.example.audiences",
    ],
    [
      "an added algorithm",
      (c: GatewayConfig) => c.issuers[0]?.algorithms.push("PS256"),
      "issuers.example.algorithms",
    ],
    [
      "a larger clock tolerance",
      (c: GatewayConfig) => {
        if (c.issuers[0]) c.issuers[0].clockToleranceSeconds = 60;
      },
      "issuers.example.clockToleranceSeconds",
    ],
    [
      "a longer max token age",
      (c: GatewayConfig) => {
        if (c.issuers[0]) c.issuers[0].maxTokenAgeSeconds = 7200;
      },
      "issuers.example.maxTokenAgeSeconds",
    ],
    [
      "kid no longer required",
      (c: GatewayConfig) => {
        if (c.issuers[0]) c.issuers[0].requireKid = false;
      },
      "issuers.example.requireKid",
    ],
    [
      "a new key-set URL",
      (c: GatewayConfig) => {
        if (c.issuers[0]) c.issuers[0].jwksUri = "http://127.0.0.1:9999/jwks";
      },
      "issuers.example.jwksUri",
    ],
    [
      "a grant added to a role",
      (c: GatewayConfig) => c.policy.roles.scorer?.push("read-status"),
      "policy.roles.scorer",
    ],
    [
      "a rule matching another role value",
      (c: GatewayConfig) => c.policy.rules[0]?.match.role?.push("ml.guest"),
      "policy.rules.scorers.match",
    ],
    [
      "a rule dropping its issuer restriction",
      (c: GatewayConfig) => {
        if (c.policy.rules[0]) delete c.policy.rules[0].match.issuers;
      },
      "policy.rules.scorers.match",
    ],
    [
      "a rule granting another role",
      (c: GatewayConfig) => c.policy.rules[0]?.roles.push("operator"),
      "policy.rules.scorers.roles",
    ],
    ["a header forwarded upstream", (c: GatewayConfig) => c.forwardHeaders.push("x-user"), "forwardHeaders"],
  ])("marks %s as widening access", (_name, change, path) => {
    const result = only(example, edited(change as (config: GatewayConfig) => void));
    expect(result?.path).toBe(path);
    expect(result?.widensAccess).toBe(true);
  });

  it.each([
    [
      "a removed audience",
      (c: GatewayConfig) => {
        if (c.issuers[0]) c.issuers[0].audiences = [];
      },
      "issuers.example.audiences",
    ],
    [
      "a smaller clock tolerance",
      (c: GatewayConfig) => {
        if (c.issuers[0]) c.issuers[0].clockToleranceSeconds = 5;
      },
      "issuers.example.clockToleranceSeconds",
    ],
    [
      "a revoked jti",
      (c: GatewayConfig) => c.issuers[0]?.revokedJti.push("abc"),
      "issuers.example.revokedJti",
    ],
    [
      "a grant removed from a role",
      (c: GatewayConfig) => {
        c.policy.roles["release-manager"] = ["score:credit"];
      },
      "policy.roles.release-manager",
    ],
    [
      "a rule with an added condition",
      (c: GatewayConfig) => {
        if (c.policy.rules[0]) c.policy.rules[0].match.group = ["scoring"];
      },
      "policy.rules.scorers.match",
    ],
    [
      "the active upstream key",
      (c: GatewayConfig) => {
        const auth = c.routes[0]?.upstreamAuth;
        if (auth?.mode === "key") auth.active = "secondary";
      },
      "routes.credit.upstreamAuth",
    ],
  ])("does not mark %s as widening access", (_name, change, path) => {
    const result = only(example, edited(change as (config: GatewayConfig) => void));
    expect(result?.path).toBe(path);
    expect(result?.widensAccess).toBe(false);
  });

  it("lists removals of issuers, rules and routes without marking them", () => {
    const after = edited((config) => {
      config.policy.rules = config.policy.rules.filter((rule) => rule.name !== "operators");
    });
    const diff = diffGatewayConfigs(example, after);
    expect(diff.changes).toEqual([
      expect.objectContaining({ path: "policy.rules.operators", kind: "removed", widensAccess: false }),
    ]);
  });

  it("renders widening changes first and escapes config text", () => {
    const after = edited((config) => {
      config.issuers[0]?.audiences?.push("api://x|<b>");
      const deployments = config.routes[0]?.deployments ?? [];
      if (deployments[0]) deployments[0].weight = 80;
      if (deployments[1]) deployments[1].weight = 20;
    });
    const markdown = formatConfigDiffMarkdown(diffGatewayConfigs(example, after));
    expect(markdown.indexOf("⚠ 1 change widen")).toBeLessThan(markdown.indexOf("#### Routes and weights"));
    expect(markdown).toContain("api://x\\|\\<b\\>");
    expect(markdown).not.toContain("<b>");
    expect(markdown).toContain(
      "| route credit weights blue 90, green 10 → blue 80, green 20 | `routes.credit.weights` | no |",
    );
  });
});
