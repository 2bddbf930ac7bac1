// Account-owned API tokens for the local Cloudflare: creation with policies (permission groups on the account or on
// one Worker by its tag), expiry, not-before, disabled status and IP conditions checked on every call, deletion
// effective at once. The bootstrap token of the composed sandbox is one of these, holding only "API Tokens Write",
// which on Cloudflare may mint tokens with any permission of the account.
import { randomBytes } from "node:crypto";
import { apiError, forbidden, invalidToken } from "./errors.ts";
import {
  ACCOUNT_SCOPE,
  badToken,
  groupId,
  type IpRule,
  ipAllowed,
  isObject,
  PERMISSION_GROUPS,
  type Permission,
  type PermissionGroup,
  parseCondition,
  parsePolicies,
  policiesAllow,
  type TokenCondition,
  type TokenPolicy,
  WORKER_SCOPE,
} from "./policies.ts";

export type TokenStatus = "active" | "disabled" | "expired";

/** The token as the API shows it (never with its value, except in the create response). */
export interface TokenView {
  id: string;
  name: string;
  status: TokenStatus;
  issued_on: string;
  modified_on: string;
  last_used_on?: string;
  not_before?: string;
  expires_on?: string;
  policies: TokenPolicy[];
  condition?: TokenCondition;
}

/** What `tokens()` reports: every token the sandbox issued, deleted ones included. */
export interface TokenSummary {
  id: string;
  name: string;
  status: TokenStatus;
  not_before?: string;
  expires_on?: string;
  deleted: boolean;
}

interface StoredToken {
  id: string;
  name: string;
  value: string;
  /** What was set: "expired" only when an update said so; expiry by date is computed. */
  status: TokenStatus;
  issuedOn: number;
  modifiedOn: number;
  lastUsedOn: number | undefined;
  notBefore: number | undefined;
  expiresOn: number | undefined;
  policies: TokenPolicy[];
  condition: TokenCondition | undefined;
  allowedIps: IpRule | undefined;
  deleted: boolean;
}

/** A token the API accepted: its id and, for the caller's own use, what it may do. */
export interface AuthenticatedToken {
  readonly id: string;
  can(permission: Permission, target: { scriptTag?: string }): boolean;
}

export interface TestTokenOptions {
  name?: string;
  /** Permission group names ("Workers Scripts Write") or ids, granted on `workerTag` or else the whole account. */
  permissions?: string[];
  /** Scope the permissions to the Worker with this tag instead of the account. */
  workerTag?: string;
  /** Raw policies (as the API takes them) instead of `permissions`. */
  policies?: unknown[];
  notBefore?: Date;
  expiresOn?: Date;
  status?: "active" | "disabled";
}

export interface TokenStore {
  readonly permissionGroups: readonly PermissionGroup[];
  /** The token whose value this Authorization header carries, if it may call the API now; else throws 401/403. */
  authenticate(authorization: string | undefined, clientIp: string): AuthenticatedToken;
  /** For the verify endpoints: any token the sandbox knows, whatever its status; unknown or deleted → 401. */
  verify(authorization: string | undefined): {
    id: string;
    status: TokenStatus;
    not_before?: string;
    expires_on?: string;
  };
  /** POST /tokens: validates the body; returns the view with the value. */
  create(body: unknown): TokenView & { value: string };
  /** PUT /tokens/{id}. */
  update(id: string, body: unknown): TokenView;
  get(id: string): TokenView;
  list(): TokenView[];
  delete(id: string): { id: string };
  /** Tests and the composed sandbox: a token with any groups, dates and status, no caller needed. */
  createDirect(options: TestTokenOptions): { id: string; value: string };
  summaries(): TokenSummary[];
}

const NAME_MAX = 120;
const RFC3339 = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})$/;

export function createTokenStore(accountId: string, now: () => number = Date.now): TokenStore {
  const tokens = new Map<string, StoredToken>();
  const byValue = new Map<string, StoredToken>();
  const accountResource = `${ACCOUNT_SCOPE}.${accountId}`;

  const statusOf = (token: StoredToken): TokenStatus => {
    if (token.status !== "active") return token.status;
    if (token.expiresOn !== undefined && token.expiresOn <= now()) return "expired";
    return "active";
  };

  const view = (token: StoredToken): TokenView => ({
    id: token.id,
    name: token.name,
    status: statusOf(token),
    issued_on: timestamp(token.issuedOn),
    modified_on: timestamp(token.modifiedOn),
    ...(token.lastUsedOn === undefined ? {} : { last_used_on: timestamp(token.lastUsedOn) }),
    ...(token.notBefore === undefined ? {} : { not_before: timestamp(token.notBefore) }),
    ...(token.expiresOn === undefined ? {} : { expires_on: timestamp(token.expiresOn) }),
    policies: structuredClone(token.policies),
    ...(token.condition === undefined ? {} : { condition: structuredClone(token.condition) }),
  });

  const find = (authorization: string | undefined): StoredToken => {
    if (authorization === undefined || authorization.trim() === "") {
      throw apiError("missingCredentials", "Missing X-Auth-Key, X-Auth-Email or Authorization headers");
    }
    const match = /^Bearer\s+(\S+)\s*$/i.exec(authorization);
    const token = match?.[1] === undefined ? undefined : byValue.get(match[1]);
    if (token === undefined || token.deleted) throw invalidToken();
    return token;
  };

  const authenticated = (token: StoredToken): AuthenticatedToken => ({
    id: token.id,
    can: (permission, target) => policiesAllow(token.policies, accountId, permission, target),
  });

  const parseDate = (raw: unknown, field: string): number | undefined => {
    if (raw === undefined || raw === null) return undefined;
    if (typeof raw !== "string" || !RFC3339.test(raw) || Number.isNaN(Date.parse(raw))) {
      throw badToken(`${field} ${JSON.stringify(raw)} is not an RFC 3339 time such as 2026-01-01T00:00:00Z`);
    }
    return Date.parse(raw);
  };

  const parseRequest = (body: unknown) => {
    if (!isObject(body)) throw badToken("the body must be a JSON object {name, policies, ...}");
    const { name } = body;
    if (typeof name !== "string" || name.trim() === "" || name.length > NAME_MAX) {
      throw badToken(`name must be a non-empty string of at most ${NAME_MAX} characters`);
    }
    const notBefore = parseDate(body.not_before, "not_before");
    const expiresOn = parseDate(body.expires_on, "expires_on");
    if (expiresOn !== undefined && notBefore !== undefined && expiresOn <= notBefore) {
      throw badToken("expires_on must be later than not_before");
    }
    return {
      name,
      notBefore,
      expiresOn,
      policies: parsePolicies(body.policies, accountId),
      ...parseCondition(body.condition),
    };
  };

  const store = (
    fields: Omit<StoredToken, "id" | "value" | "issuedOn" | "modifiedOn" | "lastUsedOn" | "deleted">,
  ) => {
    const token: StoredToken = {
      ...fields,
      id: randomHex(16),
      // Cloudflare token values are 40 characters of [A-Za-z0-9_-].
      value: randomBytes(30).toString("base64url"),
      issuedOn: now(),
      modifiedOn: now(),
      lastUsedOn: undefined,
      deleted: false,
    };
    tokens.set(token.id, token);
    byValue.set(token.value, token);
    return token;
  };

  const existing = (id: string): StoredToken => {
    const token = tokens.get(id);
    if (token === undefined || token.deleted)
      throw apiError("unknownToken", `token ${JSON.stringify(id)} does not exist on this account`);
    return token;
  };

  return {
    permissionGroups: PERMISSION_GROUPS,
    authenticate(authorization, clientIp) {
      const token = find(authorization);
      const time = now();
      if (statusOf(token) !== "active" || (token.notBefore !== undefined && token.notBefore > time)) {
        throw invalidToken();
      }
      if (token.allowedIps !== undefined && !ipAllowed(token.allowedIps, clientIp)) {
        throw apiError("ipNotAllowed", `Cannot use the access token from location: ${clientIp}`);
      }
      token.lastUsedOn = time;
      return authenticated(token);
    },
    verify(authorization) {
      const token = find(authorization);
      return {
        id: token.id,
        status: statusOf(token),
        ...(token.notBefore === undefined ? {} : { not_before: timestamp(token.notBefore) }),
        ...(token.expiresOn === undefined ? {} : { expires_on: timestamp(token.expiresOn) }),
      };
    },
    create(body) {
      const request = parseRequest(body);
      if (request.expiresOn !== undefined && request.expiresOn <= now()) {
        throw badToken("expires_on is in the past; accepted: a time after now");
      }
      const token = store({ ...request, status: "active" });
      return { ...view(token), value: token.value };
    },
    update(id, body) {
      const token = existing(id);
      const request = parseRequest(body);
      const status = isObject(body) ? body.status : undefined;
      if (status !== undefined && status !== "active" && status !== "disabled" && status !== "expired") {
        throw badToken(`status ${JSON.stringify(status)} is not one of "active", "disabled", "expired"`);
      }
      Object.assign(token, request, { modifiedOn: now() }, status === undefined ? {} : { status });
      return view(token);
    },
    get: (id) => view(existing(id)),
    list: () => [...tokens.values()].filter((token) => !token.deleted).map(view),
    delete(id) {
      const token = existing(id);
      token.deleted = true;
      // Refused everywhere at once: the value no longer finds a token that could be used.
      token.modifiedOn = now();
      return { id };
    },
    createDirect(options) {
      const scope = options.workerTag === undefined ? "*" : { [`${WORKER_SCOPE}.${options.workerTag}`]: "*" };
      const policies = parsePolicies(
        options.policies ?? [
          {
            effect: "allow",
            permission_groups: (options.permissions ?? []).map((group) => ({ id: groupId(group) })),
            resources: { [accountResource]: scope },
          },
        ],
        accountId,
      );
      const token = store({
        name: options.name ?? "sandbox test token",
        status: options.status ?? "active",
        notBefore: options.notBefore?.getTime(),
        expiresOn: options.expiresOn?.getTime(),
        policies,
        condition: undefined,
        allowedIps: undefined,
      });
      return { id: token.id, value: token.value };
    },
    summaries: () =>
      [...tokens.values()].map((token) => ({
        id: token.id,
        name: token.name,
        status: statusOf(token),
        ...(token.notBefore === undefined ? {} : { not_before: timestamp(token.notBefore) }),
        ...(token.expiresOn === undefined ? {} : { expires_on: timestamp(token.expiresOn) }),
        deleted: token.deleted,
      })),
  };
}

/** Throws 403 10000 unless the token may do this; the caller decides the target (account, or one Worker). */
export function requirePermission(
  token: AuthenticatedToken,
  permission: Permission,
  target: { scriptTag?: string } = {},
): void {
  if (!token.can(permission, target)) throw forbidden();
}

/** Cloudflare's timestamps: RFC 3339 in UTC, whole seconds. */
export function timestamp(ms: number): string {
  return new Date(ms).toISOString().replace(/\.\d{3}Z$/, "Z");
}

export function randomHex(bytes: number): string {
  return randomBytes(bytes).toString("hex");
}
