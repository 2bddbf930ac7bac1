// The spec validators the ARM sandbox and its tests rely on must reject what Azure would never send and accept what
// it does; a validator that accepts everything would make every "followed the spec" assertion worthless.
import { describe, expect, it } from "vitest";
import { loadArmSpec } from "../../src/sandbox/arm/spec.ts";

const spec = loadArmSpec();

const endpoint = {
  id: "/subscriptions/s/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/ws/onlineEndpoints/e",
  name: "e",
  type: "Microsoft.MachineLearningServices/workspaces/onlineEndpoints",
  location: "westeurope",
  tags: {},
  systemData: { createdBy: "app", createdByType: "Application", createdAt: "2026-01-01T00:00:00.000Z" },
  properties: {
    authMode: "Key",
    provisioningState: "Succeeded",
    traffic: { blue: 100 },
    scoringUri: "https://127.0.0.1:1/endpoints/e/score",
    keys: null,
  },
};

const deployment = {
  id: `${endpoint.id}/deployments/blue`,
  name: "blue",
  type: "Microsoft.MachineLearningServices/workspaces/onlineEndpoints/deployments",
  location: "westeurope",
  sku: { name: "Default", capacity: 1 },
  properties: {
    endpointComputeType: "Managed",
    model: "/x/models/m/versions/1",
    provisioningState: "Creating",
  },
};

describe("loadArmSpec", () => {
  it("accepts real shapes: inherited properties under additionalProperties false, nullable write-only keys", () => {
    expect(spec.checkResponse("OnlineEndpoints_Get", 200, endpoint)).toEqual([]);
    expect(spec.checkResponse("OnlineDeployments_Get", 200, deployment)).toEqual([]);
    expect(
      spec.checkResponse("OnlineEndpoints_ListKeys", 200, { primaryKey: "a", secondaryKey: "b" }),
    ).toEqual([]);
  });

  it("rejects unknown properties, wrong enum values and wrong types", () => {
    const extra = spec.checkResponse("OnlineEndpoints_Get", 200, {
      ...endpoint,
      properties: { ...endpoint.properties, mirrorTraffic: { green: 10 } },
    });
    expect(extra[0]?.message).toContain("must NOT have additional properties");
    const state = spec.checkResponse("OnlineEndpoints_Get", 200, {
      ...endpoint,
      properties: { ...endpoint.properties, provisioningState: "Provisioning" },
    });
    expect(state).toHaveLength(1);
    const traffic = spec.checkResponse("OnlineEndpoints_Get", 200, {
      ...endpoint,
      properties: { ...endpoint.properties, traffic: { blue: "100" } },
    });
    expect(traffic[0]?.message).toContain("/properties/traffic/blue");
    expect(
      spec.checkResponse("OnlineEndpoints_GetToken", 200, { accessToken: "t", expiryTimeUtc: 1.5 }),
    ).toHaveLength(1);
  });

  it("resolves discriminated unions: a deployment must be one of the derived kinds", () => {
    const unknownKind = spec.checkResponse("OnlineDeployments_Get", 200, {
      ...deployment,
      properties: { ...deployment.properties, endpointComputeType: "Serverless" },
    });
    expect(unknownKind).toHaveLength(1);
    const kubernetesField = spec.checkResponse("OnlineDeployments_Get", 200, {
      ...deployment,
      properties: { ...deployment.properties, containerResourceRequirements: {} },
    });
    // Only the Kubernetes kind has that property; a Managed deployment with it is no valid kind.
    expect(kubernetesField).toHaveLength(1);
  });

  it("checks statuses, bodies where none is declared, error bodies and declared headers", () => {
    expect(spec.checkResponse("OnlineEndpoints_Get", 201, endpoint)[0]?.message).toContain("not declared");
    expect(spec.checkResponse("OnlineDeployments_Delete", 202, { done: true })[0]?.message).toContain(
      "no body",
    );
    expect(
      spec.checkResponse("OnlineDeployments_Delete", 409, { error: { code: "Conflict", message: "m" } }),
    ).toEqual([]);
    expect(spec.checkResponse("OnlineDeployments_Delete", 409, { error: { code: 409 } })).toHaveLength(1);
    expect(
      spec.checkResponse("OnlineDeployments_Delete", 202, undefined, { "Retry-After": "5" })[0]?.where,
    ).toBe("response 202 header Retry-After");
    expect(spec.checkResponse("OnlineDeployments_Delete", 202, undefined, { "retry-after": "10" })).toEqual(
      [],
    );
  });

  it("checks request bodies against the operation's body parameter", () => {
    expect(spec.checkRequest("OnlineEndpoints_RegenerateKeys", { keyType: "Primary" })).toEqual([]);
    expect(spec.checkRequest("OnlineEndpoints_RegenerateKeys", { keyType: "Tertiary" })).toHaveLength(1);
    expect(
      spec.checkRequest("OnlineEndpoints_CreateOrUpdate", { location: "w", properties: {} })[0]?.message,
    ).toContain("authMode");
    expect(spec.checkRequest("OnlineEndpoints_ListKeys", { a: 1 })[0]?.message).toContain("no request body");
  });

  it("finds the operation of a request by method and case-insensitive path", () => {
    const base =
      "/subscriptions/s/resourcegroups/rg/providers/microsoft.machinelearningservices/workspaces/ws";
    expect(spec.findOperation("PUT", `${base}/onlineEndpoints/e/deployments/d`)?.operationId).toBe(
      "OnlineDeployments_CreateOrUpdate",
    );
    expect(spec.findOperation("POST", `${base}/onlineEndpoints/e/regenerateKeys`)?.operationId).toBe(
      "OnlineEndpoints_RegenerateKeys",
    );
    expect(spec.findOperation("GET", `${base}/onlineEndpoints/e/`)?.operationId).toBe("OnlineEndpoints_Get");
    expect(
      spec.findOperation(
        "GET",
        "/subscriptions/s/providers/Microsoft.MachineLearningServices/locations/w/mfeOperationsStatus/1",
      ),
    ).toBeUndefined();
  });
});
