// The Azure ML REST specification (api-version 2022-10-01, vendored verbatim under ./spec/) turned into validators,
// so the ARM sandbox can hold every request and response it handles to the contract the real service publishes.
//
// Swagger 2.0 is not JSON Schema, and a naive translation rejects valid Azure payloads, so this module converts:
// - `allOf` inheritance is flattened: a definition's own `additionalProperties: false` would otherwise reject every
//   property it inherits (JSON Schema evaluates each `allOf` branch separately);
// - polymorphism: a `$ref` to a base with a `discriminator` accepts exactly one of its derived definitions, each
//   with its discriminator pinned to its `x-ms-discriminator-value`;
// - `x-nullable: true` admits null; the swagger-only formats (int32, int64, double, duration, ...) are checked by
//   hand-written format functions; `x-*` annotations are dropped.
// `$ref`s to common-types are resolved the way spec/README.md says (the leading `../../../../../` becomes `./`).
import { Ajv, type ErrorObject, type ValidateFunction } from "ajv";
// JSON imports rather than file reads, so a bundle of the sandbox (esbuild inlines them) carries the spec along.
import managedIdentityJson from "./spec/common-types/resource-management/v3/managedidentity.json" with {
  type: "json",
};
import typesJson from "./spec/common-types/resource-management/v3/types.json" with { type: "json" };
import mainJson from "./spec/machinelearningservices-2022-10-01-mfe.json" with { type: "json" };

type Json = Record<string, unknown>;

const MAIN_FILE = "machinelearningservices-2022-10-01-mfe.json";
const COMMON_TYPES = "common-types/resource-management/v3/types.json";
const MANAGED_IDENTITY = "common-types/resource-management/v3/managedidentity.json";

export const ARM_API_VERSION = "2022-10-01";
/**
 * The first stable api-version whose online endpoints carry `mirrorTraffic`. The sandbox also answers at this
 * version (production code writes endpoint JSON at it when mirroring), with the 2022-10-01 shapes plus that one
 * property; its spec is not vendored, so such exchanges are checked against 2022-10-01 without `mirrorTraffic`.
 */
export const MIRROR_API_VERSION = "2023-04-01";
export const SUPPORTED_API_VERSIONS: readonly string[] = [ARM_API_VERSION, MIRROR_API_VERSION];

/**
 * A body as the 2022-10-01 spec can judge it: at a later api-version, `properties.mirrorTraffic` of an online
 * endpoint (or of each endpoint in a list) is the one addition, and is set aside.
 */
export function withoutLaterAdditions(
  operationId: string,
  apiVersion: string | null,
  body: unknown,
): unknown {
  if (apiVersion === null || apiVersion < MIRROR_API_VERSION || !operationId.startsWith("OnlineEndpoints_")) {
    return body;
  }
  const strip = (resource: unknown): unknown => {
    if (typeof resource !== "object" || resource === null) return resource;
    const r = resource as Json;
    if (typeof r.properties !== "object" || r.properties === null) return resource;
    const { mirrorTraffic: _mirror, ...properties } = r.properties as Json;
    return { ...r, properties };
  };
  if (typeof body === "object" && body !== null && Array.isArray((body as Json).value)) {
    return { ...(body as Json), value: ((body as Json).value as unknown[]).map(strip) };
  }
  return strip(body);
}

export interface SpecOperation {
  operationId: string;
  method: string;
  /** The path template, e.g. `/subscriptions/{subscriptionId}/.../onlineEndpoints/{endpointName}`. */
  path: string;
  /** Declared statuses ("200", "201", ..., "default"). */
  statuses: readonly string[];
  longRunning: boolean;
}

export interface SpecViolation {
  operationId: string;
  /** What was checked: `request`, `response 201`, `response 201 header Retry-After`. */
  where: string;
  message: string;
}

export interface ArmSpec {
  readonly operations: ReadonlyMap<string, SpecOperation>;
  /** The operation a request is, by method and path (ARM paths are case-insensitive), if the spec has it. */
  findOperation(method: string, pathname: string): SpecOperation | undefined;
  /** Problems with a response: an undeclared status, a body that breaks the schema, a body where none is declared. */
  checkResponse(
    operationId: string,
    status: number,
    body: unknown,
    headers?: Record<string, string | undefined>,
  ): SpecViolation[];
  /** Problems with a request body against the operation's body parameter. */
  checkRequest(operationId: string, body: unknown): SpecViolation[];
  /** Validates a value against one definition of the main spec (e.g. `ErrorResponse` or `OnlineEndpoint`). */
  checkDefinition(definition: string, value: unknown): string[];
}

let cached: ArmSpec | undefined;

/** The specification is read and compiled once per process; validators compile lazily per operation. */
export function loadArmSpec(): ArmSpec {
  cached ??= buildArmSpec();
  return cached;
}

function buildArmSpec(): ArmSpec {
  const files = new Map<string, Json>([
    [MAIN_FILE, mainJson as unknown as Json],
    [COMMON_TYPES, typesJson as unknown as Json],
    [MANAGED_IDENTITY, managedIdentityJson as unknown as Json],
  ]);
  const main = files.get(MAIN_FILE) as Json;
  const converter = new SwaggerConverter(files);
  const ajv = new Ajv({ allErrors: true, strict: false, validateFormats: true });
  addSwaggerFormats(ajv);
  ajv.addSchema({ $id: "arm", definitions: converter.definitions() });

  const operations = new Map<string, SpecOperation>();
  const raw = new Map<string, Json>();
  for (const [path, item] of Object.entries(main.paths as Record<string, Json>)) {
    for (const [method, op] of Object.entries(item)) {
      if (method === "parameters") continue;
      const operation = op as Json;
      const operationId = operation.operationId as string;
      operations.set(operationId, {
        operationId,
        method: method.toUpperCase(),
        path,
        statuses: Object.keys(operation.responses as Json),
        longRunning: operation["x-ms-long-running-operation"] === true,
      });
      raw.set(operationId, operation);
    }
  }

  const validators = new Map<string, ValidateFunction>();
  const validatorFor = (key: string, schema: unknown): ValidateFunction => {
    let validate = validators.get(key);
    if (validate === undefined) {
      validate = ajv.compile(converter.convert(schema, MAIN_FILE) as Json);
      validators.set(key, validate);
    }
    return validate;
  };
  const operationOf = (operationId: string): Json => {
    const operation = raw.get(operationId);
    if (operation === undefined) throw new Error(`the 2022-10-01 spec has no operation ${operationId}`);
    return operation;
  };

  const patterns = [...operations.values()].map((operation) => ({
    operation,
    pattern: new RegExp(
      `^${operation.path
        .split(/\{[^}]+\}/)
        .map((literal) => literal.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"))
        .join("[^/]+")}$`,
      "i",
    ),
  }));

  return {
    operations,
    findOperation(method, pathname) {
      const upper = method.toUpperCase();
      const path = pathname.replace(/\/+$/, "");
      return patterns.find((p) => p.operation.method === upper && p.pattern.test(path))?.operation;
    },
    checkResponse(operationId, status, body, headers = {}) {
      const operation = operationOf(operationId);
      const responses = operation.responses as Record<string, Json>;
      const declared = responses[String(status)];
      const violations: SpecViolation[] = [];
      const where = `response ${status}`;
      const response = declared ?? (status >= 400 ? responses.default : undefined);
      if (response === undefined) {
        violations.push({
          operationId,
          where,
          message: `status ${status} is not declared (declared: ${Object.keys(responses).join(", ")})`,
        });
        return violations;
      }
      if (response.schema === undefined) {
        if (body !== undefined && body !== null && body !== "") {
          violations.push({ operationId, where, message: "the spec declares no body for this status" });
        }
      } else {
        const validate = validatorFor(`${operationId} ${declared === undefined ? "default" : status}`, {
          $ref: (response.schema as Json).$ref,
          ...(response.schema as Json),
        });
        if (!validate(body)) violations.push({ operationId, where, message: describe(validate.errors) });
      }
      for (const [name, header] of Object.entries((response.headers ?? {}) as Record<string, Json>)) {
        const value = headerValue(headers, name);
        if (value === undefined) continue;
        const problem = checkHeader(header, value);
        if (problem !== undefined) {
          violations.push({ operationId, where: `${where} header ${name}`, message: problem });
        }
      }
      return violations;
    },
    checkRequest(operationId, body) {
      const operation = operationOf(operationId);
      const parameter = (operation.parameters as Json[]).find((p) => p.in === "body");
      if (parameter === undefined) {
        return body === undefined || body === null || body === ""
          ? []
          : [{ operationId, where: "request", message: "the spec declares no request body" }];
      }
      if (body === undefined) {
        return parameter.required === true
          ? [{ operationId, where: "request", message: "the request body is required" }]
          : [];
      }
      const validate = validatorFor(`${operationId} request`, parameter.schema);
      return validate(body) ? [] : [{ operationId, where: "request", message: describe(validate.errors) }];
    },
    checkDefinition(definition, value) {
      const validate = validatorFor(`definition ${definition}`, { $ref: `#/definitions/${definition}` });
      return validate(value) ? [] : [describe(validate.errors)];
    },
  };
}

function headerValue(headers: Record<string, string | undefined>, name: string): string | undefined {
  const wanted = name.toLowerCase();
  for (const [key, value] of Object.entries(headers)) if (key.toLowerCase() === wanted) return value;
  return undefined;
}

function checkHeader(header: Json, value: string): string | undefined {
  if (header.type === "integer") {
    if (!/^-?\d+$/.test(value)) return `expected an integer, got ${JSON.stringify(value)}`;
    const n = Number(value);
    if (typeof header.minimum === "number" && n < header.minimum)
      return `${n} is below the minimum ${header.minimum}`;
    if (typeof header.maximum === "number" && n > header.maximum)
      return `${n} is above the maximum ${header.maximum}`;
  }
  if (header.format === "duration" && !ISO_DURATION.test(value))
    return `${value} is not an ISO 8601 duration`;
  return undefined;
}

function describe(errors: ErrorObject[] | null | undefined): string {
  return (errors ?? [])
    .slice(0, 8)
    .map((e) => `${e.instancePath || "(body)"} ${e.message ?? "is invalid"}`)
    .join("; ");
}

const ISO_DURATION = /^P(?!$)(\d+Y)?(\d+M)?(\d+W)?(\d+D)?(T(?=\d)(\d+H)?(\d+M)?(\d+(\.\d+)?S)?)?$/;

function addSwaggerFormats(ajv: Ajv): void {
  const int = (bits: number) => (value: number) =>
    Number.isInteger(value) && Math.abs(value) <= 2 ** (bits - 1) && value >= -(2 ** (bits - 1));
  ajv.addFormat("int32", { type: "number", validate: int(32) });
  ajv.addFormat("int64", { type: "number", validate: (v: number) => Number.isInteger(v) });
  ajv.addFormat("float", { type: "number", validate: () => true });
  ajv.addFormat("double", { type: "number", validate: () => true });
  ajv.addFormat("duration", ISO_DURATION);
  ajv.addFormat("uuid", /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i);
  ajv.addFormat("date-time", (v: string) => !Number.isNaN(Date.parse(v)) && /^\d{4}-\d{2}-\d{2}T/.test(v));
  ajv.addFormat("uri", (v: string) => URL.canParse(v));
  // Swagger marks secrets with format "password"; any string is one.
  ajv.addFormat("password", () => true);
}

/** Converts swagger definitions of the three files into one JSON Schema definitions table. */
class SwaggerConverter {
  readonly #files: ReadonlyMap<string, Json>;
  /** Key of a definition → keys of its derived definitions (transitively), for polymorphic `$ref`s. */
  readonly #derived = new Map<string, string[]>();
  readonly #flattened = new Map<string, Json>();

  constructor(files: ReadonlyMap<string, Json>) {
    this.#files = files;
    for (const [file, doc] of files) {
      for (const name of Object.keys((doc.definitions ?? {}) as Json)) {
        const key = definitionKey(file, name);
        for (const ancestor of this.#ancestors(key)) {
          const list = this.#derived.get(ancestor) ?? [];
          list.push(key);
          this.#derived.set(ancestor, list);
        }
      }
    }
  }

  definitions(): Json {
    const out: Json = {};
    for (const [file, doc] of this.#files) {
      for (const name of Object.keys((doc.definitions ?? {}) as Json)) {
        const key = definitionKey(file, name);
        out[key] = this.#flatten(key);
        if (this.#discriminatorOf(key) !== undefined && (this.#derived.get(key) ?? []).length > 0) {
          out[`${key}.any`] = {
            oneOf: (this.#derived.get(key) ?? []).map((d) => ({ $ref: `arm#/definitions/${d}` })),
          };
        }
      }
    }
    return out;
  }

  /** Converts a schema fragment found in `file`. */
  convert(node: unknown, file: string): unknown {
    if (Array.isArray(node)) return node.map((n) => this.convert(n, file));
    if (typeof node !== "object" || node === null) return node;
    const source = node as Json;
    const nullable = source["x-nullable"] === true;
    if (typeof source.$ref === "string") {
      const key = this.#resolve(source.$ref, file);
      const polymorphic =
        this.#discriminatorOf(key) !== undefined && (this.#derived.get(key) ?? []).length > 0;
      const ref = { $ref: `arm#/definitions/${key}${polymorphic ? ".any" : ""}` };
      return nullable ? { anyOf: [ref, { type: "null" }] } : ref;
    }
    const out: Json = {};
    for (const [k, v] of Object.entries(source)) {
      if (k.startsWith("x-") || k === "example" || k === "discriminator" || k === "description") continue;
      if (k === "properties") {
        out.properties = Object.fromEntries(
          Object.entries(v as Json).map(([name, schema]) => [name, this.convert(schema, file)]),
        );
      } else if (k === "additionalProperties" || k === "items" || k === "allOf") {
        out[k] = typeof v === "boolean" ? v : this.convert(v, file);
      } else {
        out[k] = v;
      }
    }
    if (nullable) {
      if (typeof out.type === "string") out.type = [out.type, "null"];
      if (Array.isArray(out.enum)) out.enum = [...out.enum, null];
    }
    return out;
  }

  #definition(key: string): Json {
    const [file, name] = splitKey(key);
    const definition = ((this.#files.get(file)?.definitions ?? {}) as Record<string, Json>)[name];
    if (definition === undefined) throw new Error(`unknown definition ${key}`);
    return definition;
  }

  #parents(key: string): string[] {
    const [file] = splitKey(key);
    const allOf = (this.#definition(key).allOf ?? []) as Json[];
    return allOf.filter((p) => typeof p.$ref === "string").map((p) => this.#resolve(p.$ref as string, file));
  }

  #ancestors(key: string): string[] {
    const out: string[] = [];
    for (const parent of this.#parents(key)) out.push(parent, ...this.#ancestors(parent));
    return out;
  }

  #discriminatorOf(key: string): string | undefined {
    const discriminator = this.#definition(key).discriminator;
    return typeof discriminator === "string" ? discriminator : undefined;
  }

  /** The definition with every inherited property merged in, and its discriminator pinned when it is derived. */
  #flatten(key: string): Json {
    const known = this.#flattened.get(key);
    if (known !== undefined) return known;
    const flat = this.#flattenUncached(key);
    this.#flattened.set(key, flat);
    return flat;
  }

  #flattenUncached(key: string): Json {
    const [file, name] = splitKey(key);
    const definition = this.#definition(key);
    const properties: Json = {};
    const required = new Set<string>();
    for (const parent of this.#parents(key)) {
      const flat = this.#flatten(parent);
      Object.assign(properties, flat.properties as Json);
      for (const r of (flat.required ?? []) as string[]) required.add(r);
    }
    const { allOf: _inherited, ...ownDefinition } = definition;
    const own = this.convert(ownDefinition, file) as Json;
    Object.assign(properties, (own.properties ?? {}) as Json);
    for (const r of (definition.required ?? []) as string[]) required.add(r);
    for (const ancestor of this.#ancestors(key)) {
      const discriminator = this.#discriminatorOf(ancestor);
      if (discriminator === undefined) continue;
      const value = (definition["x-ms-discriminator-value"] as string | undefined) ?? name;
      properties[discriminator] = { enum: [value] };
      required.add(discriminator);
    }
    const out: Json = { type: "object", properties };
    if (required.size > 0) out.required = [...required];
    if (own.additionalProperties !== undefined) out.additionalProperties = own.additionalProperties;
    // Plain (non-object) definitions such as string enums keep their own shape.
    if (definition.type !== undefined && definition.type !== "object") {
      return own;
    }
    return out;
  }

  #resolve(ref: string, fromFile: string): string {
    const [target = "", pointer = ""] = ref.split("#");
    const name = pointer.replace(/^\/definitions\//, "");
    if (target === "") return definitionKey(fromFile, name);
    const normalized = target.replace(/^(\.\.\/)+/, "").replace(/^\.\//, "");
    if (normalized.endsWith("types.json")) return definitionKey(COMMON_TYPES, name);
    if (normalized.endsWith("managedidentity.json")) return definitionKey(MANAGED_IDENTITY, name);
    throw new Error(`$ref to a file that is not vendored: ${ref}`);
  }
}

function definitionKey(file: string, name: string): string {
  const prefix = file === MAIN_FILE ? "mfe" : file === COMMON_TYPES ? "types" : "identity";
  return `${prefix}.${name}`;
}

function splitKey(key: string): [string, string] {
  const dot = key.indexOf(".");
  const prefix = key.slice(0, dot);
  const file = prefix === "mfe" ? MAIN_FILE : prefix === "types" ? COMMON_TYPES : MANAGED_IDENTITY;
  return [file, key.slice(dot + 1)];
}
