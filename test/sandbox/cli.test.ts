// The `aml-edge` command in-process: argument errors and exit codes, then `gateway dev` serving real requests
// through the real gateway bundle with local stand-ins, and cleaning up after itself.
import { mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { decodeJwt, decodeProtectedHeader } from "jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { keyFingerprint } from "../../src/config/fingerprint.ts";
import { type ScoringServer, startScoringServer } from "../../src/sandbox/scoring-server.ts";
import { startTokenIssuer, type TokenIssuer } from "../../src/sandbox/token-issuer.ts";
import { freePort, parseCurl, runInProcess } from "./cli-helpers.ts";

let workdir: string;
beforeAll(async () => {
  workdir = await mkdtemp(join(tmpdir(), "aml-edge-cli-test-"));
});
afterAll(async () => {
  await rm(workdir, { recursive: true, force: true });
});

async function writeConfig(name: string, text: string): Promise<string> {
  const path = join(workdir, name);
  await writeFile(path, text);
  return path;
}

/** One port for the issuer and the scoring URI, to prove stand-ins share an address. */
function devConfig(port: number, scoringPort = port): string {
  return `
description: cli test
issuers:
  - name: corp
    issuer: https://login.corp.test/t-1/v2.0
    jwksUri: http://127.0.0.1:${port}/t-1/discovery/keys
    audiences: ["api://credit"]
    algorithms: [ES256]
    tenants: [t-1]
    typ: at+jwt
    maxTokenAgeSeconds: 600
    roleClaims: [roles]
policy:
  roles:
    scorer: ["score:credit"]
  rules:
    - name: risk-analysts
      match: { issuers: [corp], role: [Credit.Score], group: [g-risk], claims: { department: [risk] } }
      roles: [scorer]
routes:
  - name: credit
    path: /v1/credit/score
    scoringUri: http://127.0.0.1:${scoringPort}/score
    deployments:
      - { name: blue, weight: 50 }
      - { name: green, weight: 50 }
    upstreamAuth: { mode: key, primarySecret: CREDIT_KEY_A, secondarySecret: CREDIT_KEY_B }
`;
}

describe("aml-edge arguments", () => {
  it("prints help and the version", async () => {
    const help = runInProcess(["--help"]);
    expect(await help.exit).toBe(0);
    expect(help.out.join("\n")).toContain("gateway dev");
    const bare = runInProcess([]);
    expect(await bare.exit).toBe(2);
    const version = runInProcess(["--version"]);
    expect(await version.exit).toBe(0);
    expect(version.out).toEqual([expect.stringMatching(/^\d+\.\d+\.\d+/)]);
    const devHelp = runInProcess(["gateway", "dev", "--help"]);
    expect(await devHelp.exit).toBe(0);
    expect(devHelp.out.join("\n")).toMatch(/--config <file>[\s\S]*--port <n>[\s\S]*--no-local/);
  });

  it.each([
    [["deploy"], /unknown command "deploy"; commands: aml-edge gateway dev/],
    [["gateway"], /aml-edge gateway needs a subcommand/],
    [["gateway", "run"], /unknown command "gateway run"/],
    [["gateway", "dev"], /needs --config <file>/],
    [
      ["gateway", "dev", "--config"],
      /--config <value>' argument missing; accepted: --config <file>, --port <n>, --no-local/,
    ],
    [
      ["gateway", "dev", "--config", "x.yaml", "--bogus"],
      /Unknown option '--bogus'; accepted: --config <file>/,
    ],
    [
      ["gateway", "dev", "--config", "x.yaml", "--port", "http"],
      /--port must be a port number from 0 to 65535.*"http"/,
    ],
    [["gateway", "dev", "--config", "x.yaml", "--port", "70000"], /--port must be a port number/],
    [["gateway", "dev", "--config", "x.yaml", "--no-help"], /--no-help is not an option/],
    [["gateway", "dev", "--config", "x.yaml", "extra"], /Unexpected argument 'extra'/],
  ])("refuses %j with exit code 2 and says what is accepted", async (args, message) => {
    const run = runInProcess(args);
    expect(await run.exit).toBe(2);
    expect(run.err.join("\n")).toMatch(message);
  });

  it("reports a missing or invalid config file as something to fix (exit code 3)", async () => {
    const missing = runInProcess(["gateway", "dev", "--config", join(workdir, "nope.yaml")]);
    expect(await missing.exit).toBe(3);
    expect(missing.err.join("\n")).toMatch(/nope\.yaml: no such file/);

    const invalidPath = await writeConfig("invalid.yaml", "issuers: []\npolicy: {roles: {}}\nroutes: []\n");
    const invalid = runInProcess(["gateway", "dev", "--config", invalidPath]);
    expect(await invalid.exit).toBe(3);
    expect(invalid.err.join("\n")).toMatch(/invalid\.yaml:\d+:\d+ issuers/);
  });

  it("names the secrets a route without a local endpoint needs (exit code 3)", async () => {
    const port = await freePort();
    const text = devConfig(port).replace(
      `scoringUri: http://127.0.0.1:${port}/score`,
      "scoringUri: https://credit.westeurope.inference.ml.azure.com/score",
    );
    const path = await writeConfig("remote-upstream.yaml", text);
    const run = runInProcess(["gateway", "dev", "--config", path, "--port", "0"]);
    expect(await run.exit).toBe(3);
    expect(run.err.join("\n")).toMatch(/no value for CREDIT_KEY_A \(route credit, primary key, in use\)/);
  });
});

describe("aml-edge gateway dev (in-process)", () => {
  it("serves the route through the gateway with the demo token, then cleans up", async () => {
    const port = await freePort();
    const path = await writeConfig("dev.yaml", devConfig(port));
    const run = runInProcess(["gateway", "dev", "--config", path, "--port", "0"]);
    try {
      const curl = parseCurl(await run.waitForLine(/^curl /));
      expect(curl.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/v1\/credit\/score$/);
      expect(run.out).toContain(
        `issuer corp: key set served locally at http://127.0.0.1:${port}/t-1/discovery/keys`,
      );
      expect(run.out).toContain(
        `route credit: Azure ML endpoint served locally at http://127.0.0.1:${port}/score`,
      );

      const token = (await readFile(curl.tokenPath, "utf8")).trim();
      expect((await stat(curl.tokenPath)).mode & 0o777).toBe(0o600);
      expect((await stat(join(curl.tokenPath, ".."))).mode & 0o777).toBe(0o700);
      const claims = decodeJwt(token);
      expect(claims).toMatchObject({
        iss: "https://login.corp.test/t-1/v2.0",
        aud: "api://credit",
        tid: "t-1",
        roles: ["Credit.Score"],
        groups: ["g-risk"],
        department: "risk",
      });
      expect((claims.exp ?? 0) - (claims.iat ?? 0)).toBe(600);
      expect(decodeProtectedHeader(token)).toMatchObject({ alg: "ES256", typ: "at+jwt" });

      const response = await fetch(curl.url, {
        method: "POST",
        headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
        body: curl.body ?? "",
      });
      expect(response.status).toBe(200);
      expect(["blue", "green"]).toContain(response.headers.get("x-aml-edge-deployment"));
      const predictions = (await response.json()) as { approved: boolean; probability: number }[];
      expect(predictions).toEqual([{ approved: expect.any(Boolean), probability: expect.any(Number) }]);

      // The audit record of that request is printed, without the token.
      await run.waitForLine(
        /^audit allow 200 allowed route=credit deployment=(blue|green) sub=aml-edge-dev-user/,
      );
      const unauthorized = await fetch(curl.url, { method: "POST", body: curl.body ?? "" });
      expect(unauthorized.status).toBe(401);
      await run.waitForLine(/^audit deny 401/);

      // Keys appear only as fingerprints; the token never appears.
      const printed = [...run.out, ...run.err].join("\n");
      expect(printed).not.toContain(token);
      expect(printed).toMatch(
        /^upstream secret CREDIT_KEY_A \(route credit, primary key, in use, from the local endpoint\): sha256:[0-9a-f]{16}$/m,
      );
      expect(printed).toMatch(
        /^upstream secret CREDIT_KEY_B \(route credit, secondary key, from the local endpoint\): sha256:[0-9a-f]{16}$/m,
      );
    } finally {
      run.stop();
    }
    expect(await run.exit).toBe(0);
    const tokenLine = run.out.find((l) => l.startsWith("curl ")) ?? "";
    await expect(stat(parseCurl(tokenLine).tokenPath)).rejects.toThrow();
    await expect(fetch(`http://127.0.0.1:${port}/t-1/discovery/keys`)).rejects.toThrow();
    await expect(fetch(parseCurl(tokenLine).url)).rejects.toThrow();
  }, 60_000);

  it("takes upstream keys from the environment and gives them to the local endpoint", async () => {
    const port = await freePort();
    const path = await writeConfig("env.yaml", devConfig(port));
    const env = {
      CREDIT_KEY_A: "key-a-from-the-environment-0000",
      CREDIT_KEY_B: "key-b-from-the-environment-0000",
    };
    const run = runInProcess(["gateway", "dev", "--config", path, "--port", "0"], env);
    try {
      const curl = parseCurl(await run.waitForLine(/^curl /));
      expect(run.out).toContain(
        `upstream secret CREDIT_KEY_A (route credit, primary key, in use, from the environment): ${await keyFingerprint(env.CREDIT_KEY_A)}`,
      );
      // The stand-in accepts the environment's key directly, so the two agree.
      const direct = await fetch(`http://127.0.0.1:${port}/score`, {
        method: "POST",
        headers: { authorization: `Bearer ${env.CREDIT_KEY_A}`, "content-type": "application/json" },
        body: curl.body ?? "",
      });
      expect(direct.status).toBe(200);
      const token = (await readFile(curl.tokenPath, "utf8")).trim();
      const viaGateway = await fetch(curl.url, {
        method: "POST",
        headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
        body: curl.body ?? "",
      });
      expect(viaGateway.status).toBe(200);
      expect([...run.out, ...run.err].join("\n")).not.toContain(env.CREDIT_KEY_A);
    } finally {
      run.stop();
    }
    expect(await run.exit).toBe(0);
  }, 60_000);

  describe("with servers of our own already at the configured addresses", () => {
    let issuerPort: number;
    let scoringPort: number;
    let issuer: TokenIssuer;
    let scoring: ScoringServer;
    beforeAll(async () => {
      issuerPort = await freePort();
      scoringPort = await freePort();
      issuer = await startTokenIssuer({
        port: issuerPort,
        issuer: "https://login.corp.test/t-1/v2.0",
        jwksPath: "/t-1/discovery/keys",
        algorithms: ["ES256"],
      });
      scoring = await startScoringServer({
        port: scoringPort,
        deployments: [
          { name: "blue", weight: 100 },
          { name: "green", weight: 0 },
        ],
      });
    });
    afterAll(async () => {
      await issuer.close();
      await scoring.close();
    });

    async function callWithOwnToken(url: string) {
      const token = await issuer.mint(
        {
          sub: "analyst-7",
          aud: "api://credit",
          tid: "t-1",
          roles: ["Credit.Score"],
          groups: ["g-risk"],
          department: "risk",
        },
        { header: { typ: "at+jwt" } },
      );
      return fetch(url, {
        method: "POST",
        headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
        body: JSON.stringify({ data: [[85, 0.25, 9, 0, 20, 6]] }),
      });
    }

    it("leaves an address something already listens on to it", async () => {
      const path = await writeConfig("occupied.yaml", devConfig(issuerPort, scoringPort));
      const env = { CREDIT_KEY_A: scoring.keys.primary, CREDIT_KEY_B: scoring.keys.secondary };
      const run = runInProcess(["gateway", "dev", "--config", path, "--port", "0"], env);
      try {
        const listening = await run.waitForLine(/listening on /);
        expect(run.out).toContain(
          `issuer corp: key set http://127.0.0.1:${issuerPort}/t-1/discovery/keys: no stand-in (something already listens on 127.0.0.1:${issuerPort})`,
        );
        expect(run.out.join("\n")).toMatch(
          /no demo token for route credit: rule risk-analysts: none of its issuers/,
        );
        const url = new URL("/v1/credit/score", /listening on (\S+)/.exec(listening)?.[1]).href;
        scoring.clearRequests();
        const response = await callWithOwnToken(url);
        expect(response.status).toBe(200);
        expect(scoring.requests).toHaveLength(1);
      } finally {
        run.stop();
      }
      expect(await run.exit).toBe(0);
    }, 60_000);

    it("--no-local starts no stand-ins and needs the secrets from the environment", async () => {
      // Free addresses, yet nothing is started there.
      const path = await writeConfig("no-local.yaml", devConfig(issuerPort, scoringPort));
      const withoutSecrets = runInProcess(["gateway", "dev", "--config", path, "--port", "0", "--no-local"]);
      expect(await withoutSecrets.exit).toBe(3);
      expect(withoutSecrets.err.join("\n")).toMatch(/no value for CREDIT_KEY_A/);

      const env = { CREDIT_KEY_A: scoring.keys.primary, CREDIT_KEY_B: scoring.keys.secondary };
      const run = runInProcess(["gateway", "dev", "--config", path, "--port", "0", "--no-local"], env);
      try {
        const listening = await run.waitForLine(/listening on /);
        expect(run.out.join("\n")).not.toMatch(/served locally/);
        const url = new URL("/v1/credit/score", /listening on (\S+)/.exec(listening)?.[1]).href;
        expect((await callWithOwnToken(url)).status).toBe(200);
      } finally {
        run.stop();
      }
      expect(await run.exit).toBe(0);
    }, 60_000);
  });

  it("reports a gateway port in use as something to fix", async () => {
    const blocker = await startScoringServer({ deployments: [{ name: "blue", weight: 100 }] });
    const port = Number(new URL(blocker.url).port);
    try {
      const path = await writeConfig("busy.yaml", devConfig(await freePort()));
      const run = runInProcess(["gateway", "dev", "--config", path, "--port", String(port)]);
      expect(await run.exit).toBe(3);
      expect(run.err.join("\n")).toContain(
        `127.0.0.1:${port} is already in use; stop what runs there or pass --port <n>`,
      );
    } finally {
      await blocker.close();
    }
  }, 60_000);
});
