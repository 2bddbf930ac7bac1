// Runs a registered model folder (`model.onnx` + `aml-edge-model.json`, as src/sandbox/models/generate.ts writes
// them) with ONNX Runtime behind the sandbox's `ScoringModel` interface, so the scoring stand-ins answer from the
// deployed model version itself: its weights, its failures and its speed, not a simulation of them.
import { createHash } from "node:crypto";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import * as ort from "onnxruntime-node";
import { z } from "zod";
import { type Prediction, readScoringRows, type ScoringModel } from "./credit-model.ts";

/** The folder that holds the sandbox's generated models (`credit/1`, `credit/2`, `credit/3`). */
export const SANDBOX_MODELS_ROOT = fileURLToPath(new URL("./models/", import.meta.url));

export const MANIFEST_FILE = "aml-edge-model.json";

const tensorShape = z.tuple([z.number().int(), z.number().int()]);
const manifestSchema = z.object({
  name: z.string().min(1),
  version: z.string().min(1),
  description: z.string().optional(),
  format: z.literal("onnx"),
  // A file name inside the folder, never a path out of it.
  modelFile: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]*$/),
  opset: z.number().int().optional(),
  input: z.object({
    name: z.string().min(1),
    type: z.literal("float32"),
    shape: tensorShape.optional(),
    columns: z.array(z.string().min(1)).min(1),
  }),
  outputs: z.object({
    probability: z.object({
      name: z.string().min(1),
      type: z.literal("float32"),
      shape: tensorShape.optional(),
    }),
    label: z.object({ name: z.string().min(1), type: z.literal("int64"), shape: tensorShape.optional() }),
  }),
});
export type OnnxModelManifest = z.infer<typeof manifestSchema>;

/** The folder is not a model this sandbox can serve; a deployment of it fails to provision, with this message. */
export class ModelFolderError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ModelFolderError";
  }
}

/**
 * ONNX Runtime refused to run the model on input the schema accepts: the model itself is at fault. A scoring
 * container answers 500 for that, which Azure ML reports as 424 (the scoring stand-in does the same).
 */
export class ModelRunError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ModelRunError";
  }
}

export interface OnnxScoringModel extends ScoringModel {
  readonly manifest: OnnxModelManifest;
  /** sha256 over the manifest and the model file: equal digests share one session. */
  readonly digest: string;
}

/**
 * Sessions by content digest, not path: the ARM sandbox downloads each deployment's model into a fresh temporary
 * folder, and a version deployed twice should not pay for a second session. A failed load is not kept, so it can be
 * retried once the folder is fixed.
 */
const sessions = new Map<string, Promise<LoadedModel>>();

type LoadedModel = OnnxScoringModel & { release(): Promise<void> };

export async function loadOnnxModel(folder: string): Promise<OnnxScoringModel> {
  const manifestBytes = await readFolderFile(folder, MANIFEST_FILE);
  const manifest = parseManifest(manifestBytes, folder);
  const modelBytes = await readFolderFile(folder, manifest.modelFile);
  const digest = createHash("sha256").update(manifestBytes).update("\0").update(modelBytes).digest("hex");
  let loading = sessions.get(digest);
  if (loading === undefined) {
    loading = createModel(manifest, modelBytes, digest, folder);
    sessions.set(digest, loading);
    loading.catch(() => sessions.delete(digest));
  }
  return loading;
}

/**
 * The loader the ARM sandbox calls for a registered model version: `<root>/<name>/<version>` (the layout of
 * src/sandbox/models), refusing names that would leave `root` and folders whose manifest names another model.
 */
export function modelLoaderFor(
  root: string = SANDBOX_MODELS_ROOT,
): (name: string, version: string) => Promise<OnnxScoringModel> {
  const segment = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;
  return async (name, version) => {
    for (const [what, value] of [
      ["name", name],
      ["version", version],
    ] as const) {
      if (!segment.test(value) || value.includes("..")) {
        throw new ModelFolderError(
          `model ${what} ${JSON.stringify(value)} cannot name a folder under ${root}`,
        );
      }
    }
    const model = await loadOnnxModel(join(root, name, version));
    if (model.manifest.name !== name || model.manifest.version !== version) {
      throw new ModelFolderError(
        `${join(root, name, version)} holds ${model.manifest.name}:${model.manifest.version}, not ${name}:${version}`,
      );
    }
    return model;
  };
}

/** Releases every cached session (ONNX Runtime holds native memory until then). */
export async function releaseOnnxModels(): Promise<void> {
  const loading = [...sessions.values()];
  sessions.clear();
  await Promise.all(
    loading.map(async (model) => {
      const loaded = await model.catch(() => undefined);
      await loaded?.release();
    }),
  );
}

async function createModel(
  manifest: OnnxModelManifest,
  modelBytes: Uint8Array,
  digest: string,
  folder: string,
): Promise<LoadedModel> {
  const label = `${manifest.name}:${manifest.version}`;
  let session: ort.InferenceSession;
  try {
    session = await ort.InferenceSession.create(modelBytes, {
      // One thread each: the models are tiny, and a thread pool per deployment would oversubscribe the machine
      // when a test starts many deployments.
      intraOpNumThreads: 1,
      interOpNumThreads: 1,
      // Fatal only: a failed run reaches the caller as a ModelRunError with ONNX Runtime's message, so its own
      // coloured log line would only say it twice on stderr.
      logSeverityLevel: 4,
    });
  } catch (error) {
    throw new ModelFolderError(
      `${label} (${folder}): ONNX Runtime cannot load ${manifest.modelFile}: ${message(error)}`,
    );
  }
  const inputName = manifest.input.name;
  const probabilityName = manifest.outputs.probability.name;
  const labelName = manifest.outputs.label.name;
  const missing = [
    ...(session.inputNames.includes(inputName) ? [] : [`input ${inputName}`]),
    ...[probabilityName, labelName].filter((n) => !session.outputNames.includes(n)).map((n) => `output ${n}`),
  ];
  if (missing.length > 0) {
    await session.release();
    throw new ModelFolderError(
      `${label}: ${MANIFEST_FILE} names ${missing.join(", ")}, which the graph lacks`,
    );
  }
  const columns = manifest.input.columns;

  return {
    manifest,
    digest,
    columns,
    async score(input): Promise<Prediction[]> {
      const rows = readScoringRows(input, columns);
      if (rows.length === 0) return [];
      const data = new Float32Array(rows.length * columns.length);
      rows.forEach((row, r) => {
        data.set(row, r * columns.length);
      });
      const features = new ort.Tensor("float32", data, [rows.length, columns.length]);
      let outputs: ort.InferenceSession.ReturnType;
      try {
        outputs = await session.run({ [inputName]: features });
      } catch (error) {
        throw new ModelRunError(`${label} failed: ${message(error)}`);
      }
      const probabilities = outputs[probabilityName]?.data;
      const labels = outputs[labelName]?.data;
      if (
        !(probabilities instanceof Float32Array) ||
        !(labels instanceof BigInt64Array) ||
        probabilities.length !== rows.length ||
        labels.length !== rows.length
      ) {
        throw new ModelRunError(
          `${label} returned outputs of the wrong type or length for ${rows.length} rows`,
        );
      }
      return rows.map((_, r) => {
        const probability = probabilities[r] ?? Number.NaN;
        if (!Number.isFinite(probability))
          throw new ModelRunError(`${label} returned ${probability} for row ${r}`);
        return { approved: labels[r] === 1n, probability: Math.round(probability * 1e6) / 1e6 };
      });
    },
    release: () => session.release(),
  };
}

function parseManifest(bytes: Uint8Array, folder: string): OnnxModelManifest {
  let json: unknown;
  try {
    json = JSON.parse(new TextDecoder().decode(bytes));
  } catch (error) {
    throw new ModelFolderError(`${join(folder, MANIFEST_FILE)} is not JSON: ${message(error)}`);
  }
  const parsed = manifestSchema.safeParse(json);
  if (!parsed.success) {
    const issues = parsed.error.issues.map((i) => `${i.path.join(".") || "(root)"}: ${i.message}`).join("; ");
    throw new ModelFolderError(`${join(folder, MANIFEST_FILE)} is not a model manifest: ${issues}`);
  }
  return parsed.data;
}

async function readFolderFile(folder: string, file: string): Promise<Uint8Array> {
  try {
    return await readFile(join(folder, file));
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === "ENOENT" || code === "ENOTDIR") {
      throw new ModelFolderError(`${folder} is not a model folder: it has no ${file}`);
    }
    throw error;
  }
}

function message(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
