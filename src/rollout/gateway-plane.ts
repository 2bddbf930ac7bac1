// The rotation's view of the gateway (rotate-keys.ts ports) over the Cloudflare plane and the edge: the live versions
// with their config and plain-text bindings; successors uploaded with only the changed bindings resent (everything
// else inherited from the version each succeeds) and deployed together at the same percentages; the edge waited for
// per version; the status route read through the edge pinned to one version with Cloudflare's override header.
import type { CloudflareApi, WorkerVersion } from "../cloudflare/api.ts";
import { VERSION_OVERRIDE_HEADER, waitForEdgeConfig } from "../cloudflare/edge.ts";
import {
  boundConfig,
  deployWithForceOnSecretChange,
  GATEWAY_COMPATIBILITY_DATE,
  GATEWAY_MODULE_NAME,
  readLiveGateway,
} from "../cloudflare/publish.ts";
import type { Clock } from "../cloudflare/time.ts";
import type { WorkerBinding } from "../cloudflare/upload.ts";
import { CONFIG_BINDING } from "../config/schema.ts";
import type {
  GatewayPlanePort,
  GatewayStatus,
  GatewayStatusPort,
  LiveGatewayVersion,
  VersionToPublish,
} from "./rotate-keys.ts";

export interface CloudflareGatewayOptions {
  api: CloudflareApi;
  script: string;
  gatewayUrl: string;
  /** The gateway module uploaded with each successor (the code this toolkit ships). */
  workerModule: string;
  /** Epoch ms: no edge wait goes past it. */
  deadline: number;
  clock: Clock;
  logger: { info(message: string): void; warning(message: string): void };
  fetch?: typeof globalThis.fetch;
  /** First pause between edge polls (default 250 ms). */
  edgeInitialDelayMs?: number;
}

function plainTextOf(version: WorkerVersion): Record<string, string> {
  const result: Record<string, string> = {};
  for (const binding of version.bindings) {
    if (binding.type === "plain_text" && typeof binding.text === "string")
      result[binding.name] = binding.text;
  }
  return result;
}

export function cloudflareGatewayPlane(options: CloudflareGatewayOptions): GatewayPlanePort & {
  restore(previous: { versionId: string; percentage: number }[], message: string): Promise<void>;
} {
  const { api, script } = options;
  let lastPublished: { versionId: string; configVersion: string; servesAll: boolean }[] = [];

  const deploy = async (versions: { version_id: string; percentage: number }[], message: string) => {
    await deployWithForceOnSecretChange(api, script, versions, message, options.logger);
  };

  return {
    live: async () => {
      const live = await readLiveGateway(api, script);
      if (live.deployment === undefined) return [];
      return live.deployment.versions.map((entry): LiveGatewayVersion => {
        const version = live.versions.find((candidate) => candidate.id === entry.version_id);
        const bundle = boundConfig(version);
        if (version === undefined || bundle === undefined) {
          throw new Error(
            `Version ${entry.version_id} of Worker ${script} carries no gateway config this toolkit can read ` +
              `(binding ${CONFIG_BINDING}); publish the gateway with the route action before rotating its keys.`,
          );
        }
        return {
          versionId: entry.version_id,
          percentage: entry.percentage,
          bundle,
          plainText: plainTextOf(version),
        };
      });
    },

    publish: async (versions: VersionToPublish[], message: string) => {
      const ids: string[] = [];
      for (const next of versions) {
        const from = await api.getVersion(script, next.from);
        const bindings: WorkerBinding[] = [{ type: "json", name: CONFIG_BINDING, json: next.bundle }];
        const placed = new Set([CONFIG_BINDING]);
        for (const [name, text] of Object.entries(next.secrets)) {
          bindings.push({ type: "secret_text", name, text });
          placed.add(name);
        }
        for (const [name, text] of Object.entries(next.plainText)) {
          bindings.push({ type: "plain_text", name, text });
          placed.add(name);
        }
        // Everything else the version had (the other key, a queue, ...) is carried over unchanged.
        for (const binding of from.bindings) {
          if (placed.has(binding.name)) continue;
          placed.add(binding.name);
          bindings.push({ type: "inherit", name: binding.name, version_id: from.id });
        }
        const uploaded = await api.uploadVersion(script, {
          mainModule: GATEWAY_MODULE_NAME,
          modules: [{ name: GATEWAY_MODULE_NAME, content: options.workerModule }],
          compatibilityDate: GATEWAY_COMPATIBILITY_DATE,
          bindings,
          annotations: { message, tag: next.bundle.version },
        });
        ids.push(uploaded.id);
      }
      await deploy(
        ids.map((id, index) => ({ version_id: id, percentage: versions[index]?.percentage ?? 0 })),
        message,
      );
      lastPublished = ids.map((versionId, index) => ({
        versionId,
        configVersion: versions[index]?.bundle.version ?? "",
        servesAll: ids.length === 1,
      }));
      return ids;
    },

    waitForEdge: async (configVersions: string[]) => {
      for (const published of lastPublished.filter((entry) => configVersions.includes(entry.configVersion))) {
        await waitForEdgeConfig({
          gatewayUrl: options.gatewayUrl,
          script,
          versionId: published.versionId,
          configVersion: published.configVersion,
          servesAll: published.servesAll,
          deadline: options.deadline,
          clock: options.clock,
          logger: options.logger,
          ...(options.fetch === undefined ? {} : { fetch: options.fetch }),
          ...(options.edgeInitialDelayMs === undefined ? {} : { initialDelayMs: options.edgeInitialDelayMs }),
        });
      }
    },

    restore: async (previous, message) => {
      await deploy(
        previous.map((entry) => ({ version_id: entry.versionId, percentage: entry.percentage })),
        message,
      );
    },
  };
}

export interface EdgeStatusOptions {
  gatewayUrl: string;
  script: string;
  /** The status route's path in the live config. */
  statusPath: string;
  /** A bearer token granted read-status (the job's GitHub OIDC token for the gateway's audience). */
  token: () => Promise<string>;
  fetch?: typeof globalThis.fetch;
}

/** The status route through the edge, pinned to one version of the live deployment. */
export function edgeStatus(options: EdgeStatusOptions): GatewayStatusPort {
  const fetchEdge = options.fetch ?? globalThis.fetch;
  return {
    status: async (versionId: string): Promise<GatewayStatus> => {
      const url = new URL(options.statusPath, options.gatewayUrl);
      const response = await fetchEdge(url, {
        headers: {
          authorization: `Bearer ${await options.token()}`,
          [VERSION_OVERRIDE_HEADER]: `${options.script}="${versionId}"`,
          "cache-control": "no-cache",
        },
        signal: AbortSignal.timeout(10_000),
      });
      const text = await response.text();
      if (response.status === 401 || response.status === 403) {
        throw new Error(
          `The gateway's status route (${url.pathname}) refused the job's token with HTTP ${response.status} ` +
            `(${response.headers.get("www-authenticate") ?? "no challenge"}): grant read-status to this workflow's ` +
            "GitHub identity in the gateway policy (a rule matching its repositoryId and environment), and set " +
            "`gateway-audience` to an audience the gateway's GitHub issuer accepts.",
        );
      }
      if (!response.ok) {
        throw new Error(`The gateway's status route (${url.pathname}) answered HTTP ${response.status}.`);
      }
      try {
        return JSON.parse(text) as GatewayStatus;
      } catch {
        throw new Error(`The gateway's status route (${url.pathname}) answered something other than JSON.`);
      }
    },
  };
}
