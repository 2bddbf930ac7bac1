// Shared by the tests of the actions that mint a Cloudflare token (route, rotate-keys): a job's inputs from a table,
// and the dependencies every such action has, against the in-memory Cloudflare with the bootstrap token in a fake
// Key Vault, recording what the job masked, saved and logged.
import type { CloudflareDependencies } from "../../src/actions/common/cloudflare.ts";
import type { FakeCloudflare } from "./fake-cloudflare.ts";

/** The runner's getInput over a table: "" for an input the workflow did not set. */
export const inputs =
  (table: Record<string, string>) =>
  (name: string): string =>
    table[name] ?? "";

export const BOOTSTRAP_VALUE = "bootstrap-value";

export function cloudflareJob(cf: FakeCloudflare) {
  cf.addToken({ name: "bootstrap", value: BOOTSTRAP_VALUE, permissions: ["API Tokens Write"] });
  const state: Record<string, string> = {};
  const secrets: string[] = [];
  const logs: string[] = [];
  const vaultReads: string[] = [];
  let offset = 0;
  const deps: CloudflareDependencies = {
    logger: {
      debug: () => {},
      info: (message) => logs.push(message),
      warning: (message) => logs.push(`warning: ${message}`),
      startGroup: () => {},
      endGroup: () => {},
    },
    // Real time (the fake judges token expiry by it), with sleeps that pass at once.
    clock: {
      now: () => Date.now() + offset,
      sleep: async (ms) => {
        offset += ms;
      },
    },
    env: { GITHUB_REPOSITORY: "octo/models", GITHUB_RUN_ID: "42", GITHUB_RUN_ATTEMPT: "1" },
    setSecret: (secret) => secrets.push(secret),
    saveState: (name, value) => {
      state[name] = value;
    },
    gatewayModule: async () => "export default { fetch() { return new Response('gateway'); } };",
    createAzureCredential: () => ({
      getToken: async () => ({ token: "arm", expiresOnTimestamp: Date.now() + 3600_000 }),
    }),
    readBootstrapToken: async (source) => {
      vaultReads.push(`${source.vaultUrl} ${source.secretName}`);
      return BOOTSTRAP_VALUE;
    },
    connectCloudflare: (options) => cf.client(options.token, options.tokenDescription),
  };
  return { deps, state, secrets, logs, vaultReads };
}

/** The version the edge runs a request on: the one its override header pins when that one is live, else the first. */
export function servedVersion(cf: FakeCloudflare, script: string, init: RequestInit | undefined) {
  const live = cf.live(script);
  const pinned = /="([^"]+)"/.exec(
    new Headers(init?.headers).get("cloudflare-workers-version-overrides") ?? "",
  )?.[1];
  return live?.versions.some((v) => v.version_id === pinned) ? pinned : live?.versions[0]?.version_id;
}
