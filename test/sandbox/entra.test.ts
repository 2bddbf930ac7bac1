// Entra's stand-in is checked through the real @azure/identity ClientAssertionCredential (MSAL) over HTTPS, with
// GitHub OIDC tokens from the GitHub stand-in: the success path, each AADSTS refusal a misconfigured federated
// credential produces, and the user and app tokens it signs for gateway clients.
import { ClientAssertionCredential } from "@azure/identity";
import { createRemoteJWKSet, decodeJwt, jwtVerify } from "jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ARM_RESOURCE, type Entra, KEY_VAULT_RESOURCE, startEntra } from "../../src/sandbox/entra.ts";
import { type GitHubOidc, startGitHubOidc } from "../../src/sandbox/github-oidc.ts";
import { createSandboxCa, trustInProcess } from "../../src/sandbox/tls.ts";

const AUDIENCE = "api://AzureADTokenExchange";
const ARM_SCOPE = `${ARM_RESOURCE}/.default`;
const ENV_SUBJECT = "repo:octo-org/octo-models:environment:production";

let entra: Entra;
let github: GitHubOidc;
let untrust: () => void;

beforeAll(async () => {
  const ca = await createSandboxCa();
  untrust = trustInProcess(ca.caPem);
  github = await startGitHubOidc();
  entra = await startEntra({ ca });
  entra.registerApp({
    clientId: "deployer",
    federatedCredentials: [{ issuer: github.issuer, subject: ENV_SUBJECT, audiences: [AUDIENCE] }],
  });
});

afterAll(async () => {
  await entra?.close();
  await github?.close();
  untrust?.();
});

/** What core.getIDToken does, without its `::add-mask::` line on stdout. */
async function fetchGitHubToken(audience = AUDIENCE): Promise<string> {
  const res = await fetch(`${github.requestUrl}&audience=${encodeURIComponent(audience)}`, {
    headers: { authorization: `Bearer ${github.requestToken}` },
  });
  return ((await res.json()) as { value: string }).value;
}

function credential(clientId: string, getAssertion: () => Promise<string>, tenantId = entra.tenantId) {
  return new ClientAssertionCredential(tenantId, clientId, getAssertion, {
    authorityHost: entra.authorityHost,
    disableInstanceDiscovery: true,
  });
}

async function refusal(clientId: string, getAssertion: () => Promise<string>): Promise<string> {
  try {
    await credential(clientId, getAssertion).getToken(ARM_SCOPE);
  } catch (error) {
    return error instanceof Error ? error.message : String(error);
  }
  throw new Error("expected Entra to refuse the assertion");
}

describe("Entra stand-in with ClientAssertionCredential", () => {
  it("exchanges a GitHub OIDC token for an ARM access token over HTTPS", async () => {
    github.setClaims({ environment: "production" });
    try {
      const before = entra.tokenRequests.length;
      const cred = credential("deployer", () => fetchGitHubToken());
      const token = await cred.getToken(ARM_SCOPE);
      expect(token.expiresOnTimestamp).toBeGreaterThan(Date.now() + 3000 * 1000);
      const claims = await entra.verifyAccessToken(token.token, ARM_RESOURCE);
      expect(claims).toMatchObject({
        aud: ARM_RESOURCE,
        iss: `https://sts.windows.net/${entra.tenantId}/`,
        appid: "deployer",
        tid: entra.tenantId,
        idtyp: "app",
      });
      expect(claims.oid).toBeTypeOf("string");
      // MSAL's cache answers the second call: one token request reached Entra.
      await cred.getToken(ARM_SCOPE);
      expect(entra.tokenRequests.slice(before)).toEqual([
        { clientId: "deployer", scope: ARM_SCOPE, outcome: "issued" },
      ]);

      // A Key Vault token is for Key Vault only.
      const vault = await cred.getToken(`${KEY_VAULT_RESOURCE}/.default`);
      await expect(entra.verifyAccessToken(vault.token, KEY_VAULT_RESOURCE)).resolves.toMatchObject({
        aud: KEY_VAULT_RESOURCE,
      });
      await expect(entra.verifyAccessToken(vault.token, ARM_RESOURCE)).rejects.toThrow(/aud/);
    } finally {
      github.setClaims({ environment: undefined });
    }
  });

  it("refuses a subject that is not the federated credential's with AADSTS700213", async () => {
    // The job runs on main without `environment:`, so its subject is the branch form.
    const message = await refusal("deployer", () => fetchGitHubToken());
    expect(message).toContain("AADSTS700213");
    expect(message).toContain("repo:octo-org/octo-models:ref:refs/heads/main");
    expect(entra.tokenRequests.at(-1)?.outcome).toBe(700213);
  });

  it("refuses a subject that differs only in case with AADSTS7002138", async () => {
    github.setClaims({ environment: "Production" });
    try {
      const message = await refusal("deployer", () => fetchGitHubToken());
      expect(message).toContain("AADSTS7002138");
      expect(message).toContain("case-insensitive");
    } finally {
      github.setClaims({ environment: undefined });
    }
  });

  it("refuses an issuer that differs by a trailing slash with AADSTS700211", async () => {
    entra.registerApp({
      clientId: "slash",
      federatedCredentials: [
        { issuer: `${github.issuer}/`, subject: github.subject(), audiences: [AUDIENCE] },
      ],
    });
    const message = await refusal("slash", () => fetchGitHubToken());
    expect(message).toContain("AADSTS700211");
    expect(message).toContain(`'${github.issuer}'`);
  });

  it("refuses an audience no federated credential lists with AADSTS700212", async () => {
    entra.registerApp({
      clientId: "branch",
      federatedCredentials: [{ issuer: github.issuer, subject: github.subject(), audiences: [AUDIENCE] }],
    });
    const message = await refusal("branch", () => fetchGitHubToken("api://AzureADTokenExchangeUSGov"));
    expect(message).toContain("AADSTS700212");
    // The same app accepts the right audience, so the refusal above is about the audience alone.
    await expect(credential("branch", () => fetchGitHubToken()).getToken(ARM_SCOPE)).resolves.toBeDefined();
  });

  it("refuses an expired assertion with AADSTS700024", async () => {
    const issuedAt = Math.floor(Date.now() / 1000) - 400;
    const message = await refusal("branch", () => github.mint(AUDIENCE, { issuedAt }));
    expect(message).toContain("AADSTS700024");
    expect(message).toContain("not within its valid time range");
  });

  it("refuses any assertion for an app without federated credentials with AADSTS70021", async () => {
    entra.registerApp({ clientId: "bare", federatedCredentials: [] });
    expect(await refusal("bare", () => fetchGitHubToken())).toContain("AADSTS70021");
  });

  it("refuses an assertion signed by a key the issuer does not publish", async () => {
    const impostor = await startGitHubOidc({ issuer: github.issuer });
    try {
      const message = await refusal("branch", () => impostor.mint(AUDIENCE));
      expect(message).toContain("AADSTS700027");
    } finally {
      await impostor.close();
    }
  });

  it("verifies tokens with GitHub's real issuer name through a configured key set URI", async () => {
    const realIssuer = "https://token.actions.githubusercontent.com";
    const asGitHub = await startGitHubOidc({ issuer: realIssuer });
    try {
      entra.registerApp({
        clientId: "real-issuer",
        federatedCredentials: [{ issuer: realIssuer, subject: asGitHub.subject(), audiences: [AUDIENCE] }],
      });
      // Entra would find the keys through the issuer's discovery document; the sandbox never leaves loopback.
      expect(() =>
        entra.setIssuerJwksUri(realIssuer, "https://token.actions.githubusercontent.com/.well-known/jwks"),
      ).toThrow(/loopback/);
      entra.setIssuerJwksUri(realIssuer, asGitHub.jwksUri);
      const token = await credential("real-issuer", () => asGitHub.mint(AUDIENCE)).getToken(ARM_SCOPE);
      await expect(entra.verifyAccessToken(token.token, ARM_RESOURCE)).resolves.toMatchObject({
        appid: "real-issuer",
      });
    } finally {
      await asGitHub.close();
    }
  });

  it("refuses with AADSTS50166 when the issuer's keys cannot be fetched", async () => {
    const unreachable = await startGitHubOidc();
    const issuer = unreachable.issuer;
    const token = await unreachable.mint(AUDIENCE);
    await unreachable.close();
    entra.registerApp({
      clientId: "gone",
      federatedCredentials: [{ issuer, subject: github.subject(), audiences: [AUDIENCE] }],
    });
    expect(await refusal("gone", async () => token)).toContain("AADSTS50166");
  });

  it("answers with Entra's error body shape, and knows its tenant, its apps and its scopes", async () => {
    const post = async (tenant: string, form: Record<string, string>) => {
      const res = await fetch(`${entra.authorityHost}/${tenant}/oauth2/v2.0/token`, {
        method: "POST",
        body: new URLSearchParams(form),
      });
      return { status: res.status, body: (await res.json()) as Record<string, unknown> };
    };
    const assertion = await fetchGitHubToken();
    const form = {
      grant_type: "client_credentials",
      client_id: "branch",
      scope: ARM_SCOPE,
      client_assertion_type: "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
      client_assertion: assertion,
    };
    const wrongTenant = await post("00000000-0000-0000-0000-000000000000", form);
    expect(wrongTenant.status).toBe(400);
    expect(wrongTenant.body.error_codes).toEqual([90002]);
    const unknownApp = await post(entra.tenantId, { ...form, client_id: "nobody" });
    expect(unknownApp.body.error_codes).toEqual([700016]);
    const badScope = await post(entra.tenantId, {
      ...form,
      scope: "https://management.azure.com/user_impersonation",
    });
    expect(badScope.body.error_codes).toEqual([1002012]);
    const subjectMismatch = await post(entra.tenantId, { ...form, client_id: "deployer" });
    expect(subjectMismatch.body).toMatchObject({ error: "invalid_request", error_codes: [700213] });
    expect(String(subjectMismatch.body.error_description)).toMatch(
      /^AADSTS700213: .* Trace ID: [0-9a-f-]{36} Correlation ID: [0-9a-f-]{36} Timestamp: /,
    );
    for (const key of ["timestamp", "trace_id", "correlation_id"])
      expect(subjectMismatch.body[key]).toBeTypeOf("string");
    const ok = await post(entra.tenantId, form);
    expect(ok.status).toBe(200);
    expect(ok.body).toMatchObject({ token_type: "Bearer", expires_in: 3600 });
  });

  it("issues short-lived access tokens when told to", async () => {
    entra.setAccessTokenLifetime(30);
    try {
      const token = await credential("branch", () => fetchGitHubToken()).getToken(ARM_SCOPE);
      const claims = decodeJwt(token.token);
      expect((claims.exp ?? 0) - (claims.iat ?? 0)).toBe(30);
    } finally {
      entra.setAccessTokenLifetime(3600);
    }
  });
});

describe("tokens for gateway clients", () => {
  it("signs user and app tokens with the v2 issuer, verifiable through the published key set", async () => {
    const discovery = (await (
      await fetch(`${entra.authorityHost}/${entra.tenantId}/v2.0/.well-known/openid-configuration`)
    ).json()) as { issuer: string; jwks_uri: string };
    expect(discovery.issuer).toBe(entra.issuer);
    const keys = createRemoteJWKSet(new URL(discovery.jwks_uri));
    const user = await entra.issueUserToken({
      audience: "api://gateway",
      oid: "user-oid",
      roles: ["Scorer"],
      groups: ["g-1"],
      scp: "score.read",
      name: "Ada",
    });
    const { payload: u } = await jwtVerify(user, keys, { issuer: entra.issuer, audience: "api://gateway" });
    expect(u).toMatchObject({
      oid: "user-oid",
      sub: "user-oid",
      roles: ["Scorer"],
      groups: ["g-1"],
      scp: "score.read",
      tid: entra.tenantId,
      ver: "2.0",
    });
    const app = await entra.issueAppToken({
      audience: "api://gateway",
      roles: ["Model.Score"],
      clientId: "agent-1",
    });
    const { payload: a } = await jwtVerify(app, keys, { issuer: entra.issuer, audience: "api://gateway" });
    expect(a).toMatchObject({ roles: ["Model.Score"], azp: "agent-1", idtyp: "app" });
    expect(a.scp).toBeUndefined();
    // verifyAccessToken accepts them for their audience only.
    await expect(entra.verifyAccessToken(app, "api://gateway")).resolves.toMatchObject({ azp: "agent-1" });
    await expect(entra.verifyAccessToken(app, ARM_RESOURCE)).rejects.toThrow();
  });

  it("does not accept a token signed by another Entra", async () => {
    const other = await startEntra({ tenantId: entra.tenantId });
    try {
      const foreign = await other.issueAppToken({ audience: ARM_RESOURCE });
      await expect(entra.verifyAccessToken(foreign, ARM_RESOURCE)).rejects.toThrow();
    } finally {
      await other.close();
    }
  });
});
