// Token lifetime checks against the real clock. The corp issuer in the fixture has clockToleranceSeconds 30 and
// maxTokenAgeSeconds 3600. Every boundary is probed 3 s inside and 3 s outside (or 1 s outside where the clock only
// moves a refusal further from its edge), so a request that takes up to 3 s cannot flip a result; nothing sleeps.
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { type GatewayFixture, startGatewayFixture } from "./fixture.ts";

const TOLERANCE = 30;
const MAX_AGE = 3600;

let fx: GatewayFixture;
beforeAll(async () => {
  fx = await startGatewayFixture();
});
afterAll(async () => {
  await fx?.dispose();
});
beforeEach(() => fx.reset());

/** Whole epoch seconds, as jose compares them (it floors the current time). */
const nowSeconds = () => Math.floor(Date.now() / 1000);

/** A corp scorer token with exactly these times: iat, exp, and nbf when given. */
function tokenAt(times: { iat: number; exp: number; nbf?: number }): Promise<string> {
  return fx.token(
    {},
    {
      issuedAt: times.iat,
      expiresInSeconds: times.exp - times.iat,
      ...(times.nbf === undefined ? {} : { notBefore: times.nbf }),
    },
  );
}

async function expectServed(token: string): Promise<void> {
  const response = await fx.score(token);
  expect(response.status, await response.clone().text()).toBe(200);
  const record = await fx.auditOf(response);
  expect(record).toMatchObject({ decision: "allow", reason: "allowed" });
  expect(fx.scoring.requests).toHaveLength(1);
}

async function expectInvalidToken(token: string, reason: string): Promise<void> {
  await fx.expectRefused(await fx.score(token), { status: 401, error: "invalid_token", reason });
}

describe("exp (tolerance 30 s)", () => {
  it("refuses exp = now − 31 s (1 s beyond the tolerance) as token_expired", async () => {
    const now = nowSeconds();
    await expectInvalidToken(await tokenAt({ iat: now - 60, exp: now - (TOLERANCE + 1) }), "token_expired");
  });

  it("refuses exp = now − 33 s (3 s beyond the tolerance) as token_expired", async () => {
    const now = nowSeconds();
    await expectInvalidToken(await tokenAt({ iat: now - 60, exp: now - (TOLERANCE + 3) }), "token_expired");
  });

  it("accepts exp = now − 20 s (expired 20 s ago, inside the tolerance)", async () => {
    const now = nowSeconds();
    await expectServed(await tokenAt({ iat: now - 60, exp: now - 20 }));
  });

  it("accepts exp = now − 27 s (3 s inside the tolerance)", async () => {
    const now = nowSeconds();
    await expectServed(await tokenAt({ iat: now - 60, exp: now - (TOLERANCE - 3) }));
  });
});

describe("nbf (tolerance 30 s)", () => {
  it("refuses nbf = now + 33 s (3 s beyond the tolerance) as token_not_yet_valid", async () => {
    const now = nowSeconds();
    await expectInvalidToken(
      await tokenAt({ iat: now, exp: now + 300, nbf: now + TOLERANCE + 3 }),
      "token_not_yet_valid",
    );
  });

  it("accepts nbf = now + 27 s (3 s inside the tolerance)", async () => {
    const now = nowSeconds();
    await expectServed(await tokenAt({ iat: now, exp: now + 300, nbf: now + TOLERANCE - 3 }));
  });
});

describe("iat in the future (tolerance 30 s)", () => {
  it("refuses iat = now + 33 s (3 s beyond the tolerance) as iat_in_future", async () => {
    const now = nowSeconds();
    const iat = now + TOLERANCE + 3;
    await expectInvalidToken(await tokenAt({ iat, exp: iat + 300 }), "iat_in_future");
  });

  it("accepts iat = now + 27 s (3 s inside the tolerance)", async () => {
    const now = nowSeconds();
    const iat = now + TOLERANCE - 3;
    await expectServed(await tokenAt({ iat, exp: iat + 300 }));
  });
});

describe("token age now − iat (maxTokenAgeSeconds 3600, tolerance 30 s)", () => {
  it("refuses iat = now − 3633 s (3 s beyond max age + tolerance) as token_too_old, even with exp ahead", async () => {
    const now = nowSeconds();
    // exp is in the future, so only the age check can refuse it (jose checks exp before the age).
    await expectInvalidToken(
      await tokenAt({ iat: now - (MAX_AGE + TOLERANCE + 3), exp: now + 300 }),
      "token_too_old",
    );
  });

  it("accepts iat = now − 3627 s (3 s inside max age + tolerance) with a lifetime of exactly 3600 s", async () => {
    const now = nowSeconds();
    const iat = now - (MAX_AGE + TOLERANCE - 3);
    // exp = iat + 3600 = now − 27: expired but inside the tolerance, and a lifetime the issuer may have.
    await expectServed(await tokenAt({ iat, exp: iat + MAX_AGE }));
  });
});

describe("lifetime exp − iat (maxTokenAgeSeconds 3600)", () => {
  it("refuses exp − iat = 3601 s as lifetime_too_long", async () => {
    const now = nowSeconds();
    await expectInvalidToken(await tokenAt({ iat: now, exp: now + MAX_AGE + 1 }), "lifetime_too_long");
  });

  it("accepts exp − iat = 3600 s exactly", async () => {
    const now = nowSeconds();
    await expectServed(await tokenAt({ iat: now, exp: now + MAX_AGE }));
  });

  it("refuses a far-off exp (one year) as lifetime_too_long", async () => {
    const now = nowSeconds();
    await expectInvalidToken(await tokenAt({ iat: now, exp: now + 365 * 24 * 3600 }), "lifetime_too_long");
  });
});
