// Turns a checked config into the bundle that ships inside a Worker version (the AML_EDGE_CONFIG binding). The
// bundle's version is a hash of the config's content, so two publishes of the same config are recognisably the
// same version whatever the YAML's key order, comments or omitted defaults; key snapshots are not part of the
// hash because keys rotate without the config changing.
import { ConfigError } from "./errors.ts";
import { assertConfigSafe, type LintMode } from "./lint.ts";
import { parseGatewayConfigObject } from "./load.ts";
import { CONFIG_BUNDLE_FORMAT, type ConfigBundle, configBundleSchema, type GatewayConfig } from "./schema.ts";

export interface CompileOptions {
  mode: LintMode;
  keySnapshots?: ConfigBundle["keySnapshots"];
  /** Names the config in error messages, e.g. its file name. */
  source?: string;
}

/**
 * Validates (schema, references, security lint in `mode`) and packs the config. Throws a ConfigError when any
 * check fails, so a config that would not pass review can never be published by going around the loader.
 */
export async function compileConfigBundle(
  config: GatewayConfig,
  options: CompileOptions,
): Promise<ConfigBundle> {
  const source = options.source ?? "gateway config";
  const checked = parseGatewayConfigObject(config, source);
  assertConfigSafe(checked, { mode: options.mode, source });

  const keySnapshots = options.keySnapshots ?? {};
  const issuerNames = new Set(checked.issuers.map((issuer) => issuer.name));
  const stale = Object.keys(keySnapshots).filter((name) => !issuerNames.has(name));
  if (stale.length > 0) {
    throw new ConfigError(
      source,
      stale.map((name) => ({
        path: "issuers",
        code: "key-snapshot-unknown-issuer",
        message: `a key snapshot is given for ${JSON.stringify(name)}, which is not an issuer of this config; snapshot only the issuers listed: ${[...issuerNames].join(", ")}`,
      })),
    );
  }

  return configBundleSchema.parse({
    format: CONFIG_BUNDLE_FORMAT,
    version: await configVersion(checked),
    mode: options.mode,
    config: checked,
    keySnapshots,
  });
}

/** `sha256:` + the first 16 hex characters of SHA-256 over the config's canonical JSON. */
export async function configVersion(config: GatewayConfig): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(canonicalJson(config)));
  const hex = Array.from(new Uint8Array(digest), (byte) => byte.toString(16).padStart(2, "0")).join("");
  return `sha256:${hex.slice(0, 16)}`;
}

/**
 * JSON with object keys sorted (by UTF-16 code unit, as RFC 8785 does) at every depth and no whitespace, so equal
 * values always give equal text. Array order is kept: it means something (rule order, deployment order).
 * Undefined object members are dropped, as JSON.stringify drops them; anything JSON cannot represent throws.
 */
export function canonicalJson(value: unknown): string {
  if (value === null || typeof value === "boolean" || typeof value === "string") return JSON.stringify(value);
  if (typeof value === "number") {
    if (!Number.isFinite(value)) throw new TypeError(`canonicalJson: ${value} has no JSON representation`);
    return JSON.stringify(value);
  }
  if (Array.isArray(value)) {
    return `[${value.map((item) => (item === undefined ? "null" : canonicalJson(item))).join(",")}]`;
  }
  if (typeof value === "object" && Object.getPrototypeOf(value) === Object.prototype) {
    const members = Object.entries(value as Record<string, unknown>)
      .filter(([, member]) => member !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
      .map(([key, member]) => `${JSON.stringify(key)}:${canonicalJson(member)}`);
    return `{${members.join(",")}}`;
  }
  throw new TypeError(
    `canonicalJson: a ${typeof value === "object" ? "non-plain object" : typeof value} has no JSON representation`,
  );
}
