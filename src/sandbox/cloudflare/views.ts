// How the API shows Workers and their versions: Cloudflare's shapes, secret texts never included, and the version
// list paged (newest first) the way the client's V4PagePagination reads it, `result: {items}` with `result_info`.
import { apiError } from "./errors.ts";
import {
  DEPLOYABLE_VERSIONS,
  SANDBOX_AUTHOR_EMAIL,
  type StoredScript,
  type StoredVersion,
} from "./workers.ts";

const DEFAULT_VERSIONS_PER_PAGE = 10;
const MAX_VERSIONS_PER_PAGE = 100;

/** The API's view of a version: secret texts are never returned. */
export function versionView(version: StoredVersion): Record<string, unknown> {
  return {
    ...versionListItem(version),
    resources: {
      bindings: version.bindings.map((binding) =>
        binding.type === "secret_text" ? { type: binding.type, name: binding.name } : { ...binding },
      ),
      script: { etag: version.etag, handlers: ["fetch"], last_deployed_from: "api" },
      script_runtime: {
        ...(version.compatibilityDate === undefined ? {} : { compatibility_date: version.compatibilityDate }),
        compatibility_flags: [...version.compatibilityFlags],
        usage_model: "standard",
        limits: {},
      },
    },
    startup_time_ms: 0,
  };
}

/** A version as GET .../versions lists it. Annotations appear at the top level, as Cloudflare returns them, and in
 * `metadata`, where the contract with the Cloudflare plane puts them. */
export function versionListItem(version: StoredVersion): Record<string, unknown> {
  const annotations =
    Object.keys(version.annotations).length === 0 ? {} : { annotations: { ...version.annotations } };
  const created = new Date(version.createdOn).toISOString();
  return {
    id: version.id,
    number: version.number,
    ...annotations,
    metadata: {
      author_email: SANDBOX_AUTHOR_EMAIL,
      author_id: "sandbox",
      created_on: created,
      modified_on: created,
      source: "api",
      hasPreview: false,
      ...annotations,
    },
  };
}

/** GET .../versions: newest first, `page`/`per_page`, or with `deployable=true` the last 100 in one page. */
export function versionPage(
  script: StoredScript,
  query: URLSearchParams,
): { items: Record<string, unknown>[]; info: Record<string, number> } {
  const newestFirst = [...script.versions].reverse();
  if (query.get("deployable") === "true") {
    // Cloudflare ignores paging here; the sandbox answers later pages empty so that the client's auto-pagination,
    // which asks for page 2, 3, ... until a page is empty, ends.
    const page = positiveInteger(query.get("page"), 1, "page");
    const items = page > 1 ? [] : newestFirst.slice(0, DEPLOYABLE_VERSIONS).map(versionListItem);
    return { items, info: { page, per_page: items.length, count: items.length, total_count: items.length } };
  }
  const { items, info } = pageOf(newestFirst, query, DEFAULT_VERSIONS_PER_PAGE, MAX_VERSIONS_PER_PAGE);
  return { items: items.map(versionListItem), info };
}

export function positiveInteger(raw: string | null, fallback: number, name: string): number {
  if (raw === null) return fallback;
  const value = Number(raw);
  if (!Number.isInteger(value) || value < 1) {
    throw apiError("invalidBody", `query parameter ${name}=${JSON.stringify(raw)} is not a positive integer`);
  }
  return value;
}

export function scriptView(script: StoredScript): Record<string, unknown> {
  const newest = script.versions.at(-1);
  return {
    id: script.name,
    tag: script.tag,
    etag: newest?.etag,
    handlers: ["fetch"],
    created_on: new Date(script.createdOn).toISOString(),
    modified_on: new Date(script.modifiedOn).toISOString(),
    ...(newest?.compatibilityDate === undefined ? {} : { compatibility_date: newest.compatibilityDate }),
    compatibility_flags: [...(newest?.compatibilityFlags ?? [])],
    usage_model: "standard",
    has_modules: true,
    has_assets: false,
    last_deployed_from: "api",
    logpush: false,
  };
}

/** One page of a list the client reads as V4PagePaginationArray (`page`, `per_page`). */
export function pageOf<T>(
  all: readonly T[],
  query: URLSearchParams,
  defaultPerPage: number,
  maxPerPage: number,
): { items: T[]; info: Record<string, number> } {
  const page = positiveInteger(query.get("page"), 1, "page");
  const perPage = Math.min(positiveInteger(query.get("per_page"), defaultPerPage, "per_page"), maxPerPage);
  const items = all.slice((page - 1) * perPage, page * perPage);
  return {
    items,
    info: {
      page,
      per_page: perPage,
      count: items.length,
      total_count: all.length,
      total_pages: Math.ceil(all.length / perPage),
    },
  };
}
