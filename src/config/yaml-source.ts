// Reads config text with the `yaml` package's document API rather than a plain parse, so that a problem found later
// (by the schema, the reference checks or the security lint) can be pointed at by line and column in the file.
// Strict on purpose: a duplicate key, a second document or an unknown tag is an error, never a silent choice.
import { isAlias, isMap, isPair, isScalar, isSeq, LineCounter, type Node, parseDocument } from "yaml";
import { type ConfigIssue, formatPath, type PathSegment } from "./errors.ts";

export interface Position {
  line: number;
  column: number;
}

export interface YamlSource {
  /** The document as plain data; undefined when the text is not usable YAML (see `issues`). */
  value: unknown;
  issues: ConfigIssue[];
  /** Where a path is in the file: the node itself, or the nearest enclosing one when the path is absent. */
  locate(path: readonly PathSegment[], at?: "key" | "value"): Position | undefined;
}

/** Aliases may repeat a block; many of them can blow a small file up into a huge value (a "billion laughs"). */
const MAX_ALIAS_COUNT = 100;

export function readYamlSource(text: string): YamlSource {
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { lineCounter, prettyErrors: false, uniqueKeys: true, version: "1.2" });
  const position = (offset: number): Position => {
    const { line, col } = lineCounter.linePos(offset);
    return { line, column: col };
  };

  const issues: ConfigIssue[] = [];
  for (const error of [...doc.errors, ...doc.warnings]) {
    const path = pathAt(doc.contents, error.pos[0]);
    issues.push({
      path: formatPath(path),
      ...position(error.pos[0]),
      ...describeYamlError(error.code, error.message, path.at(-1)),
    });
  }

  const locate = (path: readonly PathSegment[], at: "key" | "value" = "value"): Position | undefined => {
    let node: unknown = doc.contents;
    let keyNode: unknown;
    let found: unknown = node;
    for (const segment of path) {
      if (isAlias(node)) node = node.resolve(doc);
      keyNode = undefined;
      if (isMap(node)) {
        const pair = node.items.find((item) => isPair(item) && scalarKey(item.key) === String(segment));
        if (!pair) break;
        keyNode = pair.key;
        node = pair.value ?? pair.key;
      } else if (isSeq(node) && typeof segment === "number") {
        node = node.items[segment];
        if (node === undefined) break;
      } else {
        break;
      }
      found = at === "key" && keyNode !== undefined ? keyNode : node;
    }
    const range = (found as Node | null | undefined)?.range;
    return range ? position(range[0]) : position(0);
  };

  if (issues.length > 0) return { value: undefined, issues, locate };
  try {
    return { value: doc.toJS({ maxAliasCount: MAX_ALIAS_COUNT }), issues, locate };
  } catch (error) {
    // toJS throws only for alias abuse (too many, or a reference to an anchor that is not defined).
    issues.push({
      path: "",
      code: "yaml-alias",
      message: `${error instanceof Error ? error.message : String(error)}; use at most ${MAX_ALIAS_COUNT} aliases (*name) and define each anchor (&name) before its use`,
      ...position(0),
    });
    return { value: undefined, issues, locate };
  }
}

/** The path of the innermost node around an offset, so that a syntax error also names the field it is in. */
function pathAt(root: unknown, offset: number): PathSegment[] {
  const path: PathSegment[] = [];
  const contains = (node: unknown): boolean => {
    const range = (node as Node | null | undefined)?.range;
    return range != null && range[0] <= offset && offset < Math.max(range[1], range[0] + 1);
  };
  let node = root;
  for (;;) {
    if (isMap(node)) {
      const pair = node.items.find((item) => contains(item.key) || contains(item.value));
      const key = pair && scalarKey(pair.key);
      if (!pair || key === undefined) break;
      path.push(key);
      if (contains(pair.key)) break;
      node = pair.value;
    } else if (isSeq(node)) {
      const index = node.items.findIndex(contains);
      if (index < 0) break;
      path.push(index);
      node = node.items[index];
    } else {
      break;
    }
  }
  return path;
}

function scalarKey(key: unknown): string | undefined {
  if (isScalar(key)) return String(key.value);
  return undefined;
}

function describeYamlError(
  code: string,
  message: string,
  key: PathSegment | undefined,
): { code: string; message: string } {
  switch (code) {
    case "DUPLICATE_KEY":
      return {
        code: "duplicate-key",
        message: `the key ${key === undefined ? "here" : JSON.stringify(String(key))} appears twice in the same mapping; each key may appear once (YAML would not say which value wins), so keep one and delete the other`,
      };
    case "MULTIPLE_DOCS":
      return {
        code: "yaml-multiple-documents",
        message:
          "the file holds more than one YAML document ('---'); a gateway config is exactly one document",
      };
    case "TAG_RESOLVE_FAILED":
    case "BAD_TAG":
      return {
        code: "yaml-tag",
        message: `${message}; use plain YAML values (strings, numbers, booleans, lists, mappings) without tags (!name)`,
      };
    default:
      return {
        code: "yaml-syntax",
        message: `${message.replace(/\.$/, "")} (YAML ${code}); the file must be valid YAML: check indentation, quoting and matching brackets here`,
      };
  }
}
