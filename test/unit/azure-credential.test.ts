// gitHubOidcCredential against the GitHub OIDC and Entra stand-ins over HTTPS: the exchange itself, the memoized GitHub
// token (one GitHub request for many MSAL callbacks, a new one before expiry, a job that waits 30 minutes), masking,
// and the guidance a misconfigured federated credential produces, which names claims and never carries a token.
import { ClientAssertionCredential } from "@azure/identity";
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from "vitest";
import {
  DEFAULT_AUDIENCE,
  FederatedCredentialError,
  gitHubOidcCredential,
} from "../../src/azure/credential.ts";
import { ConfigurationError, errorMessage } from "../../src/azure/errors.ts";
import { ARM_RESOURCE, type Entra, KEY_VAULT_RESOURCE, startEntra } from "../../src/sandbox/entra.ts";
import { type GitHubOidc, startGitHubOidc } from "../../src/sandbox/github-oidc.ts";
import { createSandboxCa, type SandboxCa, trustInProcess } from "../../src/sandbox/tls.ts";

const ARM_SCOPE = `${ARM_RESOURCE}/.default`;
const VAULT_SCOPE = `${KEY_VAULT_RESOURCE}/.default`;
const JWT = /eyJ[\w-]+\.[\w-]+\.[\w-]+/;

let ca: SandboxCa;
let untrust: () => void;
const savedEnv = { ...process.env };

beforeAll(async () => {
  ca = await createSandboxCa();
  untrust = trustInProcess(ca.caPem);
});
afterAll(() => untrust?.());
afterEach(() => {
  process.env = { ...savedEnv };
  vi.restoreAllMocks();
});

interface Sandbox {
  github: GitHubOidc;
  entra: Entra;
  /** Fetches an ID token the way core.getIDToken does, counting calls. */
  getIdToken: (audience: string) => Promise<string>;
  idTokenCalls: () => number;
  masked: string[];
  logs: string[];
  close(): Promise<void>;
}

async function startSandbox(options: { now?: () => number; subject?: string } = {}): Promise<Sandbox> {
  const clock = options.now === undefined ? {} : { now: options.now };
  const github = await startGitHubOidc(clock);
  const entra = await startEntra({ ca, ...clock });
  entra.registerApp({
    clientId: "deployer",
    federatedCredentials: [
      { issuer: github.issuer, subject: options.subject ?? github.subject(), audiences: [DEFAULT_AUDIENCE] },
    ],
  });
  let calls = 0;
  return {
    github,
    entra,
    async getIdToken(audience) {
      calls += 1;
      const res = await fetch(`${github.requestUrl}&audience=${encodeURIComponent(audience)}`, {
        headers: { authorization: `Bearer ${github.requestToken}` },
      });
      return ((await res.json()) as { value: string }).value;
    },
    idTokenCalls: () => calls,
    masked: [],
    logs: [],
    async close() {
      await entra.close();
      await github.close();
    },
  };
}

function credentialFor(sandbox: Sandbox, extra: { now?: () => number; audience?: string } = {}) {
  return gitHubOidcCredential({
    tenantId: sandbox.entra.tenantId,
    clientId: "deployer",
    authorityHost: sandbox.entra.authorityHost,
    getIdToken: sandbox.getIdToken,
    setSecret: (secret) => sandbox.masked.push(secret),
    logger: {
      debug: (message) => sandbox.logs.push(message),
      info: (message) => sandbox.logs.push(message),
    },
    ...extra,
  });
}

async function refusal(promise: Promise<unknown>): Promise<FederatedCredentialError> {
  try {
    await promise;
  } catch (error) {
    expect(error).toBeInstanceOf(FederatedCredentialError);
    return error as FederatedCredentialError;
  }
  throw new Error("expected Entra to refuse the GitHub token");
}

describe("gitHubOidcCredential", () => {
  it("gets an ARM token for a GitHub OIDC token, masking both and logging claims only", async () => {
    const sandbox = await startSandbox();
    try {
      const token = await credentialFor(sandbox).getToken(ARM_SCOPE);
      expect(token).not.toBeNull();
      await expect(sandbox.entra.verifyAccessToken(token?.token ?? "", ARM_RESOURCE)).resolves.toMatchObject({
        appid: "deployer",
      });
      // Both the GitHub token and the access token were masked.
      expect(sandbox.masked).toHaveLength(2);
      expect(sandbox.masked[1]).toBe(token?.token);
      expect(sandbox.logs.join("\n")).toContain(`sub=${sandbox.github.subject()}`);
      expect(sandbox.logs.join("\n")).not.toMatch(JWT);
    } finally {
      await sandbox.close();
    }
  });

  it("asks GitHub once for many token requests, and once for concurrent ones", async () => {
    const sandbox = await startSandbox();
    // Shorter than MSAL's 5-minute renewal offset: every getToken reaches Entra and needs the assertion.
    sandbox.entra.setAccessTokenLifetime(30);
    try {
      const credential = credentialFor(sandbox);
      await Promise.all([
        credential.getToken(ARM_SCOPE),
        credential.getToken(ARM_SCOPE),
        credential.getToken(VAULT_SCOPE),
      ]);
      for (const scope of [ARM_SCOPE, VAULT_SCOPE, ARM_SCOPE, VAULT_SCOPE]) await credential.getToken(scope);
      expect(sandbox.entra.tokenRequests.filter((r) => r.outcome === "issued").length).toBeGreaterThanOrEqual(
        5,
      );
      expect(sandbox.idTokenCalls()).toBe(1);
      expect(sandbox.github.issued).toBe(1);
    } finally {
      await sandbox.close();
    }
  });

  it("keeps authenticating through a 30-minute wait, fetching a new GitHub token before each expires", async () => {
    const clock = { ms: Date.now() };
    const now = () => clock.ms;
    const sandbox = await startSandbox({ now });
    sandbox.entra.setAccessTokenLifetime(30);
    try {
      const credential = credentialFor(sandbox, { now });
      await credential.getToken(ARM_SCOPE);
      const firstGitHubToken = sandbox.masked[0] ?? "";
      clock.ms += 100_000;
      await credential.getToken(ARM_SCOPE);
      expect(sandbox.github.issued).toBe(1);
      // 300-second tokens are refreshed 60 s before they expire.
      clock.ms += 150_000;
      await credential.getToken(ARM_SCOPE);
      expect(sandbox.github.issued).toBe(2);
      for (let minute = 5; minute <= 30; minute++) {
        clock.ms += 60_000;
        await expect(credential.getToken(ARM_SCOPE)).resolves.not.toBeNull();
      }
      expect(sandbox.github.issued).toBeGreaterThanOrEqual(7);
      expect(sandbox.github.issued).toBeLessThanOrEqual(9);
      // Without the refresh, the first GitHub token would be refused by now: the test above can fail.
      const naive = new ClientAssertionCredential(
        sandbox.entra.tenantId,
        "deployer",
        async () => firstGitHubToken,
        {
          authorityHost: sandbox.entra.authorityHost,
          disableInstanceDiscovery: true,
        },
      );
      await expect(naive.getToken(ARM_SCOPE)).rejects.toThrow(/AADSTS700024/);
    } finally {
      await sandbox.close();
    }
  });

  it("survives a real wait past a 20-second GitHub token's expiry", { timeout: 40_000 }, async () => {
    const sandbox = await startSandbox();
    sandbox.github.setLifetime(20);
    sandbox.entra.setAccessTokenLifetime(30);
    try {
      const credential = credentialFor(sandbox);
      await credential.getToken(ARM_SCOPE);
      const first = sandbox.masked[0] ?? "";
      // Half the lifetime is the margin for short tokens: a call 5 s later reuses the token.
      await new Promise((resolve) => setTimeout(resolve, 5_000));
      await credential.getToken(ARM_SCOPE);
      expect(sandbox.github.issued).toBe(1);
      await new Promise((resolve) => setTimeout(resolve, 16_500));
      await expect(credential.getToken(ARM_SCOPE)).resolves.not.toBeNull();
      expect(sandbox.github.issued).toBe(2);
      const naive = new ClientAssertionCredential(sandbox.entra.tenantId, "deployer", async () => first, {
        authorityHost: sandbox.entra.authorityHost,
        disableInstanceDiscovery: true,
      });
      await expect(naive.getToken(ARM_SCOPE)).rejects.toThrow(/AADSTS700024/);
    } finally {
      await sandbox.close();
    }
  });

  it("uses core.getIDToken by default, which masks the token it prints nothing else of", async () => {
    const sandbox = await startSandbox();
    Object.assign(process.env, sandbox.github.env());
    const written: string[] = [];
    vi.spyOn(process.stdout, "write").mockImplementation((chunk: string | Uint8Array) => {
      written.push(String(chunk));
      return true;
    });
    try {
      const credential = gitHubOidcCredential({
        tenantId: sandbox.entra.tenantId,
        clientId: "deployer",
        authorityHost: sandbox.entra.authorityHost,
        logger: { debug: () => {}, info: () => {} },
      });
      const token = await credential.getToken(ARM_SCOPE);
      vi.restoreAllMocks();
      expect(sandbox.github.issued).toBe(1);
      const masks = written.filter((line) => line.startsWith("::add-mask::"));
      expect(masks.some((line) => line.includes(token?.token ?? "?"))).toBe(true);
      // Every line that carries a token is a mask command.
      expect(written.filter((line) => JWT.test(line) && !line.startsWith("::add-mask::"))).toEqual([]);
    } finally {
      vi.restoreAllMocks();
      await sandbox.close();
    }
  });

  it("says to grant id-token: write when the job has no OIDC token service", async () => {
    delete process.env.ACTIONS_ID_TOKEN_REQUEST_URL;
    delete process.env.ACTIONS_ID_TOKEN_REQUEST_TOKEN;
    const sandbox = await startSandbox();
    try {
      const credential = gitHubOidcCredential({
        tenantId: sandbox.entra.tenantId,
        clientId: "deployer",
        authorityHost: sandbox.entra.authorityHost,
        logger: { debug: () => {}, info: () => {} },
      });
      const error = await credential.getToken(ARM_SCOPE).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(ConfigurationError);
      expect(String((error as Error).message)).toContain("permissions: id-token: write");
    } finally {
      await sandbox.close();
    }
  });
});

describe("guidance when Entra refuses the GitHub token", () => {
  let sandbox: Sandbox;
  beforeAll(async () => {
    sandbox = await startSandbox({ subject: "repo:octo-org/octo-models:environment:production" });
  });
  afterAll(async () => {
    await sandbox?.close();
  });

  function expectNoToken(error: FederatedCredentialError): void {
    const everything = `${errorMessage(error)}\n${JSON.stringify(error)}\n${String(error.stack)}\n${sandbox.logs.join("\n")}`;
    expect(everything).not.toMatch(JWT);
    for (const secret of sandbox.masked) expect(everything).not.toContain(secret);
  }

  it("a subject mismatch (700213) shows iss, sub, aud, what to match, and the subject forms", async () => {
    const error = await refusal(credentialFor(sandbox).getToken(ARM_SCOPE));
    expect(error.code).toBe(700213);
    expect(error).toBeInstanceOf(ConfigurationError);
    const message = error.message;
    expect(message).toContain("AADSTS700213");
    expect(message).toContain(`issuer   (iss): ${sandbox.github.issuer}`);
    expect(message).toContain("subject  (sub): repo:octo-org/octo-models:ref:refs/heads/main");
    expect(message).toContain(`audience (aud): ${DEFAULT_AUDIENCE}`);
    expect(message).toContain("repo:octo-org/octo-models:environment:NAME");
    expect(message).toContain("repo:octo-org/octo-models:ref:refs/heads/BRANCH");
    expect(message).toContain("repo:octo-org/octo-models:ref:refs/tags/TAG");
    expect(message).toContain("repo:octo-org/octo-models:pull_request");
    expect(message).toContain("Subject:  repo:octo-org/octo-models:ref:refs/heads/main");
    expect(error.claims?.sub).toBe("repo:octo-org/octo-models:ref:refs/heads/main");
    expectNoToken(error);
  });

  it("a subject that differs in case (7002138) says Entra compares case", async () => {
    sandbox.github.setClaims({ environment: "Production" });
    try {
      const error = await refusal(credentialFor(sandbox).getToken(ARM_SCOPE));
      expect(error.code).toBe(7002138);
      expect(error.message).toContain("case");
      expect(error.message).toContain("repo:octo-org/octo-models:environment:Production");
      expectNoToken(error);
    } finally {
      sandbox.github.setClaims({ environment: undefined });
    }
  });

  it("an issuer mismatch (700211) names the exact issuer to use", async () => {
    sandbox.entra.registerApp({
      clientId: "deployer",
      federatedCredentials: [
        {
          issuer: `${sandbox.github.issuer}/`,
          subject: sandbox.github.subject(),
          audiences: [DEFAULT_AUDIENCE],
        },
      ],
    });
    try {
      const error = await refusal(credentialFor(sandbox).getToken(ARM_SCOPE));
      expect(error.code).toBe(700211);
      expect(error.message).toContain(
        `set the federated credential's Issuer to exactly ${sandbox.github.issuer}.`,
      );
      expectNoToken(error);
    } finally {
      sandbox.entra.registerApp({
        clientId: "deployer",
        federatedCredentials: [
          {
            issuer: sandbox.github.issuer,
            subject: "repo:octo-org/octo-models:environment:production",
            audiences: [DEFAULT_AUDIENCE],
          },
        ],
      });
    }
  });

  it("an audience mismatch (700212) names the audience", async () => {
    sandbox.github.setClaims({ environment: "production" });
    try {
      const error = await refusal(
        credentialFor(sandbox, { audience: "api://AzureADTokenExchangeUSGov" }).getToken(ARM_SCOPE),
      );
      expect(error.code).toBe(700212);
      expect(error.message).toContain("audience (aud): api://AzureADTokenExchangeUSGov");
      expect(error.message).toContain("`audience` input");
      expectNoToken(error);
    } finally {
      sandbox.github.setClaims({ environment: undefined });
    }
  });

  it("an expired token (700024) points at the clock", async () => {
    sandbox.github.setClaims({ environment: "production" });
    try {
      const credential = gitHubOidcCredential({
        tenantId: sandbox.entra.tenantId,
        clientId: "deployer",
        authorityHost: sandbox.entra.authorityHost,
        getIdToken: (aud) => sandbox.github.mint(aud, { issuedAt: Math.floor(Date.now() / 1000) - 400 }),
        setSecret: (secret) => sandbox.masked.push(secret),
        logger: { debug: (m) => sandbox.logs.push(m), info: (m) => sandbox.logs.push(m) },
      });
      const error = await refusal(credential.getToken(ARM_SCOPE));
      expect(error.code).toBe(700024);
      expect(error.message).toContain("not within its valid time range");
      expect(error.message).toContain("clock");
      expectNoToken(error);
    } finally {
      sandbox.github.setClaims({ environment: undefined });
    }
  });

  it("an app without federated credentials (70021) asks for one with the token's subject", async () => {
    sandbox.entra.registerApp({ clientId: "bare", federatedCredentials: [] });
    const credential = gitHubOidcCredential({
      tenantId: sandbox.entra.tenantId,
      clientId: "bare",
      authorityHost: sandbox.entra.authorityHost,
      getIdToken: sandbox.getIdToken,
      setSecret: (secret) => sandbox.masked.push(secret),
      logger: { debug: () => {}, info: () => {} },
    });
    const error = await refusal(credential.getToken(ARM_SCOPE));
    expect(error.code).toBe(70021);
    expect(error.message).toContain(
      "add a federated credential with Subject repo:octo-org/octo-models:ref:refs/heads/main",
    );
    expectNoToken(error);
  });
});

describe("authority host", () => {
  it("follows AZURE_AUTHORITY_HOST like @azure/identity, skipping instance discovery for a host MSAL does not know", async () => {
    const sandbox = await startSandbox();
    try {
      const credential = gitHubOidcCredential({
        tenantId: sandbox.entra.tenantId,
        clientId: "deployer",
        env: { AZURE_AUTHORITY_HOST: sandbox.entra.authorityHost },
        getIdToken: sandbox.getIdToken,
        setSecret: (secret) => sandbox.masked.push(secret),
        logger: { debug: () => {}, info: (m) => sandbox.logs.push(m) },
      });
      await expect(credential.getToken(ARM_SCOPE)).resolves.not.toBeNull();
      expect(sandbox.entra.tokenRequests.at(-1)?.outcome).toBe("issued");
      // The first token's claims are logged at info, as Azure/login shows them.
      expect(sandbox.logs.at(-1)).toContain(`sub=${sandbox.github.subject()}`);
    } finally {
      await sandbox.close();
    }
  });
});

describe("wrong client or tenant ID", () => {
  it("says which ID to check", async () => {
    const sandbox = await startSandbox();
    try {
      const make = (tenantId: string, clientId: string) =>
        gitHubOidcCredential({
          tenantId,
          clientId,
          authorityHost: sandbox.entra.authorityHost,
          getIdToken: sandbox.getIdToken,
          setSecret: (secret) => sandbox.masked.push(secret),
          logger: { debug: () => {}, info: () => {} },
        });
      const noApp = await make(sandbox.entra.tenantId, "11111111-2222-3333-4444-555555555555")
        .getToken(ARM_SCOPE)
        .catch((e: unknown) => e);
      expect(noApp).toBeInstanceOf(ConfigurationError);
      expect(noApp).not.toBeInstanceOf(FederatedCredentialError);
      expect((noApp as Error).message).toMatch(
        /no application with client ID 11111111-2222-3333-4444-555555555555/,
      );
      expect((noApp as Error).message).toContain("AADSTS700016");

      const noTenant = await make("99999999-0000-0000-0000-000000000000", "deployer")
        .getToken(ARM_SCOPE)
        .catch((e: unknown) => e);
      // MSAL reports only that it could not resolve the tenant's endpoints; the message names what to check.
      expect((noTenant as Error).message).toMatch(
        /OpenID configuration of tenant 99999999-0000-0000-0000-000000000000 .*check the tenant ID/,
      );
      expect(errorMessage(noTenant)).not.toMatch(JWT);
    } finally {
      await sandbox.close();
    }
  });
});
