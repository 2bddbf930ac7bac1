// Running the `aml-edge` command in-process for tests: captured output, a stop switch, and waiting for a line.
import { createServer } from "node:net";
import { runCli } from "../../src/cli/cli.ts";

export interface CliRun {
  readonly out: string[];
  readonly err: string[];
  /** Resolves with the exit code. */
  readonly exit: Promise<number>;
  stop(): void;
  /** The first stdout line matching, already written or still to come. */
  waitForLine(pattern: RegExp, timeoutMs?: number): Promise<string>;
}

export function runInProcess(args: string[], env: Record<string, string> = {}): CliRun {
  const out: string[] = [];
  const err: string[] = [];
  const listeners = new Set<() => void>();
  const stop = new AbortController();
  const exit = runCli(args, {
    stdout: (line) => {
      out.push(line);
      for (const listener of listeners) listener();
    },
    stderr: (line) => err.push(line),
    env,
    stop: stop.signal,
  });
  return {
    out,
    err,
    exit,
    stop: () => stop.abort(),
    waitForLine(pattern, timeoutMs = 20_000) {
      return new Promise((resolve, reject) => {
        const check = () => {
          const line = out.find((l) => pattern.test(l));
          if (line === undefined) return false;
          cleanup();
          resolve(line);
          return true;
        };
        const timer = setTimeout(() => {
          cleanup();
          reject(
            new Error(
              `no stdout line matching ${pattern} within ${timeoutMs} ms:\n${out.join("\n")}\n${err.join("\n")}`,
            ),
          );
        }, timeoutMs);
        const cleanup = () => {
          clearTimeout(timer);
          listeners.delete(listener);
        };
        const listener = () => void check();
        listeners.add(listener);
        check();
        // A command that ended will never print the line.
        void exit.then((code) => {
          if (!check()) {
            cleanup();
            reject(
              new Error(
                `command exited with ${code} before printing ${pattern}:\n${out.join("\n")}\n${err.join("\n")}`,
              ),
            );
          }
        });
      });
    },
  };
}

/** A port nothing listens on right now (the system picks it, we release it). */
export async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const address = server.address();
  await new Promise<void>((resolve) => server.close(() => resolve()));
  if (address === null || typeof address === "string") throw new Error("no port");
  return address.port;
}

/** Splits the printed curl command into what a test needs to send the same request with fetch. */
export function parseCurl(line: string): { url: string; tokenPath: string; body: string | undefined } {
  const match =
    /^curl -sS (\S+) -H "Authorization: Bearer \$\(cat (\S+)\)"(?: -H 'content-type: application\/json' -d '([^']*)')?$/.exec(
      line,
    );
  if (match === null) throw new Error(`not the curl line gateway dev prints: ${line}`);
  return { url: match[1] as string, tokenPath: match[2] as string, body: match[3] };
}
