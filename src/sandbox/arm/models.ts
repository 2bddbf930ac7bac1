// The workspace's assets: the default datastore (backed by Azurite) and model containers and versions. Registering
// a model version over ARM only stores a pointer (`modelUri`) into a datastore, as with the real service; the
// artefact itself is read from Azurite when a deployment of it provisions (`download()`).
import { mkdir, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join, resolve, sep } from "node:path";
import { BlobServiceClient, StorageSharedKeyCredential } from "@azure/storage-blob";
import type { Azurite } from "./azurite.ts";
import { ArmError, badRequest, notFound } from "./errors.ts";
import { type Caller, type SystemData, systemDataFor } from "./system-data.ts";

type Json = Record<string, unknown>;

const PROVIDER = "Microsoft.MachineLearningServices";
export const DEFAULT_DATASTORE = "workspaceblobstore";

/** A registered model version, as a deployment's model loader receives it. */
export interface SandboxModelVersion {
  readonly name: string;
  readonly version: string;
  /** ARM id: `<workspaceId>/models/<name>/versions/<version>`. */
  readonly id: string;
  readonly modelUri: string | undefined;
  readonly modelType: string | undefined;
  readonly properties: Readonly<Record<string, string>>;
  readonly tags: Readonly<Record<string, string>>;
  /**
   * Downloads what `modelUri` points at in the default datastore into a new local folder and returns the folder
   * (a single-file model lands as that file inside it). Folders are removed when the sandbox closes.
   */
  download(): Promise<string>;
}

export interface ModelStoreReply {
  status: number;
  body?: unknown;
}

export interface ModelStore {
  /** Creates the default datastore's container in Azurite, as a workspace's storage account has it. */
  init(): Promise<void>;
  listDatastores(): Json[];
  getDatastore(name: string): Json;
  datastoreSecrets(name: string): Json;
  listContainers(): Json[];
  getContainer(name: string): Json;
  putContainer(name: string, body: Json, caller: Caller): ModelStoreReply;
  listVersions(name: string): Json[];
  getVersion(name: string, version: string): Json;
  putVersion(name: string, version: string, body: Json, caller: Caller): ModelStoreReply;
  /** A model version named by its ARM id (case-insensitive, as ARM ids are), if registered. */
  resolveId(id: string): SandboxModelVersion | undefined;
  close(): Promise<void>;
}

export interface ModelStoreOptions {
  workspaceId: string;
  workspace: string;
  resourceGroup: string;
  subscriptionId: string;
  azurite: Azurite | undefined;
  containerName: string;
}

interface ContainerRecord {
  name: string;
  description: string | undefined;
  tags: Record<string, string>;
  properties: Record<string, string>;
  isArchived: boolean;
  systemData: SystemData;
  versions: Map<string, VersionRecord>;
}

interface VersionRecord {
  version: string;
  properties: Json;
  systemData: SystemData;
}

const NAME = /^[a-zA-Z0-9][a-zA-Z0-9\-_.]{0,254}$/;

export function createModelStore(options: ModelStoreOptions): ModelStore {
  const { workspaceId, azurite } = options;
  const containers = new Map<string, ContainerRecord>();
  const downloads: string[] = [];
  const datastoreCreated = new Date().toISOString();
  const datastoreSystemData: SystemData = {
    createdBy: "Azure Machine Learning",
    createdByType: "Application",
    createdAt: datastoreCreated,
    lastModifiedBy: "Azure Machine Learning",
    lastModifiedByType: "Application",
    lastModifiedAt: datastoreCreated,
  };

  const datastoreJson = (): Json => {
    if (azurite === undefined) throw noDatastore();
    return {
      id: `${workspaceId}/datastores/${DEFAULT_DATASTORE}`,
      name: DEFAULT_DATASTORE,
      type: `${PROVIDER}/workspaces/datastores`,
      systemData: { ...datastoreSystemData },
      properties: {
        datastoreType: "AzureBlob",
        isDefault: true,
        description: "The workspace's default blob datastore (Azurite in the sandbox).",
        tags: {},
        properties: {},
        // Exactly what the real service returns for a storage account in the public cloud. The blob URL a client
        // derives from it (`https://devstoreaccount1.blob.core.windows.net`) does not reach Azurite; the sandbox
        // hands out Azurite's path-style URL as configuration instead (ArmSandbox.blobServiceUrl), the way the
        // storage SDKs themselves address Azurite (a connection string's BlobEndpoint).
        accountName: azurite.accountName,
        containerName: options.containerName,
        endpoint: "core.windows.net",
        protocol: "https",
        serviceDataAccessAuthIdentity: "None",
        // The key itself only comes from listSecrets.
        credentials: { credentialsType: "AccountKey", secrets: { secretsType: "AccountKey" } },
      },
    };
  };
  const noDatastore = () =>
    notFound(
      `${PROVIDER}/workspaces/${options.workspace}/datastores`,
      DEFAULT_DATASTORE,
      options.resourceGroup,
    );
  const requireDatastore = (name: string) => {
    if (name !== DEFAULT_DATASTORE || azurite === undefined) {
      throw notFound(`${PROVIDER}/workspaces/${options.workspace}/datastores`, name, options.resourceGroup);
    }
    return azurite;
  };

  const containerJson = (c: ContainerRecord): Json => {
    const latest = latestVersion(c);
    return {
      id: `${workspaceId}/models/${c.name}`,
      name: c.name,
      type: `${PROVIDER}/workspaces/models`,
      systemData: { ...c.systemData },
      properties: {
        ...(c.description === undefined ? {} : { description: c.description }),
        tags: { ...c.tags },
        properties: { ...c.properties },
        isArchived: c.isArchived,
        ...(latest === undefined ? {} : { latestVersion: latest }),
        ...(latest !== undefined && /^\d+$/.test(latest) ? { nextVersion: String(Number(latest) + 1) } : {}),
      },
    };
  };
  const versionJson = (c: ContainerRecord, v: VersionRecord): Json => ({
    id: `${workspaceId}/models/${c.name}/versions/${v.version}`,
    name: v.version,
    type: `${PROVIDER}/workspaces/models/versions`,
    systemData: { ...v.systemData },
    properties: { isAnonymous: false, isArchived: false, tags: {}, properties: {}, ...v.properties },
  });
  const getContainerRecord = (name: string) => {
    const c = containers.get(name);
    if (c === undefined)
      throw notFound(`${PROVIDER}/workspaces/${options.workspace}/models`, name, options.resourceGroup);
    return c;
  };
  const newContainer = (name: string, caller: Caller): ContainerRecord => ({
    name,
    description: undefined,
    tags: {},
    properties: {},
    isArchived: false,
    systemData: systemDataFor(caller),
    versions: new Map(),
  });

  /** `azureml://[subscriptions/../resourcegroups/../workspaces/../]datastores/<ds>/paths/<path>` → its parts. */
  const parseModelUri = (uri: string): { datastore: string; path: string } | undefined => {
    const match =
      /^azureml:\/\/(?:subscriptions\/([^/]+)\/resource[gG]roups\/([^/]+)\/workspaces\/([^/]+)\/)?datastores\/([^/]+)\/paths\/(.+)$/.exec(
        uri,
      );
    if (match === null) return undefined;
    const [, sub, rg, ws, datastore = "", path = ""] = match;
    if (
      sub !== undefined &&
      (sub !== options.subscriptionId ||
        rg?.toLowerCase() !== options.resourceGroup.toLowerCase() ||
        ws?.toLowerCase() !== options.workspace.toLowerCase())
    ) {
      return undefined;
    }
    return { datastore, path };
  };

  const download = async (uri: string | undefined): Promise<string> => {
    if (uri === undefined) throw new Error("the model version has no modelUri to download");
    const location = parseModelUri(uri);
    if (location === undefined)
      throw new Error(`cannot download ${uri}: not a path in this workspace's datastores`);
    const storage = requireDatastore(location.datastore);
    const service = new BlobServiceClient(
      storage.blobServiceUrl,
      new StorageSharedKeyCredential(storage.accountName, storage.accountKey),
    );
    const container = service.getContainerClient(options.containerName);
    const folder = await mkdtemp(join(tmpdir(), "aml-edge-model-"));
    downloads.push(folder);
    const path = location.path.replace(/^\/+/, "");
    const exact = path.replace(/\/+$/, "");
    let count = 0;
    for await (const blob of container.listBlobsFlat({ prefix: exact })) {
      // `models/m/1` must not pick up `models/m/10/...`: only the exact blob or what lies under the folder.
      if (blob.name !== exact && !blob.name.startsWith(`${exact}/`)) continue;
      const relativePath =
        blob.name === exact ? (exact.split("/").pop() ?? "model") : blob.name.slice(exact.length + 1);
      const target = resolve(folder, relativePath);
      if (!target.startsWith(folder + sep))
        throw new Error(`blob ${blob.name} would land outside the model folder`);
      await mkdir(dirname(target), { recursive: true });
      await container.getBlobClient(blob.name).downloadToFile(target);
      count += 1;
    }
    if (count === 0)
      throw new Error(`no blobs at ${uri} (container ${options.containerName}, path ${exact})`);
    return folder;
  };

  const modelVersionOf = (c: ContainerRecord, v: VersionRecord): SandboxModelVersion => ({
    name: c.name,
    version: v.version,
    id: `${workspaceId}/models/${c.name}/versions/${v.version}`,
    modelUri: typeof v.properties.modelUri === "string" ? v.properties.modelUri : undefined,
    modelType: typeof v.properties.modelType === "string" ? v.properties.modelType : undefined,
    properties: { ...((v.properties.properties ?? {}) as Record<string, string>) },
    tags: { ...((v.properties.tags ?? {}) as Record<string, string>) },
    download: () => download(typeof v.properties.modelUri === "string" ? v.properties.modelUri : undefined),
  });

  return {
    async init() {
      if (azurite === undefined) return;
      const service = new BlobServiceClient(
        azurite.blobServiceUrl,
        new StorageSharedKeyCredential(azurite.accountName, azurite.accountKey),
      );
      await service.getContainerClient(options.containerName).createIfNotExists();
    },
    listDatastores: () => (azurite === undefined ? [] : [datastoreJson()]),
    getDatastore(name) {
      requireDatastore(name);
      return datastoreJson();
    },
    datastoreSecrets(name) {
      const storage = requireDatastore(name);
      return { secretsType: "AccountKey", key: storage.accountKey };
    },
    listContainers: () => [...containers.values()].map(containerJson),
    getContainer: (name) => containerJson(getContainerRecord(name)),
    putContainer(name, body, caller) {
      if (!NAME.test(name)) throw badRequest(`${name} is not a valid model name.`);
      const properties = (body.properties ?? {}) as Json;
      const existing = containers.get(name);
      const c = existing ?? newContainer(name, caller);
      c.description = properties.description as string | undefined;
      c.tags = { ...((properties.tags ?? {}) as Record<string, string>) };
      c.properties = { ...((properties.properties ?? {}) as Record<string, string>) };
      c.isArchived = properties.isArchived === true;
      c.systemData = systemDataFor(caller, existing?.systemData);
      containers.set(name, c);
      return { status: existing === undefined ? 201 : 200, body: containerJson(c) };
    },
    listVersions: (name) => {
      const c = getContainerRecord(name);
      return [...c.versions.values()].map((v) => versionJson(c, v));
    },
    getVersion(name, version) {
      const c = getContainerRecord(name);
      const v = c.versions.get(version);
      if (v === undefined) {
        throw notFound(
          `${PROVIDER}/workspaces/${options.workspace}/models/${name}/versions`,
          version,
          options.resourceGroup,
        );
      }
      return versionJson(c, v);
    },
    putVersion(name, version, body, caller) {
      if (!NAME.test(name)) throw badRequest(`${name} is not a valid model name.`);
      if (!NAME.test(version)) throw badRequest(`${version} is not a valid model version.`);
      const properties = { ...((body.properties ?? {}) as Json) };
      const uri = properties.modelUri;
      if (typeof uri === "string" && uri.startsWith("azureml://")) {
        const location = parseModelUri(uri);
        if (location === undefined) {
          throw badRequest(`modelUri ${uri} is not a datastore path of workspace ${options.workspace}.`);
        }
        requireDatastore(location.datastore);
      }
      // Creating a version creates its container, as the service does.
      const c = containers.get(name) ?? newContainer(name, caller);
      containers.set(name, c);
      const existing = c.versions.get(version);
      if (existing !== undefined && existing.properties.modelUri !== properties.modelUri) {
        // Versions are immutable apart from description, tags and archiving: a new artefact needs a new version.
        throw new ArmError(
          409,
          "Conflict",
          `Model ${name}:${version} already exists with modelUri ${String(existing.properties.modelUri)}; register a new version instead.`,
        );
      }
      const v: VersionRecord = {
        version,
        properties,
        systemData: systemDataFor(caller, existing?.systemData),
      };
      c.versions.set(version, v);
      return { status: existing === undefined ? 201 : 200, body: versionJson(c, v) };
    },
    resolveId(id) {
      const prefix = `${workspaceId}/models/`.toLowerCase();
      if (!id.toLowerCase().startsWith(prefix)) return undefined;
      const [name, versions, version, ...extra] = id.slice(prefix.length).split("/");
      if (
        name === undefined ||
        versions?.toLowerCase() !== "versions" ||
        version === undefined ||
        extra.length > 0
      ) {
        return undefined;
      }
      const c = containers.get(name);
      const v = c?.versions.get(version);
      return c === undefined || v === undefined ? undefined : modelVersionOf(c, v);
    },
    async close() {
      await Promise.all(downloads.map((folder) => rm(folder, { recursive: true, force: true })));
      downloads.length = 0;
    },
  };
}

function latestVersion(c: ContainerRecord): string | undefined {
  const versions = [...c.versions.keys()];
  if (versions.length === 0) return undefined;
  if (versions.every((v) => /^\d+$/.test(v)))
    return versions.reduce((a, b) => (Number(b) > Number(a) ? b : a));
  return versions.at(-1);
}
