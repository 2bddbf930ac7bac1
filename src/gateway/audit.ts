// One audit record per decision, allow or deny (NIST SP 800-53 AU-3: what, when, where, source, outcome,
// identity). A record never holds a token or a key: the token id is kept as a salted hash, identity only from
// verified claims.
import { toHex } from "../config/fingerprint.ts";
import type { ReasonCode } from "./reasons.ts";

export const AUDIT_RECORD_TYPE = "aml-edge.audit";

export interface ActorLink {
  sub?: string;
  iss?: string;
  azp?: string;
}

export interface AuditRecord {
  type: typeof AUDIT_RECORD_TYPE;
  v: 1;
  time: string;
  requestId: string;
  decision: "allow" | "deny";
  reason: ReasonCode;
  status: number;
  method: string;
  path: string;
  configVersion: string;
  issuer?: string;
  subject?: string;
  oid?: string;
  tid?: string;
  appId?: string;
  /** The `act` chain, outermost first: who acts for the subject (an AI agent for a user, ...). */
  actors?: ActorLink[];
  /** SHA-256 of issuer + jti, hex: lets a record be matched to a token id without storing it. */
  jtiHash?: string;
  roles?: string[];
  route?: string;
  deployment?: string;
  assignment?: "pinned" | "cohort" | "weighted";
  cohort?: string;
  upstreamStatus?: number;
  latencyMs: number;
  rayId?: string;
}

const MAX_ACTOR_DEPTH = 8;

/** Reads the RFC 8693 `act` claim chain, bounded in depth; only string members are kept. */
export function actorChain(claims: Record<string, unknown>): ActorLink[] | undefined {
  const chain: ActorLink[] = [];
  let act = claims.act;
  while (typeof act === "object" && act !== null && chain.length < MAX_ACTOR_DEPTH) {
    const { sub, iss, azp } = act as Record<string, unknown>;
    const link: ActorLink = {};
    if (typeof sub === "string") link.sub = sub;
    if (typeof iss === "string") link.iss = iss;
    if (typeof azp === "string") link.azp = azp;
    chain.push(link);
    act = (act as Record<string, unknown>).act;
  }
  return chain.length > 0 ? chain : undefined;
}

const encoder = new TextEncoder();

export async function hashJti(issuer: string, jti: string): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", encoder.encode(`${issuer}\n${jti}`));
  return toHex(new Uint8Array(digest)).slice(0, 32);
}

export interface AuditSink {
  write(record: AuditRecord): void;
}

/** Console (one JSON line, well under Logpush's 16 KiB) and, when configured, a Queue for durable delivery. */
export function auditSink(
  options: { console: boolean; queue: Queue | undefined },
  waitUntil: (promise: Promise<unknown>) => void,
): AuditSink {
  return {
    write(record) {
      if (options.console) console.log(JSON.stringify(record));
      if (options.queue) {
        waitUntil(
          options.queue.send(record).catch((error: unknown) => {
            // The console copy above still exists; say that the durable copy is missing.
            console.error(
              JSON.stringify({
                type: "aml-edge.audit-delivery-failed",
                requestId: record.requestId,
                error: error instanceof Error ? error.message : String(error),
              }),
            );
          }),
        );
      }
    },
  };
}
