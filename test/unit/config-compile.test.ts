// Compiling the config bundle: the version is a content hash (stable under key order, comments and omitted
// defaults; different when anything that matters changes), unsafe configs never compile, and the bundle is what
// the Worker's schema expects.
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import {
  CONFIG_BUNDLE_FORMAT,
  ConfigError,
  canonicalJson,
  compileConfigBundle,
  configBundleSchema,
  parseGatewayConfig,
} from "../../src/config/index.ts";

const EXAMPLES = join(import.meta.dirname, "../../src/examples");
const localExample = readFileSync(join(EXAMPLES, "gateway.yaml"), "utf8");
const productionExample = readFileSync(join(EXAMPLES, "gateway.production.yaml"), "utf8");

const CONFIG = `issuers:
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
      - { name: blue, weight: 90 }
      - { name: green, weight: 10 }
    upstreamAuth: { mode: key, primarySecret: AML_KEY_PRIMARY, secondarySecret: AML_KEY_SECONDARY }
`;

/** The same config with every mapping's keys in another order, comments, and some defaults written out. */
const REORDERED = `# same content, different text
routes:
  - upstreamAuth: { secondarySecret: AML_KEY_SECONDARY, mode: key, primarySecret: AML_KEY_PRIMARY, active: primary }
    deployments:
      - { weight: 90, name: blue }
      - { weight: 10, name: green }
    scoringUri: https://credit.westeurope.inference.ml.azure.com/score
    methods: [POST]
    path: /v1/credit/score
    name: credit
policy:
  rules:
    - roles: [scorer]
      match: { role: [ml.score] }
      name: scorers
  roles:
    scorer: ["score:credit"]
issuers:
  - maxTokenAgeSeconds: 3600
    clockToleranceSeconds: 30
    algorithms: [RS256]
    audiences: [api://aml-edge]
    jwksUri: https://idp.example.com/jwks
    issuer: https://idp.example.com/
    name: idp
status: { path: /.aml-edge/status }
`;

const KEY_SNAPSHOT = {
  fetchedAt: "2026-01-01T00:00:00.000Z",
  jwks: { keys: [{ kty: "RSA", kid: "k1", n: "AQAB", e: "AQAB" }] },
};

describe("canonicalJson", () => {
  it("sorts object keys at every depth, keeps array order, and has no whitespace", () => {
    expect(canonicalJson({ b: 1, a: { d: [3, { z: true, y: null }], c: "x" } })).toBe(
      '{"a":{"c":"x","d":[3,{"y":null,"z":true}]},"b":1}',
    );
  });

  it("sorts by UTF-16 code unit and drops undefined members, as JSON.stringify does", () => {
    expect(canonicalJson({ é: 1, Z: 2, a: 3, skipped: undefined })).toBe('{"Z":2,"a":3,"é":1}');
  });

  it("refuses what JSON cannot represent", () => {
    expect(() => canonicalJson({ weight: Number.NaN })).toThrow(TypeError);
    expect(() => canonicalJson({ at: new Date(0) })).toThrow(TypeError);
    expect(() => canonicalJson(new Map())).toThrow(TypeError);
  });
});

describe("compileConfigBundle", () => {
  it("builds a bundle the Worker's schema accepts, with a sha256 version over the canonical config", async () => {
    const config = parseGatewayConfig(CONFIG, "config.yaml");
    const bundle = await compileConfigBundle(config, {
      mode: "production",
      keySnapshots: { idp: KEY_SNAPSHOT },
    });

    expect(configBundleSchema.parse(bundle)).toEqual(bundle);
    expect(bundle).toMatchObject({ format: CONFIG_BUNDLE_FORMAT, mode: "production", config });
    expect(bundle.keySnapshots).toEqual({ idp: KEY_SNAPSHOT });
    const expected = createHash("sha256").update(canonicalJson(config)).digest("hex").slice(0, 16);
    expect(bundle.version).toBe(`sha256:${expected}`);
    expect(bundle.version).toMatch(/^sha256:[0-9a-f]{16}$/);
  });

  it("gives the same version under key reordering, comments and written-out defaults", async () => {
    const a = await compileConfigBundle(parseGatewayConfig(CONFIG, "a.yaml"), { mode: "production" });
    const b = await compileConfigBundle(parseGatewayConfig(REORDERED, "b.yaml"), { mode: "production" });
    expect(b.version).toBe(a.version);
  });

  it("changes the version when a weight changes", async () => {
    const before = await compileConfigBundle(parseGatewayConfig(CONFIG, "a.yaml"), { mode: "production" });
    const shifted = CONFIG.replace("weight: 90", "weight: 80").replace("weight: 10", "weight: 20");
    const after = await compileConfigBundle(parseGatewayConfig(shifted, "b.yaml"), { mode: "production" });
    expect(after.version).not.toBe(before.version);
  });

  it("keeps key snapshots out of the version", async () => {
    const config = parseGatewayConfig(CONFIG, "config.yaml");
    const without = await compileConfigBundle(config, { mode: "production" });
    const withKeys = await compileConfigBundle(config, {
      mode: "production",
      keySnapshots: { idp: KEY_SNAPSHOT },
    });
    expect(withKeys.version).toBe(without.version);
    expect(without.keySnapshots).toEqual({});
  });

  it("refuses an unsafe config, with every lint error in one ConfigError", async () => {
    const config = parseGatewayConfig(localExample, "gateway.yaml");
    const error = await compileConfigBundle(config, { mode: "production", source: "gateway.yaml" }).catch(
      (caught: unknown) => caught,
    );
    expect(error).toBeInstanceOf(ConfigError);
    expect((error as ConfigError).issues.map((issue) => issue.code)).toEqual([
      "jwks-uri-not-https",
      "scoring-uri-not-https",
    ]);
    expect((error as ConfigError).message).toMatch(/^gateway\.yaml issuers\[0\]\.jwksUri: /);
    // The same config is fine where http:// on loopback is: gateway dev and the sandbox.
    await expect(compileConfigBundle(config, { mode: "local" })).resolves.toMatchObject({ mode: "local" });
  });

  it("re-checks references, so a config built by hand cannot skip the loader's checks", async () => {
    const config = parseGatewayConfig(productionExample, "gateway.production.yaml");
    const broken = {
      ...config,
      policy: { ...config.policy, roles: { ...config.policy.roles, extra: ["score:nope"] } },
    };
    await expect(compileConfigBundle(broken, { mode: "production" })).rejects.toThrow(/score:nope/);
  });

  it("refuses a key snapshot for an issuer the config does not have", async () => {
    const config = parseGatewayConfig(CONFIG, "config.yaml");
    await expect(
      compileConfigBundle(config, { mode: "production", keySnapshots: { old: KEY_SNAPSHOT } }),
    ).rejects.toThrow(/key snapshot is given for "old"/);
  });
});
