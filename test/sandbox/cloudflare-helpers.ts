// Helpers for the local Cloudflare's tests: the official client pointed at the sandbox, and Worker uploads built by
// hand as multipart bodies (a `metadata` JSON part and one File part per module, named like the module), because
// the client's own versions.create mangles that body (cloudflare-typescript#2799).
import Cloudflare from "cloudflare";
import type { CloudflareSandbox } from "../../src/sandbox/cloudflare/index.ts";

export interface ModulePart {
  name: string;
  contents: string;
  type?: string;
}

export interface Envelope<T = unknown> {
  success: boolean;
  errors: { code: number; message: string }[];
  result: T;
}

export interface VersionResult {
  id: string;
  number: number;
  resources: { bindings: Record<string, unknown>[] };
}

/** A module Worker that answers with its LABEL binding and the id of the version it runs as. */
export const LABEL_WORKER = `export default {
  async fetch(request, env) {
    return Response.json({ label: env.LABEL ?? null, version: env.VERSION?.id ?? null, secret: env.SECRET ?? null });
  },
};`;

export function client(cf: CloudflareSandbox, apiToken: string): Cloudflare {
  return new Cloudflare({ apiToken, baseURL: cf.apiUrl, maxRetries: 0 });
}

export function workerForm(metadata: unknown, modules: ModulePart[]): FormData {
  const form = new FormData();
  form.set("metadata", new Blob([JSON.stringify(metadata)], { type: "application/json" }));
  for (const module of modules) {
    form.set(
      module.name,
      new File([module.contents], module.name, { type: module.type ?? "application/javascript+module" }),
    );
  }
  return form;
}

/** The bindings a LABEL_WORKER version takes: its label and the version metadata. */
export function labelBindings(label: string, more: unknown[] = []): unknown[] {
  return [
    { type: "plain_text", name: "LABEL", text: label },
    { type: "version_metadata", name: "VERSION" },
    ...more,
  ];
}

export async function call<T = unknown>(
  cf: CloudflareSandbox,
  token: string,
  method: string,
  path: string,
  body?: FormData | unknown,
): Promise<{ status: number; body: Envelope<T> }> {
  const init: RequestInit = { method, headers: { authorization: `Bearer ${token}` } };
  if (body instanceof FormData) init.body = body;
  else if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers = { ...init.headers, "content-type": "application/json" };
  }
  const response = await fetch(`${cf.apiUrl}/accounts/${cf.accountId}${path}`, init);
  return { status: response.status, body: (await response.json()) as Envelope<T> };
}

/** PUT script: creates (or replaces) the Worker and deploys it at 100 %. */
export async function putWorker(
  cf: CloudflareSandbox,
  token: string,
  name: string,
  bindings: unknown[],
  source = LABEL_WORKER,
): Promise<{ status: number; body: Envelope<{ id: string; tag: string }> }> {
  const form = workerForm({ main_module: "index.js", compatibility_date: "2026-07-01", bindings }, [
    { name: "index.js", contents: source },
  ]);
  return call(cf, token, "PUT", `/workers/scripts/${name}`, form);
}

export async function uploadVersion(
  cf: CloudflareSandbox,
  token: string,
  name: string,
  bindings: unknown[],
  extra: { annotations?: Record<string, string>; source?: string; query?: string } = {},
): Promise<{ status: number; body: Envelope<VersionResult> }> {
  const metadata = {
    main_module: "index.js",
    compatibility_date: "2026-07-01",
    bindings,
    ...(extra.annotations === undefined ? {} : { annotations: extra.annotations }),
  };
  const form = workerForm(metadata, [{ name: "index.js", contents: extra.source ?? LABEL_WORKER }]);
  return call(cf, token, "POST", `/workers/scripts/${name}/versions${extra.query ?? ""}`, form);
}

/** An uploaded version's id, failing the test with the API's errors otherwise. */
export async function versionId(
  cf: CloudflareSandbox,
  token: string,
  name: string,
  label: string,
  more: unknown[] = [],
): Promise<string> {
  const { status, body } = await uploadVersion(cf, token, name, labelBindings(label, more));
  if (status !== 200) throw new Error(`version upload failed: ${status} ${JSON.stringify(body.errors)}`);
  return body.result.id;
}

/** The codes of a refused SDK call. */
export async function refusal(promise: Promise<unknown>): Promise<{ status: number; codes: number[] }> {
  try {
    await promise;
  } catch (error) {
    const { status, errors } = error as { status?: number; errors?: { code: number }[] };
    return { status: status ?? 0, codes: (errors ?? []).map((e) => e.code) };
  }
  throw new Error("the call was expected to be refused, and succeeded");
}
