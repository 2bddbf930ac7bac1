// Entry of dist/main/index.js, the umbrella action (action.yml at the repository root): `command` picks the action,
// which then reads its own inputs exactly as its own action.yml would have passed them.
import * as core from "@actions/core";
import { run as deployModel } from "./deploy-model/main.ts";

const COMMANDS: Record<string, () => Promise<void>> = { "deploy-model": deployModel };

const command = core.getInput("command").trim();
const action = COMMANDS[command];
if (action === undefined) {
  core.setFailed(
    `Input \`command\`: ${command === "" ? "is required" : `${JSON.stringify(command)} is not a command`}; ` +
      `accepted: ${Object.keys(COMMANDS).join(", ")}.`,
  );
} else {
  await action();
}
