// The gateway config's public API: read and validate (load), check for security mistakes (lint), pack for a Worker
// version (compile, snapshot). Runtime-agnostic, so the actions, the CLI and the Worker share it.
export { type CompileOptions, canonicalJson, compileConfigBundle, configVersion } from "./compile.ts";
export {
  ConfigError,
  type ConfigIssue,
  formatConfigIssue,
  formatConfigIssues,
  formatPath,
  type PathSegment,
  parsePath,
} from "./errors.ts";
export {
  assertConfigSafe,
  findingToIssue,
  LINT_CODES,
  type LintCode,
  type LintFinding,
  type LintMode,
  type LintOptions,
  lintConfig,
} from "./lint.ts";
export {
  type LoadedGatewayConfig,
  loadGatewayConfig,
  parseGatewayConfig,
  parseGatewayConfigObject,
} from "./load.ts";
export * from "./schema.ts";
export { type FetchKeySnapshotsOptions, fetchKeySnapshots, KeySnapshotError } from "./snapshot.ts";
