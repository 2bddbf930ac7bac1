// Account-owned API tokens for the local Cloudflare: creation with policies (permission groups on the account or on
// one Worker by its tag), expiry, not-before, disabled status and IP conditions checked on every call, deletion
// effective at once. The bootstrap token of the composed sandbox is one of these, holding only "API Tokens Write",
// which on Cloudflare may mint tokens with any permission of the account.
import { randomBytes } from "node:crypto";
import { BlockList, isIP } from "node:net";
import { apiError, type CloudflareApiError, forbidden, invalidToken } from "./errors.ts";

export const ACCOUNT_SCOPE = "com.cloudflare.api.account";
export const WORKER_SCOPE = "com.cloudflare.edge.worker.script";

export type Permission = "tokens:read" | "tokens:write" | "workers:read" | "workers:write";

export interface PermissionGroup {
  id: string;
  name: string;
  scopes: string[];
}

interface GroupDefinition extends PermissionGroup {
  grants: readonly Permission[];
}

/**
 * The groups the sandbox knows. Fixed ids (clients should look them up by name, as on Cloudflare, where ids differ
 * from these). A Write group includes its Read, as Cloudflare's Edit permissions do.
 */
const GROUPS: readonly GroupDefinition[] = [
  {
    id: "6a0f1a8e5c8b4c7e9d3f2b1a0c9d8e71",
    name: "API Tokens Write",
    scopes: [ACCOUNT_SCOPE],
    grants: ["tokens:read", "tokens:write"],
  },
  {
    id: "6a0f1a8e5c8b4c7e9d3f2b1a0c9d8e72",
    name: "API Tokens Read",
    scopes: [ACCOUNT_SCOPE],
    grants: ["tokens:read"],
  },
  {
    id: "e086da7e2179491d91ee5f35b3ca210a",
    name: "Workers Scripts Write",
    scopes: [ACCOUNT_SCOPE, WORKER_SCOPE],
    grants: ["workers:read", "workers:write"],
  },
  {
    id: "1a71c399035b4950a1bd1466bbe4f420",
    name: "Workers Scripts Read",
    scopes: [ACCOUNT_SCOPE, WORKER_SCOPE],
    grants: ["workers:read"],
  },
];
const GROUPS_BY_ID = new Map(GROUPS.map((group) => [group.id, group]));
const GROUPS_BY_NAME = new Map(GROUPS.map((group) => [group.name, group]));

export type TokenStatus = "active" | "disabled" | "expired";

export interface TokenPolicy {
  id: string;
  effect: "allow" | "deny";
  permission_groups: { id: string; name: string }[];
  /** `{"com.cloudflare.api.account.<a>": "*"}` or `{"com.cloudflare.api.account.<a>": {"com.cloudflare.edge.worker.script.<tag>": "*"}}` */
  resources: Record<string, string | Record<string, string>>;
}

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
  condition?: Record<string, { in?: string[]; not_in?: string[] }>;
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
  condition: TokenView["condition"];
  allowedIps: { in: BlockList | undefined; notIn: BlockList | undefined } | undefined;
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
const MAX_POLICIES = 50;
const RFC3339 = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})$/;
const TAG = /^[0-9a-f]{32}$/;

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

  const covers = (resources: TokenPolicy["resources"], target: { scriptTag?: string }): boolean => {
    const scope = resources[accountResource];
    if (scope === "*") return true;
    if (scope === undefined || typeof scope === "string" || target.scriptTag === undefined) return false;
    return scope[`${WORKER_SCOPE}.${target.scriptTag}`] === "*";
  };

  const authenticated = (token: StoredToken): AuthenticatedToken => ({
    id: token.id,
    can(permission, target) {
      const applies = (policy: TokenPolicy) =>
        policy.permission_groups.some((group) => GROUPS_BY_ID.get(group.id)?.grants.includes(permission)) &&
        covers(policy.resources, target);
      // A deny wins over any allow, as in Cloudflare's policy evaluation.
      if (token.policies.some((policy) => policy.effect === "deny" && applies(policy))) return false;
      return token.policies.some((policy) => policy.effect === "allow" && applies(policy));
    },
  });

  const parsePolicies = (raw: unknown): TokenPolicy[] => {
    if (!Array.isArray(raw) || raw.length === 0 || raw.length > MAX_POLICIES) {
      throw badToken(`policies must be an array of 1 to ${MAX_POLICIES} policies`);
    }
    return raw.map((entry, index) => parsePolicy(entry, `policies[${index}]`));
  };

  const parsePolicy = (raw: unknown, where: string): TokenPolicy => {
    if (!isObject(raw)) throw badToken(`${where} must be an object {effect, permission_groups, resources}`);
    const { effect, permission_groups: groupsRaw, resources: resourcesRaw } = raw;
    if (effect !== "allow" && effect !== "deny") {
      throw badToken(`${where}.effect is ${JSON.stringify(effect)}; accepted: "allow" or "deny"`);
    }
    if (!Array.isArray(groupsRaw) || groupsRaw.length === 0) {
      throw badToken(`${where}.permission_groups must be a non-empty array of {id}`);
    }
    const groups = groupsRaw.map((group, index) => {
      const id = isObject(group) ? group.id : undefined;
      const known = typeof id === "string" ? GROUPS_BY_ID.get(id) : undefined;
      if (known === undefined) {
        throw badToken(
          `${where}.permission_groups[${index}].id ${JSON.stringify(id)} is not a permission group; see GET /accounts/${accountId}/tokens/permission_groups`,
        );
      }
      return known;
    });
    if (!isObject(resourcesRaw) || Object.keys(resourcesRaw).length === 0) {
      throw badToken(`${where}.resources must be an object such as {"${accountResource}": "*"}`);
    }
    const resources: TokenPolicy["resources"] = {};
    for (const [key, value] of Object.entries(resourcesRaw)) {
      if (key !== accountResource) {
        throw badToken(
          `${where}.resources names ${JSON.stringify(key)}; accepted: "${accountResource}" (this account)`,
        );
      }
      if (value === "*") {
        for (const group of groups) {
          if (!group.scopes.includes(ACCOUNT_SCOPE))
            throw badToken(`${where}: "${group.name}" cannot be granted on the account`);
        }
        resources[key] = "*";
        continue;
      }
      if (!isObject(value) || Object.keys(value).length === 0) {
        throw badToken(`${where}.resources["${key}"] must be "*" or {"${WORKER_SCOPE}.<script tag>": "*"}`);
      }
      const scripts: Record<string, string> = {};
      for (const [scriptKey, scriptValue] of Object.entries(value)) {
        const tag = scriptKey.startsWith(`${WORKER_SCOPE}.`) ? scriptKey.slice(WORKER_SCOPE.length + 1) : "";
        if (!TAG.test(tag) || scriptValue !== "*") {
          throw badToken(
            `${where}.resources["${key}"] has ${JSON.stringify(scriptKey)}: ${JSON.stringify(scriptValue)}; accepted: "${WORKER_SCOPE}.<32 hex script tag>": "*"`,
          );
        }
        scripts[scriptKey] = "*";
      }
      for (const group of groups) {
        if (!group.scopes.includes(WORKER_SCOPE))
          throw badToken(`${where}: "${group.name}" cannot be granted on a single Worker`);
      }
      resources[key] = scripts;
    }
    return {
      id: randomHex(16),
      effect,
      permission_groups: groups.map(({ id, name }) => ({ id, name })),
      resources,
    };
  };

  const parseDate = (raw: unknown, field: string): number | undefined => {
    if (raw === undefined || raw === null) return undefined;
    if (typeof raw !== "string" || !RFC3339.test(raw) || Number.isNaN(Date.parse(raw))) {
      throw badToken(`${field} ${JSON.stringify(raw)} is not an RFC 3339 time such as 2026-01-01T00:00:00Z`);
    }
    return Date.parse(raw);
  };

  const parseCondition = (raw: unknown): Pick<StoredToken, "condition" | "allowedIps"> => {
    if (raw === undefined || raw === null) return { condition: undefined, allowedIps: undefined };
    // Cloudflare's JSON says "request.ip"; the TypeScript SDK's type spells it request_ip. Both are taken.
    const key = isObject(raw) && "request.ip" in raw ? "request.ip" : "request_ip";
    const ip = isObject(raw) ? raw[key] : undefined;
    if (!isObject(raw) || Object.keys(raw).length !== 1 || !isObject(ip)) {
      throw badToken('condition must be {"request.ip": {"in"?: [CIDR...], "not_in"?: [CIDR...]}}');
    }
    const lists: { in?: string[]; not_in?: string[] } = {};
    const blocks: { in: BlockList | undefined; notIn: BlockList | undefined } = {
      in: undefined,
      notIn: undefined,
    };
    for (const field of ["in", "not_in"] as const) {
      const cidrs = ip[field];
      if (cidrs === undefined) continue;
      if (!Array.isArray(cidrs) || !cidrs.every((c) => typeof c === "string")) {
        throw badToken(`condition["${key}"].${field} must be an array of CIDR strings`);
      }
      const list = new BlockList();
      for (const cidr of cidrs as string[]) addCidr(list, cidr, `condition["${key}"].${field}`);
      lists[field] = [...(cidrs as string[])];
      if (field === "in") blocks.in = list;
      else blocks.notIn = list;
    }
    return { condition: { [key]: lists }, allowedIps: blocks };
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
      policies: parsePolicies(body.policies),
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
    permissionGroups: GROUPS.map(({ id, name, scopes }) => ({ id, name, scopes: [...scopes] })),
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
      const policies =
        options.policies !== undefined
          ? parsePolicies(options.policies)
          : parsePolicies([
              {
                effect: "allow",
                permission_groups: (options.permissions ?? []).map((group) => ({
                  id: GROUPS_BY_NAME.get(group)?.id ?? group,
                })),
                resources: {
                  [accountResource]:
                    options.workerTag === undefined ? "*" : { [`${WORKER_SCOPE}.${options.workerTag}`]: "*" },
                },
              },
            ]);
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

function badToken(message: string): CloudflareApiError {
  return apiError("invalidTokenRequest", message);
}

function ipAllowed(lists: { in: BlockList | undefined; notIn: BlockList | undefined }, ip: string): boolean {
  const family = isIP(ip) === 6 ? "ipv6" : "ipv4";
  if (lists.notIn?.check(ip, family)) return false;
  return lists.in === undefined || lists.in.check(ip, family);
}

function addCidr(list: BlockList, cidr: string, where: string): void {
  const [address = "", prefixText] = cidr.split("/");
  const family = isIP(address);
  const prefix = prefixText === undefined ? (family === 6 ? 128 : 32) : Number(prefixText);
  const max = family === 6 ? 128 : 32;
  if (family === 0 || !Number.isInteger(prefix) || prefix < 0 || prefix > max) {
    throw apiError("invalidTokenRequest", `${where} has ${JSON.stringify(cidr)}, not an IPv4 or IPv6 CIDR`);
  }
  list.addSubnet(address, prefix, family === 6 ? "ipv6" : "ipv4");
}

/** Cloudflare's timestamps: RFC 3339 in UTC, whole seconds. */
export function timestamp(ms: number): string {
  return new Date(ms).toISOString().replace(/\.\d{3}Z$/, "Z");
}

export function randomHex(bytes: number): string {
  return randomBytes(bytes).toString("hex");
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}
