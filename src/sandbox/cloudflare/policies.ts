// What an API token may do: the permission groups the sandbox knows, token policies (allow or deny, on the account
// or on one Worker by its tag) checked as Cloudflare checks them, and the IP condition. Parsing refuses what
// Cloudflare refuses (unknown groups, a group on a resource it cannot apply to, another account) with 400 10040.
import { randomBytes } from "node:crypto";
import { BlockList, isIP } from "node:net";
import { apiError, type CloudflareApiError } from "./errors.ts";

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

export const PERMISSION_GROUPS: readonly PermissionGroup[] = GROUPS.map(({ id, name, scopes }) => ({
  id,
  name,
  scopes: [...scopes],
}));

export interface TokenPolicy {
  id: string;
  effect: "allow" | "deny";
  permission_groups: { id: string; name: string }[];
  /** `{"com.cloudflare.api.account.<a>": "*"}` or `{"com.cloudflare.api.account.<a>": {"com.cloudflare.edge.worker.script.<tag>": "*"}}` */
  resources: Record<string, string | Record<string, string>>;
}

export type TokenCondition = Record<string, { in?: string[]; not_in?: string[] }>;

export interface IpRule {
  in: BlockList | undefined;
  notIn: BlockList | undefined;
}

const MAX_POLICIES = 50;
const TAG = /^[0-9a-f]{32}$/;

/** A group's id from its name (or the id itself, when it is not a name). */
export function groupId(nameOrId: string): string {
  return GROUPS_BY_NAME.get(nameOrId)?.id ?? nameOrId;
}

/** Whether the policies let a token do this on the account (no tag) or on the Worker with this tag. */
export function policiesAllow(
  policies: readonly TokenPolicy[],
  accountId: string,
  permission: Permission,
  target: { scriptTag?: string },
): boolean {
  const applies = (policy: TokenPolicy) =>
    policy.permission_groups.some((group) => GROUPS_BY_ID.get(group.id)?.grants.includes(permission)) &&
    covers(policy.resources, accountId, target);
  // A deny wins over any allow, as in Cloudflare's policy evaluation.
  if (policies.some((policy) => policy.effect === "deny" && applies(policy))) return false;
  return policies.some((policy) => policy.effect === "allow" && applies(policy));
}

function covers(
  resources: TokenPolicy["resources"],
  accountId: string,
  target: { scriptTag?: string },
): boolean {
  const scope = resources[`${ACCOUNT_SCOPE}.${accountId}`];
  if (scope === "*") return true;
  if (scope === undefined || typeof scope === "string" || target.scriptTag === undefined) return false;
  return scope[`${WORKER_SCOPE}.${target.scriptTag}`] === "*";
}

export function parsePolicies(raw: unknown, accountId: string): TokenPolicy[] {
  if (!Array.isArray(raw) || raw.length === 0 || raw.length > MAX_POLICIES) {
    throw badToken(`policies must be an array of 1 to ${MAX_POLICIES} policies`);
  }
  return raw.map((entry, index) => parsePolicy(entry, `policies[${index}]`, accountId));
}

function parsePolicy(raw: unknown, where: string, accountId: string): TokenPolicy {
  const accountResource = `${ACCOUNT_SCOPE}.${accountId}`;
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
    id: randomBytes(16).toString("hex"),
    effect,
    permission_groups: groups.map(({ id, name }) => ({ id, name })),
    resources,
  };
}

/** The token's IP condition: as given (to show it back) and as lists to check callers against. */
export function parseCondition(raw: unknown): {
  condition: TokenCondition | undefined;
  allowedIps: IpRule | undefined;
} {
  if (raw === undefined || raw === null) return { condition: undefined, allowedIps: undefined };
  // Cloudflare's JSON says "request.ip"; the TypeScript SDK's type spells it request_ip. Both are taken.
  const key = isObject(raw) && "request.ip" in raw ? "request.ip" : "request_ip";
  const ip = isObject(raw) ? raw[key] : undefined;
  if (!isObject(raw) || Object.keys(raw).length !== 1 || !isObject(ip)) {
    throw badToken('condition must be {"request.ip": {"in"?: [CIDR...], "not_in"?: [CIDR...]}}');
  }
  const lists: { in?: string[]; not_in?: string[] } = {};
  const rule: IpRule = { in: undefined, notIn: undefined };
  for (const field of ["in", "not_in"] as const) {
    const cidrs = ip[field];
    if (cidrs === undefined) continue;
    if (!Array.isArray(cidrs) || !cidrs.every((cidr) => typeof cidr === "string")) {
      throw badToken(`condition["${key}"].${field} must be an array of CIDR strings`);
    }
    const list = new BlockList();
    for (const cidr of cidrs as string[]) addCidr(list, cidr, `condition["${key}"].${field}`);
    lists[field] = [...(cidrs as string[])];
    if (field === "in") rule.in = list;
    else rule.notIn = list;
  }
  return { condition: { [key]: lists }, allowedIps: rule };
}

export function ipAllowed(rule: IpRule, ip: string): boolean {
  const family = isIP(ip) === 6 ? "ipv6" : "ipv4";
  if (rule.notIn?.check(ip, family)) return false;
  return rule.in === undefined || rule.in.check(ip, family);
}

function addCidr(list: BlockList, cidr: string, where: string): void {
  const [address = "", prefixText] = cidr.split("/");
  const family = isIP(address);
  const max = family === 6 ? 128 : 32;
  const prefix = prefixText === undefined ? max : Number(prefixText);
  if (family === 0 || !Number.isInteger(prefix) || prefix < 0 || prefix > max) {
    throw badToken(`${where} has ${JSON.stringify(cidr)}, not an IPv4 or IPv6 CIDR`);
  }
  list.addSubnet(address, prefix, family === 6 ? "ipv6" : "ipv4");
}

export function badToken(message: string): CloudflareApiError {
  return apiError("invalidTokenRequest", message);
}

export function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}
