// The Cloudflare v4 API of the local Cloudflare, under /client/v4 on an HTTPS loopback server: the token endpoints
// and the Workers scripts, versions, deployments and secrets endpoints that the Cloudflare plane uses, answered in
// Cloudflare's envelope `{success, errors, messages, result, result_info?}`. Every call but verify needs a token
// that is active now, within its IP condition, and holds the permission on the account or on the one Worker.
// Every call is recorded (method, path, status, error codes, token id; never a token value or body).
import type { IncomingMessage, ServerResponse } from "node:http";
import {
  BodyTooLargeError,
  errorText,
  type HandlerContext,
  type LoopbackServer,
  readBodyBytes,
  sendJson,
} from "../http-server.ts";
import {
  apiError,
  CloudflareApiError,
  ERROR_CODES,
  forbidden,
  invalidToken,
  unknownWorker,
} from "./errors.ts";
import type { Permission } from "./policies.ts";
import { type AuthenticatedToken, requirePermission, type TokenStore } from "./tokens.ts";
import { parseWorkerUpload } from "./upload.ts";
import { pageOf, scriptView, versionPage, versionView } from "./views.ts";
import type { StoredScript, WorkerStore } from "./workers.ts";

export const API_PATH = "/client/v4";
const MAX_JSON_BYTES = 1024 * 1024;
/** Cloudflare's Worker size limit on paid plans. */
const MAX_UPLOAD_BYTES = 10 * 1024 * 1024;
const MAX_REQUEST_RECORDS = 10_000;

export interface ApiRequestRecord {
  method: string;
  /** The path, without the query. */
  path: string;
  status: number;
  /** The `errors[].code` of the answer; empty on success. */
  errorCodes: number[];
  /** The token that made the call, once it was recognised. */
  tokenId?: string;
  /** Epoch ms at receipt. */
  time: number;
}

export interface CloudflareApi {
  readonly requests: readonly ApiRequestRecord[];
}

interface Answer {
  status?: number;
  result: unknown;
  resultInfo?: Record<string, number>;
}

export function mountCloudflareApi(
  server: LoopbackServer,
  options: { accountId: string; tokens: TokenStore; workers: WorkerStore },
): CloudflareApi {
  const { accountId, tokens, workers } = options;
  const requests: ApiRequestRecord[] = [];

  const handle = async (req: IncomingMessage, res: ServerResponse, context: HandlerContext) => {
    const record: ApiRequestRecord = {
      method: req.method ?? "GET",
      path: context.url.pathname,
      status: 0,
      errorCodes: [],
      time: Date.now(),
    };
    requests.push(record);
    if (requests.length > MAX_REQUEST_RECORDS) requests.splice(0, requests.length - MAX_REQUEST_RECORDS);
    let status: number;
    let body: Record<string, unknown>;
    try {
      const answer = await route(req, context.url, record);
      status = answer.status ?? 200;
      body = {
        success: true,
        errors: [],
        messages: [],
        result: answer.result,
        ...(answer.resultInfo === undefined ? {} : { result_info: answer.resultInfo }),
      };
    } catch (error) {
      const known =
        error instanceof CloudflareApiError
          ? error
          : error instanceof BodyTooLargeError
            ? apiError("invalidBody", `the request body is too large: ${error.message}`)
            : undefined;
      status = known?.status ?? ERROR_CODES.internal.status;
      const code = known?.code ?? ERROR_CODES.internal.code;
      const message = known?.message ?? `aml-edge sandbox internal error: ${errorText(error)}`;
      record.errorCodes = [code];
      body = { success: false, errors: [{ code, message }], messages: [], result: null };
    }
    record.status = status;
    if (!context.signal.aborted) sendJson(res, status, body);
  };

  const route = async (req: IncomingMessage, url: URL, record: ApiRequestRecord): Promise<Answer> => {
    const method = req.method ?? "GET";
    const segments = url.pathname
      .slice(API_PATH.length)
      .split("/")
      .filter((segment) => segment !== "")
      .map((segment) => decodeURIComponent(segment));
    const authorization = req.headers.authorization;

    if (matches(segments, ["user", "tokens", "verify"])) {
      allow(method, ["GET"]);
      return { result: verified(authorization, record) };
    }
    if (segments[0] !== "accounts" || segments.length < 3) throw noRoute(url);
    const account = segments[1] as string;
    const rest = segments.slice(2);
    if (matches(rest, ["tokens", "verify"])) {
      allow(method, ["GET"]);
      const result = verified(authorization, record);
      if (account !== accountId) throw invalidToken();
      return { result };
    }

    const token = tokens.authenticate(authorization, clientIp(req));
    record.tokenId = token.id;
    // A token of this sandbox never holds rights on another account id.
    if (account !== accountId) throw forbidden();

    if (rest[0] === "tokens") return tokenRoute(method, rest.slice(1), url, req, token);
    if (rest[0] === "workers" && rest[1] === "scripts") {
      return scriptRoute(method, rest.slice(2), url, req, token);
    }
    throw noRoute(url);
  };

  const verified = (authorization: string | undefined, record: ApiRequestRecord) => {
    const result = tokens.verify(authorization);
    record.tokenId = result.id;
    return result;
  };

  const tokenRoute = async (
    method: string,
    rest: string[],
    url: URL,
    req: IncomingMessage,
    token: AuthenticatedToken,
  ): Promise<Answer> => {
    if (matches(rest, ["permission_groups"])) {
      allow(method, ["GET"]);
      requirePermission(token, "tokens:read");
      const name = url.searchParams.get("name");
      const scope = url.searchParams.get("scope");
      return {
        result: tokens.permissionGroups.filter(
          (group) =>
            (name === null || group.name === name) && (scope === null || group.scopes.includes(scope)),
        ),
      };
    }
    if (rest.length === 0) {
      allow(method, ["GET", "POST"]);
      if (method === "POST") {
        requirePermission(token, "tokens:write");
        // Holding "API Tokens Write" on the account lets a token mint any group on it, as on Cloudflare.
        return { result: tokens.create(await readJson(req)) };
      }
      requirePermission(token, "tokens:read");
      const { items, info } = pageOf(tokens.list(), url.searchParams, 20, 50);
      return { result: items, resultInfo: info };
    }
    if (rest.length === 1) {
      const id = rest[0] as string;
      allow(method, ["GET", "PUT", "DELETE"]);
      if (method === "GET") {
        requirePermission(token, "tokens:read");
        return { result: tokens.get(id) };
      }
      requirePermission(token, "tokens:write");
      if (method === "PUT") return { result: tokens.update(id, await readJson(req)) };
      return { result: tokens.delete(id) };
    }
    throw noRoute(url);
  };

  /** The Worker, once the token may act on it; a Worker that does not exist is reported only to account-wide tokens. */
  const authorizedScript = (
    token: AuthenticatedToken,
    name: string,
    permission: Permission,
  ): StoredScript => {
    const script = workers.find(name);
    if (script !== undefined) {
      requirePermission(token, permission, { scriptTag: script.tag });
      return script;
    }
    requirePermission(token, permission);
    throw unknownWorker();
  };

  const scriptRoute = async (
    method: string,
    rest: string[],
    url: URL,
    req: IncomingMessage,
    token: AuthenticatedToken,
  ): Promise<Answer> => {
    if (rest.length === 0) {
      allow(method, ["GET"]);
      const visible = workers.list().filter((script) => token.can("workers:read", { scriptTag: script.tag }));
      if (visible.length === 0 && !token.can("workers:read", {})) throw forbidden();
      return { result: visible.map(scriptView) };
    }
    const name = rest[0] as string;
    const sub = rest.slice(1);
    if (sub.length === 0) {
      allow(method, ["PUT"]);
      const current = workers.find(name);
      // Replacing needs write on the Worker; creating one needs write on the whole account.
      requirePermission(token, "workers:write", current === undefined ? {} : { scriptTag: current.tag });
      const upload = await readUpload(req);
      const script = await workers.putScript(name, upload);
      return { result: { ...scriptView(script), startup_time_ms: 0 } };
    }
    if (sub[0] === "versions" && sub.length === 1) {
      allow(method, ["GET", "POST"]);
      if (method === "POST") {
        authorizedScript(token, name, "workers:write");
        const upload = await readUpload(req);
        return { result: versionView(await workers.uploadVersion(name, upload)) };
      }
      const page = versionPage(authorizedScript(token, name, "workers:read"), url.searchParams);
      return { result: { items: page.items }, resultInfo: page.info };
    }
    if (sub[0] === "versions" && sub.length === 2) {
      allow(method, ["GET"]);
      authorizedScript(token, name, "workers:read");
      return { result: versionView(workers.version(name, sub[1] as string)) };
    }
    if (sub[0] === "deployments" && sub.length === 1) {
      allow(method, ["GET", "POST"]);
      if (method === "POST") {
        authorizedScript(token, name, "workers:write");
        // ?force=true is accepted; the sandbox has no rollback block (10220) for it to lift.
        return { result: await workers.deploy(name, await readJson(req)) };
      }
      return { result: { deployments: authorizedScript(token, name, "workers:read").deployments } };
    }
    if (sub[0] === "deployments" && sub.length === 2) {
      allow(method, ["GET", "DELETE"]);
      const id = sub[1] as string;
      if (method === "DELETE") {
        authorizedScript(token, name, "workers:write");
        await workers.deleteDeployment(name, id);
        return { result: null };
      }
      authorizedScript(token, name, "workers:read");
      return { result: workers.deployment(name, id) };
    }
    if (sub[0] === "secrets" && sub.length === 1) {
      allow(method, ["GET", "PUT"]);
      if (method === "PUT") {
        authorizedScript(token, name, "workers:write");
        return { result: await workers.putSecret(name, await readJson(req)) };
      }
      authorizedScript(token, name, "workers:read");
      return { result: workers.secrets(name) };
    }
    if (sub[0] === "secrets" && sub.length === 2) {
      allow(method, ["GET", "DELETE"]);
      const secretName = sub[1] as string;
      if (method === "DELETE") {
        authorizedScript(token, name, "workers:write");
        await workers.deleteSecret(name, secretName);
        return { result: null };
      }
      authorizedScript(token, name, "workers:read");
      const secret = workers.secrets(name).find((candidate) => candidate.name === secretName);
      if (secret === undefined) {
        throw apiError("unknownSecret", `secret ${JSON.stringify(secretName)} does not exist on this Worker`);
      }
      return { result: secret };
    }
    throw noRoute(url);
  };

  server.mount({
    matches: (pathname) => pathname === API_PATH || pathname.startsWith(`${API_PATH}/`),
    handle,
  });
  return { requests };
}

async function readJson(req: IncomingMessage): Promise<unknown> {
  const text = (await readBodyBytes(req, MAX_JSON_BYTES)).toString("utf8");
  try {
    return JSON.parse(text);
  } catch {
    throw apiError("invalidBody", "the request body is not JSON");
  }
}

async function readUpload(req: IncomingMessage) {
  let body: Buffer;
  try {
    body = await readBodyBytes(req, MAX_UPLOAD_BYTES);
  } catch (error) {
    if (error instanceof BodyTooLargeError) {
      throw apiError(
        "invalidUpload",
        `the upload is larger than ${MAX_UPLOAD_BYTES} bytes, the Worker size limit`,
      );
    }
    throw error;
  }
  return parseWorkerUpload(body, req.headers["content-type"], new Date().toISOString().slice(0, 10));
}

function matches(segments: readonly string[], expected: readonly string[]): boolean {
  return (
    segments.length === expected.length && expected.every((segment, index) => segments[index] === segment)
  );
}

function allow(method: string, methods: readonly string[]): void {
  if (!methods.includes(method)) {
    throw apiError(
      "methodNotAllowed",
      `${method} is not served here by the sandbox; accepted: ${methods.join(", ")}`,
    );
  }
}

function noRoute(url: URL): CloudflareApiError {
  return apiError("noRoute", `No route for that URI (${url.pathname})`);
}

function clientIp(req: IncomingMessage): string {
  const address = req.socket.remoteAddress ?? "127.0.0.1";
  return address.startsWith("::ffff:") ? address.slice("::ffff:".length) : address;
}
