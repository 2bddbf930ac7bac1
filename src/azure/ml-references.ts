// What to deploy and where, decided from inputs and the endpoint's traffic before anything in Azure changes: the model
// reference (a registered version or a repository folder) and the blue/green slot.
import { ConfigurationError } from "./errors.ts";

export type ModelReference =
  | { kind: "registered"; name: string; version: string }
  | { kind: "folder"; path: string };

const ASSET_NAME = /^[a-zA-Z0-9][a-zA-Z0-9\-_.]{0,254}$/;

/** `azureml:NAME:VERSION` is a registered version; anything else is a folder in the repository. */
export function parseModelReference(value: string, input = "model"): ModelReference {
  if (!value.startsWith("azureml:")) return { kind: "folder", path: value };
  const match = /^azureml:([^:@]+):([^:@]+)$/.exec(value);
  if (match === null || match[1] === undefined || match[2] === undefined) {
    throw new ConfigurationError(
      `Input \`${input}\`: ${JSON.stringify(value)} is not a registered model reference. Use azureml:NAME:VERSION ` +
        "with an explicit version (for example azureml:credit:3), or a model folder in the repository.",
    );
  }
  const [, name, version] = match;
  if (!ASSET_NAME.test(name) || !/^[a-zA-Z0-9][a-zA-Z0-9\-_.]{0,63}$/.test(version)) {
    throw new ConfigurationError(
      `Input \`${input}\`: ${JSON.stringify(value)} names no valid model version: the name takes letters, digits, ` +
        "'-', '_' and '.', starting with a letter or digit, and the version likewise (for example azureml:credit:3).",
    );
  }
  return { kind: "registered", name, version };
}

export type Slot = "blue" | "green";

/**
 * Which of blue and green to deploy to: the one not serving live traffic, so a new version never lands on the
 * deployment users are calling. Both serving means a rollout is half done; picking either would replace a live model.
 */
export function chooseSlot(traffic: Readonly<Record<string, number>>, endpoint: string): Slot {
  const blue = traffic.blue ?? 0;
  const green = traffic.green ?? 0;
  if (blue > 0 && green > 0) {
    throw new ConfigurationError(
      `Endpoint ${endpoint} sends traffic to both blue (${blue}%) and green (${green}%): a rollout is in progress, and ` +
        "either slot would replace a live model. Finish it (promote or roll back) first, or name the deployment to " +
        "update with the `deployment` input.",
    );
  }
  if (blue > 0) return "green";
  return "blue";
}
