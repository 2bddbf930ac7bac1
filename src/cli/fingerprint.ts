// Names a secret without showing it: enough to tell which key the gateway holds (and that two places hold the
// same one), nothing to authenticate with.
import { createHash } from "node:crypto";

/** `sha256:` and the first 16 hex characters of the SHA-256 of the secret. */
export function keyFingerprint(secret: string): string {
  return `sha256:${createHash("sha256").update(secret, "utf8").digest("hex").slice(0, 16)}`;
}
