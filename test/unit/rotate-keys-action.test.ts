// The rotate-keys action as an action (STYLE.md 7): @actions/core mocked, inputs from a table, Cloudflare in memory
// (fake-cloudflare.ts), an edge that answers from its live deployment (the status route with the fingerprints of the
// secrets each version holds) and an endpoint whose keys change when regenerated. Bad inputs fail before any call; a
// rotation sets the outputs, the summary and the post step's state; a gateway that refuses the job its status route
// fails the step before a key is regenerated. The order of operations itself is rotate-keys.test.ts's.
import { readFileSync } from "node:fs";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, beforeEach, describe, expect, it, vi } from "vitest";
import { parse as parseYaml } from "yaml";

const core = vi.hoisted(() => ({ failed: [] as string[] }));
vi.mock("@actions/core", async (importOriginal) => {
  const { stubbedCore } = await import("./actions-core-stub.ts");
  return stubbedCore(await importOriginal<typeof import("@actions/core")>(), core);
});

const { run } = await import("../../src/actions/rotate-keys/main.ts");
const { ROTATE_KEYS_INPUTS, readRotateKeysSettings } = await import(
  "../../src/actions/rotate-keys/settings.ts"
);
const { CLEANUP_STATE } = await import("../../src/actions/common/cloudflare.ts");
const { post } = await import("../../src/actions/common/cloudflare-post.ts");
const { compileConfigBundle } = await import("../../src/config/compile.ts");
const { keyFingerprint } = await import("../../src/config/fingerprint.ts");
const { parseGatewayConfig } = await import("../../src/config/load.ts");
const { ACCOUNT, FakeCloudflare } = await import("./fake-cloudflare.ts");
const { configYaml, SCORING_URI } = await import("./gateway-config-fixture.ts");
const { expectReadmeMatchesActionYml } = await import("./action-readme.ts");
const { cloudflareJob, inputs, servedVersion } = await import("./action-job.ts");

type Deps = Parameters<typeof run>[0];
type Cloudflare = InstanceType<typeof FakeCloudflare>;

const SCRIPT = "aml-edge-gateway";
const JOB_TOKEN = "github-job-token";
const VALID: Record<string, string> = {
  "client-id": "11111111-1111-1111-1111-111111111111",
  "tenant-id": "22222222-2222-2222-2222-222222222222",
  "subscription-id": "33333333-3333-3333-3333-333333333333",
  "resource-group": "ml",
  workspace: "ml-ws",
  endpoint: "credit",
  "cloudflare-account-id": ACCOUNT,
  "gateway-url": "https://gateway.example",
  "key-vault-url": "https://ml-prod.vault.azure.net",
  "gateway-audience": "api://aml-edge-gateway",
  "timeout-minutes": "5",
};

let dir: string;
let summaryFile: string;
// One summary file for the whole file: core.summary keeps the first path it was given.
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "aml-edge-rotate-unit-"));
  summaryFile = join(dir, "summary.md");
  process.env.GITHUB_STEP_SUMMARY = summaryFile;
});
beforeEach(async () => {
  core.failed = [];
  await writeFile(summaryFile, "");
});
afterAll(async () => {
  delete process.env.GITHUB_STEP_SUMMARY;
  await rm(dir, { recursive: true, force: true });
});

/** A secret's value in a version: its own binding, or followed through `inherit` to the version it came from. */
function secretOf(cf: Cloudflare, versionId: string, name: string, seeded: Record<string, string>): unknown {
  const version = cf.scripts.get(SCRIPT)?.versions.find((candidate) => candidate.id === versionId);
  const binding = version?.upload.bindings.find((candidate) => candidate.name === name);
  if (binding?.type === "secret_text" || binding?.type === "plain_text") return binding.text;
  if (binding?.type === "inherit" && binding.version_id !== undefined)
    return secretOf(cf, binding.version_id, name, seeded);
  return seeded[name];
}

/**
 * The gateway at the edge, answering from the fake's live deployment (the pinned version when live): its status
 * route with the fingerprints of the secrets that version holds, to the job's token only; anything else a 401 that
 * names the config version, as every gateway answer does.
 */
function edgeOf(cf: Cloudflare, seeded: Record<string, string>): typeof globalThis.fetch {
  return (async (input: string | URL | Request, init?: RequestInit) => {
    const headers = new Headers(init?.headers);
    const id = servedVersion(cf, SCRIPT, init) ?? "";
    const version = await cf.client("bootstrap-admin").getVersion(SCRIPT, id);
    const bundle = version.bindings.find((binding) => binding.name === "AML_EDGE_CONFIG")?.json as {
      version: string;
      config: { status: { path: string }; routes: { name: string; upstreamAuth: Record<string, string> }[] };
    };
    const configHeader = { "x-aml-edge-config": bundle.version };
    const path = new URL(String(input)).pathname;
    if (path !== bundle.config.status.path || headers.get("authorization") !== `Bearer ${JOB_TOKEN}`) {
      return new Response("{}", { status: 401, headers: configHeader });
    }
    const secret = (name: string | undefined) =>
      keyFingerprint(secretOf(cf, id, name ?? "", seeded) as string);
    const routes = await Promise.all(
      bundle.config.routes.map(async ({ name, upstreamAuth: auth }) => ({
        name,
        upstreamAuth:
          auth.mode === "key"
            ? {
                mode: "key",
                active: auth.active,
                primary: await secret(auth.primarySecret),
                secondary: await secret(auth.secondarySecret),
              }
            : { mode: "aml_token", token: await secret(auth.tokenSecret) },
      })),
    );
    return Response.json({ configVersion: bundle.version, routes }, { headers: configHeader });
  }) as typeof globalThis.fetch;
}

/** A job against the in-memory Cloudflare, with a live gateway holding the endpoint's keys. */
async function job(table: Record<string, string>, yaml = configYaml({ blue: 100, green: 0 })) {
  const cf = new FakeCloudflare();
  const common = cloudflareJob(cf);
  cf.addToken({ name: "admin", value: "bootstrap-admin", permissions: ["Workers Scripts Write"] });
  const bundle = await compileConfigBundle(parseGatewayConfig(yaml, "gateway.yaml"), { mode: "production" });
  const live = cf.addWorker(SCRIPT, [
    { type: "json", name: "AML_EDGE_CONFIG", json: bundle },
    { type: "secret_text", name: "AML_KEY_PRIMARY" },
    { type: "secret_text", name: "AML_KEY_SECONDARY" },
  ]);
  const keys = { primaryKey: "primary-0", secondaryKey: "secondary-0" };
  const seeded = { AML_KEY_PRIMARY: keys.primaryKey, AML_KEY_SECONDARY: keys.secondaryKey };
  const regenerated: string[] = [];
  const outputs: Record<string, string> = {};
  const deps: Deps = {
    ...common.deps,
    readInput: inputs(table),
    setOutput: (name, value) => {
      outputs[name] = value;
    },
    gitHubIdToken: async () => JOB_TOKEN,
    endpoint: (settings) => ({
      name: settings.endpoint,
      scoringUri: async () => SCORING_URI,
      regenerate: async (slot) => {
        regenerated.push(slot);
        keys[slot === "primary" ? "primaryKey" : "secondaryKey"] = `${slot}-${regenerated.length}`;
        return { ...keys };
      },
      token: async () => {
        throw new Error("a key endpoint has no token");
      },
    }),
    edgeFetch: edgeOf(cf, seeded),
    edgeInitialDelayMs: 1,
  };
  return { ...common, cf, deps, live, keys, regenerated, outputs };
}

describe("rotate-keys inputs", () => {
  it("reports every bad input at once, before anything else runs", async () => {
    const { "gateway-audience": _audience, endpoint: _endpoint, ...rest } = VALID;
    const j = await job({ ...rest, "token-refresh-minutes": "soon", "timeout-minutes": "26" });
    await run(j.deps);
    expect(core.failed).toHaveLength(1);
    const message = core.failed[0] ?? "";
    expect(message).toMatch(/^rotate-keys: 4 inputs need fixing before anything is changed:/);
    expect(message).toContain("- Input `gateway-audience` is required: set it to the audience the gateway's");
    expect(message).toContain(
      "- Input `endpoint` is required: set it to the online endpoint whose credentials are rotated",
    );
    expect(message).toContain("- Input `token-refresh-minutes`: must be a whole number from 0 to 10080");
    expect(message).toContain("- Input `timeout-minutes`: must be a whole number from 1 to 25");
    expect(j.cf.calls).toEqual([]);
    expect(j.vaultReads).toEqual([]);
    expect(j.regenerated).toEqual([]);
  });

  it("action.yml declares exactly the inputs read, described, with the defaults applied; the README lists them", () => {
    const action = parseYaml(
      readFileSync(new URL("../../actions/rotate-keys/action.yml", import.meta.url), "utf8"),
    ) as {
      inputs: Record<string, { description: string; required: boolean; default?: string }>;
      outputs: Record<string, unknown>;
      runs: Record<string, string>;
    };
    expect(Object.keys(action.inputs).sort()).toEqual([...ROTATE_KEYS_INPUTS].sort());
    const { "timeout-minutes": _timeout, ...defaults } = VALID;
    const settings = readRotateKeysSettings(inputs(defaults)) as Record<string, unknown>;
    const required = Object.keys(defaults).filter((name) => name !== "key-vault-url");
    for (const [name, input] of Object.entries(action.inputs)) {
      expect(input.description.length, name).toBeGreaterThan(20);
      if (input.default !== undefined) expect(String(settings[name]), name).toBe(input.default);
      expect(input.required, name).toBe(required.includes(name));
    }
    expect(Object.keys(action.outputs).sort()).toEqual([
      "previous-deployment",
      "primary-fingerprint",
      "secondary-fingerprint",
      "token-fingerprint",
      "version-ids",
    ]);
    expect(action.runs).toEqual({
      using: "node24",
      main: "../../dist/rotate-keys/index.js",
      post: "../../dist/rotate-keys/index.js",
      "post-if": "always()",
    });
    expectReadmeMatchesActionYml("rotate-keys");
  });
});

describe("rotate-keys", () => {
  it("rotates the secondary key, then the primary, each checked through the status route; the post step deletes the token", async () => {
    const j = await job(VALID);
    await run(j.deps);
    expect(core.failed).toEqual([]);
    expect(j.regenerated).toEqual(["secondary", "primary"]);
    expect(JSON.parse(j.outputs["previous-deployment"] ?? "")).toMatchObject({
      versions: [{ version_id: j.live.id, percentage: 100 }],
    });
    const versionIds = JSON.parse(j.outputs["version-ids"] ?? "") as string[];
    expect(versionIds).toHaveLength(2);
    expect(j.cf.live(SCRIPT)?.versions).toEqual([{ version_id: versionIds[1], percentage: 100 }]);
    expect(j.outputs["primary-fingerprint"]).toBe(await keyFingerprint(j.keys.primaryKey));
    expect(j.outputs["secondary-fingerprint"]).toBe(await keyFingerprint(j.keys.secondaryKey));
    expect(j.keys).toEqual({ primaryKey: "primary-2", secondaryKey: "secondary-1" });
    const summary = await readFile(summaryFile, "utf8");
    expect(summary).toContain("Rotated the keys of endpoint credit behind Worker aml-edge-gateway");
    expect(summary).toContain("Step 1: secondary key regenerated");
    expect(summary).toContain("Step 2: primary key regenerated");
    expect(summary).toContain(`sends the primary key; primary ${await keyFingerprint("primary-0")}`);

    const cleanup = JSON.parse(j.state[CLEANUP_STATE] ?? "{}");
    const write = j.cf.tokens.find((token) => token.name === "aml-edge rotate-keys octo/models run 42.1");
    expect(cleanup.tokens).toEqual([{ id: write?.id, name: write?.name }]);
    await post({ ...j.deps, getState: (name) => j.state[name] ?? "" });
    expect(write?.deleted).toBe(true);
  });

  it("fails before regenerating anything when the gateway refuses the job its status route", async () => {
    const j = await job(VALID);
    j.deps.gitHubIdToken = async () => "a token the gateway does not accept";
    await run(j.deps);
    expect(core.failed[0]).toContain("refused the job's token with HTTP 401");
    expect(core.failed[0]).toContain("grant read-status to this workflow's GitHub identity");
    expect(j.regenerated).toEqual([]);
    expect(j.cf.live(SCRIPT)?.versions).toEqual([{ version_id: j.live.id, percentage: 100 }]);
    expect(j.outputs["previous-deployment"]).toContain(j.live.id);
  });

  it("leaves a fresh aml_token alone and reports the one the gateway holds", async () => {
    const yaml = configYaml({ blue: 100, green: 0 }).replace(
      /upstreamAuth:\n(.*\n)*/,
      "upstreamAuth:\n      mode: aml_token\n      tokenSecret: AML_TOKEN\n",
    );
    const j = await job(VALID, yaml);
    const refreshAfter = new Date(Date.now() + 5 * 3600_000).toISOString();
    j.cf.scripts
      .get(SCRIPT)
      ?.versions[0]?.bindings.push(
        { type: "secret_text", name: "AML_TOKEN" },
        { type: "plain_text", name: "AML_TOKEN_REFRESH_AFTER", text: refreshAfter },
      );
    j.deps.edgeFetch = edgeOf(j.cf, { AML_TOKEN: '{"accessToken":"t0"}' });
    await run(j.deps);
    expect(core.failed).toEqual([]);
    expect(j.outputs["version-ids"]).toBe("[]");
    expect(j.outputs["token-fingerprint"]).toBe(await keyFingerprint('{"accessToken":"t0"}'));
    expect(await readFile(summaryFile, "utf8")).toContain("is fresh: nothing to do");
  });
});
