// SecretClient against the Key Vault stand-in over HTTPS, authenticated the production way: a GitHub OIDC token
// exchanged at the Entra stand-in through ClientAssertionCredential, reached through Key Vault's 401 challenge.
import { ClientAssertionCredential } from "@azure/identity";
import { SecretClient } from "@azure/keyvault-secrets";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ARM_RESOURCE, type Entra, startEntra } from "../../src/sandbox/entra.ts";
import { type GitHubOidc, startGitHubOidc } from "../../src/sandbox/github-oidc.ts";
import { type LoopbackServer, startLoopbackServer } from "../../src/sandbox/http-server.ts";
import { type KeyVault, startKeyVault } from "../../src/sandbox/key-vault.ts";
import { createSandboxCa, trustInProcess } from "../../src/sandbox/tls.ts";

let server: LoopbackServer;
let entra: Entra;
let github: GitHubOidc;
let vault: KeyVault;
let untrust: () => void;

beforeAll(async () => {
  const ca = await createSandboxCa();
  untrust = trustInProcess(ca.caPem);
  // Everything on one HTTPS server, as the sandbox runs them.
  server = await startLoopbackServer({ tls: await ca.issueServerCertificate() });
  github = await startGitHubOidc({ server });
  entra = await startEntra({ server });
  vault = await startKeyVault({ server, entra });
  entra.registerApp({
    clientId: "deployer",
    federatedCredentials: [
      { issuer: github.issuer, subject: github.subject(), audiences: ["api://AzureADTokenExchange"] },
    ],
  });
});

afterAll(async () => {
  await vault?.close();
  await entra?.close();
  await github?.close();
  await server?.close();
  untrust?.();
});

function credential() {
  return new ClientAssertionCredential(
    entra.tenantId,
    "deployer",
    () => github.mint("api://AzureADTokenExchange"),
    { authorityHost: entra.authorityHost, disableInstanceDiscovery: true },
  );
}

function client(options: { disableChallengeResourceVerification?: boolean } = {}) {
  return new SecretClient(vault.vaultUrl, credential(), {
    disableChallengeResourceVerification: true,
    retryOptions: { maxRetries: 0 },
    ...options,
  });
}

describe("Key Vault stand-in with SecretClient", () => {
  it("gets a secret after the 401 challenge, with a Key Vault token from Entra", async () => {
    vault.setSecret("cloudflare-bootstrap-token", "bootstrap-value");
    const before = vault.challenges;
    const secrets = client();
    const secret = await secrets.getSecret("cloudflare-bootstrap-token");
    expect(secret.value).toBe("bootstrap-value");
    expect(secret.name).toBe("cloudflare-bootstrap-token");
    expect(secret.properties.vaultUrl).toBe(vault.vaultUrl);
    expect(secret.properties.enabled).toBe(true);
    expect(vault.challenges).toBe(before + 1);
    // The token is kept: a second call is not challenged again.
    await secrets.getSecret("cloudflare-bootstrap-token");
    expect(vault.challenges).toBe(before + 1);
    expect(entra.tokenRequests.at(-1)).toMatchObject({
      scope: "https://vault.azure.net/.default",
      outcome: "issued",
    });
  });

  it("sets secrets as new versions and reads any version", async () => {
    const secrets = client();
    const first = await secrets.setSecret("api-key", "one", {
      contentType: "text/plain",
      tags: { owner: "ml" },
    });
    const second = await secrets.setSecret("api-key", "two");
    expect(first.properties.version).not.toBe(second.properties.version);
    expect(vault.getSecret("api-key")).toBe("two");
    expect((await secrets.getSecret("api-key")).value).toBe("two");
    const old = await secrets.getSecret("api-key", { version: first.properties.version ?? "" });
    expect(old.value).toBe("one");
    expect(old.properties.contentType).toBe("text/plain");
    expect(old.properties.tags).toEqual({ owner: "ml" });
    const versions = [];
    for await (const v of secrets.listPropertiesOfSecretVersions("api-key")) versions.push(v.version);
    expect(versions).toEqual([first.properties.version, second.properties.version]);
  });

  it("lists secrets across pages and deletes them", async () => {
    const secrets = client();
    for (let i = 0; i < 30; i++) vault.setSecret(`bulk-${i}`, `v${i}`);
    const names = new Set<string>();
    for await (const p of secrets.listPropertiesOfSecrets()) names.add(p.name);
    for (let i = 0; i < 30; i++) expect(names.has(`bulk-${i}`)).toBe(true);

    const poller = await secrets.beginDeleteSecret("bulk-0", { intervalInMs: 10 });
    const deletedSecret = await poller.pollUntilDone();
    expect(deletedSecret.name).toBe("bulk-0");
    expect(vault.getSecret("bulk-0")).toBeUndefined();
    await expect(secrets.getSecret("bulk-0")).rejects.toMatchObject({
      statusCode: 404,
      code: "SecretNotFound",
    });
    await secrets.purgeDeletedSecret("bulk-0");
    await secrets.setSecret("bulk-0", "again");
    expect(vault.getSecret("bulk-0")).toBe("again");
  });

  it("answers a missing secret with 404 SecretNotFound", async () => {
    await expect(client().getSecret("no-such-secret")).rejects.toMatchObject({
      statusCode: 404,
      code: "SecretNotFound",
    });
  });

  it("needs disableChallengeResourceVerification, because a loopback host is not *.vault.azure.net", async () => {
    await expect(
      client({ disableChallengeResourceVerification: false }).getSecret("api-key"),
    ).rejects.toThrow(/does not match the requested domain/);
  });

  it("refuses a token that is not for Key Vault, and a request with no token, with the challenge", async () => {
    const arm = await credential().getToken(`${ARM_RESOURCE}/.default`);
    const url = `${vault.vaultUrl}/secrets/api-key?api-version=2026-04-01`;
    for (const headers of [{ authorization: `Bearer ${arm.token}` }, {}]) {
      const res = await fetch(url, { headers });
      expect(res.status).toBe(401);
      expect(res.headers.get("www-authenticate")).toBe(
        `Bearer authorization="${entra.authorityHost}/${entra.tenantId}", resource="https://vault.azure.net"`,
      );
      expect(JSON.stringify(await res.json())).not.toContain("two");
    }
  });
});
