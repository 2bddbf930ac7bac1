// Where a step runs, from the runner's variables: the workflow run's URL (for version messages, so a Worker version
// explains itself in the dashboard) and a short label (in minted token names, so a leftover token says which job
// made it).

export function runUrl(env: Readonly<Record<string, string | undefined>>): string | undefined {
  const { GITHUB_SERVER_URL: server, GITHUB_REPOSITORY: repository, GITHUB_RUN_ID: runId } = env;
  if (server === undefined || repository === undefined || runId === undefined) return undefined;
  const attempt = env.GITHUB_RUN_ATTEMPT;
  return `${server}/${repository}/actions/runs/${runId}${attempt === undefined || attempt === "" ? "" : `/attempts/${attempt}`}`;
}

export function jobLabel(env: Readonly<Record<string, string | undefined>>): string {
  if (env.GITHUB_REPOSITORY === undefined || env.GITHUB_RUN_ID === undefined) return "local run";
  return `${env.GITHUB_REPOSITORY} run ${env.GITHUB_RUN_ID}.${env.GITHUB_RUN_ATTEMPT ?? "1"}`;
}

/** A version message's parts followed by the commit and the run it came from, as Cloudflare shows `workers/message`. */
export function withJobContext(
  parts: readonly string[],
  env: Readonly<Record<string, string | undefined>>,
): string {
  const all = [...parts];
  if (env.GITHUB_SHA !== undefined && env.GITHUB_SHA !== "") all.push(`commit ${env.GITHUB_SHA}`);
  const run = runUrl(env);
  if (run !== undefined) all.push(`run ${run}`);
  return all.join("; ");
}
