// Local clouds for one gateway config: for every issuer key set and every scoring URI that the config puts on
// loopback, a stand-in at that exact address (a token issuer with the config's `iss`, an Azure ML endpoint with the
// route's deployments and weights). Addresses something else already listens on are left to it.
import type { GatewayConfig, IssuerConfig, RouteConfig } from "../config/schema.ts";
import {
  AddressInUseError,
  isLoopbackHostname,
  LOOPBACK_HOST,
  type LoopbackServer,
  startLoopbackServer,
} from "./http-server.ts";
import {
  type EndpointKeys,
  generateEndpointKey,
  type ScoringServer,
  startScoringServer,
} from "./scoring-server.ts";
import {
  SIGNING_ALGORITHMS,
  type SigningAlgorithm,
  startTokenIssuer,
  type TokenIssuer,
} from "./token-issuer.ts";

export interface StandInNote {
  kind: "issuer" | "scoring";
  /** The issuer's or the route's name. */
  name: string;
  /** The configured URL. */
  url: string;
  started: boolean;
  /** Why no stand-in was started. */
  reason?: string;
}

export interface LocalStandIns {
  /** Started token issuers, by issuer name. */
  readonly issuers: ReadonlyMap<string, TokenIssuer>;
  /** Started scoring servers, by route name (routes with the same scoring URI share one). */
  readonly scoring: ReadonlyMap<string, ScoringServer>;
  /** One note per loopback address in the config: started, or why not. */
  readonly notes: readonly StandInNote[];
  close(): Promise<void>;
}

export interface LocalStandInOptions {
  /** Endpoint keys to use instead of generated ones, e.g. read from the environment. */
  keysFor?: (route: RouteConfig) => Partial<EndpointKeys>;
}

/** Is this URL one the sandbox could serve or reach: loopback, this machine only? */
export function isLoopbackUrl(url: string): boolean {
  try {
    return isLoopbackHostname(new URL(url).hostname);
  } catch {
    return false;
  }
}

export async function startLocalStandIns(
  config: GatewayConfig,
  options: LocalStandInOptions = {},
): Promise<LocalStandIns> {
  const servers = new Map<string, LoopbackServer | AddressInUseError>();
  const issuers = new Map<string, TokenIssuer>();
  const scoring = new Map<string, ScoringServer>();
  const notes: StandInNote[] = [];

  const close = async () => {
    const closing = [...issuers.values(), ...new Set(scoring.values())].map((s) => s.close());
    await Promise.allSettled(closing);
    await Promise.allSettled(
      [...servers.values()].map((s) => (s instanceof AddressInUseError ? undefined : s.close())),
    );
  };

  /** The shared server for an address, or why none can be had. */
  const serverFor = async (raw: string): Promise<LoopbackServer | string> => {
    const url = new URL(raw);
    if (!isLoopbackHostname(url.hostname)) return "not on loopback";
    if (url.protocol !== "http:")
      return `${url.protocol} stand-ins are not available; run your own server there`;
    if (url.hostname !== LOOPBACK_HOST && url.hostname !== "localhost") {
      return `stand-ins bind ${LOOPBACK_HOST} only; use ${LOOPBACK_HOST} or localhost in the config`;
    }
    const port = Number(url.port || 80);
    const key = String(port);
    let server = servers.get(key);
    if (server === undefined) {
      try {
        server = await startLoopbackServer({ port });
      } catch (error) {
        if (!(error instanceof AddressInUseError)) throw error;
        server = error;
      }
      servers.set(key, server);
    }
    return server instanceof AddressInUseError
      ? `something already listens on ${LOOPBACK_HOST}:${port}`
      : server;
  };

  try {
    for (const issuer of config.issuers) {
      if (!isLoopbackUrl(issuer.jwksUri)) continue;
      const algorithms = signingAlgorithms(issuer);
      const server =
        algorithms.length > 0 ? await serverFor(issuer.jwksUri) : "it pins no asymmetric algorithm";
      if (typeof server === "string") {
        notes.push({
          kind: "issuer",
          name: issuer.name,
          url: issuer.jwksUri,
          started: false,
          reason: server,
        });
        continue;
      }
      const tokenIssuer = await startTokenIssuer({
        server,
        issuer: issuer.issuer,
        path: discoveryPrefix(issuer, server),
        jwksPath: new URL(issuer.jwksUri).pathname,
        algorithms,
      });
      issuers.set(issuer.name, tokenIssuer);
      notes.push({ kind: "issuer", name: issuer.name, url: issuer.jwksUri, started: true });
    }

    const byUri = new Map<string, ScoringServer>();
    for (const route of config.routes) {
      if (!isLoopbackUrl(route.scoringUri)) continue;
      const shared = byUri.get(route.scoringUri);
      if (shared !== undefined) {
        scoring.set(route.name, shared);
        notes.push({ kind: "scoring", name: route.name, url: route.scoringUri, started: true });
        continue;
      }
      const server = await serverFor(route.scoringUri);
      if (typeof server === "string") {
        notes.push({
          kind: "scoring",
          name: route.name,
          url: route.scoringUri,
          started: false,
          reason: server,
        });
        continue;
      }
      const given = options.keysFor?.(route) ?? {};
      const endpoint = await startScoringServer({
        server,
        path: new URL(route.scoringUri).pathname,
        deployments: deploymentsServedAt(config, route.scoringUri),
        keys: {
          primary: given.primary ?? generateEndpointKey(),
          secondary: given.secondary ?? generateEndpointKey(),
        },
      });
      byUri.set(route.scoringUri, endpoint);
      scoring.set(route.name, endpoint);
      notes.push({ kind: "scoring", name: route.name, url: route.scoringUri, started: true });
    }
  } catch (error) {
    await close();
    throw error;
  }

  return { issuers, scoring, notes, close };
}

function signingAlgorithms(issuer: IssuerConfig): SigningAlgorithm[] {
  return issuer.algorithms.filter((alg): alg is SigningAlgorithm =>
    (SIGNING_ALGORITHMS as readonly string[]).includes(alg),
  );
}

/** The discovery document goes under the issuer URL when the issuer lives at the same address, as OIDC has it. */
function discoveryPrefix(issuer: IssuerConfig, server: LoopbackServer): string {
  try {
    const iss = new URL(issuer.issuer);
    if (Number(iss.port || 80) === server.port && isLoopbackHostname(iss.hostname)) return iss.pathname;
  } catch {
    // Not a URL (some issuers use plain identifiers): fall through.
  }
  const jwksPath = new URL(issuer.jwksUri).pathname;
  return jwksPath.slice(0, jwksPath.lastIndexOf("/"));
}

/** Every deployment any route names at this scoring URI: one endpoint serves them all, first weight wins. */
function deploymentsServedAt(config: GatewayConfig, scoringUri: string): { name: string; weight: number }[] {
  const deployments = new Map<string, number>();
  for (const route of config.routes) {
    if (route.scoringUri !== scoringUri) continue;
    for (const d of route.deployments) if (!deployments.has(d.name)) deployments.set(d.name, d.weight);
  }
  return [...deployments].map(([name, weight]) => ({ name, weight }));
}
