// The job's Cloudflare credential: which tokens are refused and what the message says (which problem, and when),
// and the minting decisions: a read-only token for the tag, deleted at once; the write token scoped to the gateway
// Worker, or account-wide only when the Worker must be created; lifetimes bounded by 30 minutes and the deadline;
// every value masked and every id recorded for the post step before anything else can fail.
import { describe, expect, it } from "vitest";
import type { TokenStatus } from "../../src/cloudflare/api.ts";
import {
  checkTokenStatus,
  DEADLINE_MARGIN_MS,
  deleteMintedTokens,
  MAX_MINTED_LIFETIME_MS,
  mintGatewayCredential,
  READ_TOKEN_LIFETIME_MS,
  verifyGivenToken,
} from "../../src/cloudflare/credential.ts";
import { CloudflareCredentialError } from "../../src/cloudflare/errors.ts";
import { rfc3339 } from "../../src/cloudflare/time.ts";
import { ACCOUNT, FakeCloudflare } from "./fake-cloudflare.ts";

const NOW = Date.parse("2026-11-25T04:00:00Z");
const MIN = 60_000;

const check = (validUntil = NOW + 10 * MIN) => ({
  what: "The `cloudflare-api-token` input",
  now: NOW,
  validUntil,
  validUntilWhat: "this step's deadline (timeout-minutes 10)",
  fix: "issue a new token.",
});

const status = (fields: Partial<TokenStatus>): TokenStatus => ({ id: "t", status: "active", ...fields });

function refusal(fields: Partial<TokenStatus>, validUntil?: number): string {
  try {
    checkTokenStatus(status(fields), check(validUntil));
  } catch (error) {
    expect(error).toBeInstanceOf(CloudflareCredentialError);
    return (error as Error).message;
  }
  throw new Error("the token was accepted");
}

describe("checkTokenStatus", () => {
  it("accepts an active token valid past the deadline, or with no expiry", () => {
    expect(() => checkTokenStatus(status({ expires_on: rfc3339(NOW + 11 * MIN) }), check())).not.toThrow();
    expect(() => checkTokenStatus(status({}), check())).not.toThrow();
    expect(() =>
      checkTokenStatus(
        status({ not_before: rfc3339(NOW - MIN), expires_on: rfc3339(NOW + 60 * MIN) }),
        check(),
      ),
    ).not.toThrow();
  });

  it("refuses an expired token, saying when it expired", () => {
    expect(refusal({ status: "expired", expires_on: "2026-11-25T03:30:00Z" })).toBe(
      "The `cloudflare-api-token` input expired at 2026-11-25T03:30:00Z (30m ago): issue a new token.",
    );
    // Cloudflare may still say active for a moment after expiry: the time decides.
    expect(refusal({ expires_on: "2026-11-25T03:59:00Z" })).toContain(
      "expired at 2026-11-25T03:59:00Z (1m ago)",
    );
  });

  it("refuses a token expiring before the deadline, saying when both are", () => {
    expect(refusal({ expires_on: "2026-11-25T04:04:00Z" })).toBe(
      "The `cloudflare-api-token` input expires at 2026-11-25T04:04:00Z (in 4m), before this step's deadline " +
        "(timeout-minutes 10) at 2026-11-25T04:10:00Z: it would stop working part way. issue a new token.",
    );
  });

  it("refuses a disabled token", () => {
    expect(refusal({ status: "disabled", expires_on: rfc3339(NOW + 60 * MIN) })).toBe(
      "The `cloudflare-api-token` input is disabled on Cloudflare: issue a new token.",
    );
  });

  it("refuses a token that is not valid yet, saying from when", () => {
    expect(refusal({ not_before: "2026-11-25T05:30:00Z" })).toBe(
      "The `cloudflare-api-token` input is not valid yet: Cloudflare accepts it from 2026-11-25T05:30:00Z (in " +
        "90m). Use a token that is valid now, or run the step after that time. issue a new token.",
    );
  });
});

describe("verifyGivenToken", () => {
  it("verifies an account token at the account endpoint", async () => {
    const cf = new FakeCloudflare();
    cf.addToken({ value: "acct", expires_on: rfc3339(Date.now() + 60 * MIN) });
    await expect(
      verifyGivenToken(cf.client("acct"), { ...check(), now: Date.now(), validUntil: Date.now() }),
    ).resolves.toMatchObject({
      status: "active",
    });
    expect(cf.calls.map((call) => call.call)).toEqual(["verifyToken"]);
  });

  it("falls back to the user endpoint for a user token", async () => {
    const cf = new FakeCloudflare();
    cf.addToken({ value: "user", kind: "user", status: "disabled" });
    await expect(verifyGivenToken(cf.client("user"), { ...check(), now: Date.now() })).rejects.toThrow(
      "is disabled on Cloudflare",
    );
    expect(cf.calls.map((call) => call.call)).toEqual(["verifyToken", "verifyToken"]);
  });

  it("says so when Cloudflare knows the token as neither", async () => {
    const cf = new FakeCloudflare();
    await expect(verifyGivenToken(cf.client("nope"), { ...check(), now: Date.now() })).rejects.toThrow(
      `is not a token Cloudflare knows, as an account token of account ${ACCOUNT} or as a user token`,
    );
  });
});

describe("mintGatewayCredential", () => {
  function setup(options: { worker?: boolean; bootstrapPermissions?: string[] } = {}) {
    const cf = new FakeCloudflare();
    const start = Date.now();
    const bootstrap = cf.addToken({
      name: "bootstrap",
      value: "bootstrap-value",
      permissions: options.bootstrapPermissions ?? ["API Tokens Write"],
    });
    if (options.worker ?? true) cf.addWorker("aml-edge-gateway");
    const secrets: string[] = [];
    const minted: { id: string; name: string }[] = [];
    const deleted: string[] = [];
    const logs: string[] = [];
    const mintOptions = {
      bootstrap: cf.client(bootstrap.value, "the bootstrap token"),
      bootstrapWhat: "the bootstrap token (Key Vault secret cloudflare-bootstrap-token)",
      connect: (value: string, description: string) => cf.client(value, description),
      script: "aml-edge-gateway",
      action: "route",
      deadline: start + 10 * MIN,
      jobLabel: "octo/repo run 42.1",
      clock: { now: () => start, sleep: async () => {} },
      logger: {
        info: (message: string) => logs.push(message),
        warning: (message: string) => logs.push(`warning: ${message}`),
        debug: () => {},
      },
      setSecret: (secret: string) => secrets.push(secret),
      onMinted: (token: { id: string; name: string }) => minted.push(token),
      onDeleted: (id: string) => deleted.push(id),
    };
    return { cf, start, secrets, minted, deleted, logs, mintOptions };
  }

  it("finds the Worker with a read-only token deleted at once, then mints write on that Worker only", async () => {
    const { cf, start, secrets, minted, deleted, mintOptions } = setup();
    const credential = await mintGatewayCredential(mintOptions);
    expect(credential).toMatchObject({ scope: "worker", workerExists: true });
    const [read, write] = cf.tokens.filter((token) => token.name.startsWith("aml-edge"));
    expect(read?.name).toBe("aml-edge route read octo/repo run 42.1");
    expect(read?.policies).toEqual([
      {
        effect: "allow",
        permission_groups: [{ id: "g-scripts-read" }],
        resources: { [`com.cloudflare.api.account.${ACCOUNT}`]: "*" },
      },
    ]);
    expect(Date.parse(read?.expires_on ?? "")).toBeLessThanOrEqual(start + READ_TOKEN_LIFETIME_MS + 1000);
    expect(read?.deleted).toBe(true);
    expect(write?.name).toBe("aml-edge route octo/repo run 42.1");
    expect(write?.policies).toEqual([
      {
        effect: "allow",
        permission_groups: [{ id: "g-scripts-write" }],
        resources: {
          [`com.cloudflare.api.account.${ACCOUNT}`]: {
            [`com.cloudflare.edge.worker.script.${cf.tagOf("aml-edge-gateway")}`]: "*",
          },
        },
      },
    ]);
    // Deadline + margin, whole seconds, and never more than 30 minutes.
    const expires = Date.parse(write?.expires_on ?? "");
    expect(expires).toBeGreaterThanOrEqual(start + 10 * MIN + DEADLINE_MARGIN_MS);
    expect(expires).toBeLessThan(start + 10 * MIN + DEADLINE_MARGIN_MS + 1000);
    expect(write?.deleted).toBe(false);
    // Both values masked; both ids recorded the moment they existed; the read one marked deleted.
    expect(secrets).toEqual([read?.value, write?.value]);
    expect(minted.map((token) => token.id)).toEqual([read?.id, write?.id]);
    expect(deleted).toEqual([read?.id]);
    // The minted client can publish to the Worker, and nothing else.
    await expect(credential.api.listDeployments("aml-edge-gateway")).resolves.toHaveLength(1);
    cf.addWorker("other");
    await expect(credential.api.listDeployments("other")).rejects.toMatchObject({
      status: 403,
      codes: [10000],
    });
  });

  it("caps the write token at 30 minutes whatever the deadline", async () => {
    const { cf, start, mintOptions } = setup();
    await mintGatewayCredential({ ...mintOptions, deadline: start + 60 * MIN });
    const write = cf.tokens.find((token) => token.name === "aml-edge route octo/repo run 42.1");
    expect(Date.parse(write?.expires_on ?? "")).toBeLessThanOrEqual(start + MAX_MINTED_LIFETIME_MS + 1000);
  });

  it("mints account-wide write only when the Worker does not exist, and says why", async () => {
    const { cf, mintOptions, logs } = setup({ worker: false });
    const credential = await mintGatewayCredential(mintOptions);
    expect(credential).toMatchObject({ scope: "account", workerExists: false });
    const write = cf.tokens.find((token) => token.name === "aml-edge route octo/repo run 42.1");
    expect(write?.policies[0]?.resources).toEqual({ [`com.cloudflare.api.account.${ACCOUNT}`]: "*" });
    expect(logs.join("\n")).toContain(
      'Worker aml-edge-gateway does not exist yet on account 0123456789abcdef0123456789abcdef: minting a token with "Workers Scripts Write" on the whole account',
    );
  });

  it("names the permission the bootstrap token lacks when Cloudflare refuses to mint", async () => {
    const { cf, mintOptions, minted } = setup({ worker: false });
    cf.fail("createToken", 403, [{ code: 10000, message: "Authentication error" }]);
    await expect(mintGatewayCredential(mintOptions)).rejects.toThrow(
      'Cloudflare refused to let the bootstrap token (Key Vault secret cloudflare-bootstrap-token) mint "Workers ' +
        'Scripts Read" on the account (to find Worker aml-edge-gateway\'s tag): the bootstrap token needs "API ' +
        `Tokens Write" on account ${ACCOUNT}`,
    );
    expect(minted).toEqual([]);
  });

  it("names the account-wide permission when only that mint is refused", async () => {
    const { cf, mintOptions, minted, deleted } = setup({ worker: false });
    // The read token goes through; the account-wide write token is refused.
    cf.fail("createToken", 403, [{ code: 10000, message: "Authentication error" }], { after: 1 });
    await expect(mintGatewayCredential(mintOptions)).rejects.toThrow(
      `mint "Workers Scripts Write" on the whole account ${ACCOUNT} (Worker aml-edge-gateway does not exist yet, and creating it needs that)`,
    );
    expect(minted).toHaveLength(1);
    expect(deleted).toEqual([minted[0]?.id]);
  });

  it("refuses an expired bootstrap token before minting anything", async () => {
    const { cf, mintOptions, minted } = setup();
    const bootstrap = cf.tokens.find((token) => token.name === "bootstrap");
    if (bootstrap) bootstrap.expires_on = rfc3339(Date.now() + 2 * MIN);
    await expect(mintGatewayCredential(mintOptions)).rejects.toThrow(
      /^The bootstrap token \(Key Vault secret cloudflare-bootstrap-token\) expires at .* \(in (1m59s|2m)\), before this step's deadline/,
    );
    expect(minted).toEqual([]);
  });

  it("keeps going when the read token cannot be deleted at once: the post step tries again", async () => {
    const { cf, mintOptions, minted, deleted, logs } = setup();
    cf.fail("deleteToken", 500, [{ code: 10013, message: "internal" }]);
    await mintGatewayCredential(mintOptions);
    expect(minted).toHaveLength(2);
    expect(deleted).toEqual([]);
    expect(logs.join("\n")).toMatch(/warning: Could not delete the read-only token "aml-edge route read/);
  });
});

describe("deleteMintedTokens", () => {
  it("deletes each token; one already gone counts as deleted; a failure is reported, not thrown", async () => {
    const cf = new FakeCloudflare();
    const bootstrap = cf.addToken({ value: "b", permissions: ["API Tokens Write"] });
    const a = cf.addToken({ name: "a" });
    const b = cf.addToken({ name: "b" });
    b.deleted = true;
    const c = cf.addToken({ name: "c" });
    const logs: string[] = [];
    const client = cf.client(bootstrap.value);
    let calls = 0;
    const flaky = {
      ...client,
      accountId: client.accountId,
      deleteToken: async (id: string, name?: string) => {
        calls++;
        if (id === c.id) throw new Error("connection reset");
        return client.deleteToken(id, name);
      },
    };
    const result = await deleteMintedTokens(flaky as typeof client, [a, b, c], {
      info: (message) => logs.push(message),
      warning: () => {},
      debug: () => {},
    });
    expect(calls).toBe(3);
    expect(result).toEqual({ deleted: [a.id, b.id], failed: [{ id: c.id, reason: "connection reset" }] });
    expect(a.deleted).toBe(true);
    expect(logs).toEqual([
      'Deleted the job\'s Cloudflare token "a".',
      'The job\'s Cloudflare token "b" was already deleted.',
    ]);
  });
});
