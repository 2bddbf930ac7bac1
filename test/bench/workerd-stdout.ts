// Collects the stdout of workerd, every line of it, without making each line wake this process. Miniflare hands
// workerd a socket as stdout and reads it with an event per write; the gateway writes an audit line per request, so
// that socket woke the benchmark's process for every few requests and charged both processes for the wake-up. A
// deployed Worker's console lines go to a buffer of the invocation, not to a socket someone polls. Here workerd
// writes into a named pipe instead, through a wrapper script (started directly as `binary`, or by Miniflare as
// MINIFLARE_WORKERD_PATH), and the benchmark reads that pipe on a short timer and counts the lines. workerd still
// makes every write; nothing is dropped. Linux and macOS (mkfifo, a POSIX shell).
import { execFileSync } from "node:child_process";
import {
  chmodSync,
  closeSync,
  constants,
  mkdtempSync,
  openSync,
  readSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { StringDecoder } from "node:string_decoder";
import { workerdBinary } from "./workerd-direct.ts";

/**
 * A pipe holds 64 KiB, about 130 audit lines; at the benchmark's 3,000 requests a second, 5 ms fill about a tenth
 * of it. Should the drain fall behind anyway, workerd waits on its write: the run is slower, never short of lines.
 */
const DRAIN_INTERVAL_MS = 5;

export interface WorkerdStdout {
  /** The wrapper to start instead of workerd: it execs workerd with its stdout on the pipe. */
  readonly binary: string;
  /** Lines seen so far that contain `marker` (reads what is waiting first). */
  count(): number;
  /** Puts MINIFLARE_WORKERD_PATH back, stops reading and removes the pipe; after workerd has exited. */
  close(): void;
}

/**
 * Prepares the pipe and the wrapper: start workerd as `binary`, or let Miniflare start it (MINIFLARE_WORKERD_PATH
 * points at the wrapper until `close`). Counts the lines that contain `marker`; a line split across two reads is
 * joined first.
 */
export function collectWorkerdStdout(marker: string): WorkerdStdout {
  const previous = process.env.MINIFLARE_WORKERD_PATH;
  const workerd = previous ?? workerdBinary();
  const dir = mkdtempSync(join(tmpdir(), "aml-edge-bench-"));
  const fifo = join(dir, "stdout");
  try {
    execFileSync("mkfifo", [fifo]);
  } catch (error) {
    rmSync(dir, { recursive: true, force: true });
    throw new Error(`the benchmark needs mkfifo to collect workerd's output: ${(error as Error).message}`);
  }
  // Opened for reading before workerd starts: its open for writing then does not block, and a non-blocking read
  // end lets the timer take what is there and go.
  const fd = openSync(fifo, constants.O_RDONLY | constants.O_NONBLOCK);
  const wrapper = join(dir, "workerd");
  writeFileSync(wrapper, '#!/bin/sh\nexec "$AML_EDGE_BENCH_WORKERD" "$@" >"$AML_EDGE_BENCH_STDOUT"\n');
  chmodSync(wrapper, 0o755);
  process.env.AML_EDGE_BENCH_WORKERD = workerd;
  process.env.AML_EDGE_BENCH_STDOUT = fifo;
  process.env.MINIFLARE_WORKERD_PATH = wrapper;

  const buffer = Buffer.alloc(1 << 20);
  const decoder = new StringDecoder("utf8");
  let partial = "";
  let lines = 0;
  const drain = () => {
    for (;;) {
      let read: number;
      try {
        read = readSync(fd, buffer, 0, buffer.length, null);
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code === "EAGAIN") return;
        throw error;
      }
      // 0: no writer yet, or workerd has exited.
      if (read === 0) return;
      const text = partial + decoder.write(buffer.subarray(0, read));
      const parts = text.split("\n");
      partial = parts.pop() ?? "";
      for (const line of parts) if (line.includes(marker)) lines += 1;
    }
  };
  const timer = setInterval(drain, DRAIN_INTERVAL_MS);
  let closed = false;
  return {
    binary: wrapper,
    count() {
      drain();
      return lines;
    },
    close() {
      if (closed) return;
      closed = true;
      clearInterval(timer);
      closeSync(fd);
      rmSync(dir, { recursive: true, force: true });
      if (previous === undefined) delete process.env.MINIFLARE_WORKERD_PATH;
      else process.env.MINIFLARE_WORKERD_PATH = previous;
      delete process.env.AML_EDGE_BENCH_WORKERD;
      delete process.env.AML_EDGE_BENCH_STDOUT;
    },
  };
}
