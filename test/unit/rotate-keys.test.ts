// The rotation's order of operations, with fakes for both clouds: the key the live gateway sends is never the one
// being regenerated, each step is checked through the status route before the next regeneration, a split
// deployment keeps its split, and an aml_token is refreshed only when due.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { compileConfigBundle } from "../../src/config/compile.ts";
import { keyFingerprint } from "../../src/config/fingerprint.ts";
import { parseGatewayConfig } from "../../src/config/index.ts";
import type { ConfigBundle, GatewayConfig } from "../../src/config/schema.ts";
import {
  type EndpointPort,
  type GatewayPlanePort,
  type GatewayStatus,
  type KeySlot,
  type LiveGatewayVersion,
  RotationError,
  rotateEndpointCredentials,
} from "../../src/rollout/rotate-keys.ts";

const SCORING_URI = "http://127.0.0.1:8782/score";
const example = parseGatewayConfig(
  readFileSync(join(import.meta.dirname, "../../src/examples/gateway.yaml"), "utf8"),
  "gateway.yaml",
);

interface FakeVersion {
  id: string;
  bundle: ConfigBundle;
  secrets: Record<string, string>;
  plainText: Record<string, string>;
}

/** Azure ML's endpoint and Cloudflare's Worker, sharing one event log so the order can be checked. */
class FakeClouds {
  readonly events: string[] = [];
  keys = { primaryKey: "p0", secondaryKey: "s0" };
  versions = new Map<string, FakeVersion>();
  deployment: { versionId: string; percentage: number }[] = [];
  /** A status answer to return instead of the truth (a gateway that did not take the key). */
  statusOverride: GatewayStatus | undefined;
  private counter = 0;

  add(config: GatewayConfig, secrets: Record<string, string>, plainText: Record<string, string> = {}) {
    return compileConfigBundle(config, { mode: "local" }).then((bundle) => {
      const id = `v${++this.counter}`;
      this.versions.set(id, { id, bundle, secrets, plainText });
      return id;
    });
  }

  /** The key each live version sends, checked on every regeneration: it must stay valid. */
  private sentKeys(): string[] {
    return this.deployment.map(({ versionId }) => {
      const version = this.versions.get(versionId);
      const auth = version?.bundle.config.routes[0]?.upstreamAuth;
      if (!version || auth?.mode !== "key") return "";
      return version.secrets[auth.active === "primary" ? auth.primarySecret : auth.secondarySecret] ?? "";
    });
  }

  readonly endpoint: EndpointPort = {
    name: "credit",
    scoringUri: async () => SCORING_URI,
    regenerate: async (slot: KeySlot) => {
      const field = slot === "primary" ? "primaryKey" : "secondaryKey";
      if (this.sentKeys().includes(this.keys[field])) {
        throw new Error(`regenerating the ${slot} key while the live gateway sends it would fail requests`);
      }
      this.keys = { ...this.keys, [field]: `${slot[0]}${++this.counter}` };
      this.events.push(`regenerate ${slot}`);
      return { ...this.keys };
    },
    token: async () => ({
      accessToken: `token-${++this.counter}`,
      tokenType: "Bearer",
      expiresAt: new Date("2030-01-01T01:00:00Z"),
      refreshAfter: new Date("2030-01-01T00:30:00Z"),
    }),
  };

  readonly gateway: GatewayPlanePort = {
    live: async () =>
      this.deployment.map(({ versionId, percentage }): LiveGatewayVersion => {
        const version = this.versions.get(versionId);
        if (!version) throw new Error(`no version ${versionId}`);
        return { versionId, percentage, bundle: version.bundle, plainText: version.plainText };
      }),
    publish: async (versions) => {
      const ids: string[] = [];
      for (const next of versions) {
        const from = this.versions.get(next.from);
        if (!from) throw new Error(`no version ${next.from}`);
        const id = `v${++this.counter}`;
        this.versions.set(id, {
          id,
          bundle: next.bundle,
          secrets: { ...from.secrets, ...next.secrets },
          plainText: { ...from.plainText, ...next.plainText },
        });
        ids.push(id);
      }
      this.deployment = versions.map((next, index) => ({
        versionId: ids[index] ?? "",
        percentage: next.percentage,
      }));
      this.events.push(`deploy ${this.deployment.map((d) => `${d.versionId}@${d.percentage}`).join(",")}`);
      return ids;
    },
    waitForEdge: async (configVersions) => {
      this.events.push(`edge ${configVersions.length}`);
    },
    restore: async (previous) => {
      this.deployment = previous.map((entry) => ({ ...entry }));
      this.events.push(`restore ${previous.map((d) => `${d.versionId}@${d.percentage}`).join(",")}`);
    },
  };

  readonly status = {
    status: async (versionId: string): Promise<GatewayStatus> => {
      if (this.statusOverride) return this.statusOverride;
      const live = this.deployment.find((entry) => entry.versionId === versionId);
      const version = live && this.versions.get(live.versionId);
      if (!version) throw new Error("no live version");
      const routes = await Promise.all(
        version.bundle.config.routes.map(async (route) => {
          const auth = route.upstreamAuth;
          return {
            name: route.name,
            upstreamAuth:
              auth.mode === "key"
                ? {
                    mode: "key" as const,
                    active: auth.active,
                    primary: await keyFingerprint(version.secrets[auth.primarySecret]),
                    secondary: await keyFingerprint(version.secrets[auth.secondarySecret]),
                  }
                : {
                    mode: "aml_token" as const,
                    token: await keyFingerprint(version.secrets[auth.tokenSecret]),
                  },
          };
        }),
      );
      return { configVersion: version.bundle.version, routes };
    },
  };
}

const logger = { info: () => {}, startGroup: () => {}, endGroup: () => {} };

function options(clouds: FakeClouds, extra: Partial<Parameters<typeof rotateEndpointCredentials>[0]> = {}) {
  return {
    gateway: clouds.gateway,
    status: clouds.status,
    endpoint: clouds.endpoint,
    logger,
    now: () => Date.parse("2030-01-01T00:00:00Z"),
    tokenRefreshMarginMs: 10 * 60_000,
    message: "scheduled rotation",
    ...extra,
  };
}

function tokenConfig(): GatewayConfig {
  const config = structuredClone(example);
  const route = config.routes[0];
  if (route) route.upstreamAuth = { mode: "aml_token", tokenSecret: "AML_TOKEN" };
  return config;
}

describe("key rotation", () => {
  it("regenerates the key not being sent first, checks each step, and ends with both keys new", async () => {
    const clouds = new FakeClouds();
    const v1 = await clouds.add(example, { AML_KEY_PRIMARY: "p0", AML_KEY_SECONDARY: "s0" });
    clouds.deployment = [{ versionId: v1, percentage: 100 }];

    const result = await rotateEndpointCredentials(options(clouds));

    expect(clouds.events).toEqual([
      "regenerate secondary",
      expect.stringMatching(/^deploy v\d+@100$/),
      "edge 1",
      "regenerate primary",
      expect.stringMatching(/^deploy v\d+@100$/),
      "edge 1",
    ]);
    expect(clouds.keys.primaryKey).not.toBe("p0");
    expect(clouds.keys.secondaryKey).not.toBe("s0");
    const live = clouds.versions.get(clouds.deployment[0]?.versionId ?? "");
    expect(live?.secrets).toEqual({
      AML_KEY_PRIMARY: clouds.keys.primaryKey,
      AML_KEY_SECONDARY: clouds.keys.secondaryKey,
    });
    const auth = live?.bundle.config.routes[0]?.upstreamAuth;
    expect(auth?.mode === "key" && auth.active).toBe("primary");
    expect(result.previous).toEqual([{ versionId: v1, percentage: 100 }]);
    expect(result.steps.map((step) => step.slot)).toEqual(["secondary", "primary"]);
    expect(result.steps[1]?.fingerprint).toBe(await keyFingerprint(clouds.keys.primaryKey));
  });

  it("starts from the primary when the gateway sends the secondary", async () => {
    const clouds = new FakeClouds();
    const config = structuredClone(example);
    const auth = config.routes[0]?.upstreamAuth;
    if (auth?.mode === "key") auth.active = "secondary";
    const v1 = await clouds.add(config, { AML_KEY_PRIMARY: "p0", AML_KEY_SECONDARY: "s0" });
    clouds.deployment = [{ versionId: v1, percentage: 100 }];
    await rotateEndpointCredentials(options(clouds));
    expect(clouds.events.filter((event) => event.startsWith("regenerate"))).toEqual([
      "regenerate primary",
      "regenerate secondary",
    ]);
  });

  it("gives each version of a split its successor at the same percentage", async () => {
    const clouds = new FakeClouds();
    const canary = structuredClone(example);
    canary.description = "canary config";
    const v1 = await clouds.add(example, { AML_KEY_PRIMARY: "p0", AML_KEY_SECONDARY: "s0" });
    const v2 = await clouds.add(canary, { AML_KEY_PRIMARY: "p0", AML_KEY_SECONDARY: "s0" });
    clouds.deployment = [
      { versionId: v1, percentage: 90 },
      { versionId: v2, percentage: 10 },
    ];
    const result = await rotateEndpointCredentials(options(clouds));
    expect(clouds.deployment.map((d) => d.percentage)).toEqual([90, 10]);
    const descriptions = clouds.deployment.map(
      (d) => clouds.versions.get(d.versionId)?.bundle.config.description,
    );
    expect(descriptions).toEqual([example.description, "canary config"]);
    expect(result.steps.every((step) => step.configVersions.length === 2)).toBe(true);
  });

  it("stops before the second regeneration when the status route does not show the new key", async () => {
    const clouds = new FakeClouds();
    const v1 = await clouds.add(example, { AML_KEY_PRIMARY: "p0", AML_KEY_SECONDARY: "s0" });
    clouds.deployment = [{ versionId: v1, percentage: 100 }];
    const original = clouds.gateway.publish;
    clouds.gateway.publish = async (versions, message) => {
      const ids = await original(versions, message);
      const version = clouds.versions.get(ids[0] ?? "");
      clouds.statusOverride = {
        configVersion: version?.bundle.version ?? "",
        routes: [
          {
            name: "credit",
            upstreamAuth: { mode: "key", active: "secondary", primary: "x", secondary: "y" },
          },
        ],
      };
      return ids;
    };
    await expect(rotateEndpointCredentials(options(clouds))).rejects.toThrow(
      /does not send the new credential on credit.*Nothing more was regenerated.*v1 at 100 %\) was restored/s,
    );
    expect(clouds.events.filter((event) => event.startsWith("regenerate"))).toEqual(["regenerate secondary"]);
    expect(clouds.events.at(-1)).toBe("restore v1@100");
    expect(clouds.deployment).toEqual([{ versionId: v1, percentage: 100 }]);
  });

  it("names the routes when none calls the endpoint", async () => {
    const clouds = new FakeClouds();
    const v1 = await clouds.add(example, { AML_KEY_PRIMARY: "p0", AML_KEY_SECONDARY: "s0" });
    clouds.deployment = [{ versionId: v1, percentage: 100 }];
    clouds.endpoint.scoringUri = async () => "https://other.westeurope.inference.ml.azure.com/score";
    const error = await rotateEndpointCredentials(options(clouds)).catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(RotationError);
    expect(String(error)).toContain(`the routes call ${SCORING_URI}`);
    expect(clouds.events).toEqual([]);
  });
});

describe("aml_token refresh", () => {
  it("refreshes a token that is due and records when to refresh next", async () => {
    const clouds = new FakeClouds();
    const v1 = await clouds.add(tokenConfig(), { AML_TOKEN: "{}" });
    clouds.deployment = [{ versionId: v1, percentage: 100 }];
    const result = await rotateEndpointCredentials(options(clouds));
    expect(result.skipped).toBeUndefined();
    const live = clouds.versions.get(clouds.deployment[0]?.versionId ?? "");
    expect(JSON.parse(live?.secrets.AML_TOKEN ?? "{}")).toMatchObject({
      accessToken: expect.stringMatching(/^token-/),
      expiryTimeUtc: Date.parse("2030-01-01T01:00:00Z") / 1000,
    });
    expect(live?.plainText.AML_TOKEN_REFRESH_AFTER).toBe("2030-01-01T00:30:00.000Z");
  });

  it("leaves a fresh token alone, unless forced", async () => {
    const clouds = new FakeClouds();
    const v1 = await clouds.add(
      tokenConfig(),
      { AML_TOKEN: "{}" },
      { AML_TOKEN_REFRESH_AFTER: "2030-01-01T00:30:00.000Z" },
    );
    clouds.deployment = [{ versionId: v1, percentage: 100 }];
    const fresh = await rotateEndpointCredentials(options(clouds));
    expect(fresh.skipped).toMatch(/fresh until 2030-01-01T00:30:00.000Z/);
    expect(clouds.events).toEqual([]);
    const forced = await rotateEndpointCredentials(options(clouds, { forceTokenRefresh: true }));
    expect(forced.steps).toHaveLength(1);
  });

  it("refreshes within the margin of refreshAfter", async () => {
    const clouds = new FakeClouds();
    const v1 = await clouds.add(
      tokenConfig(),
      { AML_TOKEN: "{}" },
      { AML_TOKEN_REFRESH_AFTER: "2030-01-01T00:05:00.000Z" },
    );
    clouds.deployment = [{ versionId: v1, percentage: 100 }];
    const result = await rotateEndpointCredentials(options(clouds));
    expect(result.steps).toHaveLength(1);
  });
});
