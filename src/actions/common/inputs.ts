// Reading an action's inputs once into one typed settings object (STYLE.md 2, 4). Inputs arrive as strings (empty when
// not set); a zod schema keyed by the kebab-case input names turns them into settings, and every problem is reported
// together, each naming the input, what is wrong with the value and what is accepted, before anything else runs.
import * as core from "@actions/core";
import type { z } from "zod";
import { ConfigurationError } from "./errors.ts";

/** Reads one input by its action.yml name; "" when the workflow did not set it (core.getInput's contract). */
export type InputReader = (name: string) => string;

export const actionsInputs: InputReader = (name) => core.getInput(name);

/** The named inputs, trimmed, with unset or blank ones as undefined so schema defaults apply. */
export function readInputs<const Names extends readonly string[]>(
  names: Names,
  read: InputReader,
): Record<Names[number], string | undefined> {
  const raw: Record<string, string | undefined> = {};
  for (const name of names) {
    const value = read(name).trim();
    raw[name] = value === "" ? undefined : value;
  }
  return raw as Record<Names[number], string | undefined>;
}

/** The settings, or a ConfigurationError listing every bad input. */
export function parseInputs<Schema extends z.ZodType>(
  schema: Schema,
  raw: Record<string, string | undefined>,
  what: string,
): z.output<Schema> {
  const result = schema.safeParse(raw);
  if (result.success) return result.data;
  const lines = result.error.issues.map((issue) => {
    const input = issue.path.length > 0 ? String(issue.path[0]) : undefined;
    if (input === undefined) return `- ${issue.message}`;
    const value = raw[input];
    if (value === undefined && issue.code === "invalid_type") {
      return `- Input \`${input}\` is required: ${issue.message}`;
    }
    return `- Input \`${input}\`: ${issue.message}${value === undefined ? "" : ` (got ${JSON.stringify(value)})`}`;
  });
  const plural = lines.length === 1 ? "input needs" : "inputs need";
  return raiseConfiguration(
    `${what}: ${lines.length} ${plural} fixing before anything is changed:\n${lines.join("\n")}`,
  );
}

function raiseConfiguration(message: string): never {
  throw new ConfigurationError(message);
}
