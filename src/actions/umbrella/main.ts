// The umbrella action (action.yml at the repository root): one `uses:` line for every aml-edge action, with `command`
// choosing which. The chosen action then reads its own inputs exactly as its own action.yml would pass them.
import * as core from "@actions/core";
import { ConfigurationError, reportFailure } from "../common/errors.ts";
import { actionsInputs, type InputReader } from "../common/inputs.ts";
import { run as deployModel } from "../deploy-model/main.ts";

export const COMMANDS: Readonly<Record<string, () => Promise<void>>> = {
  "deploy-model": () => deployModel(),
};

/** Never throws; the step's outcome is set through @actions/core. */
export async function run(
  readInput: InputReader = actionsInputs,
  commands: Readonly<Record<string, () => Promise<void>>> = COMMANDS,
): Promise<void> {
  let action: (() => Promise<void>) | undefined;
  try {
    const command = readInput("command").trim();
    action = Object.hasOwn(commands, command) ? commands[command] : undefined;
    if (action === undefined) {
      throw new ConfigurationError(
        `Input \`command\`: ${command === "" ? "is required" : `${JSON.stringify(command)} is not a command`}; ` +
          `accepted: ${Object.keys(commands).join(", ")}.`,
      );
    }
  } catch (error) {
    reportFailure(error, core);
    return;
  }
  // Each action reports its own outcome.
  await action();
}
