// A throwaway certificate authority for the sandbox. MSAL refuses non-https authorities and the Azure pipeline refuses
// bearer tokens over plain http, so every Azure stand-in serves HTTPS with a certificate from this CA; clients trust it
// either in this process (trustInProcess) or, for child processes, through NODE_EXTRA_CA_CERTS (writeCaFile). The CA
// lives in memory only and its certificates last one day: nothing here is meant to outlive a test run.
import { X509Certificate as NodeX509Certificate, webcrypto } from "node:crypto";
import { mkdir, writeFile } from "node:fs/promises";
import { isIP } from "node:net";
import { join } from "node:path";
import { getCACertificates, setDefaultCACertificates } from "node:tls";
import type * as X509 from "@peculiar/x509";

const KEY_ALGORITHM: webcrypto.EcKeyGenParams = { name: "ECDSA", namedCurve: "P-256" };
const SIGNING_ALGORITHM: webcrypto.EcdsaParams = { name: "ECDSA", hash: "SHA-256" };
const ONE_DAY_MS = 24 * 60 * 60 * 1000;
/** Certificates start a little in the past so a clock that lags this process's by a minute still accepts them. */
const BACKDATE_MS = 5 * 60 * 1000;

export const DEFAULT_SERVER_HOSTS: readonly string[] = ["127.0.0.1", "localhost"];

export interface ServerCertificate {
  readonly certPem: string;
  readonly keyPem: string;
}

export interface SandboxCa {
  /** The CA certificate, PEM: what a client must trust. */
  readonly caPem: string;
  /** A server certificate for these hosts (IP addresses become IP SANs, names DNS SANs), signed by this CA. */
  issueServerCertificate(hosts?: readonly string[]): Promise<ServerCertificate>;
  /** Writes the CA certificate to `<dir>/sandbox-ca.pem` and returns the path, for NODE_EXTRA_CA_CERTS. */
  writeCaFile(dir: string): Promise<string>;
}

export async function createSandboxCa(): Promise<SandboxCa> {
  const x509 = await loadX509();
  // Node's WebCrypto, which @peculiar/x509 also uses by default (globalThis.crypto).
  const crypto = webcrypto;
  const caKeys = await crypto.subtle.generateKey(KEY_ALGORITHM, false, ["sign", "verify"]);
  const notBefore = new Date(Date.now() - BACKDATE_MS);
  const notAfter = new Date(notBefore.getTime() + ONE_DAY_MS);
  const caName = `CN=aml-edge sandbox CA ${randomHex(4)}, O=aml-edge sandbox`;
  const caCert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: randomSerial(),
    name: caName,
    notBefore,
    notAfter,
    signingAlgorithm: SIGNING_ALGORITHM,
    keys: caKeys,
    extensions: [
      // pathLength 0: this CA signs leaf certificates only, never another CA.
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(caKeys.publicKey, false),
    ],
  });
  const caPem = caCert.toString("pem");

  return {
    caPem,
    async issueServerCertificate(hosts = DEFAULT_SERVER_HOSTS) {
      if (hosts.length === 0) throw new Error("issueServerCertificate: name at least one host");
      const keys = await crypto.subtle.generateKey(KEY_ALGORITHM, true, ["sign", "verify"]);
      const now = Date.now();
      const cert = await x509.X509CertificateGenerator.create({
        serialNumber: randomSerial(),
        subject: `CN=${hosts[0]}`,
        issuer: caCert.subject,
        notBefore: new Date(now - BACKDATE_MS),
        notAfter: new Date(now - BACKDATE_MS + ONE_DAY_MS),
        signingAlgorithm: SIGNING_ALGORITHM,
        publicKey: keys.publicKey,
        signingKey: caKeys.privateKey,
        extensions: [
          new x509.BasicConstraintsExtension(false, undefined, true),
          new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
          new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth], false),
          new x509.SubjectAlternativeNameExtension(
            hosts.map(
              (host): X509.JsonGeneralName =>
                isIP(host) === 0 ? { type: "dns", value: host } : { type: "ip", value: host },
            ),
            false,
          ),
          await x509.AuthorityKeyIdentifierExtension.create(caCert, false),
          await x509.SubjectKeyIdentifierExtension.create(keys.publicKey, false),
        ],
      });
      const pkcs8 = await crypto.subtle.exportKey("pkcs8", keys.privateKey);
      return { certPem: cert.toString("pem"), keyPem: x509.PemConverter.encode(pkcs8, "PRIVATE KEY") };
    },
    async writeCaFile(dir) {
      await mkdir(dir, { recursive: true });
      const path = join(dir, "sandbox-ca.pem");
      await writeFile(path, caPem, { mode: 0o644 });
      return path;
    },
  };
}

/**
 * Makes this Node process trust `caPem` for every TLS client that does not pass its own `ca`: node:https (MSAL's
 * network client, @actions/http-client), the https.Agent that @azure/core-rest-pipeline creates for itself, and the
 * fetch built into Node (its undici connects through node:tls). Setting `https.globalAgent.options.ca` would miss the
 * pipeline's private agent and fetch, so this replaces Node's default CA list instead (tls.setDefaultCACertificates,
 * Node >= 24.5) with the current list plus the sandbox CA. Returns a function that removes the CA again.
 */
export function trustInProcess(caPem: string): () => void {
  const fingerprint = new NodeX509Certificate(caPem).fingerprint256;
  const current = getCACertificates("default");
  if (!current.some((pem) => fingerprintOf(pem) === fingerprint)) {
    setDefaultCACertificates([...current, caPem]);
  }
  let removed = false;
  return () => {
    if (removed) return;
    removed = true;
    setDefaultCACertificates(
      getCACertificates("default").filter((pem) => fingerprintOf(pem) !== fingerprint),
    );
  };
}

let x509Module: Promise<typeof X509> | undefined;

/**
 * @peculiar/x509 builds on tsyringe, which refuses to load without the Reflect metadata API (the reflect-metadata
 * polyfill, not a dependency here). tsyringe calls only defineMetadata, getMetadata and getOwnMetadata, so a small
 * WeakMap-backed version of those three is installed first, unless a real polyfill already is, and the library is
 * loaded after it: a static import would be evaluated before any code in this module runs.
 */
function loadX509(): Promise<typeof X509> {
  x509Module ??= (async () => {
    installReflectMetadata();
    return import("@peculiar/x509");
  })();
  return x509Module;
}

function installReflectMetadata(): void {
  const reflect = Reflect as typeof Reflect & Record<string, unknown>;
  if (typeof reflect.getMetadata === "function") return;
  const store = new WeakMap<object, Map<unknown, Map<unknown, unknown>>>();
  const own = (target: object, property: unknown) => store.get(target)?.get(property);
  const defineMetadata = (key: unknown, value: unknown, target: object, property?: unknown) => {
    let byProperty = store.get(target);
    if (byProperty === undefined) {
      byProperty = new Map();
      store.set(target, byProperty);
    }
    let byKey = byProperty.get(property);
    if (byKey === undefined) {
      byKey = new Map();
      byProperty.set(property, byKey);
    }
    byKey.set(key, value);
  };
  const getOwnMetadata = (key: unknown, target: object, property?: unknown) =>
    own(target, property)?.get(key);
  const getMetadata = (key: unknown, target: object, property?: unknown) => {
    // Metadata is inherited along the prototype chain, as reflect-metadata does; the depth bound guards a cycle.
    let current: object | null = target;
    for (let depth = 0; current !== null && depth < 64; depth++) {
      const map = own(current, property);
      if (map?.has(key)) return map.get(key);
      current = Object.getPrototypeOf(current) as object | null;
    }
    return undefined;
  };
  Object.assign(reflect, { defineMetadata, getOwnMetadata, getMetadata });
}

function fingerprintOf(pem: string): string | undefined {
  try {
    return new NodeX509Certificate(pem).fingerprint256;
  } catch {
    return undefined;
  }
}

function randomHex(bytes: number): string {
  return Buffer.from(webcrypto.getRandomValues(new Uint8Array(bytes))).toString("hex");
}

/** A positive 16-byte serial: the top bit cleared so DER does not read it as negative. */
function randomSerial(): string {
  const bytes = webcrypto.getRandomValues(new Uint8Array(16));
  bytes[0] = (bytes[0] ?? 0) & 0x7f;
  return Buffer.from(bytes).toString("hex");
}
