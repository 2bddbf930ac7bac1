// The sandbox CA has to be trusted by every client stack the Azure plane uses: fetch (Node's undici), node:https
// (MSAL's network client), and @azure/core-rest-pipeline's own agent. Each is tried against an HTTPS loopback server
// before trust (it must refuse) and after (it must connect), and a child process trusts it through NODE_EXTRA_CA_CERTS.
import { execFile } from "node:child_process";
import { X509Certificate } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { get as httpsGet } from "node:https";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { createDefaultHttpClient, createPipelineRequest } from "@azure/core-rest-pipeline";
import { ClientAssertionCredential } from "@azure/identity";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type LoopbackServer, sendJson, startLoopbackServer } from "../../src/sandbox/http-server.ts";
import { createSandboxCa, type SandboxCa, trustInProcess } from "../../src/sandbox/tls.ts";

let ca: SandboxCa;
let server: LoopbackServer;

beforeAll(async () => {
  ca = await createSandboxCa();
  server = await startLoopbackServer({ tls: await ca.issueServerCertificate() });
  server.mount({
    matches: (pathname) => pathname === "/hello",
    async handle(_req, res) {
      sendJson(res, 200, { hello: "world" });
    },
  });
});

afterAll(async () => {
  await server?.close();
});

function httpsGetText(url: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = httpsGet(url, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (chunk: string) => {
        body += chunk;
      });
      res.on("end", () => resolve(body));
      res.on("error", reject);
    });
    req.on("error", reject);
  });
}

async function pipelineGet(url: string): Promise<number> {
  const response = await createDefaultHttpClient().sendRequest(createPipelineRequest({ url }));
  return response.status;
}

describe("createSandboxCa", () => {
  it("issues a CA and a one-day server certificate for loopback names, signed by the CA", async () => {
    const caCert = new X509Certificate(ca.caPem);
    expect(caCert.ca).toBe(true);
    const { certPem, keyPem } = await ca.issueServerCertificate(["127.0.0.1", "localhost", "vault.local"]);
    const cert = new X509Certificate(certPem);
    expect(cert.ca).toBe(false);
    expect(cert.checkIssued(caCert)).toBe(true);
    expect(cert.verify(caCert.publicKey)).toBe(true);
    expect(cert.checkIP("127.0.0.1")).toBe("127.0.0.1");
    expect(cert.checkHost("localhost")).toBe("localhost");
    expect(cert.checkHost("vault.local")).toBe("vault.local");
    expect(cert.checkHost("example.com")).toBeUndefined();
    const lifetimeMs = Date.parse(cert.validTo) - Date.parse(cert.validFrom);
    expect(lifetimeMs).toBe(24 * 60 * 60 * 1000);
    expect(keyPem).toMatch(/^-----BEGIN PRIVATE KEY-----/);
  });

  it("serves HTTPS from the loopback server", () => {
    expect(server.origin).toMatch(/^https:\/\/127\.0\.0\.1:\d+$/);
  });
});

describe("trustInProcess", () => {
  it("is needed, and then makes fetch, node:https and the Azure pipeline accept the sandbox's certificate", async () => {
    const url = `${server.origin}/hello`;
    // Before trust, each stack must refuse: otherwise the test below would prove nothing.
    await expect(fetch(url)).rejects.toThrow();
    await expect(httpsGetText(url)).rejects.toThrow(/self-signed|unable to (get|verify)/i);
    await expect(pipelineGet(url)).rejects.toThrow();

    const untrust = trustInProcess(ca.caPem);
    try {
      expect(await (await fetch(url)).json()).toEqual({ hello: "world" });
      expect(JSON.parse(await httpsGetText(url))).toEqual({ hello: "world" });
      expect(await pipelineGet(url)).toBe(200);
      // Public roots stay trusted: the sandbox CA is added to them, not put in their place.
      const { getCACertificates, rootCertificates } = await import("node:tls");
      expect(getCACertificates("default").length).toBeGreaterThanOrEqual(rootCertificates.length + 1);
    } finally {
      untrust();
    }
  });

  it("lets MSAL (through @azure/identity) reach an HTTPS authority signed by the sandbox CA", async () => {
    // A minimal authority that accepts anything: this test is about the TLS handshake, entra.test.ts about Entra.
    const authority = await startLoopbackServer({ tls: await ca.issueServerCertificate() });
    let served = 0;
    authority.mount({
      matches: (pathname) => pathname.startsWith("/tenant-1/"),
      async handle(req, res, { url }) {
        served += 1;
        if (url.pathname.endsWith("/openid-configuration")) {
          sendJson(res, 200, {
            issuer: `${authority.origin}/tenant-1/v2.0`,
            token_endpoint: `${authority.origin}/tenant-1/oauth2/v2.0/token`,
            authorization_endpoint: `${authority.origin}/tenant-1/oauth2/v2.0/authorize`,
            end_session_endpoint: `${authority.origin}/tenant-1/oauth2/v2.0/logout`,
            jwks_uri: `${authority.origin}/tenant-1/discovery/v2.0/keys`,
          });
          return;
        }
        req.resume();
        sendJson(res, 200, { token_type: "Bearer", expires_in: 3600, access_token: "opaque-test-token" });
      },
    });
    const credential = () =>
      new ClientAssertionCredential("tenant-1", "client-1", async () => "assertion", {
        authorityHost: authority.origin,
        disableInstanceDiscovery: true,
      });
    try {
      // MSAL reports only endpoints_resolution_error; that no request reached the authority shows TLS stopped it.
      await expect(credential().getToken("https://management.azure.com/.default")).rejects.toThrow();
      expect(served).toBe(0);
      const untrust = trustInProcess(ca.caPem);
      try {
        const token = await credential().getToken("https://management.azure.com/.default");
        expect(token.token).toBe("opaque-test-token");
        expect(served).toBe(2);
      } finally {
        untrust();
      }
    } finally {
      await authority.close();
    }
  });

  it("is undone by the function it returns", async () => {
    const { getCACertificates } = await import("node:tls");
    const before = getCACertificates("default").length;
    const untrust = trustInProcess(ca.caPem);
    expect(getCACertificates("default").length).toBe(before + 1);
    // Trusting twice adds nothing.
    trustInProcess(ca.caPem);
    expect(getCACertificates("default").length).toBe(before + 1);
    untrust();
    expect(getCACertificates("default").length).toBe(before);
  });
});

describe("writeCaFile", () => {
  it("writes a file a child process trusts through NODE_EXTRA_CA_CERTS", async () => {
    const dir = await mkdtemp(join(tmpdir(), "aml-edge-ca-"));
    try {
      const path = await ca.writeCaFile(dir);
      const script = `fetch(${JSON.stringify(`${server.origin}/hello`)}).then(r => r.text()).then(t => process.stdout.write(t), e => { process.stdout.write("refused: " + (e.cause?.code ?? e.message)); })`;
      const run = (env: Record<string, string>) =>
        promisify(execFile)(process.execPath, ["-e", script], { env: { ...process.env, ...env } });
      const without = await run({ NODE_EXTRA_CA_CERTS: "" });
      expect(without.stdout).toMatch(/^refused: /);
      const withCa = await run({ NODE_EXTRA_CA_CERTS: path });
      expect(JSON.parse(withCa.stdout)).toEqual({ hello: "world" });
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
