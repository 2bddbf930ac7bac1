// The bundled route action run the way the runner runs it: `node dist/route/index.js` with INPUT_*, GITHUB_OUTPUT,
// GITHUB_STEP_SUMMARY, GITHUB_STATE and the OIDC request variables, then again as the post step with the state as
// STATE_*. Against the local clouds: GitHub OIDC → Entra → Key Vault (the Cloudflare bootstrap token) and ARM (the
// endpoint's keys), and the local Cloudflare, whose edge runs each deployed gateway version in workerd. Only
// configuration (inputs, NODE_EXTRA_CA_CERTS) points the action at it.
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Sandbox, startSandbox } from "../../src/sandbox/sandbox.ts";
import { adminWorkspace } from "./admin-workspace.ts";
import { sandboxGatewayYaml } from "./gateway-config.ts";
import { runStep, runWithPost, type StepRun } from "./run-step.ts";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const BUNDLE = join(ROOT, "dist/route/index.js");
const UMBRELLA = join(ROOT, "dist/main/index.js");
const WORKER = "aml-edge-gateway";

let dir: string;
let local: Sandbox;
let scoringUri: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "aml-edge-route-e2e-"));
  local = await startSandbox({
    timings: { endpointCreateMs: 50, endpointUpdateMs: 50, deploymentMs: 100, deleteMs: 50 },
  });
  // The endpoint whose keys the gateway's first version gets (no deployment needed for keys).
  const ml = adminWorkspace(local);
  await ml.ensureEndpoint("credit");
  scoringUri = (await ml.findEndpoint("credit"))?.properties.scoringUri ?? "";
}, 60_000);

afterAll(async () => {
  await local?.close();
  if (dir !== undefined) await rm(dir, { recursive: true, force: true });
});

function configYaml(options: { blue: number; green: number; primary?: string }): string {
  return sandboxGatewayYaml(local, {
    scoringUri,
    deployments: { blue: options.blue, green: options.green },
    upstreamAuth: {
      mode: "key",
      ...(options.primary === undefined ? {} : { primarySecret: options.primary }),
    },
  });
}

/** The Azure ML inputs that let a first publish read the endpoint's keys. */
function azureMl(): Record<string, string> {
  return { endpoint: "credit" };
}

/** The route step against the sandbox: its inputs over the sandbox's, the job's environment, the checkout in dir. */
function routeStep(inputs: Record<string, string>, bundle = BUNDLE): StepRun {
  return {
    bundle,
    inputs: { ...local.inputs(), config: "gateway.yaml", "timeout-minutes": "2", ...inputs },
    env: local.environment(),
    workspace: dir,
  };
}

/** The job's minted tokens as the local Cloudflare sees them. */
const mintedTokens = () =>
  local.cloudflare.tokens().filter((token) => token.name.startsWith("aml-edge route"));

async function edgeConfig(headers: Record<string, string> = {}): Promise<string | null> {
  const response = await fetch(local.gatewayUrl, { headers });
  await response.arrayBuffer();
  return response.headers.get("x-aml-edge-config");
}

const liveVersions = () => local.cloudflare.deployments(WORKER)[0]?.versions;

describe("route, bundled, against the local clouds", () => {
  it("first publish: mints its own token from Key Vault, creates the Worker with the endpoint's keys, and the post step deletes the token", async () => {
    await writeFile(join(dir, "gateway.yaml"), configYaml({ blue: 100, green: 0 }));
    const { main, post } = await runWithPost(routeStep({ ...azureMl(), "model-version": "credit:1" }));
    expect(main.code, main.stdout).toBe(0);
    expect(main.outputs["previous-deployment"]).toBe("null");
    expect(main.outputs["config-version"]).toMatch(/^sha256:[0-9a-f]{16}$/);
    expect(liveVersions()).toEqual([{ version_id: main.outputs["version-id"], percentage: 100 }]);
    // The edge serves it: any answer of the gateway, a refusal included, names the config version.
    expect(await edgeConfig()).toBe(main.outputs["config-version"]);
    const version = local.cloudflare.versions(WORKER)[0] as {
      resources: { bindings: { type: string; name: string }[] };
    };
    expect(version.resources.bindings.map((binding) => `${binding.type} ${binding.name}`).sort()).toEqual([
      "json AML_EDGE_CONFIG",
      "secret_text AML_KEY_PRIMARY",
      "secret_text AML_KEY_SECONDARY",
    ]);
    expect(main.stdout).toContain("Worker aml-edge-gateway does not exist yet on account");
    expect(main.summary).toContain("First publish: nothing was live to compare with");
    // The endpoint's keys and the tokens reach the log only in the runner's mask command.
    const keys = await adminWorkspace(local).endpointKeys("credit");
    for (const line of main.stdout.split("\n")) {
      if (line.includes(keys.primaryKey) || line.includes(local.cloudflare.bootstrapToken.value)) {
        expect(line.startsWith("::add-mask::"), line).toBe(true);
      }
    }

    // Read token deleted at once; the account-wide write token by the post step.
    expect(post.code, post.stdout).toBe(0);
    expect(post.stdout).toContain(
      'Deleted the job\'s Cloudflare token "aml-edge route octo/models run 42.1".',
    );
    expect(mintedTokens().map((token) => [token.name, token.deleted])).toEqual([
      ["aml-edge route read octo/models run 42.1", true],
      ["aml-edge route octo/models run 42.1", true],
    ]);
  }, 60_000);

  it("through the umbrella action: weights from the input, half the gateway's requests on the new version, a Worker-scoped token", async () => {
    const before = liveVersions();
    const tokensBefore = mintedTokens().length;
    const { main, post } = await runWithPost(
      routeStep({ command: "route", weights: "green=30,blue=70", "version-percentage": "50" }, UMBRELLA),
    );
    expect(main.code, main.stdout).toBe(0);
    expect(JSON.parse(main.outputs["previous-deployment"] ?? "").versions).toEqual(before);
    expect(liveVersions()).toEqual([
      { version_id: main.outputs["version-id"], percentage: 50 },
      { version_id: before?.[0]?.version_id, percentage: 50 },
    ]);
    const pin = { "cloudflare-workers-version-overrides": `${WORKER}="${main.outputs["version-id"]}"` };
    expect(await edgeConfig(pin)).toBe(main.outputs["config-version"]);
    expect(main.summary).toContain("blue=100,green=0 in the file → blue=70,green=30");
    expect(main.summary).toContain("Routes and weights");
    expect(main.stdout).toMatch(/"Workers Scripts Write" on Worker aml-edge-gateway only/);
    expect(post.code, post.stdout).toBe(0);
    expect(
      mintedTokens()
        .slice(tokensBefore)
        .every((token) => token.deleted),
    ).toBe(true);
  }, 60_000);

  it("a secret change during the split goes through a new version: no PUT /secrets, no 10215", async () => {
    const requestsBefore = local.cloudflare.requests.length;
    await writeFile(
      join(dir, "gateway.yaml"),
      configYaml({ blue: 70, green: 30, primary: "AML_KEY_PRIMARY_V2" }),
    );
    const { main, post } = await runWithPost(routeStep({ ...azureMl(), "version-percentage": "50" }));
    expect(main.code, main.stdout).toBe(0);
    expect(main.stdout).toContain("AML_KEY_PRIMARY_V2: no live version of Worker aml-edge-gateway holds");
    const live = liveVersions();
    expect(live?.[0]).toEqual({ version_id: main.outputs["version-id"], percentage: 50 });
    const newVersion = local.cloudflare.versions(WORKER)[0] as {
      resources: { bindings: { type: string; name: string }[] };
    };
    expect(newVersion.resources.bindings.map((binding) => `${binding.type} ${binding.name}`).sort()).toEqual([
      "json AML_EDGE_CONFIG",
      "secret_text AML_KEY_PRIMARY_V2",
      "secret_text AML_KEY_SECONDARY",
    ]);
    const calls = local.cloudflare.requests.slice(requestsBefore);
    expect(calls.filter((call) => call.path.includes("/secrets"))).toEqual([]);
    expect(calls.filter((call) => call.errorCodes.includes(10215))).toEqual([]);
    expect(post.code).toBe(0);
  }, 60_000);

  it("when the main step fails after minting, the post step still deletes the token", async () => {
    const tokensBefore = mintedTokens().length;
    // A Worker that does not exist yet, and no endpoint to take the secrets from: refused after minting.
    const { main, post } = await runWithPost(routeStep({ "worker-name": "aml-edge-spare" }));
    expect(main.code).toBe(1);
    expect(main.stdout).toContain(
      "::error::The config names secret bindings AML_KEY_PRIMARY_V2, AML_KEY_SECONDARY, which Worker " +
        "aml-edge-spare does not hold yet (it is created now). Set `endpoint` so the step reads the keys",
    );
    const minted = mintedTokens().slice(tokensBefore);
    expect(minted.map((token) => token.name)).toEqual([
      "aml-edge route read octo/models run 42.1",
      "aml-edge route octo/models run 42.1",
    ]);
    expect(post.code, post.stdout).toBe(0);
    expect(
      mintedTokens()
        .slice(tokensBefore)
        .every((token) => token.deleted),
    ).toBe(true);
    expect(local.cloudflare.deployments("aml-edge-spare")).toEqual([]);
  }, 60_000);

  it("a bad weight fails before anything is asked of Cloudflare or Azure; its post step has nothing to do", async () => {
    const requestsBefore = local.cloudflare.requests.length;
    const { main, post } = await runWithPost(routeStep({ weights: "green=30,blue=90" }));
    expect(main.code).toBe(1);
    expect(main.stdout).toContain(
      "::error::Input `weights`: route credit's weights would be blue=90,green=30, which sum to 120",
    );
    expect(post.code).toBe(0);
    expect(local.cloudflare.requests.length).toBe(requestsBefore);
  }, 30_000);

  it("refuses an expired or soon-expiring cloudflare-api-token, saying which and when", async () => {
    const fallback = (value: string) => ({
      "key-vault-url": "",
      "cloudflare-api-token": value,
      "timeout-minutes": "5",
    });
    const expired = local.cloudflare.createToken({
      name: "expired",
      permissions: ["Workers Scripts Write"],
      expiresOn: new Date(Date.now() - 120_000),
    });
    const soon = local.cloudflare.createToken({
      name: "soon",
      permissions: ["Workers Scripts Write"],
      expiresOn: new Date(Date.now() + 120_000),
    });
    const liveBefore = liveVersions();
    const [a, b] = await Promise.all([
      runStep(routeStep(fallback(expired.value))),
      runStep(routeStep(fallback(soon.value))),
    ]);
    expect(a.code).toBe(1);
    expect(a.stdout).toMatch(/::error::The `cloudflare-api-token` input expired at \S+Z \(2m(0\ds)? ago\)/);
    expect(b.code).toBe(1);
    expect(b.stdout).toMatch(
      /::error::The `cloudflare-api-token` input expires at \S+Z \(in (1m5\ds|2m)\), before this step's deadline \(timeout-minutes 5\) at \S+Z/,
    );
    for (const step of [a, b]) {
      expect(
        step.stdout
          .split("\n")
          .filter((line) => line.includes(expired.value) || line.includes(soon.value))
          .every((line) => line.startsWith("::add-mask::")),
      ).toBe(true);
    }
    expect(liveVersions()).toEqual(liveBefore);
  }, 30_000);
});
