// Firmware staging (Wazo provd's lesson, provisioning.md §6): one pinned image per model, served
// from a directory under /firmware/<file>, and configs name only images that are really there
// (a phone told to fetch a missing file retries forever). The pin comes from the model's profile
// data, overridden per site by <firmwareDir>/pins.json: { "<vendor>/<model id>": { "file", "version" } }
// (a bare model id is read too; the canonical key wins when both name the same model).
// Which phone runs which version is read from the User-Agent each fetch carries.

import { readFileSync, realpathSync, statSync } from "node:fs";
import { join, sep } from "node:path";
import { modelRef, type ModelProfile, type Profile } from "./profiles.ts";
import type { PhoneRecord, SeenPhone } from "./directory.ts";

export interface FirmwarePin {
  file: string;
  version: string;
  source: "profile" | "site";
}

/** A firmware file name: one plain segment, no traversal, no hidden files. */
const FILE_RE = /^[A-Za-z0-9_][A-Za-z0-9._+-]{0,127}$/;
const VERSION_RE = /^[A-Za-z0-9._()+-]{1,64}$/;

export function isFirmwareFileName(name: string): boolean {
  return FILE_RE.test(name) && !name.includes("..");
}

export type PinsResult = { ok: true; pins: Map<string, { file: string; version: string }> } | { ok: false; error: string };

/** Parse pins.json text; model ids are matched case-insensitively later. Never throws. */
export function parsePins(text: string): PinsResult {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    return { ok: false, error: `pins.json is not JSON: ${(e as Error).message}` };
  }
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) return { ok: false, error: "pins.json must be an object of model id → {file, version}" };
  const pins = new Map<string, { file: string; version: string }>();
  for (const [model, v] of Object.entries(raw as Record<string, unknown>)) {
    const o = v as { file?: unknown; version?: unknown } | null;
    if (typeof o !== "object" || o === null || typeof o.file !== "string" || typeof o.version !== "string") return { ok: false, error: `pins.json: ${model.slice(0, 40)} needs string "file" and "version"` };
    if (!isFirmwareFileName(o.file)) return { ok: false, error: `pins.json: ${model.slice(0, 40)}: file name '${o.file.slice(0, 60)}' is not a plain file name` };
    if (!VERSION_RE.test(o.version)) return { ok: false, error: `pins.json: ${model.slice(0, 40)}: version '${o.version.slice(0, 60)}' is not a version` };
    pins.set(model.toLowerCase(), { file: o.file, version: o.version });
  }
  return { ok: true, pins };
}

export interface FirmwareStoreOptions {
  /** Directory of images; undefined: no firmware is served and configs name none. */
  dir: string | undefined;
  /** File-system answers are cached this long (a phone boot asks several times). */
  cacheMs?: number;
  now?: () => number;
  onPinsError?: (message: string) => void;
}

export class FirmwareStore {
  private readonly cacheMs: number;
  private readonly now: () => number;
  /** File name → whether it exists as a regular file inside dir, and its size; with the time checked. */
  private readonly files = new Map<string, { path: string; size: number; at: number } | { path: undefined; at: number }>();
  private pinsCache: { at: number; pins: Map<string, { file: string; version: string }> } | undefined;
  private readonly root: string | undefined;

  constructor(private readonly opts: FirmwareStoreOptions) {
    this.cacheMs = opts.cacheMs ?? 5_000;
    this.now = opts.now ?? Date.now;
    let root: string | undefined;
    try {
      root = opts.dir ? realpathSync(opts.dir) : undefined;
    } catch {
      root = undefined;
    }
    this.root = root;
  }

  get enabled(): boolean {
    return this.root !== undefined;
  }

  /** The file to serve for /firmware/<name>, or undefined (bad name, missing, a link out of dir). */
  lookup(name: string): { path: string; size: number } | undefined {
    if (!this.root || !isFirmwareFileName(name)) return undefined;
    const t = this.now();
    const hit = this.files.get(name);
    if (hit && t - hit.at < this.cacheMs) return hit.path === undefined ? undefined : { path: hit.path, size: hit.size };
    let entry: { path: string; size: number; at: number } | { path: undefined; at: number } = { path: undefined, at: t };
    try {
      // realpath: a symlink pointing outside the directory is not served.
      const real = realpathSync(join(this.root, name));
      const st = statSync(real);
      if (st.isFile() && real.startsWith(this.root + sep)) entry = { path: real, size: st.size, at: t };
    } catch {
      // missing: entry stays "absent"
    }
    if (this.files.size > 1000) this.files.clear();
    this.files.set(name, entry);
    return entry.path === undefined ? undefined : { path: entry.path, size: entry.size };
  }

  /** Site pins from <dir>/pins.json (re-read at most every cacheMs). */
  sitePins(): Map<string, { file: string; version: string }> {
    const t = this.now();
    if (this.pinsCache && t - this.pinsCache.at < this.cacheMs) return this.pinsCache.pins;
    let pins = new Map<string, { file: string; version: string }>();
    if (this.root) {
      let text: string | undefined;
      try {
        text = readFileSync(join(this.root, "pins.json"), "utf8");
      } catch {
        text = undefined;
      }
      if (text !== undefined) {
        const r = parsePins(text);
        if (r.ok) pins = r.pins;
        else this.opts.onPinsError?.(r.error);
      }
    }
    this.pinsCache = { at: t, pins };
    return pins;
  }

  /** The pinned image of a model: site pin (by `<vendor>/<model id>`, else by the bare id) over
   *  profile data. */
  pinFor(model: ModelProfile, vendor?: string): FirmwarePin | undefined {
    const pins = this.sitePins();
    const site = (vendor !== undefined ? pins.get(`${vendor}/${model.id}`.toLowerCase()) : undefined) ?? pins.get(model.id.toLowerCase());
    if (site) return { ...site, source: "site" };
    return model.firmware ? { ...model.firmware, source: "profile" } : undefined;
  }

  /**
   * The model as the renderer should see it: firmware = the pin, but only when the image is
   * installed in the directory (otherwise no firmware URL goes into the config).
   */
  modelForRender(model: ModelProfile, vendor?: string): ModelProfile {
    const pin = this.pinFor(model, vendor);
    const installed = pin !== undefined && this.lookup(pin.file) !== undefined;
    if (installed && pin.file === model.firmware?.file && pin.version === model.firmware.version) return model;
    const copy: ModelProfile = { ...model };
    if (installed) copy.firmware = { file: pin.file, version: pin.version };
    else delete copy.firmware;
    return copy;
  }
}

export interface FirmwareReportRow {
  mac: string;
  vendor?: string;
  model?: string;
  extension?: string;
  /** Version in the phone's last User-Agent. */
  running?: string;
  pinned?: string;
  installed: boolean;
  /** current: runs the pin; differs: runs another version; unknown: never seen or no pin. */
  status: "current" | "differs" | "unknown";
  lastSeen?: string;
}

/** Which phones run which firmware: adopted phones and phones seen, against the pins. */
export function firmwareReport(
  phones: readonly PhoneRecord[],
  seen: readonly SeenPhone[],
  profiles: ReadonlyMap<string, Profile>,
  firmware: FirmwareStore,
  findModel: (profiles: ReadonlyMap<string, Profile>, id: string, vendor?: string) => { profile: Profile; model: ModelProfile } | undefined,
): FirmwareReportRow[] {
  const seenByMac = new Map(seen.map((s) => [s.mac, s]));
  const macs = [...new Set([...phones.map((p) => p.mac), ...seen.map((s) => s.mac)])].sort();
  const phoneByMac = new Map(phones.map((p) => [p.mac, p]));
  return macs.map((mac) => {
    const p = phoneByMac.get(mac);
    const s = seenByMac.get(mac);
    const modelId = p?.model ?? s?.model;
    const found = modelId !== undefined ? findModel(profiles, modelId, s?.vendor) ?? findModel(profiles, modelId) : undefined;
    const pin = found ? firmware.pinFor(found.model, found.profile.vendor) : undefined;
    const row: FirmwareReportRow = { mac, installed: pin !== undefined && firmware.lookup(pin.file) !== undefined, status: "unknown" };
    const vendor = found?.profile.vendor ?? s?.vendor;
    if (vendor !== undefined) row.vendor = vendor;
    if (found) row.model = modelRef(found.profile, found.model);
    else if (modelId !== undefined) row.model = modelId;
    if (p) row.extension = p.extension;
    if (s?.firmware !== undefined) row.running = s.firmware;
    if (pin) row.pinned = pin.version;
    if (s) row.lastSeen = s.lastSeen;
    if (row.running !== undefined && row.pinned !== undefined) row.status = versionsMatch(row.running, row.pinned) ? "current" : "differs";
    return row;
  });
}

/** Versions compare by their numeric parts (User-Agents pad or trim: "96.86.0.70" vs "96.86.0.70"). */
export function versionsMatch(a: string, b: string): boolean {
  const parts = (v: string): string[] => v.split(/[^0-9A-Za-z]+/).filter(Boolean).map((x) => (/^[0-9]+$/.test(x) ? String(Number(x)) : x.toLowerCase()));
  const pa = parts(a);
  const pb = parts(b);
  return pa.length === pb.length && pa.every((x, i) => x === pb[i]);
}
