// Runs the gateway's own token path (pre-check, then verify against the issuer's snapshot keys, with the cache of
// successful verifications off so every iteration does the full work) in a loop inside
// workerd, so its CPU cost can be read from a clock that is too coarse to time one verification.
import { configBundleSchema } from "../../src/config/schema.ts";
import { runtimeConfig } from "../../src/gateway/runtime-config.ts";
import { verifyToken } from "../../src/gateway/verify.ts";

interface Env {
  AML_EDGE_CONFIG: unknown;
}

export default {
  async fetch(request: Request, env: Env, ctx: ExecutionContext): Promise<Response> {
    const { tokens, iterations } = (await request.json()) as { tokens: string[]; iterations: number };
    configBundleSchema.parse(env.AML_EDGE_CONFIG);
    const runtime = runtimeConfig(env.AML_EDGE_CONFIG);
    const waitUntil = (promise: Promise<unknown>) => ctx.waitUntil(promise);
    // One pass first so keys are imported and code is warm; then the timed loop.
    for (const token of tokens) await verifyToken(token, runtime.issuersByIss, waitUntil, { cache: false });
    const started = performance.now();
    for (let i = 0; i < iterations; i += 1) {
      const token = tokens[i % tokens.length] as string;
      await verifyToken(token, runtime.issuersByIss, waitUntil, { cache: false });
    }
    const elapsedMs = performance.now() - started;
    return Response.json({ iterations, elapsedMs, perVerifyUs: (elapsedMs * 1000) / iterations });
  },
};
