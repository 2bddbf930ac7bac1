// Reads a gateway config: YAML (or JSON, which is YAML) text → schema → reference checks, reporting every problem
// at once with its line and column. `loadGatewayConfig` adds the security lint, with positions too, for the
// commands that read a config file and then publish or serve it.
import { ConfigError, type ConfigIssue, formatPath, type PathSegment, parsePath } from "./errors.ts";
import { type LintFinding, type LintOptions, lintConfig } from "./lint.ts";
import { checkReferences } from "./references.ts";
import { type GatewayConfig, gatewayConfigSchema } from "./schema.ts";
import { describeSchemaIssues, schemaErrorMap } from "./schema-issues.ts";
import { type Position, readYamlSource } from "./yaml-source.ts";

type Locate = (path: readonly PathSegment[], at?: "key" | "value") => Position | undefined;

/** Parses and validates config text; throws a ConfigError listing every problem, with line and column. */
export function parseGatewayConfig(text: string, source: string): GatewayConfig {
  const yaml = readYamlSource(text);
  if (yaml.issues.length > 0) throw new ConfigError(source, yaml.issues);
  return validate(yaml.value, source, yaml.locate);
}

/** Validates an already-parsed value (e.g. from JSON.parse); issues name paths but no positions. */
export function parseGatewayConfigObject(value: unknown, source: string): GatewayConfig {
  return validate(value, source, undefined);
}

export interface LoadedGatewayConfig {
  config: GatewayConfig;
  /** Lint warnings, each with its position; errors are thrown instead. */
  warnings: (LintFinding & Partial<Position>)[];
}

/** parseGatewayConfig, then the security lint: lint errors are thrown as a ConfigError, with positions. */
export function loadGatewayConfig(text: string, source: string, options: LintOptions): LoadedGatewayConfig {
  const yaml = readYamlSource(text);
  if (yaml.issues.length > 0) throw new ConfigError(source, yaml.issues);
  const config = validate(yaml.value, source, yaml.locate);
  const findings = lintConfig(config, options).map((finding) => ({
    ...finding,
    ...locateString(finding.path, yaml.locate),
  }));
  const errors = findings.filter((finding) => finding.severity === "error");
  if (errors.length > 0) {
    throw new ConfigError(
      source,
      errors.map(({ code, path, message, line, column }) =>
        positioned({ code, path, message }, { line, column }),
      ),
    );
  }
  return { config, warnings: findings.filter((finding) => finding.severity === "warning") };
}

function validate(value: unknown, source: string, locate: Locate | undefined): GatewayConfig {
  const parsed = gatewayConfigSchema.safeParse(value, { error: schemaErrorMap });
  const issues: ConfigIssue[] = [];
  if (!parsed.success) {
    for (const issue of describeSchemaIssues(parsed.error.issues, value)) {
      issues.push(
        positioned(
          { path: formatPath(issue.segments), code: issue.code, message: issue.message },
          locate?.(issue.segments, issue.at),
        ),
      );
    }
  }
  for (const issue of checkReferences(value)) {
    issues.push(
      positioned(
        { path: formatPath(issue.segments), code: issue.code, message: issue.message },
        locate?.(issue.segments),
      ),
    );
  }
  if (issues.length > 0 || !parsed.success) throw new ConfigError(source, issues);
  return parsed.data;
}

function locateString(path: string, locate: Locate): Partial<Position> {
  const segments = parsePath(path);
  return (segments && locate(segments)) ?? {};
}

/** Adds line and column only when known: with exactOptionalPropertyTypes an absent position is no key at all. */
function positioned(
  issue: ConfigIssue,
  position: { line?: number | undefined; column?: number | undefined } | undefined,
): ConfigIssue {
  return position?.line === undefined || position.column === undefined
    ? issue
    : { ...issue, line: position.line, column: position.column };
}
