// "Did you mean" for config messages: a misspelt field or a reference to a name that is not defined is usually a
// typo of one that is, and naming it saves the user a trip to the docs.

/** The accepted field that a misspelling was probably meant as: same letters ignoring case, '_' and '-', or close. */
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

function editDistance(a: string, b: string): number {
  let previous = Array.from({ length: b.length + 1 }, (_, index) => index);
  for (let i = 1; i <= a.length; i++) {
    const current = [i];
    for (let j = 1; j <= b.length; j++) {
      const substitution = (previous[j - 1] ?? 0) + (a[i - 1] === b[j - 1] ? 0 : 1);
      current.push(Math.min((previous[j] ?? 0) + 1, (current[j - 1] ?? 0) + 1, substitution));
    }
    previous = current;
  }
  return previous[b.length] ?? 0;
}
