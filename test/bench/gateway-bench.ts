// Gateway overhead, measured against a baseline in the same process and the same workerd: the real gateway bundle
// and a pass-through Worker that only injects the key and forwards, each on its own loopback socket, both calling
// the same scoring stand-in with the same request mix (valid tokens from two issuers, many subjects). Phases
// alternate so that drift (JIT warm-up, the machine's other load) falls on both sides alike.
//
// Last line: {"throughputRatio", "addedP50Ms", "addedP99Ms", "verifyCpuUs", "coldStartJwksFetches"}.
// Bounded: at most ROUNDS × 2 phases of REQUESTS_PER_PHASE requests, and a wall-clock cap. The method and the
// measurements so far are in README.md beside this file.
import { readdirSync, readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { bundleGateway, bundleWorker } from "../../src/build/gateway-bundle.ts";
import { compileConfigBundle, fetchKeySnapshots } from "../../src/config/index.ts";
import { gatewayConfigSchema } from "../../src/config/schema.ts";
import { AUDIT_RECORD_TYPE, COMPATIBILITY_DATE } from "../../src/sandbox/gateway-runtime.ts";
import { startLoopbackServer } from "../../src/sandbox/http-server.ts";
import { startScoringServer } from "../../src/sandbox/scoring-server.ts";
import { startTokenIssuer } from "../../src/sandbox/token-issuer.ts";
import { type DirectWorkerd, startDirectWorkerd } from "./workerd-direct.ts";
import { collectWorkerdStdout } from "./workerd-stdout.ts";

const CONCURRENCY = Number(process.env.BENCH_CONCURRENCY ?? 16);
const REQUESTS_PER_PHASE = Number(process.env.BENCH_REQUESTS ?? 2000);
// Many alternating rounds: two cores are shared by workerd, the load and the stand-ins, and scheduling noise
// between single long phases was as large as the effect being measured. Even so, with the pass-through on both
// sides (an A/A run), one round's ratio had a standard deviation of about 0.2, and shorter phases were worse
// (about 0.45 at 500 requests). Six A/A runs of 32 rounds gave medians with a standard deviation of 0.033, for
// some 50 s of running each; 16 rounds would leave about 1.4 times that.
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 32);
const WARMUP_REQUESTS = 500;
const SUBJECTS_PER_ISSUER = 100;
const MAX_WALL_MS = 240_000;
/** Linux USER_HZ, the unit of utime/stime in /proc/<pid>/stat. */
const CLOCK_TICKS_PER_SECOND = 100;
const VERIFY_ITERATIONS = 4000;
const VERIFY_WORKER = fileURLToPath(new URL("./verify-bench-worker.ts", import.meta.url));
const BODY = JSON.stringify({ data: [[85, 0.25, 9, 0, 20, 6]] });
/** How an audit line spells its type (a substring test: parsing every line would tax the gateway's side). */
const AUDIT_MARKER = JSON.stringify({ type: AUDIT_RECORD_TYPE }).slice(1, -1);

/** The baseline: no token, no policy, no audit; the same key injection and forwarding as the gateway. */
const PASSTHROUGH_WORKER = `
export default {
  async fetch(request, env) {
    const upstream = await fetch(env.SCORING_URI, {
      method: "POST",
      headers: {
        "content-type": request.headers.get("content-type") ?? "application/json",
        authorization: "Bearer " + env.AML_KEY_PRIMARY,
        "azureml-model-deployment": "blue",
      },
      body: request.body,
    });
    return new Response(upstream.body, {
      status: upstream.status,
      headers: { "content-type": upstream.headers.get("content-type") ?? "application/json" },
    });
  },
};`;

interface PhaseResult {
  requests: number;
  wallMs: number;
  latenciesMs: number[];
  failures: number;
  /** CPU milliseconds spent by workerd and by this Node process (load generator and stand-ins) in the phase. */
  workerdCpuMs: number;
  nodeCpuMs: number;
  /**
   * Share of this machine's CPU used in the phase by processes other than this benchmark (from /proc/stat, clamped
   * at 0; accounting differences leave a few percent of slack). Contention from outside the VM does not show here.
   */
  otherCpuShare: number;
}

async function main(): Promise<void> {
  const deadline = Date.now() + MAX_WALL_MS;
  // One loopback server hosts both issuers and the scoring endpoint, so workerd's outbound traffic goes straight
  // to it (an `external` service), not through a Node callback that would tax one side more than the other.
  const server = await startLoopbackServer();
  const corp = await startTokenIssuer({ server, path: "/corp/v2.0", algorithms: ["RS256"] });
  const github = await startTokenIssuer({ server, path: "/github", algorithms: ["RS256"] });
  const scoring = await startScoringServer({
    server,
    deployments: [
      { name: "blue", weight: 90 },
      { name: "green", weight: 10 },
    ],
    maxRecordedRequests: 16,
  });

  const config = gatewayConfigSchema.parse({
    description: "benchmark",
    issuers: [
      {
        name: "corp",
        issuer: corp.issuer,
        jwksUri: corp.jwksUri,
        audiences: ["api://aml-edge-bench"],
        algorithms: ["RS256"],
        maxTokenAgeSeconds: 3600,
      },
      {
        name: "github",
        issuer: github.issuer,
        jwksUri: github.jwksUri,
        audiences: ["https://github.com/aml-edge-bench"],
        algorithms: ["RS256"],
        maxTokenAgeSeconds: 3600,
      },
    ],
    policy: {
      roles: { scorer: ["score:credit"] },
      rules: [
        { name: "corp-scorers", match: { issuers: ["corp"], role: ["ml.score"] }, roles: ["scorer"] },
        { name: "ci", match: { issuers: ["github"], repositoryId: ["424242"] }, roles: ["scorer"] },
      ],
    },
    routes: [
      {
        name: "credit",
        path: "/v1/credit/score",
        scoringUri: scoring.url,
        deployments: [
          { name: "blue", weight: 90 },
          { name: "green", weight: 10 },
        ],
        upstreamAuth: { mode: "key", primarySecret: "AML_KEY_PRIMARY", secondarySecret: "AML_KEY_SECONDARY" },
      },
    ],
  });
  const keySnapshots = await fetchKeySnapshots(config, { fetch });
  const bundle = await compileConfigBundle(config, { mode: "local", keySnapshots });

  const tokens: string[] = [];
  for (let i = 0; i < SUBJECTS_PER_ISSUER; i += 1) {
    tokens.push(
      await corp.mint(
        { aud: "api://aml-edge-bench", sub: `user-${i}`, roles: ["ml.score"] },
        { expiresInSeconds: 3000 },
      ),
      await github.mint(
        {
          aud: "https://github.com/aml-edge-bench",
          sub: `repo:org/app:ref:refs/heads/b${i}`,
          repository_id: "424242",
        },
        { expiresInSeconds: 3000 },
      ),
    );
  }
  corp.resetCounts();
  github.resetCounts();

  const secrets = { AML_KEY_PRIMARY: scoring.keys.primary, AML_KEY_SECONDARY: scoring.keys.secondary };
  // Audit lines are part of the gateway's work: workerd writes every one, and the benchmark counts them (one per
  // gateway request) from a pipe it drains on a timer rather than one that wakes it per line (workerd-stdout.ts).
  const workerdStdout = collectWorkerdStdout(AUDIT_MARKER);
  // Every Worker's outbound fetch goes straight to the loopback server, as a deployed Worker's goes to the network:
  // without the interceptor Worker that Miniflare puts in front of each one (workerd-direct.ts).
  let workerd: DirectWorkerd;
  try {
    workerd = await startDirectWorkerd({
      binary: workerdStdout.binary,
      upstreamOrigin: server.origin,
      workers: [
        {
          name: "gateway",
          module: await bundleGateway(),
          compatibilityDate: COMPATIBILITY_DATE,
          json: { AML_EDGE_CONFIG: bundle },
          text: secrets,
        },
        {
          name: "verify-loop",
          module: await bundleWorker(VERIFY_WORKER),
          compatibilityDate: COMPATIBILITY_DATE,
          json: { AML_EDGE_CONFIG: bundle },
        },
        {
          name: "passthrough",
          module: PASSTHROUGH_WORKER,
          compatibilityDate: COMPATIBILITY_DATE,
          text: { SCORING_URI: scoring.url, ...secrets },
        },
      ],
    });
  } catch (error) {
    workerdStdout.close();
    throw error;
  }
  try {
    const gatewayUrl = new URL("/v1/credit/score", workerd.url("gateway"));
    const passthroughUrl = new URL("/v1/credit/score", workerd.url("passthrough"));

    // Cold start first: the gateway's very first requests, before any warm-up, must not fetch a key set.
    const cold = await runPhase(gatewayUrl, tokens, CONCURRENCY, CONCURRENCY * 2, deadline);
    const coldStartJwksFetches = corp.jwksFetches + github.jwksFetches;
    if (cold.failures > 0) throw new Error(`${cold.failures} cold-start requests failed`);

    await runPhase(gatewayUrl, tokens, CONCURRENCY, WARMUP_REQUESTS, deadline);
    await runPhase(passthroughUrl, tokens, CONCURRENCY, WARMUP_REQUESTS, deadline);

    const gateway: PhaseResult[] = [];
    const passthrough: PhaseResult[] = [];
    for (let round = 0; round < ROUNDS; round += 1) {
      const order = round % 2 === 0 ? ["gateway", "passthrough"] : ["passthrough", "gateway"];
      for (const side of order) {
        const auditBefore = workerdStdout.count();
        const result = await runPhase(
          side === "gateway" ? gatewayUrl : passthroughUrl,
          tokens,
          CONCURRENCY,
          REQUESTS_PER_PHASE,
          deadline,
        );
        const auditLines = workerdStdout.count() - auditBefore;
        const expected = side === "gateway" ? result.requests : 0;
        if (auditLines !== expected) {
          throw new Error(
            `${side} phase of round ${round + 1}: ${auditLines} audit lines for ${expected} decisions`,
          );
        }
        (side === "gateway" ? gateway : passthrough).push(result);
        console.log(
          `round ${round + 1} ${side.padEnd(11)} ${result.requests} requests in ${result.wallMs.toFixed(0)} ms: ` +
            `${((result.requests / result.wallMs) * 1000).toFixed(0)} req/s, p50 ${percentile(result.latenciesMs, 0.5).toFixed(2)} ms, ` +
            `p99 ${percentile(result.latenciesMs, 0.99).toFixed(2)} ms, CPU/request workerd ${usPerRequest(result, result.workerdCpuMs).toFixed(0)} µs ` +
            `node ${usPerRequest(result, result.nodeCpuMs).toFixed(0)} µs, ` +
            `other processes ${(result.otherCpuShare * 100).toFixed(0)}% of the machine, failures ${result.failures}`,
        );
      }
    }
    const failures = [...gateway, ...passthrough].reduce((sum, phase) => sum + phase.failures, 0);
    if (failures > 0) throw new Error(`${failures} measured requests failed`);

    const throughput = (phases: PhaseResult[]) =>
      phases.reduce((sum, phase) => sum + phase.requests, 0) /
      phases.reduce((sum, phase) => sum + phase.wallMs, 0);
    const all = (phases: PhaseResult[]) => phases.flatMap((phase) => phase.latenciesMs);
    // Per-request Server-Timing cannot resolve a ~50 µs verification; the loop in workerd can.
    const verifyLoop = await fetch(workerd.url("verify-loop"), {
      method: "POST",
      body: JSON.stringify({ tokens, iterations: VERIFY_ITERATIONS }),
    });
    if (verifyLoop.status !== 200) throw new Error(`verify loop failed: ${await verifyLoop.text()}`);
    const { perVerifyUs } = (await verifyLoop.json()) as { perVerifyUs: number };
    // Each round runs the two sides back to back, so a round's ratio is compared under the same conditions; the
    // median of the rounds is not moved by one disturbed round (a GC pause, the machine's other work). The pooled
    // ratio over all requests is printed beside it.
    const roundRatios = gateway.map((phase, round) => {
      const baseline = passthrough[round] as PhaseResult;
      return phase.requests / phase.wallMs / (baseline.requests / baseline.wallMs);
    });
    const pooledRatio = throughput(gateway) / throughput(passthrough);
    // The ratio drifts down as a run goes on (README.md beside this file): the halves show how far in this run.
    const half = Math.floor(roundRatios.length / 2);
    const halves =
      half > 0
        ? `; median of the first half ${median(roundRatios.slice(0, half)).toFixed(3)}, ` +
          `of the second ${median(roundRatios.slice(half)).toFixed(3)}`
        : "";
    console.log(
      `throughput ratio per round: ${roundRatios.map((ratio) => ratio.toFixed(3)).join(" ")}; ` +
        `median ${median(roundRatios).toFixed(3)}, pooled ${pooledRatio.toFixed(3)}${halves}`,
    );
    // What the ratio would be if each side's rate followed its busier process (two free cores) or the two
    // processes' total (cores shared or taken by the host): the measured ratio falls between, by the machine's state.
    const medianUsPerRequest = (phases: PhaseResult[], cpuMs: (phase: PhaseResult) => number) =>
      median(phases.map((phase) => usPerRequest(phase, cpuMs(phase))));
    const cpu = {
      workerd: {
        g: medianUsPerRequest(gateway, (p) => p.workerdCpuMs),
        p: medianUsPerRequest(passthrough, (p) => p.workerdCpuMs),
      },
      node: {
        g: medianUsPerRequest(gateway, (p) => p.nodeCpuMs),
        p: medianUsPerRequest(passthrough, (p) => p.nodeCpuMs),
      },
    };
    console.log(
      `CPU per request, median of the phases: workerd ${cpu.workerd.g.toFixed(0)} µs gateway, ${cpu.workerd.p.toFixed(0)} µs ` +
        `pass-through; Node ${cpu.node.g.toFixed(0)} µs, ${cpu.node.p.toFixed(0)} µs. Ratio if the busier process sets ` +
        `the rate: ${(Math.max(cpu.workerd.p, cpu.node.p) / Math.max(cpu.workerd.g, cpu.node.g)).toFixed(3)}; ` +
        `if the total does: ${((cpu.workerd.p + cpu.node.p) / (cpu.workerd.g + cpu.node.g)).toFixed(3)}`,
    );
    const summary = {
      throughputRatio: round3(median(roundRatios)),
      addedP50Ms: round3(percentile(all(gateway), 0.5) - percentile(all(passthrough), 0.5)),
      addedP99Ms: round3(percentile(all(gateway), 0.99) - percentile(all(passthrough), 0.99)),
      verifyCpuUs: Math.round(perVerifyUs * 10) / 10,
      coldStartJwksFetches,
    };
    console.log(
      `gateway ${(throughput(gateway) * 1000).toFixed(0)} req/s vs pass-through ${(throughput(passthrough) * 1000).toFixed(0)} req/s; ` +
        `concurrency ${CONCURRENCY}, ${ROUNDS} rounds of ${REQUESTS_PER_PHASE} requests a side; ` +
        `verify CPU: pre-check + verify, mean of ${VERIFY_ITERATIONS} in a loop inside workerd`,
    );
    console.log(JSON.stringify(summary));
  } finally {
    try {
      await workerd.close();
    } finally {
      workerdStdout.close();
    }
    await Promise.all([scoring.close(), corp.close(), github.close()]);
    await server.close();
  }
}

/** Sends `count` requests with `concurrency` in flight, cycling through the tokens. */
async function runPhase(
  url: URL,
  tokens: readonly string[],
  concurrency: number,
  count: number,
  deadline: number,
): Promise<PhaseResult> {
  const latenciesMs: number[] = [];
  let next = 0;
  let failures = 0;
  const machineBefore = machineCpuMs();
  const workerdBefore = workerdCpuMs();
  const nodeBefore = process.cpuUsage();
  const started = performance.now();
  const lane = async () => {
    while (next < count) {
      if (Date.now() > deadline) throw new Error("benchmark exceeded its wall-clock cap");
      const token = tokens[next % tokens.length] as string;
      next += 1;
      const sent = performance.now();
      const response = await fetch(url, {
        method: "POST",
        headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
        body: BODY,
      });
      await response.arrayBuffer();
      latenciesMs.push(performance.now() - sent);
      if (response.status !== 200) failures += 1;
    }
  };
  await Promise.all(Array.from({ length: concurrency }, lane));
  const wallMs = performance.now() - started;
  const node = process.cpuUsage(nodeBefore);
  const workerd = workerdCpuMs() - workerdBefore;
  const nodeMs = (node.user + node.system) / 1000;
  const machineAfter = machineCpuMs();
  const otherMs = machineAfter.busyMs - machineBefore.busyMs - workerd - nodeMs;
  return {
    requests: latenciesMs.length,
    wallMs,
    latenciesMs,
    failures,
    workerdCpuMs: workerd,
    nodeCpuMs: nodeMs,
    otherCpuShare: machineAfter.cores > 0 ? Math.max(otherMs, 0) / (machineAfter.cores * wallMs) : 0,
  };
}

/** Busy CPU milliseconds of the whole machine (user, nice, system) and its number of CPUs, from /proc/stat. */
function machineCpuMs(): { busyMs: number; cores: number } {
  try {
    const lines = readFileSync("/proc/stat", "utf8").split("\n");
    const [user = 0, nice = 0, system = 0] = (lines[0] ?? "").trim().split(/\s+/).slice(1).map(Number);
    const cores = lines.filter((line) => /^cpu[0-9]+ /.test(line)).length;
    return { busyMs: ((user + nice + system) * 1000) / CLOCK_TICKS_PER_SECOND, cores };
  } catch {
    return { busyMs: 0, cores: 0 };
  }
}

/** Whether this kernel has per-thread schedstat (nanoseconds) rather than only ticks (10 ms). Decided once. */
const SCHEDSTAT = (() => {
  try {
    return readFileSync("/proc/self/schedstat", "utf8").split(" ").length >= 3;
  } catch {
    return false;
  }
})();

/**
 * CPU milliseconds of this run's workerd: the one this process started, not any other workerd on
 * the machine (another session's sandbox, say). Summed over its threads from schedstat where the kernel has it,
 * else user + system ticks; 0 without /proc.
 */
function workerdCpuMs(): number {
  const parents = new Map<string, string>();
  const workerds: { pid: string; ticks: number }[] = [];
  try {
    for (const pid of readdirSync("/proc")) {
      if (!/^[0-9]+$/.test(pid)) continue;
      try {
        const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
        const close = stat.lastIndexOf(")");
        const fields = stat.slice(close + 2).split(" ");
        parents.set(pid, fields[1] ?? "0");
        if (stat.slice(0, close).includes("(workerd")) {
          workerds.push({ pid, ticks: Number(fields[11]) + Number(fields[12]) });
        }
      } catch {
        // The process ended between the listing and the read.
      }
    }
  } catch {
    return 0;
  }
  const ours = (pid: string): boolean => {
    for (
      let current = parents.get(pid);
      current !== undefined && current !== "0";
      current = parents.get(current)
    ) {
      if (current === String(process.pid)) return true;
    }
    return false;
  };
  let ms = 0;
  for (const { pid, ticks } of workerds) {
    if (!ours(pid)) continue;
    ms += SCHEDSTAT ? threadRunTimeMs(pid) : (ticks * 1000) / CLOCK_TICKS_PER_SECOND;
  }
  return ms;
}

function threadRunTimeMs(pid: string): number {
  let ns = 0;
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    try {
      ns += Number(readFileSync(`/proc/${pid}/task/${tid}/schedstat`, "utf8").split(" ")[0]);
    } catch {
      // The thread ended between the listing and the read.
    }
  }
  return ns / 1e6;
}

/** CPU milliseconds spent in a phase, as microseconds per request. */
function usPerRequest(phase: PhaseResult, cpuMs: number): number {
  return (cpuMs / phase.requests) * 1000;
}

function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1
    ? (sorted[middle] as number)
    : ((sorted[middle - 1] as number) + (sorted[middle] as number)) / 2;
}

function percentile(values: readonly number[], p: number): number {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))] as number;
}

function round3(value: number): number {
  return Math.round(value * 1000) / 1000;
}

main().catch((error: unknown) => {
  console.error(error instanceof Error ? (error.stack ?? error.message) : String(error));
  process.exit(1);
});
