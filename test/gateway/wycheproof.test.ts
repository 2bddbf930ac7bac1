// Project Wycheproof's JSON Web Signature vectors (test/fixtures/wycheproof-json-web-signature.json, 401 cases) run
// through the gateway's token verification inside workerd: ./wycheproof-worker.ts is bundled as the gateway is and
// started in one Miniflare, because jose's base64url decoding and WebCrypto differ between Node and workerd and only
// workerd's behaviour matters in production (shared/reference/security.md §1.4).
//
// Every case must meet its expectation: `valid` → accepted, `invalid` → refused, `acceptable` → either (Wycheproof
// uses it for behaviour a library may legitimately choose; this file has none today, the branch is there so a
// newer copy does not break the mapping). Where the gateway is right to disagree with the label, the case is in
// OVERRIDES below with the reason; nothing is skipped.
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";
import { Miniflare } from "miniflare";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

type Outcome = "accepted" | "rejected";

interface Override {
  tcId: number;
  expected: Outcome;
  why: string;
}

/**
 * The cases where the gateway deliberately disagrees with Wycheproof's label: exactly the eight the vectors README
 * (shared/vectors/README.md) and security.md §1.4 identify as mislabelled or contrary to RFC 8725. Each one is
 * still sent and asserted, against `expected` instead of the label; the "override reasons" test below re-checks
 * the fact each `why` rests on, so an entry cannot outlive its reason. Do not add entries to make a run pass: a
 * new disagreement is either a gateway bug or needs the same evidence as these.
 */
const OVERRIDES: readonly Override[] = [
  // RFC 7520 Figure 20 (PSS): the key pins one algorithm and the token uses another. RFC 8725 §3.1 requires
  // one key ↔ one algorithm, so jose's key set finds no key whose `alg` matches the token's.
  {
    tcId: 346,
    expected: "rejected",
    why: 'token alg is PS384 but the only key says "alg":"PS256"; RFC 8725 §3.1: reject (labelled valid)',
  },
  {
    tcId: 350,
    expected: "rejected",
    why: 'as 346, key with key_ops ["verify"]: PS384 token, key "alg":"PS256"; RFC 8725 §3.1 (labelled valid)',
  },
  // RFC 7520 Figure 27 (ECDSA P-521): the vectors give the key `"alg":"ES521"`, which is not a JWA name
  // (RFC 7518 §3.1 says ES512); a key pinned to an unknown algorithm can verify nothing.
  {
    tcId: 347,
    expected: "rejected",
    why: 'ES512 token, key says "alg":"ES521" (not a JWA algorithm), so no key matches (labelled valid)',
  },
  {
    tcId: 351,
    expected: "rejected",
    why: 'as 347, key with key_ops ["verify"]: key "alg":"ES521" is not a JWA name (labelled valid)',
  },
  // The base64 group names these "invalid padding", but the tokens carry no padding at all.
  {
    tcId: 367,
    expected: "accepted",
    why: "byte-identical to the valid tc 357 (no padding present), yet labelled invalid",
  },
  {
    tcId: 370,
    expected: "accepted",
    why: "byte-identical to the valid tc 357 (no padding present), yet labelled invalid",
  },
  // A decoder that skips unknown characters accepts these; a JWT may only contain [A-Za-z0-9_.-]
  // (draft-ietf-oauth-rfc8725bis §3.14), which the gateway's pre-check enforces.
  {
    tcId: 372,
    expected: "rejected",
    why: "'?' inside the header segment is not base64url; the pre-check's charset rule refuses it (labelled valid)",
  },
  {
    tcId: 373,
    expected: "rejected",
    why: "'?' inside the payload segment is not base64url; the pre-check's charset rule refuses it (labelled valid)",
  },
];

/** Whitespace and non-canonical base64url that jose alone accepts (security.md §1.4): the pre-check must refuse. */
const PRECHECK_MUST_REFUSE = [360, 365, 368, 375];

/** The fixture's size and the gateway's expected agreement, asserted so the suite cannot pass vacuously. */
const EXPECTED_CASES = 401;
const EXPECTED_AGREEING_WITH_LABEL = EXPECTED_CASES - OVERRIDES.length;

// --- the vectors (shape per Wycheproof's json_web_signature_schema_v1.json, as far as this test uses it) ---

type Label = "valid" | "invalid" | "acceptable";
type Jwk = Record<string, unknown> & { kty?: string };

interface TestCase {
  tcId: number;
  comment: string;
  jws: string;
  result: Label;
  flags: string[];
}

interface TestGroup {
  comment: string;
  public?: Jwk;
  private?: Jwk;
  tests: TestCase[];
}

interface VectorsFile {
  numberOfTests: number;
  testGroups: TestGroup[];
}

/** What the Worker answers per token (see VerifyBatchRequest and Verdict in ./wycheproof-worker.ts). */
interface Verdict {
  accepted: boolean;
  stage: "accepted" | "precheck" | "jose" | "key";
  reason: string;
}

const vectors = JSON.parse(
  readFileSync(new URL("../fixtures/wycheproof-json-web-signature.json", import.meta.url), "utf8"),
) as VectorsFile;

const overrideById = new Map(OVERRIDES.map((override) => [override.tcId, override]));

interface Row {
  tcId: number;
  comment: string;
  flags: string;
  label: Label;
  expected: Outcome | "either";
  why: string;
}

const rows: Row[] = vectors.testGroups.flatMap((group) =>
  group.tests.map((test): Row => {
    const override = overrideById.get(test.tcId);
    return {
      tcId: test.tcId,
      comment: test.comment,
      flags: test.flags.join(",") || "-",
      label: test.result,
      expected: override?.expected ?? labelOutcome(test.result),
      why: override?.why ?? `Wycheproof label: ${test.result}`,
    };
  }),
);

function labelOutcome(label: Label): Outcome | "either" {
  if (label === "valid") return "accepted";
  if (label === "invalid") return "rejected";
  return "either";
}

/**
 * A group's key material as the gateway would hold it. Asymmetric groups: their public key, as a one-key key set
 * (through sanitizeJwks in the Worker). HS256 groups have only a `private` oct key: the gateway never takes an oct
 * key from a key set, so the Worker treats it as a single pinned secret (see pinnedSecretVerifier there).
 */
function keyMaterial(group: TestGroup): { jwks: unknown } | { secretJwk: Jwk } {
  if (group.public !== undefined) return { jwks: { keys: [group.public] } };
  if (group.private?.kty === "oct") return { secretJwk: group.private };
  throw new Error(`group "${group.comment}" (tc ${group.tests[0]?.tcId}) has no usable key material`);
}

// --- workerd ---

const WORKER_ENTRY = fileURLToPath(new URL("./wycheproof-worker.ts", import.meta.url));

/** Bundled with the gateway's settings (src/build): neutral platform, so a stray Node import fails the build. */
async function bundleWorker(): Promise<string> {
  const result = await build({
    entryPoints: [WORKER_ENTRY],
    bundle: true,
    write: false,
    format: "esm",
    platform: "neutral",
    target: "es2024",
    conditions: ["workerd", "worker", "browser"],
    mainFields: ["browser", "module", "main"],
    logLevel: "silent",
  });
  const output = result.outputFiles[0];
  if (output === undefined) throw new Error("esbuild produced no output for the Wycheproof worker");
  return output.text;
}

let mf: Miniflare | undefined;
const verdicts = new Map<number, Verdict>();

beforeAll(async () => {
  const started = performance.now();
  const contents = await bundleWorker();
  mf = new Miniflare({
    compatibilityDate: "2026-07-01",
    modules: [{ type: "ESModule", path: "worker.js", contents }],
  });
  const worker = mf;
  // One request per group, carrying all its tokens: 23 round trips instead of 401.
  await Promise.all(
    vectors.testGroups.map(async (group) => {
      const response = await worker.dispatchFetch("http://wycheproof.test/", {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ ...keyMaterial(group), tokens: group.tests.map((test) => test.jws) }),
      });
      const text = await response.text();
      if (response.status !== 200) {
        throw new Error(`group "${group.comment}" answered HTTP ${response.status}: ${text.slice(0, 500)}`);
      }
      const answer = JSON.parse(text) as { verdicts: Verdict[] };
      if (answer.verdicts.length !== group.tests.length) {
        throw new Error(
          `group "${group.comment}": ${answer.verdicts.length} verdicts for ${group.tests.length}`,
        );
      }
      group.tests.forEach((test, index) => {
        verdicts.set(test.tcId, answer.verdicts[index] as Verdict);
      });
    }),
  );
  const stages = new Map<string, number>();
  for (const verdict of verdicts.values()) stages.set(verdict.stage, (stages.get(verdict.stage) ?? 0) + 1);
  console.info(
    `wycheproof: ${verdicts.size} cases through workerd in ${Math.round(performance.now() - started)} ms`,
    Object.fromEntries(stages),
  );
}, 120_000);

afterAll(async () => {
  await mf?.dispose();
});

function outcomeOf(tcId: number): Outcome {
  const verdict = verdicts.get(tcId);
  if (verdict === undefined) throw new Error(`no verdict for tc ${tcId}`);
  return verdict.accepted ? "accepted" : "rejected";
}

describe("Wycheproof JWS vectors through the gateway's verifier in workerd", () => {
  it.each(rows)("tc $tcId $comment [$flags]: $label → $expected", (row) => {
    const verdict = verdicts.get(row.tcId);
    expect(verdict, `tc ${row.tcId} got no verdict`).toBeDefined();
    if (verdict === undefined || row.expected === "either") return;
    expect(
      outcomeOf(row.tcId),
      `tc ${row.tcId} "${row.comment}" flags=${row.flags} label=${row.label} (${row.why}); gateway: ${verdict.stage} ${verdict.reason}`,
    ).toBe(row.expected);
  });

  it.each(PRECHECK_MUST_REFUSE)("tc %i is refused by the gateway's pre-check, before jose", (tcId) => {
    const verdict = verdicts.get(tcId);
    expect(verdict?.accepted).toBe(false);
    expect(verdict?.stage, verdict?.reason).toBe("precheck");
    expect(verdict?.reason).toMatch(/^token_malformed: /);
  });

  it("runs every case and agrees with every label but the overridden ones", () => {
    expect(vectors.numberOfTests).toBe(EXPECTED_CASES);
    expect(rows).toHaveLength(EXPECTED_CASES);
    expect(new Set(rows.map((row) => row.tcId)).size).toBe(EXPECTED_CASES);
    expect(verdicts.size).toBe(EXPECTED_CASES);

    const disagreeing = rows
      .filter((row) => row.label !== "acceptable" && outcomeOf(row.tcId) !== labelOutcome(row.label))
      .map((row) => row.tcId);
    const agreeing = rows.filter((row) => row.label !== "acceptable").length - disagreeing.length;
    expect(agreeing).toBe(EXPECTED_AGREEING_WITH_LABEL);
    expect(disagreeing).toEqual(OVERRIDES.map((override) => override.tcId).sort((a, b) => a - b));

    // Every label class is exercised: the run is not all refusals or all acceptances.
    const accepted = rows.filter((row) => outcomeOf(row.tcId) === "accepted").length;
    expect(accepted).toBe(rows.filter((row) => row.expected === "accepted").length);
    expect(accepted).toBeGreaterThan(0);
    expect(accepted).toBeLessThan(EXPECTED_CASES);
    // A "key" verdict means the group's key material was unusable, which would refuse its cases vacuously.
    expect([...verdicts.values()].filter((verdict) => verdict.stage === "key")).toEqual([]);
  });

  it("answers a single { token } request like the batched one", async () => {
    const group = vectors.testGroups.find((candidate) => candidate.tests.some((test) => test.tcId === 357));
    const test357 = group?.tests.find((test) => test.tcId === 357);
    if (group === undefined || test357 === undefined || mf === undefined)
      throw new Error("tc 357 or workerd missing");
    const response = await mf.dispatchFetch("http://wycheproof.test/", {
      method: "POST",
      body: JSON.stringify({ ...keyMaterial(group), token: test357.jws }),
    });
    expect(await response.json()).toEqual(verdicts.get(357));
    expect(verdicts.get(357)?.accepted).toBe(true);
  });

  it("override reasons still hold in the fixture", () => {
    const byId = new Map(
      vectors.testGroups.flatMap((group) => group.tests.map((test) => [test.tcId, { group, test }] as const)),
    );
    const find = (tcId: number) => {
      const found = byId.get(tcId);
      if (found === undefined) throw new Error(`tc ${tcId} is not in the fixture`);
      return found;
    };
    const headerOf = (jws: string): Record<string, unknown> =>
      JSON.parse(Buffer.from(jws.split(".")[0] ?? "", "base64url").toString("utf8"));

    for (const override of OVERRIDES) {
      const { test } = find(override.tcId);
      // An override that agrees with the label would be a no-op hiding nothing; it must contradict it.
      expect(override.expected, `tc ${override.tcId}`).not.toBe(labelOutcome(test.result));
    }
    for (const tcId of [346, 350]) {
      const { group, test } = find(tcId);
      expect(headerOf(test.jws).alg).toBe("PS384");
      expect(group.public?.alg).toBe("PS256");
    }
    for (const tcId of [347, 351]) {
      const { group, test } = find(tcId);
      expect(headerOf(test.jws).alg).toBe("ES512");
      expect(group.public?.alg).toBe("ES521");
    }
    for (const tcId of [367, 370]) expect(find(tcId).test.jws).toBe(find(357).test.jws);
    for (const tcId of [372, 373]) expect(find(tcId).test.jws).toContain("?");
  });
});
