// The route action as an action (STYLE.md 7): @actions/core mocked, inputs from a table, Cloudflare in memory
// (fake-cloudflare.ts) and an edge that answers from its live deployment. Bad inputs fail before any call; a publish
// sets the outputs, summary and the post step's state; the post step deletes what the main step minted.

import { readFileSync } from "node:fs";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { parse as parseYaml } from "yaml";

const core = vi.hoisted(() => ({ failed: [] as string[] }));
vi.mock("@actions/core", async (importOriginal) => {
  const { stubbedCore } = await import("./actions-core-stub.ts");
  return stubbedCore(await importOriginal<typeof import("@actions/core")>(), core);
});

const { run, route: _route } = await import("../../src/actions/route/main.ts");
const { CLEANUP_STATE } = await import("../../src/actions/common/cloudflare.ts");
const { post } = await import("../../src/actions/common/cloudflare-post.ts");
const { ROUTE_INPUTS, readRouteSettings } = await import("../../src/actions/route/settings.ts");
const { ConfigurationError } = await import("../../src/azure/errors.ts");
const { rfc3339 } = await import("../../src/cloudflare/time.ts");
const { ACCOUNT, FakeCloudflare } = await import("./fake-cloudflare.ts");
const { configYaml, SCORING_URI } = await import("./gateway-config-fixture.ts");
const { expectReadmeMatchesActionYml } = await import("./action-readme.ts");
const { cloudflareJob, inputs, servedVersion } = await import("./action-job.ts");

type Deps = Parameters<typeof run>[0];

const SCRIPT = "aml-edge-gateway";
const VALID: Record<string, string> = {
  config: "gateway.yaml",
  "cloudflare-account-id": ACCOUNT,
  "gateway-url": "https://gateway.example",
  "key-vault-url": "https://ml-prod.vault.azure.net",
  "client-id": "11111111-1111-1111-1111-111111111111",
  "tenant-id": "22222222-2222-2222-2222-222222222222",
  "timeout-minutes": "5",
};

let dir: string;
let summaryFile: string;
beforeEach(async () => {
  core.failed = [];
  dir = await mkdtemp(join(tmpdir(), "aml-edge-route-unit-"));
  await writeFile(join(dir, "gateway.yaml"), configYaml());
  summaryFile = join(dir, "summary.md");
  await writeFile(summaryFile, "");
  process.env.GITHUB_STEP_SUMMARY = summaryFile;
});
afterEach(async () => {
  delete process.env.GITHUB_STEP_SUMMARY;
  await rm(dir, { recursive: true, force: true });
});

/** A job against the in-memory Cloudflare, with the bootstrap token in a fake Key Vault. */
function job(
  table: Record<string, string>,
  setup: (cf: InstanceType<typeof FakeCloudflare>) => void = () => {},
) {
  const cf = new FakeCloudflare();
  const common = cloudflareJob(cf);
  setup(cf);
  const outputs: Record<string, string> = {};
  const keyReads: string[] = [];
  const deps: Deps = {
    ...common.deps,
    readInput: inputs(table),
    workspaceDir: dir,
    env: {
      ...common.deps.env,
      GITHUB_SHA: "0123456789abcdef0123456789abcdef01234567",
      GITHUB_SERVER_URL: "https://github.com",
    },
    setOutput: (name, value) => {
      outputs[name] = value;
    },
    endpointKeys: async (settings) => {
      keyReads.push(settings.endpoint ?? "");
      return { primaryKey: "primary-key", secondaryKey: "secondary-key", scoringUri: SCORING_URI };
    },
    snapshotKeys: async () => ({}),
    edgeFetch: edgeOf(cf),
  };
  return { ...common, cf, deps, outputs, keyReads };
}

/** The gateway at the edge, answering from the fake's live deployment: the pinned version if live, else the first. */
function edgeOf(cf: InstanceType<typeof FakeCloudflare>, stuck = false): typeof globalThis.fetch {
  return (async (_input: string | URL | Request, init?: RequestInit) => {
    const id = servedVersion(cf, SCRIPT, init);
    const version =
      id === undefined
        ? undefined
        : await cf
            .client("bootstrap-admin")
            .getVersion(SCRIPT, id)
            .catch(() => undefined);
    const bundle = version?.bindings.find((binding) => binding.name === "AML_EDGE_CONFIG")?.json as
      | { version?: string }
      | undefined;
    if (stuck || bundle?.version === undefined) return new Response("not found", { status: 404 });
    return new Response("{}", { status: 401, headers: { "x-aml-edge-config": bundle.version } });
  }) as typeof globalThis.fetch;
}

async function liveGateway(
  cf: InstanceType<typeof FakeCloudflare>,
  yaml = configYaml({ blue: 100, green: 0 }),
) {
  cf.addToken({ name: "admin", value: "bootstrap-admin", permissions: ["Workers Scripts Write"] });
  const { compileConfigBundle } = await import("../../src/config/compile.ts");
  const { parseGatewayConfig } = await import("../../src/config/load.ts");
  const bundle = await compileConfigBundle(parseGatewayConfig(yaml, "old.yaml"), { mode: "production" });
  return cf.addWorker(SCRIPT, [
    { type: "json", name: "AML_EDGE_CONFIG", json: bundle },
    { type: "secret_text", name: "AML_KEY_PRIMARY" },
    { type: "secret_text", name: "AML_KEY_SECONDARY" },
  ]);
}

describe("route inputs", () => {
  it("reports every bad input at once, before anything else runs", async () => {
    const { deps, cf, vaultReads } = job({
      config: "gateway.yaml",
      "cloudflare-account-id": "not-an-account",
      "gateway-url": "http://gateway.example",
      weights: "green=10,green=90",
      "timeout-minutes": "26",
    });
    await run(deps);
    expect(core.failed).toHaveLength(1);
    const message = core.failed[0] ?? "";
    expect(message).toMatch(/^route: 4 inputs need fixing before anything is changed:/);
    expect(message).toContain(
      "- Input `cloudflare-account-id`: must be a Cloudflare account ID: 32 lowercase hexadecimal digits",
    );
    expect(message).toContain(
      "- Input `gateway-url`: must be an https URL of the gateway Worker at the edge",
    );
    expect(message).toContain("- Input `weights`: names deployment green twice; name each once");
    expect(message).toContain(
      "- Input `timeout-minutes`: must be a whole number from 1 to 25 (the job's minted Cloudflare token lives at most 30 minutes)",
    );
    expect(cf.calls).toEqual([]);
    expect(vaultReads).toEqual([]);
  });

  it("needs a Cloudflare credential: Key Vault with the Azure identity, or the fallback token, not both", () => {
    const read = (table: Record<string, string>) => {
      try {
        readRouteSettings(inputs(table));
        return "";
      } catch (error) {
        expect(error).toBeInstanceOf(ConfigurationError);
        return (error as Error).message;
      }
    };
    const { "key-vault-url": _vault, "client-id": _client, ...noAuth } = VALID;
    expect(read(noAuth)).toContain(
      "- Input `key-vault-url`: is required to mint the job's Cloudflare token from the bootstrap token in Key Vault (or set `cloudflare-api-token`, the weaker fallback)",
    );
    expect(read(noAuth)).toContain("- Input `client-id`: is required to mint");
    expect(read({ ...VALID, "cloudflare-api-token": "tok" })).toContain(
      "- Input `key-vault-url`: and `cloudflare-api-token` are both set",
    );
    expect(read({ ...noAuth, "tenant-id": "", "cloudflare-api-token": "tok" })).toBe("");
    expect(read({ ...VALID, endpoint: "credit", workspace: "ml-ws" })).toContain(
      "- Input `subscription-id`: is required with `endpoint`: together they name the Azure ML endpoint",
    );
    expect(read({ ...VALID, workspace: "ml-ws" })).toBe("");
    expect(read({ ...VALID, route: "credit" })).toContain("- Input `route`: is only used with `weights`");
  });

  it("masks the fallback token before anything and never echoes it in a message", async () => {
    const token = "s3cr3t token with spaces";
    const { deps, secrets } = job({ ...VALID, "cloudflare-api-token": token, "worker-name": "-bad-" });
    await run(deps);
    expect(secrets[0]).toBe(token);
    expect(core.failed[0]).toContain("Input `worker-name`");
    expect(core.failed.join("\n")).not.toContain("s3cr3t");
  });

  it("action.yml declares exactly the inputs read, described, with the defaults applied", () => {
    const action = parseYaml(
      readFileSync(new URL("../../actions/route/action.yml", import.meta.url), "utf8"),
    ) as {
      inputs: Record<string, { description: string; required: boolean; default?: string }>;
      outputs: Record<string, { description: string }>;
      runs: Record<string, string>;
    };
    expect(Object.keys(action.inputs).sort()).toEqual([...ROUTE_INPUTS].sort());
    const { "timeout-minutes": _timeout, ...defaults } = VALID;
    const settings = readRouteSettings(inputs(defaults)) as Record<string, unknown>;
    for (const [name, input] of Object.entries(action.inputs)) {
      expect(input.description.length, name).toBeGreaterThan(20);
      if (input.default !== undefined) expect(String(settings[name]), name).toBe(input.default);
      expect(input.required, name).toBe(["config", "cloudflare-account-id", "gateway-url"].includes(name));
    }
    expect(Object.keys(action.outputs).sort()).toEqual([
      "config-version",
      "previous-deployment",
      "version-id",
    ]);
    expect(action.runs).toEqual({
      using: "node24",
      main: "../../dist/route/index.js",
      post: "../../dist/route/index.js",
      "post-if": "always()",
    });
  });
});

describe("route README", () => {
  it("lists every input and output with its action.yml description", () => {
    expectReadmeMatchesActionYml("route");
  });
});

describe("route config and weights", () => {
  it.each([
    [
      { weights: "green=50" },
      "Input `weights`: route credit's weights would be blue=90,green=50, which sum to 140; they must sum to 100.",
    ],
    [
      { weights: "purple=10,blue=90" },
      "Input `weights`: route credit has no deployment purple; its deployments are blue, green.",
    ],
    [
      { weights: "green=10,blue=90", route: "fraud" },
      'Input `route`: the config has no route "fraud"; its routes are credit.',
    ],
  ])("refuses %j before any call", async (extra, message) => {
    const { deps, cf } = job({ ...VALID, ...extra });
    await run(deps);
    expect(core.failed[0]).toContain(message);
    expect(cf.calls).toEqual([]);
  });

  it("refuses a config the security lint fails, with its line, before any call", async () => {
    await writeFile(
      join(dir, "gateway.yaml"),
      configYaml().replace('    audiences: ["api://aml-edge"]\n', ""),
    );
    const { deps, cf } = job(VALID);
    await run(deps);
    expect(core.failed[0]).toMatch(
      /^The gateway config gateway\.yaml cannot be published:\ngateway\.yaml:\d+:\d+ issuers\[0\]/,
    );
    expect(cf.calls).toEqual([]);
  });

  it("names the config file it could not find", async () => {
    const { deps } = job({ ...VALID, config: "nowhere.yaml" });
    await run(deps);
    expect(core.failed[0]).toContain(
      `Input \`config\`: there is no config file at ${join(dir, "nowhere.yaml")}`,
    );
  });
});

describe("route publish", () => {
  it("mints a Worker-scoped token, publishes the weights, waits for the edge, and records what was live", async () => {
    const j = job({ ...VALID, weights: "green=25,blue=75", "model-version": "credit:2" });
    const v1 = await liveGateway(j.cf);
    await run(j.deps);
    expect(core.failed).toEqual([]);
    const live = j.cf.live(SCRIPT);
    expect(live?.versions).toEqual([{ version_id: j.outputs["version-id"], percentage: 100 }]);
    expect(JSON.parse(j.outputs["previous-deployment"] ?? "")).toMatchObject({
      versions: [{ version_id: v1.id, percentage: 100 }],
    });
    expect(j.outputs["config-version"]).toMatch(/^sha256:[0-9a-f]{16}$/);
    // Published: the weights from the input, the secrets inherited from the live version by its id.
    const version = await j.cf.client("bootstrap-admin").getVersion(SCRIPT, j.outputs["version-id"] ?? "");
    const bundle = version.bindings.find((binding) => binding.name === "AML_EDGE_CONFIG")?.json as {
      version: string;
      config: { routes: { deployments: unknown }[] };
    };
    expect(bundle.version).toBe(j.outputs["config-version"]);
    expect(bundle.config.routes[0]?.deployments).toEqual([
      { name: "blue", weight: 75 },
      { name: "green", weight: 25 },
    ]);
    expect(version.annotations?.["workers/message"]).toBe(
      `aml-edge route: config ${bundle.version}; model credit:2; commit 0123456789abcdef0123456789abcdef01234567; ` +
        "run https://github.com/octo/models/actions/runs/42/attempts/1",
    );
    expect(j.keyReads).toEqual([]);
    // The write token stays for the post step to delete; the read token is gone already.
    const cleanup = JSON.parse(j.state[CLEANUP_STATE] ?? "{}");
    const write = j.cf.tokens.find((token) => token.name === "aml-edge route octo/models run 42.1");
    expect(cleanup).toEqual({
      tokens: [{ id: write?.id, name: write?.name }],
      accountId: ACCOUNT,
      apiUrl: "https://api.cloudflare.com/client/v4",
      vaultUrl: "https://ml-prod.vault.azure.net",
      secretName: "cloudflare-bootstrap-token",
      clientId: VALID["client-id"],
      tenantId: VALID["tenant-id"],
      authorityHost: "https://login.microsoftonline.com",
      audience: "api://AzureADTokenExchange",
    });
    expect(j.secrets).toContain(write?.value);
    expect(j.secrets).toContain("bootstrap-value");
    // The summary: the config diff with the weight change, the deployments before and after.
    const summary = await readFile(summaryFile, "utf8");
    expect(summary).toContain(`Published gateway config ${bundle.version} to Worker aml-edge-gateway`);
    expect(summary).toContain("Config changes against what was live");
    expect(summary).toContain("Routes and weights");
    expect(summary).toContain(`${v1.id} at 100 %`);
    expect(summary).toContain("blue=90,green=10 in the file → blue=75,green=25");

    // The post step deletes the write token with the bootstrap token it reads again.
    await post({ ...j.deps, getState: (name) => j.state[name] ?? "" });
    expect(write?.deleted).toBe(true);
    expect(j.vaultReads).toHaveLength(2);
  });

  it("on a first publish, names the secret bindings when no endpoint is given, having changed nothing", async () => {
    const j = job(VALID);
    await run(j.deps);
    expect(core.failed[0]).toBe(
      "The config names secret bindings AML_KEY_PRIMARY, AML_KEY_SECONDARY, which Worker aml-edge-gateway does " +
        "not hold yet (it is created now). Set `subscription-id`, `resource-group`, `workspace` and `endpoint` so " +
        "the step reads the keys of the Azure ML endpoint the route calls and publishes them as the new version's " +
        "secrets.",
    );
    expect(j.cf.scripts.has(SCRIPT)).toBe(false);
    // The account-wide token was minted (the Worker does not exist) and is left for the post step.
    const cleanup = JSON.parse(j.state[CLEANUP_STATE] ?? "{}");
    expect(cleanup.tokens).toHaveLength(1);
    expect(j.outputs["previous-deployment"]).toBe("null");
  });

  it("on a first publish, creates the Worker with the endpoint's keys as secrets", async () => {
    const j = job({
      ...VALID,
      "subscription-id": "33333333-3333-3333-3333-333333333333",
      "resource-group": "ml",
      workspace: "ml-ws",
      endpoint: "credit",
    });
    j.cf.addToken({ name: "admin", value: "bootstrap-admin", permissions: ["Workers Scripts Write"] });
    await run(j.deps);
    expect(core.failed).toEqual([]);
    expect(j.keyReads).toEqual(["credit"]);
    const version = await j.cf.client("bootstrap-admin").getVersion(SCRIPT, j.outputs["version-id"] ?? "");
    expect(version.bindings.map((binding) => `${binding.type} ${binding.name}`)).toEqual([
      "json AML_EDGE_CONFIG",
      "secret_text AML_KEY_PRIMARY",
      "secret_text AML_KEY_SECONDARY",
    ]);
    const write = j.cf.tokens.find((token) => token.name === "aml-edge route octo/models run 42.1");
    expect(write?.policies[0]?.resources).toEqual({ [`com.cloudflare.api.account.${ACCOUNT}`]: "*" });
  });

  it("refuses to give a route the keys of an endpoint that is not its own", async () => {
    const j = job({
      ...VALID,
      "subscription-id": "33333333-3333-3333-3333-333333333333",
      "resource-group": "ml",
      workspace: "ml-ws",
      endpoint: "fraud",
    });
    j.deps.endpointKeys = async () => ({
      primaryKey: "p",
      secondaryKey: "s",
      scoringUri: "https://fraud.westeurope.inference.ml.azure.com/score",
    });
    await run(j.deps);
    expect(core.failed[0]).toContain(
      `Route credit needs secret bindings AML_KEY_PRIMARY, AML_KEY_SECONDARY, but its scoringUri ${SCORING_URI} is not the scoring URI of endpoint fraud`,
    );
    expect(j.cf.scripts.has(SCRIPT)).toBe(false);
  });

  it("restores the previous deployment when the edge never serves the new version", async () => {
    const j = job({ ...VALID, "timeout-minutes": "1" });
    const v1 = await liveGateway(j.cf);
    j.deps.edgeFetch = edgeOf(j.cf, true);
    await run(j.deps);
    expect(core.failed[0]).toMatch(/^The edge at https:\/\/gateway\.example did not serve config sha256:/);
    expect(core.failed[0]).toContain(`The previous deployment (${v1.id} at 100 %) was restored.`);
    expect(j.cf.live(SCRIPT)?.versions).toEqual([{ version_id: v1.id, percentage: 100 }]);
    expect(j.outputs["previous-deployment"]).toContain(v1.id);
    expect(j.outputs["version-id"]).toBeUndefined();
  });

  it("leaves the new deployment in place when restore-on-failure is false", async () => {
    const j = job({ ...VALID, "timeout-minutes": "1", "restore-on-failure": "false" });
    const v1 = await liveGateway(j.cf);
    j.deps.edgeFetch = edgeOf(j.cf, true);
    await run(j.deps);
    expect(core.failed[0]).toContain("The new deployment stays in place (restore-on-failure is false)");
    expect(j.cf.live(SCRIPT)?.versions[0]?.version_id).not.toBe(v1.id);
  });
});

describe("route with the fallback token", () => {
  const tokenInputs = (token: string) => {
    const { "key-vault-url": _vault, ...rest } = VALID;
    return { ...rest, "cloudflare-api-token": token };
  };

  it.each([
    [
      { expires_on: rfc3339(Date.now() - 90_000) },
      /^The `cloudflare-api-token` input expired at .* \(\d+m\d*s? ago\)/,
    ],
    [
      { expires_on: rfc3339(Date.now() + 120_000) },
      /^The `cloudflare-api-token` input expires at .*, before this step's deadline \(timeout-minutes 5\)/,
    ],
    [{ status: "disabled" as const }, /^The `cloudflare-api-token` input is disabled on Cloudflare/],
    [
      { not_before: rfc3339(Date.now() + 3_600_000) },
      /^The `cloudflare-api-token` input is not valid yet: Cloudflare accepts it from /,
    ],
  ])("refuses a token (%j) with what is wrong and when, before reading anything", async (fields, message) => {
    const j = job(tokenInputs("given-token"), (cf) => {
      cf.addToken({ value: "given-token", permissions: ["Workers Scripts Write"], ...fields });
    });
    await run(j.deps);
    expect(core.failed[0]).toMatch(message);
    expect(j.cf.calls.map((call) => call.call)).toEqual(["verifyToken"]);
    expect(j.vaultReads).toEqual([]);
    expect(j.state[CLEANUP_STATE]).toBeUndefined();
  });

  it("publishes with a good token and leaves nothing for the post step", async () => {
    const j = job(tokenInputs("given-token"));
    await liveGateway(j.cf);
    j.cf.addToken({
      value: "given-token",
      permissions: ["Workers Scripts Write"],
      workerTag: j.cf.tagOf(SCRIPT),
      expires_on: rfc3339(Date.now() + 3_600_000),
    });
    await run(j.deps);
    expect(core.failed).toEqual([]);
    expect(j.outputs["version-id"]).toBeDefined();
    expect(j.state[CLEANUP_STATE]).toBeUndefined();
    expect(j.vaultReads).toEqual([]);
  });
});

describe("route post step", () => {
  it("does nothing without minted tokens", async () => {
    const j = job(VALID);
    await post({ ...j.deps, getState: () => "" });
    expect(j.vaultReads).toEqual([]);
  });

  it("warns, naming the tokens left, when the bootstrap token cannot be read", async () => {
    const j = job(VALID);
    const logs: string[] = [];
    await post({
      ...j.deps,
      logger: {
        debug: () => {},
        info: () => {},
        warning: (message) => void logs.push(message),
        startGroup: () => {},
        endGroup: () => {},
      },
      getState: () =>
        JSON.stringify({
          tokens: [{ id: "t-1", name: "aml-edge route octo/models run 42.1" }],
          accountId: ACCOUNT,
          apiUrl: "https://api.cloudflare.com/client/v4",
          vaultUrl: "https://ml-prod.vault.azure.net",
          secretName: "cloudflare-bootstrap-token",
          clientId: VALID["client-id"],
          tenantId: VALID["tenant-id"],
          authorityHost: "https://login.microsoftonline.com",
          audience: "api://AzureADTokenExchange",
        }),
      readBootstrapToken: async () => {
        throw new Error("Key Vault said no");
      },
    });
    expect(logs).toEqual([
      'Could not delete the job\'s Cloudflare tokens "aml-edge route octo/models run 42.1": Key Vault said no. They ' +
        "expire on their own within 30 minutes of being minted; delete them sooner in the dashboard (Manage " +
        "Account → API Tokens) if this job's logs may have leaked.",
    ]);
    expect(core.failed).toEqual([]);
  });
});
