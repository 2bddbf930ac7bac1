// The config the route action publishes: the YAML file read and checked (schema, references, security lint), then the
// `weights` input applied to the route it names. All of it is local, so a bad file or bad weights fail the step
// before Azure or Cloudflare is asked anything; each problem is reported as the user's to fix, with where it is.
import { readFile } from "node:fs/promises";
import { resolve } from "node:path";
import { ConfigError } from "../../config/errors.ts";
import { type LintFinding, lintConfig } from "../../config/lint.ts";
import { loadGatewayConfig } from "../../config/load.ts";
import type { GatewayConfig, RouteConfig } from "../../config/schema.ts";
import { ConfigurationError } from "../common/errors.ts";
import type { RouteSettings } from "./settings.ts";

const WEIGHT_TOLERANCE = 1e-9;

export interface PreparedConfig {
  config: GatewayConfig;
  /** The file as named by the `config` input, for messages. */
  source: string;
  /** Lint warnings (errors fail the step). */
  warnings: LintFinding[];
  /** The weights the `weights` input set, with the ones the file had. */
  weights?: { route: string; before: Record<string, number>; after: Record<string, number> };
}

export async function prepareConfig(settings: RouteSettings, workspaceDir: string): Promise<PreparedConfig> {
  const source = settings.config;
  const path = resolve(workspaceDir, source);
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (error) {
    const code = (error as { code?: unknown }).code;
    throw new ConfigurationError(
      code === "ENOENT" || code === "EISDIR"
        ? `Input \`config\`: there is no config file at ${path} (the path is taken relative to the checkout, ` +
            "GITHUB_WORKSPACE); check out the repository first (actions/checkout) and name the gateway's YAML file."
        : `Input \`config\`: could not read ${path}: ${(error as Error).message}`,
      { cause: error },
    );
  }
  let config: GatewayConfig;
  let warnings: LintFinding[];
  try {
    ({ config, warnings } = loadGatewayConfig(text, source, { mode: settings["lint-mode"] }));
  } catch (error) {
    if (error instanceof ConfigError) {
      throw new ConfigurationError(`The gateway config ${source} cannot be published:\n${error.message}`, {
        cause: error,
      });
    }
    throw error;
  }
  if (settings.weights === undefined) return { config, source, warnings };

  const route = chooseRoute(config, settings.route);
  const before = Object.fromEntries(
    route.deployments.map((deployment) => [deployment.name, deployment.weight]),
  );
  const known = route.deployments.map((deployment) => deployment.name);
  const unknown = Object.keys(settings.weights).filter((name) => !known.includes(name));
  if (unknown.length > 0) {
    throw new ConfigurationError(
      `Input \`weights\`: route ${route.name} has no deployment ${unknown.join(" or ")}; its deployments are ` +
        `${known.join(", ")}. Add a deployment to the config to give it a weight.`,
    );
  }
  const after = { ...before, ...settings.weights };
  const sum = Object.values(after).reduce((total, weight) => total + weight, 0);
  if (Math.abs(sum - 100) > WEIGHT_TOLERANCE) {
    throw new ConfigurationError(
      `Input \`weights\`: route ${route.name}'s weights would be ${formatWeights(after)}, which sum to ${sum}; ` +
        "they must sum to 100. Give every deployment's weight, such as " +
        `${known.map((name, index) => `${name}=${index === 0 ? 100 : 0}`).join(",")}.`,
    );
  }
  const routes: RouteConfig[] = config.routes.map((candidate) =>
    candidate.name !== route.name
      ? candidate
      : {
          ...candidate,
          deployments: candidate.deployments.map((deployment) => ({
            ...deployment,
            weight: after[deployment.name] ?? deployment.weight,
          })),
        },
  );
  const weighted: GatewayConfig = { ...config, routes };
  // The weights can change what the lint says (a deployment at 0 % that a cohort still names, say).
  const findings = lintConfig(weighted, { mode: settings["lint-mode"] });
  const errors = findings.filter((finding) => finding.severity === "error");
  if (errors.length > 0) {
    throw new ConfigurationError(
      `Input \`weights\`: with ${formatWeights(after)} on route ${route.name}, the config fails the security ` +
        `lint:\n${errors.map((finding) => `${source} ${finding.path}: ${finding.message}`).join("\n")}`,
    );
  }
  return {
    config: weighted,
    source,
    warnings: findings.filter((finding) => finding.severity === "warning"),
    weights: { route: route.name, before, after },
  };
}

function chooseRoute(config: GatewayConfig, name: string | undefined): RouteConfig {
  const names = config.routes.map((route) => route.name);
  if (name === undefined) {
    const [only, ...others] = config.routes;
    if (only === undefined || others.length > 0) {
      throw new ConfigurationError(
        `Input \`route\`: is required with \`weights\` when the config has several routes; name one of ${names.join(", ")}.`,
      );
    }
    return only;
  }
  const route = config.routes.find((candidate) => candidate.name === name);
  if (route === undefined) {
    throw new ConfigurationError(
      `Input \`route\`: the config has no route ${JSON.stringify(name)}; its routes are ${names.join(", ")}.`,
    );
  }
  return route;
}

export function formatWeights(weights: Record<string, number>): string {
  return Object.entries(weights)
    .map(([name, weight]) => `${name}=${weight}`)
    .join(",");
}
