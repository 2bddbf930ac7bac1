// Runs a bundled action the way the GitHub runner runs it (STYLE.md 7): `node dist/<name>/index.js` in a child process
// with the inputs as INPUT_<NAME>, outputs, summary and state through the files GITHUB_OUTPUT, GITHUB_STEP_SUMMARY and
// GITHUB_STATE, and for the post step the main step's state as STATE_<name>. The child is awaited without blocking
// this process, so a test can drive traffic while the step runs.
import { spawn } from "node:child_process";
import { mkdtemp, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";

/** The workflow variables of the job every e2e step runs in. */
export const JOB_ENV: Readonly<Record<string, string>> = {
  GITHUB_SHA: "0123456789abcdef0123456789abcdef01234567",
  GITHUB_SERVER_URL: "https://github.com",
  GITHUB_REPOSITORY: "octo/models",
  GITHUB_RUN_ID: "42",
  GITHUB_RUN_ATTEMPT: "1",
};

export interface StepRun {
  bundle: string;
  /** By their action.yml names. */
  inputs: Record<string, string>;
  /** What the job adds to the step's environment (the OIDC request variables, NODE_EXTRA_CA_CERTS). */
  env: Record<string, string>;
  /** GITHUB_WORKSPACE, and where each step's files are made unless `filesDir` says otherwise. */
  workspace: string;
  /** Where each step's files (output, summary, state) are made, when the workspace is the checkout itself. */
  filesDir?: string;
  /** The main step's state, for a post step. */
  state?: Record<string, string>;
}

export interface StepResult {
  code: number | null;
  /** stdout and stderr, interleaved as they came. */
  stdout: string;
  outputs: Record<string, string>;
  summary: string;
  state: Record<string, string>;
  /** Epoch ms when the step started and ended. */
  started: number;
  ended: number;
  ms: number;
}

export async function runStep(run: StepRun): Promise<StepResult> {
  const started = Date.now();
  const step = await mkdtemp(join(run.filesDir ?? run.workspace, "step-"));
  const files = { output: join(step, "output"), summary: join(step, "summary"), state: join(step, "state") };
  for (const file of Object.values(files)) await writeFile(file, "");
  const env: Record<string, string> = {
    PATH: process.env.PATH ?? "",
    ...run.env,
    GITHUB_OUTPUT: files.output,
    GITHUB_STEP_SUMMARY: files.summary,
    GITHUB_STATE: files.state,
    GITHUB_WORKSPACE: run.workspace,
    ...JOB_ENV,
  };
  // The runner's naming: INPUT_ + the name upper-cased, hyphens kept; the post step gets the state as STATE_<name>.
  for (const [name, value] of Object.entries(run.inputs)) env[`INPUT_${name.toUpperCase()}`] = value;
  for (const [name, value] of Object.entries(run.state ?? {})) env[`STATE_${name}`] = value;
  const child = spawn(process.execPath, [run.bundle], { cwd: step, env, stdio: ["ignore", "pipe", "pipe"] });
  let stdout = "";
  child.stdout.on("data", (chunk: Buffer) => {
    stdout += chunk.toString();
  });
  child.stderr.on("data", (chunk: Buffer) => {
    stdout += chunk.toString();
  });
  const code = await new Promise<number | null>((resolve) => child.on("close", resolve));
  const ended = Date.now();
  return {
    code,
    stdout,
    outputs: parseFileCommands(await readFile(files.output, "utf8")),
    summary: await readFile(files.summary, "utf8"),
    state: parseFileCommands(await readFile(files.state, "utf8")),
    started,
    ended,
    ms: ended - started,
  };
}

/** A main step, then its post step with the state the main step saved, as the runner does (post-if: always()). */
export async function runWithPost(
  run: Omit<StepRun, "state">,
): Promise<{ main: StepResult; post: StepResult }> {
  const main = await runStep(run);
  const post = await runStep({ ...run, state: main.state });
  return { main, post };
}

/** GITHUB_OUTPUT's and GITHUB_STATE's heredoc form, as @actions/core writes it: `name<<DELIM\nvalue\nDELIM`. */
export function parseFileCommands(text: string): Record<string, string> {
  const values: Record<string, string> = {};
  const pattern = /^([^<\n]+)<<(\S+)\n([\s\S]*?)\n\2$/gm;
  for (const match of text.matchAll(pattern))
    values[match[1] ?? ""] = match[2] === undefined ? "" : (match[3] ?? "");
  return values;
}
