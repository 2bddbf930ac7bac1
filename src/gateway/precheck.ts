// The strict gate a token passes before `jose` sees it. jose verifies signatures and claims well, but it accepts
// things a gateway must not (measured in shared/reference/security.md §1.3): no size cap, whitespace, padding and
// non-canonical base64url, duplicate JSON members (last one wins). Everything here is shape, not cryptography:
// decoding goes through jose's base64url and the JSON grammar through momoa.
import { parse as parseJsonAst } from "@humanwhocodes/momoa";
import { base64url } from "jose";
import type { ReasonCode } from "./reasons.ts";

/** Tokens above this size are refused before any decoding (Workers allow 128 KiB of headers in all). */
export const MAX_TOKEN_CHARS = 16 * 1024;
const MAX_KID_CHARS = 256;
// The payload segment may be empty (RFC 7515 allows an empty payload); a JWT then fails the JSON check.
const COMPACT_JWS = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+$/;

/** Header members that let a token choose how it is verified, or that a JWT must not use. */
const FORBIDDEN_HEADER_MEMBERS = [
  "jku",
  "jwk",
  "x5u",
  "x5c",
  "crit",
  "b64",
  "zip",
  "enc",
  "epk",
  "p2s",
  "p2c",
];

export class PrecheckError extends Error {
  readonly reason: ReasonCode;
  constructor(reason: ReasonCode, message: string) {
    super(message);
    this.name = "PrecheckError";
    this.reason = reason;
  }
}

export interface PrecheckedToken {
  token: string;
  header: Record<string, unknown>;
  /** Claims as the token states them, NOT verified: used only to pick the issuer profile. */
  unverifiedClaims: Record<string, unknown>;
}

// ignoreBOM keeps a byte-order mark in the text, where the JSON grammar then refuses it.
const fatalUtf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

export interface PrecheckedJws {
  header: Record<string, unknown>;
  payload: Uint8Array;
}

/**
 * Checks a compact JWS: size, charset, canonical base64url in every segment, a header that is a UTF-8 JSON object
 * with no duplicate members (at any depth), a string `alg`, and no header member that would let the token pick
 * its own key or processing. The payload is returned as bytes: a JWS may carry anything.
 */
export function precheckCompactJws(token: string): PrecheckedJws {
  if (token.length > MAX_TOKEN_CHARS) {
    throw new PrecheckError("token_too_large", `token exceeds ${MAX_TOKEN_CHARS} characters`);
  }
  if (!COMPACT_JWS.test(token)) {
    throw new PrecheckError("token_malformed", "token is not a compact JWS of three base64url segments");
  }
  const [headerSegment = "", payloadSegment = "", signatureSegment = ""] = token.split(".");
  const header = parseJsonObject(decodeCanonical(headerSegment), "header");
  const payload = decodeCanonical(payloadSegment);
  decodeCanonical(signatureSegment);

  for (const member of FORBIDDEN_HEADER_MEMBERS) {
    if (Object.hasOwn(header, member)) {
      throw new PrecheckError("header_forbidden_member", `token header carries "${member}"`);
    }
  }
  if (typeof header.alg !== "string") {
    throw new PrecheckError("token_malformed", "token header has no string alg");
  }
  if (header.kid !== undefined && (typeof header.kid !== "string" || header.kid.length > MAX_KID_CHARS)) {
    throw new PrecheckError("token_malformed", "token kid is not a string of at most 256 characters");
  }
  return { header, payload };
}

/** A JWT: a compact JWS whose payload is also a UTF-8 JSON object without duplicate members. */
export function precheckToken(token: string): PrecheckedToken {
  const { header, payload } = precheckCompactJws(token);
  return { token, header, unverifiedClaims: parseJsonObject(payload, "payload") };
}

/** Decodes a base64url segment and refuses any encoding but the one canonical form (no padding, zero tail bits). */
function decodeCanonical(segment: string): Uint8Array {
  let bytes: Uint8Array;
  try {
    bytes = base64url.decode(segment);
  } catch {
    throw new PrecheckError("token_malformed", "token segment is not base64url");
  }
  if (base64url.encode(bytes) !== segment) {
    throw new PrecheckError("token_malformed", "token segment is not canonical base64url");
  }
  return bytes;
}

function parseJsonObject(bytes: Uint8Array, part: "header" | "payload"): Record<string, unknown> {
  let text: string;
  try {
    text = fatalUtf8.decode(bytes);
  } catch {
    throw new PrecheckError("token_malformed", `token ${part} is not UTF-8`);
  }
  let ast: ReturnType<typeof parseJsonAst>;
  try {
    ast = parseJsonAst(text, { mode: "json", ranges: false, tokens: false });
  } catch {
    throw new PrecheckError("token_malformed", `token ${part} is not JSON`);
  }
  if (ast.body.type !== "Object") {
    throw new PrecheckError("token_malformed", `token ${part} is not a JSON object`);
  }
  if (hasDuplicateMembers(ast.body)) {
    throw new PrecheckError("duplicate_json_member", `token ${part} repeats a member name`);
  }
  // The grammar is already checked; JSON.parse builds the value without prototype surprises.
  return JSON.parse(text) as Record<string, unknown>;
}

type JsonNode = ReturnType<typeof parseJsonAst>["body"];

function hasDuplicateMembers(node: JsonNode): boolean {
  if (node.type === "Object") {
    const seen = new Set<string>();
    for (const member of node.members) {
      const key = member.name.type === "String" ? member.name.value : member.name.name;
      if (seen.has(key)) return true;
      seen.add(key);
      if (hasDuplicateMembers(member.value)) return true;
    }
    return false;
  }
  if (node.type === "Array") {
    return node.elements.some((element) => hasDuplicateMembers(element.value));
  }
  return false;
}
