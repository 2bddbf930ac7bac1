// Every error the local Cloudflare API answers with, in one table: the codes real Cloudflare uses where the
// contract (notes/cf-contract.md) names them, and sandbox-chosen 100xx codes for rule violations Cloudflare reports
// with codes nobody documents. Clients act on `errors[].code`, so a code here never changes meaning.

export const ERROR_CODES = {
  /** Unknown, deleted, expired, disabled or not-yet-valid token (any endpoint but verify). Cloudflare's code. */
  invalidToken: { code: 1000, status: 401 },
  /** No Authorization header at all. Cloudflare's code. */
  missingCredentials: { code: 9106, status: 400 },
  /** The token's IP condition excludes the caller. Cloudflare's code. */
  ipNotAllowed: { code: 9109, status: 403 },
  /** No route at this path. Cloudflare's code. */
  noRoute: { code: 7000, status: 404 },
  /** The path exists, the method does not. Cloudflare's code. */
  methodNotAllowed: { code: 7001, status: 405 },
  /** The token is valid but lacks the permission (or the account is not its own). Cloudflare's code. */
  forbidden: { code: 10000, status: 403 },
  /** A JSON body that is not JSON, or a field of the wrong type. Sandbox choice. */
  invalidBody: { code: 10001, status: 400 },
  /** Unknown Worker. Cloudflare's code. */
  unknownWorker: { code: 10007, status: 404 },
  /** Worker name not accepted. Sandbox choice. */
  invalidWorkerName: { code: 10016, status: 400 },
  /** Malformed multipart body or metadata, or a version that fails to start. Cloudflare's code. */
  invalidUpload: { code: 10021, status: 400 },
  /** Deployment: more than two versions, or none. Sandbox choice. */
  deploymentVersionCount: { code: 10030, status: 400 },
  /** Deployment: a percentage outside 0–100, or a sum other than 100. Sandbox choice. */
  deploymentPercentages: { code: 10031, status: 400 },
  /** Deployment: a version id that is not a version of this Worker. Sandbox choice. */
  deploymentUnknownVersion: { code: 10032, status: 400 },
  /** Deployment: a version older than the last 100. Sandbox choice. */
  deploymentVersionTooOld: { code: 10033, status: 400 },
  /** Deployment: the same version twice. Sandbox choice. */
  deploymentDuplicateVersion: { code: 10034, status: 400 },
  /** Deployment: strategy other than "percentage", or malformed annotations. Sandbox choice. */
  deploymentInvalid: { code: 10035, status: 400 },
  /** The live deployment cannot be deleted. Sandbox choice. */
  deploymentLive: { code: 10036, status: 400 },
  /** Token create/update body: policies, groups, resources, dates. Sandbox choice. */
  invalidTokenRequest: { code: 10040, status: 400 },
  /** No such token id. Sandbox choice. */
  unknownToken: { code: 10041, status: 404 },
  /** No such secret on the Worker. Sandbox choice. */
  unknownSecret: { code: 10050, status: 404 },
  /** A secret named like a binding of another type. Sandbox choice. */
  secretNameTaken: { code: 10051, status: 400 },
  /** No such deployment. Sandbox choice. */
  unknownDeployment: { code: 10053, status: 404 },
  /** No such version. Sandbox choice. */
  unknownVersion: { code: 10054, status: 404 },
  /** A failure of the sandbox itself (a bug), never a caller's mistake. Sandbox choice. */
  internal: { code: 10002, status: 500 },
  /** Secret change while the latest version is not the one deployed at 100 %. Cloudflare's code. */
  secretDuringGradualDeployment: { code: 10215, status: 400 },
} as const;

export type ErrorKind = keyof typeof ERROR_CODES;

export const INVALID_TOKEN_MESSAGE = "Invalid API Token";
export const FORBIDDEN_MESSAGE = "Authentication error";
export const UNKNOWN_WORKER_MESSAGE = "This Worker does not exist on your account.";
/** Cloudflare's wording, verbatim: wrangler and people search for it. */
export const SECRET_DURING_GRADUAL_DEPLOYMENT_MESSAGE =
  "Secret edit failed. You attempted to modify a secret, but the latest version of your Worker isn't currently deployed. Please ensure that the latest version of your Worker is fully deployed (wrangler versions deploy) before modifying secrets. Alternatively, you can use the Cloudflare dashboard to modify secrets and deploy the version. Refer to https://developers.cloudflare.com/workers/configuration/versions-and-deployments/gradual-deployments/#gradual-deployments-for-workers-with-secrets";

export class CloudflareApiError extends Error {
  readonly status: number;
  readonly code: number;
  constructor(kind: ErrorKind, message: string) {
    super(message);
    this.name = "CloudflareApiError";
    this.status = ERROR_CODES[kind].status;
    this.code = ERROR_CODES[kind].code;
  }
}

export function apiError(kind: ErrorKind, message: string): CloudflareApiError {
  return new CloudflareApiError(kind, message);
}

export const invalidToken = () => apiError("invalidToken", INVALID_TOKEN_MESSAGE);
export const forbidden = () => apiError("forbidden", FORBIDDEN_MESSAGE);
export const unknownWorker = () => apiError("unknownWorker", UNKNOWN_WORKER_MESSAGE);
export const invalidUpload = (message: string) => apiError("invalidUpload", message);
