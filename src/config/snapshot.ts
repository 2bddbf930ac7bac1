// Takes a snapshot of each issuer's key set when a config is compiled, so that it ships inside the Worker version
// and a cold isolate can verify its first request without a fetch. Only public signing keys are kept: a key set
// that (wrongly) publishes a private or symmetric key must not copy it into a bundle that is stored and shipped.
import { MAX_JWKS_BYTES, publicSigningKeys } from "./jwks.ts";
import { type ConfigBundle, type GatewayConfig, jwksSchema } from "./schema.ts";

export interface FetchKeySnapshotsOptions {
  fetch: typeof globalThis.fetch;
  /** Per issuer, covering the request and reading the body. */
  timeoutMs?: number;
  now?: () => Date;
}

export class KeySnapshotError extends Error {
  override name = "KeySnapshotError";
  readonly failures: readonly { issuer: string; jwksUri: string; reason: string }[];

  constructor(failures: readonly { issuer: string; jwksUri: string; reason: string }[]) {
    super(
      failures
        .map(
          (failure) =>
            `issuer ${JSON.stringify(failure.issuer)}: key set ${failure.jwksUri} ${failure.reason}`,
        )
        .join("\n"),
    );
    this.failures = failures;
  }
}

/** A problem with what the URL answered, already phrased for the user; anything else is a failure to fetch. */
class KeySetProblem extends Error {}

const DEFAULT_TIMEOUT_MS = 5_000;

/** Fetches every issuer's key set; throws one KeySnapshotError naming each issuer and URL that failed. */
export async function fetchKeySnapshots(
  config: GatewayConfig,
  options: FetchKeySnapshotsOptions,
): Promise<ConfigBundle["keySnapshots"]> {
  const now = options.now ?? (() => new Date());
  const results = await Promise.allSettled(
    config.issuers.map(async (issuer) => ({
      name: issuer.name,
      jwks: await fetchPublicKeySet(issuer.jwksUri, options.fetch, options.timeoutMs ?? DEFAULT_TIMEOUT_MS),
      fetchedAt: now().toISOString(),
    })),
  );

  const snapshots: ConfigBundle["keySnapshots"] = {};
  const failures: { issuer: string; jwksUri: string; reason: string }[] = [];
  results.forEach((result, index) => {
    const issuer = config.issuers[index];
    if (!issuer) return;
    if (result.status === "fulfilled") {
      snapshots[result.value.name] = { fetchedAt: result.value.fetchedAt, jwks: result.value.jwks };
    } else {
      failures.push({ issuer: issuer.name, jwksUri: issuer.jwksUri, reason: reasonOf(result.reason) });
    }
  });
  if (failures.length > 0) throw new KeySnapshotError(failures);
  return snapshots;
}

async function fetchPublicKeySet(
  jwksUri: string,
  fetch: typeof globalThis.fetch,
  timeoutMs: number,
): Promise<ConfigBundle["keySnapshots"][string]["jwks"]> {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), timeoutMs);
  let text: string;
  try {
    // No redirects: the key set URL is pinned in the config, and following one would let whoever controls the
    // first host choose the keys (RFC 8725 §3.10).
    const response = await fetch(jwksUri, {
      method: "GET",
      redirect: "error",
      headers: { accept: "application/json, application/jwk-set+json" },
      signal: controller.signal,
    });
    if (response.status !== 200) {
      throw new KeySetProblem(
        `answered HTTP ${response.status}${response.statusText ? ` ${response.statusText}` : ""}; expected 200 with a JSON key set`,
      );
    }
    text = await response.text();
  } catch (error) {
    if (controller.signal.aborted) throw new KeySetProblem(`did not answer within ${timeoutMs} ms`);
    throw error;
  } finally {
    clearTimeout(timer);
  }

  if (new TextEncoder().encode(text).byteLength > MAX_JWKS_BYTES) {
    throw new KeySetProblem(
      `is larger than ${MAX_JWKS_BYTES} bytes; expected a JSON key set ({"keys": [...]})`,
    );
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    throw new KeySetProblem(
      `is not JSON (starts with ${JSON.stringify(text.slice(0, 40))}); expected a JSON key set ({"keys": [...]})`,
    );
  }
  const parsed = jwksSchema.safeParse(json);
  if (!parsed.success) {
    const first = parsed.error.issues[0];
    throw new KeySetProblem(
      `is not a JSON Web Key Set (${first ? `${first.path.join(".") || "top level"}: ${first.message}` : "invalid"}); expected {"keys": [{"kty": ..., "kid": ...}, ...]}`,
    );
  }

  // The same rule the Worker applies to keys it fetches, so a snapshot never ships a key the Worker would refuse.
  const keys = publicSigningKeys(parsed.data).keys.map((key) => jwksSchema.shape.keys.element.parse(key));
  if (keys.length === 0) {
    throw new KeySetProblem(
      "holds no usable public signing key (kty RSA with e=65537 and ≥ 2048 bits, EC on P-256/384/521 or OKP Ed25519; use absent or sig); tokens could not be verified",
    );
  }
  return { keys };
}

function reasonOf(error: unknown): string {
  if (error instanceof KeySetProblem) return error.message;
  if (error instanceof Error) {
    // Node's fetch reports the real cause (DNS, TLS, a refused redirect) only in `cause`.
    const cause = error.cause instanceof Error ? ` (${error.cause.message})` : "";
    return `could not be fetched: ${error.message}${cause}`;
  }
  return `could not be fetched: ${String(error)}`;
}
