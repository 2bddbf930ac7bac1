// Loading a gateway config: YAML and schema problems point at line and column, every problem is reported in one
// pass, the reference checks catch names that point nowhere, and the two example configs load as documented.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import {
  ConfigError,
  type ConfigIssue,
  formatPath,
  lintConfig,
  loadGatewayConfig,
  parseGatewayConfig,
  parseGatewayConfigObject,
  parsePath,
} from "../../src/config/index.ts";

const EXAMPLES = join(import.meta.dirname, "../../src/examples");
const localExample = readFileSync(join(EXAMPLES, "gateway.yaml"), "utf8");
const productionExample = readFileSync(join(EXAMPLES, "gateway.production.yaml"), "utf8");

/** The smallest valid config, as YAML, with line numbers the tests below rely on. */
const MINIMAL = `issuers:
  - name: idp
    issuer: https://idp.example.com/
    jwksUri: https://idp.example.com/jwks
    audiences: [api://aml-edge]
    algorithms: [RS256]
    maxTokenAgeSeconds: 3600
policy:
  roles:
    scorer: ["score:credit"]
  rules:
    - name: scorers
      match: { role: [ml.score] }
      roles: [scorer]
routes:
  - name: credit
    path: /v1/credit/score
    scoringUri: https://credit.westeurope.inference.ml.azure.com/score
    deployments:
      - { name: blue, weight: 100 }
    upstreamAuth: { mode: key, primarySecret: AML_KEY_PRIMARY, secondarySecret: AML_KEY_SECONDARY }
`;

function configError(run: () => unknown): ConfigError {
  try {
    run();
  } catch (error) {
    if (error instanceof ConfigError) return error;
    throw error;
  }
  throw new Error("expected a ConfigError");
}

function issueAt(error: ConfigError, path: string): ConfigIssue {
  const issue = error.issues.find((candidate) => candidate.path === path);
  if (!issue) throw new Error(`no issue at ${path}; issues: ${error.message}`);
  return issue;
}

describe("the example configs", () => {
  it("gateway.yaml parses, passes the local lint with no errors, and fails production only for its http:// URLs", () => {
    const config = parseGatewayConfig(localExample, "gateway.yaml");
    expect(config.issuers.map((issuer) => issuer.issuer)).toEqual(["http://127.0.0.1:8781/example"]);
    expect(config.routes.map((route) => route.deployments)).toEqual([
      [
        { name: "blue", weight: 90 },
        { name: "green", weight: 10 },
      ],
    ]);
    expect(config.policy.roles).toEqual({
      scorer: ["score:credit"],
      "release-manager": ["score:credit", "pin-deployment:credit"],
      operator: ["read-status"],
    });
    expect(config.routes[0]?.upstreamAuth).toEqual({
      mode: "key",
      primarySecret: "AML_KEY_PRIMARY",
      secondarySecret: "AML_KEY_SECONDARY",
      active: "primary",
    });

    expect(lintConfig(config, { mode: "local" }).filter((finding) => finding.severity === "error")).toEqual(
      [],
    );
    expect(
      lintConfig(config, { mode: "production" })
        .filter((finding) => finding.severity === "error")
        .map((finding) => `${finding.code} ${finding.path}`),
    ).toEqual(["jwks-uri-not-https issuers[0].jwksUri", "scoring-uri-not-https routes[0].scoringUri"]);
  });

  it("gateway.production.yaml passes the production lint with no errors and no warnings", () => {
    const config = parseGatewayConfig(productionExample, "gateway.production.yaml");
    expect(lintConfig(config, { mode: "production" })).toEqual([]);
    expect(config.routes.every((route) => route.scoringUri.endsWith(".inference.ml.azure.com/score"))).toBe(
      true,
    );
  });

  it("loadGatewayConfig points production lint errors at the example's lines", () => {
    const error = configError(() => loadGatewayConfig(localExample, "gateway.yaml", { mode: "production" }));
    const lines = localExample.split("\n");
    for (const issue of error.issues) {
      expect(issue.line).toBeDefined();
      expect(lines[(issue.line ?? 0) - 1]).toContain("http://127.0.0.1");
    }
    expect(error.message).toMatch(/^gateway\.yaml:\d+:\d+ issuers\[0\]\.jwksUri: .*; .*https/m);
  });
});

describe("a valid config", () => {
  it("gets every default filled in", () => {
    const config = parseGatewayConfig(MINIMAL, "minimal.yaml");
    expect(config.status).toEqual({ path: "/.aml-edge/status" });
    expect(config.issuers[0]?.clockToleranceSeconds).toBe(30);
    expect(config.routes[0]?.methods).toEqual(["POST"]);
    expect(config.routes[0]?.upstreamAuth).toMatchObject({ active: "primary" });
  });

  it("is accepted as JSON text, and as an already-parsed object", () => {
    const fromYaml = parseGatewayConfig(MINIMAL, "minimal.yaml");
    expect(parseGatewayConfig(JSON.stringify(fromYaml), "minimal.json")).toEqual(fromYaml);
    expect(parseGatewayConfigObject(JSON.parse(JSON.stringify(fromYaml)), "minimal.json")).toEqual(fromYaml);
  });
});

describe("YAML problems", () => {
  it("are reported with line and column", () => {
    const text = MINIMAL.replace("    algorithms: [RS256]", "    algorithms: [RS256");
    const error = configError(() => parseGatewayConfig(text, "broken.yaml"));
    expect(error.issues[0]).toMatchObject({ code: "yaml-syntax", line: expect.any(Number) });
    expect(error.message).toMatch(/^broken\.yaml:\d+:\d+ /);
  });

  it("refuse a duplicate key, naming it and its line", () => {
    const text = MINIMAL.replace(
      "    maxTokenAgeSeconds: 3600\n",
      "    maxTokenAgeSeconds: 3600\n    maxTokenAgeSeconds: 999999\n",
    );
    const error = configError(() => parseGatewayConfig(text, "dup.yaml"));
    expect(error.issues).toEqual([
      expect.objectContaining({
        code: "duplicate-key",
        path: "issuers[0].maxTokenAgeSeconds",
        line: 8,
        column: 5,
      }),
    ]);
    expect(error.message).toBe(`dup.yaml:8:5 issuers[0].maxTokenAgeSeconds: ${error.issues[0]?.message}`);
    expect(error.message).toContain('"maxTokenAgeSeconds" appears twice');
  });

  it("refuse more than one document, and tags", () => {
    expect(
      configError(() => parseGatewayConfig(`${MINIMAL}---\n${MINIMAL}`, "two.yaml")).issues[0]?.code,
    ).toBe("yaml-multiple-documents");
    const tagged = MINIMAL.replace("maxTokenAgeSeconds: 3600", "maxTokenAgeSeconds: !seconds 3600");
    expect(configError(() => parseGatewayConfig(tagged, "tag.yaml")).issues[0]).toMatchObject({
      code: "yaml-tag",
      line: 7,
    });
  });

  it("refuse an empty file with a message that says what a config holds", () => {
    const error = configError(() => parseGatewayConfig("# nothing yet\n", "empty.yaml"));
    expect(error.issues).toEqual([expect.objectContaining({ code: "empty-config", path: "" })]);
    expect(error.message).toContain("issuers, policy and routes");
  });
});

describe("schema problems", () => {
  it("point at the value's line and column, say what it is and what is accepted", () => {
    const text = MINIMAL.replace("{ name: blue, weight: 100 }", "{ name: blue, weight: 150 }");
    const error = configError(() => parseGatewayConfig(text, "weights.yaml"));
    expect(error.issues).toEqual([
      {
        path: "routes[0].deployments[0].weight",
        code: "too-large",
        line: 20,
        column: 31,
        message: expect.stringMatching(/^is 150; must be at most 100/),
      },
    ]);
    expect(error.message).toMatch(
      /^weights\.yaml:20:31 routes\[0\]\.deployments\[0\]\.weight: is 150; must be at most 100/,
    );
  });

  it("name a misspelt field, at the key, with the spelling that was meant", () => {
    const text = MINIMAL.replace("    jwksUri:", "    jwks_uri:");
    const error = configError(() => parseGatewayConfig(text, "typo.yaml"));
    expect(issueAt(error, "issuers[0].jwks_uri")).toMatchObject({
      code: "unknown-field",
      line: 4,
      column: 5,
      message: expect.stringContaining('did you mean "jwksUri"?'),
    });
    expect(issueAt(error, "issuers[0].jwksUri")).toMatchObject({
      code: "missing-field",
      line: 2,
      message: expect.stringMatching(/^is missing; required: the issuer's key set URL, e.g. https:\/\//),
    });
  });

  it("turn a single value where a list belongs into a how-to", () => {
    const text = MINIMAL.replace("algorithms: [RS256]", "algorithms: RS256");
    const error = configError(() => parseGatewayConfig(text, "list.yaml"));
    expect(issueAt(error, "issuers[0].algorithms").message).toContain("write it as a list, e.g. [RS256]");
  });
});

describe("all issues at once", () => {
  it("reports YAML-valid schema, reference and duplicate problems together, sorted by line", () => {
    const text = `issuers:
  - name: idp
    issuer: https://idp.example.com/
    jwksUri: not a url
    audiences: [api://aml-edge]
    algorithms: [RS256, none]
  - name: idp
    issuer: https://idp.example.com/
    jwksUri: https://idp.example.com/jwks
    algorithms: [RS256]
policy:
  roles:
    scorer: ["score:credit", "score:fraud"]
  rules:
    - name: scorers
      match: { issuers: [ipd], role: [ml.score] }
      roles: [scorer, admin]
routes:
  - name: credit
    path: /v1/credit/score
    scoringUri: https://credit.westeurope.inference.ml.azure.com/score
    deployments:
      - { name: blue, weight: 90 }
      - { name: Blue, weight: 10 }
    cohorts:
      - { name: beta, match: { group: [beta] }, deployment: green }
    upstreamAuth: { mode: key, primarySecret: AML_KEY_PRIMARY }
  - name: credit
    path: /v1/credit/score
    scoringUri: https://credit.westeurope.inference.ml.azure.com/score
    deployments: [{ name: blue, weight: 100 }]
    upstreamAuth: { mode: aml_token, tokenSecret: AML_TOKEN }
  - name: status
    path: /.aml-edge/status
    scoringUri: https://credit.westeurope.inference.ml.azure.com/score
    deployments: [{ name: blue, weight: 100 }]
    upstreamAuth: { mode: aml_token, tokenSecret: AML_TOKEN }
`;
    const error = configError(() => parseGatewayConfig(text, "many.yaml"));
    expect(error.issues.map((issue) => `${issue.line}:${issue.column} ${issue.code} ${issue.path}`)).toEqual([
      "4:14 invalid-format issuers[0].jwksUri",
      "6:25 invalid-value issuers[0].algorithms[1]",
      "7:11 duplicate-issuer-name issuers[1].name",
      "8:13 duplicate-issuer issuers[1].issuer",
      "13:30 unknown-route policy.roles.scorer[1]",
      "16:26 unknown-issuer policy.rules[0].match.issuers[0]",
      "17:23 unknown-role policy.rules[0].roles[1]",
      "24:17 duplicate-deployment routes[0].deployments[1].name",
      "26:61 unknown-deployment routes[0].cohorts[0].deployment",
      "27:19 missing-field routes[0].upstreamAuth.secondarySecret",
      "28:11 duplicate-route-name routes[1].name",
      "29:11 duplicate-route-path routes[1].path",
      "34:11 status-path-conflict routes[2].path",
    ]);
    // One line per issue, each `<source>:<line>:<col> <path>: <problem>; <what is accepted>`.
    const lines = error.message.split("\n");
    expect(lines).toHaveLength(error.issues.length);
    for (const line of lines) expect(line).toMatch(/^many\.yaml:\d+:\d+ [\w.[\]"-]+: [^;]+; .+$/);
    expect(issueAt(error, "policy.rules[0].match.issuers[0]").message).toContain('did you mean "idp"?');
  });

  it("names paths but no positions for an already-parsed object", () => {
    const error = configError(() =>
      parseGatewayConfigObject(
        { issuers: [], policy: { roles: {} }, routes: [], extra: true },
        "config.json",
      ),
    );
    expect(error.issues.map((issue) => `${issue.code} ${issue.path}`)).toEqual([
      "too-small issuers",
      "too-small routes",
      "unknown-field extra",
    ]);
    expect(error.issues.every((issue) => issue.line === undefined)).toBe(true);
    expect(error.message.split("\n")[0]).toBe(
      "config.json issuers: is an empty list; must list at least one issuer",
    );
  });
});

describe("loadGatewayConfig", () => {
  it("returns lint warnings with their positions", () => {
    const text = MINIMAL.replace(
      "https://idp.example.com/\n",
      "https://login.microsoftonline.com/11111111-1111-1111-1111-111111111111/v2.0\n",
    );
    const { config, warnings } = loadGatewayConfig(text, "entra.yaml", { mode: "production" });
    expect(config.issuers).toHaveLength(1);
    expect(warnings).toEqual([
      expect.objectContaining({
        code: "entra-tenant-unpinned",
        severity: "warning",
        path: "issuers[0].tenants",
        line: 2,
      }),
    ]);
  });
});

describe("paths", () => {
  it("round-trip between segments and text, quoting keys that are not plain names", () => {
    for (const segments of [
      ["routes", 0, "deployments", 1, "weight"],
      ["policy", "roles", "release-manager", 0],
      ["policy", "rules", 2, "match", "claims", "https://example.com/claims/team", 0],
      [],
    ]) {
      expect(parsePath(formatPath(segments))).toEqual(segments);
    }
    expect(formatPath(["match", "claims", "a.b"])).toBe('match.claims["a.b"]');
  });
});
