// Identify a phone from independent clues, combined (Wazo provd's lesson: DHCP, HTTP path and
// User-Agent extractors each vote). Each clue alone can be ambiguous ("{mac}.cfg" is both a
// Yealink and a Fanvil file) or missing (Poly puts no MAC in its User-Agent); together they pin
// vendor, model, MAC and the file being asked for. Clues that contradict each other (two MACs,
// two vendors, two models) identify nothing: a confused answer could hand one phone's
// credentials to another.

import { normaliseMac } from "./render.ts";
import { modelToken, patternPlaceholders, type FileKind, type ModelProfile, type Profile, type ProfileFile } from "./profiles.ts";

export type Confidence = "none" | "low" | "medium" | "high" | "exact";

export interface IdentifyInput {
  /** Request path as received, e.g. "/prov/001565aabbcc.cfg". A query string is ignored. */
  path: string;
  userAgent?: string;
  /** DHCP option 60 (vendor class identifier), when the DHCP side reports it. */
  dhcpVendorClass?: string;
}

export interface Clue {
  source: "path" | "user-agent" | "dhcp";
  vendor: string;
  /** Model id from the profile, when the clue names a known model. */
  model?: string;
  /** Model text as the phone sent it (may name a model the profile does not list). */
  rawModel?: string;
  /** Models a path placeholder allows (e.g. every model with Yealink hw 124). */
  models?: string[];
  mac?: string;
  firmware?: string;
  file?: ProfileFile;
}

export type IdentifyFailure = "unsafe-path" | "no-match" | "ambiguous-path" | "vendor-conflict" | "mac-conflict" | "model-conflict";

export interface Identification {
  identified: boolean;
  vendor?: string;
  model?: string;
  rawModel?: string;
  mac?: string;
  firmware?: string;
  confidence: Confidence;
  /** What the path asks for; absent when the path is not one of the vendor's files. */
  fileKind?: FileKind;
  file?: ProfileFile;
  /** Template for the file (per-model override applied when the model is known). */
  template?: string;
  bootstrapTemplate?: string;
  reason?: IdentifyFailure;
  detail?: string;
  clues: Clue[];
}

interface CompiledPattern {
  file: ProfileFile;
  regex: RegExp;
  /** Capture group i+1 holds placeholder names[i]. */
  names: string[];
}

const compiledCache = new WeakMap<Profile, CompiledPattern[]>();

function escapeRe(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

function compilePatterns(profile: Profile): CompiledPattern[] {
  const cached = compiledCache.get(profile);
  if (cached) return cached;
  const out: CompiledPattern[] = [];
  for (const file of profile.files) {
    const names = patternPlaceholders(file.pattern);
    let src = "";
    let last = 0;
    for (const m of file.pattern.matchAll(/\{([A-Za-z][A-Za-z0-9]*)\}/g)) {
      src += escapeRe(file.pattern.slice(last, m.index));
      const name = m[1]!;
      if (name === "mac" || name === "MAC") src += "([0-9A-Fa-f]{12})";
      else {
        const values = [...new Set(profile.models.map((mm) => modelToken(mm, name)).filter((v): v is string => v !== undefined))];
        src += values.length ? `(${values.map(escapeRe).join("|")})` : "(?!)";
      }
      last = m.index + m[0].length;
    }
    src += escapeRe(file.pattern.slice(last));
    out.push({ file, regex: new RegExp(`^${src}$`), names });
  }
  compiledCache.set(profile, out);
  return out;
}

// One path segment: plain file-name characters, not "." or "..". Percent-encoding, backslashes,
// NULs and the like never match (the HTTP layer rejects them too).
const SEGMENT_RE = /^[A-Za-z0-9_-][A-Za-z0-9._-]*$/;

/** The requested file name, or undefined for a path that is not a plain, safe path. */
export function requestedFileName(path: unknown): string | undefined {
  if (typeof path !== "string" || path.length === 0 || path.length > 1024) return undefined;
  const q = path.indexOf("?");
  const p = q >= 0 ? path.slice(0, q) : path;
  const segments = (p.startsWith("/") ? p.slice(1) : p).split("/");
  if (segments.some((s) => !SEGMENT_RE.test(s) || s.includes(".."))) return undefined;
  return segments[segments.length - 1];
}

function findModelIn(profile: Profile, raw: string | undefined): ModelProfile | undefined {
  if (raw === undefined) return undefined;
  const want = raw.toLowerCase();
  return profile.models.find((m) => m.id.toLowerCase() === want || m.aliases.some((a) => a.toLowerCase() === want));
}

function matchPath(profiles: ReadonlyMap<string, Profile>, fileName: string): Clue[] {
  const clues: Clue[] = [];
  for (const [vendor, profile] of profiles) {
    for (const cp of compilePatterns(profile)) {
      const m = cp.regex.exec(fileName);
      if (!m) continue;
      const clue: Clue = { source: "path", vendor, file: cp.file };
      let ok = true;
      let allowed: ModelProfile[] | undefined;
      cp.names.forEach((name, i) => {
        const v = m[i + 1]!;
        if (name === "mac" || name === "MAC") {
          const mac = normaliseMac(v);
          if (mac) clue.mac = mac;
          else ok = false; // all-zero or group address: not a phone's MAC
        } else {
          const fits = profile.models.filter((mm) => modelToken(mm, name) === v);
          allowed = allowed ? allowed.filter((x) => fits.includes(x)) : fits;
        }
      });
      if (!ok) continue;
      if (allowed) {
        if (allowed.length === 0) continue;
        clue.models = allowed.map((x) => x.id);
        if (allowed.length === 1) clue.model = allowed[0]!.id;
      }
      clues.push(clue);
      break; // first matching file of a vendor, in the order its phones request them
    }
  }
  return clues;
}

function matchClue(profiles: ReadonlyMap<string, Profile>, text: string, source: "user-agent" | "dhcp"): Clue | undefined {
  for (const [vendor, profile] of profiles) {
    for (const c of source === "user-agent" ? profile.userAgents : profile.dhcpVendorClass) {
      const m = c.regex.exec(text);
      if (!m) continue;
      const g = m.groups ?? {};
      const clue: Clue = { source, vendor };
      if (g.model !== undefined) {
        clue.rawModel = g.model;
        const model = findModelIn(profile, g.model);
        if (model) clue.model = model.id;
      }
      if (g.firmware !== undefined) clue.firmware = g.firmware;
      if (g.mac !== undefined) {
        const mac = normaliseMac(g.mac);
        if (mac) clue.mac = mac;
      }
      return clue;
    }
  }
  return undefined;
}

const PRINTABLE = /^[\x20-\x7e]*$/;

/**
 * Identify the phone behind a provisioning request. Never throws; `identified: false` comes
 * with a `reason`. `confidence`: low = the path alone, medium = User-Agent or DHCP alone,
 * high = two clues agree, exact = all three agree, or two agree and pin both MAC and model.
 */
export function identify(profiles: ReadonlyMap<string, Profile>, input: IdentifyInput): Identification {
  const clues: Clue[] = [];
  const fail = (reason: IdentifyFailure, detail: string): Identification => ({ identified: false, confidence: "none", reason, detail, clues });
  try {
    const fileName = requestedFileName(input?.path);
    if (fileName === undefined) return fail("unsafe-path", "path is not a plain file path");
    const pathClues = matchPath(profiles, fileName);
    clues.push(...pathClues);
    const ua = typeof input.userAgent === "string" && input.userAgent.length <= 512 && PRINTABLE.test(input.userAgent) ? matchClue(profiles, input.userAgent, "user-agent") : undefined;
    if (ua) clues.push(ua);
    const dhcp = typeof input.dhcpVendorClass === "string" && input.dhcpVendorClass.length <= 255 && PRINTABLE.test(input.dhcpVendorClass) ? matchClue(profiles, input.dhcpVendorClass, "dhcp") : undefined;
    if (dhcp) clues.push(dhcp);

    if (ua && dhcp && ua.vendor !== dhcp.vendor) return fail("vendor-conflict", `User-Agent says ${ua.vendor}, DHCP says ${dhcp.vendor}`);
    let vendor = ua?.vendor ?? dhcp?.vendor;
    if (vendor === undefined) {
      if (pathClues.length === 0) return fail("no-match", "no clue matches a known vendor");
      if (pathClues.length > 1) return fail("ambiguous-path", `path matches ${pathClues.map((c) => c.vendor).join(", ")}`);
      vendor = pathClues[0]!.vendor;
    }
    const profile = profiles.get(vendor)!;
    const path = pathClues.find((c) => c.vendor === vendor);
    const agreeing = [path, ua, dhcp].filter((c): c is Clue => c !== undefined);

    // MAC: path and User-Agent must agree (DHCP option 60 carries none).
    const macs = [...new Set(agreeing.map((c) => c.mac).filter((m): m is string => m !== undefined))];
    if (macs.length > 1) return fail("mac-conflict", `MACs disagree: ${macs.join(" vs ")}`);

    // Model: named models must agree and fit what the path allows.
    const named = [...new Set([ua?.model, dhcp?.model].filter((m): m is string => m !== undefined))];
    if (named.length > 1) return fail("model-conflict", `models disagree: ${named.join(" vs ")}`);
    let model = named[0];
    if (path?.models) {
      if (model !== undefined && !path.models.includes(model)) return fail("model-conflict", `path is for ${path.models.join("/")}, not ${model}`);
      if (model === undefined && path.model !== undefined) model = path.model;
    }

    const result: Identification = { identified: true, vendor, confidence: "low", clues };
    if (model !== undefined) result.model = model;
    const rawModel = ua?.rawModel ?? dhcp?.rawModel;
    if (rawModel !== undefined) result.rawModel = rawModel;
    if (macs[0] !== undefined) result.mac = macs[0];
    if (ua?.firmware !== undefined) result.firmware = ua.firmware;
    if (path?.file) {
      const modelProfile = model !== undefined ? profile.models.find((m) => m.id === model) : undefined;
      result.fileKind = path.file.kind;
      result.file = path.file;
      if (path.file.template !== undefined) result.template = modelProfile?.templates[path.file.template] ?? path.file.template;
      if (path.file.bootstrapTemplate !== undefined) result.bootstrapTemplate = modelProfile?.templates[path.file.bootstrapTemplate] ?? path.file.bootstrapTemplate;
    }
    if (agreeing.length >= 3 || (agreeing.length === 2 && result.mac !== undefined && result.model !== undefined)) result.confidence = "exact";
    else if (agreeing.length === 2) result.confidence = "high";
    else result.confidence = path ? "low" : "medium";
    return result;
  } catch (e) {
    return fail("no-match", `identification failed: ${(e as Error).message}`);
  }
}
