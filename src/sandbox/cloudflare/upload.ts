// The multipart body of a Worker version or script upload, read with the platform's own multipart parser
// (`Request.formData()`) and validated the way Cloudflare does: a `metadata` part holding JSON, and one part per
// module whose part name and filename both equal the module name. Anything else is refused with 10021 and a message
// that names the problem, so a client that mangles the body (cloudflare-typescript#2799) finds out here, as it would
// against Cloudflare, instead of uploading something the sandbox guessed at.
import type { WorkerModule } from "../gateway-runtime.ts";
import { invalidUpload } from "./errors.ts";

export interface UploadedModule {
  name: string;
  type: WorkerModule["type"];
  contents: string | Uint8Array;
}

export type BindingInput =
  | { type: "json"; name: string; json: unknown }
  | { type: "secret_text"; name: string; text: string }
  | { type: "plain_text"; name: string; text: string }
  | { type: "version_metadata"; name: string }
  | { type: "inherit"; name: string; version_id?: string; old_name?: string };

export const SUPPORTED_BINDING_TYPES = [
  "json",
  "plain_text",
  "secret_text",
  "inherit",
  "version_metadata",
] as const;

export interface WorkerUpload {
  mainModule: string;
  /** The main module first. */
  modules: UploadedModule[];
  compatibilityDate: string | undefined;
  compatibilityFlags: string[];
  bindings: BindingInput[];
  /** Binding types to carry over from the latest version when not named in `bindings` (wrangler's keep_bindings). */
  keepBindings: string[];
  annotations: Record<string, string>;
}

const MODULE_TYPES: Record<string, WorkerModule["type"] | "skip"> = {
  "application/javascript+module": "ESModule",
  "text/javascript+module": "ESModule",
  "application/javascript": "CommonJS",
  "text/javascript": "CommonJS",
  "text/plain": "Text",
  "application/octet-stream": "Data",
  "application/wasm": "CompiledWasm",
  // Source maps ride along with the modules on Cloudflare but are not modules.
  "application/source-map": "skip",
};
const BINDING_NAME = /^[A-Za-z_$][A-Za-z0-9_$]*$/;
const MAX_BINDINGS = 1000;
const MESSAGE_MAX_BYTES = 1000;
const TAG_MAX_BYTES = 100;

/** Parses and validates an upload body. `today` (YYYY-MM-DD, UTC) bounds the compatibility date, as Cloudflare does. */
export async function parseWorkerUpload(
  body: Uint8Array,
  contentType: string | undefined,
  today: string,
): Promise<WorkerUpload> {
  if (contentType === undefined || !/^multipart\/form-data\s*;/i.test(contentType)) {
    throw invalidUpload(
      `Content-Type is ${JSON.stringify(contentType ?? "")}; a Worker upload must be multipart/form-data with a boundary`,
    );
  }
  let form: FormData;
  try {
    const request = new Request("http://upload.invalid/", {
      method: "POST",
      headers: { "content-type": contentType },
      body,
    });
    form = await request.formData();
  } catch (error) {
    throw invalidUpload(
      `the body is not valid multipart/form-data (${error instanceof Error ? error.message : String(error)})`,
    );
  }

  const names = [...new Set([...form.keys()])];
  const metadataEntries = form.getAll("metadata");
  if (metadataEntries.length !== 1) {
    throw invalidUpload(
      metadataEntries.length === 0
        ? `the body has no "metadata" part (parts found: ${names.map((n) => JSON.stringify(n)).join(", ") || "none"}); send the metadata as one part named "metadata" holding JSON`
        : 'the body has more than one "metadata" part',
    );
  }
  const metadataEntry = metadataEntries[0] as string | File;
  const metadataText = typeof metadataEntry === "string" ? metadataEntry : await metadataEntry.text();
  let metadata: unknown;
  try {
    metadata = JSON.parse(metadataText);
  } catch {
    throw invalidUpload('the "metadata" part is not JSON');
  }
  if (typeof metadata !== "object" || metadata === null || Array.isArray(metadata)) {
    throw invalidUpload('the "metadata" part must be a JSON object {main_module, bindings, ...}');
  }
  const meta = metadata as Record<string, unknown>;
  if (meta.body_part !== undefined) {
    throw invalidUpload(
      "metadata.body_part (service-worker syntax) is not accepted; upload ES modules and name the entry in main_module",
    );
  }
  const mainModule = meta.main_module;
  if (typeof mainModule !== "string" || mainModule === "") {
    throw invalidUpload("metadata.main_module is missing; name the module part that is the Worker's entry");
  }

  const modules: UploadedModule[] = [];
  for (const [name, value] of form.entries()) {
    if (name === "metadata") continue;
    if (typeof value === "string") {
      throw invalidUpload(
        `part ${JSON.stringify(name)} has no filename; a module part must be a file whose filename equals its part name`,
      );
    }
    if (value.name !== name) {
      throw invalidUpload(
        `part ${JSON.stringify(name)} has filename ${JSON.stringify(value.name)}; a module part's filename must equal its part name`,
      );
    }
    checkModuleName(name);
    const mediaType = (value.type.split(";")[0] ?? "").trim().toLowerCase();
    const type = MODULE_TYPES[mediaType];
    if (type === undefined) {
      throw invalidUpload(
        `part ${JSON.stringify(name)} has Content-Type ${JSON.stringify(value.type)}; accepted: ${Object.keys(MODULE_TYPES).join(", ")}`,
      );
    }
    if (type === "skip") continue;
    if (modules.some((module) => module.name === name)) {
      throw invalidUpload(`module ${JSON.stringify(name)} is uploaded twice`);
    }
    const bytes = new Uint8Array(await value.arrayBuffer());
    const textual = type === "ESModule" || type === "CommonJS" || type === "Text";
    modules.push({ name, type, contents: textual ? new TextDecoder().decode(bytes) : bytes });
  }
  const main = modules.find((module) => module.name === mainModule);
  if (main === undefined) {
    throw invalidUpload(
      `metadata.main_module ${JSON.stringify(mainModule)} is not among the uploaded modules (${modules.map((m) => JSON.stringify(m.name)).join(", ") || "none"})`,
    );
  }
  if (main.type !== "ESModule") {
    throw invalidUpload(
      `the main module ${JSON.stringify(mainModule)} must be an ES module (Content-Type application/javascript+module)`,
    );
  }

  return {
    mainModule,
    modules: [main, ...modules.filter((module) => module !== main)],
    compatibilityDate: compatibilityDate(meta.compatibility_date, today),
    compatibilityFlags: stringList(meta.compatibility_flags, "metadata.compatibility_flags"),
    bindings: bindings(meta.bindings),
    keepBindings: stringList(meta.keep_bindings, "metadata.keep_bindings"),
    annotations: annotations(meta.annotations),
  };
}

function checkModuleName(name: string): void {
  if (
    name.length > 256 ||
    name.startsWith("/") ||
    name.includes("\\") ||
    name.split("/").some((segment) => segment === ".." || segment === "." || segment === "")
  ) {
    throw invalidUpload(
      `module name ${JSON.stringify(name)} is not accepted; use a relative path such as "index.js" or "lib/util.js"`,
    );
  }
}

function compatibilityDate(raw: unknown, today: string): string | undefined {
  if (raw === undefined) return undefined;
  if (
    typeof raw !== "string" ||
    !/^\d{4}-\d{2}-\d{2}$/.test(raw) ||
    new Date(`${raw}T00:00:00Z`).toISOString().slice(0, 10) !== raw
  ) {
    throw invalidUpload(`metadata.compatibility_date ${JSON.stringify(raw)} is not a date YYYY-MM-DD`);
  }
  if (raw > today) {
    throw invalidUpload(`metadata.compatibility_date ${raw} is in the future; accepted: ${today} or earlier`);
  }
  return raw;
}

function stringList(raw: unknown, field: string): string[] {
  if (raw === undefined) return [];
  if (!Array.isArray(raw) || !raw.every((entry) => typeof entry === "string")) {
    throw invalidUpload(`${field} must be an array of strings`);
  }
  return [...raw];
}

function bindings(raw: unknown): BindingInput[] {
  if (raw === undefined) return [];
  if (!Array.isArray(raw) || raw.length > MAX_BINDINGS) {
    throw invalidUpload(`metadata.bindings must be an array of at most ${MAX_BINDINGS} bindings`);
  }
  const seen = new Set<string>();
  return raw.map((entry, index): BindingInput => {
    const where = `metadata.bindings[${index}]`;
    if (typeof entry !== "object" || entry === null || Array.isArray(entry)) {
      throw invalidUpload(`${where} must be an object {type, name, ...}`);
    }
    const binding = entry as Record<string, unknown>;
    const { type, name } = binding;
    if (typeof name !== "string" || !BINDING_NAME.test(name)) {
      throw invalidUpload(
        `${where}.name ${JSON.stringify(name)} is not a binding name (a JavaScript identifier)`,
      );
    }
    if (seen.has(name)) throw invalidUpload(`${where}: the binding name ${name} is used twice`);
    seen.add(name);
    switch (type) {
      case "json":
        if (!("json" in binding)) throw invalidUpload(`${where} (json ${name}) has no "json" value`);
        return { type, name, json: binding.json };
      case "secret_text":
      case "plain_text":
        if (typeof binding.text !== "string") {
          throw invalidUpload(`${where} (${type} ${name}) needs "text", a string`);
        }
        return { type, name, text: binding.text };
      case "version_metadata":
        return { type, name };
      case "inherit": {
        const { version_id: versionId, old_name: oldName } = binding;
        if (versionId !== undefined && typeof versionId !== "string") {
          throw invalidUpload(`${where} (inherit ${name}).version_id must be a version id or "latest"`);
        }
        if (oldName !== undefined && (typeof oldName !== "string" || !BINDING_NAME.test(oldName))) {
          throw invalidUpload(`${where} (inherit ${name}).old_name must be a binding name`);
        }
        return {
          type,
          name,
          ...(versionId === undefined ? {} : { version_id: versionId }),
          ...(oldName === undefined ? {} : { old_name: oldName }),
        };
      }
      default:
        throw invalidUpload(
          `${where} (${name}) has type ${JSON.stringify(type)}, which the sandbox does not run; supported: ${SUPPORTED_BINDING_TYPES.join(", ")}`,
        );
    }
  });
}

function annotations(raw: unknown): Record<string, string> {
  if (raw === undefined) return {};
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) {
    throw invalidUpload('metadata.annotations must be an object such as {"workers/message": "..."}');
  }
  const out: Record<string, string> = {};
  for (const [key, value] of Object.entries(raw)) {
    if (!key.startsWith("workers/") || key === "workers/triggered_by") {
      throw invalidUpload(
        `metadata.annotations has ${JSON.stringify(key)}; accepted: "workers/message", "workers/tag" and other "workers/..." keys the platform does not set itself`,
      );
    }
    if (typeof value !== "string") throw invalidUpload(`metadata.annotations["${key}"] must be a string`);
    if (key === "workers/tag" && Buffer.byteLength(value) > TAG_MAX_BYTES) {
      throw invalidUpload(`metadata.annotations["workers/tag"] is longer than ${TAG_MAX_BYTES} bytes`);
    }
    // Cloudflare truncates the message rather than refusing it.
    out[key] = key === "workers/message" ? truncateBytes(value, MESSAGE_MAX_BYTES) : value;
  }
  return out;
}

/** The longest prefix of `text` within `limit` UTF-8 bytes, never splitting a character. */
export function truncateBytes(text: string, limit: number): string {
  if (Buffer.byteLength(text) <= limit) return text;
  let out = "";
  let size = 0;
  for (const char of text) {
    const bytes = Buffer.byteLength(char);
    if (size + bytes > limit) break;
    out += char;
    size += bytes;
  }
  return out;
}
