// The local Cloudflare's JSON endpoints driven by the official `cloudflare` client (7.3.0) over HTTPS: tokens and
// their lifecycle, permissions (account-wide, one Worker by tag, the bootstrap token's minting-only rights),
// deployment rules, secrets and 10215, versions. Version uploads are built by hand (see cloudflare-helpers.ts);
// one test shows the client's own upload refused with 10021, as Cloudflare refuses it.
import type Cloudflare from "cloudflare";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type CloudflareSandbox, startCloudflareSandbox } from "../../src/sandbox/cloudflare/index.ts";
import { createSandboxCa, trustInProcess } from "../../src/sandbox/tls.ts";
import {
  call,
  client,
  labelBindings,
  putWorker,
  refusal,
  uploadVersion,
  versionId,
  workerForm,
} from "./cloudflare-helpers.ts";

let cf: CloudflareSandbox;
let untrust: () => void;
/** Account-wide "Workers Scripts Write": creates Workers. */
let admin: { id: string; value: string };
let adminClient: Cloudflare;
let account_id: string;
/** Worker tags by name, as the script upload reported them. */
const scriptTags = new Map<string, string>();

beforeAll(async () => {
  const ca = await createSandboxCa();
  untrust = trustInProcess(ca.caPem);
  cf = await startCloudflareSandbox({ ca });
  account_id = cf.accountId;
  admin = cf.createToken({ name: "admin", permissions: ["Workers Scripts Write"] });
  adminClient = client(cf, admin.value);
  for (const name of ["alpha", "beta"]) {
    const { status, body } = await putWorker(cf, admin.value, name, labelBindings(`${name}-1`));
    expect(status).toBe(200);
    scriptTags.set(name, body.result.tag);
  }
});

afterAll(async () => {
  await cf?.close();
  untrust?.();
});

const groupId = async (name: string) => {
  const groups = await client(cf, cf.bootstrapToken.value).accounts.tokens.permissionGroups.list({
    account_id,
  });
  const group = groups.result.find((candidate) => candidate.name === name);
  if (group?.id === undefined) throw new Error(`no permission group ${name}`);
  return group.id;
};

const tagOf = (name: string) => {
  const tag = scriptTags.get(name);
  if (tag === undefined) throw new Error(`no tag for ${name}`);
  return tag;
};

describe("tokens", () => {
  it("lists the permission groups with their scopes", async () => {
    const groups = await client(cf, cf.bootstrapToken.value).accounts.tokens.permissionGroups.list({
      account_id,
    });
    const byName = new Map(groups.result.map((group) => [group.name, group.scopes]));
    expect(byName.get("API Tokens Write")).toEqual(["com.cloudflare.api.account"]);
    for (const name of ["Workers Scripts Write", "Workers Scripts Read"]) {
      expect(byName.get(name)).toEqual(["com.cloudflare.api.account", "com.cloudflare.edge.worker.script"]);
    }
  });

  it("verifies the bootstrap token on the account and user endpoints", async () => {
    const bootstrap = client(cf, cf.bootstrapToken.value);
    expect(await bootstrap.accounts.tokens.verify({ account_id })).toEqual({
      id: cf.bootstrapToken.id,
      status: "active",
    });
    expect((await bootstrap.user.tokens.verify()).status).toBe("active");
  });

  it("lets the bootstrap token mint a per-Worker token that expires, works on its Worker only, and dies when deleted", async () => {
    const scripts = await adminClient.workers.scripts.list({ account_id });
    expect(scripts.result.find((script) => script.id === "alpha")).toMatchObject({ tag: tagOf("alpha") });
    const bootstrap = client(cf, cf.bootstrapToken.value);
    const expiresOn = new Date(Date.now() + 30 * 60_000).toISOString().replace(/\.\d{3}Z$/, "Z");
    const created = await bootstrap.accounts.tokens.create({
      account_id,
      name: "deploy job 42",
      expires_on: expiresOn,
      policies: [
        {
          effect: "allow",
          permission_groups: [{ id: await groupId("Workers Scripts Write") }],
          resources: {
            [`com.cloudflare.api.account.${account_id}`]: {
              [`com.cloudflare.edge.worker.script.${tagOf("alpha")}`]: "*",
            },
          },
        },
      ],
    });
    expect(created.value).toMatch(/^[A-Za-z0-9_-]{40}$/);
    expect(created).toMatchObject({ name: "deploy job 42", status: "active", expires_on: expiresOn });
    const id = created.id as string;
    const fetched = await bootstrap.accounts.tokens.get(id, { account_id });
    expect(fetched).not.toHaveProperty("value");
    expect(fetched.policies?.[0]?.permission_groups[0]?.name).toBe("Workers Scripts Write");

    const job = client(cf, created.value as string);
    expect(await job.accounts.tokens.verify({ account_id })).toEqual({
      id,
      status: "active",
      expires_on: expiresOn,
    });
    const deployments = await job.workers.scripts.deployments.list("alpha", { account_id });
    expect(deployments.result).toHaveProperty("deployments");
    // Scoped to alpha: beta is out of reach, and only alpha is listed.
    expect(await refusal(job.workers.scripts.deployments.list("beta", { account_id }))).toEqual({
      status: 403,
      codes: [10000],
    });
    expect((await job.workers.scripts.list({ account_id })).result.map((s) => s.id)).toEqual(["alpha"]);

    expect(await bootstrap.accounts.tokens.delete(id, { account_id })).toEqual({ id });
    expect(await refusal(job.accounts.tokens.verify({ account_id }))).toEqual({ status: 401, codes: [1000] });
    expect(await refusal(job.workers.scripts.deployments.list("alpha", { account_id }))).toEqual({
      status: 401,
      codes: [1000],
    });
    expect(cf.tokens().find((token) => token.id === id)).toMatchObject({
      deleted: true,
      name: "deploy job 42",
    });
  });

  it("reports expired, disabled and not-yet-valid tokens on verify and refuses them everywhere else", async () => {
    const cases = [
      { options: { expiresOn: new Date(Date.now() - 1000) }, status: "expired" },
      { options: { status: "disabled" as const }, status: "disabled" },
      { options: { notBefore: new Date(Date.now() + 3_600_000) }, status: "active" },
    ];
    for (const { options, status } of cases) {
      const token = cf.createToken({ permissions: ["Workers Scripts Write"], ...options });
      const sdk = client(cf, token.value);
      const verified = await sdk.accounts.tokens.verify({ account_id });
      expect(verified.status).toBe(status);
      if (options.notBefore !== undefined)
        expect(Date.parse(verified.not_before as string)).toBeGreaterThan(Date.now());
      expect(await refusal(sdk.workers.scripts.list({ account_id }))).toEqual({ status: 401, codes: [1000] });
    }
    expect(await refusal(client(cf, "x".repeat(40)).accounts.tokens.verify({ account_id }))).toEqual({
      status: 401,
      codes: [1000],
    });
  });

  it("disables a token through an update, at once", async () => {
    const bootstrap = client(cf, cf.bootstrapToken.value);
    const policies = [
      {
        effect: "allow" as const,
        permission_groups: [{ id: await groupId("Workers Scripts Read") }],
        resources: { [`com.cloudflare.api.account.${account_id}`]: "*" },
      },
    ];
    const created = await bootstrap.accounts.tokens.create({ account_id, name: "reader", policies });
    const reader = client(cf, created.value as string);
    expect((await reader.workers.scripts.list({ account_id })).result.length).toBeGreaterThanOrEqual(2);
    await bootstrap.accounts.tokens.update(created.id as string, {
      account_id,
      name: "reader",
      policies,
      status: "disabled",
    });
    expect((await reader.accounts.tokens.verify({ account_id })).status).toBe("disabled");
    expect(await refusal(reader.workers.scripts.list({ account_id }))).toEqual({
      status: 401,
      codes: [1000],
    });
  });

  it("refuses malformed policies and unknown permission groups with 400", async () => {
    const bootstrap = client(cf, cf.bootstrapToken.value);
    const account = `com.cloudflare.api.account.${account_id}`;
    const bad = [
      { effect: "allow", permission_groups: [{ id: "0".repeat(32) }], resources: { [account]: "*" } },
      {
        effect: "maybe",
        permission_groups: [{ id: await groupId("Workers Scripts Read") }],
        resources: { [account]: "*" },
      },
      {
        effect: "allow",
        permission_groups: [{ id: await groupId("API Tokens Write") }],
        resources: { [account]: { [`com.cloudflare.edge.worker.script.${tagOf("alpha")}`]: "*" } },
      },
      {
        effect: "allow",
        permission_groups: [{ id: await groupId("Workers Scripts Read") }],
        resources: { "com.cloudflare.api.account.other": "*" },
      },
    ];
    for (const policy of bad) {
      const result = await refusal(
        bootstrap.accounts.tokens.create({ account_id, name: "bad", policies: [policy] as never }),
      );
      expect(result).toEqual({ status: 400, codes: [10040] });
    }
  });
});

describe("permissions", () => {
  it("refuses what a token's groups or scope do not cover with 403 10000", async () => {
    const bootstrap = client(cf, cf.bootstrapToken.value);
    // The bootstrap token mints tokens and does nothing else.
    expect(await refusal(bootstrap.workers.scripts.list({ account_id }))).toEqual({
      status: 403,
      codes: [10000],
    });

    const reader = cf.createToken({ permissions: ["Workers Scripts Read"] });
    const created = await putWorker(cf, reader.value, "gamma", labelBindings("x"));
    expect([created.status, created.body.errors[0]?.code]).toEqual([403, 10000]);
    const readerMints = await refusal(
      client(cf, reader.value).accounts.tokens.create({ account_id, name: "no", policies: [] }),
    );
    expect(readerMints).toEqual({ status: 403, codes: [10000] });

    // A per-Worker Write token may change its Worker, not create another or touch a sibling.
    const alphaOnly = cf.createToken({ permissions: ["Workers Scripts Write"], worker: "alpha" });
    expect((await putWorker(cf, alphaOnly.value, "gamma", labelBindings("x"))).body.errors[0]?.code).toBe(
      10000,
    );
    expect((await uploadVersion(cf, alphaOnly.value, "beta", labelBindings("x"))).status).toBe(403);
    expect((await uploadVersion(cf, alphaOnly.value, "alpha", labelBindings("alpha-x"))).status).toBe(200);
    const sdk = client(cf, alphaOnly.value);
    expect(await refusal(sdk.workers.scripts.secrets.list("beta", { account_id }))).toEqual({
      status: 403,
      codes: [10000],
    });
    // A Worker that does not exist is not revealed to a per-Worker token...
    expect(await refusal(sdk.workers.scripts.deployments.list("nope", { account_id }))).toEqual({
      status: 403,
      codes: [10000],
    });
    // ...and is 10007 to an account-wide one.
    expect(await refusal(adminClient.workers.scripts.deployments.list("nope", { account_id }))).toEqual({
      status: 404,
      codes: [10007],
    });
  });

  it("refuses another account id", async () => {
    const other = await refusal(adminClient.workers.scripts.list({ account_id: "f".repeat(32) }));
    expect(other).toEqual({ status: 403, codes: [10000] });
  });
});

describe("versions", () => {
  it("uploads a version (not deployed), keeps annotations, never returns secret texts, and lists newest first", async () => {
    const before = cf.deployments("beta")[0];
    const upload = await uploadVersion(
      cf,
      admin.value,
      "beta",
      labelBindings("beta-2", [
        { type: "secret_text", name: "SECRET", text: "s3cret-value" },
        { type: "json", name: "CONFIG", json: { weights: [90, 10] } },
      ]),
      { annotations: { "workers/message": "canary of model 7", "workers/tag": "v7" } },
    );
    expect(upload.status).toBe(200);
    const id = upload.body.result.id;
    expect(JSON.stringify(upload.body)).not.toContain("s3cret-value");
    expect(cf.deployments("beta")[0]).toEqual(before);

    const version = await adminClient.workers.scripts.versions.get(id, { account_id, script_name: "beta" });
    expect(version).toMatchObject({
      id,
      number: 2,
      annotations: { "workers/message": "canary of model 7", "workers/tag": "v7" },
      metadata: { source: "api", annotations: { "workers/tag": "v7" } },
    });
    const bindings = version.resources.bindings as unknown as Record<string, unknown>[];
    expect(bindings).toContainEqual({ type: "secret_text", name: "SECRET" });
    expect(bindings).toContainEqual({ type: "json", name: "CONFIG", json: { weights: [90, 10] } });
    expect(JSON.stringify(version)).not.toContain("s3cret-value");

    const list = await adminClient.workers.scripts.versions.list("beta", { account_id });
    expect(list.result.items?.map((item) => item.number)).toEqual([2, 1]);
  });

  it("resolves inherit bindings from the latest or the named version, and refuses one that is not there", async () => {
    const first = await versionId(cf, admin.value, "beta", "beta-3", [
      { type: "secret_text", name: "KEY_A", text: "a" },
    ]);
    await versionId(cf, admin.value, "beta", "beta-4", [{ type: "secret_text", name: "KEY_B", text: "b" }]);
    const inherited = await uploadVersion(
      cf,
      admin.value,
      "beta",
      labelBindings("beta-5", [
        { type: "inherit", name: "KEY_B" },
        { type: "inherit", name: "KEY_A", version_id: first },
        { type: "inherit", name: "RENAMED", old_name: "KEY_B" },
      ]),
    );
    expect(inherited.status).toBe(200);
    expect(inherited.body.result.resources.bindings).toEqual(
      expect.arrayContaining([
        { type: "secret_text", name: "KEY_B" },
        { type: "secret_text", name: "KEY_A" },
        { type: "secret_text", name: "RENAMED" },
      ]),
    );
    const missing = await uploadVersion(
      cf,
      admin.value,
      "beta",
      labelBindings("x", [{ type: "inherit", name: "KEY_C" }]),
    );
    expect(missing.status).toBe(400);
    expect(missing.body.errors[0]).toMatchObject({ code: 10021, message: expect.stringContaining("KEY_C") });
    const unknownVersion = await uploadVersion(
      cf,
      admin.value,
      "beta",
      labelBindings("x", [
        { type: "inherit", name: "KEY_A", version_id: "0f0f0f0f-0000-4000-8000-000000000000" },
      ]),
    );
    expect(unknownVersion.body.errors[0]).toMatchObject({
      code: 10021,
      message: expect.stringContaining("not a version"),
    });
  });

  it("pages the version list and lists the deployable ones in one page", async () => {
    const page = await adminClient.workers.scripts.versions.list("beta", {
      account_id,
      per_page: 2,
      page: 2,
    });
    expect(page.result.items?.length).toBe(2);
    const all = [];
    for await (const item of adminClient.workers.scripts.versions.list("beta", { account_id, per_page: 2 })) {
      all.push(item.number);
    }
    expect(all).toEqual([...all].sort((a, b) => (b as number) - (a as number)));
    const deployable = await adminClient.workers.scripts.versions.list("beta", {
      account_id,
      deployable: true,
    });
    expect(deployable.result.items?.length).toBe(all.length);
    // The client's auto-pagination asks for page 2, 3, ... until one is empty: it must end.
    let count = 0;
    for await (const _ of adminClient.workers.scripts.versions.list("beta", {
      account_id,
      deployable: true,
    })) {
      count += 1;
      if (count > 1_000) break;
    }
    expect(count).toBe(all.length);
  });

  it("pages the token list to its end", async () => {
    const bootstrap = client(cf, cf.bootstrapToken.value);
    const ids = [];
    for await (const token of bootstrap.accounts.tokens.list({ account_id, per_page: 3 })) {
      ids.push(token.id);
      if (ids.length > 1_000) break;
    }
    expect(new Set(ids).size).toBe(ids.length);
    expect(ids.length).toBe(cf.tokens().filter((token) => !token.deleted).length);
  });
});

describe("multipart validation (10021, as Cloudflare validates)", () => {
  it("refuses the SDK's own versions.create body: cloudflare-typescript#2799 flattens metadata into bracketed fields", async () => {
    const result = await refusal(
      adminClient.workers.scripts.versions.create("alpha", {
        account_id,
        metadata: { main_module: "index.js", bindings: [{ type: "plain_text", name: "LABEL", text: "x" }] },
        files: [new File(["export default {}"], "index.js", { type: "application/javascript+module" })],
      }),
    );
    expect(result).toEqual({ status: 400, codes: [10021] });
    const last = cf.requests.at(-1);
    expect(last).toMatchObject({ method: "POST", status: 400, errorCodes: [10021] });
  });

  it("names the problem of each malformed body", async () => {
    const module = { name: "index.js", contents: "export default {}" };
    const raw = (form: FormData) => call(cf, admin.value, "POST", "/workers/scripts/alpha/versions", form);
    const noFilename = new FormData();
    noFilename.set("metadata", JSON.stringify({ main_module: "index.js" }));
    noFilename.set("index.js", "export default {}");
    const notJson = new FormData();
    notJson.set("metadata", "{not json");
    notJson.set(
      "index.js",
      new File(["export default {}"], "index.js", { type: "application/javascript+module" }),
    );
    const cases: [FormData, RegExp][] = [
      [workerForm({ main_module: "index.js" }, []), /not among the uploaded modules/],
      [workerForm({ bindings: [] }, [module]), /main_module is missing/],
      [workerForm({ main_module: "main.js" }, [module]), /"main\.js" is not among/],
      [noFilename, /has no filename/],
      [notJson, /not JSON/],
      [
        workerForm({ main_module: "index.js", bindings: [{ type: "kv_namespace", name: "KV" }] }, [module]),
        /kv_namespace/,
      ],
      [workerForm({ main_module: "index.js", compatibility_date: "2999-01-01" }, [module]), /in the future/],
    ];
    for (const [form, message] of cases) {
      const { status, body } = await raw(form);
      expect(status).toBe(400);
      expect(body.errors[0]?.code).toBe(10021);
      expect(body.errors[0]?.message).toMatch(message);
    }
    const notMultipart = await call(cf, admin.value, "POST", "/workers/scripts/alpha/versions", {
      main_module: "x",
    });
    expect(notMultipart.body.errors[0]).toMatchObject({
      code: 10021,
      message: expect.stringMatching(/multipart/),
    });
  });
});

describe("deployments", () => {
  it("enforces the rules: one or two versions, percentages summing to 100, known and recent versions", async () => {
    const [v1, v2, v3] = [
      await versionId(cf, admin.value, "alpha", "a"),
      await versionId(cf, admin.value, "alpha", "b"),
      await versionId(cf, admin.value, "alpha", "c"),
    ] as [string, string, string];
    const deploy = (versions: { version_id: string; percentage: number }[]) =>
      refusal(
        adminClient.workers.scripts.deployments.create("alpha", {
          account_id,
          strategy: "percentage",
          versions,
        }),
      );
    expect(
      await deploy([
        { version_id: v1, percentage: 40 },
        { version_id: v2, percentage: 30 },
        { version_id: v3, percentage: 30 },
      ]),
    ).toEqual({ status: 400, codes: [10030] });
    expect(await deploy([])).toEqual({ status: 400, codes: [10030] });
    expect(
      await deploy([
        { version_id: v1, percentage: 50 },
        { version_id: v2, percentage: 40 },
      ]),
    ).toEqual({ status: 400, codes: [10031] });
    expect(await deploy([{ version_id: "0f0f0f0f-0000-4000-8000-000000000000", percentage: 100 }])).toEqual({
      status: 400,
      codes: [10032],
    });
    expect(
      await deploy([
        { version_id: v1, percentage: 50 },
        { version_id: v1, percentage: 50 },
      ]),
    ).toEqual({ status: 400, codes: [10034] });

    const split = await adminClient.workers.scripts.deployments.create("alpha", {
      account_id,
      strategy: "percentage",
      versions: [
        { version_id: v2, percentage: 90 },
        { version_id: v3, percentage: 10 },
      ],
      annotations: { "workers/message": "canary 10 %" },
    });
    expect(split).toMatchObject({
      strategy: "percentage",
      source: "api",
      annotations: { "workers/message": "canary 10 %" },
    });
    const listed = await adminClient.workers.scripts.deployments.list("alpha", { account_id });
    const deployments = (listed.result as unknown as { deployments: { id: string }[] }).deployments;
    expect(deployments[0]?.id).toBe(split.id);
    expect(deployments.length).toBeGreaterThanOrEqual(2);
    expect(
      await adminClient.workers.scripts.deployments.get(split.id, { account_id, script_name: "alpha" }),
    ).toEqual(split);
    expect(
      cf
        .runtimes("alpha")
        .filter((runtime) => runtime.live)
        .map((runtime) => runtime.versionId)
        .sort(),
    ).toEqual([v2, v3].sort());
  });

  it("only deploys one of the last 100 versions", async () => {
    const { status, body } = await putWorker(cf, admin.value, "many", labelBindings("m-1"));
    expect(status).toBe(200);
    const oldest = cf.versions("many")[0]?.id as string;
    for (let n = 2; n <= 101; n++) {
      expect((await uploadVersion(cf, admin.value, "many", labelBindings(`m-${n}`))).status).toBe(200);
    }
    const refused = await refusal(
      adminClient.workers.scripts.deployments.create("many", {
        account_id,
        strategy: "percentage",
        versions: [{ version_id: oldest, percentage: 100 }],
      }),
    );
    expect(refused).toEqual({ status: 400, codes: [10033] });
    expect(body.result.id).toBe("many");
  });
});

describe("secrets", () => {
  it("refuses a secret change with 10215 during a split, and deploys a new version at 100 % otherwise", async () => {
    const live = cf.deployments("alpha")[0];
    expect(live?.versions).toHaveLength(2);
    const put = (text: string) =>
      adminClient.workers.scripts.secrets.update("alpha", {
        account_id,
        name: "SECRET",
        text,
        type: "secret_text",
      });
    const during = await refusal(put("during-split"));
    expect(during).toEqual({ status: 400, codes: [10215] });
    expect(cf.requests.some((request) => request.errorCodes.includes(10215))).toBe(true);

    const latest = cf.versions("alpha")[0]?.id as string;
    await adminClient.workers.scripts.deployments.create("alpha", {
      account_id,
      strategy: "percentage",
      versions: [{ version_id: latest, percentage: 100 }],
    });
    expect(await put("after-split")).toEqual({ name: "SECRET", type: "secret_text" });
    const [deployment] = cf.deployments("alpha");
    const [version] = cf.versions("alpha");
    expect(deployment).toMatchObject({
      versions: [{ version_id: version?.id, percentage: 100 }],
      annotations: { "workers/triggered_by": "secret" },
    });
    const secrets = await adminClient.workers.scripts.secrets.list("alpha", { account_id });
    expect(secrets.result).toEqual([{ name: "SECRET", type: "secret_text" }]);
    expect(
      await adminClient.workers.scripts.secrets.get("SECRET", { account_id, script_name: "alpha" }),
    ).toEqual({
      name: "SECRET",
      type: "secret_text",
    });
    expect(JSON.stringify(cf.versions("alpha"))).not.toContain("after-split");

    await adminClient.workers.scripts.secrets.delete("SECRET", { account_id, script_name: "alpha" });
    expect((await adminClient.workers.scripts.secrets.list("alpha", { account_id })).result).toEqual([]);
    expect(
      await refusal(adminClient.workers.scripts.secrets.get("SECRET", { account_id, script_name: "alpha" })),
    ).toEqual({
      status: 404,
      codes: [10050],
    });
  });

  it("records every call without token values", () => {
    expect(cf.requests.length).toBeGreaterThan(20);
    const text = JSON.stringify(cf.requests);
    expect(text).not.toContain(admin.value);
    expect(text).not.toContain(cf.bootstrapToken.value);
    expect(cf.requests.every((request) => request.status >= 200)).toBe(true);
  });
});
