// The benchmark's own workerd: Workers from a written config, bindings as given, and each Worker's outbound fetch
// straight to the loopback origin. Miniflare's interceptor Worker would have set CF-Worker on the way; here the
// upstream must see the Worker's request as the Worker sent it.
import { createServer, type IncomingHttpHeaders, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startDirectWorkerd, workerdBinary } from "../bench/workerd-direct.ts";

const WORKER = `
export default {
  async fetch(request, env) {
    const upstream = await fetch(env.TARGET, { headers: { "x-from-worker": "yes" } });
    return Response.json({ upstream: await upstream.json(), config: env.CONFIG });
  },
};`;

describe("startDirectWorkerd", () => {
  let server: Server;
  let origin: string;

  beforeAll(async () => {
    server = createServer((req, res) => {
      const seen: IncomingHttpHeaders = req.headers;
      res.setHeader("content-type", "application/json");
      res.end(JSON.stringify({ path: req.url, headers: seen }));
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });

  afterAll(async () => {
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });

  it("serves each Worker on its own loopback port, with its bindings, and no hop before the upstream", async () => {
    const workerd = await startDirectWorkerd({
      binary: workerdBinary(),
      upstreamOrigin: origin,
      workers: [
        {
          name: "echo",
          module: WORKER,
          compatibilityDate: "2026-07-01",
          text: { TARGET: "http://upstream.example/scoring?x=1" },
          json: { CONFIG: { version: "v1", quote: 'a "quoted" value\n' } },
        },
      ],
    });
    try {
      const url = workerd.url("echo");
      expect(url.hostname).toBe("127.0.0.1");
      const response = await fetch(url);
      expect(response.status).toBe(200);
      const body = (await response.json()) as {
        upstream: { path: string; headers: Record<string, string> };
        config: unknown;
      };
      expect(body.config).toEqual({ version: "v1", quote: 'a "quoted" value\n' });
      expect(body.upstream.path).toBe("/scoring?x=1");
      expect(body.upstream.headers["x-from-worker"]).toBe("yes");
      // Miniflare's outbound interceptor sets CF-Worker on every outbound request; none ran here.
      expect(body.upstream.headers["cf-worker"]).toBeUndefined();
      expect(() => workerd.url("missing")).toThrow("no Worker named missing");
    } finally {
      await workerd.close();
    }
    expect(workerd.process.exitCode !== null || workerd.process.signalCode !== null).toBe(true);
  });

  it("refuses a name or an origin it could not put in the config, naming it", async () => {
    const start = (name: string, upstreamOrigin: string) =>
      startDirectWorkerd({
        binary: workerdBinary(),
        upstreamOrigin,
        workers: [{ name, module: WORKER, compatibilityDate: "2026-07-01" }],
      });
    await expect(start('bad"name', origin)).rejects.toThrow('bad worker name bad"name');
    await expect(start("echo", "https://127.0.0.1:1")).rejects.toThrow(
      "upstreamOrigin must be http://host:port, got https://127.0.0.1:1",
    );
  });
});
