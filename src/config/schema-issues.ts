// Turns zod's issues into messages a first-time user can act on: what the value is, what the field accepts (with
// an example), and for a misspelt field the spelling that was meant. zod's own messages ("Invalid input: expected
// string, received undefined") say neither where the value came from nor what a good one looks like.
import { z } from "zod";
import type { PathSegment } from "./errors.ts";
import { gatewayConfigSchema } from "./schema.ts";
import { closest } from "./spelling.ts";

export interface SchemaIssue {
  segments: PathSegment[];
  /** Point at the key (an unknown or invalid key) or at the value. */
  at: "key" | "value";
  code: string;
  message: string;
}

/** Marks the issues whose message the schema did not set, so that one can be written here with the value in hand. */
const DEFAULT_MESSAGE = "\u0000default";

/** Pass as `error` to safeParse: the schema's own messages win, every other one is replaced by describeIssue. */
export const schemaErrorMap = (): string => DEFAULT_MESSAGE;

type Issue = z.core.$ZodIssue;

export function describeSchemaIssues(issues: readonly Issue[], input: unknown): SchemaIssue[] {
  return issues.flatMap((issue) => describeIssue(issue, input));
}

function describeIssue(issue: Issue, input: unknown): SchemaIssue[] {
  const segments = issue.path.map((segment) => (typeof segment === "number" ? segment : String(segment)));
  const value = valueAt(input, segments);
  const { pattern, schema } = walkSchema(segments, input);
  const hint = FIELD_HINTS[pattern] ?? FIELD_HINTS[pattern.replace(/^.*?(?=match(?:\.|$))/, "")];
  const custom = issue.message === DEFAULT_MESSAGE ? undefined : issue.message;
  const withHint = (accepted: string): string => (hint ? `${accepted}: ${hint}` : accepted);
  const one = (code: string, problem: string, accepted: string): SchemaIssue[] => [
    { segments, at: "value", code, message: `${problem}; ${accepted}` },
  ];

  switch (issue.code) {
    case "invalid_type": {
      if (segments.length === 0 && (value === null || value === undefined)) {
        return one("empty-config", "the file is empty", `expected a mapping with ${TOP_LEVEL_HINT}`);
      }
      if (value === undefined)
        return one("missing-field", "is missing", `required: ${hint ?? typeName(issue.expected)}`);
      if (issue.expected === "array" && isScalar(value)) {
        return one(
          "wrong-type",
          `is the single value ${describeScalar(value)}, not a list`,
          `write it as a list, e.g. [${String(value)}]${hint ? `; ${hint}` : ""}`,
        );
      }
      return one(
        "wrong-type",
        describeValue(value),
        custom ??
          (hint && /^an? /.test(hint)
            ? `expected ${hint}`
            : withHint(`expected ${typeName(issue.expected)}`)),
      );
    }
    case "too_small": {
      const minimum = Number(issue.minimum);
      if (issue.origin === "array") {
        const count = Array.isArray(value) ? value.length : 0;
        return one(
          "too-small",
          count === 0 ? "is an empty list" : `lists ${count}`,
          custom ?? withHint(`must list at least ${minimum} ${minimum === 1 ? "item" : "items"}`),
        );
      }
      if (issue.origin === "string") {
        return one("too-small", "is an empty string", custom ?? withHint("must not be empty"));
      }
      const bound = issue.inclusive ? `at least ${minimum}` : `greater than ${minimum}`;
      return one("too-small", describeValue(value), custom ?? withHint(`must be ${bound}`));
    }
    case "too_big": {
      const maximum = Number(issue.maximum);
      const bound = issue.inclusive ? `at most ${maximum}` : `less than ${maximum}`;
      if (issue.origin === "array") {
        const count = Array.isArray(value) ? value.length : 0;
        return one("too-large", `lists ${count} items`, custom ?? withHint(`must list ${bound}`));
      }
      if (issue.origin === "string") {
        const length = typeof value === "string" ? value.length : 0;
        return one(
          "too-large",
          `is ${length} characters long`,
          custom ?? withHint(`must be ${bound} characters`),
        );
      }
      return one("too-large", describeValue(value), custom ?? withHint(`must be ${bound}`));
    }
    case "invalid_format": {
      const accepted =
        custom ??
        (issue.format === "url"
          ? "must be an absolute URL, e.g. https://example.com/path"
          : `must match ${issue.pattern}`);
      return one(
        "invalid-format",
        describeValue(value),
        custom === undefined || issue.format === "url" ? withHint(accepted) : accepted,
      );
    }
    case "invalid_value":
      return one(
        "invalid-value",
        describeValue(value),
        custom ?? `must be one of: ${issue.values.map((option) => String(option)).join(", ")}`,
      );
    case "invalid_union": {
      const options =
        "options" in issue && Array.isArray(issue.options) ? issue.options.map(String) : undefined;
      if (options) {
        return one(
          "invalid-value",
          describeValue(value),
          hint ? `must be ${hint}` : `must be one of: ${options.join(", ")}`,
        );
      }
      return one(
        "invalid-value",
        describeValue(value),
        custom ?? withHint("is not any of the accepted forms"),
      );
    }
    case "unrecognized_keys": {
      const accepted = schema instanceof z.ZodObject ? Object.keys(schema.shape) : [];
      return issue.keys.map((key) => {
        const suggestion = closest(key, accepted);
        return {
          segments: [...segments, key],
          at: "key" as const,
          code: "unknown-field",
          message:
            `is not a known field${suggestion ? ` (did you mean "${suggestion}"?)` : ""}; ` +
            (accepted.length > 0 ? `fields accepted here: ${accepted.join(", ")}` : "remove it"),
        };
      });
    }
    case "invalid_key": {
      const key = segments.at(-1);
      const inner = issue.issues.map((item) => item.message).find((message) => message !== DEFAULT_MESSAGE);
      return [
        {
          segments,
          at: "key",
          code: "invalid-key",
          message: `the key ${JSON.stringify(String(key))} is not accepted; ${inner ?? withHint("must be a non-empty string")}`,
        },
      ];
    }
    case "not_multiple_of":
      return one(
        "invalid-value",
        describeValue(value),
        custom ?? `must be a multiple of ${String(issue.divisor)}`,
      );
    default:
      return one("invalid", describeValue(value), custom ?? withHint("is not accepted here"));
  }
}

function valueAt(input: unknown, segments: readonly PathSegment[]): unknown {
  let value = input;
  for (const segment of segments) {
    if (value === null || typeof value !== "object") return undefined;
    value = (value as Record<PathSegment, unknown>)[segment];
  }
  return value;
}

/**
 * Follows a path through the config schema, choosing the branch of a discriminated union by the value in hand, to
 * learn the fields an object accepts and a pattern (`issuers[].jwksUri`, `policy.roles.*`) to look a hint up by.
 */
function walkSchema(segments: readonly PathSegment[], input: unknown): { pattern: string; schema: unknown } {
  let schema: unknown = gatewayConfigSchema;
  let value = input;
  let pattern = "";
  for (const segment of [...segments, undefined]) {
    schema = unwrap(schema);
    if (schema instanceof z.ZodDiscriminatedUnion) {
      const discriminator = schema.def.discriminator;
      const chosen =
        value !== null && typeof value === "object"
          ? (value as Record<string, unknown>)[discriminator]
          : undefined;
      schema = schema.options.find((option) => {
        const literal = unwrap(option instanceof z.ZodObject ? option.shape[discriminator] : undefined);
        return literal instanceof z.ZodLiteral && literal.values.has(chosen as never);
      });
    }
    if (segment === undefined) break;
    value = valueAt(value, [segment]);
    if (schema instanceof z.ZodObject) {
      schema = (schema.shape as Record<string, unknown>)[String(segment)];
      pattern += pattern === "" ? String(segment) : `.${String(segment)}`;
    } else if (schema instanceof z.ZodArray) {
      schema = schema.element;
      pattern += "[]";
    } else if (schema instanceof z.ZodRecord) {
      schema = schema.valueType;
      pattern += ".*";
    } else {
      schema = undefined;
      pattern += typeof segment === "number" ? "[]" : `.${segment}`;
    }
  }
  return { pattern, schema };
}

function unwrap(schema: unknown): unknown {
  let current = schema;
  while (
    current instanceof z.ZodOptional ||
    current instanceof z.ZodDefault ||
    current instanceof z.ZodNullable
  ) {
    current = current.unwrap();
  }
  return current;
}

function isScalar(value: unknown): value is string | number | boolean {
  return typeof value === "string" || typeof value === "number" || typeof value === "boolean";
}

function describeScalar(value: string | number | boolean): string {
  if (typeof value !== "string") return String(value);
  return JSON.stringify(value.length > 80 ? `${value.slice(0, 77)}...` : value);
}

function describeValue(value: unknown): string {
  if (value === undefined) return "is missing";
  if (value === null) return "is empty";
  if (isScalar(value)) return `is ${describeScalar(value)}`;
  if (Array.isArray(value)) return "is a list";
  if (value instanceof Uint8Array) return "is binary data";
  return "is a mapping";
}

function typeName(expected: string): string {
  switch (expected) {
    case "int":
      return "a whole number";
    case "number":
      return "a number";
    case "string":
      return "a string";
    case "boolean":
      return "true or false";
    case "array":
      return "a list";
    case "object":
    case "record":
      return "a mapping (key: value lines)";
    default:
      return expected;
  }
}

const TOP_LEVEL_HINT =
  "issuers, policy and routes (optional: description, status, audit, serverTiming, forwardHeaders); see src/examples/gateway.yaml";

const MATCH_HINT =
  "conditions that must all hold, e.g. role: [ml.score]; fields: issuers, sub, oid, tid, group, app, role, repositoryId, repositoryOwnerId, environment, jobWorkflowRef, claims";
const CLAIM_VALUES_HINT = 'a list of exact values (no wildcards), e.g. ["value"]';

/** What each field is for, by schema pattern; `match.*` hints serve both policy rules and route cohorts. */
const FIELD_HINTS: Readonly<Record<string, string>> = {
  "": `a mapping with ${TOP_LEVEL_HINT}`,
  description: "a label for people, e.g. credit model v7",
  issuers:
    "a list of token issuers, each with name, issuer, jwksUri, audiences, algorithms and maxTokenAgeSeconds",
  "issuers[]":
    "an issuer: a mapping with name, issuer, jwksUri, audiences, algorithms and maxTokenAgeSeconds",
  "issuers[].name": "a short lowercase name that rules refer to, e.g. entra",
  "issuers[].issuer":
    "the exact iss value of the tokens, e.g. https://login.microsoftonline.com/<tenant-id>/v2.0",
  "issuers[].jwksUri":
    "the issuer's key set URL, e.g. https://login.microsoftonline.com/<tenant-id>/discovery/v2.0/keys",
  "issuers[].audiences": "the accepted aud values, e.g. [api://aml-edge]",
  "issuers[].algorithms": "the signature algorithms to accept, e.g. [RS256] (RS*, PS*, ES*, EdDSA, Ed25519)",
  "issuers[].clockToleranceSeconds": "seconds of clock skew to allow, 0 to 60 (default 30)",
  "issuers[].maxTokenAgeSeconds": "the oldest token to accept (now − iat) in seconds, e.g. 3600",
  "issuers[].tenants": "the Entra tenant ids (tid) to accept, e.g. [00000000-0000-0000-0000-000000000000]",
  "issuers[].typ": "the required JOSE typ header, e.g. at+jwt",
  "issuers[].roleClaims": "the claims that carry role names, e.g. [roles] or [scp]",
  "issuers[].requireKid": "whether tokens must name their key with kid (default true)",
  "issuers[].revokedJti": "revoked token ids (jti) of this issuer",
  "issuers[].keyMaxAgeSeconds": "seconds fetched keys stay fresh (default 600)",
  "issuers[].refetchCooldownSeconds":
    "minimum seconds between key fetches caused by an unknown kid (default 30)",
  policy: "a mapping with roles (role name → grants) and rules (who gets which roles)",
  "policy.roles": 'role name → list of grants, e.g. scorer: ["score:credit"]',
  "policy.roles.*": "a list of grants: 'score:<route>', 'pin-deployment:<route>' or 'read-status'",
  "policy.rules": "a list of rules, each with name, match and roles",
  "policy.rules[]": "a rule: a mapping with name, match and roles",
  "policy.rules[].name": "a short lowercase name for the rule, e.g. scorers",
  "policy.rules[].roles": "role names defined under policy.roles, e.g. [scorer]",
  match: MATCH_HINT,
  "match.issuers": "issuer names (from issuers[].name) this condition is limited to, e.g. [entra]",
  "match.sub": CLAIM_VALUES_HINT,
  "match.oid": CLAIM_VALUES_HINT,
  "match.tid": CLAIM_VALUES_HINT,
  "match.group": CLAIM_VALUES_HINT,
  "match.app": CLAIM_VALUES_HINT,
  "match.role": CLAIM_VALUES_HINT,
  "match.repositoryId": 'a list of GitHub repository ids (numbers, as strings), e.g. ["123456789"]',
  "match.repositoryOwnerId": 'a list of GitHub owner ids (numbers, as strings), e.g. ["987654"]',
  "match.environment": CLAIM_VALUES_HINT,
  "match.jobWorkflowRef":
    'a list of workflow refs, e.g. ["org/repo/.github/workflows/deploy.yml@refs/heads/main"]',
  "match.claims": 'claim name → list of exact values, e.g. acr: ["1"]',
  "match.claims.*": CLAIM_VALUES_HINT,
  routes: "a list of routes, each with name, path, scoringUri, deployments and upstreamAuth",
  "routes[]": "a route: a mapping with name, path, scoringUri, deployments and upstreamAuth",
  "routes[].name": "a short lowercase name that grants refer to (score:<name>), e.g. credit",
  "routes[].path": "the exact request path, e.g. /v1/credit/score",
  "routes[].methods": "the HTTP methods accepted, e.g. [POST] (POST, GET, PUT)",
  "routes[].scoringUri":
    "the Azure ML scoring URI, e.g. https://my-endpoint.westeurope.inference.ml.azure.com/score",
  "routes[].deployments":
    "a list of Azure ML deployments with weights adding up to 100, e.g. [{name: blue, weight: 100}]",
  "routes[].deployments[]": "a mapping with name and weight",
  "routes[].deployments[].name": "the Azure ML deployment name, e.g. blue",
  "routes[].deployments[].weight": "the percentage of the route's traffic, 0 to 100",
  "routes[].sticky":
    "a mapping with an optional claim to keep callers on one deployment by, e.g. {claim: oid}",
  "routes[].sticky.claim": "the claim whose value keeps a caller on one deployment (default: sub)",
  "routes[].cohorts": "a list of cohorts, each with name, match and deployment",
  "routes[].cohorts[]": "a cohort: a mapping with name, match and deployment",
  "routes[].cohorts[].name": "a short lowercase name, e.g. beta-testers",
  "routes[].cohorts[].deployment": "one of the route's deployment names",
  "routes[].limits": "a mapping with maxBodyBytes and timeoutMs",
  "routes[].limits.maxBodyBytes": "the largest request body in bytes (default 1048576)",
  "routes[].limits.timeoutMs": "the upstream timeout in milliseconds, up to 300000 (default 60000)",
  "routes[].upstreamAuth":
    "how the gateway authenticates to Azure ML: {mode: key, primarySecret, secondarySecret} or {mode: aml_token, tokenSecret}",
  "routes[].upstreamAuth.mode":
    "key (endpoint keys, with primarySecret and secondarySecret) or aml_token (an Azure ML token, with tokenSecret)",
  "routes[].upstreamAuth.primarySecret":
    "the Worker secret holding the primary endpoint key, e.g. AML_KEY_PRIMARY",
  "routes[].upstreamAuth.secondarySecret":
    "the Worker secret holding the secondary endpoint key, e.g. AML_KEY_SECONDARY",
  "routes[].upstreamAuth.active": "which key is sent: primary or secondary",
  "routes[].upstreamAuth.tokenSecret": "the Worker secret holding the endpoint's token JSON, e.g. AML_TOKEN",
  status: "a mapping with path, e.g. {path: /.aml-edge/status}",
  "status.path": "the status endpoint path, e.g. /.aml-edge/status",
  audit: "a mapping with console (true/false) and an optional queue binding",
  "audit.console": "whether audit records go to the Worker log (default true)",
  "audit.queue": "a Queue binding name for audit records, e.g. AUDIT_QUEUE",
  serverTiming: "whether to send a Server-Timing header (default false)",
  forwardHeaders: "extra lower-case request headers to forward to Azure ML, e.g. [x-request-id]",
  "forwardHeaders[]": "a lower-case header name, e.g. x-request-id",
};
