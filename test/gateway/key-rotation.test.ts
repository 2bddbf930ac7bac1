// The per-issuer key store in workerd: snapshot → persisted Cache API copy → fetch, at most one fetch per
// refetchCooldownSeconds for unknown kids, last good keys kept while the issuer is down, and removals picked up by
// the keyMaxAgeSeconds background refresh. Fixtures use cooldowns of 1–2 s so "after the cooldown" costs ~2 s.
//
// Not tested here: persistence across gateway processes. Each Miniflare instance has its own Cache API storage
// (a second instance started on the same bundle fetched again when probed), so only persistence within one
// Miniflare across a config update (a workerd restart, hence a new isolate) is observable.
import { randomUUID } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { compileConfigBundle } from "../../src/config/index.ts";
import { type GatewayConfigInput, gatewayConfigSchema } from "../../src/config/schema.ts";
import {
  baseConfig,
  type GatewayFixture,
  GITHUB_AUDIENCE,
  STATUS_PATH,
  startGatewayFixture,
} from "./fixture.ts";

interface IssuerState {
  issuer: string;
  kids: string[];
  source: string;
  fetchedAt: string | null;
  lastAttemptAt: string | null;
  lastError: { at: string; message: string } | null;
  fetches: number;
}

/** Sets corp's key-store timings (the issuer every test here exercises). */
function corpTimings(timings: { refetchCooldownSeconds?: number; keyMaxAgeSeconds?: number }) {
  return (config: GatewayConfigInput) => {
    const corp = config.issuers.find((issuer) => issuer.name === "corp");
    if (!corp) throw new Error("fixture config has no corp issuer");
    Object.assign(corp, timings);
  };
}

/** The corp issuer's key-set state from the status route. `via: "github"` reads it without touching corp's keys. */
async function corpState(fx: GatewayFixture, via: "corp" | "github" = "corp"): Promise<IssuerState> {
  const token =
    via === "corp"
      ? await fx.token({ roles: ["ml.operator"] })
      : await fx.github.mint({
          aud: GITHUB_AUDIENCE,
          sub: "repo:deploy",
          repository_id: "424242",
          environment: "production",
        });
  const response = await fx.gateway.fetch(STATUS_PATH, { headers: { authorization: `Bearer ${token}` } });
  expect(response.status, "status route").toBe(200);
  const status = (await response.json()) as { issuers: IssuerState[] };
  const corp = status.issuers.find((issuer) => issuer.issuer === "corp");
  if (!corp) throw new Error("status has no corp issuer");
  return corp;
}

/** A corp token signed by a published key but naming a kid nobody has. */
function unknownKidToken(fx: GatewayFixture): Promise<string> {
  return fx.token({}, { header: { kid: `unknown-${randomUUID()}` } });
}

/** Epoch ms of every key-set fetch the gateway made to corp (as seen by the outbound recorder). */
function corpFetchTimes(fx: GatewayFixture): number[] {
  return fx.gateway.outbound.requests
    .filter((request) => request.url === fx.corp.jwksUri)
    .map((request) => request.time);
}

async function expectServed(fx: GatewayFixture, token: string): Promise<void> {
  const response = await fx.score(token);
  expect(response.status, await response.clone().text()).toBe(200);
  await response.body?.cancel();
}

async function expectUnknownKid(fx: GatewayFixture, token: string): Promise<void> {
  // expectRefused checks that the upstream got nothing, so earlier served requests are forgotten first.
  fx.scoring.clearRequests();
  await fx.expectRefused(await fx.score(token), {
    status: 401,
    error: "invalid_token",
    reason: "unknown_kid",
  });
}

describe("cold start with key snapshots in the bundle", () => {
  let fx: GatewayFixture;
  beforeAll(async () => {
    fx = await startGatewayFixture();
  });
  afterAll(async () => {
    await fx?.dispose();
  });

  it("verifies the first request of a fresh gateway without fetching any key set", async () => {
    await expectServed(fx, await fx.token());
    await expectServed(
      fx,
      await fx.github.mint({
        aud: GITHUB_AUDIENCE,
        sub: "x",
        repository_id: "424242",
        environment: "production",
      }),
    );
    expect(fx.corp.jwksFetches).toBe(0);
    expect(fx.github.jwksFetches).toBe(0);
    expect(corpFetchTimes(fx)).toEqual([]);
    expect((await corpState(fx)).source).toBe("snapshot");
  });
});

describe("cold start without snapshots (snapshot: false)", () => {
  let fx: GatewayFixture;
  beforeAll(async () => {
    fx = await startGatewayFixture({ snapshot: false });
  });
  afterAll(async () => {
    await fx?.dispose();
  });

  it("fetches the key set exactly once for its first request, and not again for the next", async () => {
    await expectServed(fx, await fx.token());
    expect(fx.corp.jwksFetches).toBe(1);
    await expectServed(fx, await fx.token({ sub: "user-2" }));
    expect(fx.corp.jwksFetches).toBe(1);
    const state = await corpState(fx);
    expect(state).toMatchObject({ source: "fetched", fetches: 1, lastError: null });
    expect(state.kids).toContain(fx.corp.defaultKid);
  });

  it("does not refetch after a config update: the new isolate adopts the copy persisted in the Cache API", async () => {
    const first = await fx.score(await fx.token());
    expect(first.status).toBe(200);
    const oldVersion = first.headers.get("x-aml-edge-config");
    // The copy is written by waitUntil after the fetching response; give it a moment before workerd restarts.
    await sleep(300);
    fx.reset();

    const input = baseConfig(fx.corp, fx.github, fx.scoring);
    input.description = "gateway tests, next version";
    const bundle = await compileConfigBundle(gatewayConfigSchema.parse(input), {
      mode: "local",
      keySnapshots: {},
    });
    await fx.gateway.update({ bundle });

    const response = await fx.score(await fx.token());
    expect(response.status).toBe(200);
    expect(response.headers.get("x-aml-edge-config")).not.toBe(oldVersion);
    expect(fx.corp.jwksFetches).toBe(0);
    expect(await corpState(fx)).toMatchObject({ source: "persisted", fetches: 0 });
    expect(fx.corp.jwksFetches).toBe(0);
  });
});

// One gateway per test: each starts outside any cooldown (a fresh key store has never fetched), which is cheaper
// than waiting out the cooldown an earlier test's fetch opened.
describe("refetch cooldown 2 s", () => {
  const COOLDOWN_MS = 2_000;
  const withGateway = async (run: (fx: GatewayFixture) => Promise<void>) => {
    const fx = await startGatewayFixture({ configure: corpTimings({ refetchCooldownSeconds: 2 }) });
    try {
      await run(fx);
    } finally {
      await fx.dispose();
    }
  };

  it("refuses a token from a newly rotated key inside the cooldown and accepts it after, with one more fetch", () =>
    withGateway(async (fx) => {
      // An unknown kid makes the gateway fetch now; the issuer rotates just after that fetch.
      await expectUnknownKid(fx, await unknownKidToken(fx));
      expect(fx.corp.jwksFetches).toBe(1);
      const [fetchedAt] = corpFetchTimes(fx);
      if (fetchedAt === undefined) throw new Error("no key-set fetch recorded");

      await fx.corp.rotate();
      const rotated = await fx.token();
      fx.reset();
      await expectUnknownKid(fx, rotated);
      expect(Date.now() - fetchedAt, "the refusal happened inside the cooldown").toBeLessThan(
        COOLDOWN_MS - 300,
      );
      expect(fx.corp.jwksFetches, "no fetch inside the cooldown").toBe(0);

      await sleep(fetchedAt + COOLDOWN_MS + 300 - Date.now());
      fx.reset();
      await expectServed(fx, rotated);
      expect(fx.corp.jwksFetches, "one fetch after the cooldown").toBe(1);
      await expectServed(fx, await fx.token({ sub: "user-2" }));
      expect(fx.corp.jwksFetches).toBe(1);
    }));

  it("refuses a flood of 100 random kids within one cooldown with at most one key-set fetch", () =>
    withGateway(async (fx) => {
      const started = Date.now();
      const tokens = await Promise.all(Array.from({ length: 100 }, () => unknownKidToken(fx)));
      const responses = await Promise.all(tokens.map((token) => fx.score(token)));
      const elapsed = Date.now() - started;
      for (const response of responses) {
        expect(response.status).toBe(401);
        expect(response.headers.get("www-authenticate")).toContain('error="invalid_token"');
        await response.body?.cancel();
      }
      const reasons = await Promise.all(
        responses.map(async (response) => (await fx.auditOf(response)).reason),
      );
      expect(new Set(reasons)).toEqual(new Set(["unknown_kid"]));
      expect(fx.scoring.requests).toHaveLength(0);
      expect(elapsed, "the flood fit inside one cooldown").toBeLessThan(COOLDOWN_MS);
      // At most one: the first unknown kid outside the cooldown does fetch (else rotations would never be seen).
      expect(fx.corp.jwksFetches).toBe(1);
    }));

  it("keeps the last good keys while the issuer is down, and the status route shows the error and the kids", () =>
    withGateway(async (fx) => {
      const kid = fx.corp.defaultKid;
      fx.corp.setDown(true);
      await expectServed(fx, await fx.token());
      // An unknown kid outside the cooldown makes the gateway try the issuer, which answers 503: the refusal is
      // unknown_kid (keys are held), not keys_unavailable.
      await expectUnknownKid(fx, await unknownKidToken(fx));
      expect(fx.corp.jwksFetches).toBe(1);
      expect(
        fx.gateway.outbound.requests.filter((r) => r.url === fx.corp.jwksUri).map((r) => r.status),
      ).toEqual([503]);
      fx.reset();
      await expectServed(fx, await fx.token({ sub: "user-2" }));

      const state = await corpState(fx);
      expect(state.lastError, "lastError after the failed fetch").not.toBeNull();
      expect(state.lastError?.message).toMatch(/503/);
      expect(state.lastAttemptAt).not.toBeNull();
      expect(state.kids).toContain(kid);
      expect(fx.corp.jwksFetches, "the status route does not fetch").toBe(0);
    }));
});

describe("refetch cooldown 1 s, unknown kids across 3 windows", () => {
  const COOLDOWN_MS = 1_000;
  const WINDOWS = 3;
  let fx: GatewayFixture;
  beforeAll(async () => {
    fx = await startGatewayFixture({ configure: corpTimings({ refetchCooldownSeconds: 1 }) });
  });
  afterAll(async () => {
    await fx?.dispose();
  });

  it("fetches at most once per window under a steady stream of unknown kids", async () => {
    fx.reset();
    const started = Date.now();
    // Stop short of the 3rd window's end, so every fetch falls inside one of the 3 windows that follow the first.
    const deadline = started + WINDOWS * COOLDOWN_MS - 250;
    let sent = 0;
    for (let round = 0; round < 1_000 && Date.now() < deadline; round++) {
      const responses = await Promise.all(
        Array.from({ length: 4 }, async () => fx.score(await unknownKidToken(fx))),
      );
      for (const response of responses) {
        expect(response.status).toBe(401);
        await response.body?.cancel();
      }
      sent += responses.length;
    }
    expect(sent).toBeGreaterThan(20);
    const times = corpFetchTimes(fx);
    expect(fx.corp.jwksFetches).toBe(times.length);
    expect(times.length, `fetches at ${times.map((t) => t - started).join(", ")} ms`).toBeLessThanOrEqual(
      WINDOWS,
    );
    // A steady stream does get through once each cooldown ends: a permanent lockout would hide rotations.
    expect(times.length).toBeGreaterThanOrEqual(WINDOWS - 1);
    for (let i = 1; i < times.length; i++) {
      expect((times[i] as number) - (times[i - 1] as number)).toBeGreaterThanOrEqual(COOLDOWN_MS - 50);
    }
    expect(fx.scoring.requests).toHaveLength(0);
  });
});

describe("a retired key (keyMaxAgeSeconds 3, refetch cooldown 2 s)", () => {
  const KEY_MAX_AGE_MS = 3_000;
  let fx: GatewayFixture;
  beforeAll(async () => {
    fx = await startGatewayFixture({
      configure: corpTimings({ keyMaxAgeSeconds: 3, refetchCooldownSeconds: 2 }),
    });
  });
  afterAll(async () => {
    await fx?.dispose();
  });

  it("is accepted until the background refresh drops it from the key set, then refused as unknown_kid", async () => {
    fx.reset();
    // Read through a GitHub token, so that reading the status never exercises corp's key store.
    const initial = await corpState(fx, "github");
    expect(initial.source).toBe("snapshot");
    const snapshotAt = Date.parse(initial.fetchedAt ?? "");
    expect(Date.now() - snapshotAt, "the snapshot is not stale yet").toBeLessThan(KEY_MAX_AGE_MS - 500);

    const retiredKid = fx.corp.defaultKid;
    const current = await fx.corp.rotate({ retireOld: true });
    const retired = () => fx.token({}, { kid: retiredKid });

    // The key set in memory still lists the retired key: served, nothing fetched.
    await expectServed(fx, await retired());
    expect(fx.corp.jwksFetches).toBe(0);

    // Once the keys are older than keyMaxAgeSeconds, the next request is still served from memory and starts a
    // background refresh.
    await sleep(snapshotAt + KEY_MAX_AGE_MS + 300 - Date.now());
    await expectServed(fx, await retired());
    let state = initial;
    for (let i = 0; i < 100 && state.source !== "fetched"; i++) {
      await sleep(50);
      state = await corpState(fx, "github");
    }
    expect(state.source, "the background refresh installed the issuer's key set").toBe("fetched");
    expect(state.kids).not.toContain(retiredKid);
    expect(state.kids).toContain(current.kid);
    expect(fx.corp.jwksFetches).toBe(1);

    fx.reset();
    await expectUnknownKid(fx, await retired());
    fx.reset();
    await expectServed(fx, await fx.token());
    expect(fx.corp.jwksFetches, "no fetch inside the cooldown the refresh opened").toBe(0);
  });
});
