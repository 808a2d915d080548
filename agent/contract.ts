// The contract: contract/ringedge.schema.json holds one JSON Schema (draft 2020-12) definition
// per payload the agent exchanges with the console (and the local site file). The validators are
// ajv's standalone code for that schema, generated at build time into
// contract-validators.generated.ts (contract/generate.ts; a unit test fails when it is stale), so
// the agent never compiles a schema: the first console push after start-up used to pay
// 136–213 ms of event-loop time for it. This module turns ajv's errors into the
// `{ code, path, message }` shape the rest of the agent reports, with paths in the same style as
// validateSite: `groups[2].members[0]` (DESIGN principle 5).
import { fileURLToPath } from "node:url";
import type { ErrorObject } from "ajv";
import * as generated from "./contract-validators.generated.ts";

export const CONTRACT_SCHEMA_PATH = fileURLToPath(new URL("../contract/ringedge.schema.json", import.meta.url));

export interface SchemaError {
  code: "schema";
  /** JSON path of the offending value, e.g. "groups[2].members[0]"; "$" is the payload itself. */
  path: string;
  message: string;
}

export type PayloadResult = { ok: true } | { ok: false; errors: SchemaError[] };

/** After this many errors a report stops (a hostile payload can produce thousands). */
export const MAX_SCHEMA_ERRORS = 200;

/** A generated validator: ajv's calling convention (errors on the function after a failed call). */
type Validator = ((value: unknown) => boolean) & { errors?: ErrorObject[] | null };

const validators: ReadonlyMap<string, Validator> = new Map(
  (generated.definitionNames as string[]).map((name) => [name, (generated as unknown as Record<string, Validator>)[name]!]),
);

/** Names of the payload definitions in the contract ($defs keys). */
export function payloadNames(): string[] {
  return [...validators.keys()];
}

function validatorFor(defName: string): Validator | undefined {
  return validators.get(defName);
}

/**
 * Checks a payload against `$defs/<defName>`. Never throws on any value; an unknown defName is
 * reported as an error at "$" (a programming error, but still a typed result).
 */
export function validatePayload(defName: string, value: unknown): PayloadResult {
  const v = validatorFor(defName);
  if (!v) return { ok: false, errors: [{ code: "schema", path: "$", message: `the contract has no definition "${defName}"` }] };
  if (v(value)) return { ok: true };
  return { ok: false, errors: convertErrors(v.errors ?? [], value) };
}

// ---------------------------------------------------------------------------------------------
// ajv error → { path, message }

/** "/groups/2/members/0" → "groups[2].members[0]", walking the value to tell arrays from objects. */
export function toJsonPath(instancePath: string, root: unknown, extraKey?: string): string {
  const segments = instancePath === "" ? [] : instancePath.slice(1).split("/").map((s) => s.replace(/~1/g, "/").replace(/~0/g, "~"));
  if (extraKey !== undefined) segments.push(extraKey);
  let out = "";
  let cur: unknown = root;
  for (const seg of segments) {
    if (Array.isArray(cur) && /^(0|[1-9][0-9]*)$/.test(seg)) {
      out += `[${seg}]`;
      cur = cur[Number(seg)];
    } else {
      out += /^[A-Za-z_$][A-Za-z0-9_$]*$/.test(seg) ? (out === "" ? seg : `.${seg}`) : `[${JSON.stringify(seg)}]`;
      cur = typeof cur === "object" && cur !== null && Object.prototype.hasOwnProperty.call(cur, seg) ? (cur as Record<string, unknown>)[seg] : undefined;
    }
  }
  return out === "" ? "$" : out;
}

function describe(e: ErrorObject): string {
  const p = e.params as Record<string, unknown>;
  const parent = (e.parentSchema ?? {}) as { examples?: unknown[] };
  const example = Array.isArray(parent.examples) && parent.examples.length > 0 ? ` (e.g. ${JSON.stringify(parent.examples[0])})` : "";
  switch (e.keyword) {
    case "required":
      return "is required";
    case "additionalProperties":
      return "is not a known property";
    case "enum":
      return `must be one of ${(p.allowedValues as unknown[]).map((v) => JSON.stringify(v)).join(", ")}`;
    case "const":
      return `must be ${JSON.stringify(p.allowedValue)}`;
    case "pattern":
      return `must match ${String(p.pattern)}${example}`;
    case "anyOf":
      return parent && (parent as { description?: string }).description ? `must be ${lowerFirst((parent as { description: string }).description)}` : "must match one of the allowed forms";
    case "type": {
      const t = String(p.type);
      return `must be ${/^[aeiou]/.test(t) ? "an" : "a"} ${t}`;
    }
    case "uniqueItems":
      return `must not repeat an item (items ${String(p.j)} and ${String(p.i)} are equal)`;
    default:
      return `${e.message ?? "is invalid"}${example}`;
  }
}

function lowerFirst(s: string): string {
  const first = s.split(/[.(]/)[0]?.trim() ?? s;
  return first.charAt(0).toLowerCase() + first.slice(1);
}

/**
 * ajv reports a failed if/then as two errors (the branch's, and "must match then schema"), and a
 * failed anyOf as one error per branch plus the anyOf itself. Keep only what a person acts on:
 * the branch errors for if/then, the single anyOf error for anyOf.
 */
function convertErrors(errors: readonly ErrorObject[], root: unknown): SchemaError[] {
  const anyOfAt = errors.filter((e) => e.keyword === "anyOf").map((e) => ({ path: e.instancePath, schema: e.schemaPath.slice(0, -"/anyOf".length) }));
  const out: SchemaError[] = [];
  const seen = new Set<string>();
  for (const e of errors) {
    if (e.keyword === "if") continue;
    // A branch of an anyOf that failed as a whole: the anyOf error says it once.
    if (e.keyword !== "anyOf" && anyOfAt.some((a) => a.path === e.instancePath && e.schemaPath.startsWith(`${a.schema}/anyOf/`))) continue;
    const key = e.keyword === "required" ? String((e.params as { missingProperty: string }).missingProperty) : e.keyword === "additionalProperties" ? String((e.params as { additionalProperty: string }).additionalProperty) : undefined;
    const path = toJsonPath(e.instancePath, root, key);
    const message = describe(e);
    const dedupe = `${path}\u0000${message}`;
    if (seen.has(dedupe)) continue;
    seen.add(dedupe);
    if (out.length >= MAX_SCHEMA_ERRORS) {
      out.push({ code: "schema", path, message: `stopped after ${MAX_SCHEMA_ERRORS} errors` });
      break;
    }
    out.push({ code: "schema", path, message });
  }
  return out;
}
