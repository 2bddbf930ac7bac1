// "Did you mean" for config messages: a misspelt field or a reference to a name that is not defined is usually a
// typo of one that is, and naming it saves the user a trip to the docs.

/** The accepted name that a misspelling was probably meant as: same letters ignoring case, '_' and '-', or close. */
export function closest(key: string, accepted: readonly string[]): string | undefined {
  const normalise = (text: string) => text.toLowerCase().replace(/[_-]/g, "");
  const exact = accepted.find((candidate) => normalise(candidate) === normalise(key));
  if (exact) return exact;
  let best: { candidate: string; distance: number } | undefined;
  for (const candidate of accepted) {
    const distance = editDistance(normalise(key), normalise(candidate));
    if (distance <= Math.max(1, Math.floor(candidate.length / 4)) && (!best || distance < best.distance)) {
      best = { candidate, distance };
    }
  }
  return best?.candidate;
}

/** Edits between two strings, counting a swap of neighbours as one (optimal string alignment): `ipd` → `idp` is 1. */
function editDistance(a: string, b: string): number {
  const rows: number[][] = [];
  for (let i = 0; i <= a.length; i++) {
    const row = [i];
    for (let j = 1; j <= b.length; j++) {
      if (i === 0) {
        row.push(j);
        continue;
      }
      const above = rows[i - 1] ?? [];
      let best = Math.min(
        (above[j] ?? 0) + 1,
        (row[j - 1] ?? 0) + 1,
        (above[j - 1] ?? 0) + (a[i - 1] === b[j - 1] ? 0 : 1),
      );
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) {
        best = Math.min(best, (rows[i - 2]?.[j - 2] ?? 0) + 1);
      }
      row.push(best);
    }
    rows.push(row);
  }
  return rows[a.length]?.[b.length] ?? 0;
}
