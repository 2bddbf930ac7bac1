// The one logging surface the Azure and action code write to, so the logic takes it as an argument (STYLE.md 3):
// the action hands in one backed by @actions/core, tests hand in a recorder.
import * as core from "@actions/core";

export interface Logger {
  debug(message: string): void;
  info(message: string): void;
  warning(message: string): void;
  /** A collapsed group in the job log; everything logged until endGroup() sits inside it. */
  startGroup(title: string): void;
  endGroup(): void;
}

export const actionsLogger: Logger = {
  debug: (message) => core.debug(message),
  info: (message) => core.info(message),
  warning: (message) => core.warning(message),
  startGroup: (title) => core.startGroup(title),
  endGroup: () => core.endGroup(),
};

export const nullLogger: Logger = {
  debug: () => {},
  info: () => {},
  warning: () => {},
  startGroup: () => {},
  endGroup: () => {},
};
