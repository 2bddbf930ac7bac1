// The local Cloudflare: the v4 API for tokens and Workers (versions, deployments, secrets) over HTTPS on loopback,
// and an edge that runs each Worker's live deployment in workerd (Miniflare), one runtime per version. Production
// code reaches it only through its base URL (`apiUrl`) and trusts its CA; the official `cloudflare` client works
// against it unchanged. See notes/cf-contract.md for the API this implements and errors.ts for every error code.
import { startLoopbackServer } from "../http-server.ts";
import { createSandboxCa, type SandboxCa } from "../tls.ts";
import { API_PATH, type ApiRequestRecord, mountCloudflareApi } from "./api.ts";
import { createEdge, type EdgeAuditRecord, type EdgeRuntimeInfo } from "./edge.ts";
import { createTokenStore, randomHex, type TestTokenOptions, type TokenSummary } from "./tokens.ts";
import { versionView } from "./views.ts";
import { createWorkerStore, type DeploymentView } from "./workers.ts";

/** The Key Vault secret name under which the composed sandbox keeps the bootstrap token. */
export const BOOTSTRAP_TOKEN_SECRET_NAME = "cloudflare-bootstrap-token";

export interface CloudflareSandboxOptions {
  /** Signs the certificates of the API and the edge listeners. Default: a new CA (see `caPem`). */
  ca?: SandboxCa;
  /** Default: 32 random hex digits, as Cloudflare's account ids look. */
  accountId?: string;
  /** How Workers' outbound fetches leave workerd (a fetch that trusts the sandbox CA). Default: this process's fetch. */
  forwardFetch?: typeof fetch;
  /** Longest wait for a version's workerd to start before its deployment is refused. Default 30 s. */
  runtimeStartTimeoutMs?: number;
  /** Longest wait for in-flight requests before a version that left the deployment is stopped anyway. Default 30 s. */
  drainTimeoutMs?: number;
}

export interface SandboxTokenOptions extends TestTokenOptions {
  /** Scope `permissions` to this Worker (by name; it must exist) instead of the account. */
  worker?: string;
}

export interface CloudflareSandbox {
  /** `https://127.0.0.1:<port>/client/v4`, the client's baseURL. */
  readonly apiUrl: string;
  readonly accountId: string;
  /** The CA that signed the API's and the edge's certificates. */
  readonly caPem: string;
  /** Where the composed sandbox stores `bootstrapToken` in Key Vault. */
  readonly bootstrapTokenSecretName: string;
  /** An account token holding only "API Tokens Write": it can mint tokens and nothing else. */
  readonly bootstrapToken: { readonly id: string; readonly value: string };
  /** The Worker's edge URL (HTTPS, sandbox CA); opens its listener on the first call, even before the Worker exists. */
  edgeUrl(script: string): Promise<URL>;
  /** A token with any groups, dates and status, for tests: `{permissions: ["Workers Scripts Write"], worker}`. */
  createToken(options?: SandboxTokenOptions): { id: string; value: string };
  /** Every token issued, deleted ones included, with its status now. */
  tokens(): TokenSummary[];
  /** Every API call: method, path, status, error codes, token id. */
  readonly requests: readonly ApiRequestRecord[];
  /** The Worker's deployments as the API shows them, newest (live) first; empty for an unknown Worker. */
  deployments(script: string): DeploymentView[];
  /** The Worker's versions as the API shows them (no secret texts), newest first; empty for an unknown Worker. */
  versions(script: string): Record<string, unknown>[];
  /** The Worker's running runtimes: state, in-flight requests, whether live. */
  runtimes(script: string): EdgeRuntimeInfo[];
  /** Audit records the Worker's versions wrote to stdout, with the version that wrote each (newest 10 000). */
  audit(script: string): readonly EdgeAuditRecord[];
  close(): Promise<void>;
}

export async function startCloudflareSandbox(
  options: CloudflareSandboxOptions = {},
): Promise<CloudflareSandbox> {
  const ca = options.ca ?? (await createSandboxCa());
  const tls = await ca.issueServerCertificate();
  const accountId = options.accountId ?? randomHex(16);
  const edge = createEdge({
    tls,
    ...(options.forwardFetch === undefined ? {} : { forwardFetch: options.forwardFetch }),
    ...(options.runtimeStartTimeoutMs === undefined ? {} : { startTimeoutMs: options.runtimeStartTimeoutMs }),
    ...(options.drainTimeoutMs === undefined ? {} : { drainTimeoutMs: options.drainTimeoutMs }),
  });
  const tokens = createTokenStore(accountId);
  const workers = createWorkerStore(edge);
  let server: Awaited<ReturnType<typeof startLoopbackServer>>;
  try {
    server = await startLoopbackServer({ tls });
  } catch (error) {
    await edge.close();
    throw error;
  }
  const api = mountCloudflareApi(server, { accountId, tokens, workers });
  const bootstrapToken = tokens.createDirect({
    name: "aml-edge bootstrap (mints job tokens)",
    permissions: ["API Tokens Write"],
  });

  let closed: Promise<void> | undefined;
  return {
    apiUrl: `${server.origin}${API_PATH}`,
    accountId,
    caPem: ca.caPem,
    bootstrapTokenSecretName: BOOTSTRAP_TOKEN_SECRET_NAME,
    bootstrapToken,
    edgeUrl: (script) => edge.url(script),
    createToken(tokenOptions = {}) {
      const { worker, ...rest } = tokenOptions;
      if (worker === undefined) return tokens.createDirect(rest);
      const script = workers.find(worker);
      if (script === undefined) {
        throw new Error(`createToken: Worker ${JSON.stringify(worker)} does not exist yet; upload it first`);
      }
      return tokens.createDirect({ ...rest, workerTag: script.tag });
    },
    tokens: () => tokens.summaries(),
    get requests() {
      return api.requests;
    },
    deployments: (script) => structuredClone(workers.find(script)?.deployments ?? []),
    versions: (script) => [...(workers.find(script)?.versions ?? [])].reverse().map(versionView),
    runtimes: (script) => edge.runtimes(script),
    audit: (script) => edge.audit(script),
    close() {
      closed ??= (async () => {
        await server.close();
        await edge.close();
      })();
      return closed;
    },
  };
}

export type { ApiRequestRecord } from "./api.ts";
export type { EdgeAuditRecord, EdgeRuntimeInfo } from "./edge.ts";
export { parseVersionOverrides, VERSION_OVERRIDES_HEADER } from "./edge.ts";
export { ERROR_CODES } from "./errors.ts";
export type { PermissionGroup } from "./policies.ts";
export type { TestTokenOptions, TokenSummary } from "./tokens.ts";
export type { DeploymentView } from "./workers.ts";
