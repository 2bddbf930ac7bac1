// Command-line parsing for `aml-edge` commands on node:util parseArgs, with errors that name the bad argument and
// list what the command accepts, and the help text generated from the same option list so the two cannot drift.
import { parseArgs } from "node:util";
import { UsageError } from "./errors.ts";

export interface OptionSpec {
  name: string;
  type: "string" | "boolean";
  short?: string;
  /** The placeholder shown for a string option's value, e.g. `<file>`. */
  placeholder?: string;
  /** A boolean that is on by default and turned off with `--no-<name>`. */
  negatable?: boolean;
  description: string;
}

export type ParsedOptions = Record<string, string | boolean | undefined>;

export function parseCommandArgs(
  command: string,
  args: readonly string[],
  specs: readonly OptionSpec[],
): ParsedOptions {
  const options: Record<string, { type: "string" | "boolean"; short?: string; default?: boolean }> = {};
  for (const spec of specs) {
    options[spec.name] = {
      type: spec.type,
      ...(spec.short !== undefined ? { short: spec.short } : {}),
      ...(spec.negatable ? { default: true } : {}),
    };
  }
  try {
    const { values } = parseArgs({
      args: [...args],
      options,
      strict: true,
      allowPositionals: false,
      allowNegative: true,
    });
    for (const spec of specs) {
      // allowNegative accepts --no-<anything>; only the options documented as negatable may be turned off.
      if (spec.type === "boolean" && !spec.negatable && values[spec.name] === false) {
        throw new UsageError(
          `aml-edge ${command}: --no-${spec.name} is not an option; accepted: ${accepted(specs)}`,
        );
      }
    }
    return values as ParsedOptions;
  } catch (error) {
    if (error instanceof UsageError) throw error;
    const message = error instanceof Error ? (error.message.split("\n")[0] ?? error.message) : String(error);
    throw new UsageError(`aml-edge ${command}: ${message.replace(/\.$/, "")}; accepted: ${accepted(specs)}`);
  }
}

export function requireString(
  command: string,
  options: ParsedOptions,
  spec: OptionSpec,
  example: string,
): string {
  const value = options[spec.name];
  if (typeof value !== "string" || value === "") {
    throw new UsageError(
      `aml-edge ${command} needs --${spec.name} ${spec.placeholder ?? "<value>"}, e.g. ${example}`,
    );
  }
  return value;
}

/** A TCP port for a server on 127.0.0.1; 0 asks the system for a free one. */
export function parsePort(command: string, name: string, value: string): number {
  if (!/^\d{1,5}$/.test(value) || Number(value) > 65_535) {
    throw new UsageError(
      `aml-edge ${command}: --${name} must be a port number from 0 to 65535 (0 picks a free port), got ${JSON.stringify(value)}`,
    );
  }
  return Number(value);
}

function accepted(specs: readonly OptionSpec[]): string {
  return specs.map(usageOf).join(", ");
}

function usageOf(spec: OptionSpec): string {
  if (spec.negatable) return `--no-${spec.name}`;
  return spec.type === "string" ? `--${spec.name} ${spec.placeholder ?? "<value>"}` : `--${spec.name}`;
}

/** The options block of a command's help, one aligned line per option. */
export function formatOptions(specs: readonly OptionSpec[]): string {
  const rows = specs.map((spec) => [
    `${spec.short !== undefined ? `-${spec.short}, ` : "    "}${usageOf(spec)}`,
    spec.description,
  ]);
  const width = Math.max(...rows.map(([left]) => (left ?? "").length));
  return rows.map(([left, right]) => `  ${(left ?? "").padEnd(width)}  ${right}`).join("\n");
}
