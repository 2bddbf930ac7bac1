// The online endpoint as JSON, the way traffic is written: read whole, changed in one map, written back whole. The
// endpoint PUT replaces the resource, so anything left out of the body (or dropped by a serializer that does not know
// it, as 2.1.1's drops mirrorTraffic) is lost; the JSON Azure returned is the only complete body there is.
import { ConfigurationError } from "./errors.ts";

/** The subset of an endpoint's JSON this module reads. */
export interface EndpointJson {
  location?: string;
  properties?: {
    provisioningState?: string;
    traffic?: Record<string, number>;
    mirrorTraffic?: Record<string, number>;
    [key: string]: unknown;
  };
  [key: string]: unknown;
}

export type TrafficKind = "traffic" | "mirrorTraffic";

export function checkTraffic(map: Record<string, number>, label: string): void {
  for (const [name, share] of Object.entries(map)) {
    if (!Number.isInteger(share) || share < 0 || share > 100) {
      throw new ConfigurationError(
        `The ${label} share of deployment ${name} is ${share}; shares are whole percentages from 0 to 100.`,
      );
    }
  }
}

/** Equal ignoring 0% entries: Azure may list every deployment, including those at 0. */
export function sameMap(a: Record<string, number>, b: Record<string, number>): boolean {
  const nonZero = (m: Record<string, number>) =>
    Object.entries(m)
      .filter(([, v]) => v !== 0)
      .map(([k, v]) => `${k.toLowerCase()}=${v}`)
      .sort()
      .join(",");
  return nonZero(a) === nonZero(b);
}

/** The endpoint as read, minus what the service owns: it is the body of the full PUT that replaces it. */
export function writableEndpoint(json: EndpointJson): EndpointJson {
  const { id: _id, name: _name, type: _type, systemData: _systemData, ...rest } = json;
  const properties = { ...(json.properties ?? {}) };
  for (const readOnly of ["provisioningState", "scoringUri", "swaggerUri", "keys"])
    delete properties[readOnly];
  return { ...rest, properties };
}
