// Writes the sandbox's credit classifier as real ONNX model folders, one per version, shaped like Azure ML model
// assets: `model.onnx` plus `aml-edge-model.json` (name, version, input columns, output schema, description).
// The versions differ the way real ones do, so a rollout has something true to judge:
//   1  the current model: standardise → linear → sigmoid, the sandbox credit model's base weights;
//   2  a good candidate: retrained on newer data, weights a few per cent off, predictions close to v1;
//   3  a bad candidate, bad in its graph (so it misbehaves in any ONNX runtime, not only in this sandbox):
//      - it fails on part of the inputs: late payments go through a lookup table sized to the training data's range
//        (0–3), so a row with 4 or more late payments makes the Gather index out of bounds and the run fails;
//      - its predictions shift: it was trained with debt-to-income in per cent, and serving sends a fraction
//        (training/serving skew), so the debt penalty all but vanishes and approvals climb;
//      - it is slower: its temperature calibration was exported as a Loop of many tiny multiplications instead of
//        one Mul, which costs milliseconds per request whatever the batch size.
// The output is byte-for-byte deterministic, so the committed folders can be checked against a fresh run:
//   node src/sandbox/models/generate.ts [output-root]     (default: this folder, writing credit/1, credit/2, credit/3)
import { mkdir, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import onnxProto from "onnx-proto";
import { CREDIT_COLUMNS } from "../credit-model.ts";
import type { OnnxModelManifest } from "../onnx-model.ts";

const { onnx } = onnxProto;
type Onnx = typeof onnx;
type NodeProps = Parameters<Onnx["NodeProto"]["create"]>[0] & {};
type TensorProps = Parameters<Onnx["TensorProto"]["create"]>[0] & {};
type ValueInfoProps = Parameters<Onnx["ValueInfoProto"]["create"]>[0] & {};
type GraphProps = Parameters<Onnx["GraphProto"]["create"]>[0] & {};

export const CREDIT_MODEL_NAME = "credit";
export const MODEL_FILE = "model.onnx";
/** The same name `loadOnnxModel` reads (not imported from there: generating should not load ONNX Runtime). */
const MANIFEST_FILE = "aml-edge-model.json";
/** Opset 13: old enough for every maintained ONNX runtime, new enough for Unsqueeze's axes input. */
export const OPSET = 13;
/** IR version 8, the newest the vendored ONNX protobuf definitions (onnx 1.10) describe. */
const IR_VERSION = 8;
const INPUT_NAME = "features";

export interface CreditModelSpec {
  version: string;
  description: string;
  /** Standardisation per column, in `CREDIT_COLUMNS` order: z = (x − mean) / scale. */
  mean: readonly number[];
  scale: readonly number[];
  /** Logistic-regression weights on z, in column order. */
  weights: readonly number[];
  bias: number;
  /** A loan is approved when the probability is strictly above this. */
  threshold: number;
  /**
   * Per-count logit terms for late payments (index = whole late payments, truncated), added through a Gather:
   * out of range (≥ length, or < −length) the ONNX run fails. The linear weight of that column should then be 0.
   */
  latePaymentTable?: readonly number[];
  /** Temperature scaling of the logit, done as `steps` multiplications by temperature^(1/steps) in a Loop. */
  calibration?: { temperature: number; steps: number };
}

const V1: CreditModelSpec = {
  version: "1",
  description:
    "Credit approval, logistic regression on standardised features. The current production model: the sandbox " +
    "credit model's base weights.",
  mean: [60, 0.35, 8, 1, 25, 5],
  scale: [25, 0.15, 6, 1.5, 15, 4],
  weights: [0.9, -1.1, 0.6, -1.3, -0.5, 0.4],
  bias: 0.2,
  threshold: 0.5,
};

const V2: CreditModelSpec = {
  version: "2",
  description:
    "Credit approval, logistic regression retrained on the newer quarter: slightly different standardisation and " +
    "weights, predictions within a few points of version 1. A good candidate.",
  mean: [62, 0.34, 8.3, 1.1, 26, 5.2],
  scale: [26, 0.15, 6.2, 1.5, 15.5, 4],
  weights: [0.93, -1.07, 0.62, -1.34, -0.48, 0.41],
  bias: 0.18,
  threshold: 0.5,
};

const V3: CreditModelSpec = {
  version: "3",
  description:
    "Credit approval with late payments as a per-count lookup (0-3, the training range: a row with 4 or more late " +
    "payments fails the ONNX run), debt-to-income standardised in per cent although requests send a fraction " +
    "(training/serving skew: predictions shift up), and a temperature calibration exported as an 8000-step Loop " +
    "(milliseconds slower per request). A bad candidate.",
  mean: [58, 35, 7.5, 0, 24, 5],
  scale: [24, 14, 6, 1, 15, 4],
  weights: [0.95, -1.2, 0.55, 0, -0.55, 0.45],
  bias: 0.3,
  threshold: 0.5,
  latePaymentTable: [0.7, -0.2, -1.1, -1.9],
  calibration: { temperature: 1.2, steps: 8000 },
};

export const CREDIT_MODEL_SPECS: readonly CreditModelSpec[] = [V1, V2, V3];

/** The probability a spec's graph computes for one row, in float64: the tests hold the ONNX output to it. */
export function referenceProbability(spec: CreditModelSpec, row: readonly number[]): number {
  let logit = spec.bias;
  for (let i = 0; i < CREDIT_COLUMNS.length; i++) {
    logit += (spec.weights[i] ?? 0) * (((row[i] ?? 0) - (spec.mean[i] ?? 0)) / (spec.scale[i] ?? 1));
  }
  if (spec.latePaymentTable !== undefined) {
    const table = spec.latePaymentTable;
    const index = Math.trunc(row[LATE_PAYMENTS] ?? 0);
    const term = table[index < 0 ? index + table.length : index];
    if (term === undefined)
      throw new RangeError(`late payments ${row[LATE_PAYMENTS]} is outside the lookup table`);
    logit += term;
  }
  if (spec.calibration !== undefined) logit *= spec.calibration.temperature;
  return 1 / (1 + Math.exp(-logit));
}

const LATE_PAYMENTS = CREDIT_COLUMNS.indexOf("late_payments_12m");

/** Every file of every version, in memory, by relative path (`credit/<version>/<file>`). */
export function creditModelFiles(): Map<string, Uint8Array> {
  const files = new Map<string, Uint8Array>();
  for (const spec of CREDIT_MODEL_SPECS) {
    const folder = `${CREDIT_MODEL_NAME}/${spec.version}`;
    files.set(`${folder}/${MODEL_FILE}`, buildOnnx(spec));
    files.set(`${folder}/${MANIFEST_FILE}`, new TextEncoder().encode(manifestJson(spec)));
  }
  return files;
}

/** Writes every version under `root` and returns the relative paths written. */
export async function writeCreditModels(root: string): Promise<string[]> {
  const files = creditModelFiles();
  for (const [path, bytes] of files) {
    const target = join(root, path);
    await mkdir(dirname(target), { recursive: true });
    await writeFile(target, bytes);
  }
  return [...files.keys()];
}

function manifest(spec: CreditModelSpec): OnnxModelManifest {
  return {
    name: CREDIT_MODEL_NAME,
    version: spec.version,
    description: spec.description,
    format: "onnx",
    modelFile: MODEL_FILE,
    opset: OPSET,
    // -1: any number of rows, as the graph's symbolic batch dimension.
    input: {
      name: INPUT_NAME,
      type: "float32",
      shape: [-1, CREDIT_COLUMNS.length],
      columns: [...CREDIT_COLUMNS],
    },
    outputs: {
      probability: { name: "probability", type: "float32", shape: [-1, 1] },
      label: { name: "label", type: "int64", shape: [-1, 1] },
    },
  };
}

/** JSON laid out the way `biome format` lays it out, so formatting the repository never changes a generated file. */
function manifestJson(spec: CreditModelSpec): string {
  return `${formatJson(manifest(spec), 0)}\n`;
}

const LINE_WIDTH = 110;

function formatJson(value: unknown, indent: number): string {
  if (value === null || typeof value !== "object") return JSON.stringify(value);
  const pad = " ".repeat(indent + 2);
  if (Array.isArray(value)) {
    const inline = `[${value.map((v) => formatJson(v, 0)).join(", ")}]`;
    // Biome keeps an array on one line when it fits (objects it expands, as written).
    if (!inline.includes("\n") && indent + inline.length <= LINE_WIDTH) return inline;
    return `[\n${value.map((v) => pad + formatJson(v, indent + 2)).join(",\n")}\n${" ".repeat(indent)}]`;
  }
  const entries = Object.entries(value).map(
    ([k, v]) => `${pad}${JSON.stringify(k)}: ${formatJson(v, indent + 2)}`,
  );
  return `{\n${entries.join(",\n")}\n${" ".repeat(indent)}}`;
}

// ---- the ONNX graph ----

const FLOAT = onnx.TensorProto.DataType.FLOAT;
const INT64 = onnx.TensorProto.DataType.INT64;
const BOOL = onnx.TensorProto.DataType.BOOL;

export function buildOnnx(spec: CreditModelSpec): Uint8Array {
  const columns = CREDIT_COLUMNS.length;
  const nodes: NodeProps[] = [];
  const initializers: TensorProps[] = [
    floats("mean", [columns], spec.mean),
    floats("scale", [columns], spec.scale),
    floats("weights", [columns, 1], spec.weights),
    floats("bias", [1], [spec.bias]),
    floats("threshold", [], [spec.threshold]),
  ];
  nodes.push(
    node("Sub", "center", ["features", "mean"], ["centered"]),
    node("Div", "standardise", ["centered", "scale"], ["standardised"]),
    node("MatMul", "linear", ["standardised", "weights"], ["weighted"]),
    node("Add", "add_bias", ["weighted", "bias"], ["linear_logit"]),
  );
  let logit = "linear_logit";

  if (spec.latePaymentTable !== undefined) {
    initializers.push(
      int64s("late_payments_column", [], [LATE_PAYMENTS]),
      floats("late_payment_terms", [spec.latePaymentTable.length], spec.latePaymentTable),
      int64s("unsqueeze_axes", [1], [1]),
    );
    nodes.push(
      node(
        "Gather",
        "late_payments",
        ["features", "late_payments_column"],
        ["late_payments"],
        [intAttr("axis", 1)],
      ),
      // Cast truncates toward zero: 2.7 late payments reads as 2.
      node("Cast", "late_payments_count", ["late_payments"], ["late_payments_index"], [intAttr("to", INT64)]),
      // The fragile step: indices outside [−4, 3] make Gather, and so the whole run, fail.
      node(
        "Gather",
        "late_payment_lookup",
        ["late_payment_terms", "late_payments_index"],
        ["late_term_flat"],
        [intAttr("axis", 0)],
      ),
      node("Unsqueeze", "late_term_column", ["late_term_flat", "unsqueeze_axes"], ["late_term"]),
      node("Add", "add_late_term", [logit, "late_term"], ["lookup_logit"]),
    );
    logit = "lookup_logit";
  }

  if (spec.calibration !== undefined) {
    const { temperature, steps } = spec.calibration;
    initializers.push(int64s("calibration_steps", [], [steps]));
    const body: GraphProps = {
      name: "calibration_step",
      node: [
        node("Identity", "keep_going", ["step_cond_in"], ["step_cond_out"]),
        node("Mul", "scale_step", ["step_logit_in", "step_factor"], ["step_logit_out"]),
      ],
      initializer: [floats("step_factor", [], [temperature ** (1 / steps)])],
      input: [
        valueInfo("step", INT64, []),
        valueInfo("step_cond_in", BOOL, []),
        valueInfo("step_logit_in", FLOAT, ["N", 1]),
      ],
      output: [valueInfo("step_cond_out", BOOL, []), valueInfo("step_logit_out", FLOAT, ["N", 1])],
    };
    nodes.push(
      node(
        "Loop",
        "calibration",
        ["calibration_steps", "", logit],
        ["calibrated_logit"],
        [{ name: "body", type: onnx.AttributeProto.AttributeType.GRAPH, g: body }],
      ),
    );
    logit = "calibrated_logit";
  }

  nodes.push(
    node("Sigmoid", "probability", [logit], ["probability"]),
    node("Greater", "approve", ["probability", "threshold"], ["approved"]),
    node("Cast", "label", ["approved"], ["label"], [intAttr("to", INT64)]),
  );

  const graph: GraphProps = {
    name: `${CREDIT_MODEL_NAME}_v${spec.version}`,
    docString: spec.description,
    node: nodes,
    initializer: initializers,
    input: [valueInfo(INPUT_NAME, FLOAT, ["N", columns])],
    output: [valueInfo("probability", FLOAT, ["N", 1]), valueInfo("label", INT64, ["N", 1])],
  };
  const model = onnx.ModelProto.create({
    irVersion: IR_VERSION,
    opsetImport: [{ domain: "", version: OPSET }],
    // No version or date of the tool: the bytes must not change between runs or machines.
    producerName: "aml-edge",
    domain: "dev.aml-edge.sandbox",
    modelVersion: Number(spec.version),
    docString: spec.description,
    graph,
    metadataProps: [
      { key: "name", value: CREDIT_MODEL_NAME },
      { key: "version", value: spec.version },
      { key: "columns", value: CREDIT_COLUMNS.join(",") },
    ],
  });
  return onnx.ModelProto.encode(model).finish();
}

function node(
  opType: string,
  name: string,
  input: string[],
  output: string[],
  attribute: NonNullable<NodeProps["attribute"]> = [],
): NodeProps {
  return { opType, name, input, output, attribute };
}

function intAttr(name: string, value: number): NonNullable<NodeProps["attribute"]>[number] {
  return { name, type: onnx.AttributeProto.AttributeType.INT, i: value };
}

/** float32 little-endian raw data, as the ONNX format requires whatever the host's byte order. */
function floats(name: string, dims: number[], values: readonly number[]): TensorProps {
  const bytes = new Uint8Array(values.length * 4);
  const view = new DataView(bytes.buffer);
  values.forEach((v, i) => {
    view.setFloat32(i * 4, v, true);
  });
  return { name, dims, dataType: FLOAT, rawData: bytes };
}

function int64s(name: string, dims: number[], values: readonly number[]): TensorProps {
  return { name, dims, dataType: INT64, int64Data: [...values] };
}

function valueInfo(name: string, elemType: number, dims: (number | string)[]): ValueInfoProps {
  return {
    name,
    type: {
      tensorType: {
        elemType,
        shape: { dim: dims.map((d) => (typeof d === "string" ? { dimParam: d } : { dimValue: d })) },
      },
    },
  };
}

if (import.meta.main) {
  const here = dirname(fileURLToPath(import.meta.url));
  const root = process.argv[2] ?? here;
  const written = await writeCreditModels(root);
  for (const path of written) console.log(`wrote ${join(root, path)}`);
}
