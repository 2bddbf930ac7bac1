// Azurite, the real Azure Storage emulator from npm, as the workspace's default datastore. It runs as a child
// process (its own event loop, as Azure Storage is its own service) on a free loopback port, in memory, and is
// always killed on close() and when this process exits, so a failing test never leaves one behind.
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { LOOPBACK_HOST } from "../http-server.ts";

/** Azurite's built-in development account; the key is public (Microsoft documents it), not a secret. */
export const AZURITE_ACCOUNT = "devstoreaccount1";
export const AZURITE_ACCOUNT_KEY =
  "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

export interface AzuriteOptions {
  /** Serve HTTPS with this certificate (PEM), e.g. one issued by the sandbox CA. Default: plain HTTP. */
  tls?: { certPem: string; keyPem: string };
  /** How long to wait for Azurite to listen. Default 20 s. */
  startTimeoutMs?: number;
}

export interface Azurite {
  /** Path-style blob service URL, e.g. `http://127.0.0.1:PORT/devstoreaccount1`: what Azurite answers on. */
  readonly blobServiceUrl: string;
  readonly accountName: string;
  readonly accountKey: string;
  /** A connection string the storage SDKs accept, with `BlobEndpoint` pointing at Azurite. */
  readonly connectionString: string;
  close(): Promise<void>;
}

/** Resolved like an import (not by a path relative to this file), so it also works from a bundle. */
const azuriteBin = () => createRequire(import.meta.url).resolve("azurite/dist/src/blob/main.js");

export async function startAzurite(options: AzuriteOptions = {}): Promise<Azurite> {
  let certDir: string | undefined;
  const args = [
    azuriteBin(),
    "--blobHost",
    LOOPBACK_HOST,
    "--blobPort",
    "0",
    "--inMemoryPersistence",
    "--skipApiVersionCheck",
    "--disableTelemetry",
    "--silent",
  ];
  if (options.tls !== undefined) {
    certDir = await mkdtemp(join(tmpdir(), "aml-edge-azurite-"));
    await writeFile(join(certDir, "cert.pem"), options.tls.certPem);
    await writeFile(join(certDir, "key.pem"), options.tls.keyPem, { mode: 0o600 });
    args.push("--cert", join(certDir, "cert.pem"), "--key", join(certDir, "key.pem"));
  }
  // The same Node that runs us (v24 from the node@24 devDependency), never whatever `node` is on PATH.
  const child = spawn(process.execPath, args, { stdio: ["ignore", "pipe", "pipe"] });
  const killOnExit = () => child.kill("SIGKILL");
  process.once("exit", killOnExit);

  const cleanup = async () => {
    process.off("exit", killOnExit);
    await stopChild(child);
    if (certDir !== undefined) await rm(certDir, { recursive: true, force: true });
  };

  let origin: string;
  try {
    origin = await listeningOrigin(child, options.startTimeoutMs ?? 20_000);
  } catch (error) {
    await cleanup();
    throw error;
  }
  const blobServiceUrl = `${origin}/${AZURITE_ACCOUNT}`;
  let closed: Promise<void> | undefined;
  return {
    blobServiceUrl,
    accountName: AZURITE_ACCOUNT,
    accountKey: AZURITE_ACCOUNT_KEY,
    connectionString: `DefaultEndpointsProtocol=${origin.startsWith("https") ? "https" : "http"};AccountName=${AZURITE_ACCOUNT};AccountKey=${AZURITE_ACCOUNT_KEY};BlobEndpoint=${blobServiceUrl};`,
    close() {
      closed ??= cleanup();
      return closed;
    },
  };
}

/** Azurite prints "successfully listens on http://127.0.0.1:PORT" once ready; port 0 makes it pick a free one. */
function listeningOrigin(child: ChildProcess, timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    let output = "";
    const timer = setTimeout(
      () => finish(new Error(`Azurite did not start within ${timeoutMs} ms: ${output}`)),
      timeoutMs,
    );
    const onData = (chunk: Buffer) => {
      output += chunk.toString("utf8");
      const match = /successfully listens on (https?:\/\/[^\s]+)/.exec(output);
      if (match?.[1] !== undefined) finish(undefined, match[1].replace(/\/$/, ""));
    };
    const onExit = (code: number | null) =>
      finish(new Error(`Azurite exited (${code}) before listening: ${output}`));
    function finish(error: Error | undefined, origin?: string) {
      clearTimeout(timer);
      child.stdout?.off("data", onData);
      child.stderr?.off("data", onData);
      child.off("exit", onExit);
      // Keep draining so a chatty child never blocks on a full pipe.
      child.stdout?.resume();
      child.stderr?.resume();
      if (error !== undefined || origin === undefined) reject(error ?? new Error("Azurite gave no address"));
      else resolve(origin);
    }
    child.stdout?.on("data", onData);
    child.stderr?.on("data", onData);
    child.once("exit", onExit);
  });
}

/** SIGTERM, then SIGKILL if it has not gone within 3 s: bounded, and the process is gone when this resolves. */
async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  child.kill("SIGTERM");
  const timer = setTimeout(() => child.kill("SIGKILL"), 3000);
  await exited;
  clearTimeout(timer);
}
