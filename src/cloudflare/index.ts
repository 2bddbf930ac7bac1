// The Cloudflare plane's public API: the API client, the job's credential (Key Vault bootstrap → a short-lived token
// scoped to the gateway Worker), publishing the gateway as a version and deployment, waiting for the edge, restoring.
export * from "./api.ts";
export * from "./credential.ts";
export * from "./edge.ts";
export * from "./errors.ts";
export * from "./publish.ts";
export * from "./time.ts";
export * from "./upload.ts";
