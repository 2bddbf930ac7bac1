// Which routes of a config call a given Azure ML endpoint, by its scoring URI. One comparison for the actions and the
// rollout: Azure and a config may spell the same URI with another case in the host, a trailing slash or a default
// port, and a route that calls the endpoint must be recognised however it is written.
import type { GatewayConfig, RouteConfig } from "./schema.ts";

function normalizeScoringUri(uri: string): string {
  try {
    const url = new URL(uri);
    return `${url.origin}${url.pathname.replace(/\/+$/, "")}`.toLowerCase();
  } catch {
    return uri;
  }
}

export function sameScoringUri(a: string, b: string): boolean {
  return normalizeScoringUri(a) === normalizeScoringUri(b);
}

/** The routes of `config` whose scoring URI is `scoringUri`. */
export function routesCalling(config: GatewayConfig, scoringUri: string): RouteConfig[] {
  return config.routes.filter((route) => sameScoringUri(route.scoringUri, scoringUri));
}
