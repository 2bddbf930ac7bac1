// Deterministic credit applications for comparing model versions on the same inputs (a golden set): the same seed
// always gives the same rows, so a paired v1/v2/v3 comparison is reproducible in tests and in canary runs.
// The distributions are rough but shaped like real applicant data: skewed incomes, most applicants with no late
// payments and a thin tail with many, which is where a model trained on a clipped range breaks (credit v3).

/** Rows in `CREDIT_COLUMNS` order: income_k, debt_to_income, credit_history_years, late_payments_12m, loan_amount_k, employment_years. */
export function creditSampleRows(count: number, seed = 20_261_125): number[][] {
  const random = mulberry32(seed);
  const normal = () => {
    // Box–Muller; 1 - random() keeps the logarithm finite.
    const u = 1 - random();
    const v = random();
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
  };
  const rows: number[][] = [];
  for (let i = 0; i < count; i++) {
    const income = clamp(Math.exp(4.1 + 0.45 * normal()), 12, 400);
    const debtToIncome = clamp(0.33 + 0.14 * normal(), 0.02, 0.95);
    const history = clamp(9 + 6 * normal(), 0, 45);
    const late = latePayments(random());
    const loan = clamp(Math.exp(3 + 0.6 * normal()), 1, 250);
    const employment = clamp(Math.min(history + 2, 6 + 5 * normal()), 0, 45);
    rows.push([
      round(income, 1),
      round(debtToIncome, 3),
      round(history, 1),
      late,
      round(loan, 1),
      round(employment, 1),
    ]);
  }
  return rows;
}

/** Late payments in the last 12 months: 0 for 55 %, then a geometric tail up to 12 (P(4 or more) = 0.45 · 0.55³ ≈ 7.5 %). */
function latePayments(u: number): number {
  if (u < 0.55) return 0;
  let count = 1;
  let p = (u - 0.55) / 0.45;
  while (p > 0.45 && count < 12) {
    count += 1;
    p = (p - 0.45) / 0.55;
  }
  return count;
}

function clamp(value: number, low: number, high: number): number {
  return Math.min(high, Math.max(low, value));
}

function round(value: number, digits: number): number {
  const factor = 10 ** digits;
  return Math.round(value * factor) / factor;
}

/** mulberry32: small, fast and identical on every platform, which is all a fixed sample needs. */
export function mulberry32(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
