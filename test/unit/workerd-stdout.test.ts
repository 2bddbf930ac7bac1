// The benchmark's collection of workerd's stdout: the wrapper it hands Miniflare runs the real binary with the same
// arguments and its output in the named pipe, and every marked line is counted, including one far longer than the
// pipe holds (read in pieces and joined). A stand-in script plays workerd.
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { collectWorkerdStdout } from "../bench/workerd-stdout.ts";

const MARKER = '"type":"aml-edge.audit"';

describe("collectWorkerdStdout", () => {
  let dir: string;
  let fakeWorkerd: string;
  const saved = process.env.MINIFLARE_WORKERD_PATH;

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), "aml-edge-stdout-test-"));
    fakeWorkerd = join(dir, "fake-workerd");
    // $1 marked lines, each followed by an unmarked one, then one 200 KB line marked at its start
    // (three times what the pipe holds, so it arrives in pieces).
    writeFileSync(
      fakeWorkerd,
      [
        "#!/bin/sh",
        'i=0; while [ "$i" -lt "$1" ]; do i=$((i+1)); echo "{\\"type\\":\\"aml-edge.audit\\",\\"n\\":$i}"; echo other; done',
        "printf '%s' '\"type\":\"aml-edge.audit\"'",
        "head -c 200000 /dev/zero | tr '\\0' x",
        "echo",
        "",
      ].join("\n"),
      { mode: 0o755 },
    );
    process.env.MINIFLARE_WORKERD_PATH = fakeWorkerd;
  });

  afterEach(() => {
    if (saved === undefined) delete process.env.MINIFLARE_WORKERD_PATH;
    else process.env.MINIFLARE_WORKERD_PATH = saved;
    rmSync(dir, { recursive: true, force: true });
  });

  it("counts every marked line the wrapped binary writes, with its arguments passed through", async () => {
    const stdout = collectWorkerdStdout(MARKER);
    try {
      const wrapper = process.env.MINIFLARE_WORKERD_PATH as string;
      expect(wrapper).not.toBe(fakeWorkerd);
      // Asynchronously, so the drain timer runs while the stand-in writes more than the pipe holds.
      const child = spawn(wrapper, ["250"], { stdio: "ignore" });
      const code = await new Promise<number | null>((resolve) => child.on("exit", resolve));
      expect(code).toBe(0);
      expect(stdout.count()).toBe(251);
    } finally {
      stdout.close();
    }
    expect(process.env.MINIFLARE_WORKERD_PATH).toBe(fakeWorkerd);
    expect(process.env.AML_EDGE_BENCH_STDOUT).toBeUndefined();
  });

  it("removes its pipe and wrapper when closed", () => {
    const stdout = collectWorkerdStdout(MARKER);
    const wrapper = process.env.MINIFLARE_WORKERD_PATH as string;
    expect(existsSync(wrapper)).toBe(true);
    stdout.close();
    expect(existsSync(wrapper)).toBe(false);
    stdout.close();
  });
});
