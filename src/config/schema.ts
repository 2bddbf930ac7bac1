// The gateway config: one schema shared by the Worker (which enforces it per request) and the actions (which
// validate, lint and publish it). Runtime-agnostic: no Node or Workers APIs here, so both sides can import it.
import { z } from "zod";

/** Signature algorithms a key-set issuer may pin. HS* is accepted by the schema only so the security lint can
 * name it as the problem; the Worker never verifies an HS* token against a key set. */
export const ASYMMETRIC_ALGORITHMS = [
  "RS256",
  "RS384",
  "RS512",
  "PS256",
  "PS384",
  "PS512",
  "ES256",
  "ES384",
  "ES512",
  "EdDSA",
  "Ed25519",
] as const;
export const SYMMETRIC_ALGORITHMS = ["HS256", "HS384", "HS512"] as const;
export const ALGORITHMS = [...ASYMMETRIC_ALGORITHMS, ...SYMMETRIC_ALGORITHMS] as const;
export type Algorithm = (typeof ALGORITHMS)[number];

/** What a role can be granted. `score` and `pin-deployment` are per route; `read-status` is gateway-wide. */
export const PERMISSIONS = ["score", "pin-deployment", "read-status"] as const;
export type Permission = (typeof PERMISSIONS)[number];

export const MAX_CLOCK_TOLERANCE_SECONDS = 60;

const name = z
  .string()
  .regex(
    /^[a-z][a-z0-9-]{0,62}$/,
    "must be lowercase letters, digits and '-', starting with a letter (≤ 63)",
  );

/** Azure ML deployment names: 3–32 characters, letters, digits and '-', starting with a letter. */
const deploymentName = z
  .string()
  .regex(
    /^[a-zA-Z][a-zA-Z0-9-]{2,31}$/,
    "must be an Azure ML deployment name: 3–32 letters, digits or '-', starting with a letter",
  );

/** Worker secret binding names, e.g. AML_KEY_PRIMARY. */
const bindingName = z
  .string()
  .regex(
    /^[A-Z][A-Z0-9_]{0,63}$/,
    "must be a binding name: upper-case letters, digits and '_' (e.g. AML_KEY_PRIMARY)",
  );

const claimValues = z.array(z.string().min(1)).min(1, "must list at least one value");

/**
 * Names a set of callers. Every field given must match (AND); within a field, any listed value matches (OR).
 * A claim that holds an array matches when any element equals a listed value.
 */
export const principalSchema = z
  .object({
    /** Restrict to tokens from these issuers (by issuer `name`). Not a condition on its own. */
    issuers: z.array(name).min(1).optional(),
    sub: claimValues.optional(),
    /** Entra object id of a user, group-less service principal or managed identity. */
    oid: claimValues.optional(),
    tid: claimValues.optional(),
    /** A value of the `groups` claim. */
    group: claimValues.optional(),
    /** The calling application: `azp` (v2 tokens) or `appid` (v1 tokens). */
    app: claimValues.optional(),
    /** A role read from the issuer's `roleClaims` (e.g. Entra app roles, `scp` scopes). */
    role: claimValues.optional(),
    /** GitHub Actions OIDC: immutable repository and owner ids, environment, reusable workflow. */
    repositoryId: claimValues.optional(),
    repositoryOwnerId: claimValues.optional(),
    environment: claimValues.optional(),
    jobWorkflowRef: claimValues.optional(),
    /** Any other claim, by name. */
    claims: z.record(z.string().min(1), claimValues).optional(),
  })
  .strict();
export type Principal = z.infer<typeof principalSchema>;

export const issuerSchema = z
  .object({
    name,
    /** The exact `iss` value; compared byte for byte (a trailing slash matters). */
    issuer: z.string().min(1),
    /** The issuer's key set. Keys are chosen by this issuer only, never merged with another's. */
    jwksUri: z.url({ error: "must be an absolute URL" }),
    /** Accepted `aud` values: the token must carry one of them. */
    audiences: z.array(z.string()).optional(),
    algorithms: z.array(z.enum(ALGORITHMS)).min(1, "must pin at least one algorithm"),
    clockToleranceSeconds: z.number().int().min(0).default(30),
    /** Maximum token age (now − iat) and lifetime (exp − iat), in seconds. */
    maxTokenAgeSeconds: z.number().int().positive().optional(),
    /** Entra: accepted tenant ids (`tid`). */
    tenants: z.array(z.string().min(1)).min(1).optional(),
    /** Required JOSE `typ` header (e.g. `at+jwt`), when the issuer sets one. */
    typ: z.string().min(1).optional(),
    /** Claims that carry role names. `scp` is split on spaces. */
    roleClaims: z.array(z.string().min(1)).default(["roles"]),
    /** Refuse tokens without a `kid` header (default). */
    requireKid: z.boolean().default(true),
    /** Revoked token ids (`jti`); checked after verification, keyed by (issuer, jti), never by token text. */
    revokedJti: z.array(z.string().min(1)).default([]),
    /** How long fetched keys are fresh before a background refresh. */
    keyMaxAgeSeconds: z.number().int().positive().default(600),
    /** Minimum time between two key-set fetches caused by an unknown `kid`. */
    refetchCooldownSeconds: z.number().int().min(1).default(30),
  })
  .strict();
export type IssuerConfig = z.infer<typeof issuerSchema>;

/** `score:<route>`, `pin-deployment:<route>` or `read-status`. */
const grant = z
  .string()
  .regex(
    /^(?:(?:score|pin-deployment):[a-z][a-z0-9-]{0,62}|read-status)$/,
    "must be 'score:<route>', 'pin-deployment:<route>' or 'read-status'",
  );

export const ruleSchema = z
  .object({
    name,
    match: principalSchema,
    /** Gateway roles granted to callers that match. */
    roles: z.array(name).min(1),
  })
  .strict();
export type Rule = z.infer<typeof ruleSchema>;

export const policySchema = z
  .object({
    /** Role name → grants. */
    roles: z.record(name, z.array(grant).min(1)),
    rules: z.array(ruleSchema).default([]),
  })
  .strict();
export type Policy = z.infer<typeof policySchema>;

export const upstreamAuthSchema = z.discriminatedUnion("mode", [
  z
    .object({
      mode: z.literal("key"),
      primarySecret: bindingName,
      secondarySecret: bindingName,
      /** Which endpoint key the gateway sends; rotation switches this, then regenerates the other. */
      active: z.enum(["primary", "secondary"]).default("primary"),
    })
    .strict(),
  z
    .object({
      mode: z.literal("aml_token"),
      /** A secret holding the JSON from the endpoint's getToken: accessToken, expiryTimeUtc, refreshAfterTimeUtc. */
      tokenSecret: bindingName,
    })
    .strict(),
]);
export type UpstreamAuth = z.infer<typeof upstreamAuthSchema>;

export const routeSchema = z
  .object({
    name,
    /** The exact request path this route serves, e.g. /v1/fraud/score. */
    path: z
      .string()
      .regex(
        /^\/(?:[A-Za-z0-9._~-]+\/)*[A-Za-z0-9._~-]*$/,
        "must be an absolute path of unreserved characters",
      ),
    methods: z
      .array(z.enum(["POST", "GET", "PUT"]))
      .min(1)
      .default(["POST"]),
    /** The Azure ML endpoint scoring URI. */
    scoringUri: z.url({ error: "must be an absolute URL" }),
    deployments: z
      .array(z.object({ name: deploymentName, weight: z.number().min(0).max(100) }).strict())
      .min(1, "must list at least one deployment"),
    /** Sticky assignment: by default a hash of iss + sub; or a hash of iss + this claim. */
    sticky: z
      .object({ claim: z.string().min(1).optional() })
      .strict()
      .default({}),
    /** Callers matching a cohort always go to its deployment, whatever the weights. First match wins. */
    cohorts: z
      .array(z.object({ name, match: principalSchema, deployment: deploymentName }).strict())
      .default([]),
    limits: z
      .object({
        maxBodyBytes: z
          .number()
          .int()
          .positive()
          .max(100 * 1024 * 1024)
          .default(1024 * 1024),
        timeoutMs: z.number().int().positive().max(300_000).default(60_000),
      })
      .strict()
      .default({ maxBodyBytes: 1024 * 1024, timeoutMs: 60_000 }),
    upstreamAuth: upstreamAuthSchema,
  })
  .strict();
export type RouteConfig = z.infer<typeof routeSchema>;

export const gatewayConfigSchema = z
  .object({
    /** A label for people (e.g. a model version); the config version itself is a hash of the content. */
    description: z.string().optional(),
    issuers: z.array(issuerSchema).min(1, "must list at least one issuer"),
    policy: policySchema,
    routes: z.array(routeSchema).min(1, "must list at least one route"),
    status: z
      .object({ path: z.string().regex(/^\/[A-Za-z0-9._~/-]*$/) })
      .strict()
      .default({ path: "/.aml-edge/status" }),
    audit: z
      .object({
        console: z.boolean().default(true),
        /** A Queue binding that receives every audit record (at-least-once delivery). */
        queue: bindingName.optional(),
      })
      .strict()
      .default({ console: true }),
    /** Emit a Server-Timing header (verify, upstream). Off by default: timings are for benchmarks and debugging. */
    serverTiming: z.boolean().default(false),
    /** Extra request headers forwarded to Azure ML (lower-case). Content headers are always forwarded. */
    forwardHeaders: z.array(z.string().regex(/^[a-z0-9-]+$/)).default([]),
  })
  .strict();
/** The config as written (defaults may be omitted). */
export type GatewayConfigInput = z.input<typeof gatewayConfigSchema>;
/** The config after parsing, with every default filled in. */
export type GatewayConfig = z.infer<typeof gatewayConfigSchema>;

export const jwkSchema = z.looseObject({ kty: z.string(), kid: z.string().optional() });
export const jwksSchema = z.looseObject({ keys: z.array(jwkSchema) });

/**
 * What ships inside a Worker version as the JSON binding `AML_EDGE_CONFIG`: the parsed config, its version, the
 * lint mode it passed, and a snapshot of each issuer's key set taken when it was compiled, so that a cold isolate
 * verifies its first request without fetching.
 */
export const CONFIG_BUNDLE_FORMAT = "aml-edge/gateway-config@1";
export const configBundleSchema = z
  .object({
    format: z.literal(CONFIG_BUNDLE_FORMAT),
    version: z.string().min(1),
    /** `local` allows http:// key sets and upstreams on loopback only (aml-edge gateway dev, the sandbox). */
    mode: z.enum(["production", "local"]),
    config: gatewayConfigSchema,
    keySnapshots: z
      .record(z.string(), z.object({ fetchedAt: z.string(), jwks: jwksSchema }).strict())
      .default({}),
  })
  .strict();
export type ConfigBundle = z.infer<typeof configBundleSchema>;

/** The binding names the Worker reads. */
export const CONFIG_BINDING = "AML_EDGE_CONFIG";
