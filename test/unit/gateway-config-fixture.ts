// A production-valid gateway config for the Cloudflare plane and route action tests: one Entra issuer, one route with
// blue/green deployments in key mode (secrets AML_KEY_PRIMARY / AML_KEY_SECONDARY).
import { compileConfigBundle } from "../../src/config/compile.ts";
import { parseGatewayConfig } from "../../src/config/load.ts";
import type { ConfigBundle, GatewayConfig } from "../../src/config/schema.ts";

export const SCORING_URI = "https://credit.westeurope.inference.ml.azure.com/score";

export function configYaml(
  options: { blue?: number; green?: number; primary?: string; audience?: string } = {},
): string {
  return `
description: credit v2 canary
issuers:
  - name: entra
    issuer: https://login.microsoftonline.com/11111111-1111-1111-1111-111111111111/v2.0
    jwksUri: https://login.microsoftonline.com/11111111-1111-1111-1111-111111111111/discovery/v2.0/keys
    audiences: ["${options.audience ?? "api://aml-edge"}"]
    algorithms: [RS256]
    maxTokenAgeSeconds: 3600
    tenants: ["11111111-1111-1111-1111-111111111111"]
policy:
  roles:
    scorer: ["score:credit"]
  rules:
    - name: scorers
      match: { issuers: [entra], role: [Scoring.Invoke] }
      roles: [scorer]
routes:
  - name: credit
    path: /v1/credit/score
    scoringUri: ${SCORING_URI}
    deployments:
      - name: blue
        weight: ${options.blue ?? 90}
      - name: green
        weight: ${options.green ?? 10}
    upstreamAuth:
      mode: key
      primarySecret: ${options.primary ?? "AML_KEY_PRIMARY"}
      secondarySecret: AML_KEY_SECONDARY
`;
}

export function gatewayConfig(options: Parameters<typeof configYaml>[0] = {}): GatewayConfig {
  return parseGatewayConfig(configYaml(options), "gateway.yaml");
}

export function configBundle(options: Parameters<typeof configYaml>[0] = {}): Promise<ConfigBundle> {
  return compileConfigBundle(gatewayConfig(options), { mode: "production", source: "gateway.yaml" });
}
