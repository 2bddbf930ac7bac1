// Key Vault secrets for the sandbox, over HTTPS, for @azure/keyvault-secrets' SecretClient: the Cloudflare bootstrap
// token lives here in production. It speaks Key Vault's challenge protocol: a request without a valid bearer token gets
// 401 with `WWW-Authenticate: Bearer authorization="<authority>/<tenant>", resource="https://vault.azure.net"`, from
// which the SDK learns the tenant and the scope (`<resource>/.default`), fetches a token and retries. Tokens are
// checked with entra.verifyAccessToken, so only tokens the sandbox's Entra issued for Key Vault are accepted.
//
// The SDK checks that the vault's host name ends with `.<resource host>` (`*.vault.azure.net`) before it asks for a
// token; a loopback vault cannot satisfy that, so clients of this stand-in pass `disableChallengeResourceVerification:
// true` to SecretClient. That is the only difference from a client of a real vault.
import { randomBytes } from "node:crypto";
import type { ServerResponse } from "node:http";
import { type Entra, KEY_VAULT_RESOURCE } from "./entra.ts";
import { type LoopbackServer, type Mount, readBody, sendJson, startLoopbackServer } from "./http-server.ts";
import { createSandboxCa, type SandboxCa } from "./tls.ts";

const SECRET_NAME = /^[0-9a-zA-Z-]{1,127}$/;
const MAX_SECRET_BYTES = 25 * 1024;
const RECOVERABLE_DAYS = 90;
const DEFAULT_PAGE_SIZE = 25;

export interface KeyVaultOptions {
  entra: Entra;
  /** An HTTPS loopback server to serve on; the vault takes its root paths (/secrets, /deletedsecrets). */
  server?: LoopbackServer;
  /** Signs the certificate of the server this creates. Default: a new CA (see `caPem`). */
  ca?: SandboxCa;
}

export interface SecretAttributesInput {
  enabled?: boolean;
  /** Epoch seconds. */
  nbf?: number;
  exp?: number;
}

export interface KeyVault {
  /** `https://127.0.0.1:<port>`, the SecretClient's vaultUrl. */
  readonly vaultUrl: string;
  readonly caPem: string | undefined;
  /** 401 challenges answered so far: one per client that had no token yet. */
  readonly challenges: number;
  /** Adds a version, as a PUT would. Returns the version id. */
  setSecret(
    name: string,
    value: string,
    options?: { contentType?: string; tags?: Record<string, string> },
  ): string;
  /** The current version's value, or undefined when there is no such secret (or it is deleted). */
  getSecret(name: string): string | undefined;
  close(): Promise<void>;
}

interface SecretVersion {
  version: string;
  value: string;
  contentType: string | undefined;
  tags: Record<string, string> | undefined;
  enabled: boolean;
  nbf: number | undefined;
  exp: number | undefined;
  created: number;
  updated: number;
}

interface DeletedSecret {
  versions: SecretVersion[];
  deletedDate: number;
}

export async function startKeyVault(options: KeyVaultOptions): Promise<KeyVault> {
  const { entra } = options;
  const ownServer = options.server === undefined;
  let caPem: string | undefined;
  let server: LoopbackServer;
  if (options.server === undefined) {
    const ca = options.ca ?? (await createSandboxCa());
    caPem = ca.caPem;
    server = await startLoopbackServer({ tls: await ca.issueServerCertificate() });
  } else {
    server = options.server;
  }
  if (!server.origin.startsWith("https://")) {
    throw new Error(
      `startKeyVault: the Azure SDK sends bearer tokens over https only; ${server.origin} is plain http`,
    );
  }
  const vaultUrl = server.origin;
  const secrets = new Map<string, SecretVersion[]>();
  const deleted = new Map<string, DeletedSecret>();
  let challenges = 0;

  const now = () => Math.floor(Date.now() / 1000);
  const secretId = (name: string, version?: string) =>
    version === undefined ? `${vaultUrl}/secrets/${name}` : `${vaultUrl}/secrets/${name}/${version}`;
  const attributes = (v: SecretVersion) => ({
    enabled: v.enabled,
    ...(v.nbf === undefined ? {} : { nbf: v.nbf }),
    ...(v.exp === undefined ? {} : { exp: v.exp }),
    created: v.created,
    updated: v.updated,
    recoveryLevel: "Recoverable+Purgeable",
    recoverableDays: RECOVERABLE_DAYS,
  });
  const bundle = (name: string, v: SecretVersion) => ({
    value: v.value,
    id: secretId(name, v.version),
    ...(v.contentType === undefined ? {} : { contentType: v.contentType }),
    attributes: attributes(v),
    ...(v.tags === undefined ? {} : { tags: v.tags }),
  });
  const item = (id: string, v: SecretVersion) => ({
    id,
    attributes: attributes(v),
    ...(v.contentType === undefined ? {} : { contentType: v.contentType }),
    ...(v.tags === undefined ? {} : { tags: v.tags }),
  });
  const deletedBundle = (name: string, d: DeletedSecret, withValue: boolean) => {
    const current = d.versions.at(-1) as SecretVersion;
    const { value: _value, ...rest } = bundle(name, current);
    return {
      ...(withValue ? { value: current.value } : {}),
      ...rest,
      recoveryId: `${vaultUrl}/deletedsecrets/${name}`,
      deletedDate: d.deletedDate,
      scheduledPurgeDate: d.deletedDate + RECOVERABLE_DAYS * 86400,
    };
  };

  const addVersion = (
    name: string,
    value: string,
    extra: {
      contentType?: string | undefined;
      tags?: Record<string, string> | undefined;
      attributes?: SecretAttributesInput;
    },
  ): SecretVersion => {
    const t = now();
    const version: SecretVersion = {
      version: randomBytes(16).toString("hex"),
      value,
      contentType: extra.contentType,
      tags: extra.tags,
      enabled: extra.attributes?.enabled ?? true,
      nbf: extra.attributes?.nbf,
      exp: extra.attributes?.exp,
      created: t,
      updated: t,
    };
    const versions = secrets.get(name) ?? [];
    versions.push(version);
    secrets.set(name, versions);
    return version;
  };

  const challenge = (res: ServerResponse, message: string) => {
    challenges += 1;
    sendJson(
      res,
      401,
      { error: { code: "Unauthorized", message } },
      {
        "www-authenticate": `Bearer authorization="${entra.authorityHost}/${entra.tenantId}", resource="${KEY_VAULT_RESOURCE}"`,
      },
    );
  };

  const mount: Mount = {
    matches: (pathname) =>
      pathname === "/secrets" ||
      pathname.startsWith("/secrets/") ||
      pathname === "/deletedsecrets" ||
      pathname.startsWith("/deletedsecrets/"),
    async handle(req, res, { url }) {
      const authorization = req.headers.authorization;
      const bearer = /^Bearer (\S+)$/i.exec(authorization ?? "")?.[1];
      if (bearer === undefined) {
        req.resume();
        challenge(res, "AKV10000: Request is missing a Bearer or PoP token.");
        return;
      }
      try {
        await entra.verifyAccessToken(bearer, KEY_VAULT_RESOURCE);
      } catch (error) {
        req.resume();
        // Key Vault answers an expired or foreign token with the same challenge, so the client can fetch another.
        challenge(
          res,
          `AKV10022: Invalid bearer token: ${error instanceof Error ? error.message : String(error)}`,
        );
        return;
      }
      if (url.searchParams.get("api-version") === null) {
        req.resume();
        sendJson(res, 400, {
          error: { code: "BadParameter", message: "The 'api-version' parameter is missing." },
        });
        return;
      }

      const [collection, name, third, ...more] = url.pathname.split("/").slice(1);
      const method = req.method ?? "GET";
      if (name !== undefined && !SECRET_NAME.test(name)) {
        req.resume();
        sendJson(res, 400, {
          error: {
            code: "BadParameter",
            message: `The request URI contains an invalid name: ${name}. Secret names may contain only 0-9, a-z, A-Z and -, up to 127 characters.`,
          },
        });
        return;
      }
      const notFound = (what: string) =>
        sendJson(res, 404, {
          error: {
            code: "SecretNotFound",
            message: `A secret with (name/id) ${what} was not found in this key vault. If you recently deleted this secret you may be able to recover it using the correct recovery command. For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125182`,
          },
        });

      if (collection === "secrets" && name === undefined && method === "GET") {
        const rows = [...secrets.entries()].map(([n, versions]) =>
          item(secretId(n), versions.at(-1) as SecretVersion),
        );
        sendPage(res, vaultUrl, url, rows);
        return;
      }
      if (collection === "secrets" && name !== undefined && third === undefined && method === "PUT") {
        if (deleted.has(name)) {
          req.resume();
          sendJson(res, 409, {
            error: {
              code: "Conflict",
              message: `Secret ${name} is currently in a deleted but recoverable state, and its name cannot be reused; in this state, the secret can only be recovered or purged.`,
            },
          });
          return;
        }
        const body = parseJson(await readBody(req, 2 * MAX_SECRET_BYTES));
        if (typeof body?.value !== "string") {
          sendJson(res, 400, { error: { code: "BadParameter", message: "Property 'value' is required." } });
          return;
        }
        if (Buffer.byteLength(body.value) > MAX_SECRET_BYTES) {
          sendJson(res, 400, { error: { code: "BadParameter", message: "The secret value exceeds 25 KB." } });
          return;
        }
        const version = addVersion(name, body.value, {
          contentType: typeof body.contentType === "string" ? body.contentType : undefined,
          tags: isStringRecord(body.tags) ? body.tags : undefined,
          attributes: isObject(body.attributes) ? (body.attributes as SecretAttributesInput) : {},
        });
        sendJson(res, 200, bundle(name, version));
        return;
      }
      if (collection === "secrets" && name !== undefined && third === "versions" && method === "GET") {
        const versions = secrets.get(name) ?? [];
        sendPage(
          res,
          vaultUrl,
          url,
          versions.map((v) => item(secretId(name, v.version), v)),
        );
        return;
      }
      if (collection === "secrets" && name !== undefined && more.length === 0 && method === "GET") {
        const versions = secrets.get(name);
        const found =
          third === undefined || third === "" ? versions?.at(-1) : versions?.find((v) => v.version === third);
        if (found === undefined) {
          notFound(third === undefined || third === "" ? name : secretId(name, third));
          return;
        }
        if (!found.enabled) {
          sendJson(res, 403, {
            error: { code: "Forbidden", message: "Operation get is not allowed on a disabled secret." },
          });
          return;
        }
        sendJson(res, 200, bundle(name, found));
        return;
      }
      if (collection === "secrets" && name !== undefined && third === undefined && method === "DELETE") {
        const versions = secrets.get(name);
        if (versions === undefined) {
          notFound(name);
          return;
        }
        secrets.delete(name);
        const record = { versions, deletedDate: now() };
        deleted.set(name, record);
        sendJson(res, 200, deletedBundle(name, record, false));
        return;
      }
      if (collection === "deletedsecrets" && name !== undefined && third === undefined) {
        const record = deleted.get(name);
        if (record === undefined) {
          req.resume();
          sendJson(res, 404, {
            error: { code: "SecretNotFound", message: `Deleted Secret not found: ${name}` },
          });
          return;
        }
        if (method === "GET") {
          sendJson(res, 200, deletedBundle(name, record, false));
          return;
        }
        if (method === "DELETE") {
          deleted.delete(name);
          res.writeHead(204).end();
          return;
        }
      }
      req.resume();
      sendJson(res, 405, {
        error: { code: "BadParameter", message: `${method} is not supported on ${url.pathname}` },
      });
    },
  };
  const unmount = server.mount(mount);

  return {
    vaultUrl,
    caPem,
    get challenges() {
      return challenges;
    },
    setSecret(name, value, extra = {}) {
      if (!SECRET_NAME.test(name)) throw new Error(`setSecret: ${name} is not a valid secret name`);
      deleted.delete(name);
      return addVersion(name, value, extra).version;
    },
    getSecret(name) {
      return secrets.get(name)?.at(-1)?.value;
    },
    async close() {
      unmount();
      if (ownServer) await server.close();
    },
  };
}

/** One page of a list, with Key Vault's `nextLink` (a `$skiptoken` offset) when more remain. */
function sendPage(res: ServerResponse, vaultUrl: string, url: URL, rows: unknown[]): void {
  const requested = Number(url.searchParams.get("maxresults") ?? DEFAULT_PAGE_SIZE);
  const size =
    Number.isInteger(requested) && requested >= 1 && requested <= DEFAULT_PAGE_SIZE
      ? requested
      : DEFAULT_PAGE_SIZE;
  const skip = Number(url.searchParams.get("$skiptoken") ?? 0);
  const start = Number.isInteger(skip) && skip >= 0 ? skip : 0;
  const page = rows.slice(start, start + size);
  let nextLink: string | null = null;
  if (start + size < rows.length) {
    const next = new URL(url.href);
    next.searchParams.set("$skiptoken", String(start + size));
    next.searchParams.set("maxresults", String(size));
    nextLink = `${vaultUrl}${next.pathname}${next.search}`;
  }
  sendJson(res, 200, { value: page, nextLink });
}

function parseJson(text: string): Record<string, unknown> | undefined {
  try {
    const value: unknown = JSON.parse(text);
    return isObject(value) ? value : undefined;
  } catch {
    return undefined;
  }
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function isStringRecord(value: unknown): value is Record<string, string> {
  return isObject(value) && Object.values(value).every((v) => typeof v === "string");
}
