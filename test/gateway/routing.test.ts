// Deployment choice: sticky weighted assignment (SHA-256 of iss + sub, or a configured claim), cohorts, and the pin
// header, observed from outside: the x-aml-edge-deployment header, the audit record, and what Azure ML received.
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { type GatewayFixture, GITHUB_AUDIENCE, startGatewayFixture } from "./fixture.ts";

const DEPLOYMENT_HEADER = "azureml-model-deployment";

/** Runs `task` over `items` with at most `limit` in flight; results keep the input order. */
async function mapBounded<T, R>(
  items: readonly T[],
  limit: number,
  task: (item: T) => Promise<R>,
): Promise<R[]> {
  const results = new Array<R>(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const index = next++;
      results[index] = await task(items[index] as T);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return results;
}

/** Scores with `token` and returns the deployment the gateway chose (the request must be served). */
async function deploymentFor(fx: GatewayFixture, token: string, headers: Record<string, string> = {}) {
  const response = await fx.score(token, { headers });
  expect(response.status, await response.clone().text()).toBe(200);
  await response.body?.cancel();
  const deployment = response.headers.get("x-aml-edge-deployment");
  expect(deployment).not.toBeNull();
  return deployment as string;
}

/** A GitHub Actions token that the fixture's policy lets score (repository 424242, environment production). */
function githubToken(fx: GatewayFixture, sub: string): Promise<string> {
  return fx.github.mint({ aud: GITHUB_AUDIENCE, sub, repository_id: "424242", environment: "production" });
}

/** The first `user-<i>` (i < limit) whose corp token the weights send to `wanted`. */
async function findSubject(fx: GatewayFixture, wanted: string, limit = 200): Promise<string> {
  for (let i = 0; i < limit; i++) {
    const sub = `probe-${i}`;
    if ((await deploymentFor(fx, await fx.token({ sub }))) === wanted) return sub;
  }
  throw new Error(`no subject among ${limit} lands on ${wanted}`);
}

describe("blue 90 / green 10, sticky by iss + sub", () => {
  let fx: GatewayFixture;
  beforeAll(async () => {
    fx = await startGatewayFixture();
  });
  afterAll(async () => {
    await fx?.dispose();
  });
  beforeEach(() => fx.reset());

  it("sends 2,000 distinct subjects to green in a share within 4.5 standard errors of 10%", async () => {
    const n = 2000;
    const subjects = Array.from({ length: n }, (_, i) => `user-${i}`);
    const chosen = await mapBounded(subjects, 16, async (sub) => deploymentFor(fx, await fx.token({ sub })));
    const green = chosen.filter((deployment) => deployment === "green").length;
    const blue = chosen.filter((deployment) => deployment === "blue").length;
    expect(green + blue).toBe(n);
    // Each subject lands on green independently with p = 0.10 (SHA-256 of iss + sub is uniform, and iss carries
    // an ephemeral port, so every run draws a fresh sample). The share p̂ = green / n has standard error
    // sqrt(p·(1−p)/n) = sqrt(0.1·0.9/2000) ≈ 0.00671. Accepting |p̂ − 0.10| ≤ 4.5·SE (≈ 0.0302, i.e. 140–260 of
    // 2,000) gives a false alarm with probability P(|Z| > 4.5) ≈ 7·10⁻⁶ per run (normal approximation, n·p = 200).
    const share = green / n;
    const bound = 4.5 * Math.sqrt((0.1 * 0.9) / n);
    expect(Math.abs(share - 0.1), `green share ${share} (${green} of ${n})`).toBeLessThanOrEqual(bound);
    expect(fx.scoring.requests).toHaveLength(n);
  });

  it("keeps one subject on one deployment: 20 fresh tokens for a subject the weights send to green", async () => {
    // Green (the 10% side) makes this a real test: a non-sticky choice would pass 20 times with p = 10⁻²⁰.
    const sub = await findSubject(fx, "green");
    fx.reset();
    for (let i = 0; i < 20; i++) {
      const response = await fx.score(await fx.token({ sub }));
      expect(response.status).toBe(200);
      expect(response.headers.get("x-aml-edge-deployment")).toBe("green");
      expect((await fx.auditOf(response)).assignment).toBe("weighted");
    }
    expect(fx.scoring.requests.map((request) => request.headers[DEPLOYMENT_HEADER])).toEqual(
      Array(20).fill("green"),
    );
  });

  it("keeps one subject on one deployment: 20 fresh tokens for each of 5 subjects", async () => {
    for (let s = 0; s < 5; s++) {
      const sub = `sticky-${s}`;
      const seen = new Set<string>();
      for (let i = 0; i < 20; i++) seen.add(await deploymentFor(fx, await fx.token({ sub })));
      expect([...seen], `subject ${sub}`).toHaveLength(1);
    }
  });

  it("hashes the issuer too: the same sub from the GitHub issuer may land elsewhere", async () => {
    // P(the two issuers agree for one subject) = 0.9² + 0.1² = 0.82; 208 subjects all agreeing: 0.82²⁰⁸ ≈ 10⁻¹⁸.
    // Batches of 16 until one subject differs (≈ 6 subjects are needed on average), at most 13 batches.
    let first: { sub: string; corp: string; github: string } | undefined;
    for (let batch = 0; batch < 13 && first === undefined; batch++) {
      const subjects = Array.from({ length: 16 }, (_, i) => `shared-${batch * 16 + i}`);
      const pairs = await mapBounded(subjects, 16, async (sub) => ({
        sub,
        corp: await deploymentFor(fx, await fx.token({ sub })),
        github: await deploymentFor(fx, await githubToken(fx, sub)),
      }));
      first = pairs.find((pair) => pair.corp !== pair.github);
    }
    if (first === undefined) throw new Error("every subject landed on the same deployment from both issuers");
    // And each issuer's choice for such a subject is itself sticky.
    expect(await deploymentFor(fx, await fx.token({ sub: first.sub }))).toBe(first.corp);
    expect(await deploymentFor(fx, await githubToken(fx, first.sub))).toBe(first.github);
  });

  it("sends the beta-testers cohort to green whatever the weights say", async () => {
    const blueSubject = await findSubject(fx, "blue");
    fx.reset();
    const subjects = [blueSubject, ...Array.from({ length: 49 }, (_, i) => `beta-${i}`)];
    for (const sub of subjects) {
      const response = await fx.score(await fx.token({ sub, groups: ["other", "beta-testers"] }));
      expect(response.status).toBe(200);
      expect(response.headers.get("x-aml-edge-deployment"), `subject ${sub}`).toBe("green");
      const record = await fx.auditOf(response);
      expect(record).toMatchObject({ deployment: "green", assignment: "cohort", cohort: "beta" });
    }
    expect(fx.scoring.requests.every((request) => request.headers[DEPLOYMENT_HEADER] === "green")).toBe(true);
    expect(fx.scoring.requests).toHaveLength(subjects.length);
  });

  it("ignores a plain scorer's pin: the weighted choice is served and sent upstream, not the client's value", async () => {
    const sub = await findSubject(fx, "blue");
    fx.reset();
    const response = await fx.score(await fx.token({ sub }), { headers: { [DEPLOYMENT_HEADER]: "green" } });
    expect(response.status).toBe(200);
    expect(response.headers.get("x-aml-edge-deployment")).toBe("blue");
    expect(await fx.auditOf(response)).toMatchObject({ deployment: "blue", assignment: "weighted" });
    expect(fx.scoring.requests).toHaveLength(1);
    expect(fx.scoring.requests[0]?.headers[DEPLOYMENT_HEADER]).toBe("blue");
    expect(fx.scoring.requests[0]?.deployment).toBe("blue");
  });

  it("ignores a plain scorer's pin to a deployment that does not exist (no 400: the pin is not theirs to make)", async () => {
    const response = await fx.score(await fx.token(), { headers: { [DEPLOYMENT_HEADER]: "nonexistent" } });
    expect(response.status).toBe(200);
    expect(["blue", "green"]).toContain(fx.scoring.requests[0]?.headers[DEPLOYMENT_HEADER]);
  });

  it("honours a releaser's pin, for a subject the weights send to blue", async () => {
    const sub = await findSubject(fx, "blue");
    fx.reset();
    const token = await fx.token({ sub, roles: ["ml.release"] });
    const response = await fx.score(token, { headers: { [DEPLOYMENT_HEADER]: "green" } });
    expect(response.status).toBe(200);
    expect(response.headers.get("x-aml-edge-deployment")).toBe("green");
    expect(await fx.auditOf(response)).toMatchObject({
      deployment: "green",
      assignment: "pinned",
      roles: ["releaser"],
    });
    expect(fx.scoring.requests).toHaveLength(1);
    expect(fx.scoring.requests[0]?.headers[DEPLOYMENT_HEADER]).toBe("green");
    // Without the header the same releaser gets the weighted choice.
    expect(await deploymentFor(fx, token)).toBe("blue");
  });

  it("refuses a releaser's pin to an unknown deployment with 400 pin_unknown_deployment, nothing upstream", async () => {
    const token = await fx.token({ roles: ["ml.release"] });
    const response = await fx.score(token, { headers: { [DEPLOYMENT_HEADER]: "purple" } });
    const record = await fx.expectRefused(response, {
      status: 400,
      error: null,
      reason: "pin_unknown_deployment",
    });
    expect(record.route).toBe("credit");
  });
});

describe("route.sticky.claim = oid", () => {
  let fx: GatewayFixture;
  beforeAll(async () => {
    fx = await startGatewayFixture({
      configure: (config) => {
        const route = config.routes[0];
        if (route) route.sticky = { claim: "oid" };
      },
    });
  });
  afterAll(async () => {
    await fx?.dispose();
  });
  beforeEach(() => fx.reset());

  it("keeps one oid on one deployment across 20 different sub values", async () => {
    // An oid the weights send to green, so that hashing sub instead would scatter 20 subs mostly onto blue.
    let greenOid: string | undefined;
    for (let i = 0; i < 200 && greenOid === undefined; i++) {
      const oid = `00000000-0000-4000-8000-${String(i).padStart(12, "0")}`;
      if ((await deploymentFor(fx, await fx.token({ sub: `probe-${i}`, oid }))) === "green") greenOid = oid;
    }
    expect(greenOid, "an oid among 200 lands on green").toBeDefined();
    fx.reset();
    const subs = Array.from({ length: 20 }, (_, i) => `session-${i}`);
    const chosen = await mapBounded(subs, 8, async (sub) =>
      deploymentFor(fx, await fx.token({ sub, oid: greenOid })),
    );
    expect(chosen).toEqual(Array(20).fill("green"));
  });

  it("spreads different oids with the same sub (the claim, not sub, is hashed)", async () => {
    const oids = Array.from(
      { length: 100 },
      (_, i) => `10000000-0000-4000-8000-${String(i).padStart(12, "0")}`,
    );
    const chosen = await mapBounded(oids, 16, async (oid) =>
      deploymentFor(fx, await fx.token({ sub: "one-sub", oid })),
    );
    // All 100 on one side would happen with probability 0.9¹⁰⁰ + 0.1¹⁰⁰ ≈ 3·10⁻⁵.
    expect(new Set(chosen).size).toBe(2);
  });
});

describe("weights green 100 / blue 0", () => {
  let fx: GatewayFixture;
  beforeAll(async () => {
    fx = await startGatewayFixture({
      configure: (config) => {
        const route = config.routes[0];
        if (route)
          route.deployments = [
            { name: "blue", weight: 0 },
            { name: "green", weight: 100 },
          ];
      },
    });
  });
  afterAll(async () => {
    await fx?.dispose();
  });
  beforeEach(() => fx.reset());

  it("sends every one of 200 subjects to green", async () => {
    const subjects = Array.from({ length: 200 }, (_, i) => `user-${i}`);
    const chosen = await mapBounded(subjects, 16, async (sub) => deploymentFor(fx, await fx.token({ sub })));
    expect(new Set(chosen)).toEqual(new Set(["green"]));
    expect(fx.scoring.requests.every((request) => request.headers[DEPLOYMENT_HEADER] === "green")).toBe(true);
  });
});
