// Device profiles: one folder per phone vendor under device-profiles/, holding profile.json
// (validated against device-profiles/profile.schema.json) and the vendor's config templates.
// Wazo provd keeps one plugin per vendor; here the same knowledge is data, so a new model is a
// JSON entry and maybe a template, never a code change. A broken vendor folder is reported by
// name and does not stop the others from loading.

import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { SUPPORTED_ALGORITHMS } from "../agent/sip/digest.ts";
import type { MacLocation } from "./devicecert.ts";
import { allowedTemplateNames, compileTemplate, templateRefs, type CompiledTemplate, type ConfigFormat } from "./render.ts";

export type FileKind = "boot" | "mac-boot" | "common" | "mac-config" | "firmware-info";
export type LineKeyType = "blf" | "line" | "speeddial";
export type Transport = "udp" | "tcp" | "tls";

export interface ProfileFile {
  /** File name pattern as written in profile.json, e.g. "y0000000000{hw}.cfg". */
  pattern: string;
  kind: FileKind;
  /** Absent: recognised (identifies the phone) but not served. */
  template?: string;
  bootstrapTemplate?: string;
  credentials: boolean;
  contentType?: string;
  note?: string;
}

export interface ClueRegex {
  source: string;
  regex: RegExp;
  example?: string;
  note?: string;
}

export interface ModelProfile {
  id: string;
  label: string;
  aliases: string[];
  accounts: number;
  lineKeys: number;
  physical: boolean;
  hw?: string;
  tokens: Record<string, string>;
  templates: Record<string, string>;
  keyParamBlock?: { base: number; stride: number };
  /** Replaces the vendor's code maps for this model (each map replaced whole). */
  codes?: Partial<Profile["codes"]>;
  firmware?: { file: string; version: string };
  note?: string;
}

/** Digest algorithms a profile may list (RFC 7616 §3.3 / RFC 8760 names). */
export type HttpDigestAlgorithm = "MD5" | "SHA-256" | "SHA-512-256";
/** Without `httpDigest` in a profile: MD5, the one algorithm phone HTTP clients all answer. */
export const DEFAULT_HTTP_DIGEST: readonly HttpDigestAlgorithm[] = ["MD5"];

export interface Profile {
  vendor: string;
  displayName: string;
  format: ConfigFormat;
  contentType: string;
  files: ProfileFile[];
  userAgents: ClueRegex[];
  dhcpVendorClass: ClueRegex[];
  resync: { event: string; rebootEvent?: string; note?: string };
  autoAnswer: { header: "Call-Info" | "Alert-Info"; value: string; certainty: string; note?: string };
  codes: {
    transport: Record<Transport, string>;
    lineKeyType: Partial<Record<LineKeyType, string>>;
    scheme?: { http: string; https: string };
  };
  models: ModelProfile[];
  notes: string[];
  /** HTTP Digest algorithms the phones' HTTP client answers, in the order challenges offer them. */
  httpDigest: HttpDigestAlgorithm[];
  /** Where the phones present a factory device certificate over HTTPS, and where it names the MAC. */
  deviceCertificate?: { macIn: MacLocation[]; note?: string };
  /** Compiled templates keyed by template file name. */
  templates: Map<string, CompiledTemplate>;
}

export interface ProfileLoadError {
  vendor: string;
  message: string;
}

export interface LoadedProfiles {
  /** Keyed by vendor id (the folder name). */
  profiles: Map<string, Profile>;
  errors: ProfileLoadError[];
}

// ---------------------------------------------------------------------------------------------
// A validator for the subset of JSON Schema that profile.schema.json uses. Interpreting the
// schema file itself keeps the schema the single source of truth (no new dependency).

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };
type Schema = { [k: string]: Json };

function isObject(v: unknown): v is { [k: string]: Json } {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function typeOf(v: Json): string {
  if (v === null) return "null";
  if (Array.isArray(v)) return "array";
  if (typeof v === "number") return Number.isInteger(v) ? "integer" : "number";
  return typeof v;
}

/** Validate `value` against `schema`; returns messages with JSON-pointer-like paths. */
export function validateAgainstSchema(value: Json, schema: Schema, root: Schema = schema, path = ""): string[] {
  const errors: string[] = [];
  const at = path || "/";
  if (typeof schema.$ref === "string") {
    const m = /^#\/\$defs\/([A-Za-z0-9_]+)$/.exec(schema.$ref);
    const defs = root.$defs;
    const target = m && isObject(defs) ? defs[m[1]!] : undefined;
    if (!isObject(target)) return [`${at}: unresolvable $ref ${schema.$ref}`];
    return validateAgainstSchema(value, target, root, path);
  }
  if (Array.isArray(schema.enum) && !schema.enum.some((e) => e === value)) {
    errors.push(`${at}: must be one of ${schema.enum.map((e) => JSON.stringify(e)).join(", ")}`);
    return errors;
  }
  if (schema.type !== undefined) {
    const want = Array.isArray(schema.type) ? schema.type : [schema.type];
    const got = typeOf(value);
    if (!want.some((t) => t === got || (t === "number" && got === "integer"))) {
      errors.push(`${at}: must be ${want.join(" or ")}, not ${got}`);
      return errors;
    }
  }
  if (typeof value === "string") {
    if (typeof schema.minLength === "number" && value.length < schema.minLength) errors.push(`${at}: shorter than ${schema.minLength}`);
    if (typeof schema.maxLength === "number" && value.length > schema.maxLength) errors.push(`${at}: longer than ${schema.maxLength}`);
    if (typeof schema.pattern === "string" && !new RegExp(schema.pattern, "u").test(value)) errors.push(`${at}: ${JSON.stringify(value)} does not match ${schema.pattern}`);
  }
  if (typeof value === "number") {
    if (typeof schema.minimum === "number" && value < schema.minimum) errors.push(`${at}: below ${schema.minimum}`);
    if (typeof schema.maximum === "number" && value > schema.maximum) errors.push(`${at}: above ${schema.maximum}`);
  }
  if (Array.isArray(value)) {
    if (typeof schema.minItems === "number" && value.length < schema.minItems) errors.push(`${at}: needs at least ${schema.minItems} item(s)`);
    if (isObject(schema.items)) value.forEach((item, i) => errors.push(...validateAgainstSchema(item, schema.items as Schema, root, `${path}/${i}`)));
  }
  if (isObject(value)) {
    if (Array.isArray(schema.required)) for (const k of schema.required) if (typeof k === "string" && !(k in value)) errors.push(`${at}: missing required '${k}'`);
    const props = isObject(schema.properties) ? schema.properties : {};
    for (const [k, v] of Object.entries(value)) {
      const sub = props[k];
      if (isObject(sub)) errors.push(...validateAgainstSchema(v, sub, root, `${path}/${k}`));
      else if (schema.additionalProperties === false) errors.push(`${at}: unexpected property '${k}'`);
      else if (isObject(schema.additionalProperties)) errors.push(...validateAgainstSchema(v, schema.additionalProperties, root, `${path}/${k}`));
    }
  }
  return errors;
}

// ---------------------------------------------------------------------------------------------

const PLACEHOLDER = /\{([A-Za-z][A-Za-z0-9]*)\}/g;

/** Placeholder names used in a file pattern, in order. */
export function patternPlaceholders(pattern: string): string[] {
  return [...pattern.matchAll(PLACEHOLDER)].map((m) => m[1]!);
}

/** Value a model gives a non-MAC placeholder, or undefined when the model does not define it. */
export function modelToken(model: ModelProfile, name: string): string | undefined {
  if (name === "hw") return model.hw;
  if (name === "model") return model.tokens.model ?? model.id;
  return model.tokens[name];
}

/** The template a model uses in place of `name` (per-model overrides). */
export function templateFor(model: ModelProfile, name: string): string {
  return model.templates[name] ?? name;
}

function compileClue(where: string, raw: { regex: string; example?: string; note?: string }, errors: string[]): ClueRegex | undefined {
  let regex: RegExp;
  try {
    regex = new RegExp(raw.regex);
  } catch (e) {
    errors.push(`${where}: invalid regex ${JSON.stringify(raw.regex)}: ${(e as Error).message}`);
    return undefined;
  }
  if (raw.example !== undefined && !regex.test(raw.example)) errors.push(`${where}: regex does not match its own example ${JSON.stringify(raw.example)}`);
  const clue: ClueRegex = { source: raw.regex, regex };
  if (raw.example !== undefined) clue.example = raw.example;
  if (raw.note !== undefined) clue.note = raw.note;
  return clue;
}

/**
 * Load and check one vendor folder. Returns the profile or the list of problems found; checks
 * everything it can rather than stopping at the first problem.
 */
export function loadProfile(folder: string, vendorId: string, schema: Schema): { profile?: Profile; problems: string[] } {
  const problems: string[] = [];
  const file = join(folder, "profile.json");
  let raw: Json;
  try {
    raw = JSON.parse(readFileSync(file, "utf8")) as Json;
  } catch (e) {
    return { problems: [`profile.json: ${(e as Error).message}`] };
  }
  const schemaErrors = validateAgainstSchema(raw, schema).map((m) => `profile.json${m.startsWith("/") ? "" : " "}${m}`);
  if (schemaErrors.length) return { problems: schemaErrors };
  const p = raw as unknown as {
    vendor: string;
    displayName: string;
    format: ConfigFormat;
    contentType: string;
    files: ProfileFile[];
    userAgents: Array<{ regex: string; example?: string; note?: string }>;
    dhcpVendorClass?: Array<{ regex: string; example?: string; note?: string }>;
    resync: Profile["resync"];
    autoAnswer: Profile["autoAnswer"];
    codes: Profile["codes"];
    models: Array<Omit<ModelProfile, "aliases" | "tokens" | "templates"> & { aliases?: string[]; tokens?: Record<string, string>; templates?: Record<string, string> }>;
    notes?: string[];
    httpDigest?: HttpDigestAlgorithm[];
    deviceCertificate?: Profile["deviceCertificate"];
  };
  for (const a of p.httpDigest ?? []) if (!SUPPORTED_ALGORITHMS.includes(a)) problems.push(`httpDigest: ${a} is not available in this build`);
  if (p.httpDigest && new Set(p.httpDigest).size !== p.httpDigest.length) problems.push("httpDigest: an algorithm is listed twice");
  if (p.vendor !== vendorId) problems.push(`profile.json: vendor '${p.vendor}' does not match folder name '${vendorId}'`);

  const models: ModelProfile[] = p.models.map((m) => ({ ...m, aliases: m.aliases ?? [], tokens: m.tokens ?? {}, templates: m.templates ?? {} }));
  const seen = new Set<string>();
  for (const m of models) {
    for (const name of [m.id, ...m.aliases]) {
      const key = name.toLowerCase();
      if (seen.has(key)) problems.push(`model '${m.id}': name '${name}' is used by another model`);
      seen.add(key);
    }
  }

  const userAgents = p.userAgents.map((u, i) => compileClue(`userAgents/${i}`, u, problems)).filter((c): c is ClueRegex => c !== undefined);
  const dhcpVendorClass = (p.dhcpVendorClass ?? []).map((u, i) => compileClue(`dhcpVendorClass/${i}`, u, problems)).filter((c): c is ClueRegex => c !== undefined);

  // Every placeholder must be resolvable: MAC placeholders always, others by at least one model.
  for (const f of p.files) {
    const names = patternPlaceholders(f.pattern);
    if (names.filter((n) => n === "mac" || n === "MAC").length > 1) problems.push(`file '${f.pattern}': more than one MAC placeholder`);
    for (const n of names) {
      if (n === "mac" || n === "MAC") continue;
      if (!models.some((m) => modelToken(m, n) !== undefined)) problems.push(`file '${f.pattern}': no model defines placeholder {${n}}`);
    }
    const isMacKind = f.kind === "mac-boot" || f.kind === "mac-config";
    if (isMacKind !== (names.includes("mac") || names.includes("MAC"))) problems.push(`file '${f.pattern}': kind '${f.kind}' ${isMacKind ? "needs" : "must not have"} a MAC placeholder`);
    if (f.credentials && f.template !== undefined && f.bootstrapTemplate === undefined) problems.push(`file '${f.pattern}': carries credentials but has no bootstrapTemplate`);
    if (f.bootstrapTemplate !== undefined && f.kind !== "mac-config") problems.push(`file '${f.pattern}': only mac-config files have a bootstrap variant`);
  }

  // Compile every template any model can reach, and check the names it reads are ones the
  // renderer provides for that file kind (a typo fails here, at load, not on a phone's request).
  const templates = new Map<string, CompiledTemplate>();
  const compileOnce = (name: string): CompiledTemplate | undefined => {
    const have = templates.get(name);
    if (have) return have;
    const path = join(folder, name);
    if (!existsSync(path)) {
      problems.push(`template '${name}' does not exist`);
      return undefined;
    }
    const r = compileTemplate(name, readFileSync(path, "utf8"));
    if (!r.ok) {
      problems.push(`template ${r.error.message}`);
      return undefined;
    }
    templates.set(name, r.template);
    return r.template;
  };
  const checked = new Set<string>();
  for (const f of p.files) {
    for (const [tplName, bootstrap] of [[f.template, false], [f.bootstrapTemplate, true]] as const) {
      if (tplName === undefined) continue;
      for (const m of models) {
        const name = templateFor(m, tplName);
        const key = `${name}|${f.kind}|${bootstrap}|${m.keyParamBlock?.stride ?? 0}|${m.hw !== undefined}|${(m.codes?.scheme ?? p.codes.scheme) !== undefined}`;
        if (checked.has(key)) continue;
        checked.add(key);
        const t = compileOnce(name);
        if (!t) continue;
        const allowed = allowedTemplateNames({ format: p.format, codes: p.codes }, m, f.kind, bootstrap);
        const refs = templateRefs(t);
        for (const n of refs.outer) if (!allowed.outer.has(n)) problems.push(`template '${name}' (${f.kind}${bootstrap ? ", bootstrap" : ""}, model ${m.id}): unknown variable '${n}'`);
        for (const [list, names] of refs.lists) {
          for (const n of names) if (!allowed.item.has(n) && !allowed.outer.has(n)) problems.push(`template '${name}' (model ${m.id}): unknown variable '${n}' inside {{#each ${list}}}`);
        }
      }
    }
  }
  for (const m of models) for (const [from, to] of Object.entries(m.templates)) {
    if (!p.files.some((f) => f.template === from || f.bootstrapTemplate === from)) problems.push(`model '${m.id}': override for unknown template '${from}'`);
    if (!templates.has(to)) compileOnce(to);
  }

  if (problems.length) return { problems: [...new Set(problems)] };
  const profile: Profile = {
    vendor: p.vendor,
    displayName: p.displayName,
    format: p.format,
    contentType: p.contentType,
    files: p.files,
    userAgents,
    dhcpVendorClass,
    resync: p.resync,
    autoAnswer: p.autoAnswer,
    codes: p.codes,
    models,
    notes: p.notes ?? [],
    httpDigest: p.httpDigest ?? [...DEFAULT_HTTP_DIGEST],
    ...(p.deviceCertificate !== undefined ? { deviceCertificate: p.deviceCertificate } : {}),
    templates,
  };
  return { profile, problems };
}

/**
 * Load every vendor folder under `dir` (each holding a profile.json). Never throws: a folder
 * that cannot be read or fails validation is listed in `errors` and skipped.
 */
export function loadProfiles(dir = "device-profiles"): LoadedProfiles {
  const profiles = new Map<string, Profile>();
  const errors: ProfileLoadError[] = [];
  const base = resolve(dir);
  let schema: Schema;
  try {
    const s = JSON.parse(readFileSync(join(base, "profile.schema.json"), "utf8")) as Json;
    if (!isObject(s)) throw new Error("schema is not an object");
    schema = s;
  } catch (e) {
    return { profiles, errors: [{ vendor: "*", message: `profile.schema.json: ${(e as Error).message}` }] };
  }
  let entries: string[];
  try {
    entries = readdirSync(base).sort();
  } catch (e) {
    return { profiles, errors: [{ vendor: "*", message: `${dir}: ${(e as Error).message}` }] };
  }
  for (const name of entries) {
    const folder = join(base, name);
    try {
      if (!statSync(folder).isDirectory()) continue;
    } catch {
      continue;
    }
    if (!existsSync(join(folder, "profile.json"))) {
      errors.push({ vendor: name, message: "no profile.json" });
      continue;
    }
    try {
      const r = loadProfile(folder, name, schema);
      if (r.profile) profiles.set(name, r.profile);
      else errors.push({ vendor: name, message: r.problems.join("; ") });
    } catch (e) {
      errors.push({ vendor: name, message: (e as Error).message });
    }
  }
  return { profiles, errors };
}

/** device-profiles/ next to this folder, wherever the process was started from. */
export const DEFAULT_PROFILES_DIR = resolve(dirname(fileURLToPath(import.meta.url)), "../device-profiles");

let cachedProfiles: ReadonlyMap<string, Profile> | undefined;
/** The shipped profiles, loaded once: for checks that run without the provisioning feature
 *  (model ids in a site file, a CLI command on the store, a store migration). */
export function defaultProfiles(): ReadonlyMap<string, Profile> {
  cachedProfiles ??= loadProfiles(DEFAULT_PROFILES_DIR).profiles;
  return cachedProfiles;
}

// ---------------------------------------------------------------------------------------------
// Model ids. The one canonical form, everywhere a phone's model is stored or shown, is
// `<vendor>/<model id>` (the site contract's form): the vendor folder name and the model's `id`
// as profile.json spells it, e.g. "yealink/T46U". Input may use any case and a model alias
// ("Yealink/SIP-T46U"), or a bare model name when exactly one vendor knows it ("T46U").

/** The canonical `<vendor>/<model id>` of a profile's model. */
export function modelRef(profile: Pick<Profile, "vendor">, model: Pick<ModelProfile, "id">): string {
  return `${profile.vendor}/${model.id}`;
}

export type ModelLookup =
  | { ok: true; ref: string; profile: Profile; model: ModelProfile }
  | { ok: false; reason: "invalid" | "unknown-vendor" | "unknown-model" | "ambiguous"; message: string };

/** Longest model text accepted (the contract's maxLength). */
const MAX_MODEL_TEXT = 128;

function clipped(text: string): string {
  return JSON.stringify(text.length > 40 ? `${text.slice(0, 40)}…` : text);
}

function modelIn(profile: Profile, name: string): ModelProfile | undefined {
  const want = name.toLowerCase();
  return profile.models.find((m) => m.id.toLowerCase() === want || m.aliases.some((a) => a.toLowerCase() === want));
}

/**
 * Parse and resolve a model as a person or a file wrote it: `<vendor>/<model>` or a bare model
 * name, either part in any case, the model by id or alias. `vendor`, when given, is the vendor
 * the phone is known to be (a requested file's, a PnP announcement's): a canonical input of
 * another vendor is then unknown, and a bare name is looked up in that vendor only. Without it a
 * bare name must be known to exactly one vendor. Never throws; the message names the input and
 * what would be valid.
 */
export function resolveModel(profiles: ReadonlyMap<string, Profile>, text: unknown, vendor?: string): ModelLookup {
  if (typeof text !== "string" || text.length === 0) return { ok: false, reason: "invalid", message: "model is empty" };
  if (text.length > MAX_MODEL_TEXT || /[\u0000-\u001f\u007f]/.test(text)) return { ok: false, reason: "invalid", message: `model ${clipped(text)} is not a model name (at most ${MAX_MODEL_TEXT} printable characters)` };
  const slash = text.indexOf("/");
  const vendorText = slash >= 0 ? text.slice(0, slash) : undefined;
  const name = slash >= 0 ? text.slice(slash + 1) : text;
  if (vendorText === "" || name === "" || name.includes("/")) return { ok: false, reason: "invalid", message: `model ${clipped(text)} is not of the form <vendor>/<model> (e.g. "yealink/T46U")` };
  const vendors = [...profiles.values()];
  const byVendor = (v: string): Profile | undefined => vendors.find((p) => p.vendor.toLowerCase() === v.toLowerCase());
  const found = (profile: Profile, model: ModelProfile): ModelLookup => ({ ok: true, ref: modelRef(profile, model), profile, model });
  const known = (ps: readonly Profile[]): string => ps.flatMap((p) => p.models.map((m) => modelRef(p, m))).join(", ");
  if (vendorText !== undefined || vendor !== undefined) {
    const profile = byVendor(vendorText ?? vendor!);
    if (!profile) return { ok: false, reason: "unknown-vendor", message: `unknown vendor ${clipped(vendorText ?? vendor!)} (known: ${vendors.map((p) => p.vendor).join(", ")})` };
    if (vendor !== undefined && profile.vendor.toLowerCase() !== vendor.toLowerCase()) return { ok: false, reason: "unknown-model", message: `model ${clipped(text)} is not a ${byVendor(vendor)?.displayName ?? vendor} model` };
    const model = modelIn(profile, name);
    return model ? found(profile, model) : { ok: false, reason: "unknown-model", message: `${profile.displayName} has no model ${clipped(name)} (known: ${known([profile])})` };
  }
  const matches = vendors.flatMap((profile) => {
    const model = modelIn(profile, name);
    return model ? [{ profile, model }] : [];
  });
  if (matches.length === 1) return found(matches[0]!.profile, matches[0]!.model);
  if (matches.length > 1) return { ok: false, reason: "ambiguous", message: `model ${clipped(text)} is ambiguous: write one of ${matches.map((m) => modelRef(m.profile, m.model)).join(", ")}` };
  return { ok: false, reason: "unknown-model", message: `unknown model ${clipped(text)} (known: ${known(vendors)})` };
}

/** resolveModel's profile and model, or undefined when the text does not resolve. */
export function findModel(profiles: ReadonlyMap<string, Profile>, modelId: string, vendor?: string): { profile: Profile; model: ModelProfile } | undefined {
  const r = resolveModel(profiles, modelId, vendor);
  return r.ok ? { profile: r.profile, model: r.model } : undefined;
}

/** A stored model as it is shown: canonical when it resolves, else the stored text unchanged. */
export function shownModel(profiles: ReadonlyMap<string, Profile>, stored: string, vendor?: string): string {
  const r = resolveModel(profiles, stored, vendor);
  return r.ok ? r.ref : stored;
}
