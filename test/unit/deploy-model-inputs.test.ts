// The deploy-model action as an action (STYLE.md 7): @actions/core mocked, inputs from a table, Azure behind the
// in-memory workspace. Bad inputs must fail the step before any credential or client exists; good ones produce the
// outputs and summary a workflow reads.

import { readFileSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { parse as parseYaml } from "yaml";

const core = vi.hoisted(() => ({
  outputs: {} as Record<string, string>,
  failed: [] as string[],
  secrets: [] as string[],
}));

vi.mock("@actions/core", async (importOriginal) => {
  const { stubbedCore } = await import("./actions-core-stub.ts");
  return {
    ...stubbedCore(await importOriginal<typeof import("@actions/core")>(), core),
    // The umbrella marks its main step in the step's state; these tests never run a post step through core.
    saveState: () => {},
    getState: () => "",
  };
});

const { run } = await import("../../src/actions/deploy-model/main.ts");
const { run: runUmbrella } = await import("../../src/actions/umbrella/main.ts");
const { DEPLOY_MODEL_INPUTS, readDeployModelSettings } = await import(
  "../../src/actions/deploy-model/settings.ts"
);
const { ConfigurationError } = await import("../../src/azure/errors.ts");
const { expectReadmeMatchesActionYml } = await import("./action-readme.ts");
const { ARM, FakeMl, fakeClock, recordingLogger, SUB, WORKSPACE_ID } = await import("./fake-ml-client.ts");

const VALID: Record<string, string> = {
  "client-id": "11111111-1111-1111-1111-111111111111",
  "tenant-id": "22222222-2222-2222-2222-222222222222",
  "subscription-id": SUB,
  "resource-group": "rg",
  workspace: "aml-ws",
  endpoint: "credit",
  model: "azureml:credit:1",
  "arm-endpoint": ARM,
};

/** core.getInput's contract: "" for an input the workflow did not set. */
const inputs =
  (table: Record<string, string>) =>
  (name: string): string =>
    table[name] ?? "";

function settingsError(table: Record<string, string>): string {
  try {
    readDeployModelSettings(inputs(table));
  } catch (error) {
    expect(error).toBeInstanceOf(ConfigurationError);
    return (error as Error).message;
  }
  throw new Error("expected the settings to be refused");
}

beforeEach(() => {
  core.outputs = {};
  core.failed = [];
  core.secrets = [];
});

describe("deploy-model settings", () => {
  it("applies the documented defaults", () => {
    const settings = readDeployModelSettings(inputs(VALID));
    expect(settings).toMatchObject({
      "instance-type": "Standard_DS3_v2",
      "instance-count": 1,
      "timeout-minutes": 30,
      "oidc-audience": "api://AzureADTokenExchange",
      "authority-host": "https://login.microsoftonline.com",
    });
    expect(settings.deployment).toBeUndefined();
    expect(settings["blob-endpoint"]).toBeUndefined();
    expect(readDeployModelSettings(inputs({ ...VALID, "arm-endpoint": "" }))["arm-endpoint"]).toBe(
      "https://management.azure.com",
    );
  });

  it("names every missing required input, with what to set it to", () => {
    const message = settingsError({});
    for (const input of [
      "client-id",
      "tenant-id",
      "subscription-id",
      "resource-group",
      "workspace",
      "endpoint",
      "model",
    ]) {
      expect(message).toContain(`Input \`${input}\` is required: set it to`);
    }
    expect(message).toMatch(/^deploy-model: 7 inputs need fixing before anything is changed/);
  });

  it.each([
    ["instance-count", "abc", /Input `instance-count`: must be a whole number from 1 to 100 \(got "abc"\)/],
    ["instance-count", "0", /Input `instance-count`: must be a whole number from 1 to 100 \(got "0"\)/],
    ["timeout-minutes", "1.5", /Input `timeout-minutes`: must be a whole number from 1 to 360/],
    ["client-id", "my-app", /Input `client-id`: must be the client ID .* a GUID/],
    ["endpoint", "-bad", /Input `endpoint`: must be an online endpoint name: 3-32 letters/],
    [
      "deployment",
      "x",
      /Input `deployment`: must be a deployment name.*leave it unset to alternate blue and green/,
    ],
    [
      "model",
      "azureml:credit",
      /Input `model`: "azureml:credit" is not a registered model reference. Use azureml:NAME:VERSION/,
    ],
    [
      "arm-endpoint",
      "http://arm.example",
      /Input `arm-endpoint`: must be an https URL of Azure Resource Manager/,
    ],
    [
      "environment",
      "onnx:4",
      /Input `environment`: must be a registered environment version: azureml:NAME:VERSION/,
    ],
    [
      "environment-variables",
      "A=1\nnot a pair",
      /Input `environment-variables`: must be one NAME=value per line; "not a pair"/,
    ],
  ])("refuses %s=%j, naming the input, the problem and the accepted form", (input, value, expected) => {
    expect(settingsError({ ...VALID, [input]: value })).toMatch(expected);
  });

  it("requires scoring-script and environment with code", () => {
    const message = settingsError({ ...VALID, code: "azureml:score:2" });
    expect(message).toMatch(/Input `scoring-script`: is required with `code`/);
    expect(message).toMatch(/Input `environment`: is required with `code` and `scoring-script`/);
  });

  it("parses environment variables, one per line", () => {
    const settings = readDeployModelSettings(
      inputs({ ...VALID, "environment-variables": "A=1\n\nB = x=y " }),
    );
    expect(settings["environment-variables"]).toEqual({ A: "1", B: "x=y" });
    expect(
      readDeployModelSettings(inputs({ ...VALID, "environment-variables": "A=1\nB=x=y" }))[
        "environment-variables"
      ],
    ).toEqual({
      A: "1",
      B: "x=y",
    });
  });
});

describe("deploy-model run", () => {
  let dir: string | undefined;
  afterEach(async () => {
    if (dir !== undefined) await rm(dir, { recursive: true, force: true });
    dir = undefined;
  });

  function harness(fake = new FakeMl()) {
    const clock = fakeClock();
    const created: string[] = [];
    const deps = {
      logger: recordingLogger(clock),
      clock,
      workspaceDir: "/nonexistent-checkout",
      createCredential: () => {
        created.push("credential");
        return { getToken: async () => null };
      },
      createClient: () => {
        created.push("client");
        return fake.client;
      },
      blobUploader: () => ({ upload: async () => {} }),
    };
    return { fake, deps, created };
  }

  it("fails on bad inputs before any credential or Azure client exists", async () => {
    const { deps, created, fake } = harness();
    await run({ ...deps, readInput: inputs({ ...VALID, "instance-count": "many" }) });
    expect(core.failed).toHaveLength(1);
    expect(core.failed[0]).toMatch(/Input `instance-count`/);
    expect(created).toEqual([]);
    expect(fake.calls).toEqual([]);
    expect(core.outputs).toEqual({});
  });

  it("fails on a missing model folder before anything in Azure is read", async () => {
    const { deps, created } = harness();
    await run({ ...deps, readInput: inputs({ ...VALID, model: "models/credit/9" }) });
    expect(core.failed[0]).toMatch(/^Input `model`: .*models\/credit\/9 does not exist/);
    expect(created).toEqual([]);
  });

  it("deploys beside the serving slot at 0% and sets every output", async () => {
    const { deps, fake } = harness();
    fake.addEndpoint("credit", { blue: 100 });
    await run({ ...deps, readInput: inputs(VALID) });
    expect(core.failed).toEqual([]);
    expect(core.outputs).toEqual({
      deployment: "green",
      "model-id": `${WORKSPACE_ID}/models/credit/versions/1`,
      "scoring-uri": "https://credit.westeurope.inference.ml.azure.com/score",
      "previous-traffic": '{"blue":100}',
    });
    expect(fake.endpointPuts).toEqual([]);
    expect(fake.endpoints.get("credit")?.json.properties.traffic).toEqual({ blue: 100 });
    expect(fake.deploymentPuts.map((p) => p.deployment)).toEqual(["green"]);
  });

  it("creates a missing endpoint and deploys blue there", async () => {
    const { deps, fake } = harness();
    await run({ ...deps, readInput: inputs({ ...VALID, endpoint: "fresh" }) });
    expect(core.failed).toEqual([]);
    expect(core.outputs.deployment).toBe("blue");
    expect(core.outputs["previous-traffic"]).toBe("{}");
    expect(fake.calls).toContain("onlineEndpoints.beginCreateOrUpdate fresh");
  });

  it("uploads and registers a model folder from the checkout", async () => {
    dir = await mkdtemp(join(tmpdir(), "aml-edge-checkout-"));
    await writeFile(join(dir, "model.onnx"), "bytes");
    await writeFile(join(dir, "aml-edge-model.json"), JSON.stringify({ name: "credit" }));
    const { deps, fake } = harness();
    fake.addEndpoint("credit", { green: 100 });
    await run({ ...deps, workspaceDir: dir, readInput: inputs({ ...VALID, model: "." }) });
    expect(core.failed).toEqual([]);
    expect(core.outputs.deployment).toBe("blue");
    expect(core.outputs["model-id"]).toBe(`${WORKSPACE_ID}/models/credit/versions/2`);
    expect(core.secrets).toContain(fake.datastoreKey);
    // A custom model with no scoring code: Azure ML would refuse it, so the log says what to set.
    expect(deps.logger.lines.filter((l) => l.kind === "warning").map((l) => l.message)).toEqual([
      "Model credit:2 is a custom_model: Azure ML deploys only MLflow and Triton models without code. Set " +
        "`environment`, `code` and `scoring-script` if the deployment is refused.",
    ]);
  });

  it("reports a rollout in progress as the user's to resolve", async () => {
    const { deps, fake } = harness();
    fake.addEndpoint("credit", { blue: 50, green: 50 });
    await run({ ...deps, readInput: inputs(VALID) });
    expect(core.failed[0]).toMatch(/sends traffic to both blue \(50%\) and green \(50%\)/);
    expect(fake.deploymentPuts).toEqual([]);
  });

  it("reports a failed provisioning as a failure and sets no outputs", async () => {
    const { deps, fake } = harness();
    fake.addEndpoint("credit", { blue: 100 });
    fake.lro = { polls: 2, failWith: "ResourceNotReady. User container has crashed." };
    await run({ ...deps, readInput: inputs(VALID) });
    expect(core.failed[0]).toMatch(/Deployment green on endpoint credit failed \(state Failed\)/);
    expect(core.outputs).toEqual({});
  });
});

describe("deploy-model metadata", () => {
  interface ActionYaml {
    inputs: Record<string, { description?: string; required?: boolean; default?: string }>;
    outputs: Record<string, { description?: string }>;
    runs: { using: string; main: string; post?: string; "post-if"?: string };
  }
  const root = new URL("../../", import.meta.url);
  const load = (path: string) => parseYaml(readFileSync(new URL(path, root), "utf8")) as ActionYaml;
  const action = load("actions/deploy-model/action.yml");
  const umbrella = load("action.yml");

  it("declares exactly the inputs the action reads, each described, with the defaults the action applies", () => {
    expect(Object.keys(action.inputs).sort()).toEqual([...DEPLOY_MODEL_INPUTS].sort());
    for (const [name, input] of Object.entries(action.inputs)) {
      expect(input.description?.length ?? 0, `input ${name} has no description`).toBeGreaterThan(10);
    }
    const settings = readDeployModelSettings(inputs(VALID)) as Record<string, unknown>;
    for (const [name, input] of Object.entries(action.inputs)) {
      if (input.default !== undefined && name !== "arm-endpoint")
        expect(String(settings[name])).toBe(input.default);
    }
    expect(Object.keys(action.outputs).sort()).toEqual([
      "deployment",
      "model-id",
      "previous-traffic",
      "scoring-uri",
    ]);
    expect(action.runs).toEqual({ using: "node24", main: "../../dist/deploy-model/index.js" });
  });

  it("the umbrella action takes command plus every action's inputs and outputs, none other required", () => {
    const actions = {
      "deploy-model": action,
      route: load("actions/route/action.yml"),
      "rotate-keys": load("actions/rotate-keys/action.yml"),
    };
    expect(umbrella.inputs.command?.required).toBe(true);
    const { command: _command, ...rest } = umbrella.inputs;
    const declared = new Set(Object.values(actions).flatMap((each) => Object.keys(each.inputs)));
    expect(Object.keys(rest).sort()).toEqual([...declared].sort());
    for (const [name, input] of Object.entries(rest)) {
      expect(input.required, name).toBe(false);
      const owners = Object.entries(actions).filter(([, each]) => each.inputs[name] !== undefined);
      const specs = owners.map(([, each]) => each.inputs[name]);
      if (new Set(specs.map((spec) => `${spec?.description}\0${spec?.default}`)).size === 1) {
        // Declared alike by every action that has it: the umbrella says the same.
        expect(input.description, name).toBe(specs[0]?.description);
        expect(input.default, name).toBe(specs[0]?.default);
      } else {
        // Meant differently: the umbrella describes it per command and leaves each action its own default.
        for (const [command, each] of owners) {
          expect(input.description, name).toContain(`${command}: ${each.inputs[name]?.description}`);
        }
        expect(input.default, name).toBeUndefined();
      }
    }
    const outputs = new Set(Object.values(actions).flatMap((each) => Object.keys(each.outputs)));
    expect(Object.keys(umbrella.outputs).sort()).toEqual([...outputs].sort());
    for (const [name, output] of Object.entries(umbrella.outputs)) {
      const owners = Object.entries(actions).filter(([, each]) => each.outputs[name] !== undefined);
      const descriptions = new Set(owners.map(([, each]) => each.outputs[name]?.description));
      if (descriptions.size === 1) expect(output.description, name).toBe([...descriptions][0]);
      else {
        // Set by several commands with different meanings: the umbrella says what each command sets.
        for (const [command, each] of owners) {
          expect(output.description, name).toContain(`${command}: ${each.outputs[name]?.description}`);
        }
      }
    }
    expect(umbrella.runs).toEqual({
      using: "node24",
      main: "dist/main/index.js",
      post: "dist/main/index.js",
      "post-if": "always()",
    });
  });

  it("the README lists every input and output with its action.yml description", () => {
    expectReadmeMatchesActionYml("deploy-model");
  });
});

describe("umbrella action", () => {
  it("runs the action `command` names, and only that one", async () => {
    const ran: string[] = [];
    const commands = {
      "deploy-model": async () => {
        ran.push("deploy-model");
      },
      other: async () => {
        ran.push("other");
      },
    };
    await runUmbrella(inputs({ command: " deploy-model " }), commands);
    expect(ran).toEqual(["deploy-model"]);
    expect(core.failed).toEqual([]);
  });

  it("marks the main step in the step's state, and in the post step runs only the command's post", async () => {
    const ran: string[] = [];
    const saved = new Map<string, string>();
    const state = {
      get: (name: string) => saved.get(name) ?? "",
      save: (name: string, value: string) => saved.set(name, value),
    };
    const commands = {
      route: async () => void ran.push("route"),
      "deploy-model": async () => void ran.push("deploy-model"),
    };
    const posts = { route: async () => void ran.push("route post") };
    await runUmbrella(inputs({ command: "route" }), commands, posts, state);
    expect(saved.get("isPost")).toBe("true");
    await runUmbrella(inputs({ command: "route" }), commands, posts, state);
    await runUmbrella(inputs({ command: "deploy-model" }), commands, posts, state);
    await runUmbrella(inputs({ command: "nonsense" }), commands, posts, state);
    expect(ran).toEqual(["route", "route post"]);
    expect(core.failed).toEqual([]);
  });

  it.each([
    ["", "Input `command`: is required; accepted: deploy-model, route, rotate-keys."],
    ["deploy", 'Input `command`: "deploy" is not a command; accepted: deploy-model, route, rotate-keys.'],
    ["toString", 'Input `command`: "toString" is not a command; accepted: deploy-model, route, rotate-keys.'],
  ])("refuses command %j, saying what is accepted", async (command, message) => {
    await runUmbrella(inputs({ command }));
    expect(core.failed).toEqual([message]);
  });
});
