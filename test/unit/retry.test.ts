// Waiting out 409 and 429 within the user's deadline: backoff that grows with jitter, Retry-After exactly, and an
// error (not a sleep) when the next wait would pass the deadline.
import { describe, expect, it } from "vitest";
import {
  DeadlineExceededError,
  formatDuration,
  retryAfterMs,
  statusOf,
  withAzureRetry,
} from "../../src/azure/retry.ts";
import { fakeClock, httpError } from "./fake-ml-client.ts";

function failing(errors: Error[], result = "ok") {
  let calls = 0;
  const operation = async () => {
    calls++;
    const error = errors.shift();
    if (error !== undefined) throw error;
    return result;
  };
  return { operation, calls: () => calls };
}

describe("withAzureRetry", () => {
  it("waits out 409 Conflict with exponential backoff and jitter, then returns the result", async () => {
    const clock = fakeClock();
    const logged: string[] = [];
    const { operation, calls } = failing([1, 2, 3, 4].map(() => httpError(409, "Conflict")));
    const randoms = [0, 0.999, 0, 0.5];
    const result = await withAzureRetry(operation, {
      what: "Creating deployment green",
      deadline: clock.now() + 10 * 60_000,
      clock,
      logger: { info: (m) => logged.push(m) },
      random: () => randoms.shift() ?? 0,
    });
    expect(result).toBe("ok");
    expect(calls()).toBe(5);
    // Ceilings 2 s, 4 s, 8 s, 16 s; equal jitter keeps each wait in [ceiling/2, ceiling].
    expect(clock.sleeps).toEqual([1000, 3998, 4000, 12000]);
    expect(logged[0]).toMatch(
      /Creating deployment green: Azure answered 409 Conflict.*retrying in 1s \(attempt 2\)/,
    );
  });

  it("caps the backoff at maxDelayMs", async () => {
    const clock = fakeClock();
    const { operation } = failing(Array.from({ length: 8 }, () => httpError(409, "Conflict")));
    await withAzureRetry(operation, {
      what: "x",
      deadline: clock.now() + 60 * 60_000,
      clock,
      logger: { info: () => {} },
      random: () => 0.999999,
      maxDelayMs: 20_000,
    });
    expect(Math.max(...clock.sleeps)).toBeLessThanOrEqual(20_000);
    expect(clock.sleeps.at(-1)).toBeGreaterThan(19_000);
  });

  it("honours Retry-After on 429, in seconds and as an HTTP date", async () => {
    const clock = fakeClock();
    const date = new Date(clock.now() + 12_000).toUTCString();
    const { operation } = failing([
      httpError(429, "Too Many Requests", { "retry-after": "7" }),
      httpError(429, "Too Many Requests", { "retry-after": date }),
    ]);
    await withAzureRetry(operation, {
      what: "x",
      deadline: clock.now() + 60_000,
      clock,
      logger: { info: () => {} },
      random: () => 0,
    });
    expect(clock.sleeps[0]).toBe(7000);
    // An HTTP date has whole seconds; the wait ends at that second.
    expect(clock.sleeps[1]).toBeGreaterThan(3000);
    expect(clock.sleeps[1]).toBeLessThanOrEqual(5000);
  });

  it("fails at once, without sleeping, when the next wait would pass the deadline", async () => {
    const clock = fakeClock();
    const { operation, calls } = failing([
      httpError(429, "Too Many Requests", { "retry-after": "5" }),
      httpError(429, "Too Many Requests", { "retry-after": "120" }),
    ]);
    const error = await withAzureRetry(operation, {
      what: "Setting traffic",
      deadline: clock.now() + 60_000,
      clock,
      logger: { info: () => {} },
    }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(DeadlineExceededError);
    expect((error as Error).message).toMatch(
      /^Setting traffic: gave up after 2 attempt\(s\) over 5s\. .*429.*2m more/,
    );
    expect((error as Error).message).toMatch(/timeout-minutes/);
    expect(clock.sleeps).toEqual([5000]);
    expect(calls()).toBe(2);
  });

  it("gives up a 409 storm at the deadline and says what to check", async () => {
    const clock = fakeClock();
    const start = clock.now();
    const operation = async () => {
      throw httpError(409, "Conflict");
    };
    const error = await withAzureRetry(operation, {
      what: "Deploying",
      deadline: start + 5 * 60_000,
      clock,
      logger: { info: () => {} },
      random: () => 0.5,
    }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(DeadlineExceededError);
    expect((error as Error).message).toMatch(/concurrency/);
    expect(clock.now()).toBeLessThanOrEqual(start + 5 * 60_000);
    expect((error as Error).cause).toBeDefined();
  });

  it("does not retry other errors", async () => {
    const clock = fakeClock();
    const { operation, calls } = failing([httpError(400, "Bad Request")]);
    await expect(
      withAzureRetry(operation, {
        what: "x",
        deadline: clock.now() + 60_000,
        clock,
        logger: { info: () => {} },
      }),
    ).rejects.toThrow("Bad Request");
    expect(calls()).toBe(1);
    expect(clock.sleeps).toEqual([]);
  });
});

describe("helpers", () => {
  it("reads the status and Retry-After of SDK errors, and nothing from other values", () => {
    expect(statusOf(httpError(409, "x"))).toBe(409);
    expect(statusOf(new Error("plain"))).toBeUndefined();
    expect(statusOf("text")).toBeUndefined();
    expect(retryAfterMs(httpError(429, "x", { "retry-after": "3" }), 0)).toBe(3000);
    expect(retryAfterMs(httpError(429, "x", { "retry-after": "soon" }), 0)).toBeUndefined();
    expect(retryAfterMs(httpError(429, "x"), 0)).toBeUndefined();
  });

  it("formats durations for progress lines", () => {
    expect(formatDuration(0)).toBe("0s");
    expect(formatDuration(29_600)).toBe("30s");
    expect(formatDuration(60_000)).toBe("1m");
    expect(formatDuration(95_000)).toBe("1m35s");
  });
});
