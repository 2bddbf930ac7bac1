// Shared by the ARM sandbox tests: the official client pointed at the sandbox, and a recorder of every HTTP exchange
// that client makes, so each test can hold what crossed the wire to the 2022-10-01 REST specification.
import { AzureMachineLearningWorkspaces } from "@azure/arm-machinelearning";
import type { AccessToken, TokenCredential } from "@azure/identity";
import { ARM_SCOPE, type ArmSandbox } from "../../src/sandbox/arm/index.ts";
import { loadArmSpec, type SpecViolation, withoutLaterAdditions } from "../../src/sandbox/arm/spec.ts";

export interface Exchange {
  method: string;
  url: string;
  requestBody: string | undefined;
  status: number;
  headers: Record<string, string>;
  responseBody: string | undefined;
  time: number;
}

/** A credential that always presents `token`, as a real one would after MSAL got it from Entra. */
export function staticCredential(token: () => string | Promise<string>): TokenCredential {
  return {
    async getToken(): Promise<AccessToken> {
      return { token: await token(), expiresOnTimestamp: Date.now() + 3600_000 };
    },
  };
}

export function armClient(
  sandbox: ArmSandbox,
  credential: TokenCredential,
): { client: AzureMachineLearningWorkspaces; exchanges: Exchange[] } {
  const client = new AzureMachineLearningWorkspaces(credential, sandbox.subscriptionId, {
    endpoint: sandbox.endpoint,
    // The default scope would be `<endpoint>/.default`; Entra issues ARM tokens for management.azure.com.
    credentialScopes: [ARM_SCOPE],
  });
  const exchanges: Exchange[] = [];
  // After the Sign phase, next to the transport: it sees every attempt (a 429 the retry policy then waits out) and
  // error responses before core-client's deserialisation turns them into exceptions.
  client.pipeline.addPolicy(
    {
      name: "recordExchanges",
      async sendRequest(request, next) {
        const response = await next(request);
        exchanges.push({
          method: request.method,
          url: request.url,
          requestBody: typeof request.body === "string" ? request.body : undefined,
          status: response.status,
          headers: response.headers.toJSON(),
          responseBody: response.bodyAsText ?? undefined,
          time: Date.now(),
        });
        return response;
      },
    },
    { afterPhase: "Sign" },
  );
  return { client, exchanges };
}

export interface SpecReport {
  /** Operation ids of the spec seen in the exchanges, in order (with repeats). */
  operations: string[];
  violations: SpecViolation[];
}

/**
 * Every exchange that is a spec operation (operation-status polls are not in the spec) is checked: the request
 * body against the operation's body parameter, the response (status, body, declared headers) against its
 * responses.
 */
export function checkAgainstSpec(exchanges: readonly Exchange[]): SpecReport {
  const spec = loadArmSpec();
  const report: SpecReport = { operations: [], violations: [] };
  for (const exchange of exchanges) {
    const url = new URL(exchange.url);
    const operation = spec.findOperation(exchange.method, url.pathname);
    if (operation === undefined) continue;
    const { operationId } = operation;
    // At 2023-04-01 (mirror traffic) the one addition is set aside; everything else must match 2022-10-01.
    const apiVersion = url.searchParams.get("api-version");
    report.operations.push(operationId);
    if (exchange.requestBody !== undefined && exchange.requestBody !== "") {
      const request = withoutLaterAdditions(operationId, apiVersion, JSON.parse(exchange.requestBody));
      report.violations.push(...spec.checkRequest(operationId, request));
    }
    const body =
      exchange.responseBody === undefined || exchange.responseBody === ""
        ? undefined
        : withoutLaterAdditions(operationId, apiVersion, JSON.parse(exchange.responseBody));
    report.violations.push(...spec.checkResponse(operationId, exchange.status, body, exchange.headers));
  }
  return report;
}

export function pathOf(exchange: Exchange): string {
  return new URL(exchange.url).pathname;
}
