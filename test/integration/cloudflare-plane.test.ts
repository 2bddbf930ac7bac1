// The Cloudflare plane against the local Cloudflare (its real API over HTTPS, and an edge running each version of
// the real gateway bundle in workerd): the job's token minted from the bootstrap token is held to the gateway Worker
// by Cloudflare's own permission checks, not just by how it was asked for; and a restore puts back exactly a recorded
// split, which the edge then serves, version by version.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { bundleGateway } from "../../src/build/gateway-bundle.ts";
import { type CloudflareApi, createCloudflareApi } from "../../src/cloudflare/api.ts";
import { mintGatewayCredential } from "../../src/cloudflare/credential.ts";
import { waitForEdgeConfig } from "../../src/cloudflare/edge.ts";
import { CloudflareApiError } from "../../src/cloudflare/errors.ts";
import {
  boundConfig,
  publishGateway,
  readLiveGateway,
  restoreDeployment,
} from "../../src/cloudflare/publish.ts";
import { systemClock } from "../../src/cloudflare/time.ts";
import { type CloudflareSandbox, startCloudflareSandbox } from "../../src/sandbox/cloudflare/index.ts";
import { createSandboxCa, trustInProcess } from "../../src/sandbox/tls.ts";
import { configBundle } from "../unit/gateway-config-fixture.ts";

const SCRIPT = "aml-edge-gateway";
const quiet = { info: () => {}, warning: () => {}, debug: () => {} };

let cf: CloudflareSandbox;
let untrust: () => void;
let workerModule: string;

beforeAll(async () => {
  const ca = await createSandboxCa();
  untrust = trustInProcess(ca.caPem);
  [cf, workerModule] = await Promise.all([startCloudflareSandbox({ ca }), bundleGateway()]);
}, 60_000);

afterAll(async () => {
  await cf?.close();
  untrust?.();
});

const connect = (token: string, tokenDescription = "the test token"): CloudflareApi =>
  createCloudflareApi({ apiUrl: cf.apiUrl, accountId: cf.accountId, token, tokenDescription });

function mint() {
  const ids: string[] = [];
  return {
    ids,
    credential: mintGatewayCredential({
      bootstrap: connect(cf.bootstrapToken.value, "the bootstrap token"),
      bootstrapWhat: "the bootstrap token",
      connect,
      script: SCRIPT,
      action: "route",
      deadline: Date.now() + 5 * 60_000,
      jobLabel: "integration",
      clock: systemClock,
      logger: quiet,
      setSecret: () => {},
      onMinted: (token) => ids.push(token.id),
      onDeleted: () => {},
    }),
  };
}

async function publish(api: CloudflareApi, percentage: number, weights: { blue: number; green: number }) {
  const bundle = await configBundle(weights);
  const result = await publishGateway({
    api,
    live: await readLiveGateway(api, SCRIPT),
    bundle,
    workerModule,
    newSecrets: { AML_KEY_PRIMARY: "primary", AML_KEY_SECONDARY: "secondary" },
    percentage,
    message: `integration ${bundle.version}`,
    tag: bundle.version,
    logger: quiet,
  });
  await waitForEdgeConfig({
    gatewayUrl: (await cf.edgeUrl(SCRIPT)).href,
    script: SCRIPT,
    versionId: result.version.id,
    configVersion: bundle.version,
    servesAll: percentage === 100,
    deadline: Date.now() + 30_000,
    clock: systemClock,
    logger: quiet,
  });
  return { ...result, bundle };
}

async function servedBy(versionId: string): Promise<string | null> {
  const response = await fetch(await cf.edgeUrl(SCRIPT), {
    headers: { "cloudflare-workers-version-overrides": `${SCRIPT}="${versionId}"` },
  });
  await response.arrayBuffer();
  return response.headers.get("x-aml-edge-config");
}

describe("the Cloudflare plane against the local Cloudflare", () => {
  it("mints account-wide write only to create the Worker, then tokens that Cloudflare holds to that Worker", async () => {
    const first = mint();
    const creator = await first.credential;
    expect(creator).toMatchObject({ scope: "account", workerExists: false });
    const created = await publish(creator.api, 100, { blue: 100, green: 0 });
    expect(created.created).toBe(true);

    const second = mint();
    const scoped = await second.credential;
    expect(scoped).toMatchObject({ scope: "worker", workerExists: true });
    // The read tokens are gone already; each job's write token is left for its post step.
    const tokens = cf.tokens().filter((token) => [...first.ids, ...second.ids].includes(token.id));
    expect(tokens.map((token) => [token.name, token.deleted])).toEqual([
      ["aml-edge route read integration", true],
      ["aml-edge route integration", false],
      ["aml-edge route read integration", true],
      ["aml-edge route integration", false],
    ]);

    // Another Worker is out of the scoped token's reach, and the refusal names the permission.
    const other = cf.createToken({ permissions: ["Workers Scripts Write"] });
    await publishGateway({
      api: connect(other.value),
      live: {
        script: "other",
        exists: false,
        deployment: undefined,
        versions: [],
        primary: undefined,
        bundle: undefined,
      },
      bundle: created.bundle,
      workerModule,
      newSecrets: { AML_KEY_PRIMARY: "p", AML_KEY_SECONDARY: "s" },
      percentage: 100,
      message: "other",
      tag: "other",
      logger: quiet,
    });
    const refused = await scoped.api.listDeployments("other").catch((error: unknown) => error);
    expect(refused).toBeInstanceOf(CloudflareApiError);
    expect(refused).toMatchObject({ status: 403, userFixable: true });
    expect((refused as Error).message).toContain('"Workers Scripts Read on Worker other"');
  }, 60_000);

  it("restores exactly a recorded split; the edge serves each of its versions again", async () => {
    const api = connect(cf.createToken({ permissions: ["Workers Scripts Write"] }).value);
    const split = await publish(api, 20, { blue: 80, green: 20 });
    const recorded = split.deployment;
    expect(recorded.versions).toHaveLength(2);
    const replaced = await publish(api, 100, { blue: 0, green: 100 });
    expect(await servedBy(replaced.version.id)).toBe(replaced.bundle.version);

    await restoreDeployment(api, SCRIPT, recorded, { message: "restore", logger: quiet });
    expect(cf.deployments(SCRIPT)[0]?.versions).toEqual(recorded.versions);
    const [newer, older] = recorded.versions;
    const olderVersion = (await readLiveGateway(api, SCRIPT)).versions.find(
      (v) => v.id === older?.version_id,
    );
    expect(await servedBy(newer?.version_id ?? "")).toBe(split.bundle.version);
    expect(await servedBy(older?.version_id ?? "")).toBe(boundConfig(olderVersion)?.version);
  }, 60_000);
});
