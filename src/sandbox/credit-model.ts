// The model the sandbox's scoring servers run: a logistic-regression credit scorer with fixed weights per
// deployment, so that two deployments of "the same model" give measurably different answers, as a new model
// version would. It sits behind the `ScoringModel` interface so that ONNX Runtime can replace it later without the
// scoring server changing.
import { mulberry32 } from "./models/sample-rows.ts";

export interface Prediction {
  approved: boolean;
  probability: number;
}

export interface ScoringModel {
  /** The column names a row must carry, in the order `{"data": [[...]]}` rows use. */
  readonly columns: readonly string[];
  /** Scores a request body already parsed from JSON. Throws `ModelInputError` for input it cannot score. */
  score(input: unknown): Promise<Prediction[]>;
}

/** The input is wrong: the scoring container answers 400, which Azure ML reports to the caller as 424. */
export class ModelInputError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ModelInputError";
  }
}

export const CREDIT_COLUMNS = [
  "income_k",
  "debt_to_income",
  "credit_history_years",
  "late_payments_12m",
  "loan_amount_k",
  "employment_years",
] as const;

/** A row that the base model approves with a probability near 0.8: the demo request body. */
export const SAMPLE_CREDIT_ROW: readonly number[] = [85, 0.25, 9, 0, 20, 6];

interface Feature {
  mean: number;
  scale: number;
  weight: number;
}

/** The base weights: income, history and tenure help; debt, late payments and loan size hurt. */
const BASE_FEATURES: readonly Feature[] = [
  { mean: 60, scale: 25, weight: 0.9 },
  { mean: 0.35, scale: 0.15, weight: -1.1 },
  { mean: 8, scale: 6, weight: 0.6 },
  { mean: 1, scale: 1.5, weight: -1.3 },
  { mean: 25, scale: 15, weight: -0.5 },
  { mean: 5, scale: 4, weight: 0.4 },
];
const BASE_BIAS = 0.2;

export interface CreditModelWeights {
  bias: number;
  weights: readonly number[];
  /** Probability at or above which a loan is approved. */
  threshold: number;
}

/**
 * The weights a deployment runs. Each deployment name perturbs the base weights by up to ±25 % (a hash of the
 * name decides how), so the same name always gives the same model and different names give different models.
 */
export function creditWeightsFor(deployment: string): CreditModelWeights {
  const random = mulberry32(fnv1a(deployment));
  const weights = BASE_FEATURES.map((f) => round(f.weight * (1 + (random() - 0.5) * 0.5), 4));
  return { bias: round(BASE_BIAS + (random() - 0.5) * 0.4, 4), weights, threshold: 0.5 };
}

export function createCreditModel(weights: CreditModelWeights): ScoringModel {
  if (weights.weights.length !== CREDIT_COLUMNS.length) {
    throw new Error(`a credit model needs ${CREDIT_COLUMNS.length} weights, got ${weights.weights.length}`);
  }
  const predictRow = (row: readonly number[]): Prediction => {
    let z = weights.bias;
    BASE_FEATURES.forEach((feature, i) => {
      z += (weights.weights[i] ?? 0) * (((row[i] ?? 0) - feature.mean) / feature.scale);
    });
    const probability = 1 / (1 + Math.exp(-z));
    return { approved: probability >= weights.threshold, probability: round(probability, 6) };
  };
  return {
    columns: CREDIT_COLUMNS,
    async score(input) {
      return readScoringRows(input).map(predictRow);
    },
  };
}

const MAX_ROWS = 10_000;

/**
 * Accepts the two shapes Azure ML MLflow deployments take: `{"input_data": {columns, data}}` and `{"data": rows}`,
 * and returns the rows with their values in `expected` order (named columns may come in any order). Exported so
 * that every sandbox model (the ONNX ones too) accepts and refuses exactly the same bodies.
 */
export function readScoringRows(input: unknown, expected: readonly string[] = CREDIT_COLUMNS): number[][] {
  if (!isObject(input)) throw new ModelInputError("the body must be a JSON object");
  let columns: readonly string[] = expected;
  let data: unknown;
  if ("input_data" in input) {
    const inputData = input.input_data;
    if (!isObject(inputData)) throw new ModelInputError("input_data must be an object with columns and data");
    if (inputData.columns !== undefined) {
      if (!Array.isArray(inputData.columns) || !inputData.columns.every((c) => typeof c === "string")) {
        throw new ModelInputError("input_data.columns must be an array of column names");
      }
      columns = inputData.columns;
    }
    data = inputData.data;
  } else if ("data" in input) {
    data = input.data;
  } else {
    throw new ModelInputError(
      'expected {"input_data": {"columns": [...], "data": [[...]]}} or {"data": [[...]]}',
    );
  }
  const missing = expected.filter((c) => !columns.includes(c));
  if (missing.length > 0) throw new ModelInputError(`missing columns: ${missing.join(", ")}`);
  const order = expected.map((c) => columns.indexOf(c));
  if (!Array.isArray(data)) throw new ModelInputError("data must be an array of rows");
  if (data.length > MAX_ROWS) throw new ModelInputError(`at most ${MAX_ROWS} rows per request`);
  return data.map((row, r) => {
    if (!Array.isArray(row) || row.length !== columns.length) {
      throw new ModelInputError(`row ${r} must be an array of ${columns.length} numbers`);
    }
    return order.map((index) => {
      const value = row[index];
      if (typeof value !== "number" || !Number.isFinite(value)) {
        throw new ModelInputError(`row ${r}, column ${columns[index]}: expected a finite number`);
      }
      return value;
    });
  });
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function round(value: number, digits: number): number {
  const factor = 10 ** digits;
  return Math.round(value * factor) / factor;
}

function fnv1a(text: string): number {
  let hash = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    hash ^= text.charCodeAt(i);
    hash = Math.imul(hash, 0x01000193);
  }
  return hash >>> 0;
}
