// The umbrella action (action.yml at the repository root): one `uses:` line for every aml-edge action, with `command`
// choosing which. The chosen action then reads its own inputs exactly as its own action.yml would pass them. The
// umbrella declares a post step for the actions that have one (route and rotate-keys delete their minted token there);
// the main step marks the step's state, so the post run of the same bundle knows to run the chosen action's post.
import * as core from "@actions/core";
import { IS_POST_STATE } from "../common/cloudflare.ts";
import { post as deleteMintedTokens } from "../common/cloudflare-post.ts";
import { ConfigurationError, reportFailure } from "../common/errors.ts";
import { actionsInputs, type InputReader } from "../common/inputs.ts";
import { run as deployModel } from "../deploy-model/main.ts";
import { run as rotateKeys } from "../rotate-keys/main.ts";
import { run as route } from "../route/main.ts";

export const COMMANDS: Readonly<Record<string, () => Promise<void>>> = {
  "deploy-model": () => deployModel(),
  route: () => route(),
  "rotate-keys": () => rotateKeys(),
};

/** The post steps of the commands that have one. */
export const POST_COMMANDS: Readonly<Record<string, () => Promise<void>>> = {
  route: () => deleteMintedTokens(),
  "rotate-keys": () => deleteMintedTokens(),
};

export interface StepState {
  get(name: string): string;
  save(name: string, value: string): void;
}

const actionsState: StepState = {
  get: (name) => core.getState(name),
  save: (name, value) => core.saveState(name, value),
};

/** Never throws; the step's outcome is set through @actions/core. */
export async function run(
  readInput: InputReader = actionsInputs,
  commands: Readonly<Record<string, () => Promise<void>>> = COMMANDS,
  postCommands: Readonly<Record<string, () => Promise<void>>> = POST_COMMANDS,
  state: StepState = actionsState,
): Promise<void> {
  const isPost = state.get(IS_POST_STATE) === "true";
  if (isPost) {
    // The main step already reported a bad command; the post step only cleans up after a good one.
    const command = readInput("command").trim();
    const cleanup = Object.hasOwn(postCommands, command) ? postCommands[command] : undefined;
    if (cleanup !== undefined) await cleanup();
    return;
  }
  state.save(IS_POST_STATE, "true");
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
