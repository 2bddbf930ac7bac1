// Where the ARM sandbox's online endpoints actually answer: one scoring stand-in (src/sandbox/scoring-server.ts)
// per endpoint, whose deployments, traffic map and keys follow the ARM state. ARM drives it; nothing else should,
// so what a scoring call sees is what the control plane last completed.
import { randomBytes } from "node:crypto";
import type { ScoringModel } from "../credit-model.ts";
import { type LoopbackServer, type Mount, sendJson } from "../http-server.ts";
import {
  type AmlToken,
  type EndpointKeys,
  type ScoringRequest,
  type ScoringServer,
  startScoringServer,
} from "../scoring-server.ts";

export interface ScoringHost {
  /** The scoring URI an endpoint will keep for its whole life (known before any deployment exists). */
  scoringUri(endpoint: string): string;
  /** The endpoint's deployment set changed: serve exactly these models, with this traffic map and these keys. */
  sync(endpoint: string, state: ScoringEndpointState): Promise<void>;
  setTraffic(endpoint: string, traffic: Record<string, number>): void;
  /** The endpoint's mirror map (one target, 0–50 %): copies of unpinned requests go there, answers discarded. */
  setMirrorTraffic(endpoint: string, mirror: Record<string, number>): void;
  setKeys(endpoint: string, keys: EndpointKeys): void;
  /** An AML token the endpoint's scoring URI accepts until it expires (for `POST .../token`). */
  issueAmlToken(endpoint: string, lifetimeSeconds: number): AmlToken;
  removeEndpoint(endpoint: string): Promise<void>;
  /** The scoring stand-in of an endpoint with at least one succeeded deployment, for tests to inspect. */
  server(endpoint: string): ScoringServer | undefined;
  close(): Promise<void>;
}

export interface ScoringHostOptions {
  /** Draws whether a request is mirrored. Default Math.random. */
  random?: () => number;
}

/** Set on the copies of mirrored requests, so logs and tests can tell them from live calls. */
export const MIRRORED_HEADER = "aml-edge-mirrored";
const DEPLOYMENT_HEADER = "azureml-model-deployment";

export interface ScoringEndpointState {
  models: Record<string, ScoringModel>;
  traffic: Record<string, number>;
  keys: EndpointKeys;
}

interface IssuedToken {
  /** Epoch seconds. */
  expiry: number;
  /** The token each scoring-server instance was given for it (see below). */
  perInstance: WeakMap<ScoringServer, string>;
}

interface Slot {
  current: { scoring: ScoringServer; mount: Mount } | undefined;
  mirror: Record<string, number>;
  unmount: () => void;
  tokens: Map<string, IssuedToken>;
  /** Swaps are serialised so two syncs cannot interleave their start and close. */
  queue: Promise<void>;
}

/**
 * Serves every endpoint under `/endpoints/<name>/score` on one loopback server (HTTPS when that server is).
 *
 * scoring-server.ts fixes its deployments when it starts, so a changed deployment set starts a replacement. Each
 * instance mounts on a stand-in server object that hands its Mount to this host; the one real mount per endpoint
 * delegates to the current instance, so the swap is atomic and the URI never changes. AML tokens are issued here,
 * not by an instance, so they outlive swaps as they outlive deployment changes in Azure: a presented token of
 * ours is exchanged for one the current instance issued with the same expiry.
 */
export function createScoringHost(server: LoopbackServer, options: ScoringHostOptions = {}): ScoringHost {
  const slots = new Map<string, Slot>();
  const random = options.random ?? Math.random;
  const mirrored = new Set<Promise<void>>();

  /**
   * Azure ML mirrors a share of the live traffic to one deployment and discards its answers; a request that names
   * its deployment is never mirrored. The copy goes through the scoring URI like any call, pinned to the target and
   * marked with MIRRORED_HEADER, so the scoring stand-in's request log shows it for what it is.
   */
  const mirrorCopy = (slot: Slot, endpoint: string, record: ScoringRequest) => {
    if (record.headers[DEPLOYMENT_HEADER] !== undefined || record.deployment === undefined) return;
    const target = Object.entries(slot.mirror).find(([, share]) => share > 0);
    if (target === undefined || target[0] === record.deployment || random() * 100 >= target[1]) return;
    const copy = fetch(`${server.origin}${pathOf(endpoint)}`, {
      method: "POST",
      headers: {
        authorization: record.headers.authorization ?? "",
        "content-type": record.headers["content-type"] ?? "application/json",
        [DEPLOYMENT_HEADER]: target[0],
        [MIRRORED_HEADER]: "1",
      },
      body: record.body,
    })
      .then((response) => response.arrayBuffer())
      .then(
        () => undefined,
        () => undefined,
      );
    mirrored.add(copy);
    void copy.finally(() => mirrored.delete(copy));
  };
  const pathOf = (endpoint: string) => `/endpoints/${encodeURIComponent(endpoint)}/score`;

  const slotOf = (endpoint: string): Slot => {
    const existing = slots.get(endpoint);
    if (existing !== undefined) return existing;
    const path = pathOf(endpoint);
    const slot: Slot = {
      current: undefined,
      mirror: {},
      unmount: () => undefined,
      tokens: new Map(),
      queue: Promise.resolve(),
    };
    slot.unmount = server.mount({
      matches: (pathname) => pathname === path,
      async handle(req, res, context) {
        const current = slot.current;
        if (current === undefined) {
          sendJson(res, 404, {
            error: { code: "NoDeployment", message: `endpoint ${endpoint} has no running deployment yet` },
          });
          return;
        }
        const presented = /^Bearer (.+)$/.exec(req.headers.authorization ?? "")?.[1];
        const issued = presented === undefined ? undefined : slot.tokens.get(presented);
        const now = Math.floor(Date.now() / 1000);
        if (issued !== undefined && issued.expiry > now) {
          let instanceToken = issued.perInstance.get(current.scoring);
          if (instanceToken === undefined) {
            instanceToken = current.scoring.issueAmlToken({
              lifetimeSeconds: issued.expiry - now,
            }).accessToken;
            issued.perInstance.set(current.scoring, instanceToken);
          }
          req.headers.authorization = `Bearer ${instanceToken}`;
        }
        const handled = current.mount.handle(req, res, context);
        // scoring-server.ts records a request synchronously as its handler starts: this is ours.
        const record = current.scoring.requests.at(-1);
        await handled;
        if (record !== undefined) mirrorCopy(slot, endpoint, record);
      },
    });
    slots.set(endpoint, slot);
    return slot;
  };

  const serialised = (slot: Slot, task: () => Promise<void>): Promise<void> => {
    const next = slot.queue.then(task, task);
    slot.queue = next.catch(() => undefined);
    return next;
  };

  return {
    scoringUri: (endpoint) => `${server.origin}${pathOf(endpoint)}`,
    sync(endpoint, state) {
      const slot = slotOf(endpoint);
      return serialised(slot, async () => {
        const previous = slot.current;
        const names = Object.keys(state.models);
        if (names.length === 0) {
          slot.current = undefined;
          await previous?.scoring.close();
          return;
        }
        let captured: Mount | undefined;
        const stage: LoopbackServer = {
          origin: server.origin,
          port: server.port,
          mount(mount) {
            captured = mount;
            return () => undefined;
          },
          close: async () => undefined,
        };
        const scoring = await startScoringServer({
          server: stage,
          path: pathOf(endpoint),
          deployments: names.map((name) => ({ name, weight: state.traffic[name] ?? 0 })),
          models: state.models,
          keys: state.keys,
        });
        if (captured === undefined) throw new Error("the scoring server did not mount itself");
        slot.current = { scoring, mount: captured };
        await previous?.scoring.close();
      });
    },
    setTraffic(endpoint, traffic) {
      const current = slots.get(endpoint)?.current;
      if (current === undefined) return;
      // Deployments that the scoring server does not serve (failed ones) carry no traffic there.
      const served = Object.fromEntries(
        Object.keys(current.scoring.traffic).map((name) => [name, traffic[name] ?? 0]),
      );
      current.scoring.setTraffic(served);
    },
    setMirrorTraffic(endpoint, mirror) {
      slotOf(endpoint).mirror = { ...mirror };
    },
    setKeys(endpoint, keys) {
      slots.get(endpoint)?.current?.scoring.setKeys(keys);
    },
    issueAmlToken(endpoint, lifetimeSeconds) {
      const slot = slotOf(endpoint);
      const now = Math.floor(Date.now() / 1000);
      for (const [token, issued] of slot.tokens) if (issued.expiry <= now) slot.tokens.delete(token);
      const accessToken = randomBytes(32).toString("base64url");
      slot.tokens.set(accessToken, { expiry: now + lifetimeSeconds, perInstance: new WeakMap() });
      return {
        accessToken,
        tokenType: "Bearer",
        expiryTimeUtc: now + lifetimeSeconds,
        refreshAfterTimeUtc: now + Math.floor(lifetimeSeconds / 2),
      };
    },
    removeEndpoint(endpoint) {
      const slot = slots.get(endpoint);
      if (slot === undefined) return Promise.resolve();
      return serialised(slot, async () => {
        slots.delete(endpoint);
        slot.unmount();
        const current = slot.current;
        slot.current = undefined;
        await current?.scoring.close();
      });
    },
    server: (endpoint) => slots.get(endpoint)?.current?.scoring,
    async close() {
      await Promise.all([...mirrored]);
      const all = [...slots.values()];
      slots.clear();
      for (const slot of all) slot.unmount();
      await Promise.all(all.map((slot) => slot.current?.scoring.close()));
    },
  };
}
