// Schema migrations of the store file. Mechanism: an ordered list of steps, each taking the
// data of version `from` and returning the data of version `to`; opening an older file runs
// them in order (Store.open keeps `<file>.v<old>.bak` first). Pure functions, no I/O.
//
// To introduce schema version N+1 (versions 2 and 3 were added this way):
//   1. change the types and validateStoreData in schema.ts, set CURRENT_SCHEMA_VERSION = N+1;
//   2. append `{ from: N, to: N+1, description, migrate(data) { ...return new data } }` to MIGRATIONS.
// Nothing else changes; older files then migrate step by step (0→1→2→...) on open.
import { checkId, checkPassword, checkUsername, normalizeMac, type DeviceRecord } from "./schema.ts";

/** Version-1 data (the layout before the site file existed). */
interface StoreDataV1 {
  devices: DeviceRecord[];
  bindings: unknown[];
  meta: { createdAt: string; siteId?: string };
  routing: { evenlyLastOffered: Record<string, Record<string, number>> };
}

/** A model as a person wrote it → its canonical `<vendor>/<model id>`, or why not (unknown,
 *  ambiguous). `vendor`: the vendor the phone is known to be (a seen phone's). */
export type ModelCanonicaliser = (model: string, vendor?: string) => { ok: true; ref: string } | { ok: false; message: string };

export interface MigrationContext {
  /** Time stamped on records the old format did not date. */
  now: Date;
  /** For 2→3; without it, models are left as they are (and that is reported). */
  canonicalModel?: ModelCanonicaliser;
  /** What a step chose to leave as it was, for the operator (the step still succeeds). */
  report?: (message: string) => void;
}

export interface Migration {
  from: number;
  to: number;
  description: string;
  /** Throws MigrationError when the old data cannot be converted. */
  migrate(data: unknown, ctx: MigrationContext): unknown;
}

export class MigrationError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "MigrationError";
  }
}

// --- Version 0: the legacy prototype format ---------------------------------------------------
// The first prototype of the agent saved a plain JSON object with no envelope and no checksum:
//   { "siteId"?: "site-1",
//     "devices": [ { "id"?: "d1", "username": "1001", "secret": "pw", "displayName"?: "...",
//                    "mac"?: "00:11:22:33:44:55", "model"?: "...", "owner"?: "..." } ] }
// Differences from version 1: `secret` is now `password`; `kind` did not exist (a device with a
// MAC is a desk phone, one without is a soft client); `id` was optional (derived from the
// username); no createdAt; bindings and routing state were kept in memory only.

const LEGACY_V0_KEYS = new Set(["devices", "siteId"]);

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** Whether an envelope-less JSON object is a version-0 (legacy prototype) store. */
export function isLegacyV0(value: unknown): boolean {
  if (!isRecord(value) || !Array.isArray(value.devices)) return false;
  return Object.keys(value).every((k) => LEGACY_V0_KEYS.has(k));
}

function migrateV0toV1(data: unknown, ctx: MigrationContext): StoreDataV1 {
  if (!isLegacyV0(data)) throw new MigrationError('not a version-0 layout (expected an object with "devices" and optionally "siteId")');
  const v0 = data as { devices: unknown[]; siteId?: unknown };
  const createdAt = ctx.now.toISOString();
  const devices: DeviceRecord[] = v0.devices.map((d, i) => {
    const at = `devices[${i}]`;
    if (!isRecord(d)) throw new MigrationError(`${at} is not an object`);
    const username = d.username;
    const userReason = checkUsername(username);
    if (userReason) throw new MigrationError(`${at}.username ${userReason}`);
    const id = d.id === undefined ? `dev-${String(username)}` : d.id;
    const idReason = checkId(id);
    if (idReason) throw new MigrationError(`${at}.id ${idReason}`);
    const pwReason = checkPassword(d.secret);
    if (pwReason) throw new MigrationError(`${at}.secret ${pwReason}`);
    const dev: DeviceRecord = { id: id as string, username: username as string, password: d.secret as string, kind: "soft", createdAt };
    if (d.mac !== undefined) {
      const mac = normalizeMac(d.mac);
      if (mac === null) throw new MigrationError(`${at}.mac ${JSON.stringify(d.mac)} is not a MAC address`);
      dev.mac = mac;
      dev.kind = "physical";
    }
    if (typeof d.displayName === "string") dev.displayName = d.displayName;
    if (typeof d.model === "string") dev.model = d.model;
    if (typeof d.owner === "string") dev.owner = d.owner;
    return dev;
  });
  const out: StoreDataV1 = {
    devices,
    bindings: [],
    meta: { createdAt },
    routing: { evenlyLastOffered: {} },
  };
  if (typeof v0.siteId === "string") out.meta.siteId = v0.siteId;
  return out;
}

// --- Version 1 → 2 ------------------------------------------------------------------------------
// Version 2 adds the site file / console configuration. Every device of a version-1 store was
// added by an installer, so it becomes "local" (a site apply never touches it). The applied site
// starts empty (null), as do the phones seen by provisioning and the call log. Provisioning
// credentials are not invented here (migrations stay deterministic): the store creates them on
// first use (Store.ensureProvisioningCredentials).

function migrateV1toV2(data: unknown): unknown {
  if (!isRecord(data)) throw new MigrationError("version-1 data is not an object");
  if (!Array.isArray(data.devices)) throw new MigrationError("version-1 data.devices is not an array");
  for (const k of ["site", "seenPhones", "callLog"]) {
    if (k in data) throw new MigrationError(`version-1 data already has "${k}" (a version-2 file with a wrong version number?)`);
  }
  const devices = data.devices.map((d, i) => {
    if (!isRecord(d)) throw new MigrationError(`devices[${i}] is not an object`);
    return { ...d, origin: "local" };
  });
  return { ...data, devices, site: null, seenPhones: [], callLog: [] };
}

// --- Version 2 → 3 ------------------------------------------------------------------------------
// Version 3 stores every phone's model in the one canonical form `<vendor>/<model id>` (the site
// contract's), where versions 1–2 stored the bare model id a CLI command or CSV import wrote
// ("T46U"). The layout is unchanged. A model the canonicaliser cannot resolve (a vendor folder
// since removed, a name two vendors know) is left as it was and reported: the phone keeps what
// it had, and the installer can fix it with phone remove / add. Seen phones' models are
// rewritten within their recorded vendor. Already canonical models come out unchanged.

function migrateV2toV3(data: unknown, ctx: MigrationContext): unknown {
  if (!isRecord(data)) throw new MigrationError("version-2 data is not an object");
  if (!Array.isArray(data.devices)) throw new MigrationError("version-2 data.devices is not an array");
  const canonical = ctx.canonicalModel;
  if (!canonical) {
    ctx.report?.("device models left as they were: no device profiles to resolve them with");
    return data;
  }
  const devices = data.devices.map((d, i) => {
    if (!isRecord(d)) throw new MigrationError(`devices[${i}] is not an object`);
    if (typeof d.model !== "string") return d;
    const r = canonical(d.model);
    if (r.ok) return r.ref === d.model ? d : { ...d, model: r.ref };
    ctx.report?.(`device "${String(d.id)}": model ${JSON.stringify(d.model)} left as it was: ${r.message}`);
    return d;
  });
  const out: Record<string, unknown> = { ...data, devices };
  if (Array.isArray(data.seenPhones)) {
    out.seenPhones = data.seenPhones.map((p) => {
      if (!isRecord(p) || typeof p.model !== "string") return p;
      const r = canonical(p.model, typeof p.vendor === "string" ? p.vendor : undefined);
      // A seen phone's model is the phone's own word: an unknown one stays, unreported.
      return r.ok && r.ref !== p.model ? { ...p, model: r.ref } : p;
    });
  }
  return out;
}

/** Every migration, in order. The last one's `to` is CURRENT_SCHEMA_VERSION. */
export const MIGRATIONS: readonly Migration[] = [
  { from: 0, to: 1, description: "legacy prototype format: secret → password, add kind, createdAt, bindings, routing", migrate: migrateV0toV1 },
  { from: 1, to: 2, description: "site configuration: device origin (existing devices are local), site, seenPhones, callLog", migrate: migrateV1toV2 },
  { from: 2, to: 3, description: "phone models canonical: <vendor>/<model id> (unknown or ambiguous ones left as they were, reported)", migrate: migrateV2toV3 },
];

export type MigrationResult = { ok: true; data: unknown; applied: Migration[] } | { ok: false; error: string };

/** Runs the chain from `from` to `to`. Never throws: a failing step is reported with its versions. */
export function runMigrations(data: unknown, from: number, to: number, ctx: MigrationContext, migrations: readonly Migration[] = MIGRATIONS): MigrationResult {
  if (from > to) return { ok: false, error: `cannot migrate backwards from ${from} to ${to}` };
  let version = from;
  let current = data;
  const applied: Migration[] = [];
  while (version < to) {
    const step = migrations.find((m) => m.from === version);
    if (!step) return { ok: false, error: `no migration from schemaVersion ${version}` };
    if (step.to <= step.from || step.to > to) return { ok: false, error: `migration ${step.from}→${step.to} does not lead towards ${to}` };
    try {
      current = step.migrate(current, ctx);
    } catch (e) {
      return { ok: false, error: `step ${step.from}→${step.to}: ${e instanceof Error ? e.message : String(e)}` };
    }
    applied.push(step);
    version = step.to;
  }
  return { ok: true, data: current, applied };
}
