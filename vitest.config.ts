// Tests run on Node (the gateway's own tests start workerd through Miniflare themselves). The long timeout is for
// those that start local servers and workerd; unit tests finish far below it.
import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    environment: "node",
    include: ["test/**/*.test.ts"],
    testTimeout: 60_000,
  },
});
