// One key set per issuer, per isolate. Keys come, in order of preference, from memory, from the copy persisted in
// the Cache API by an earlier isolate, from the snapshot shipped inside the config bundle, and only then from the
// issuer. An unknown `kid` may trigger at most one fetch per cooldown; a failed fetch keeps the last good keys.
//
// A fetch is only ever awaited by the request that started it (or by that request's waitUntil): workerd refuses
// I/O on behalf of another request, so a shared in-flight promise would hang or throw in a different request.
import { createLocalJWKSet, type JSONWebKeySet } from "jose";
import { MAX_JWKS_BYTES, publicSigningKeys } from "../config/jwks.ts";
import type { IssuerConfig } from "../config/schema.ts";

const FETCH_TIMEOUT_MS = 5_000;

export type KeySource = "snapshot" | "persisted" | "fetched";

export interface KeySetState {
  issuer: string;
  kids: string[];
  source: KeySource | "none";
  fetchedAt: string | null;
  lastAttemptAt: string | null;
  lastError: { at: string; message: string } | null;
  fetches: number;
}

type KeyResolver = ReturnType<typeof createLocalJWKSet>;

interface Loaded {
  jwks: JSONWebKeySet;
  resolve: KeyResolver;
  fetchedAtMs: number;
  source: KeySource;
}

/** The keys the gateway verifies with: the same rule as the compile-time snapshot (src/config/jwks.ts). */
export const sanitizeJwks = publicSigningKeys;

export class IssuerKeys {
  readonly #config: IssuerConfig;
  #loaded: Loaded | undefined;
  #lastAttemptMs = 0;
  #lastError: { at: string; message: string } | null = null;
  #persistedChecked = false;
  #fetches = 0;
  #generation = 0;

  constructor(config: IssuerConfig, snapshot: { fetchedAt: string; jwks: unknown } | undefined) {
    this.#config = config;
    if (snapshot) {
      const fetchedAtMs = Date.parse(snapshot.fetchedAt);
      this.#install(sanitizeJwks(snapshot.jwks), Number.isFinite(fetchedAtMs) ? fetchedAtMs : 0, "snapshot");
    }
  }

  /**
   * A jose key resolver for one request. On an unknown `kid` it consults the persisted copy, then (outside the
   * cooldown) the issuer, and tries once more. `waitUntil` carries background refreshes and persistence.
   */
  resolverFor(
    waitUntil: (promise: Promise<unknown>) => void,
  ): (header: { kid?: string; alg?: string }) => Promise<CryptoKey> {
    return async (header) => {
      const nowMs = Date.now();
      if (!this.#loaded) await this.#loadInitial(waitUntil);
      this.#maybeRefreshInBackground(nowMs, waitUntil);
      const loaded = this.#loaded;
      if (loaded) {
        try {
          return await resolveKey(loaded.resolve, header);
        } catch (error) {
          if (!isNoMatchingKey(error)) throw error;
        }
      }
      if (await this.#adoptPersisted()) {
        try {
          return await resolveKey((this.#loaded as Loaded).resolve, header);
        } catch (error) {
          if (!isNoMatchingKey(error)) throw error;
        }
      }
      if (!this.#outsideCooldown(nowMs)) throw new UnknownKeyError(this.#loaded !== undefined);
      await this.#refresh(waitUntil);
      if (!this.#loaded) throw new UnknownKeyError(false);
      return resolveKey(this.#loaded.resolve, header);
    };
  }

  state(): KeySetState {
    const loaded = this.#loaded;
    return {
      issuer: this.#config.name,
      kids: loaded ? loaded.jwks.keys.map((key) => key.kid ?? "(no kid)") : [],
      source: loaded ? loaded.source : "none",
      fetchedAt: loaded && loaded.fetchedAtMs > 0 ? new Date(loaded.fetchedAtMs).toISOString() : null,
      lastAttemptAt: this.#lastAttemptMs > 0 ? new Date(this.#lastAttemptMs).toISOString() : null,
      lastError: this.#lastError,
      fetches: this.#fetches,
    };
  }

  async #loadInitial(waitUntil: (promise: Promise<unknown>) => void): Promise<void> {
    if (await this.#adoptPersisted()) return;
    if (this.#outsideCooldown(Date.now())) await this.#refresh(waitUntil);
  }

  #maybeRefreshInBackground(nowMs: number, waitUntil: (promise: Promise<unknown>) => void): void {
    const loaded = this.#loaded;
    if (!loaded) return;
    const stale = nowMs - loaded.fetchedAtMs > this.#config.keyMaxAgeSeconds * 1000;
    if (stale && this.#outsideCooldown(nowMs)) {
      // Marked now so that concurrent requests do not start their own refresh.
      this.#lastAttemptMs = nowMs;
      waitUntil(this.#adoptPersisted().then((adopted) => (adopted ? undefined : this.#refresh(waitUntil))));
    }
  }

  #outsideCooldown(nowMs: number): boolean {
    return nowMs - this.#lastAttemptMs >= this.#config.refetchCooldownSeconds * 1000;
  }

  /** Fetches the issuer's key set. On failure the last good keys stay in place. */
  async #refresh(waitUntil: (promise: Promise<unknown>) => void): Promise<void> {
    this.#lastAttemptMs = Date.now();
    this.#fetches += 1;
    try {
      const response = await fetch(this.#config.jwksUri, {
        headers: { accept: "application/jwk-set+json, application/json" },
        redirect: "manual",
        signal: AbortSignal.timeout(FETCH_TIMEOUT_MS),
      });
      if (response.status !== 200) throw new Error(`key set answered HTTP ${response.status}`);
      const text = await response.text();
      if (text.length > MAX_JWKS_BYTES) throw new Error("key set is larger than 256 KiB");
      const jwks = sanitizeJwks(JSON.parse(text));
      const fetchedAtMs = Date.now();
      this.#install(jwks, fetchedAtMs, "fetched");
      this.#lastError = null;
      waitUntil(persist(this.#config.jwksUri, jwks, fetchedAtMs));
    } catch (error) {
      this.#lastError = { at: new Date().toISOString(), message: describeFetchError(error) };
    }
  }

  /** Takes the copy another isolate persisted, once per isolate, if it is newer than what this one holds. */
  async #adoptPersisted(): Promise<boolean> {
    if (this.#persistedChecked) return false;
    this.#persistedChecked = true;
    const persisted = await readPersisted(this.#config.jwksUri);
    if (!persisted) return false;
    if (this.#loaded && this.#loaded.fetchedAtMs >= persisted.fetchedAtMs) return false;
    this.#install(persisted.jwks, persisted.fetchedAtMs, "persisted");
    return true;
  }

  /** Changes whenever the key set is replaced, so results verified with an older set can be told apart. */
  get generation(): number {
    return this.#generation;
  }

  #install(jwks: JSONWebKeySet, fetchedAtMs: number, source: KeySource): void {
    this.#loaded = { jwks, resolve: createLocalJWKSet(jwks), fetchedAtMs, source };
    this.#generation += 1;
  }
}

/** Raised when no key matches and the cooldown forbids asking the issuer again. */
export class UnknownKeyError extends Error {
  readonly haveKeys: boolean;
  constructor(haveKeys: boolean) {
    super(haveKeys ? "no key matches the token" : "no keys are available for the issuer");
    this.name = "UnknownKeyError";
    this.haveKeys = haveKeys;
  }
}

function resolveKey(resolve: KeyResolver, header: { kid?: string; alg?: string }): Promise<CryptoKey> {
  return resolve(header as Parameters<KeyResolver>[0]) as Promise<CryptoKey>;
}

function isNoMatchingKey(error: unknown): boolean {
  return (error as { code?: unknown } | null)?.code === "ERR_JWKS_NO_MATCHING_KEY";
}

function describeFetchError(error: unknown): string {
  if (error instanceof Error) {
    return error.name === "TimeoutError" ? "key set fetch timed out" : error.message.slice(0, 200);
  }
  return "key set fetch failed";
}

// The Cache API is per data centre and shared by every isolate there; where it is unavailable (workers.dev) the
// snapshot in the bundle still covers cold starts.
const PERSIST_PREFIX = "https://aml-edge.invalid/jwks/";

function persistKey(jwksUri: string): string {
  return PERSIST_PREFIX + encodeURIComponent(jwksUri);
}

async function persist(jwksUri: string, jwks: JSONWebKeySet, fetchedAtMs: number): Promise<void> {
  try {
    const body = JSON.stringify({ fetchedAtMs, jwks });
    await caches.default.put(
      persistKey(jwksUri),
      new Response(body, {
        headers: { "content-type": "application/json", "cache-control": "max-age=86400" },
      }),
    );
  } catch {
    // Persistence is an optimisation for cold isolates; failing it must not fail the request.
  }
}

async function readPersisted(
  jwksUri: string,
): Promise<{ jwks: JSONWebKeySet; fetchedAtMs: number } | undefined> {
  try {
    const response = await caches.default.match(persistKey(jwksUri));
    if (!response) return undefined;
    const value = (await response.json()) as { fetchedAtMs?: unknown; jwks?: unknown };
    if (typeof value.fetchedAtMs !== "number") return undefined;
    return { jwks: sanitizeJwks(value.jwks), fetchedAtMs: value.fetchedAtMs };
  } catch {
    return undefined;
  }
}
