// `aml-edge gateway dev` as a user runs it: a separate Node process on the shipped example config. The printed curl
// command is replayed with fetch, and the process must stop cleanly on SIGTERM, leaving no token behind.
import { type ChildProcess, spawn } from "node:child_process";
import { readFile, stat } from "node:fs/promises";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { afterEach, describe, expect, it } from "vitest";
import { parseCurl } from "./cli-helpers.ts";

const root = fileURLToPath(new URL("../..", import.meta.url));
let child: ChildProcess | undefined;

afterEach(() => {
  if (child !== undefined && child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
});

function startCli(args: string[]) {
  // process.execPath: the Node running the tests, which is the pinned node@24 under npm scripts.
  const proc = spawn(process.execPath, ["src/cli/main.ts", ...args], {
    cwd: root,
    env: { ...process.env, AML_KEY_PRIMARY: "", AML_KEY_SECONDARY: "" },
    stdio: ["ignore", "pipe", "pipe"],
  });
  child = proc;
  const out: string[] = [];
  const err: string[] = [];
  createInterface({ input: proc.stderr }).on("line", (line) => err.push(line));
  const lines = createInterface({ input: proc.stdout });
  lines.on("line", (line) => out.push(line));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    proc.once("exit", (code, signal) => resolve({ code, signal })),
  );
  const waitForLine = (pattern: RegExp, timeoutMs = 30_000) =>
    new Promise<string>((resolve, reject) => {
      const found = out.find((l) => pattern.test(l));
      if (found !== undefined) return resolve(found);
      const timer = setTimeout(
        () => reject(new Error(`no line matching ${pattern}:\n${out.join("\n")}\n${err.join("\n")}`)),
        timeoutMs,
      );
      const onLine = (line: string) => {
        if (!pattern.test(line)) return;
        clearTimeout(timer);
        lines.off("line", onLine);
        resolve(line);
      };
      lines.on("line", onLine);
      void exited.then(({ code }) => {
        clearTimeout(timer);
        reject(new Error(`exited (${code}) before ${pattern}:\n${out.join("\n")}\n${err.join("\n")}`));
      });
    });
  return { proc, out, err, exited, waitForLine };
}

describe("aml-edge gateway dev on src/examples/gateway.yaml", () => {
  it("serves a prediction for the printed curl command and stops cleanly on SIGTERM", async () => {
    const cli = startCli(["gateway", "dev", "--config", "src/examples/gateway.yaml", "--port", "0"]);
    const curl = parseCurl(await cli.waitForLine(/^curl /));
    const token = (await readFile(curl.tokenPath, "utf8")).trim();

    const response = await fetch(curl.url, {
      method: "POST",
      headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
      body: curl.body ?? "",
    });
    expect(response.status).toBe(200);
    expect(response.headers.get("x-aml-edge-deployment")).toMatch(/^(blue|green)$/);
    const predictions = (await response.json()) as { approved: boolean; probability: number }[];
    expect(predictions).toHaveLength(1);
    expect(typeof predictions[0]?.approved).toBe("boolean");
    expect(predictions[0]?.probability).toBeGreaterThan(0);
    expect(predictions[0]?.probability).toBeLessThan(1);

    await cli.waitForLine(/^audit allow 200 allowed route=credit/);
    expect(
      cli.out.filter((l) =>
        /^upstream secret AML_KEY_(PRIMARY|SECONDARY) \(route credit, .*\): sha256:[0-9a-f]{16}$/.test(l),
      ),
    ).toHaveLength(2);
    expect([...cli.out, ...cli.err].join("\n")).not.toContain(token);

    cli.proc.kill("SIGTERM");
    expect(await cli.exited).toEqual({ code: 0, signal: null });
    expect(cli.out.at(-1)).toBe("stopping");
    await expect(stat(curl.tokenPath)).rejects.toThrow();
    await expect(fetch(curl.url)).rejects.toThrow();
  }, 60_000);
});
