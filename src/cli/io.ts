// What a command needs from the process, passed in so tests can run a command in-process and read what it wrote.

export interface CliIo {
  /** Writes one line to standard output. */
  stdout(line: string): void;
  /** Writes one line to standard error. */
  stderr(line: string): void;
  env: Readonly<Record<string, string | undefined>>;
  /** Aborted when the user asks a long-running command to stop (SIGINT, SIGTERM). */
  stop: AbortSignal;
}
