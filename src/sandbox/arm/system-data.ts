// `systemData` (common-types): who created and last changed a resource, and when. The sandbox fills it from the
// claims of the bearer token that made the change, so a test can see which identity did what.

export interface Caller {
  name: string;
  type: "User" | "Application";
}

export interface SystemData {
  createdBy: string;
  createdByType: string;
  createdAt: string;
  lastModifiedBy: string;
  lastModifiedByType: string;
  lastModifiedAt: string;
}

export function systemDataFor(caller: Caller, previous?: SystemData): SystemData {
  const at = new Date().toISOString();
  return {
    createdBy: previous?.createdBy ?? caller.name,
    createdByType: previous?.createdByType ?? caller.type,
    createdAt: previous?.createdAt ?? at,
    lastModifiedBy: caller.name,
    lastModifiedByType: caller.type,
    lastModifiedAt: at,
  };
}

/** A user's `upn`/`preferred_username` when the token is a user's, else the application's id. */
export function callerOf(claims: Record<string, unknown>): Caller {
  const user = claims.upn ?? claims.preferred_username ?? claims.unique_name;
  if (typeof user === "string" && claims.idtyp !== "app") return { name: user, type: "User" };
  const app = claims.appid ?? claims.azp ?? claims.oid ?? claims.sub;
  return { name: typeof app === "string" ? app : "aml-edge-sandbox", type: "Application" };
}
