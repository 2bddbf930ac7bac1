// Where the ARM sandbox's online endpoints actually answer: one scoring stand-in (src/sandbox/scoring-server.ts)
// per endpoint, whose deployments, traffic map and keys follow the ARM state. ARM drives it; nothing else should,
// so what a scoring call sees is what the control plane last completed.
import type { ScoringModel } from "../credit-model.ts";
import type { LoopbackServer } from "../http-server.ts";
import {
  type AmlToken,
  type EndpointKeys,
  type ScoringServer,
  startScoringServer,
} from "../scoring-server.ts";

export interface ScoringHost {
  /** The scoring URI an endpoint will keep for its whole life (known before any deployment exists). */
  scoringUri(endpoint: string): string;
  /** The endpoint's deployment set changed: serve exactly these models, with this traffic map and these keys. */
  sync(endpoint: string, state: ScoringEndpointState): Promise<void>;
  setTraffic(endpoint: string, traffic: Record<string, number>): void;
  setKeys(endpoint: string, keys: EndpointKeys): void;
  /** An AML token the endpoint's scoring URI accepts (for `POST .../token`). */
  issueAmlToken(endpoint: string, lifetimeSeconds: number): AmlToken;
  removeEndpoint(endpoint: string): Promise<void>;
  /** The scoring stand-in of an endpoint with at least one succeeded deployment, for tests to inspect. */
  server(endpoint: string): ScoringServer | undefined;
  close(): Promise<void>;
}

export interface ScoringEndpointState {
  models: Record<string, ScoringModel>;
  traffic: Record<string, number>;
  keys: EndpointKeys;
}

/**
 * Serves every endpoint under `/endpoints/<name>/score` on one loopback server (HTTPS when that server is).
 * scoring-server.ts fixes its deployments when it starts, so a changed deployment set starts a replacement on the
 * same path before the old one is unmounted: no request finds nothing there. Keys and traffic carry over; AML
 * tokens issued by the old instance do not (scoring-server.ts has no way to import them), so after a deployment
 * is added or removed a caller must fetch a new AML token; key auth is unaffected.
 */
export function createScoringHost(server: LoopbackServer): ScoringHost {
  const servers = new Map<string, ScoringServer>();
  const pathOf = (endpoint: string) => `/endpoints/${encodeURIComponent(endpoint)}/score`;
  // Swaps are serialised per endpoint so two syncs cannot interleave their start/close.
  const queues = new Map<string, Promise<void>>();
  const serialised = (endpoint: string, task: () => Promise<void>): Promise<void> => {
    const next = (queues.get(endpoint) ?? Promise.resolve()).then(task, task);
    queues.set(
      endpoint,
      next.catch(() => undefined),
    );
    return next;
  };

  return {
    scoringUri: (endpoint) => `${server.origin}${pathOf(endpoint)}`,
    sync(endpoint, state) {
      return serialised(endpoint, async () => {
        const previous = servers.get(endpoint);
        const names = Object.keys(state.models);
        if (names.length === 0) {
          servers.delete(endpoint);
          await previous?.close();
          return;
        }
        const next = await startScoringServer({
          server,
          path: pathOf(endpoint),
          deployments: names.map((name) => ({ name, weight: state.traffic[name] ?? 0 })),
          models: state.models,
          keys: state.keys,
        });
        servers.set(endpoint, next);
        await previous?.close();
      });
    },
    setTraffic(endpoint, traffic) {
      const current = servers.get(endpoint);
      if (current === undefined) return;
      // Deployments that the scoring server does not serve (failed ones) carry no traffic there.
      const served = Object.fromEntries(
        Object.keys(current.traffic).map((name) => [name, traffic[name] ?? 0]),
      );
      current.setTraffic(served);
    },
    setKeys(endpoint, keys) {
      servers.get(endpoint)?.setKeys(keys);
    },
    issueAmlToken(endpoint, lifetimeSeconds) {
      const current = servers.get(endpoint);
      if (current === undefined) {
        throw new Error(`endpoint ${endpoint} has no running deployment to accept a token`);
      }
      return current.issueAmlToken({ lifetimeSeconds });
    },
    removeEndpoint(endpoint) {
      return serialised(endpoint, async () => {
        const current = servers.get(endpoint);
        servers.delete(endpoint);
        await current?.close();
      });
    },
    server: (endpoint) => servers.get(endpoint),
    async close() {
      await Promise.all([...servers.values()].map((s) => s.close()));
      servers.clear();
    },
  };
}
