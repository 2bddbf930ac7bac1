// The real Cloudflare client over a fake HTTP layer: the multipart body of an upload built by hand (a `metadata` JSON
// part, one part per module named like it and typed as an ES module), the JSON calls through the official client, the
// bearer token and nothing else, and every refusal turned into an error that names the call, Cloudflare's codes and
// what to do. The fake answers only the requests a test routes; anything else fails the test.
import { afterEach, describe, expect, it } from "vitest";
import { createCloudflareApi } from "../../src/cloudflare/api.ts";
import { CloudflareApiError } from "../../src/cloudflare/errors.ts";
import {
  MAX_MESSAGE_BYTES,
  truncateUtf8,
  type WorkerUpload,
  workerUploadForm,
} from "../../src/cloudflare/upload.ts";

const ACCOUNT = "0123456789abcdef0123456789abcdef";
const BASE = "https://api.test/client/v4";

interface Seen {
  method: string;
  path: string;
  query: string;
  headers: Headers;
  body: Request;
}

type Route = (request: Seen) => Response | Promise<Response>;

function fakeFetch(routes: Record<string, Route>) {
  const seen: Seen[] = [];
  const fetch = async (input: string | URL | Request, init?: RequestInit): Promise<Response> => {
    const request = new Request(input, init);
    const url = new URL(request.url);
    const path = url.pathname.replace("/client/v4", "");
    const entry: Seen = {
      method: request.method,
      path,
      query: url.search,
      headers: request.headers,
      body: request,
    };
    seen.push(entry);
    const route = routes[`${request.method} ${path}`];
    if (route === undefined)
      return envelope(599, null, [{ code: 0, message: `unrouted ${request.method} ${path}` }]);
    return route(entry);
  };
  return { fetch: fetch as typeof globalThis.fetch, seen };
}

function envelope(
  status: number,
  result: unknown,
  errors: { code: number; message: string }[] = [],
): Response {
  return Response.json({ success: errors.length === 0, errors, messages: [], result }, { status });
}

const api = (fetch: typeof globalThis.fetch, tokenDescription = "the `cloudflare-api-token` input") =>
  createCloudflareApi({ apiUrl: BASE, accountId: ACCOUNT, token: "secret-token", tokenDescription, fetch });

const UPLOAD: WorkerUpload = {
  mainModule: "worker.js",
  modules: [{ name: "worker.js", content: "export default { fetch() { return new Response('hi'); } };" }],
  compatibilityDate: "2026-07-01",
  bindings: [
    { type: "json", name: "AML_EDGE_CONFIG", json: { version: "sha256:abc" } },
    { type: "secret_text", name: "AML_KEY_PRIMARY", text: "k1" },
    { type: "inherit", name: "AML_KEY_SECONDARY", version_id: "v-1" },
  ],
  annotations: { message: "aml-edge route: config sha256:abc", tag: "sha256:abc" },
};

const savedEnv = { ...process.env };
afterEach(() => {
  process.env = { ...savedEnv };
});

describe("Worker uploads", () => {
  it("POSTs the version as a metadata JSON part and one ES-module part named and filed like the module", async () => {
    const { fetch, seen } = fakeFetch({
      [`POST /accounts/${ACCOUNT}/workers/scripts/aml-edge-gateway/versions`]: () =>
        envelope(200, {
          id: "v-2",
          number: 2,
          // Where Cloudflare puts them (beside the id), not under metadata.
          annotations: { "workers/tag": "sha256:abc" },
          resources: { bindings: [{ type: "json", name: "AML_EDGE_CONFIG", json: {} }] },
        }),
    });
    const version = await api(fetch).uploadVersion("aml-edge-gateway", UPLOAD);
    expect(version).toEqual({
      id: "v-2",
      number: 2,
      annotations: { "workers/tag": "sha256:abc" },
      bindings: [{ type: "json", name: "AML_EDGE_CONFIG", json: {} }],
    });
    const request = seen[0];
    expect(request?.query).toBe("?bindings_inherit=strict");
    expect(request?.headers.get("authorization")).toBe("Bearer secret-token");
    expect(request?.headers.get("content-type")).toMatch(/^multipart\/form-data; boundary=/);
    const raw = await request?.body.clone().text();
    expect(raw).toContain('Content-Disposition: form-data; name="worker.js"; filename="worker.js"');
    expect(raw).toContain("Content-Type: application/javascript+module");
    expect(raw).toMatch(
      /Content-Disposition: form-data; name="metadata"(; filename="[^"]*")?\r\nContent-Type: application\/json/,
    );
    // No field the SDK's encoder would have made of it.
    expect(raw).not.toMatch(/name="(metadata\[|files\[\])/);
    if (request === undefined) throw new Error("no request");
    const form = await request.body.formData();
    expect([...form.keys()]).toEqual(["metadata", "worker.js"]);
    const metadata = JSON.parse(await (form.get("metadata") as Blob).text());
    expect(metadata).toEqual({
      main_module: "worker.js",
      compatibility_date: "2026-07-01",
      bindings: UPLOAD.bindings,
      annotations: { "workers/message": "aml-edge route: config sha256:abc", "workers/tag": "sha256:abc" },
    });
    const module = form.get("worker.js") as File;
    expect(module.name).toBe("worker.js");
    expect(await module.text()).toBe(UPLOAD.modules[0]?.content);
  });

  it("PUTs the same parts to create a Worker", async () => {
    const { fetch, seen } = fakeFetch({
      [`PUT /accounts/${ACCOUNT}/workers/scripts/aml-edge-gateway`]: () =>
        envelope(200, { id: "aml-edge-gateway" }),
    });
    await api(fetch).uploadScript("aml-edge-gateway", UPLOAD);
    const form = await seen[0]?.body.formData();
    expect([...(form?.keys() ?? [])]).toEqual(["metadata", "worker.js"]);
  });

  it("cuts annotations to Cloudflare's byte limits on a character boundary", () => {
    const long = `${"é".repeat(600)}`; // 1200 bytes
    const form = workerUploadForm({ ...UPLOAD, annotations: { message: long, tag: "t".repeat(150) } });
    const cut = truncateUtf8(long, MAX_MESSAGE_BYTES);
    expect(new TextEncoder().encode(cut).byteLength).toBeLessThanOrEqual(MAX_MESSAGE_BYTES);
    expect(cut.endsWith("é…")).toBe(true);
    expect(form.get("metadata")).toBeInstanceOf(Blob);
  });

  it("refuses an upload whose main module is not among the modules (a bug, before anything is sent)", () => {
    expect(() => workerUploadForm({ ...UPLOAD, mainModule: "index.js" })).toThrow(
      "main module index.js is not among the uploaded modules",
    );
  });

  it("turns a malformed-upload refusal (10021) into a bug report, not the user's to fix", async () => {
    const { fetch } = fakeFetch({
      [`POST /accounts/${ACCOUNT}/workers/scripts/aml-edge-gateway/versions`]: () =>
        envelope(400, null, [{ code: 10021, message: "Uncaught SyntaxError: No such module" }]),
    });
    const error = await api(fetch)
      .uploadVersion("aml-edge-gateway", UPLOAD)
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(CloudflareApiError);
    expect(error).toMatchObject({ status: 400, codes: [10021], userFixable: false });
    expect((error as Error).message).toBe(
      "Uploading a new version of Worker aml-edge-gateway: Cloudflare answered HTTP 400, 10021 Uncaught " +
        "SyntaxError: No such module. Cloudflare could not read the upload aml-edge built. This is a bug in " +
        "aml-edge; please report it with this message.",
    );
  });
});

describe("JSON calls through the official client", () => {
  it("sends the bearer token only, even when the environment holds a global API key", async () => {
    process.env.CLOUDFLARE_API_KEY = "global-key";
    process.env.CLOUDFLARE_EMAIL = "someone@example.com";
    const { fetch, seen } = fakeFetch({
      [`GET /accounts/${ACCOUNT}/tokens/verify`]: () =>
        envelope(200, { id: "t1", status: "active", expires_on: "2026-11-25T05:00:00Z" }),
    });
    await expect(api(fetch).verifyToken("account")).resolves.toEqual({
      id: "t1",
      status: "active",
      not_before: undefined,
      expires_on: "2026-11-25T05:00:00Z",
    });
    expect(seen[0]?.headers.get("authorization")).toBe("Bearer secret-token");
    expect(seen[0]?.headers.get("x-auth-key")).toBeNull();
    expect(seen[0]?.headers.get("x-auth-email")).toBeNull();
  });

  it("reads the live deployment list (result.deployments, which the client's pager does not know)", async () => {
    const deployment = {
      id: "d-1",
      created_on: "2026-11-25T03:00:00Z",
      source: "api",
      strategy: "percentage",
      versions: [
        { version_id: "v-2", percentage: 10 },
        { version_id: "v-1", percentage: 90 },
      ],
      annotations: { "workers/message": "hello" },
    };
    const { fetch } = fakeFetch({
      [`GET /accounts/${ACCOUNT}/workers/scripts/aml-edge-gateway/deployments`]: () =>
        envelope(200, { deployments: [deployment] }),
    });
    await expect(api(fetch).listDeployments("aml-edge-gateway")).resolves.toEqual([deployment]);
  });

  it("creates a deployment with its versions and message, and force only when asked", async () => {
    const { fetch, seen } = fakeFetch({
      [`POST /accounts/${ACCOUNT}/workers/scripts/aml-edge-gateway/deployments`]: async (request) =>
        envelope(200, {
          id: "d-2",
          strategy: "percentage",
          ...((await request.body.clone().json()) as object),
        }),
    });
    const client = api(fetch);
    const versions = [{ version_id: "v-1", percentage: 100 }];
    await client.createDeployment("aml-edge-gateway", { versions, message: "restore" });
    await client.createDeployment("aml-edge-gateway", { versions, force: true });
    expect(seen[0]?.query).toBe("");
    expect(seen[1]?.query).toBe("?force=true");
    expect(await seen[0]?.body.json()).toEqual({
      strategy: "percentage",
      versions,
      annotations: { "workers/message": "restore" },
    });
  });

  it("mints a token without retrying a failed create (a lost answer would leave an unknown token)", async () => {
    let creates = 0;
    const { fetch } = fakeFetch({
      [`POST /accounts/${ACCOUNT}/tokens`]: () => {
        creates++;
        return envelope(503, null, [{ code: 10013, message: "try later" }]);
      },
    });
    await expect(
      api(fetch).createToken({ name: "t", policies: [], expires_on: "2026-11-25T05:00:00Z" }),
    ).rejects.toThrow(
      /Creating the Cloudflare API token "t": Cloudflare answered HTTP 503, 10013 try later\. Cloudflare failed to answer/,
    );
    expect(creates).toBe(1);
  });

  it.each([
    [
      401,
      [{ code: 1000, message: "Invalid API Token" }],
      "Reading the deployments of Worker aml-edge-gateway: Cloudflare answered HTTP 401, 1000 Invalid API Token. " +
        "Cloudflare does not accept the `cloudflare-api-token` input: it is unknown, deleted, disabled, expired or " +
        "not yet valid.",
      true,
    ],
    [
      403,
      [{ code: 10000, message: "Authentication error" }],
      "Reading the deployments of Worker aml-edge-gateway: Cloudflare answered HTTP 403, 10000 Authentication " +
        'error. The `cloudflare-api-token` input lacks the permission this call needs: "Workers Scripts Read on ' +
        'Worker aml-edge-gateway".',
      true,
    ],
    [
      404,
      [{ code: 10007, message: "This Worker does not exist on your account." }],
      "Reading the deployments of Worker aml-edge-gateway: Cloudflare answered HTTP 404, 10007 This Worker does " +
        `not exist on your account.. There is no Worker "aml-edge-gateway" on account ${ACCOUNT}: check ` +
        "`worker-name` and `cloudflare-account-id`.",
      true,
    ],
  ])("HTTP %i becomes an error that says what to do", async (status, errors, message, userFixable) => {
    const { fetch } = fakeFetch({
      [`GET /accounts/${ACCOUNT}/workers/scripts/aml-edge-gateway/deployments`]: () =>
        envelope(status, null, errors),
    });
    const error = await api(fetch)
      .listDeployments("aml-edge-gateway")
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(CloudflareApiError);
    expect((error as CloudflareApiError).message).toContain(message);
    expect((error as CloudflareApiError).userFixable).toBe(userFixable);
    expect((error as CloudflareApiError).codes).toEqual(errors.map((e) => e.code));
    expect((error as Error).message).not.toContain("secret-token");
  });

  it("names Cloudflare's address when it cannot be reached", async () => {
    const fetch = (async () => {
      throw new TypeError("fetch failed", { cause: new Error("connect ECONNREFUSED 127.0.0.1:1") });
    }) as typeof globalThis.fetch;
    const client = createCloudflareApi({
      apiUrl: BASE,
      accountId: ACCOUNT,
      token: "secret-token",
      tokenDescription: "x",
      fetch,
      timeoutMs: 1000,
    });
    await expect(client.uploadVersion("aml-edge-gateway", UPLOAD)).rejects.toThrow(
      `Uploading a new version of Worker aml-edge-gateway: could not reach Cloudflare at ${BASE} (connect ECONNREFUSED 127.0.0.1:1)`,
    );
  });
});
