// The multipart body of a Worker upload (a new version, or the script upload that creates a Worker), built by hand:
// the `cloudflare` client 7.x flattens `metadata` into `metadata[...]` fields and names file parts `files[]`, which
// Cloudflare refuses with 10021 (cloudflare-typescript#2799). Cloudflare wants one `metadata` part holding JSON and
// one part per module whose part name and file name are both the module's name, typed as an ES module.

export const MODULE_CONTENT_TYPE = "application/javascript+module";
/** Cloudflare truncates `workers/message` beyond this many bytes; cutting it here keeps whole characters. */
export const MAX_MESSAGE_BYTES = 1000;
export const MAX_TAG_BYTES = 100;

/** Bindings the gateway's versions carry. `inherit` keeps a binding (a secret, a queue) without resending it. */
export type WorkerBinding =
  | { type: "json"; name: string; json: unknown }
  | { type: "secret_text"; name: string; text: string }
  | { type: "plain_text"; name: string; text: string }
  | { type: "inherit"; name: string; version_id?: string };

export interface WorkerModule {
  name: string;
  content: string;
}

export interface WorkerUpload {
  /** Must be one of `modules`. */
  mainModule: string;
  modules: WorkerModule[];
  compatibilityDate: string;
  compatibilityFlags?: string[];
  bindings: WorkerBinding[];
  annotations?: { message?: string; tag?: string };
}

/** The metadata part's JSON, as Cloudflare names its fields. */
export function uploadMetadata(upload: WorkerUpload): Record<string, unknown> {
  if (!upload.modules.some((module) => module.name === upload.mainModule)) {
    throw new Error(`internal: main module ${upload.mainModule} is not among the uploaded modules`);
  }
  const annotations: Record<string, string> = {};
  if (upload.annotations?.message !== undefined) {
    annotations["workers/message"] = truncateUtf8(upload.annotations.message, MAX_MESSAGE_BYTES);
  }
  if (upload.annotations?.tag !== undefined) {
    annotations["workers/tag"] = truncateUtf8(upload.annotations.tag, MAX_TAG_BYTES);
  }
  return {
    main_module: upload.mainModule,
    compatibility_date: upload.compatibilityDate,
    ...(upload.compatibilityFlags === undefined ? {} : { compatibility_flags: upload.compatibilityFlags }),
    bindings: upload.bindings,
    ...(Object.keys(annotations).length === 0 ? {} : { annotations }),
  };
}

export function workerUploadForm(upload: WorkerUpload): FormData {
  const form = new FormData();
  form.append(
    "metadata",
    new Blob([JSON.stringify(uploadMetadata(upload))], { type: "application/json" }),
    "metadata.json",
  );
  for (const module of upload.modules) {
    // A File, not a Blob: the part must carry the module's name as its filename.
    form.append(module.name, new File([module.content], module.name, { type: MODULE_CONTENT_TYPE }));
  }
  return form;
}

/** At most `maxBytes` of UTF-8, cut on a character boundary (a cut surrogate pair would be replaced, not kept). */
export function truncateUtf8(text: string, maxBytes: number): string {
  const encoder = new TextEncoder();
  if (encoder.encode(text).byteLength <= maxBytes) return text;
  let bytes = 0;
  let end = 0;
  for (const character of text) {
    const size = encoder.encode(character).byteLength;
    if (bytes + size > maxBytes - 3) break;
    bytes += size;
    end += character.length;
  }
  return `${text.slice(0, end)}…`;
}
