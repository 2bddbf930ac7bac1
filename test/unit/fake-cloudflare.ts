// An in-memory Cloudflare behind the CloudflareApi interface, for the credential, publish and route-action tests: one
// account's tokens, permission groups, Workers, versions and deployments, judged by the token each client holds the
// way Cloudflare judges them (401 for an unknown or deleted token, 403 without the permission on the account or the
// Worker, 10007 for an unknown Worker, 10220 for a deployment that needs force). Faults are set per call by name.
import type {
  CloudflareApi,
  DeploymentRequest,
  MintedToken,
  PermissionGroup,
  TokenRequest,
  TokenStatus,
  VersionBinding,
  WorkerDeployment,
  WorkerVersion,
} from "../../src/cloudflare/api.ts";
import { type CloudflareErrorDetail, cloudflareApiError } from "../../src/cloudflare/errors.ts";
import type { WorkerUpload } from "../../src/cloudflare/upload.ts";

export const ACCOUNT = "0123456789abcdef0123456789abcdef";
export const GROUPS: PermissionGroup[] = [
  { id: "g-tokens-write", name: "API Tokens Write", scopes: ["com.cloudflare.api.account"] },
  {
    id: "g-scripts-write",
    name: "Workers Scripts Write",
    scopes: ["com.cloudflare.api.account", "com.cloudflare.edge.worker.script"],
  },
  {
    id: "g-scripts-read",
    name: "Workers Scripts Read",
    scopes: ["com.cloudflare.api.account", "com.cloudflare.edge.worker.script"],
  },
];

export interface FakeToken {
  id: string;
  name: string;
  value: string;
  status: TokenStatus["status"];
  not_before?: string;
  expires_on?: string;
  kind: "account" | "user";
  policies: TokenRequest["policies"];
  deleted: boolean;
}

interface FakeScript {
  tag: string;
  versions: (WorkerVersion & { upload: WorkerUpload })[];
  deployments: WorkerDeployment[];
}

export type Call =
  | "verifyToken"
  | "permissionGroups"
  | "createToken"
  | "deleteToken"
  | "listScripts"
  | "listDeployments"
  | "getVersion"
  | "uploadVersion"
  | "uploadScript"
  | "createDeployment";

export class FakeCloudflare {
  readonly tokens: FakeToken[] = [];
  readonly scripts = new Map<string, FakeScript>();
  /** Every call: which, by which token (name), and what it answered. */
  readonly calls: { call: Call; token: string; ok: boolean; codes: number[]; detail?: unknown }[] = [];
  /** Faults: each call of that name takes the next entry; null lets it through, a fault fails it. */
  readonly faults = new Map<Call, ({ status: number; errors: CloudflareErrorDetail[] } | null)[]>();
  /** Deployments that carry a version whose secrets changed since need force (10220). */
  requireForceFor = new Set<string>();
  private counter = 0;

  addToken(options: Partial<FakeToken> & { permissions?: string[]; workerTag?: string } = {}): FakeToken {
    const id = options.id ?? `tok-${++this.counter}`;
    const groups = (options.permissions ?? []).map((name) => ({
      id: GROUPS.find((group) => group.name === name)?.id ?? name,
    }));
    const account = `com.cloudflare.api.account.${ACCOUNT}`;
    const token: FakeToken = {
      id,
      name: options.name ?? id,
      value: options.value ?? `value-of-${id}`,
      status: options.status ?? "active",
      kind: options.kind ?? "account",
      policies: options.policies ?? [
        {
          effect: "allow",
          permission_groups: groups,
          resources:
            options.workerTag === undefined
              ? { [account]: "*" }
              : { [account]: { [`com.cloudflare.edge.worker.script.${options.workerTag}`]: "*" } },
        },
      ],
      deleted: false,
      ...(options.not_before === undefined ? {} : { not_before: options.not_before }),
      ...(options.expires_on === undefined ? {} : { expires_on: options.expires_on }),
    };
    this.tokens.push(token);
    return token;
  }

  /** A Worker that exists, with one version deployed at 100 %. */
  addWorker(script: string, bindings: VersionBinding[] = []): WorkerVersion {
    const tag = `${script.replace(/[^a-z0-9]/g, "").padEnd(8, "0")}${String(++this.counter).padStart(24, "0")}`;
    const version = {
      id: `v-${++this.counter}`,
      number: 1,
      bindings,
      upload: { mainModule: "worker.js", modules: [], compatibilityDate: "2026-07-01", bindings: [] },
    };
    this.scripts.set(script, {
      tag,
      versions: [version],
      deployments: [
        {
          id: `d-${++this.counter}`,
          strategy: "percentage",
          versions: [{ version_id: version.id, percentage: 100 }],
        },
      ],
    });
    return version;
  }

  tagOf(script: string): string {
    return this.scripts.get(script)?.tag ?? "";
  }

  live(script: string): WorkerDeployment | undefined {
    return this.scripts.get(script)?.deployments[0];
  }

  /** The next `times` calls of `call` fail, after `after` calls that go through. */
  fail(
    call: Call,
    status: number,
    errors: CloudflareErrorDetail[],
    options: { times?: number; after?: number } = {},
  ): void {
    const list = this.faults.get(call) ?? [];
    for (let i = 0; i < (options.after ?? 0); i++) list.push(null);
    for (let i = 0; i < (options.times ?? 1); i++) list.push({ status, errors });
    this.faults.set(call, list);
  }

  client(value: string, tokenDescription = "the test token"): CloudflareApi {
    return new FakeClient(this, value, tokenDescription);
  }

  /** Internal to FakeClient. */
  nextId(prefix: string): string {
    return `${prefix}-${++this.counter}`;
  }
}

class FakeClient implements CloudflareApi {
  readonly accountId = ACCOUNT;
  private readonly cf: FakeCloudflare;
  private readonly value: string;
  private readonly description: string;

  constructor(cf: FakeCloudflare, value: string, description: string) {
    this.cf = cf;
    this.value = value;
    this.description = description;
  }

  private token(): FakeToken | undefined {
    return this.cf.tokens.find((token) => token.value === this.value && !token.deleted);
  }

  /** Runs a call as Cloudflare would: authentication, the permission, faults; records it. */
  private async act<T>(
    call: Call,
    permission: { group: string; script?: string } | "verify" | "none",
    work: () => T,
  ): Promise<T> {
    const token = this.token();
    const record = (ok: boolean, codes: number[]) =>
      this.cf.calls.push({ call, token: token?.name ?? "(unknown)", ok, codes });
    const refuse = (status: number, errors: CloudflareErrorDetail[]) => {
      record(
        false,
        errors.map((error) => error.code),
      );
      return cloudflareApiError(
        { what: `fake ${call}`, token: this.description, accountId: ACCOUNT },
        status,
        errors,
      );
    };
    const fault = this.cf.faults.get(call)?.shift();
    if (fault !== undefined && fault !== null) throw refuse(fault.status, fault.errors);
    if (token === undefined) throw refuse(401, [{ code: 1000, message: "Invalid API Token" }]);
    if (permission !== "verify") {
      const now = Date.now();
      const expired =
        token.status !== "active" ||
        (token.expires_on !== undefined && Date.parse(token.expires_on) <= now) ||
        (token.not_before !== undefined && Date.parse(token.not_before) > now);
      if (expired) throw refuse(401, [{ code: 1000, message: "Invalid API Token" }]);
      if (permission !== "none" && !this.allows(token, permission.group, permission.script)) {
        throw refuse(403, [{ code: 10000, message: "Authentication error" }]);
      }
    }
    try {
      const result = work();
      record(true, []);
      return result;
    } catch (error) {
      if (error instanceof Refusal) throw refuse(error.status, error.errors);
      throw error;
    }
  }

  private allows(token: FakeToken, group: string, script: string | undefined): boolean {
    const groupId = GROUPS.find((candidate) => candidate.name === group)?.id;
    const tokensWrite = token.policies.some((policy) =>
      policy.permission_groups.some((granted) => granted.id === "g-tokens-write"),
    );
    if (group === "API Tokens Write") return tokensWrite;
    const tag = script === undefined ? undefined : this.cf.scripts.get(script)?.tag;
    return token.policies.some((policy) => {
      const grants =
        policy.permission_groups.some((granted) => granted.id === groupId) ||
        // Write implies read, as on Cloudflare.
        (group === "Workers Scripts Read" &&
          policy.permission_groups.some((granted) => granted.id === "g-scripts-write"));
      if (!grants) return false;
      const scope = Object.values(policy.resources)[0];
      if (scope === "*") return true;
      if (typeof scope !== "object" || tag === undefined) return false;
      return `com.cloudflare.edge.worker.script.${tag}` in scope;
    });
  }

  private script(name: string): FakeScript {
    const script = this.cf.scripts.get(name);
    if (script === undefined) {
      throw new Refusal(404, [{ code: 10007, message: "This Worker does not exist on your account." }]);
    }
    return script;
  }

  verifyToken(kind: "account" | "user"): Promise<TokenStatus> {
    return this.act("verifyToken", "verify", () => {
      const token = this.token();
      if (token === undefined || token.kind !== kind) {
        throw new Refusal(401, [{ code: 1000, message: "Invalid API Token" }]);
      }
      return {
        id: token.id,
        status: token.status,
        ...(token.not_before === undefined ? {} : { not_before: token.not_before }),
        ...(token.expires_on === undefined ? {} : { expires_on: token.expires_on }),
      };
    });
  }

  permissionGroups(): Promise<PermissionGroup[]> {
    return this.act("permissionGroups", { group: "API Tokens Write" }, () => GROUPS);
  }

  createToken(request: TokenRequest): Promise<MintedToken> {
    return this.act("createToken", { group: "API Tokens Write" }, () => {
      const token = this.cf.addToken({
        name: request.name,
        policies: request.policies,
        expires_on: request.expires_on,
      });
      return { id: token.id, name: token.name, value: token.value, expires_on: token.expires_on };
    });
  }

  deleteToken(id: string): Promise<void> {
    return this.act("deleteToken", { group: "API Tokens Write" }, () => {
      const token = this.cf.tokens.find((candidate) => candidate.id === id && !candidate.deleted);
      if (token === undefined) throw new Refusal(404, [{ code: 1003, message: "Not found" }]);
      token.deleted = true;
    });
  }

  listScripts() {
    return this.act("listScripts", { group: "Workers Scripts Read" }, () =>
      [...this.cf.scripts.entries()].map(([id, script]) => ({ id, tag: script.tag })),
    );
  }

  listDeployments(script: string): Promise<WorkerDeployment[]> {
    return this.act("listDeployments", { group: "Workers Scripts Read", script }, () =>
      structuredClone(this.script(script).deployments),
    );
  }

  getVersion(script: string, versionId: string): Promise<WorkerVersion> {
    return this.act("getVersion", { group: "Workers Scripts Read", script }, () => {
      const version = this.script(script).versions.find((candidate) => candidate.id === versionId);
      if (version === undefined) throw new Refusal(404, [{ code: 10223, message: "version not found" }]);
      const { upload: _upload, ...view } = version;
      return structuredClone(view);
    });
  }

  uploadVersion(script: string, upload: WorkerUpload): Promise<WorkerVersion> {
    return this.act("uploadVersion", { group: "Workers Scripts Write", script }, () => {
      const target = this.script(script);
      const version = this.store(target, upload);
      const { upload: _upload, ...view } = version;
      return structuredClone(view);
    });
  }

  uploadScript(script: string, upload: WorkerUpload): Promise<void> {
    const exists = this.cf.scripts.has(script);
    return this.act(
      "uploadScript",
      exists ? { group: "Workers Scripts Write", script } : { group: "Workers Scripts Write" },
      () => {
        let target = this.cf.scripts.get(script);
        if (target === undefined) {
          target = {
            tag: `tag${this.cf.nextId("s").replace(/\D/g, "").padStart(29, "0")}`,
            versions: [],
            deployments: [],
          };
          this.cf.scripts.set(script, target);
        }
        const version = this.store(target, upload);
        target.deployments.unshift({
          id: this.cf.nextId("d"),
          strategy: "percentage",
          versions: [{ version_id: version.id, percentage: 100 }],
        });
      },
    );
  }

  private store(target: FakeScript, upload: WorkerUpload): WorkerVersion & { upload: WorkerUpload } {
    const previous = target.versions[0];
    const bindings: VersionBinding[] = upload.bindings.map((binding) => {
      if (binding.type === "inherit") {
        const from = target.versions.find(
          (candidate) => candidate.id === (binding.version_id ?? previous?.id),
        );
        const inherited = from?.bindings.find((candidate) => candidate.name === binding.name);
        if (inherited === undefined) {
          throw new Refusal(400, [{ code: 10021, message: `inherit: no binding ${binding.name}` }]);
        }
        return inherited;
      }
      if (binding.type === "secret_text") return { type: "secret_text", name: binding.name };
      return { ...binding };
    });
    const version = {
      id: this.cf.nextId("v"),
      number: target.versions.length + 1,
      bindings,
      annotations: {
        ...(upload.annotations?.message === undefined
          ? {}
          : { "workers/message": upload.annotations.message }),
        ...(upload.annotations?.tag === undefined ? {} : { "workers/tag": upload.annotations.tag }),
      },
      upload,
    };
    target.versions.unshift(version);
    return version;
  }

  createDeployment(script: string, request: DeploymentRequest): Promise<WorkerDeployment> {
    return this.act("createDeployment", { group: "Workers Scripts Write", script }, () => {
      const target = this.script(script);
      const key = request.versions.map((version) => version.version_id).join("+");
      if (this.cf.requireForceFor.has(key) && request.force !== true) {
        throw new Refusal(400, [{ code: 10220, message: "secrets have changed since this version" }]);
      }
      const deployment: WorkerDeployment = {
        id: this.cf.nextId("d"),
        strategy: "percentage",
        versions: request.versions.map((version) => ({ ...version })),
        ...(request.message === undefined ? {} : { annotations: { "workers/message": request.message } }),
      };
      target.deployments.unshift(deployment);
      return structuredClone(deployment);
    });
  }
}

class Refusal extends Error {
  readonly status: number;
  readonly errors: CloudflareErrorDetail[];
  constructor(status: number, errors: CloudflareErrorDetail[]) {
    super(errors[0]?.message ?? `HTTP ${status}`);
    this.status = status;
    this.errors = errors;
  }
}
