// What a user sees when their gateway config is wrong: every problem at once, each with where it is (file, line,
// column, field path), what is wrong and what would be accepted, so the file can be fixed from the message alone.
// A ConfigError is a user's mistake to report, never a crash to debug.

export interface ConfigIssue {
  /** Where in the config, e.g. `routes[0].deployments[1].weight`; empty for the document itself. */
  path: string;
  /** `<what is wrong>; <what is accepted>`. */
  message: string;
  /** 1-based, when the config came from text. */
  line?: number;
  column?: number;
  /** A stable identifier for the kind of problem, e.g. `unknown-field` or `audience-missing`. */
  code: string;
}

export type PathSegment = string | number;

export class ConfigError extends Error {
  override name = "ConfigError";
  /** The file name or label the config was read from, e.g. `src/examples/gateway.yaml`. */
  readonly source: string;
  /** Sorted by position, so the message reads top to bottom like the file. */
  readonly issues: readonly ConfigIssue[];

  constructor(source: string, issues: readonly ConfigIssue[]) {
    const sorted = sortIssues(issues);
    super(formatConfigIssues(source, sorted));
    this.source = source;
    this.issues = sorted;
  }
}

/** One line per issue: `<source>:<line>:<col> <path>: <problem>; <what is accepted>`. */
export function formatConfigIssues(source: string, issues: readonly ConfigIssue[]): string {
  if (issues.length === 0) return `${source}: the gateway config is invalid`;
  return issues.map((issue) => formatConfigIssue(source, issue)).join("\n");
}

export function formatConfigIssue(source: string, issue: ConfigIssue): string {
  const where = issue.line === undefined ? source : `${source}:${issue.line}:${issue.column ?? 1}`;
  return `${where} ${issue.path === "" ? "(top level)" : issue.path}: ${issue.message}`;
}

function sortIssues(issues: readonly ConfigIssue[]): ConfigIssue[] {
  // Array.prototype.sort is stable, so issues without a position keep their order, after the located ones.
  return [...issues].sort(
    (a, b) =>
      (a.line ?? Number.POSITIVE_INFINITY) - (b.line ?? Number.POSITIVE_INFINITY) ||
      (a.column ?? 0) - (b.column ?? 0),
  );
}

const PLAIN_KEY = /^[A-Za-z_][A-Za-z0-9_-]*$/;

/** `["routes", 0, "weight"]` → `routes[0].weight`; keys that would be ambiguous are quoted: `claims["https://x"]`. */
export function formatPath(segments: readonly PathSegment[]): string {
  let out = "";
  for (const segment of segments) {
    if (typeof segment === "number") out += `[${segment}]`;
    else if (PLAIN_KEY.test(segment)) out += out === "" ? segment : `.${segment}`;
    else out += `[${JSON.stringify(segment)}]`;
  }
  return out;
}

const PATH_TOKEN = /\.?([A-Za-z_][A-Za-z0-9_-]*)|\[(\d+)\]|\[("(?:[^"\\]|\\.)*")\]/y;

/** The inverse of formatPath; undefined for a string formatPath could not have produced. */
export function parsePath(path: string): PathSegment[] | undefined {
  const segments: PathSegment[] = [];
  PATH_TOKEN.lastIndex = 0;
  while (PATH_TOKEN.lastIndex < path.length) {
    const match = PATH_TOKEN.exec(path);
    if (!match) return undefined;
    const [, key, index, quoted] = match;
    if (key !== undefined) segments.push(key);
    else if (index !== undefined) segments.push(Number(index));
    else if (quoted !== undefined) segments.push(JSON.parse(quoted) as string);
  }
  return segments;
}
