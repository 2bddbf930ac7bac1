// The Cloudflare API calls the plane makes, behind one narrow interface (CloudflareApi) so the credential and publish
// logic take it as an argument and tests hand in a fake. The real one uses the official `cloudflare` client for the
// JSON endpoints and plain fetch for the two multipart uploads, which that client's encoder breaks
// (cloudflare-typescript#2799, see upload.ts). Every refusal becomes a CloudflareApiError naming the call, Cloudflare's
// codes and what to do. The only difference between real Cloudflare and the local sandbox is `apiUrl`.
import Cloudflare, { APIConnectionError, APIError } from "cloudflare";
import { type CallContext, cloudflareApiError, envelopeErrors } from "./errors.ts";
import { type WorkerUpload, workerUploadForm } from "./upload.ts";

export const CLOUDFLARE_API_URL = "https://api.cloudflare.com/client/v4";

export type TokenStatusValue = "active" | "disabled" | "expired";

/** What /tokens/verify says about the token making the call. */
export interface TokenStatus {
  id: string;
  status: TokenStatusValue;
  /** RFC 3339. */
  not_before?: string | undefined;
  expires_on?: string | undefined;
}

export interface PermissionGroup {
  id: string;
  name: string;
  scopes: string[];
}

/** Account-wide `{"com.cloudflare.api.account.<a>": "*"}`, or nested to one Worker by its tag. */
export type TokenResources = Record<string, string> | Record<string, Record<string, string>>;

export interface TokenRequest {
  name: string;
  policies: { effect: "allow"; permission_groups: { id: string }[]; resources: TokenResources }[];
  /** RFC 3339. */
  expires_on: string;
}

export interface MintedToken {
  id: string;
  name: string;
  /** The secret: shown by Cloudflare only in the create response. */
  value: string;
  expires_on: string | undefined;
}

export interface WorkerScript {
  /** The script name. */
  id: string;
  /** The script's tag: what a per-Worker token policy names. */
  tag: string;
}

export interface DeploymentVersion {
  version_id: string;
  percentage: number;
}

export interface WorkerDeployment {
  id: string;
  created_on?: string | undefined;
  source?: string | undefined;
  strategy: "percentage";
  versions: DeploymentVersion[];
  annotations?: Record<string, string> | undefined;
  author_email?: string | undefined;
}

/** A binding as a version lists it: secret_text without its text, json with its json. */
export interface VersionBinding {
  type: string;
  name: string;
  json?: unknown;
  [field: string]: unknown;
}

export interface WorkerVersion {
  id: string;
  number?: number | undefined;
  annotations?: Record<string, string> | undefined;
  bindings: VersionBinding[];
}

export interface DeploymentRequest {
  versions: DeploymentVersion[];
  message?: string;
  /** Deploy even when Cloudflare would block it because secrets changed since a version (10220). */
  force?: boolean;
}

/** The calls the plane makes; the account is fixed per client, the token too. */
export interface CloudflareApi {
  readonly accountId: string;
  /** The account-token verify endpoint, or the user-token one. */
  verifyToken(kind: "account" | "user"): Promise<TokenStatus>;
  permissionGroups(): Promise<PermissionGroup[]>;
  createToken(request: TokenRequest): Promise<MintedToken>;
  /** `name` only words the error message: ids are not logged. */
  deleteToken(id: string, name?: string): Promise<void>;
  listScripts(): Promise<WorkerScript[]>;
  /** Newest first: the first is the live one. Throws CloudflareApiError 10007 when the Worker does not exist. */
  listDeployments(script: string): Promise<WorkerDeployment[]>;
  getVersion(script: string, versionId: string): Promise<WorkerVersion>;
  /** A new version, not deployed. */
  uploadVersion(script: string, upload: WorkerUpload): Promise<WorkerVersion>;
  /** Creates (or replaces) the Worker and deploys the upload at 100 %. */
  uploadScript(script: string, upload: WorkerUpload): Promise<void>;
  createDeployment(script: string, request: DeploymentRequest): Promise<WorkerDeployment>;
}

export interface CloudflareApiOptions {
  apiUrl: string;
  accountId: string;
  token: string;
  /** Where the token came from, for error messages: "the `cloudflare-api-token` input". */
  tokenDescription: string;
  fetch?: typeof globalThis.fetch;
  /** Per request. Default 60 s. */
  timeoutMs?: number;
  logger?: { warning(message: string): void; debug(message: string): void };
}

export function createCloudflareApi(options: CloudflareApiOptions): CloudflareApi {
  return new CloudflareRestApi(options);
}

class CloudflareRestApi implements CloudflareApi {
  readonly accountId: string;
  private readonly options: CloudflareApiOptions;
  private readonly client: Cloudflare;
  private readonly fetch: typeof globalThis.fetch;
  private readonly apiUrl: string;

  constructor(options: CloudflareApiOptions) {
    this.options = options;
    this.accountId = options.accountId;
    this.apiUrl = options.apiUrl.replace(/\/+$/, "");
    this.fetch = options.fetch ?? globalThis.fetch;
    const logger = options.logger;
    this.client = new Cloudflare({
      apiToken: options.token,
      // Explicitly none: the client would otherwise also send CLOUDFLARE_API_KEY / CLOUDFLARE_EMAIL from the
      // environment, and Cloudflare would judge the request by a credential this step did not choose.
      apiKey: null,
      apiEmail: null,
      userServiceKey: null,
      baseURL: this.apiUrl,
      timeout: options.timeoutMs ?? 60_000,
      ...(options.fetch === undefined ? {} : { fetch: options.fetch }),
      logLevel: "warn",
      logger: {
        error: (message: string) => logger?.warning(`cloudflare client: ${message}`),
        warn: (message: string) => logger?.warning(`cloudflare client: ${message}`),
        info: (message: string) => logger?.debug(`cloudflare client: ${message}`),
        debug: () => {},
      },
    });
  }

  private context(what: string, extra: Omit<CallContext, "what" | "token" | "accountId"> = {}): CallContext {
    return { what, token: this.options.tokenDescription, accountId: this.accountId, ...extra };
  }

  private async call<T>(context: CallContext, operation: () => Promise<T>): Promise<T> {
    try {
      return await operation();
    } catch (error) {
      throw this.translate(context, error);
    }
  }

  private translate(context: CallContext, error: unknown): Error {
    if (error instanceof APIConnectionError) {
      return cloudflareApiError(
        {
          ...context,
          what: `${context.what}: could not reach Cloudflare at ${this.apiUrl} (${error.message})`,
        },
        undefined,
        [],
        error,
      );
    }
    if (error instanceof APIError) {
      const errors = envelopeErrors(error.error);
      // No cause: the client's error repeats the same body, and the message already carries Cloudflare's words.
      return cloudflareApiError(
        context,
        error.status,
        errors.length > 0 ? errors : envelopeErrors({ errors: error.errors }),
      );
    }
    return error instanceof Error ? error : new Error(String(error));
  }

  verifyToken(kind: "account" | "user"): Promise<TokenStatus> {
    const context = this.context("Verifying the Cloudflare API token");
    return this.call(context, async () => {
      const result =
        kind === "account"
          ? await this.client.accounts.tokens.verify({ account_id: this.accountId })
          : await this.client.user.tokens.verify();
      return {
        id: result.id,
        status: result.status,
        not_before: result.not_before,
        expires_on: result.expires_on,
      };
    });
  }

  permissionGroups(): Promise<PermissionGroup[]> {
    const context = this.context("Listing the account's permission groups", {
      permission: "API Tokens Write (or Read) on the account",
    });
    return this.call(context, async () => {
      const groups: PermissionGroup[] = [];
      for await (const group of this.client.accounts.tokens.permissionGroups.list({
        account_id: this.accountId,
      })) {
        if (group.id !== undefined && group.name !== undefined) {
          groups.push({ id: group.id, name: group.name, scopes: [...(group.scopes ?? [])] });
        }
      }
      return groups;
    });
  }

  createToken(request: TokenRequest): Promise<MintedToken> {
    const context = this.context(`Creating the Cloudflare API token ${JSON.stringify(request.name)}`, {
      permission: "API Tokens Write on the account",
    });
    return this.call(context, async () => {
      const result = await this.client.accounts.tokens.create(
        { account_id: this.accountId, ...request },
        // Not retried: a create whose answer was lost would leave a token nobody knows the id of to delete (it
        // still expires on its own); one failure is reported instead.
        { maxRetries: 0 },
      );
      if (result.id === undefined || result.value === undefined) {
        throw new Error(`${context.what}: Cloudflare's answer holds no token id or value`);
      }
      return {
        id: result.id,
        name: result.name ?? request.name,
        value: result.value,
        expires_on: result.expires_on,
      };
    });
  }

  async deleteToken(id: string, name?: string): Promise<void> {
    const context = this.context(
      `Deleting the Cloudflare API token ${name === undefined ? "" : JSON.stringify(name)}`.trim(),
      {
        permission: "API Tokens Write on the account",
      },
    );
    await this.call(context, () => this.client.accounts.tokens.delete(id, { account_id: this.accountId }));
  }

  listScripts(): Promise<WorkerScript[]> {
    const context = this.context("Listing the account's Workers", {
      permission: "Workers Scripts Read on the account",
    });
    return this.call(context, async () => {
      const scripts: WorkerScript[] = [];
      for await (const script of this.client.workers.scripts.list({ account_id: this.accountId })) {
        if (script.id !== undefined && script.tag !== undefined)
          scripts.push({ id: script.id, tag: script.tag });
      }
      return scripts;
    });
  }

  listDeployments(script: string): Promise<WorkerDeployment[]> {
    const context = this.context(`Reading the deployments of Worker ${script}`, {
      permission: `Workers Scripts Read on Worker ${script}`,
      script,
    });
    return this.call(context, async () => {
      const page = await this.client.workers.scripts.deployments.list(script, { account_id: this.accountId });
      // The client's pager looks for result.items; Cloudflare answers result.deployments, which the page keeps.
      const result = page.result as unknown as { deployments?: unknown };
      if (!Array.isArray(result.deployments)) {
        throw new Error(`${context.what}: Cloudflare's answer has no deployments list`);
      }
      return result.deployments.map((deployment) => parseDeployment(deployment, context.what));
    });
  }

  getVersion(script: string, versionId: string): Promise<WorkerVersion> {
    const context = this.context(`Reading version ${versionId} of Worker ${script}`, {
      permission: `Workers Scripts Read on Worker ${script}`,
      script,
    });
    return this.call(context, async () =>
      parseVersion(
        await this.client.workers.scripts.versions.get(versionId, {
          account_id: this.accountId,
          script_name: script,
        }),
        context.what,
      ),
    );
  }

  async uploadVersion(script: string, upload: WorkerUpload): Promise<WorkerVersion> {
    const context = this.context(`Uploading a new version of Worker ${script}`, {
      permission: `Workers Scripts Write on Worker ${script}`,
      script,
    });
    // strict: an `inherit` Cloudflare cannot resolve is refused, rather than silently dropped (a secret the new
    // version would then lack).
    const result = await this.multipart(
      "POST",
      `${this.scriptPath(script)}/versions?bindings_inherit=strict`,
      upload,
      context,
    );
    return parseVersion(result, context.what);
  }

  async uploadScript(script: string, upload: WorkerUpload): Promise<void> {
    const context = this.context(`Creating Worker ${script}`, {
      permission: "Workers Scripts Write on the whole account (creating a Worker needs it)",
      script,
    });
    await this.multipart("PUT", this.scriptPath(script), upload, context);
  }

  createDeployment(script: string, request: DeploymentRequest): Promise<WorkerDeployment> {
    const context = this.context(`Deploying ${describeVersions(request.versions)} of Worker ${script}`, {
      permission: `Workers Scripts Write on Worker ${script}`,
      script,
    });
    return this.call(context, async () =>
      parseDeployment(
        await this.client.workers.scripts.deployments.create(script, {
          account_id: this.accountId,
          strategy: "percentage",
          versions: request.versions,
          ...(request.message === undefined ? {} : { annotations: { "workers/message": request.message } }),
          ...(request.force === true ? { force: true } : {}),
        }),
        context.what,
      ),
    );
  }

  private scriptPath(script: string): string {
    return `/accounts/${encodeURIComponent(this.accountId)}/workers/scripts/${encodeURIComponent(script)}`;
  }

  /** A multipart upload through fetch; the envelope's result, or a CloudflareApiError. */
  private async multipart(
    method: "POST" | "PUT",
    path: string,
    upload: WorkerUpload,
    context: CallContext,
  ): Promise<unknown> {
    let response: Response;
    try {
      response = await this.fetch(`${this.apiUrl}${path}`, {
        method,
        headers: { authorization: `Bearer ${this.options.token}`, accept: "application/json" },
        body: workerUploadForm(upload),
        signal: AbortSignal.timeout(this.options.timeoutMs ?? 60_000),
      });
    } catch (error) {
      const reason =
        error instanceof Error ? (error.cause instanceof Error ? error.cause.message : error.message) : "";
      throw cloudflareApiError(
        { ...context, what: `${context.what}: could not reach Cloudflare at ${this.apiUrl} (${reason})` },
        undefined,
        [],
        error,
      );
    }
    const text = await response.text();
    let body: unknown;
    try {
      body = JSON.parse(text);
    } catch {
      body = undefined;
    }
    const success = typeof body === "object" && body !== null && (body as { success?: unknown }).success;
    if (!response.ok || success !== true) {
      const errors = envelopeErrors(body);
      throw cloudflareApiError(
        context,
        response.status,
        errors.length > 0 || body !== undefined
          ? errors
          : [{ code: 0, message: `not JSON: ${JSON.stringify(text.slice(0, 200))}` }],
      );
    }
    return (body as { result?: unknown }).result;
  }
}

function describeVersions(versions: readonly DeploymentVersion[]): string {
  return versions.map((version) => `${version.version_id} at ${version.percentage}%`).join(" and ");
}

function parseDeployment(value: unknown, what: string): WorkerDeployment {
  const deployment = value as Partial<WorkerDeployment> | null;
  if (
    typeof deployment !== "object" ||
    deployment === null ||
    typeof deployment.id !== "string" ||
    !Array.isArray(deployment.versions) ||
    !deployment.versions.every(
      (version) => typeof version?.version_id === "string" && typeof version.percentage === "number",
    )
  ) {
    throw new Error(
      `${what}: Cloudflare's answer is not a deployment (${JSON.stringify(value).slice(0, 200)})`,
    );
  }
  return {
    id: deployment.id,
    created_on: deployment.created_on,
    source: deployment.source,
    strategy: "percentage",
    versions: deployment.versions.map((version) => ({
      version_id: version.version_id,
      percentage: version.percentage,
    })),
    ...(deployment.annotations === undefined ? {} : { annotations: deployment.annotations }),
    ...(deployment.author_email === undefined ? {} : { author_email: deployment.author_email }),
  };
}

function parseVersion(value: unknown, what: string): WorkerVersion {
  const version = value as {
    id?: unknown;
    number?: unknown;
    annotations?: Record<string, string>;
    metadata?: { annotations?: Record<string, string> };
    resources?: { bindings?: unknown };
  } | null;
  if (typeof version !== "object" || version === null || typeof version.id !== "string") {
    throw new Error(`${what}: Cloudflare's answer is not a version (${JSON.stringify(value).slice(0, 200)})`);
  }
  const bindings = Array.isArray(version.resources?.bindings) ? version.resources.bindings : [];
  return {
    id: version.id,
    number: typeof version.number === "number" ? version.number : undefined,
    // Cloudflare returns them beside the id; older answers kept them under metadata.
    annotations: version.annotations ?? version.metadata?.annotations,
    bindings: bindings.filter(
      (binding): binding is VersionBinding =>
        typeof binding?.type === "string" && typeof binding?.name === "string",
    ),
  };
}
