// Waiting until the edge serves what was deployed. Cloudflare acknowledges a deployment before every location runs
// it, so a publish is done only when the gateway itself answers with the new config version: every gateway response
// carries `x-aml-edge-config`, refusals included, so an unauthenticated GET is enough and needs no credential. The
// request names the new version in `Cloudflare-Workers-Version-Overrides`, which Cloudflare honours only once that
// version is part of the live deployment: a matching answer proves the deployment is live, at any percentage. When
// the new version serves everything, a plain request must show it too.
import { EdgeNotServingError } from "./errors.ts";
import { type Clock, formatSpan } from "./time.ts";

export const CONFIG_HEADER = "x-aml-edge-config";
export const VERSION_OVERRIDE_HEADER = "cloudflare-workers-version-overrides";

export interface EdgeWaitOptions {
  /** The gateway's URL at the edge (a route or custom domain of the Worker, or its workers.dev address). */
  gatewayUrl: string;
  script: string;
  versionId: string;
  configVersion: string;
  /** The new version serves all requests: a plain request must show it, not only one pinned to it. */
  servesAll: boolean;
  /** Epoch ms. */
  deadline: number;
  clock: Clock;
  fetch?: typeof globalThis.fetch;
  logger: { info(message: string): void; warning(message: string): void };
  /** First pause between polls, doubled after each up to maxDelayMs. Defaults 250 ms and 5 s. */
  initialDelayMs?: number;
  maxDelayMs?: number;
  /** Longest gap between progress lines. Default 15 s. */
  progressIntervalMs?: number;
}

export interface EdgeWaitResult {
  elapsedMs: number;
  polls: number;
}

/** Polls the edge with backoff until it serves the config version; throws EdgeNotServingError at the deadline. */
export async function waitForEdgeConfig(options: EdgeWaitOptions): Promise<EdgeWaitResult> {
  const { clock, logger } = options;
  const fetchEdge = options.fetch ?? globalThis.fetch;
  const started = clock.now();
  const maxDelay = options.maxDelayMs ?? 5_000;
  const progressInterval = options.progressIntervalMs ?? 15_000;
  let delay = options.initialDelayMs ?? 250;
  let nextProgress = started + progressInterval;
  let polls = 0;
  let lastAnswer = "no answer yet";
  let warnedInvalid = false;

  const probe = async (pinned: boolean): Promise<string | undefined> => {
    const remaining = options.deadline - clock.now();
    const headers: Record<string, string> = { "cache-control": "no-cache" };
    if (pinned) headers[VERSION_OVERRIDE_HEADER] = `${options.script}="${options.versionId}"`;
    try {
      const response = await fetchEdge(options.gatewayUrl, {
        method: "GET",
        headers,
        redirect: "manual",
        signal: AbortSignal.timeout(Math.max(1_000, Math.min(10_000, remaining))),
      });
      // The body is not needed; reading it lets the connection be reused.
      await response.arrayBuffer().catch(() => undefined);
      const served = response.headers.get(CONFIG_HEADER) ?? undefined;
      lastAnswer =
        served === undefined
          ? `HTTP ${response.status} without an ${CONFIG_HEADER} header (not the gateway, or no deployment yet)`
          : `HTTP ${response.status} with ${CONFIG_HEADER}: ${served}`;
      if (served === "invalid" && !warnedInvalid) {
        warnedInvalid = true;
        logger.warning(
          `The gateway at ${options.gatewayUrl} answers ${CONFIG_HEADER}: invalid: a version it runs could not load ` +
            "its config bundle. Still waiting for the new version.",
        );
      }
      return served;
    } catch (error) {
      const cause = error instanceof Error && error.cause instanceof Error ? ` (${error.cause.message})` : "";
      lastAnswer = `no answer: ${error instanceof Error ? error.message : String(error)}${cause}`;
      return undefined;
    }
  };

  for (;;) {
    polls++;
    if ((await probe(true)) === options.configVersion) {
      if (!options.servesAll || (await probe(false)) === options.configVersion) {
        const elapsedMs = clock.now() - started;
        logger.info(
          `The edge serves config ${options.configVersion} (version ${options.versionId}) after ` +
            `${formatSpan(elapsedMs)} (${polls} poll${polls === 1 ? "" : "s"}).`,
        );
        return { elapsedMs, polls };
      }
    }
    const now = clock.now();
    if (now >= options.deadline) {
      throw new EdgeNotServingError(
        `The edge at ${options.gatewayUrl} did not serve config ${options.configVersion} (version ` +
          `${options.versionId} of Worker ${options.script}) within ${formatSpan(now - started)}, by the deadline ` +
          `(timeout-minutes). Last answer: ${lastAnswer}. Check that \`gateway-url\` is an address of Worker ` +
          `${options.script} (its route, custom domain or workers.dev URL); a deployment usually reaches every ` +
          "location within seconds.",
      );
    }
    if (now >= nextProgress) {
      logger.info(
        `Waiting for the edge to serve config ${options.configVersion} (${formatSpan(now - started)} elapsed; ` +
          `last answer: ${lastAnswer}).`,
      );
      nextProgress = now + progressInterval;
    }
    await clock.sleep(Math.max(0, Math.min(delay, options.deadline - now)));
    delay = Math.min(maxDelay, delay * 2);
  }
}
