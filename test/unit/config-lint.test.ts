// The security lint, rule by rule: each rule fires on the mistake it exists for, and stays quiet on the nearest
// config that is fine. The production example is the clean baseline every case starts from.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import {
  assertConfigSafe,
  ConfigError,
  type GatewayConfig,
  LINT_CODES,
  type LintCode,
  type LintMode,
  lintConfig,
  parseGatewayConfig,
} from "../../src/config/index.ts";

const PRODUCTION_EXAMPLE = join(import.meta.dirname, "../../src/examples/gateway.production.yaml");
const productionText = readFileSync(PRODUCTION_EXAMPLE, "utf8");

/** A fresh copy of the production example (lint-clean), changed by `change`. */
function productionWith(change: (config: GatewayConfig) => void = () => {}): GatewayConfig {
  const config = parseGatewayConfig(productionText, PRODUCTION_EXAMPLE);
  change(config);
  return config;
}

function at<T>(items: readonly T[], index: number): T {
  const item = items[index];
  if (item === undefined) throw new Error(`no item at index ${index}`);
  return item;
}

/** Findings as `severity code path`, the form the assertions below read best in. */
function findings(config: GatewayConfig, mode: LintMode = "production"): string[] {
  return lintConfig(config, { mode }).map((finding) => `${finding.severity} ${finding.code} ${finding.path}`);
}

const covered = new Set<LintCode>();
function fires(code: LintCode, config: GatewayConfig, path: string, mode: LintMode = "production") {
  covered.add(code);
  const severity = code === "github-sub-only" || code === "entra-tenant-unpinned" ? "warning" : "error";
  expect(findings(config, mode)).toEqual([`${severity} ${code} ${path}`]);
}
function quiet(config: GatewayConfig, mode: LintMode = "production") {
  expect(findings(config, mode)).toEqual([]);
}

describe("the baseline", () => {
  it("is the production example, which the production lint finds nothing in", () => {
    quiet(productionWith());
  });
});

describe("hs-algorithm-on-key-set", () => {
  it("fires for an HS* algorithm on a key-set issuer", () => {
    fires(
      "hs-algorithm-on-key-set",
      productionWith((config) => {
        at(config.issuers, 0).algorithms = ["RS256", "HS256"];
      }),
      "issuers[0].algorithms[1]",
    );
  });
  it("stays quiet for every asymmetric family", () => {
    quiet(
      productionWith((config) => {
        at(config.issuers, 0).algorithms = ["RS256", "PS384", "ES256", "EdDSA", "Ed25519"];
      }),
    );
  });
});

describe("audience-missing", () => {
  it("fires when audiences are absent", () => {
    fires(
      "audience-missing",
      productionWith((config) => {
        const { audiences: _dropped, ...issuer } = at(config.issuers, 0);
        config.issuers[0] = issuer;
      }),
      "issuers[0].audiences",
    );
  });
  it("fires when audiences are empty", () => {
    fires(
      "audience-missing",
      productionWith((config) => {
        at(config.issuers, 1).audiences = [];
      }),
      "issuers[1].audiences",
    );
  });
  it("stays quiet with one exact audience", () => {
    quiet(
      productionWith((config) => {
        at(config.issuers, 1).audiences = ["api://aml-edge"];
      }),
    );
  });
});

describe("audience-wildcard", () => {
  it("fires for * and for an audience containing *", () => {
    fires(
      "audience-wildcard",
      productionWith((config) => {
        at(config.issuers, 0).audiences = ["*"];
      }),
      "issuers[0].audiences[0]",
    );
    fires(
      "audience-wildcard",
      productionWith((config) => {
        at(config.issuers, 0).audiences = ["api://aml-edge", "api://*"];
      }),
      "issuers[0].audiences[1]",
    );
  });
  it("stays quiet for audiences that merely look like patterns", () => {
    quiet(
      productionWith((config) => {
        at(config.issuers, 0).audiences = ["api://aml-edge/.default", "https://example.com/?x=1"];
      }),
    );
  });
});

describe("clock-tolerance-too-large", () => {
  it("fires above 60 seconds", () => {
    fires(
      "clock-tolerance-too-large",
      productionWith((config) => {
        at(config.issuers, 0).clockToleranceSeconds = 61;
      }),
      "issuers[0].clockToleranceSeconds",
    );
  });
  it("stays quiet at exactly 60 seconds", () => {
    quiet(
      productionWith((config) => {
        at(config.issuers, 0).clockToleranceSeconds = 60;
      }),
    );
  });
});

describe("max-token-age-missing", () => {
  it("fires when maxTokenAgeSeconds is absent", () => {
    fires(
      "max-token-age-missing",
      productionWith((config) => {
        const { maxTokenAgeSeconds: _dropped, ...issuer } = at(config.issuers, 1);
        config.issuers[1] = issuer;
      }),
      "issuers[1].maxTokenAgeSeconds",
    );
  });
  it("stays quiet with any bound", () => {
    quiet(
      productionWith((config) => {
        at(config.issuers, 1).maxTokenAgeSeconds = 1;
      }),
    );
  });
});

describe("jwks-uri-not-https", () => {
  const withJwks = (uri: string) =>
    productionWith((config) => {
      at(config.issuers, 0).jwksUri = uri;
    });

  it("fires for http:// in production, even on loopback", () => {
    fires("jwks-uri-not-https", withJwks("http://127.0.0.1:8781/jwks"), "issuers[0].jwksUri");
  });
  it("fires in local mode for http:// to a host that is not loopback", () => {
    for (const uri of [
      "http://example.com/jwks",
      "http://10.0.0.1/jwks",
      "http://localhost.example.com/jwks",
      "http://127.0.0.1.nip.io/jwks",
      "http://[::ffff:127.0.0.1]/jwks",
      "http://0.0.0.0/jwks",
    ]) {
      fires("jwks-uri-not-https", withJwks(uri), "issuers[0].jwksUri", "local");
    }
  });
  it("fires in both modes for a scheme other than http(s)", () => {
    fires("jwks-uri-not-https", withJwks("ftp://127.0.0.1/jwks"), "issuers[0].jwksUri", "local");
    fires("jwks-uri-not-https", withJwks("file:///etc/jwks.json"), "issuers[0].jwksUri");
  });
  it("stays quiet in local mode for http:// to localhost, 127.0.0.0/8 and [::1]", () => {
    for (const uri of [
      "http://localhost:8781/jwks",
      "http://127.0.0.1:8781/jwks",
      "http://127.8.9.10/jwks",
      "http://[::1]:8781/jwks",
    ]) {
      quiet(withJwks(uri), "local");
    }
  });
  it("stays quiet for https:// in production", () => {
    quiet(withJwks("https://keys.example.com/jwks"));
  });
});

describe("scoring-uri-not-https", () => {
  const withScoring = (uri: string) =>
    productionWith((config) => {
      at(config.routes, 1).scoringUri = uri;
    });

  it("fires for http:// in production", () => {
    fires("scoring-uri-not-https", withScoring("http://127.0.0.1:8782/score"), "routes[1].scoringUri");
  });
  it("fires in local mode for http:// to a host that is not loopback", () => {
    fires(
      "scoring-uri-not-https",
      withScoring("http://credit.westeurope.inference.ml.azure.com/score"),
      "routes[1].scoringUri",
      "local",
    );
  });
  it("stays quiet in local mode for http:// on loopback", () => {
    quiet(withScoring("http://127.0.0.1:8782/score"), "local");
    quiet(withScoring("http://localhost:8782/score"), "local");
  });
});

describe("weights-do-not-sum-to-100", () => {
  it("fires when the weights add up to less or more than 100", () => {
    fires(
      "weights-do-not-sum-to-100",
      productionWith((config) => {
        at(at(config.routes, 0).deployments, 1).weight = 4;
      }),
      "routes[0].deployments",
    );
    fires(
      "weights-do-not-sum-to-100",
      productionWith((config) => {
        at(at(config.routes, 1).deployments, 0).weight = 100.001;
      }),
      "routes[1].deployments",
    );
  });
  it("stays quiet for fractions whose floating-point sum is 100 within 1e-9", () => {
    quiet(
      productionWith((config) => {
        at(config.routes, 0).deployments = [
          { name: "fraud-v7", weight: 33.3 },
          { name: "fraud-v8", weight: 33.3 },
          { name: "fraud-v9", weight: 33.4 },
        ];
      }),
    );
    quiet(
      productionWith((config) => {
        at(config.routes, 0).deployments = [
          { name: "fraud-v7", weight: 0.1 },
          { name: "fraud-v8", weight: 0.2 },
          { name: "fraud-v9", weight: 99.7 },
        ];
      }),
    );
  });
});

describe("route-without-policy", () => {
  it("fires when no role grants score:<route>", () => {
    fires(
      "route-without-policy",
      productionWith((config) => {
        for (const [role, grants] of Object.entries(config.policy.roles)) {
          config.policy.roles[role] = grants.filter((grant) => grant !== "score:credit");
        }
      }),
      "routes[1]",
    );
  });
  it("fires when the roles that grant it are handed out by no rule", () => {
    fires(
      "route-without-policy",
      productionWith((config) => {
        config.policy.roles = { ...config.policy.roles, "credit-only": ["score:credit"] };
        for (const [role, grants] of Object.entries(config.policy.roles)) {
          if (role !== "credit-only")
            config.policy.roles[role] = grants.filter((grant) => grant !== "score:credit");
        }
      }),
      "routes[1]",
    );
  });
  it("stays quiet when one of several granting roles is handed out", () => {
    quiet(
      productionWith((config) => {
        config.policy.roles = { ...config.policy.roles, "credit-only": ["score:credit"] };
        config.policy.rules = config.policy.rules.filter((rule) => rule.name !== "entra-scorers");
      }),
    );
  });
});

describe("rule-matches-everyone", () => {
  it("fires for a rule whose match has only issuers, or nothing", () => {
    fires(
      "rule-matches-everyone",
      productionWith((config) => {
        at(config.policy.rules, 0).match = { issuers: ["entra"] };
      }),
      "policy.rules[0].match",
    );
    fires(
      "rule-matches-everyone",
      productionWith((config) => {
        at(config.policy.rules, 2).match = { claims: {} };
      }),
      "policy.rules[2].match",
    );
  });
  it("fires for a cohort that would take every caller", () => {
    fires(
      "rule-matches-everyone",
      productionWith((config) => {
        at(at(config.routes, 0).cohorts, 0).match = { issuers: ["entra"] };
      }),
      "routes[0].cohorts[0].match",
    );
  });
  it("stays quiet when one condition besides issuers names who", () => {
    quiet(
      productionWith((config) => {
        at(config.policy.rules, 0).match = { issuers: ["entra"], claims: { xms_cc: ["cp1"] } };
        at(at(config.routes, 0).cohorts, 0).match = { oid: ["44444444-4444-4444-4444-444444444444"] };
      }),
    );
  });
});

describe("wildcard-claim-value", () => {
  it("fires for * in a rule's match, including named claims", () => {
    fires(
      "wildcard-claim-value",
      productionWith((config) => {
        at(config.policy.rules, 0).match = { issuers: ["entra"], role: ["Scoring.Invoke", "*"] };
      }),
      "policy.rules[0].match.role[1]",
    );
    fires(
      "wildcard-claim-value",
      productionWith((config) => {
        at(config.policy.rules, 0).match = {
          issuers: ["entra"],
          role: ["Scoring.Invoke"],
          claims: { acr: ["a*"] },
        };
      }),
      "policy.rules[0].match.claims.acr[0]",
    );
  });
  it("fires for a glob-looking value in a cohort's match", () => {
    fires(
      "wildcard-claim-value",
      productionWith((config) => {
        at(at(config.routes, 0).cohorts, 0).match = { group: ["team-*"] };
      }),
      "routes[0].cohorts[0].match.group[0]",
    );
  });
  it("stays quiet for exact values with punctuation", () => {
    quiet(
      productionWith((config) => {
        at(config.policy.rules, 0).match = {
          issuers: ["entra"],
          role: ["Scoring.Invoke", "scoring:invoke/all"],
        };
      }),
    );
  });
});

describe("forward-header-unsafe", () => {
  const withHeaders = (headers: string[]) =>
    productionWith((config) => {
      config.forwardHeaders = headers;
    });

  it("fires for credentials, Azure ML, client-describing, identity, Cloudflare and gateway headers", () => {
    for (const header of [
      "authorization",
      "cookie",
      "azureml-model-deployment",
      "azureml-anything",
      "x-forwarded-for",
      "x-forwarded-host",
      "forwarded",
      "x-real-ip",
      "x-original-url",
      "x-client-ip",
      "x-user",
      "x-userid",
      "x-user-email",
      "x-auth-request-user",
      "x-authenticated-userid",
      "x-ms-client-principal",
      "x-ms-client-principal-name",
      "cf-connecting-ip",
      "x-aml-edge-caller",
    ]) {
      fires("forward-header-unsafe", withHeaders(["x-request-id", header]), "forwardHeaders[1]");
    }
  });
  it("stays quiet for correlation and application headers", () => {
    quiet(withHeaders(["x-request-id", "traceparent", "tracestate", "x-correlation-id", "accept-language"]));
  });
});

describe("github-sub-only (warning)", () => {
  it("fires for a rule that names GitHub Actions callers by sub only", () => {
    fires(
      "github-sub-only",
      productionWith((config) => {
        at(config.policy.rules, 3).match = {
          issuers: ["github-actions"],
          sub: ["repo:example-org/ml-platform:environment:production"],
        };
      }),
      "policy.rules[3].match.sub",
    );
  });
  it("fires for a sub-only rule that is not limited to any issuer", () => {
    fires(
      "github-sub-only",
      productionWith((config) => {
        at(config.policy.rules, 3).match = { sub: ["repo:example-org/ml-platform:ref:refs/heads/main"] };
      }),
      "policy.rules[3].match.sub",
    );
  });
  it("stays quiet when sub comes with the repository id, or the rule is for another issuer", () => {
    quiet(
      productionWith((config) => {
        at(config.policy.rules, 3).match = {
          issuers: ["github-actions"],
          sub: ["repo:example-org/ml-platform:environment:production"],
          repositoryId: ["123456789"],
        };
        at(config.policy.rules, 0).match = {
          issuers: ["entra"],
          sub: ["AAAAAAAAAAAAAAAAAAAAAIkzqFVrSaSaFHy782bbtaQ"],
        };
      }),
    );
  });
});

describe("entra-tenant-unpinned (warning)", () => {
  it("fires for a v2.0 login.microsoftonline.com issuer without tenants", () => {
    fires(
      "entra-tenant-unpinned",
      productionWith((config) => {
        const { tenants: _dropped, ...issuer } = at(config.issuers, 0);
        config.issuers[0] = issuer;
      }),
      "issuers[0].tenants",
    );
  });
  it("fires for a v1.0 sts.windows.net issuer without tenants", () => {
    fires(
      "entra-tenant-unpinned",
      productionWith((config) => {
        const { tenants: _dropped, ...issuer } = at(config.issuers, 0);
        config.issuers[0] = {
          ...issuer,
          issuer: "https://sts.windows.net/11111111-1111-1111-1111-111111111111/",
        };
      }),
      "issuers[0].tenants",
    );
  });
  it("stays quiet for an issuer that is not Entra ID, without tenants", () => {
    quiet(
      productionWith((config) => {
        const { tenants: _dropped, ...issuer } = at(config.issuers, 0);
        config.issuers[0] = { ...issuer, issuer: "https://example.okta.com/oauth2/default" };
      }),
    );
  });
});

describe("assertConfigSafe", () => {
  it("throws a ConfigError with one issue per error, coded by the finding", () => {
    const config = productionWith((config) => {
      at(config.issuers, 0).algorithms = ["HS256"];
      at(config.issuers, 0).clockToleranceSeconds = 300;
      config.forwardHeaders = ["authorization"];
    });
    const error = catchConfigError(() =>
      assertConfigSafe(config, { mode: "production", source: "prod.yaml" }),
    );
    expect(error.issues.map((issue) => issue.code)).toEqual([
      "hs-algorithm-on-key-set",
      "clock-tolerance-too-large",
      "forward-header-unsafe",
    ]);
    expect(error.message.split("\n")).toEqual([
      expect.stringMatching(
        /^prod\.yaml issuers\[0\]\.algorithms\[0\]: HS256 .*; pin asymmetric algorithms only/,
      ),
      expect.stringMatching(/^prod\.yaml issuers\[0\]\.clockToleranceSeconds: is 300 seconds.*; at most 60/),
      expect.stringMatching(
        /^prod\.yaml forwardHeaders\[0\]: "authorization" .*; forward only application headers/,
      ),
    ]);
  });
  it("returns the warnings when there is no error", () => {
    const config = productionWith((config) => {
      const { tenants: _dropped, ...issuer } = at(config.issuers, 0);
      config.issuers[0] = issuer;
    });
    expect(assertConfigSafe(config, { mode: "production" }).map((finding) => finding.code)).toEqual([
      "entra-tenant-unpinned",
    ]);
  });
});

describe("every finding", () => {
  it("says what is wrong and what is accepted", () => {
    const config = productionWith((config) => {
      const { audiences: _a, maxTokenAgeSeconds: _m, tenants: _t, ...issuer } = at(config.issuers, 0);
      config.issuers[0] = {
        ...issuer,
        algorithms: ["HS512"],
        clockToleranceSeconds: 90,
        jwksUri: "http://x/",
      };
      at(config.routes, 0).scoringUri = "http://y/";
      at(at(config.routes, 0).deployments, 0).weight = 1;
      at(at(config.routes, 0).cohorts, 0).match = { issuers: ["entra"], group: ["*"] };
      at(config.policy.rules, 3).match = { sub: ["x"] };
      config.forwardHeaders = ["cf-ray"];
    });
    const all = lintConfig(config, { mode: "production" });
    expect(new Set(all.map((finding) => finding.code)).size).toBeGreaterThanOrEqual(10);
    for (const finding of all) expect(finding.message).toMatch(/\S.*; \S/);
  });
  it("has a code from LINT_CODES, and every code is tested above", () => {
    expect([...covered].sort()).toEqual([...LINT_CODES].sort());
  });
});

function catchConfigError(run: () => unknown): ConfigError {
  try {
    run();
  } catch (error) {
    if (error instanceof ConfigError) return error;
    throw error;
  }
  throw new Error("expected a ConfigError");
}
