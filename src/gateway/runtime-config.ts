// Turns the config bundle bound to the Worker into what the request path needs (issuers by `iss`, routes by path,
// key stores), once per isolate and config version: validation happens when the gateway is built, not per request.
import { lintConfig } from "../config/lint.ts";
import { checkReferences } from "../config/references.ts";
import {
  type ConfigBundle,
  configBundleSchema,
  type GatewayConfig,
  type RouteConfig,
} from "../config/schema.ts";
import { IssuerKeys } from "./keys.ts";
import { type IssuerProfile, issuerProfile } from "./verify.ts";

export interface RuntimeConfig {
  version: string;
  config: GatewayConfig;
  issuersByIss: Map<string, IssuerProfile>;
  issuers: IssuerProfile[];
  routesByPath: Map<string, RouteConfig>;
}

export class ConfigLoadError extends Error {
  override name = "ConfigLoadError";
}

let cached: { source: unknown; runtime: RuntimeConfig } | undefined;
// Key stores outlive a config change that leaves the issuer as it was, so a new routing config keeps the keys (and
// the cooldown) it had.
const keyStores = new Map<string, IssuerKeys>();

export function runtimeConfig(source: unknown): RuntimeConfig {
  if (cached && cached.source === source) return cached.runtime;
  const parsed = configBundleSchema.safeParse(source);
  if (!parsed.success) {
    const first = parsed.error.issues[0];
    throw new ConfigLoadError(
      `AML_EDGE_CONFIG is not a valid config bundle: ${first ? `${first.path.join(".")}: ${first.message}` : "invalid"}`,
    );
  }
  // The compiler refuses unsafe configs before publishing; the Worker checks again, so a bundle put together any
  // other way still cannot serve with, say, an HS* algorithm or a rule that matches everyone.
  const problems = [
    ...checkReferences(parsed.data.config).map((issue) => issue.message),
    ...lintConfig(parsed.data.config, { mode: parsed.data.mode })
      .filter((finding) => finding.severity === "error")
      .map((finding) => `${finding.path}: ${finding.message}`),
  ];
  if (problems.length > 0) {
    throw new ConfigLoadError(`AML_EDGE_CONFIG fails the config checks: ${problems.slice(0, 5).join("; ")}`);
  }
  const runtime = build(parsed.data);
  cached = { source, runtime };
  return runtime;
}

function build(bundle: ConfigBundle): RuntimeConfig {
  const { config } = bundle;
  const issuers = config.issuers.map((issuer) => {
    const storeKey = JSON.stringify(issuer);
    let keys = keyStores.get(storeKey);
    if (!keys) {
      keys = new IssuerKeys(issuer, bundle.keySnapshots[issuer.name]);
      keyStores.set(storeKey, keys);
    }
    return issuerProfile(issuer, keys);
  });
  return {
    version: bundle.version,
    config,
    issuers,
    issuersByIss: new Map(issuers.map((profile) => [profile.config.issuer, profile])),
    routesByPath: new Map(config.routes.map((route) => [route.path, route])),
  };
}
