// Waiting out Azure's "not now" answers within a deadline the user set (timeout-minutes). Azure ML runs one operation
// per endpoint at a time and answers any other with 409 Conflict ("another operation on same entity is already
// running"); ARM throttles with 429 and a Retry-After. Both are waits, not failures, until the deadline: 409 with
// exponential backoff and jitter (the other operation's length is unknown, and several waiting jobs must not retry in
// step), 429 exactly as long as Azure asked. A wait that would end past the deadline is not started: the error says
// so at once instead of sleeping into a cancelled job.
//
// The SDK's pipeline already retries a 429 a few times on its own (core-rest-pipeline's throttling strategy); what
// reaches this layer is what that gave up on.

/** Time, injected so tests run minutes of backoff in microseconds. */
export interface Clock {
  /** Epoch milliseconds. */
  now(): number;
  sleep(ms: number): Promise<void>;
}

export const systemClock: Clock = {
  now: () => Date.now(),
  sleep: (ms) => new Promise((resolve) => setTimeout(resolve, ms)),
};

/** A wait ran into the user's deadline. A failure (not the user's input): the message says what to do. */
export class DeadlineExceededError extends Error {
  override name = "DeadlineExceededError";
}

export interface RetryLogger {
  info(message: string): void;
}

export interface RetryOptions {
  /** What is being attempted, for messages: "Creating deployment green on endpoint credit". */
  what: string;
  /** Epoch ms after which nothing more is waited for. */
  deadline: number;
  clock: Clock;
  logger: RetryLogger;
  /** [0, 1). Default Math.random. */
  random?: () => number;
  /** First 409 backoff ceiling. Default 2 s. */
  baseDelayMs?: number;
  /** Largest 409 backoff. Default 60 s. */
  maxDelayMs?: number;
  /** A 429 without Retry-After waits this long. Default 10 s. */
  defaultThrottleMs?: number;
}

/** The HTTP status an Azure SDK error carries (RestError.statusCode), if any. */
export function statusOf(error: unknown): number | undefined {
  if (typeof error !== "object" || error === null) return undefined;
  const status = (error as { statusCode?: unknown }).statusCode;
  return typeof status === "number" ? status : undefined;
}

/** Retry-After of an Azure SDK error's response in ms: delta-seconds or an HTTP date (RFC 9110 §10.2.3). */
export function retryAfterMs(error: unknown, now: number): number | undefined {
  if (typeof error !== "object" || error === null) return undefined;
  const headers = (error as { response?: { headers?: { get?(name: string): string | undefined } } }).response
    ?.headers;
  const value = typeof headers?.get === "function" ? headers.get("retry-after") : undefined;
  if (value === undefined || value.trim() === "") return undefined;
  if (/^\d+$/.test(value.trim())) return Number(value.trim()) * 1000;
  const date = Date.parse(value);
  return Number.isNaN(date) ? undefined : Math.max(0, date - now);
}

export function formatDuration(ms: number): string {
  const seconds = Math.max(0, Math.round(ms / 1000));
  if (seconds < 60) return `${seconds}s`;
  const minutes = Math.floor(seconds / 60);
  const rest = seconds % 60;
  return rest === 0 ? `${minutes}m` : `${minutes}m${String(rest).padStart(2, "0")}s`;
}

/** Runs `operation`, waiting out 409 and 429 answers until the deadline; any other error is thrown as it is. */
export async function withAzureRetry<T>(operation: () => Promise<T>, options: RetryOptions): Promise<T> {
  const random = options.random ?? Math.random;
  const base = options.baseDelayMs ?? 2000;
  const max = options.maxDelayMs ?? 60_000;
  const { clock, deadline, what } = options;
  const started = clock.now();
  let conflicts = 0;
  for (let attempt = 1; ; attempt++) {
    try {
      return await operation();
    } catch (error) {
      const status = statusOf(error);
      if (status !== 409 && status !== 429) throw error;
      const now = clock.now();
      let wait: number;
      let why: string;
      if (status === 409) {
        // "Equal jitter": at least half the exponential step, so waits grow, plus a random half, so jobs spread out.
        const ceiling = Math.min(max, base * 2 ** conflicts);
        conflicts++;
        wait = Math.round(ceiling / 2 + random() * (ceiling / 2));
        why = "Azure answered 409 Conflict: another operation on the same endpoint is still running";
      } else {
        wait = retryAfterMs(error, now) ?? options.defaultThrottleMs ?? 10_000;
        why = "Azure answered 429 Too Many Requests";
      }
      if (now + wait > deadline) {
        throw new DeadlineExceededError(
          `${what}: gave up after ${attempt} attempt(s) over ${formatDuration(now - started)}. ${why}, and waiting ` +
            `${formatDuration(wait)} more would pass the deadline (timeout-minutes). ` +
            (status === 409
              ? "Check for another deployment or rollout on this endpoint (a workflow `concurrency:` group keeps " +
                "them apart), or raise timeout-minutes."
              : "Azure is throttling this subscription; run fewer jobs against it at once, or raise timeout-minutes."),
          { cause: error },
        );
      }
      options.logger.info(`${what}: ${why}; retrying in ${formatDuration(wait)} (attempt ${attempt + 1}).`);
      await clock.sleep(wait);
    }
  }
}
