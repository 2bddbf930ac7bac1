// How every action reports how it ended (STYLE.md 5): a ConfigurationError is the user's to fix and is reported as
// just that, without a stack; anything else is a failure, reported with its causes so nothing is lost.
import { ConfigurationError, errorMessage } from "../../azure/errors.ts";

export { ConfigurationError, errorMessage };

export interface FailureReporter {
  setFailed(message: string): void;
  error(message: string): void;
  debug(message: string): void;
}

/** Marks the step failed, saying whether the user has something to fix or something broke. */
export function reportFailure(error: unknown, core: FailureReporter): void {
  if (error instanceof ConfigurationError) {
    core.setFailed(error.message);
    return;
  }
  // The stack goes to the debug log: useful when re-run with debug logging, noise for everyone else.
  if (error instanceof Error && error.stack !== undefined) core.debug(error.stack);
  core.setFailed(`${errorMessage(error)}`);
}
