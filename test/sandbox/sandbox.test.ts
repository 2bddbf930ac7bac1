// startSandbox() as a job uses it: the deploy credential goes GitHub OIDC → Entra (federated credential) → ARM
// over HTTPS with the real SDK clients, Key Vault answers SecretClient, and `aml-edge sandbox up` starts, prints
// the environment and stops cleanly on SIGINT.
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { SecretClient } from "@azure/keyvault-secrets";
import Cloudflare from "cloudflare";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { gitHubOidcCredential } from "../../src/azure/credential.ts";
import { createMlClient } from "../../src/azure/ml.ts";
import { type Sandbox, startSandbox } from "../../src/sandbox/sandbox.ts";

let sandbox: Sandbox;
beforeAll(async () => {
  sandbox = await startSandbox();
}, 60_000);
afterAll(async () => {
  await sandbox?.close();
});

/** Fetches the job's ID token the way @actions/core does, from the variables the sandbox hands a job step. */
async function idTokenFrom(env: Record<string, string>, audience: string): Promise<string> {
  const url = `${env.ACTIONS_ID_TOKEN_REQUEST_URL}&audience=${encodeURIComponent(audience)}`;
  const response = await fetch(url, {
    headers: { authorization: `Bearer ${env.ACTIONS_ID_TOKEN_REQUEST_TOKEN}` },
  });
  expect(response.status).toBe(200);
  return ((await response.json()) as { value: string }).value;
}

describe("startSandbox", () => {
  it("lets the deploy credential reach ARM through GitHub OIDC and the federated credential", async () => {
    const env = sandbox.environment();
    const inputs = sandbox.inputs();
    const masked: string[] = [];
    const credential = gitHubOidcCredential({
      tenantId: inputs["tenant-id"] as string,
      clientId: inputs["client-id"] as string,
      authorityHost: inputs["authority-host"] as string,
      getIdToken: (audience) => idTokenFrom(env, audience),
      setSecret: (secret) => masked.push(secret),
      logger: { debug: () => undefined, info: () => undefined },
    });
    const client = createMlClient({
      credential,
      subscriptionId: inputs["subscription-id"] as string,
      armEndpoint: inputs["arm-endpoint"] as string,
    });
    const endpoints = [];
    for await (const endpoint of client.onlineEndpoints.list(
      inputs["resource-group"] as string,
      inputs.workspace as string,
    )) {
      endpoints.push(endpoint);
    }
    expect(endpoints).toEqual([]);
    expect(sandbox.github.issued).toBeGreaterThanOrEqual(1);
    expect(masked.length, "the GitHub token and the ARM token are masked").toBeGreaterThanOrEqual(2);
    expect(existsSync(env.NODE_EXTRA_CA_CERTS as string)).toBe(true);
  });

  it("serves Key Vault secrets to SecretClient with an Entra token", async () => {
    const credential = {
      getToken: async () => ({
        token: await sandbox.entra.issueAppToken({ audience: "https://vault.azure.net", clientId: "reader" }),
        expiresOnTimestamp: Date.now() + 3_600_000,
      }),
    };
    // The vault is on 127.0.0.1, not *.vault.azure.net: the SDK's challenge check must be told so.
    const client = new SecretClient(sandbox.keyVault.vaultUrl, credential, {
      disableChallengeResourceVerification: true,
    });
    sandbox.keyVault.setSecret("cloudflare-bootstrap", "not-a-real-token");
    expect((await client.getSecret("cloudflare-bootstrap")).value).toBe("not-a-real-token");
  });
});

describe("startSandbox: Cloudflare", () => {
  it("keeps a bootstrap token in Key Vault that mints a per-Worker token, and points the inputs at the API and the edge", async () => {
    const inputs = sandbox.inputs();
    expect(inputs).toMatchObject({
      "cloudflare-account-id": sandbox.cloudflare.accountId,
      "cloudflare-api-url": sandbox.cloudflare.apiUrl,
      "key-vault-url": sandbox.keyVault.vaultUrl,
      "cloudflare-bootstrap-secret": "cloudflare-bootstrap-token",
      "worker-name": "aml-edge-gateway",
      "gateway-url": sandbox.gatewayUrl,
    });
    const credential = {
      getToken: async () => ({
        token: await sandbox.entra.issueAppToken({ audience: "https://vault.azure.net", clientId: "reader" }),
        expiresOnTimestamp: Date.now() + 3_600_000,
      }),
    };
    const vault = new SecretClient(inputs["key-vault-url"] as string, credential, {
      disableChallengeResourceVerification: true,
    });
    const bootstrap = (await vault.getSecret(inputs["cloudflare-bootstrap-secret"] as string))
      .value as string;
    const cloudflare = new Cloudflare({
      apiToken: bootstrap,
      baseURL: inputs["cloudflare-api-url"],
      maxRetries: 0,
    });
    const account_id = inputs["cloudflare-account-id"] as string;
    expect((await cloudflare.accounts.tokens.verify({ account_id })).status).toBe("active");
    const groups = await cloudflare.accounts.tokens.permissionGroups.list({ account_id });
    const write = groups.result.find((group) => group.name === "Workers Scripts Write");
    const minted = await cloudflare.accounts.tokens.create({
      account_id,
      name: "job token",
      expires_on: new Date(Date.now() + 30 * 60_000).toISOString(),
      policies: [
        {
          effect: "allow",
          permission_groups: [{ id: write?.id as string }],
          resources: { [`com.cloudflare.api.account.${account_id}`]: "*" },
        },
      ],
    });
    const job = new Cloudflare({
      apiToken: minted.value as string,
      baseURL: inputs["cloudflare-api-url"],
      maxRetries: 0,
    });
    expect((await job.workers.scripts.list({ account_id })).result).toEqual([]);
    // The gateway Worker's edge listens from the start and has nothing deployed yet.
    expect((await fetch(inputs["gateway-url"] as string)).status).toBe(404);
  });
});

describe("aml-edge sandbox up", () => {
  it("prints the environment and the deploy inputs, and stops cleanly on SIGINT", async () => {
    const main = fileURLToPath(new URL("../../src/cli/main.ts", import.meta.url));
    const child = spawn(process.execPath, [main, "sandbox", "up"], { stdio: ["ignore", "pipe", "pipe"] });
    let output = "";
    child.stdout.on("data", (chunk: Buffer) => {
      output += chunk.toString();
    });
    child.stderr.on("data", (chunk: Buffer) => {
      output += chunk.toString();
    });
    const exited = new Promise<number | null>((resolve) => child.on("close", resolve));
    const deadline = Date.now() + 45_000;
    while (!output.includes("Ctrl-C stops the sandbox.") && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    expect(output).toContain("export ACTIONS_ID_TOKEN_REQUEST_URL=");
    expect(output).toContain("export NODE_EXTRA_CA_CERTS=");
    expect(output).toMatch(/arm-endpoint: https:\/\/127\.0\.0\.1:\d+/);
    expect(output).toMatch(/cloudflare-api-url: https:\/\/127\.0\.0\.1:\d+\/client\/v4/);
    expect(output).toMatch(/gateway-url: https:\/\/127\.0\.0\.1:\d+\//);
    expect(output).toMatch(/Cloudflare account: [0-9a-f]{32}/);
    const caFile = /NODE_EXTRA_CA_CERTS='([^']+)'/.exec(output)?.[1];
    child.kill("SIGINT");
    expect(await exited).toBe(0);
    expect(output).toContain("sandbox stopped");
    expect(caFile !== undefined && existsSync(caFile), "the CA file is removed on stop").toBe(false);
  }, 60_000);
});
