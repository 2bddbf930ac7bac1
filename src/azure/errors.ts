// How the Azure plane tells a user's mistake from a failure. A ConfigurationError is something the user fixes (a
// federated credential, a workflow's permissions, an input): it is reported as what to fix, without a stack. Anything
// else is a failure, reported with its cause.

/** The user's setup needs fixing; the message says what and how. */
export class ConfigurationError extends Error {
  override name = "ConfigurationError";
}

/** The message of anything thrown, with its causes; non-Error throws are not dropped. */
export function errorMessage(error: unknown): string {
  if (!(error instanceof Error)) return String(error);
  let message = error.message;
  let cause: unknown = error.cause;
  // Bounded: a cause chain is short, and a cycle must not loop forever.
  for (let depth = 0; cause !== undefined && depth < 10; depth++) {
    message += ` (cause: ${cause instanceof Error ? cause.message : String(cause)})`;
    cause = cause instanceof Error ? cause.cause : undefined;
  }
  return message;
}
