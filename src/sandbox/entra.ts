// Entra ID for the sandbox, over HTTPS (MSAL refuses any other authority): the v2.0 discovery document, the tenant's
// signing keys, and the token endpoint's client_credentials grant with a federated client assertion, checked the way
// Entra checks it: the assertion's issuer picks the federated credentials, its signature is verified against that
// issuer's published keys, then its time range, subject and audience must match a credential exactly and
// case-sensitively, each failure answered with the real AADSTS code and message shape (reference/azure.md §1.4). It
// also signs user and app tokens for the gateway's clients, and verifies its own access tokens for the ARM and Key
// Vault stand-ins.
import { randomUUID } from "node:crypto";
import {
  calculateJwkThumbprint,
  createLocalJWKSet,
  createRemoteJWKSet,
  decodeJwt,
  decodeProtectedHeader,
  exportJWK,
  generateKeyPair,
  type JWK,
  type JWTPayload,
  type JWTVerifyGetKey,
  jwtVerify,
  SignJWT,
} from "jose";
import {
  isLoopbackHostname,
  type LoopbackServer,
  type Mount,
  readBody,
  sendJson,
  startLoopbackServer,
} from "./http-server.ts";
import { createSandboxCa, type SandboxCa } from "./tls.ts";

export const CLIENT_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
export const ARM_RESOURCE = "https://management.azure.com";
export const KEY_VAULT_RESOURCE = "https://vault.azure.net";
/** Resources a client-credentials scope may name (`<resource>/.default`). */
const KNOWN_RESOURCES = [
  ARM_RESOURCE,
  KEY_VAULT_RESOURCE,
  "https://ml.azure.com",
  "https://storage.azure.com",
  "https://graph.microsoft.com",
];
// An obviously local tenant id: never a real tenant's.
const DEFAULT_TENANT_ID = "00000000-0000-4000-8000-0000000e7a1d";
const DEFAULT_ACCESS_TOKEN_LIFETIME_SECONDS = 3600;

export interface FederatedCredential {
  /** Compared exactly, trailing slash included. */
  issuer: string;
  /** Compared exactly and case-sensitively. */
  subject: string;
  audiences: string[];
  name?: string;
}

export interface AppRegistration {
  clientId: string;
  federatedCredentials: FederatedCredential[];
  /** The service principal's object id (`oid` in its access tokens). Default: a random UUID. */
  objectId?: string;
  /** App roles granted to the service principal, carried as `roles` in its access tokens. */
  roles?: string[];
}

export interface EntraOptions {
  /** An HTTPS loopback server to serve on. Default: a new one with a certificate from `ca`. */
  server?: LoopbackServer;
  /** Signs the certificate of the server this creates. Default: a new CA (see `caPem`). */
  ca?: SandboxCa;
  tenantId?: string;
  /** Default 3600 s, like a service principal's token. */
  accessTokenLifetimeSeconds?: number;
  /**
   * Tolerance for the assertion's nbf and exp. Entra allows a few minutes; the sandbox allows none by default, so a
   * test of an expired GitHub token fails when it should rather than minutes later.
   */
  clockSkewSeconds?: number;
  /** Epoch milliseconds. Default `Date.now`; tests share a fake clock with the GitHub stand-in to skip long waits. */
  now?: () => number;
}

export interface TokenClaimsOptions {
  /** `aud`. Default: `api://aml-edge-gateway`. */
  audience?: string;
  oid?: string;
  roles?: string[];
  groups?: string[];
  /** Space-separated delegated scopes, e.g. `score.read`. Users only. */
  scp?: string;
  name?: string;
  preferredUsername?: string;
  /** The client the token was issued to (`azp`). */
  clientId?: string;
  expiresInSeconds?: number;
  /** Epoch seconds. Default: now. */
  issuedAt?: number;
  /** Extra or replacing claims. */
  claims?: JWTPayload;
}

export interface EntraTokenRequest {
  readonly clientId: string;
  readonly scope: string;
  /** `issued`, or the AADSTS code that refused it. */
  readonly outcome: "issued" | number;
}

export interface Entra {
  /** `https://127.0.0.1:<port>`: the `authorityHost` for @azure/identity (with `disableInstanceDiscovery: true`). */
  readonly authorityHost: string;
  readonly tenantId: string;
  /** The v2.0 issuer of user and app tokens: `<authorityHost>/<tenant>/v2.0`. */
  readonly issuer: string;
  /** The v1 issuer of service-principal access tokens: `https://sts.windows.net/<tenant>/`, as Entra writes it. */
  readonly accessTokenIssuer: string;
  readonly jwksUri: string;
  /** The CA that signed this server's certificate, when this created the server. */
  readonly caPem: string | undefined;
  /** Every token request so far, oldest first. */
  readonly tokenRequests: readonly EntraTokenRequest[];
  registerApp(app: AppRegistration): void;
  /** Where to fetch an issuer's keys instead of `<issuer>/.well-known/openid-configuration` (loopback only). */
  setIssuerJwksUri(issuer: string, jwksUri: string): void;
  /** Lifetime of access tokens issued from now on: a short one exercises the clients' refresh. */
  setAccessTokenLifetime(seconds: number): void;
  /** Verifies a bearer token this Entra issued for `audience`; throws when it is not one. */
  verifyAccessToken(token: string, audience: string): Promise<JWTPayload>;
  issueUserToken(options?: TokenClaimsOptions): Promise<string>;
  issueAppToken(options?: TokenClaimsOptions): Promise<string>;
  close(): Promise<void>;
}

interface RegisteredApp {
  clientId: string;
  objectId: string;
  roles: string[];
  federatedCredentials: FederatedCredential[];
}

/** An answer Entra gives instead of a token. */
class EntraError extends Error {
  readonly code: number;
  readonly error: string;
  readonly status: number;
  constructor(code: number, error: string, description: string, status = 400) {
    super(`AADSTS${code}: ${description}`);
    this.code = code;
    this.error = error;
    this.status = status;
  }
}

export async function startEntra(options: EntraOptions = {}): Promise<Entra> {
  const tenantId = options.tenantId ?? DEFAULT_TENANT_ID;
  const ownServer = options.server === undefined;
  let caPem: string | undefined;
  let server: LoopbackServer;
  if (options.server === undefined) {
    const ca = options.ca ?? (await createSandboxCa());
    caPem = ca.caPem;
    server = await startLoopbackServer({ tls: await ca.issueServerCertificate() });
  } else {
    server = options.server;
  }
  if (!server.origin.startsWith("https://")) {
    throw new Error(`startEntra: MSAL accepts only https authorities; ${server.origin} is plain http`);
  }
  const authorityHost = server.origin;
  const tenantBase = `/${tenantId}`;
  const issuer = `${authorityHost}${tenantBase}/v2.0`;
  const accessTokenIssuer = `https://sts.windows.net/${tenantId}/`;
  const jwksPath = `${tenantBase}/discovery/v2.0/keys`;
  const jwksUri = `${authorityHost}${jwksPath}`;
  const clockSkew = options.clockSkewSeconds ?? 0;
  const clock = options.now ?? Date.now;
  const nowSeconds = () => Math.floor(clock() / 1000);
  let accessTokenLifetime = checkLifetime(
    options.accessTokenLifetimeSeconds ?? DEFAULT_ACCESS_TOKEN_LIFETIME_SECONDS,
  );

  const { privateKey, publicKey } = await generateKeyPair("RS256", { extractable: true });
  const exported = await exportJWK(publicKey);
  const kid = await calculateJwkThumbprint(exported);
  const publicJwk: JWK = { ...exported, kid, alg: "RS256", use: "sig" };
  const localKeys = createLocalJWKSet({ keys: [publicJwk] });

  const apps = new Map<string, RegisteredApp>();
  const issuerJwksUris = new Map<string, string>();
  const issuerKeySets = new Map<string, JWTVerifyGetKey>();
  const tokenRequests: EntraTokenRequest[] = [];

  const sign = (payload: JWTPayload) =>
    new SignJWT(payload).setProtectedHeader({ alg: "RS256", typ: "JWT", kid }).sign(privateKey);

  /** The key set of an assertion's issuer: configured, or found through its discovery document (loopback only). */
  const keySetFor = async (assertionIssuer: string): Promise<JWTVerifyGetKey> => {
    const cached = issuerKeySets.get(assertionIssuer);
    if (cached !== undefined) return cached;
    let uri = issuerJwksUris.get(assertionIssuer);
    if (uri === undefined) {
      const discovery = `${assertionIssuer.replace(/\/$/, "")}/.well-known/openid-configuration`;
      const response = await fetchLoopback(discovery);
      const document = (await response.json()) as { jwks_uri?: unknown };
      if (typeof document.jwks_uri !== "string") throw new Error(`${discovery} names no jwks_uri`);
      uri = document.jwks_uri;
    }
    assertLoopback(uri);
    const keySet = createRemoteJWKSet(new URL(uri), { cooldownDuration: 0, timeoutDuration: 5000 });
    issuerKeySets.set(assertionIssuer, keySet);
    return keySet;
  };

  const grantClientCredentials = async (form: URLSearchParams): Promise<Record<string, unknown>> => {
    const grantType = form.get("grant_type");
    if (grantType !== "client_credentials") {
      throw new EntraError(
        70003,
        "unsupported_grant_type",
        `The app requested an unsupported grant type '${grantType ?? ""}'.`,
      );
    }
    const clientId = form.get("client_id") ?? "";
    const app = apps.get(clientId);
    if (app === undefined) {
      throw new EntraError(
        700016,
        "unauthorized_client",
        `Application with identifier '${clientId}' was not found in the directory '${tenantId}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You may have sent your authentication request to the wrong tenant.`,
      );
    }
    const scope = form.get("scope") ?? "";
    const resource = resourceOf(scope, tenantId);
    const assertion = form.get("client_assertion");
    if (assertion === null || assertion === "") {
      throw new EntraError(
        7000218,
        "invalid_client",
        "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
        401,
      );
    }
    if (form.get("client_assertion_type") !== CLIENT_ASSERTION_TYPE) {
      throw new EntraError(
        700023,
        "invalid_client",
        `Invalid client assertion type. The assertion type must be '${CLIENT_ASSERTION_TYPE}'.`,
        401,
      );
    }
    await checkAssertion(app, assertion);
    const now = nowSeconds();
    const accessToken = await sign({
      aud: resource,
      iss: accessTokenIssuer,
      iat: now,
      nbf: now,
      exp: now + accessTokenLifetime,
      aio: randomUUID(),
      appid: app.clientId,
      // 2: the client authenticated with a certificate or a client assertion, not a secret.
      appidacr: "2",
      idp: accessTokenIssuer,
      idtyp: "app",
      oid: app.objectId,
      ...(app.roles.length > 0 ? { roles: app.roles } : {}),
      sub: app.objectId,
      tid: tenantId,
      uti: randomUUID().replaceAll("-", ""),
      ver: "1.0",
    });
    return {
      token_type: "Bearer",
      expires_in: accessTokenLifetime,
      ext_expires_in: accessTokenLifetime,
      access_token: accessToken,
    };
  };

  const checkAssertion = async (app: RegisteredApp, assertion: string): Promise<void> => {
    let claims: JWTPayload;
    try {
      decodeProtectedHeader(assertion);
      claims = decodeJwt(assertion);
    } catch {
      throw new EntraError(50027, "invalid_request", "JWT token is invalid or malformed.");
    }
    const assertionIssuer = typeof claims.iss === "string" ? claims.iss : "";
    const subject = typeof claims.sub === "string" ? claims.sub : "";
    const audiences =
      typeof claims.aud === "string" ? [claims.aud] : Array.isArray(claims.aud) ? claims.aud : [];
    const check =
      "Please check your federated identity credential Subject, Audience and Issuer against the presented assertion.";

    if (app.federatedCredentials.length === 0) {
      throw new EntraError(
        70021,
        "invalid_request",
        `No matching federated identity record found for presented assertion. Assertion Issuer: '${assertionIssuer}'. Assertion Subject: '${subject}'. Assertion Audience: '${audiences.join(",")}'.`,
      );
    }
    const byIssuer = app.federatedCredentials.filter((c) => c.issuer === assertionIssuer);
    if (byIssuer.length === 0) {
      throw new EntraError(
        700211,
        "invalid_request",
        `No matching federated identity record found for presented assertion issuer '${assertionIssuer}'. ${check}`,
      );
    }

    let keySet: JWTVerifyGetKey;
    try {
      keySet = await keySetFor(assertionIssuer);
    } catch (error) {
      throw new EntraError(
        50166,
        "invalid_request",
        `Request to External OIDC endpoint failed. (${error instanceof Error ? error.message : String(error)})`,
      );
    }
    try {
      await jwtVerify(assertion, keySet, {
        algorithms: ["RS256", "RS384", "RS512", "ES256", "ES384", "PS256"],
        // Time is checked below, to answer with Entra's own code for it.
        clockTolerance: Number.MAX_SAFE_INTEGER,
      });
    } catch (error) {
      const code = (error as { code?: unknown }).code;
      if (code === "ERR_JWKS_TIMEOUT" || code === "ERR_JOSE_GENERIC" || error instanceof TypeError) {
        throw new EntraError(50166, "invalid_request", "Request to External OIDC endpoint failed.");
      }
      throw new EntraError(
        700027,
        "invalid_client",
        `Client assertion failed signature validation. (${error instanceof Error ? error.message : String(error)})`,
        401,
      );
    }

    const now = nowSeconds();
    const exp = typeof claims.exp === "number" ? claims.exp : undefined;
    const nbf = typeof claims.nbf === "number" ? claims.nbf : undefined;
    if (exp === undefined || now > exp + clockSkew || (nbf !== undefined && now < nbf - clockSkew)) {
      throw new EntraError(
        700024,
        "invalid_client",
        `Client assertion is not within its valid time range. Current time: ${isoTime(now)}, assertion valid from ${nbf === undefined ? "-" : isoTime(nbf)}, expiry time of assertion ${exp === undefined ? "-" : isoTime(exp)}. Review the documentation at https://learn.microsoft.com/entra/identity-platform/certificate-credentials .`,
        401,
      );
    }

    const bySubject = byIssuer.filter((c) => c.subject === subject);
    if (bySubject.length === 0) {
      if (byIssuer.some((c) => c.subject.toLowerCase() === subject.toLowerCase())) {
        throw new EntraError(
          7002138,
          "invalid_request",
          `No matching federated identity record found for presented assertion subject '${subject}'. The subject matches with case-insensitive comparison, but not with case-sensitive comparison. ${check}`,
        );
      }
      throw new EntraError(
        700213,
        "invalid_request",
        `No matching federated identity record found for presented assertion subject '${subject}'. ${check}`,
      );
    }
    if (!bySubject.some((c) => c.audiences.some((a) => audiences.includes(a)))) {
      throw new EntraError(
        700212,
        "invalid_request",
        `No matching federated identity record found for presented assertion audience '${audiences.join(",")}'. ${check}`,
      );
    }
  };

  const discoveryPath = `${tenantBase}/v2.0/.well-known/openid-configuration`;
  const tokenPath = `${tenantBase}/oauth2/v2.0/token`;
  // Any tenant segment is matched, so that a wrong tenant gets Entra's answer (90002) and not a plain 404; nothing
  // else is, so the other stand-ins can share the server.
  const servedSuffixes = [
    "/v2.0/.well-known/openid-configuration",
    "/discovery/v2.0/keys",
    "/oauth2/v2.0/token",
  ];
  const mount: Mount = {
    matches: (pathname) =>
      servedSuffixes.some(
        (suffix) => pathname.endsWith(suffix) && pathname.split("/").length === suffix.split("/").length + 1,
      ),
    async handle(req, res, { url }) {
      const traceId = randomUUID();
      const correlationId = randomUUID();
      const refuse = (error: EntraError) => {
        sendJson(
          res,
          error.status,
          {
            error: error.error,
            error_description: `${error.message} Trace ID: ${traceId} Correlation ID: ${correlationId} Timestamp: ${new Date()
              .toISOString()
              .replace("T", " ")
              .replace(/\.\d+Z$/, "Z")}`,
            error_codes: [error.code],
            timestamp: new Date()
              .toISOString()
              .replace("T", " ")
              .replace(/\.\d+Z$/, "Z"),
            trace_id: traceId,
            correlation_id: correlationId,
            error_uri: `${authorityHost}/error?code=${error.code}`,
          },
          { "cache-control": "no-store" },
        );
      };
      const tenant = url.pathname.split("/")[1] ?? "";
      if (tenant !== tenantId) {
        req.resume();
        refuse(
          new EntraError(
            90002,
            "invalid_tenant",
            `Tenant '${tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud.`,
          ),
        );
        return;
      }
      if (url.pathname === discoveryPath && req.method === "GET") {
        sendJson(res, 200, {
          token_endpoint: `${authorityHost}${tokenPath}`,
          token_endpoint_auth_methods_supported: [
            "client_secret_post",
            "private_key_jwt",
            "client_secret_basic",
          ],
          jwks_uri: jwksUri,
          response_modes_supported: ["query", "fragment", "form_post"],
          subject_types_supported: ["pairwise"],
          id_token_signing_alg_values_supported: ["RS256"],
          response_types_supported: ["code", "id_token", "code id_token", "id_token token"],
          scopes_supported: ["openid", "profile", "email", "offline_access"],
          issuer,
          request_uri_parameter_supported: false,
          authorization_endpoint: `${authorityHost}${tenantBase}/oauth2/v2.0/authorize`,
          device_authorization_endpoint: `${authorityHost}${tenantBase}/oauth2/v2.0/devicecode`,
          end_session_endpoint: `${authorityHost}${tenantBase}/oauth2/v2.0/logout`,
          tenant_region_scope: "EU",
          cloud_instance_name: "sandbox.local",
        });
        return;
      }
      if (url.pathname === jwksPath && req.method === "GET") {
        sendJson(res, 200, { keys: [publicJwk] });
        return;
      }
      if (url.pathname === tokenPath && req.method === "POST") {
        const form = new URLSearchParams(await readBody(req, 64 * 1024));
        const clientId = form.get("client_id") ?? "";
        const scope = form.get("scope") ?? "";
        try {
          const body = await grantClientCredentials(form);
          tokenRequests.push({ clientId, scope, outcome: "issued" });
          sendJson(res, 200, body, { "cache-control": "no-store" });
        } catch (error) {
          if (!(error instanceof EntraError)) throw error;
          tokenRequests.push({ clientId, scope, outcome: error.code });
          refuse(error);
        }
        return;
      }
      req.resume();
      const allow = url.pathname === tokenPath ? "POST" : "GET";
      sendJson(res, 405, { error: "invalid_request", error_description: `use ${allow}` }, { allow });
    },
  };
  const unmount = server.mount(mount);

  const clientToken = (kind: "user" | "app", o: TokenClaimsOptions): Promise<string> => {
    const iat = o.issuedAt ?? nowSeconds();
    const oid = o.oid ?? randomUUID();
    return sign({
      aud: o.audience ?? "api://aml-edge-gateway",
      iss: issuer,
      iat,
      nbf: iat,
      exp: iat + (o.expiresInSeconds ?? 3600),
      azp: o.clientId ?? randomUUID(),
      // 1: a client secret or public client; the gateway does not care, real tokens always carry it.
      azpacr: "1",
      oid,
      sub: oid,
      tid: tenantId,
      uti: randomUUID().replaceAll("-", ""),
      ver: "2.0",
      ...(kind === "app" ? { idtyp: "app" } : {}),
      ...(kind === "user" && o.name !== undefined ? { name: o.name } : {}),
      ...(kind === "user" && o.preferredUsername !== undefined
        ? { preferred_username: o.preferredUsername }
        : {}),
      ...(kind === "user" && o.scp !== undefined ? { scp: o.scp } : {}),
      ...(o.roles !== undefined ? { roles: o.roles } : {}),
      ...(o.groups !== undefined ? { groups: o.groups } : {}),
      ...o.claims,
    });
  };

  return {
    authorityHost,
    tenantId,
    issuer,
    accessTokenIssuer,
    jwksUri,
    caPem,
    get tokenRequests() {
      return [...tokenRequests];
    },
    registerApp(app) {
      if (app.federatedCredentials.length > 20) {
        throw new Error(
          `registerApp: Entra allows at most 20 federated credentials per app, got ${app.federatedCredentials.length}`,
        );
      }
      apps.set(app.clientId, {
        clientId: app.clientId,
        objectId: app.objectId ?? randomUUID(),
        roles: [...(app.roles ?? [])],
        federatedCredentials: app.federatedCredentials.map((c) => ({ ...c, audiences: [...c.audiences] })),
      });
    },
    setIssuerJwksUri(assertionIssuer, uri) {
      assertLoopback(uri);
      issuerJwksUris.set(assertionIssuer, uri);
      issuerKeySets.delete(assertionIssuer);
    },
    setAccessTokenLifetime(seconds) {
      accessTokenLifetime = checkLifetime(seconds);
    },
    async verifyAccessToken(token, audience) {
      const { payload } = await jwtVerify(token, localKeys, {
        algorithms: ["RS256"],
        issuer: [accessTokenIssuer, issuer],
        audience: [audience, audience.endsWith("/") ? audience.slice(0, -1) : `${audience}/`],
        requiredClaims: ["exp", "tid"],
        currentDate: new Date(clock()),
      });
      if (payload.tid !== tenantId)
        throw new Error(`token is for tenant ${String(payload.tid)}, not ${tenantId}`);
      return payload;
    },
    issueUserToken: (o = {}) => clientToken("user", o),
    issueAppToken: (o = {}) => clientToken("app", o),
    async close() {
      unmount();
      if (ownServer) await server.close();
    },
  };
}

/** `https://management.azure.com/.default` → `https://management.azure.com`, refusing what Entra refuses. */
function resourceOf(scope: string, tenantId: string): string {
  const scopes = scope
    .split(" ")
    .filter((s) => s !== "" && !["openid", "profile", "offline_access"].includes(s));
  const only = scopes.length === 1 ? scopes[0] : undefined;
  if (only === undefined || !only.endsWith("/.default")) {
    throw new EntraError(
      1002012,
      "invalid_scope",
      `The provided value for scope ${scope} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI).`,
    );
  }
  const resource = only.slice(0, -"/.default".length).replace(/\/$/, "");
  if (!KNOWN_RESOURCES.includes(resource)) {
    throw new EntraError(
      500011,
      "invalid_resource",
      `The resource principal named ${resource} was not found in the tenant named ${tenantId}. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You might have sent your authentication request to the wrong tenant.`,
    );
  }
  return resource;
}

function assertLoopback(uri: string): void {
  const { hostname } = new URL(uri);
  if (!isLoopbackHostname(hostname)) {
    throw new Error(`the sandbox's Entra fetches keys from loopback only, not ${uri}`);
  }
}

async function fetchLoopback(uri: string): Promise<Response> {
  assertLoopback(uri);
  const response = await fetch(uri, { signal: AbortSignal.timeout(5000) });
  if (!response.ok) throw new Error(`${uri} answered ${response.status}`);
  return response;
}

function checkLifetime(seconds: number): number {
  if (!Number.isInteger(seconds) || seconds < 1) {
    throw new Error(`Entra: a token lifetime must be a whole number of seconds >= 1, got ${seconds}`);
  }
  return seconds;
}

/** Entra writes times as `2026-11-25T02:30:00.0000000Z`. */
function isoTime(epochSeconds: number): string {
  return new Date(epochSeconds * 1000).toISOString().replace(/\.\d+Z$/, ".0000000Z");
}
