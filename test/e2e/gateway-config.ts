// The gateway config the e2e tests publish against the sandbox: one route, credit, to an endpoint of the ARM sandbox;
// Entra's users and apps with the Scoring.Invoke role may score on it. With `statusForJob`, the sandbox's GitHub
// issuer is trusted too and this repository's workflows (matched by its immutable id) may read the status route, as
// rotate-keys needs; its key set is plain http on loopback, which only the local lint mode allows.
import { DEFAULT_JOB_CLAIMS } from "../../src/sandbox/github-oidc.ts";
import type { Sandbox } from "../../src/sandbox/sandbox.ts";

/** The audience the callers' Entra tokens carry. */
export const CALLER_AUDIENCE = "api://aml-edge";
/** The audience the job's GitHub token is asked for when it reads the status route. */
export const GATEWAY_AUDIENCE = "api://aml-edge-gateway";
export const SCORE_PATH = "/v1/credit/score";

export interface SandboxGatewayOptions {
  scoringUri: string;
  /** Deployment name → weight. */
  deployments: Record<string, number>;
  upstreamAuth: { mode: "key"; primarySecret?: string } | { mode: "aml_token" };
  statusForJob?: boolean;
}

export function sandboxGatewayYaml(local: Sandbox, options: SandboxGatewayOptions): string {
  const { entra, github } = local;
  const githubIssuer = `
  - name: github
    issuer: ${github.issuer}
    jwksUri: ${github.jwksUri}
    audiences: ["${GATEWAY_AUDIENCE}"]
    algorithms: [RS256]
    maxTokenAgeSeconds: 600`;
  const statusRule = `
    - name: rotate-keys-workflow
      match: { issuers: [github], repositoryId: ["${DEFAULT_JOB_CLAIMS.repository_id}"] }
      roles: [key-rotation]`;
  const auth = options.upstreamAuth;
  return `
description: credit through the local clouds
issuers:
  - name: entra
    issuer: ${entra.issuer}
    jwksUri: ${entra.jwksUri}
    audiences: ["${CALLER_AUDIENCE}"]
    algorithms: [RS256]
    maxTokenAgeSeconds: 3600
    tenants: ["${entra.tenantId}"]${options.statusForJob ? githubIssuer : ""}
policy:
  roles:
    scorer: ["score:credit"]${options.statusForJob ? `\n    key-rotation: ["read-status"]` : ""}
  rules:
    - name: scorers
      match: { issuers: [entra], role: [Scoring.Invoke] }
      roles: [scorer]${options.statusForJob ? statusRule : ""}
routes:
  - name: credit
    path: ${SCORE_PATH}
    scoringUri: ${options.scoringUri}
    deployments:${Object.entries(options.deployments)
      .map(([name, weight]) => `\n      - name: ${name}\n        weight: ${weight}`)
      .join("")}
    upstreamAuth:
${
  auth.mode === "key"
    ? `      mode: key
      primarySecret: ${auth.primarySecret ?? "AML_KEY_PRIMARY"}
      secondarySecret: AML_KEY_SECONDARY`
    : `      mode: aml_token
      tokenSecret: AML_TOKEN`
}
`;
}
