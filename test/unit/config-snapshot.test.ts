// Key snapshots taken at compile time: one GET per issuer with redirects refused, only public signing keys kept,
// and failures that name the issuer and the URL. The fake fetch refuses any request it was not told about.
import { describe, expect, it } from "vitest";
import {
  fetchKeySnapshots,
  type GatewayConfig,
  KeySnapshotError,
  parseGatewayConfig,
} from "../../src/config/index.ts";

const CONFIG = parseGatewayConfig(
  `issuers:
  - name: entra
    issuer: https://login.microsoftonline.com/11111111-1111-1111-1111-111111111111/v2.0
    jwksUri: https://login.microsoftonline.com/11111111-1111-1111-1111-111111111111/discovery/v2.0/keys
    audiences: ["22222222-2222-2222-2222-222222222222"]
    algorithms: [RS256]
    maxTokenAgeSeconds: 5400
    tenants: ["11111111-1111-1111-1111-111111111111"]
  - name: github-actions
    issuer: https://token.actions.githubusercontent.com
    jwksUri: https://token.actions.githubusercontent.com/.well-known/jwks
    audiences: [aml-edge-gateway]
    algorithms: [RS256]
    maxTokenAgeSeconds: 600
policy:
  roles: { scorer: ["score:credit"] }
  rules: [{ name: scorers, match: { role: [ml.score] }, roles: [scorer] }]
routes:
  - name: credit
    path: /v1/credit/score
    scoringUri: https://credit.westeurope.inference.ml.azure.com/score
    deployments: [{ name: blue, weight: 100 }]
    upstreamAuth: { mode: key, primarySecret: AML_KEY_PRIMARY, secondarySecret: AML_KEY_SECONDARY }
`,
  "snapshot.yaml",
);
const ENTRA_JWKS =
  "https://login.microsoftonline.com/11111111-1111-1111-1111-111111111111/discovery/v2.0/keys";
const GITHUB_JWKS = "https://token.actions.githubusercontent.com/.well-known/jwks";

/** A real 2048-bit modulus: the snapshot keeps only keys the Worker would verify with. */
const RSA_MODULUS_2048 =
  "x5ePCUm0GhLx4C47pp2rMXqAWg3gPfyVq6RnvWBAHpNiumfhBxCJEX8umiH3HLr00-4tFQZp8u9TJGOZos7BJoBHYySLy00kJ920SeD1P7feJqHNnMRhdIejjUDwcFANM7IbaxGgeLuEW9p4Llm52KKDaLtVMByg_bRyeYVeuNC_PAmqrgfIl1j_WWsc954kT5L61R2LKhpmee-It_0V5NeYtZDqSO3pAb-lCTBsR1h5WvWmFoYn5xro42VHv42mSxM0bcpU26WvVNaYhVP2jIMclHJXuVLyo9J3BWf8pFvVp4-NQtbtx7IB9X-rGxms4-VK__ubCKwRmF7OOYuL3w";
const RSA_PUBLIC = { kty: "RSA", kid: "rsa-1", use: "sig", alg: "RS256", n: RSA_MODULUS_2048, e: "AQAB" };
const RSA_MODULUS_1024 =
  "tZAnggjOrxriVxukHonEEcKNbzxLXN6FRPPW8IkMhN0vtibSqtkxKM5Q8qXiGCzbbCkrI1v6GMlCjkkvzuDCJFiATURQwYPF859iFygScERFRNV9sQwodpD-ER-CQvgDH4TGGdtesvHLSUTvvNr6E3fXCJUTEHG1bph9ScY5PkU";
const EC_PUBLIC = { kty: "EC", kid: "ec-1", crv: "P-256", x: "f83O", y: "x_FE" };
const NOW = new Date("2026-03-01T12:00:00.000Z");

type Answer = Response | (() => Promise<Response>);

/** A fetch that answers only the URLs it is given, records each request, and throws for any other URL. */
function fakeFetch(answers: Record<string, Answer>) {
  const requests: { url: string; init: RequestInit | undefined }[] = [];
  const fetch = (async (input: string | URL | Request, init?: RequestInit) => {
    const url = String(input instanceof Request ? input.url : input);
    requests.push({ url, init });
    const answer = answers[url];
    if (answer === undefined) throw new Error(`unexpected request to ${url}`);
    return typeof answer === "function" ? answer() : answer.clone();
  }) as typeof globalThis.fetch;
  return { fetch, requests };
}

const json = (body: unknown, status = 200) =>
  new Response(JSON.stringify(body), { status, headers: { "content-type": "application/json" } });

async function snapshotError(promise: Promise<unknown>): Promise<KeySnapshotError> {
  const error = await promise.catch((caught: unknown) => caught);
  if (!(error instanceof KeySnapshotError))
    throw new Error(`expected a KeySnapshotError, got ${String(error)}`);
  return error;
}

describe("fetchKeySnapshots", () => {
  it("fetches each issuer's key set once, refusing redirects, stamped with the time it was taken", async () => {
    const { fetch, requests } = fakeFetch({
      [ENTRA_JWKS]: json({ keys: [RSA_PUBLIC] }),
      [GITHUB_JWKS]: json({ keys: [EC_PUBLIC] }),
    });
    const snapshots = await fetchKeySnapshots(CONFIG, { fetch, now: () => NOW });

    expect(snapshots).toEqual({
      entra: { fetchedAt: "2026-03-01T12:00:00.000Z", jwks: { keys: [RSA_PUBLIC] } },
      "github-actions": { fetchedAt: "2026-03-01T12:00:00.000Z", jwks: { keys: [EC_PUBLIC] } },
    });
    expect(requests.map((request) => request.url).sort()).toEqual([GITHUB_JWKS, ENTRA_JWKS].sort());
    for (const request of requests) {
      expect(request.init).toMatchObject({ method: "GET", redirect: "error" });
    }
  });

  it("keeps only public signing keys: drops oct keys, encryption keys and every private member", async () => {
    const { fetch } = fakeFetch({
      [ENTRA_JWKS]: json({
        keys: [
          { ...RSA_PUBLIC, d: "private", p: "p", q: "q", dp: "dp", dq: "dq", qi: "qi" },
          { kty: "oct", kid: "hmac", k: "c2VjcmV0" },
          { ...EC_PUBLIC, kid: "ec-enc", use: "enc" },
          { kty: "OKP", kid: "ed-1", crv: "Ed25519", x: "11qY", d: "private" },
        ],
      }),
      [GITHUB_JWKS]: json({ keys: [EC_PUBLIC] }),
    });
    const snapshots = await fetchKeySnapshots(CONFIG, { fetch, now: () => NOW });
    expect(snapshots.entra?.jwks.keys).toEqual([
      RSA_PUBLIC,
      { kty: "OKP", kid: "ed-1", crv: "Ed25519", x: "11qY" },
    ]);
  });

  it("drops RSA keys the Worker would refuse: exponent other than 65537, modulus under 2048 bits", async () => {
    const { fetch } = fakeFetch({
      [ENTRA_JWKS]: json({
        keys: [
          { ...RSA_PUBLIC, kid: "e3", e: "Aw" },
          { ...RSA_PUBLIC, kid: "short", n: RSA_MODULUS_1024 },
          RSA_PUBLIC,
        ],
      }),
      [GITHUB_JWKS]: json({ keys: [EC_PUBLIC] }),
    });
    const snapshots = await fetchKeySnapshots(CONFIG, { fetch, now: () => NOW });
    expect(snapshots.entra?.jwks.keys.map((key) => key.kid)).toEqual(["rsa-1"]);
  });

  it("fails on a non-200 answer, naming the issuer, the URL and the status", async () => {
    const { fetch } = fakeFetch({
      [ENTRA_JWKS]: json({ keys: [RSA_PUBLIC] }),
      [GITHUB_JWKS]: new Response("gone", { status: 404, statusText: "Not Found" }),
    });
    const error = await snapshotError(fetchKeySnapshots(CONFIG, { fetch }));
    expect(error.message).toBe(
      `issuer "github-actions": key set ${GITHUB_JWKS} answered HTTP 404 Not Found; expected 200 with a JSON key set`,
    );
  });

  it("fails on a body that is not JSON, or not a key set, and lists every failing issuer", async () => {
    const { fetch } = fakeFetch({
      [ENTRA_JWKS]: new Response("<html>sign in</html>", { status: 200 }),
      [GITHUB_JWKS]: json({ jwks: [] }),
    });
    const error = await snapshotError(fetchKeySnapshots(CONFIG, { fetch }));
    expect(error.failures.map((failure) => [failure.issuer, failure.jwksUri])).toEqual([
      ["entra", ENTRA_JWKS],
      ["github-actions", GITHUB_JWKS],
    ]);
    const [entra, github] = error.message.split("\n");
    expect(entra).toMatch(/^issuer "entra": key set https:\/\/login\.microsoftonline\.com\/.* is not JSON/);
    expect(github).toMatch(/^issuer "github-actions": key set .* is not a JSON Web Key Set \(keys: .*\)/);
  });

  it("fails when no public signing key is left", async () => {
    const { fetch } = fakeFetch({
      [ENTRA_JWKS]: json({ keys: [{ kty: "oct", k: "c2VjcmV0" }] }),
      [GITHUB_JWKS]: json({ keys: [EC_PUBLIC] }),
    });
    const error = await snapshotError(fetchKeySnapshots(CONFIG, { fetch }));
    expect(error.message).toContain(
      `issuer "entra": key set ${ENTRA_JWKS} holds no usable public signing key`,
    );
  });

  it("fails with the cause when the fetch itself fails (e.g. a refused redirect)", async () => {
    const { fetch } = fakeFetch({
      [ENTRA_JWKS]: () =>
        Promise.reject(new TypeError("fetch failed", { cause: new Error("unexpected redirect") })),
      [GITHUB_JWKS]: json({ keys: [EC_PUBLIC] }),
    });
    const error = await snapshotError(fetchKeySnapshots(CONFIG, { fetch }));
    expect(error.message).toBe(
      `issuer "entra": key set ${ENTRA_JWKS} could not be fetched: fetch failed (unexpected redirect)`,
    );
  });

  it("gives up after timeoutMs on an issuer that does not answer", async () => {
    const requests: AbortSignal[] = [];
    const fetch = ((_input: string, init?: RequestInit) =>
      new Promise<Response>((_resolve, reject) => {
        const signal = init?.signal;
        if (!signal) throw new Error("expected an abort signal");
        requests.push(signal);
        signal.addEventListener("abort", () => reject(new DOMException("aborted", "AbortError")));
      })) as typeof globalThis.fetch;
    const config: GatewayConfig = { ...CONFIG, issuers: CONFIG.issuers.slice(0, 1) };
    const error = await snapshotError(fetchKeySnapshots(config, { fetch, timeoutMs: 20 }));
    expect(error.message).toBe(`issuer "entra": key set ${ENTRA_JWKS} did not answer within 20 ms`);
    expect(requests.every((signal) => signal.aborted)).toBe(true);
  });
});
