// The GitHub OIDC stand-in must look to @actions/core exactly like the runner's token service, and its tokens must
// verify against its own published keys with the claims and subject forms GitHub uses.
import * as core from "@actions/core";
import { createRemoteJWKSet, decodeJwt, jwtVerify } from "jose";
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from "vitest";
import { type GitHubOidc, startGitHubOidc } from "../../src/sandbox/github-oidc.ts";

let oidc: GitHubOidc;
const savedEnv = { ...process.env };

beforeAll(async () => {
  oidc = await startGitHubOidc();
});

afterAll(async () => {
  await oidc?.close();
});

afterEach(() => {
  process.env = { ...savedEnv };
  vi.restoreAllMocks();
});

/** core.getIDToken masks the token by printing `::add-mask::<token>`; the test output must not carry it. */
function silenceStdout(): string[] {
  const written: string[] = [];
  vi.spyOn(process.stdout, "write").mockImplementation((chunk: string | Uint8Array) => {
    written.push(String(chunk));
    return true;
  });
  return written;
}

describe("GitHub OIDC token service", () => {
  it("answers core.getIDToken through ACTIONS_ID_TOKEN_REQUEST_URL/_TOKEN with a token its key set verifies", async () => {
    Object.assign(process.env, oidc.env());
    const written = silenceStdout();
    const before = oidc.issued;
    const token = await core.getIDToken("api://AzureADTokenExchange");
    vi.restoreAllMocks();
    expect(oidc.issued).toBe(before + 1);
    // getIDToken masked it the moment it arrived.
    expect(written.some((line) => line.includes("::add-mask::"))).toBe(true);

    const discovery = (await (await fetch(oidc.discoveryUri)).json()) as { issuer: string; jwks_uri: string };
    expect(discovery.issuer).toBe(oidc.issuer);
    const { payload, protectedHeader } = await jwtVerify(
      token,
      createRemoteJWKSet(new URL(discovery.jwks_uri)),
      {
        issuer: oidc.issuer,
        audience: "api://AzureADTokenExchange",
        algorithms: ["RS256"],
      },
    );
    expect(protectedHeader.kid).toBeTypeOf("string");
    expect(payload).toMatchObject({
      sub: "repo:octo-org/octo-models:ref:refs/heads/main",
      repository: "octo-org/octo-models",
      repository_owner: "octo-org",
      ref: "refs/heads/main",
      event_name: "push",
      runner_environment: "github-hosted",
      run_attempt: "1",
    });
    for (const claim of [
      "repository_id",
      "repository_owner_id",
      "sha",
      "workflow",
      "job_workflow_ref",
      "run_id",
    ]) {
      expect(payload[claim], claim).toBeTypeOf("string");
    }
    expect((payload.exp ?? 0) - (payload.iat ?? 0)).toBe(300);
  });

  it("refuses a wrong or missing request token with 401", async () => {
    const url = `${oidc.requestUrl}&audience=api://AzureADTokenExchange`;
    const before = oidc.issued;
    expect((await fetch(url, { headers: { authorization: "Bearer not-the-token" } })).status).toBe(401);
    expect((await fetch(url)).status).toBe(401);
    expect(oidc.issued).toBe(before);
    const ok = await fetch(url, { headers: { authorization: `Bearer ${oidc.requestToken}` } });
    expect(ok.status).toBe(200);
    expect(Object.keys((await ok.json()) as object)).toContain("value");
  });

  it("uses the repository owner's URL as the audience when none is asked for", async () => {
    const res = await fetch(oidc.requestUrl, { headers: { authorization: `Bearer ${oidc.requestToken}` } });
    const { value } = (await res.json()) as { value: string };
    expect(decodeJwt(value).aud).toBe("https://github.com/octo-org");
  });

  it("derives the subject the way GitHub does: environment first, then pull_request, then the ref", async () => {
    const subjectOf = async () => decodeJwt(await oidc.mint("api://AzureADTokenExchange")).sub;
    try {
      expect(await subjectOf()).toBe("repo:octo-org/octo-models:ref:refs/heads/main");
      oidc.setClaims({ ref: "refs/tags/v1.2.0", ref_type: "tag" });
      expect(await subjectOf()).toBe("repo:octo-org/octo-models:ref:refs/tags/v1.2.0");
      oidc.setClaims({ event_name: "pull_request", ref: "refs/pull/7/merge", ref_type: "branch" });
      expect(await subjectOf()).toBe("repo:octo-org/octo-models:pull_request");
      oidc.setClaims({ environment: "Production" });
      expect(await subjectOf()).toBe("repo:octo-org/octo-models:environment:Production");
      const withEnvironment = decodeJwt(await oidc.mint("x"));
      expect(withEnvironment.environment).toBe("Production");
      oidc.setClaims({ subject_format: "immutable" });
      expect(await subjectOf()).toBe("repo:octo-org@98765432/octo-models@712345678:environment:Production");
      oidc.setClaims({ sub: "repository_owner:octo-org:workflow:deploy-model" });
      expect(await subjectOf()).toBe("repository_owner:octo-org:workflow:deploy-model");
      expect(oidc.subject()).toBe("repository_owner:octo-org:workflow:deploy-model");
    } finally {
      oidc.setClaims({
        sub: undefined,
        subject_format: undefined,
        environment: undefined,
        event_name: "push",
        ref: "refs/heads/main",
        ref_type: "branch",
      });
    }
    const reset = decodeJwt(await oidc.mint("x"));
    expect(reset.sub).toBe("repo:octo-org/octo-models:ref:refs/heads/main");
    expect(reset.environment).toBeUndefined();
  });

  it("issues tokens with the configured lifetime", async () => {
    oidc.setLifetime(20);
    try {
      const res = await fetch(`${oidc.requestUrl}&audience=a`, {
        headers: { authorization: `Bearer ${oidc.requestToken}` },
      });
      const { value } = (await res.json()) as { value: string };
      const claims = decodeJwt(value);
      expect((claims.exp ?? 0) - (claims.iat ?? 0)).toBe(20);
      expect(() => oidc.setLifetime(0)).toThrow(/lifetime/);
    } finally {
      oidc.setLifetime(300);
    }
  });
});
