// Loopback HTTP servers for the sandbox's stand-ins. Everything binds 127.0.0.1 only; several stand-ins can share
// one port (a gateway config may put a key set and a scoring URI on the same address); close() also ends keep-alive
// connections and aborts handlers that are still waiting, so a test never hangs on shutdown.
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import { createServer as createHttpsServer } from "node:https";
import type { AddressInfo, Socket } from "node:net";

export const LOOPBACK_HOST = "127.0.0.1";

export interface HandlerContext {
  readonly url: URL;
  /** Aborted when the client goes away or the server closes: a handler that waits must stop waiting. */
  readonly signal: AbortSignal;
}

export type RequestHandler = (
  req: IncomingMessage,
  res: ServerResponse,
  context: HandlerContext,
) => Promise<void>;

export interface Mount {
  matches(pathname: string): boolean;
  handle: RequestHandler;
}

export interface LoopbackServer {
  /** `http://127.0.0.1:<port>`, or `https://127.0.0.1:<port>` when started with `tls` */
  readonly origin: string;
  readonly port: number;
  /** Adds a handler; the returned function removes it. The first mount whose `matches` accepts a path serves it. */
  mount(mount: Mount): () => void;
  close(): Promise<void>;
}

/** The port is taken: the caller decides whether that is an error or "someone already serves this address". */
export class AddressInUseError extends Error {
  readonly port: number;
  constructor(port: number) {
    super(`${LOOPBACK_HOST}:${port} is already in use`);
    this.name = "AddressInUseError";
    this.port = port;
  }
}

export interface LoopbackServerOptions {
  port?: number;
  /** Serve HTTPS with this certificate (see tls.ts, createSandboxCa): MSAL and the Azure pipeline insist on it. */
  tls?: { certPem: string; keyPem: string };
}

export async function startLoopbackServer(options: LoopbackServerOptions = {}): Promise<LoopbackServer> {
  const mounts: Mount[] = [];
  const sockets = new Set<Socket>();
  const closing = new AbortController();

  const listener = (req: IncomingMessage, res: ServerResponse) => {
    const url = new URL(req.url ?? "/", `http://${LOOPBACK_HOST}`);
    const perRequest = new AbortController();
    const abort = () => perRequest.abort();
    closing.signal.addEventListener("abort", abort, { once: true });
    // "close" on the response fires when it finished or when the client went away first; either way nobody waits.
    res.once("close", () => {
      closing.signal.removeEventListener("abort", abort);
      abort();
    });
    const mount = mounts.find((m) => m.matches(url.pathname));
    if (mount === undefined) {
      sendJson(res, 404, { error: { code: "NotFound", message: `nothing is served at ${url.pathname}` } });
      return;
    }
    mount.handle(req, res, { url, signal: perRequest.signal }).catch((error: unknown) => {
      if (!res.headersSent) {
        sendJson(res, 500, { error: { code: "InternalError", message: errorText(error) } });
      } else {
        res.destroy();
      }
    });
  };
  const server =
    options.tls === undefined
      ? createServer(listener)
      : createHttpsServer({ cert: options.tls.certPem, key: options.tls.keyPem }, listener);
  const scheme = options.tls === undefined ? "http" : "https";
  server.on("connection", (socket) => {
    sockets.add(socket);
    socket.once("close", () => sockets.delete(socket));
  });

  const port = await new Promise<number>((resolve, reject) => {
    const onError = (error: NodeJS.ErrnoException) => {
      reject(error.code === "EADDRINUSE" ? new AddressInUseError(options.port ?? 0) : error);
    };
    server.once("error", onError);
    server.listen({ host: LOOPBACK_HOST, port: options.port ?? 0, exclusive: true }, () => {
      server.off("error", onError);
      resolve((server.address() as AddressInfo).port);
    });
  });

  let closed: Promise<void> | undefined;
  return {
    origin: `${scheme}://${LOOPBACK_HOST}:${port}`,
    port,
    mount(mount) {
      mounts.push(mount);
      return () => {
        const index = mounts.indexOf(mount);
        if (index >= 0) mounts.splice(index, 1);
      };
    },
    close() {
      closed ??= new Promise<void>((resolve) => {
        closing.abort();
        server.close(() => resolve());
        for (const socket of sockets) socket.destroy();
      });
      return closed;
    },
  };
}

export function sendJson(
  res: ServerResponse,
  status: number,
  body: unknown,
  headers: Record<string, string> = {},
): void {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    "content-type": "application/json; charset=utf-8",
    "content-length": Buffer.byteLength(text),
    ...headers,
  });
  res.end(text);
}

export class BodyTooLargeError extends Error {
  constructor(limitBytes: number) {
    super(`request body exceeds ${limitBytes} bytes`);
    this.name = "BodyTooLargeError";
  }
}

/** Reads the whole request body as UTF-8, refusing more than `limitBytes`. */
export async function readBody(req: IncomingMessage, limitBytes: number): Promise<string> {
  return (await readBodyBytes(req, limitBytes)).toString("utf8");
}

/** Reads the whole request body, refusing more than `limitBytes`. */
export async function readBodyBytes(req: IncomingMessage, limitBytes: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    const buffer = chunk as Buffer;
    size += buffer.length;
    if (size > limitBytes) throw new BodyTooLargeError(limitBytes);
    chunks.push(buffer);
  }
  return Buffer.concat(chunks);
}

/** Resolves after `ms`, or early (with false) when the signal aborts. */
export function sleep(ms: number, signal: AbortSignal): Promise<boolean> {
  if (signal.aborted) return Promise.resolve(false);
  return new Promise((resolve) => {
    const onAbort = () => {
      clearTimeout(timer);
      resolve(false);
    };
    const timer = setTimeout(() => {
      signal.removeEventListener("abort", onAbort);
      resolve(true);
    }, ms);
    signal.addEventListener("abort", onAbort, { once: true });
  });
}

/** Request headers as a plain record (repeated headers joined the way Node joins them). */
export function headerRecord(req: IncomingMessage): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [name, value] of Object.entries(req.headers)) {
    if (value !== undefined) out[name] = Array.isArray(value) ? value.join(", ") : value;
  }
  return out;
}

export function errorText(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/** Loopback hosts are the only places the sandbox may talk to: this machine, never the network. */
export { isLoopbackHostname } from "../config/hosts.ts";
