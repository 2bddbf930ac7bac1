// A model folder in the repository, and where its files go in the workspace's default datastore. Registering a model
// over ARM only stores a pointer (modelUri) into a datastore, so the files are uploaded first, under a prefix named by
// a digest of their contents: the same folder always lands at the same place, a changed folder never overwrites what
// an earlier version points at, and a re-run of the same commit can reuse the version it registered.
import { createHash } from "node:crypto";
import { readdir, readFile, stat } from "node:fs/promises";
import { basename, join, relative, sep } from "node:path";
import { BlobServiceClient, StorageSharedKeyCredential } from "@azure/storage-blob";
import { ConfigurationError } from "./errors.ts";

export interface ModelFile {
  /** Relative to the folder, with forward slashes. */
  path: string;
  data: Buffer;
}

export interface ModelFolder {
  folder: string;
  files: ModelFile[];
  /** sha256 over every file's path and contents, hex. */
  digest: string;
  /** `name` from aml-edge-model.json, when the folder has one. */
  declaredName: string | undefined;
  /** Azure ML's model type: an MLmodel file at the top makes it an MLflow model, which deploys without code. */
  modelType: "mlflow_model" | "custom_model";
}

/** Reads every file under `folder`; a missing or empty folder is the user's to fix. */
export async function readModelFolder(folder: string, input = "model"): Promise<ModelFolder> {
  let info: Awaited<ReturnType<typeof stat>>;
  try {
    info = await stat(folder);
  } catch {
    throw new ConfigurationError(
      `Input \`${input}\`: ${folder} does not exist. Give a model folder in the repository (checked out with ` +
        "actions/checkout) or a registered model as azureml:NAME:VERSION.",
    );
  }
  if (!info.isDirectory()) {
    throw new ConfigurationError(
      `Input \`${input}\`: ${folder} is a file; give the folder that holds the model's files (they are uploaded and ` +
        "registered together), or a registered model as azureml:NAME:VERSION.",
    );
  }
  const paths = (await readdir(folder, { recursive: true, withFileTypes: true }))
    .filter((entry) => entry.isFile())
    .map((entry) => relative(folder, join(entry.parentPath, entry.name)).split(sep).join("/"))
    // A fixed order makes the digest a function of the contents only.
    .sort();
  if (paths.length === 0) {
    throw new ConfigurationError(
      `Input \`${input}\`: the folder ${folder} holds no files to register as a model.`,
    );
  }
  const hash = createHash("sha256");
  const files: ModelFile[] = [];
  for (const path of paths) {
    const data = await readFile(join(folder, path));
    files.push({ path, data });
    hash.update(`${path}\0${data.length}\0`);
    hash.update(data);
  }
  return {
    folder,
    files,
    digest: hash.digest("hex"),
    declaredName: await declaredName(files),
    modelType: paths.includes("MLmodel") ? "mlflow_model" : "custom_model",
  };
}

async function declaredName(files: ModelFile[]): Promise<string | undefined> {
  const manifest = files.find((file) => file.path === "aml-edge-model.json");
  if (manifest === undefined) return undefined;
  try {
    const parsed: unknown = JSON.parse(manifest.data.toString("utf8"));
    const name = (parsed as { name?: unknown }).name;
    return typeof name === "string" && name !== "" ? name : undefined;
  } catch {
    return undefined;
  }
}

/** The folder's own name, the fallback model name. */
export function folderName(folder: string): string {
  return basename(folder.replace(/[\\/]+$/, ""));
}

/** Where a model version's files sit inside the datastore's container. */
export function contentPrefix(modelName: string, digest: string): string {
  return `aml-edge/models/${modelName}/${digest.slice(0, 32)}`;
}

/** The blob service a datastore lives on: `<protocol>://<account>.blob.<endpoint>`, unless configured otherwise. */
export function blobServiceUrl(
  datastore: { accountName: string; endpoint?: string | undefined; protocol?: string | undefined },
  override: string | undefined,
): string {
  // An emulator (Azurite, the sandbox) answers on a path-style URL that no datastore field can express.
  if (override !== undefined) return override.replace(/\/+$/, "");
  return `${datastore.protocol ?? "https"}://${datastore.accountName}.blob.${datastore.endpoint ?? "core.windows.net"}`;
}

export interface BlobTarget {
  serviceUrl: string;
  accountName: string;
  accountKey: string;
  container: string;
}

/** Uploads into one datastore container; an interface so tests need no storage service. */
export interface BlobUploader {
  upload(path: string, data: Buffer): Promise<void>;
}

export type BlobUploaderFactory = (target: BlobTarget) => BlobUploader;

export const storageBlobUploader: BlobUploaderFactory = (target) => {
  const service = new BlobServiceClient(
    target.serviceUrl,
    new StorageSharedKeyCredential(target.accountName, target.accountKey),
  );
  const container = service.getContainerClient(target.container);
  return {
    async upload(path, data) {
      await container.getBlockBlobClient(path).uploadData(data);
    },
  };
};
