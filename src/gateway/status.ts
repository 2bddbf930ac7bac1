// The status route (read-status permission): what this gateway version runs. Upstream keys appear only as
// fingerprints, so an operator can tell which key is live after a rotation without the key ever leaving the Worker.
import { keyFingerprint } from "../config/fingerprint.ts";
import type { KeySetState } from "./keys.ts";
import type { RuntimeConfig } from "./runtime-config.ts";

export interface StatusDocument {
  configVersion: string;
  description: string | null;
  time: string;
  routes: {
    name: string;
    path: string;
    deployments: { name: string; weight: number }[];
    cohorts: { name: string; deployment: string }[];
    upstreamAuth:
      | { mode: "key"; active: "primary" | "secondary"; primary: string; secondary: string }
      | { mode: "aml_token"; token: string };
  }[];
  issuers: KeySetState[];
}

export async function statusDocument(
  runtime: RuntimeConfig,
  env: Record<string, unknown>,
): Promise<StatusDocument> {
  const routes = await Promise.all(
    runtime.config.routes.map(async (route) => {
      const auth = route.upstreamAuth;
      return {
        name: route.name,
        path: route.path,
        deployments: route.deployments.map(({ name, weight }) => ({ name, weight })),
        cohorts: route.cohorts.map(({ name, deployment }) => ({ name, deployment })),
        upstreamAuth:
          auth.mode === "key"
            ? {
                mode: "key" as const,
                active: auth.active,
                primary: await keyFingerprint(env[auth.primarySecret]),
                secondary: await keyFingerprint(env[auth.secondarySecret]),
              }
            : { mode: "aml_token" as const, token: await keyFingerprint(env[auth.tokenSecret]) },
      };
    }),
  );
  return {
    configVersion: runtime.version,
    description: runtime.config.description ?? null,
    time: new Date().toISOString(),
    routes,
    issuers: runtime.issuers.map((issuer) => issuer.keys.state()),
  };
}
