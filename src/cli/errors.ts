// How the `aml-edge` command tells a user's mistake from a failure: bad arguments and a config or environment to
// fix are reported as what to fix, with their own exit codes; anything else is a failure reported with its cause.
import { ConfigError, KeySnapshotError } from "../config/index.ts";

export const EXIT_CODES = {
  ok: 0,
  failure: 1,
  /** The command line is wrong. */
  usage: 2,
  /** The config file, a secret in the environment or a port needs fixing. */
  setup: 3,
} as const;

/** The command line is wrong: the message names the argument and what is accepted. */
export class UsageError extends Error {
  override name = "UsageError";
}

/** The config file or the environment needs fixing; the message says how. */
export class SetupError extends Error {
  override name = "SetupError";
}

export function exitCodeFor(error: unknown): number {
  if (error instanceof UsageError) return EXIT_CODES.usage;
  if (error instanceof SetupError || error instanceof ConfigError || error instanceof KeySnapshotError) {
    return EXIT_CODES.setup;
  }
  return EXIT_CODES.failure;
}

/** The message of anything thrown, with its causes; non-Error throws are not dropped. */
export function errorMessage(error: unknown): string {
  if (!(error instanceof Error)) return String(error);
  let message = error.message;
  let cause = error.cause;
  while (cause instanceof Error) {
    message += ` (cause: ${cause.message})`;
    cause = cause.cause;
  }
  return message;
}
