// Workers, their versions and deployments, and secrets: the state behind the Workers API of the local Cloudflare
// and the rules Cloudflare enforces on it. Versions are immutable; a deployment names one or two of the last 100
// with percentages summing to 100; the history is kept newest first and its first entry is live. A secret change
// makes a new version and deploys it at 100 %, and is refused (10215) while the latest version is not the one
// deployed at 100 %. Changes to one Worker are serialised; a deployment is recorded only after the edge has started
// what it needs, so what the API reports as live is what the edge serves.
import { createHash, randomUUID } from "node:crypto";
import { apiError, invalidUpload, SECRET_DURING_GRADUAL_DEPLOYMENT_MESSAGE } from "./errors.ts";
import { randomHex } from "./tokens.ts";
import { type BindingInput, truncateBytes, type UploadedModule, type WorkerUpload } from "./upload.ts";

/** How many of the newest versions a deployment may use. */
export const DEPLOYABLE_VERSIONS = 100;
export const MAX_VERSIONS_PER_DEPLOYMENT = 2;
/** Who the sandbox says made every change: API tokens are account-owned and carry no person. */
export const SANDBOX_AUTHOR_EMAIL = "deployer@aml-edge.sandbox.invalid";
const WORKER_NAME = /^[a-z0-9][a-z0-9_-]{0,62}$/;

/** A binding as stored: inherit already resolved to what it inherited. */
export type ResolvedBinding = Exclude<BindingInput, { type: "inherit" }>;

export interface StoredVersion {
  id: string;
  number: number;
  script: string;
  createdOn: number;
  modules: UploadedModule[];
  compatibilityDate: string | undefined;
  compatibilityFlags: string[];
  bindings: ResolvedBinding[];
  annotations: Record<string, string>;
  etag: string;
}

export interface DeploymentVersion {
  version_id: string;
  percentage: number;
}

export interface DeploymentView {
  id: string;
  created_on: string;
  source: "api";
  strategy: "percentage";
  versions: DeploymentVersion[];
  annotations?: Record<string, string>;
  author_email: string;
}

export interface StoredScript {
  name: string;
  /** 32 hex, stable across replacements: what a per-Worker token names. */
  tag: string;
  createdOn: number;
  modifiedOn: number;
  /** Oldest first. */
  versions: StoredVersion[];
  /** Newest first; the first is live. */
  deployments: DeploymentView[];
}

/** The edge's side of a deployment: start what it needs, then make it live. */
export interface DeploymentActivator {
  /**
   * Starts a runtime for every version of the deployment that has none; resolves, once all are ready, with a
   * function that makes the deployment live on the edge. Throws (a CloudflareApiError) when a version cannot run.
   */
  prepare(
    script: string,
    entries: { version: StoredVersion; percentage: number }[],
  ): Promise<(deploymentId: string) => void>;
}

export interface WorkerStore {
  find(name: string): StoredScript | undefined;
  list(): StoredScript[];
  /** PUT script: creates or replaces the Worker and deploys the new version at 100 %. */
  putScript(name: string, upload: WorkerUpload): Promise<StoredScript>;
  uploadVersion(name: string, upload: WorkerUpload): Promise<StoredVersion>;
  deploy(name: string, body: unknown): Promise<DeploymentView>;
  deleteDeployment(name: string, id: string): Promise<void>;
  putSecret(name: string, body: unknown): Promise<{ name: string; type: "secret_text" }>;
  deleteSecret(name: string, secretName: string): Promise<void>;
  version(name: string, id: string): StoredVersion;
  deployment(name: string, id: string): DeploymentView;
  secrets(name: string): { name: string; type: "secret_text" }[];
}

export function checkWorkerName(name: string): void {
  if (!WORKER_NAME.test(name)) {
    throw apiError(
      "invalidWorkerName",
      `Worker name ${JSON.stringify(name)} is not accepted; use 1 to 63 lowercase letters, digits, "-" and "_", starting with a letter or digit`,
    );
  }
}

export function createWorkerStore(activator: DeploymentActivator, now: () => number = Date.now): WorkerStore {
  const scripts = new Map<string, StoredScript>();
  const locks = new Map<string, Promise<unknown>>();

  /** Runs one change to a Worker after the previous one finished, so two deployments never interleave. */
  const serialised = <T>(name: string, change: () => Promise<T>): Promise<T> => {
    const previous = locks.get(name) ?? Promise.resolve();
    const next = previous.catch(() => undefined).then(change);
    const settled = next.catch(() => undefined);
    locks.set(name, settled);
    void settled.then(() => {
      if (locks.get(name) === settled) locks.delete(name);
    });
    return next;
  };

  const existing = (name: string): StoredScript => {
    const script = scripts.get(name);
    if (script === undefined) throw apiError("unknownWorker", "This Worker does not exist on your account.");
    return script;
  };

  const latest = (script: StoredScript): StoredVersion => script.versions.at(-1) as StoredVersion;

  const newVersion = (
    script: StoredScript | undefined,
    name: string,
    upload: Omit<WorkerUpload, "bindings" | "keepBindings" | "mainModule"> & { bindings: ResolvedBinding[] },
    annotations: Record<string, string>,
  ): StoredVersion => {
    const hash = createHash("sha256");
    for (const module of upload.modules)
      hash.update(`${module.name}\0${module.type}\0`).update(module.contents);
    return {
      id: randomUUID(),
      number: (script?.versions.at(-1)?.number ?? 0) + 1,
      script: name,
      createdOn: now(),
      modules: upload.modules,
      compatibilityDate: upload.compatibilityDate,
      compatibilityFlags: upload.compatibilityFlags,
      bindings: upload.bindings,
      annotations: { ...upload.annotations, ...annotations },
      etag: hash.digest("hex"),
    };
  };

  const resolveBindings = (script: StoredScript | undefined, upload: WorkerUpload): ResolvedBinding[] => {
    const resolved = upload.bindings.map((binding): ResolvedBinding => {
      if (binding.type !== "inherit") return binding;
      const from =
        binding.version_id === undefined || binding.version_id === "latest"
          ? script?.versions.at(-1)
          : script?.versions.find((version) => version.id === binding.version_id);
      if (from === undefined) {
        throw invalidUpload(
          script === undefined || script.versions.length === 0
            ? `binding ${binding.name} is "inherit", but the Worker has no earlier version to inherit from`
            : `binding ${binding.name} inherits from version ${JSON.stringify(binding.version_id)}, which is not a version of this Worker`,
        );
      }
      const sourceName = binding.old_name ?? binding.name;
      const source = from.bindings.find((candidate) => candidate.name === sourceName);
      if (source === undefined) {
        throw invalidUpload(
          `binding ${binding.name} inherits ${sourceName} from version ${from.id}, which has no binding of that name`,
        );
      }
      return { ...source, name: binding.name };
    });
    // keep_bindings (wrangler's way of keeping secrets across a script upload): the latest version's bindings of
    // those types that the upload does not name.
    const previous = script?.versions.at(-1);
    if (previous !== undefined && upload.keepBindings.length > 0) {
      for (const binding of previous.bindings) {
        if (upload.keepBindings.includes(binding.type) && !resolved.some((b) => b.name === binding.name)) {
          resolved.push(binding);
        }
      }
    }
    return resolved;
  };

  const fromUpload = (
    script: StoredScript | undefined,
    name: string,
    upload: WorkerUpload,
    annotations: Record<string, string> = {},
  ) => newVersion(script, name, { ...upload, bindings: resolveBindings(script, upload) }, annotations);

  /**
   * Starts what the deployment needs on the edge, then records it (newest first, with `alsoRecord`: the version it
   * brings, if new) and makes it live, all in one turn of the event loop.
   */
  const activate = async (
    script: StoredScript,
    entries: { version: StoredVersion; percentage: number }[],
    annotations: Record<string, string>,
    alsoRecord: () => void = () => undefined,
  ): Promise<DeploymentView> => {
    const makeLive = await activator.prepare(script.name, entries);
    const deployment: DeploymentView = {
      id: randomUUID(),
      created_on: new Date(now()).toISOString(),
      source: "api",
      strategy: "percentage",
      versions: entries.map(({ version, percentage }) => ({ version_id: version.id, percentage })),
      ...(Object.keys(annotations).length === 0 ? {} : { annotations }),
      author_email: SANDBOX_AUTHOR_EMAIL,
    };
    alsoRecord();
    script.deployments.unshift(deployment);
    script.modifiedOn = now();
    makeLive(deployment.id);
    return deployment;
  };

  /** Secret changes need the latest version to be the only one live, at 100 % (Cloudflare's 10215). */
  const requireFullyDeployedLatest = (script: StoredScript): StoredVersion => {
    const live = script.deployments[0];
    const newest = latest(script);
    const only = live?.versions.length === 1 ? live.versions[0] : undefined;
    if (only === undefined || only.version_id !== newest.id || only.percentage !== 100) {
      throw apiError("secretDuringGradualDeployment", SECRET_DURING_GRADUAL_DEPLOYMENT_MESSAGE);
    }
    return newest;
  };

  const withSecret = async (
    script: StoredScript,
    change: (bindings: ResolvedBinding[]) => ResolvedBinding[],
  ): Promise<void> => {
    const base = requireFullyDeployedLatest(script);
    const version = newVersion(
      script,
      script.name,
      { ...base, annotations: {}, bindings: change(base.bindings) },
      { "workers/triggered_by": "secret" },
    );
    // Recorded only once it runs: a secret that broke the Worker's startup must not leave a version behind that
    // makes every later secret change fail with 10215.
    await activate(script, [{ version, percentage: 100 }], { "workers/triggered_by": "secret" }, () =>
      script.versions.push(version),
    );
  };

  return {
    find: (name) => scripts.get(name),
    list: () => [...scripts.values()],
    putScript(name, upload) {
      checkWorkerName(name);
      return serialised(name, async () => {
        const current = scripts.get(name);
        const script: StoredScript = current ?? {
          name,
          tag: randomHex(16),
          createdOn: now(),
          modifiedOn: now(),
          versions: [],
          deployments: [],
        };
        const version = fromUpload(current, name, upload, { "workers/triggered_by": "upload" });
        // A new Worker exists only once its first version runs, as a failed upload leaves none on Cloudflare.
        await activate(script, [{ version, percentage: 100 }], { "workers/triggered_by": "upload" }, () => {
          script.versions.push(version);
          scripts.set(name, script);
        });
        return script;
      });
    },
    uploadVersion(name, upload) {
      return serialised(name, async () => {
        const script = existing(name);
        const version = fromUpload(script, name, upload);
        script.versions.push(version);
        script.modifiedOn = now();
        return version;
      });
    },
    deploy(name, body) {
      return serialised(name, async () => {
        const script = existing(name);
        const request = parseDeployment(script, body);
        return activate(script, request.entries, request.annotations);
      });
    },
    deleteDeployment(name, id) {
      return serialised(name, async () => {
        const script = existing(name);
        const index = script.deployments.findIndex((deployment) => deployment.id === id);
        if (index < 0) throw unknownDeployment(id);
        if (index === 0) {
          throw apiError(
            "deploymentLive",
            `deployment ${id} is the live deployment and cannot be deleted; deploy another first`,
          );
        }
        script.deployments.splice(index, 1);
      });
    },
    putSecret(name, body) {
      return serialised(name, async () => {
        const script = existing(name);
        const secret = parseSecret(body);
        const clash = latest(script).bindings.find((b) => b.name === secret.name && b.type !== "secret_text");
        if (clash !== undefined) {
          throw apiError(
            "secretNameTaken",
            `${secret.name} is already a ${clash.type} binding of this Worker; a secret needs a name of its own`,
          );
        }
        await withSecret(script, (bindings) => [
          ...bindings.filter((binding) => binding.name !== secret.name),
          { type: "secret_text", name: secret.name, text: secret.text },
        ]);
        return { name: secret.name, type: "secret_text" as const };
      });
    },
    deleteSecret(name, secretName) {
      return serialised(name, async () => {
        const script = existing(name);
        if (!latest(script).bindings.some((b) => b.name === secretName && b.type === "secret_text")) {
          throw unknownSecret(secretName);
        }
        await withSecret(script, (bindings) => bindings.filter((binding) => binding.name !== secretName));
      });
    },
    version(name, id) {
      const version = existing(name).versions.find((candidate) => candidate.id === id);
      if (version === undefined) {
        throw apiError("unknownVersion", `version ${JSON.stringify(id)} is not a version of Worker ${name}`);
      }
      return version;
    },
    deployment(name, id) {
      const deployment = existing(name).deployments.find((candidate) => candidate.id === id);
      if (deployment === undefined) throw unknownDeployment(id);
      return deployment;
    },
    secrets(name) {
      return latest(existing(name))
        .bindings.filter((binding) => binding.type === "secret_text")
        .map((binding) => ({ name: binding.name, type: "secret_text" as const }));
    },
  };
}

function parseDeployment(
  script: StoredScript,
  body: unknown,
): { entries: { version: StoredVersion; percentage: number }[]; annotations: Record<string, string> } {
  if (typeof body !== "object" || body === null || Array.isArray(body)) {
    throw apiError("deploymentInvalid", 'the body must be {strategy: "percentage", versions: [...]}');
  }
  const { strategy, versions, annotations } = body as Record<string, unknown>;
  if (strategy !== "percentage") {
    throw apiError("deploymentInvalid", `strategy is ${JSON.stringify(strategy)}; accepted: "percentage"`);
  }
  if (!Array.isArray(versions) || versions.length === 0 || versions.length > MAX_VERSIONS_PER_DEPLOYMENT) {
    throw apiError(
      "deploymentVersionCount",
      `a deployment takes 1 or ${MAX_VERSIONS_PER_DEPLOYMENT} versions; got ${Array.isArray(versions) ? versions.length : "no versions array"}`,
    );
  }
  const deployable = new Set(script.versions.slice(-DEPLOYABLE_VERSIONS).map((version) => version.id));
  const seen = new Set<string>();
  const entries = versions.map((entry, index) => {
    const { version_id: id, percentage } = (entry ?? {}) as Record<string, unknown>;
    if (typeof id !== "string" || typeof percentage !== "number") {
      throw apiError(
        "deploymentInvalid",
        `versions[${index}] must be {version_id: string, percentage: number}`,
      );
    }
    if (seen.has(id)) throw apiError("deploymentDuplicateVersion", `version ${id} is named twice`);
    seen.add(id);
    const version = script.versions.find((candidate) => candidate.id === id);
    if (version === undefined) {
      throw apiError("deploymentUnknownVersion", `version ${id} is not a version of Worker ${script.name}`);
    }
    if (!deployable.has(id)) {
      throw apiError(
        "deploymentVersionTooOld",
        `version ${id} (number ${version.number}) is older than the last ${DEPLOYABLE_VERSIONS} versions, the only ones a deployment may use`,
      );
    }
    if (!Number.isFinite(percentage) || percentage < 0 || percentage > 100) {
      throw apiError(
        "deploymentPercentages",
        `versions[${index}].percentage ${percentage} is not between 0 and 100`,
      );
    }
    return { version, percentage };
  });
  const sum = entries.reduce((total, entry) => total + entry.percentage, 0);
  if (Math.abs(sum - 100) > 1e-9) {
    throw apiError("deploymentPercentages", `the percentages sum to ${sum}; they must sum to 100`);
  }
  return { entries, annotations: deploymentAnnotations(annotations) };
}

function deploymentAnnotations(raw: unknown): Record<string, string> {
  if (raw === undefined) return {};
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) {
    throw apiError("deploymentInvalid", 'annotations must be an object {"workers/message": "..."}');
  }
  const out: Record<string, string> = {};
  for (const [key, value] of Object.entries(raw)) {
    if (key !== "workers/message" || typeof value !== "string") {
      throw apiError(
        "deploymentInvalid",
        `annotations has ${JSON.stringify(key)}: ${JSON.stringify(value)}; accepted: "workers/message" with a string`,
      );
    }
    out[key] = truncateBytes(value, 1000);
  }
  return out;
}

function parseSecret(body: unknown): { name: string; text: string } {
  const { name, text, type } = (typeof body === "object" && body !== null ? body : {}) as Record<
    string,
    unknown
  >;
  if (typeof name !== "string" || !/^[A-Za-z_$][A-Za-z0-9_$]*$/.test(name)) {
    throw apiError(
      "invalidBody",
      `secret name ${JSON.stringify(name)} is not a binding name (a JavaScript identifier)`,
    );
  }
  if (type !== "secret_text") {
    throw apiError(
      "invalidBody",
      `secret type ${JSON.stringify(type)} is not supported; accepted: "secret_text"`,
    );
  }
  if (typeof text !== "string") throw apiError("invalidBody", "secret text must be a string");
  return { name, text };
}

function unknownDeployment(id: string) {
  return apiError("unknownDeployment", `deployment ${JSON.stringify(id)} does not exist on this Worker`);
}

function unknownSecret(name: string) {
  return apiError("unknownSecret", `secret ${JSON.stringify(name)} does not exist on this Worker`);
}
