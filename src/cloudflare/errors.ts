// How the Cloudflare plane reports what went wrong. Cloudflare answers with an envelope of numbered errors; the few
// codes a deploy meets each get a sentence on what to do (the right token, the missing permission by the name the
// dashboard shows, the Worker name), because the bare "Authentication error" tells nobody which of five things to fix.
// `userFixable` tells the action whether the user has something to change (reported without a stack) or something
// broke. This module imports nothing: the actions map it onto their own ConfigurationError.

/** Cloudflare's codes that a deploy meets, by meaning. */
export const CF_CODES = {
  invalidToken: 1000,
  authenticationError: 10000,
  workerNotFound: 10007,
  malformedUpload: 10021,
  secretEditDuringSplit: 10215,
  secretsChangedSinceVersion: 10220,
} as const;

/** What a call was for, so an error can say which permission, on what, the token lacks. */
export interface CallContext {
  /** "Uploading a version of Worker aml-edge-gateway". */
  what: string;
  /** The permission the call needs, as the dashboard names it: "Workers Scripts Write on Worker aml-edge-gateway". */
  permission?: string;
  /** Where the token came from, for a refused token: "the `cloudflare-api-token` input". */
  token?: string;
  /** The Worker the call is about, for 10007. */
  script?: string;
  accountId?: string;
}

export interface CloudflareErrorDetail {
  code: number;
  message: string;
}

/** Cloudflare refused or failed a call; `codes` are Cloudflare's own, `status` the HTTP status. */
export class CloudflareApiError extends Error {
  override name = "CloudflareApiError";
  readonly status: number | undefined;
  readonly codes: readonly number[];
  readonly errors: readonly CloudflareErrorDetail[];
  /** The user's setup needs changing (token, permission, names); otherwise Cloudflare or this code failed. */
  readonly userFixable: boolean;

  constructor(
    message: string,
    details: { status: number | undefined; errors: readonly CloudflareErrorDetail[]; userFixable: boolean },
    options?: ErrorOptions,
  ) {
    super(message, options);
    this.status = details.status;
    this.errors = details.errors;
    this.codes = details.errors.map((error) => error.code);
    this.userFixable = details.userFixable;
  }

  has(code: number): boolean {
    return this.codes.includes(code);
  }
}

/**
 * A token that must not be used: disabled, not yet valid, expired, or expiring before the step's deadline; or a setup
 * the plane cannot work with (a bootstrap token that may not mint what is needed). Always the user's to fix.
 */
export class CloudflareCredentialError extends Error {
  override name = "CloudflareCredentialError";
  readonly userFixable = true;
}

/** The edge never served what was deployed, within the deadline. */
export class EdgeNotServingError extends Error {
  override name = "EdgeNotServingError";
  readonly userFixable = false;
}

/** Builds the error for a refused call: Cloudflare's own words, then what to do about them. */
export function cloudflareApiError(
  context: CallContext,
  status: number | undefined,
  errors: readonly CloudflareErrorDetail[],
  cause?: unknown,
): CloudflareApiError {
  const codes = errors.map((error) => error.code);
  const said =
    errors.length === 0
      ? `HTTP ${status ?? "(no response)"}`
      : `HTTP ${status ?? "(no response)"}, ${errors.map((error) => `${error.code} ${error.message}`).join("; ")}`;
  const advice = adviceFor(context, status, codes);
  const userFixable =
    status === 401 ||
    status === 403 ||
    codes.includes(CF_CODES.invalidToken) ||
    codes.includes(CF_CODES.authenticationError) ||
    codes.includes(CF_CODES.workerNotFound);
  return new CloudflareApiError(
    `${context.what}: Cloudflare answered ${said}.${advice === "" ? "" : ` ${advice}`}`,
    { status, errors, userFixable },
    cause === undefined ? undefined : { cause },
  );
}

function adviceFor(context: CallContext, status: number | undefined, codes: readonly number[]): string {
  const token = context.token ?? "the Cloudflare API token";
  if (status === 401 || codes.includes(CF_CODES.invalidToken)) {
    return (
      `Cloudflare does not accept ${token}: it is unknown, deleted, disabled, expired or not yet valid. ` +
      "Check it with GET /user/tokens/verify (or /accounts/ACCOUNT/tokens/verify for an account token) and " +
      "issue a new one if it is not active."
    );
  }
  if (codes.includes(CF_CODES.workerNotFound)) {
    return (
      `There is no Worker ${context.script === undefined ? "by that name" : JSON.stringify(context.script)} on ` +
      `account ${context.accountId ?? "(unknown)"}: check \`worker-name\` and \`cloudflare-account-id\`. The ` +
      'first publish creates the Worker when its token holds "Workers Scripts Write" on the whole account.'
    );
  }
  if (status === 403 || codes.includes(CF_CODES.authenticationError)) {
    return context.permission === undefined
      ? `${capitalize(token)} lacks the permission this call needs.`
      : `${capitalize(token)} lacks the permission this call needs: "${context.permission}". Add it to the ` +
          "token's policies (dashboard: My Profile or Manage Account → API Tokens → edit the token).";
  }
  if (codes.includes(CF_CODES.secretEditDuringSplit)) {
    return (
      "A secret was edited while a gradual deployment is in place. aml-edge changes secrets only by uploading a " +
      "new version with them; this call should not have been made. Please report it."
    );
  }
  if (codes.includes(CF_CODES.malformedUpload)) {
    return "Cloudflare could not read the upload aml-edge built. This is a bug in aml-edge; please report it with this message.";
  }
  if (status === 429)
    return "Cloudflare is rate-limiting this account; wait a minute and run the step again.";
  if (status !== undefined && status >= 500) {
    return "Cloudflare failed to answer; run the step again. If it keeps failing, check https://www.cloudflarestatus.com.";
  }
  return "";
}

function capitalize(text: string): string {
  return text.charAt(0).toUpperCase() + text.slice(1);
}

/** The envelope's errors, or none when the body is not Cloudflare's envelope. */
export function envelopeErrors(body: unknown): CloudflareErrorDetail[] {
  if (typeof body !== "object" || body === null) return [];
  const errors = (body as { errors?: unknown }).errors;
  if (!Array.isArray(errors)) return [];
  return errors.flatMap((error) => {
    if (typeof error !== "object" || error === null) return [];
    const { code, message } = error as { code?: unknown; message?: unknown };
    return typeof code === "number" ? [{ code, message: typeof message === "string" ? message : "" }] : [];
  });
}
