// The agent's persistent store: devices (SIP credentials), registrar bindings, routing memory,
// the applied site configuration, phones seen by provisioning and the call log, in
// `<dataDir>/ringedge.json`, through lowdb with the AtomicJsonFile adapter.
//
// Reads are in memory (Maps indexed for the registrar's lookups). Mutations change memory at
// once and schedule a batched background write (DESIGN principle 3: the call path never waits
// on disk); flush() waits for durability. Opening refuses damaged files (StoreCorruptError),
// newer schemas (StoreVersionError) and a store another process holds (StoreLockedError).
import * as fs from "node:fs";
import { promises as fsp } from "node:fs";
import * as path from "node:path";
import { randomBytes } from "node:crypto";
import { isDeepStrictEqual } from "node:util";
import { Low } from "lowdb";
import { keepOwnerSync } from "./ownership.ts";
import { CALL_LOG_FILE, CallLog } from "./call-log.ts";
import { WriteBehind } from "./write-behind.ts";
import { AtomicJsonFile, backupPath, inspectBackup, readStoreFile, writeFileAtomic, fsyncDir, type WriteStep } from "./atomic-file.ts";
import { StoreCorruptError, StoreError, StoreLockedError, StoreMigrationError, StoreVersionError, describeBackup, type BackupInfo } from "./errors.ts";
import { MIGRATIONS, isLegacyV0, runMigrations, type Migration, type MigrationContext, type ModelCanonicaliser } from "./migrations.ts";
import { defaultProfiles, resolveModel } from "../../provisioning/profiles.ts";
import type { OperatorState } from "../routing/operator-state.ts";
import {
  CURRENT_SCHEMA_VERSION,
  MAX_CALL_LOG,
  MAX_AUTH_SOURCES_PER_DEVICE,
  MAX_SEEN_PHONES,
  checkAuthSource,
  checkBinding,
  checkCallRecord,
  checkDevice,
  checkOperatorState,
  checkSeenPhone,
  checkSiteRecord,
  emptyStoreData,
  normalizeMac,
  toBindingRecord,
  toCallRecord,
  toDeviceRecord,
  toOperatorState,
  toSeenPhone,
  validateStoreData,
  type AuthSourceRecord,
  type BindingRecord,
  type CallRecord,
  type DeviceKind,
  type DeviceOrigin,
  type DeviceRecord,
  type ProvisioningCredentials,
  type RoutingState,
  type SeenPhone,
  type SiteRecord,
  type StoreData,
  type StoreMeta,
} from "./schema.ts";

export { StoreCorruptError, StoreError, StoreLockedError, StoreMigrationError, StoreVersionError, RECOVER_COMMAND } from "./errors.ts";
export type { BackupInfo } from "./errors.ts";
export type {
  BindingFlow,
  BindingRecord,
  CallOutcome,
  CallRecord,
  DeviceKind,
  DeviceOrigin,
  DeviceRecord,
  ProvisioningCredentials,
  RoutingState,
  SeenPhone,
  SiteRecord,
  SiteSettings,
  StoreData,
  StoreMeta,
} from "./schema.ts";
export { CURRENT_SCHEMA_VERSION, MAX_AUTH_SOURCES_PER_DEVICE, MAX_CALL_LOG, MAX_SEEN_PHONES } from "./schema.ts";
export { CALL_LOG_FILE, CALL_LOG_PREVIOUS_FILE } from "./call-log.ts";
export type { AuthSourceRecord } from "./schema.ts";

/** A re-registration from a remembered address refreshes its time only after this long. */
export const AUTH_SOURCE_REFRESH_MS = 10 * 60_000;

export const STORE_FILE_NAME = "ringedge.json";

export function storeFilePath(dataDir: string): string {
  return path.join(path.resolve(dataDir), STORE_FILE_NAME);
}

export interface StoreOptions {
  /** Batching window: at most one background write per this many ms (default 50). */
  saveDelayMs?: number;
  /** Delay before retrying a failed background write (default 1000). */
  retryDelayMs?: number;
  now?: () => Date;
  /** Recorded in meta when a new store is created. */
  siteId?: string;
  /** Background write failures (the data stays in memory and is retried). */
  onError?: (err: Error) => void;
  /** For tests of the migration mechanism. */
  migrations?: readonly Migration[];
  /** Resolves phone models for the 2→3 migration (default: the shipped device profiles). */
  canonicalModel?: ModelCanonicaliser;
  /** Test hook, see AtomicJsonFile. */
  onWriteStep?: (step: WriteStep) => void;
}

export interface NewDevice {
  /** Omitted: "dev-<username>" (or a random id if that is taken). */
  id?: string;
  username: string;
  password: string;
  kind: DeviceKind;
  displayName?: string;
  owner?: string;
  /** Any common notation; stored as 12 lower-case hex digits. */
  mac?: string;
  model?: string;
  /** Default "local" (an installer's command); site applies create "site" devices. */
  origin?: DeviceOrigin;
  /** Default: generated when the device has a MAC (it will fetch a configuration). */
  provisioning?: ProvisioningCredentials;
}

/** A device of a site snapshot: the id is required; without a password the existing one is kept
 *  (or, for a new device, one is generated). */
export type SiteDeviceInput = Omit<NewDevice, "id" | "password" | "origin"> & { id: string; password?: string };

/** What Store.applySite changed, by device id. */
export interface SiteDeviceChanges {
  added: string[];
  updated: string[];
  removed: string[];
  unchanged: string[];
}

/** What the provisioning server reports about a phone that asked for its configuration. */
export interface SeenPhoneInput {
  /** Any common notation. */
  mac: string;
  ip: string;
  vendor?: string;
  model?: string;
  firmware?: string;
  userAgent?: string;
}

export type DevicePatch = Partial<Omit<DeviceRecord, "id" | "createdAt">>;

export interface StoreInputError {
  code: "invalid" | "duplicate" | "not-found";
  /** The offending field, when there is one. */
  field?: string;
  message: string;
}

export type StoreResult<T> = { ok: true; value: T } | { ok: false; error: StoreInputError };

const fail = <T>(code: StoreInputError["code"], message: string, field?: string): StoreResult<T> => ({
  ok: false,
  error: field === undefined ? { code, message } : { code, message, field },
});

// ---------------------------------------------------------------------------------------------
// Locking: one writer per store file. `<file>.lock` holds {pid, bootId}; a lock whose process is
// gone, or that was taken before the last reboot (pids are reused), is stale and taken over.

/** Store files held open by Store instances in this process. */
const openInThisProcess = new Set<string>();

function bootId(): string {
  try {
    return fs.readFileSync("/proc/sys/kernel/random/boot_id", "utf8").trim();
  } catch {
    return "";
  }
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as { code?: string }).code === "EPERM"; // exists, owned by someone else
  }
}

function acquireLock(file: string): () => void {
  const lock = `${file}.lock`;
  const me = JSON.stringify({ pid: process.pid, bootId: bootId(), since: new Date().toISOString() });
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      const fd = fs.openSync(lock, "wx", 0o600);
      try {
        // Readable by an unprivileged agent, which would otherwise take it for a stale lock.
        keepOwnerSync(fd, path.dirname(lock));
        fs.writeFileSync(fd, me);
      } finally {
        fs.closeSync(fd);
      }
      openInThisProcess.add(file);
      return () => {
        openInThisProcess.delete(file);
        fs.rmSync(lock, { force: true });
      };
    } catch (e) {
      if ((e as { code?: string }).code !== "EEXIST") throw new StoreError(`cannot create lock ${lock}: ${(e as Error).message}`, file);
    }
    let holder: { pid?: unknown; bootId?: unknown } = {};
    try {
      holder = JSON.parse(fs.readFileSync(lock, "utf8")) as typeof holder;
    } catch {
      holder = {}; // unreadable or half-written lock: treat as stale
    }
    const pid = typeof holder.pid === "number" ? holder.pid : -1;
    const sameBoot = holder.bootId === bootId();
    const held = pid > 0 && sameBoot && (pid === process.pid ? openInThisProcess.has(file) : processAlive(pid));
    if (held) throw new StoreLockedError(file, pid);
    fs.rmSync(lock, { force: true });
  }
  throw new StoreError(`cannot take lock ${file}.lock (it keeps reappearing)`, file);
}

/** The 2→3 migration's default: phone models resolved by the shipped device profiles. */
const profileModels: ModelCanonicaliser = (model, vendor) => {
  const r = resolveModel(defaultProfiles(), model, vendor);
  return r.ok ? { ok: true, ref: r.ref } : { ok: false, message: r.message };
};

// ---------------------------------------------------------------------------------------------
// Loading: classify the file and bring its data to the current schema (in memory only).

type Loaded =
  | { kind: "missing" }
  | { kind: "ok"; data: StoreData; fromVersion: number; savedAt: string | null };

async function loadFile(file: string, dataDir: string, now: Date, migrations: readonly Migration[], ctx: Omit<MigrationContext, "now">): Promise<Loaded> {
  const reading = await readStoreFile(file);
  const corrupt = async (reason: string): Promise<never> => {
    throw new StoreCorruptError(file, reason, await inspectBackup(file), dataDir);
  };
  let version: number;
  let raw: unknown;
  let savedAt: string | null = null;
  switch (reading.kind) {
    case "missing": {
      // A last good copy without the main file is not a fresh install: never start empty then.
      const bak = await readStoreFile(backupPath(file));
      if (bak.kind !== "missing") return corrupt("the file is missing but a last good copy exists next to it");
      return { kind: "missing" };
    }
    case "unreadable":
      throw new StoreError(`Store file ${file} cannot be read: ${reading.reason}. The agent refuses to start with empty data.`, file);
    case "corrupt":
      return corrupt(reading.reason);
    case "bare":
      if (!isLegacyV0(reading.value)) return corrupt('no "ringedge-store" envelope (not a ringedge store file, or damaged)');
      version = 0;
      raw = reading.value;
      break;
    case "envelope":
      version = reading.envelope.schemaVersion;
      raw = reading.envelope.data;
      savedAt = reading.envelope.savedAt;
      break;
  }
  if (version > CURRENT_SCHEMA_VERSION) throw new StoreVersionError(file, version, CURRENT_SCHEMA_VERSION);
  if (version < CURRENT_SCHEMA_VERSION) {
    const m = runMigrations(raw, version, CURRENT_SCHEMA_VERSION, { now, ...ctx }, migrations);
    if (!m.ok) throw new StoreMigrationError(file, version, CURRENT_SCHEMA_VERSION, m.error);
    raw = m.data;
  }
  const v = validateStoreData(raw);
  if (!v.ok) {
    if (version < CURRENT_SCHEMA_VERSION) throw new StoreMigrationError(file, version, CURRENT_SCHEMA_VERSION, `result does not match the schema: ${v.error}`);
    return corrupt(`the data does not match schema version ${version}: ${v.error}`);
  }
  return { kind: "ok", data: v.data, fromVersion: version, savedAt };
}

function fileStamp(d: Date): string {
  return d.toISOString().replace(/[:.]/g, "-");
}

/** Keeps the pre-migration file as `<file>.v<old>.bak` (or a stamped name if that is taken by
 *  different content), durably, before the migrated data replaces it. */
async function keepPreMigrationCopy(file: string, fromVersion: number, now: Date): Promise<string> {
  const bytes = await fsp.readFile(file);
  let target = `${file}.v${fromVersion}.bak`;
  const existing = await fsp.readFile(target).catch(() => null);
  if (existing !== null && existing.equals(bytes)) return target;
  if (existing !== null) target = `${file}.v${fromVersion}-${fileStamp(now)}.bak`;
  await writeFileAtomic(target, bytes);
  return target;
}

async function removeStaleTemps(file: string): Promise<void> {
  // Called with the lock held: no other writer exists, so every temp file is a crash leftover.
  const dir = path.dirname(file);
  const base = path.basename(file);
  const names = await fsp.readdir(dir).catch(() => [] as string[]);
  for (const n of names) {
    // <file>.tmp-*, <file>.bak.tmp-*, <file>.v0.bak.tmp-*-w, ...
    if (n.startsWith(`${base}.`) && n.includes(".tmp-")) await fsp.rm(path.join(dir, n), { force: true });
  }
}

// ---------------------------------------------------------------------------------------------

export class Store {
  readonly file: string;
  readonly dataDir: string;
  /** Schema version the file had when opened (0 for the legacy prototype format). */
  readonly openedFromVersion: number;
  /** Where the pre-migration file was kept, if this open migrated it. */
  readonly migrationBackup: string | null;
  /** What this open's migration left as it was, for the operator (e.g. an unknown phone model). */
  readonly migrationNotes: readonly string[];
  /** The call log (`calls.jsonl`, append-only): a finished call is one small append. */
  private readonly callLog: CallLog;
  private readonly db: Low<StoreData>;
  private readonly adapter: AtomicJsonFile<StoreData>;
  private readonly releaseLock: () => void;
  private readonly saveDelayMs: number;
  private readonly retryDelayMs: number;
  private readonly onError: (err: Error) => void;
  /** Told how long each write took (metrics); set by the agent. */
  onSaved: ((ms: number, ok: boolean) => void) | undefined;
  /** Devices keyed by id. */
  private readonly byId = new Map<string, DeviceRecord>();
  /** Devices keyed by SIP username (the registrar's lookup). */
  private readonly byUsername = new Map<string, DeviceRecord>();
  /** Devices keyed by normalised MAC (provisioning's lookup). */
  private readonly byMac = new Map<string, DeviceRecord>();
  /** Bindings keyed by AOR; authoritative, copied into db.data.bindings before each write. */
  private readonly bindingsByAor = new Map<string, BindingRecord[]>();
  private dirty = false;
  private bindingsChanged = false;
  /** The save in progress (at most one at a time). */
  /** When the data file is written (one write at a time, after saveDelayMs). */
  private readonly writes: WriteBehind;
  private readonly clock: () => Date;
  private lastSaveError: Error | null = null;
  private closed = false;

  private constructor(args: {
    file: string;
    dataDir: string;
    db: Low<StoreData>;
    adapter: AtomicJsonFile<StoreData>;
    releaseLock: () => void;
    openedFromVersion: number;
    migrationBackup: string | null;
    migrationNotes: readonly string[];
    callLog: CallLog;
    opts: StoreOptions;
  }) {
    this.file = args.file;
    this.dataDir = args.dataDir;
    this.db = args.db;
    this.adapter = args.adapter;
    this.releaseLock = args.releaseLock;
    this.openedFromVersion = args.openedFromVersion;
    this.migrationBackup = args.migrationBackup;
    this.migrationNotes = args.migrationNotes;
    this.callLog = args.callLog;
    this.clock = args.opts.now ?? (() => new Date());
    this.saveDelayMs = args.opts.saveDelayMs ?? 50;
    this.writes = new WriteBehind({ delayMs: this.saveDelayMs, write: (rethrow) => this.saveNow(rethrow), pending: () => this.dirty, lastError: () => this.lastSaveError, closed: () => this.closed });
    this.retryDelayMs = args.opts.retryDelayMs ?? 1000;
    this.onError = args.opts.onError ?? ((e) => process.emitWarning(`ringedge store: background save failed: ${e.message}`));
    for (const d of this.db.data.devices) this.index(d);
    for (const b of this.db.data.bindings) {
      const list = this.bindingsByAor.get(b.aor);
      if (list) list.push(b);
      else this.bindingsByAor.set(b.aor, [b]);
    }
  }

  /**
   * Opens (or creates) `<dataDir>/ringedge.json`. Creates dataDir if needed. Throws
   * StoreCorruptError / StoreVersionError / StoreMigrationError / StoreLockedError / StoreError;
   * never falls back to empty data when a file exists.
   */
  static async open(dataDir: string, opts: StoreOptions = {}): Promise<Store> {
    const dir = path.resolve(dataDir);
    const now = opts.now ?? (() => new Date());
    const created = await fsp.mkdir(dir, { recursive: true, mode: 0o700 });
    // A new directory's own entry must be durable too, or a power cut can lose the whole store.
    if (created !== undefined) await fsyncDir(path.dirname(created));
    const file = storeFilePath(dir);
    const releaseLock = acquireLock(file);
    try {
      await removeStaleTemps(file);
      const adapter = new AtomicJsonFile<StoreData>(file, { schemaVersion: CURRENT_SCHEMA_VERSION, now, stringify: storeDataStringifier(), ...(opts.onWriteStep ? { onStep: opts.onWriteStep } : {}) });
      const migrationNotes: string[] = [];
      const loaded = await loadFile(file, dir, now(), opts.migrations ?? MIGRATIONS, { canonicalModel: opts.canonicalModel ?? profileModels, report: (m) => migrationNotes.push(m) });
      let data: StoreData;
      let fromVersion = CURRENT_SCHEMA_VERSION;
      let migrationBackup: string | null = null;
      if (loaded.kind === "missing") {
        data = emptyStoreData(now(), opts.siteId);
        await adapter.write(data);
      } else {
        data = loaded.data;
        fromVersion = loaded.fromVersion;
        if (fromVersion < CURRENT_SCHEMA_VERSION) {
          migrationBackup = await keepPreMigrationCopy(file, fromVersion, now());
          await adapter.write(data);
        } else {
          // It holds SIP passwords: tighten a file someone copied in with a looser mode.
          const st = await fsp.stat(file);
          if ((st.mode & 0o077) !== 0) await fsp.chmod(file, 0o600);
        }
      }
      // The call log lives in its own append-only file; calls still in the store file (written
      // before that file existed) move there first, durably, and only then leave the store.
      const callLog = await CallLog.open(
        dir,
        {
          maxRecords: MAX_CALL_LOG,
          writeDelayMs: opts.saveDelayMs ?? 50,
          retryDelayMs: opts.retryDelayMs ?? 1000,
          onError: (err) => (opts.onError ?? ((e: Error) => process.emitWarning(`ringedge call log: background write failed: ${e.message}`)))(err),
        },
        data.callLog,
      ).catch((e: unknown) => {
        throw new StoreError(`Call log ${path.join(dir, CALL_LOG_FILE)} cannot be opened: ${e instanceof Error ? e.message : String(e)}. Move it aside to start with an empty call log.`, file);
      });
      if (data.callLog.length > 0) {
        data.callLog = [];
        try {
          await adapter.write(data);
        } catch (e) {
          await callLog.close().catch(() => {});
          throw e;
        }
      }
      const db = new Low<StoreData>(adapter, data);
      return new Store({ file, dataDir: dir, db, adapter, releaseLock, openedFromVersion: fromVersion, migrationBackup, migrationNotes: loaded.kind === "ok" && fromVersion < CURRENT_SCHEMA_VERSION ? migrationNotes : [], callLog, opts });
    } catch (e) {
      releaseLock();
      throw e;
    }
  }

  /**
   * `ringedge store recover`: promotes `<file>.bak` to `<file>`, keeping the damaged file as
   * `<file>.corrupt-<time>`. Refuses while the store is open elsewhere, when there is no usable
   * copy, or (unless force) when the current file is healthy.
   */
  static async recover(dataDir: string, opts: { force?: boolean; now?: () => Date } = {}): Promise<RecoverResult> {
    const dir = path.resolve(dataDir);
    const file = storeFilePath(dir);
    const now = opts.now ?? (() => new Date());
    const releaseLock = acquireLock(file);
    try {
      const bak = await readStoreFile(backupPath(file));
      const info = await inspectBackup(file);
      if (bak.kind !== "envelope") throw new StoreError(`Cannot recover ${file}: ${describeBackup(info)}`, file);
      const version = bak.envelope.schemaVersion;
      if (version > CURRENT_SCHEMA_VERSION) throw new StoreVersionError(backupPath(file), version, CURRENT_SCHEMA_VERSION);
      if (version === CURRENT_SCHEMA_VERSION) {
        const v = validateStoreData(bak.envelope.data);
        if (!v.ok) throw new StoreError(`Cannot recover ${file}: ${backupPath(file)} does not match the schema (${v.error})`, file);
      }
      const main = await readStoreFile(file);
      const healthy = main.kind === "envelope" || (main.kind === "bare" && isLegacyV0(main.value));
      if (healthy && !opts.force) {
        throw new StoreError(`${file} is not damaged; refusing to replace it with the older copy ${backupPath(file)} (saved ${bak.envelope.savedAt}). Use force to do it anyway.`, file);
      }
      let keptAs: string | null = null;
      if (main.kind !== "missing") {
        keptAs = `${file}.corrupt-${fileStamp(now())}`;
        await fsp.rename(file, keptAs);
        await fsyncDir(dir);
      }
      // Copy, not rename: .bak stays a good copy until the next successful write rotates it.
      await writeFileAtomic(file, await fsp.readFile(backupPath(file)));
      return { restoredFrom: backupPath(file), savedAt: bak.envelope.savedAt, schemaVersion: version, corruptKeptAs: keptAs };
    } finally {
      releaseLock();
    }
  }

  /** Same as the module-level inspect(): read-only health of the store file. */
  static inspect(dataDir: string): Promise<StoreInspection> {
    return inspect(dataDir);
  }

  // --- devices ---------------------------------------------------------------------------------

  listDevices(): readonly Readonly<DeviceRecord>[] {
    return this.db.data.devices;
  }

  getDevice(id: string): Readonly<DeviceRecord> | undefined {
    return this.byId.get(id);
  }

  findDeviceByUsername(username: string): Readonly<DeviceRecord> | undefined {
    return this.byUsername.get(username);
  }

  findDeviceByMac(mac: string): Readonly<DeviceRecord> | undefined {
    const m = normalizeMac(mac);
    return m === null ? undefined : this.byMac.get(m);
  }

  /** Adds a device; ids, usernames and MACs are unique. Bad input changes nothing. */
  addDevice(input: NewDevice): StoreResult<Readonly<DeviceRecord>> {
    this.assertOpen();
    if (typeof input !== "object" || input === null) return fail("invalid", "device must be an object");
    const withId: NewDevice = { origin: "local", ...input, id: input.id ?? this.freshId(input.username) };
    // A desk phone will fetch its configuration: give it provisioning credentials now.
    if (withId.mac !== undefined && withId.mac !== null && withId.provisioning === undefined) withId.provisioning = newProvisioningCredentials();
    const built = this.buildDevice(withId, this.now().toISOString());
    if (!built.ok) return built;
    const dev = built.value;
    if (this.byId.has(dev.id)) return fail("duplicate", `a device with id "${dev.id}" already exists`, "id");
    const clash = this.clash(dev, undefined);
    if (clash) return clash;
    this.db.data.devices.push(dev);
    this.index(dev);
    this.changed();
    return { ok: true, value: dev };
  }

  /** Changes fields of a device. A new username drops its bindings (its AOR changed). */
  updateDevice(id: string, patch: DevicePatch): StoreResult<Readonly<DeviceRecord>> {
    this.assertOpen();
    const old = this.byId.get(id);
    if (!old) return fail("not-found", `no device with id "${id}"`, "id");
    if (typeof patch !== "object" || patch === null) return fail("invalid", "patch must be an object");
    const merged: NewDevice = { ...old };
    for (const [k, v] of Object.entries(patch)) {
      if (k === "id" || k === "createdAt") return fail("invalid", `${k} cannot be changed`, k);
      if (v !== undefined) (merged as unknown as Record<string, unknown>)[k] = v;
    }
    if (merged.mac !== undefined && merged.mac !== null && merged.provisioning === undefined) merged.provisioning = newProvisioningCredentials();
    const built = this.buildDevice(merged, old.createdAt);
    if (!built.ok) return built;
    const dev = built.value;
    const clash = this.clash(dev, old);
    if (clash) return clash;
    this.replaceRecord(old, dev);
    if (dev.username !== old.username) this.removeBindingsOfDevice(id);
    this.changed();
    return { ok: true, value: dev };
  }

  /** Removes a device and its bindings. False if there was none. */
  removeDevice(id: string): boolean {
    this.assertOpen();
    const dev = this.byId.get(id);
    if (!dev) return false;
    this.unindex(dev);
    this.db.data.devices = this.db.data.devices.filter((d) => d !== dev);
    this.removeBindingsOfDevice(id);
    if (this.db.data.authSources !== undefined) this.db.data.authSources = this.db.data.authSources.filter((a) => a.deviceId !== id);
    this.changed();
    return true;
  }

  /**
   * The device's provisioning credentials, created (crypto-random) and saved if it has none yet:
   * devices migrated from schema version 1, or soft clients that now fetch a configuration.
   */
  ensureProvisioningCredentials(deviceId: string): StoreResult<Readonly<ProvisioningCredentials>> {
    this.assertOpen();
    const old = this.byId.get(deviceId);
    if (!old) return fail("not-found", `no device with id "${deviceId}"`, "id");
    if (old.provisioning) return { ok: true, value: old.provisioning };
    const dev: DeviceRecord = { ...old, provisioning: newProvisioningCredentials() };
    this.replaceRecord(old, dev);
    this.changed();
    return { ok: true, value: dev.provisioning! };
  }

  /**
   * A new SIP password and new provisioning credentials (user, password, URL token) for a phone,
   * with the first-boot `trust` state given (bootstrap window, claim, conflict): what `phone
   * rebootstrap` and a claim conflict do, so that whatever a client took before is worthless.
   */
  rotateCredentials(deviceId: string, trust: Omit<ProvisioningCredentials, "user" | "password" | "token">): StoreResult<Readonly<DeviceRecord>> {
    this.assertOpen();
    const old = this.byId.get(deviceId);
    if (!old) return fail("not-found", `no device with id "${deviceId}"`, "id");
    if (old.mac === undefined) return fail("invalid", `device "${deviceId}" has no MAC: it fetches no configuration`, "mac");
    return this.updateDevice(deviceId, { password: generateSipPassword(), provisioning: { ...newProvisioningCredentials(), ...trust } });
  }

  // --- site configuration ----------------------------------------------------------------------

  /** The applied site configuration, or null before the first apply. */
  get site(): Readonly<SiteRecord> | null {
    return this.db.data.site;
  }

  /**
   * Makes a site snapshot the current one, all or nothing: replaces the site record, upserts the
   * snapshot's devices as origin "site" (keeping an existing device's password, creation time and
   * provisioning credentials unless the snapshot changes them), removes site devices the snapshot
   * no longer lists (with their bindings), and never touches local devices. Checks everything in
   * memory first; on any problem nothing changes. One save follows (flush() to wait for it).
   * A null record (with no devices) removes the site: the state before the first apply.
   */
  applySite(record: SiteRecord | null, devices: readonly SiteDeviceInput[]): StoreResult<SiteDeviceChanges> {
    this.assertOpen();
    let checked: { ok: true; value: SiteRecord | null } | { ok: false; error: string } = { ok: true, value: null };
    if (record !== null) checked = checkSiteRecord(record, "site");
    if (!checked.ok) return fail("invalid", checked.error);
    if (!Array.isArray(devices)) return fail("invalid", "devices must be an array");
    if (record === null && devices.length > 0) return fail("invalid", "devices need a site record");
    const now = this.now().toISOString();
    const local = this.db.data.devices.filter((d) => d.origin !== "site");
    const localIds = new Set(local.map((d) => d.id));
    /** Site devices before this apply, keyed by id. */
    const before = new Map(this.db.data.devices.filter((d) => d.origin === "site").map((d) => [d.id, d]));
    const next: DeviceRecord[] = [];
    // Keyed by id / username / MAC: the device (index in `devices`, or a local device) holding it.
    const ids = new Set<string>();
    const usernames = new Map<string, string>(local.map((d) => [d.username, `local device "${d.id}"`]));
    const macs = new Map<string, string>(local.flatMap((d) => (d.mac ? [[d.mac, `local device "${d.id}"`] as [string, string]] : [])));
    /** Takes the device's username and MAC for the entry at `at`; the failure when another holds one. */
    const claim = (dev: DeviceRecord, at: string): StoreResult<SiteDeviceChanges> | undefined => {
      const userHolder = usernames.get(dev.username);
      if (userHolder) return fail("duplicate", `${at}.username "${dev.username}" is already used by ${userHolder}`, "username");
      usernames.set(dev.username, at);
      if (dev.mac === undefined) return undefined;
      const macHolder = macs.get(dev.mac);
      if (macHolder) return fail("duplicate", `${at}.mac ${dev.mac} is already used by ${macHolder}`, "mac");
      macs.set(dev.mac, at);
      return undefined;
    };
    const changes: SiteDeviceChanges = { added: [], updated: [], removed: [], unchanged: [] };
    for (const [i, input] of devices.entries()) {
      const at = `devices[${i}]`;
      if (typeof input !== "object" || input === null || typeof input.id !== "string") return fail("invalid", `${at}.id must be a string`, "id");
      if (localIds.has(input.id)) return fail("duplicate", `${at}.id "${input.id}" is the id of a local device`, "id");
      if (ids.has(input.id)) return fail("duplicate", `${at}.id "${input.id}" is listed twice`, "id");
      ids.add(input.id);
      const old = before.get(input.id);
      // A device the snapshot repeats as it is stored (most of them on every push) is kept as
      // it is: rebuilding and re-checking it would give an equal record (see keepsSiteDevice).
      const kept = old !== undefined && keepsSiteDevice(old, input) ? old : undefined;
      if (kept !== undefined) {
        const taken = claim(kept, at);
        if (taken) return taken;
        next.push(kept);
        changes.unchanged.push(kept.id);
        continue;
      }
      const mac = input.mac === undefined || input.mac === null ? undefined : normalizeMac(input.mac);
      const candidate: NewDevice = {
        id: input.id,
        username: input.username,
        password: input.password ?? old?.password ?? generateSipPassword(),
        kind: input.kind,
        origin: "site",
      };
      if (input.displayName !== undefined) candidate.displayName = input.displayName;
      if (input.owner !== undefined) candidate.owner = input.owner;
      if (input.mac !== undefined && input.mac !== null) candidate.mac = input.mac;
      if (input.model !== undefined) candidate.model = input.model;
      // Credentials a phone already holds stay valid across applies (also for a replacement
      // phone in the same slot); a device without a MAC fetches no configuration.
      if (mac !== undefined && mac !== null) candidate.provisioning = input.provisioning ?? old?.provisioning ?? newProvisioningCredentials();
      const built = this.buildDevice(candidate, old?.createdAt ?? now);
      if (!built.ok) return fail(built.error.code, `${at}: ${built.error.message}`, built.error.field);
      const dev = built.value;
      const taken = claim(dev, at);
      if (taken) return taken;
      next.push(dev);
      if (!old) changes.added.push(dev.id);
      else if (sameDevice(old, dev)) changes.unchanged.push(dev.id);
      else changes.updated.push(dev.id);
    }
    for (const id of before.keys()) if (!ids.has(id)) changes.removed.push(id);

    // Everything checked: commit in memory (nothing below can fail).
    const dropBindingsOf = new Set<string>(changes.removed);
    for (const dev of next) {
      const old = before.get(dev.id);
      if (old && old.username !== dev.username) dropBindingsOf.add(dev.id);
    }
    this.db.data.devices = [...local, ...next];
    this.byId.clear();
    this.byUsername.clear();
    this.byMac.clear();
    for (const d of this.db.data.devices) this.index(d);
    for (const id of dropBindingsOf) this.removeBindingsOfDevice(id);
    this.db.data.site = checked.value;
    // "evenly" memory of groups the snapshot no longer has is meaningless now.
    const groupIds = new Set(checked.value?.groups.map((g) => g.id) ?? []);
    for (const g of Object.keys(this.db.data.routing.evenlyLastOffered)) if (!groupIds.has(g)) delete this.db.data.routing.evenlyLastOffered[g];
    this.changed();
    return { ok: true, value: changes };
  }

  // --- phones seen by the provisioning server ---------------------------------------------------

  /** Records a configuration request from a phone (upsert by MAC). At most MAX_SEEN_PHONES are
   *  kept: a new phone beyond that evicts the one seen longest ago. */
  noteSeenPhone(p: SeenPhoneInput): StoreResult<Readonly<SeenPhone>> {
    this.assertOpen();
    if (typeof p !== "object" || p === null) return fail("invalid", "phone must be an object");
    const mac = normalizeMac(p.mac);
    if (mac === null) return fail("invalid", `mac ${JSON.stringify(String(p.mac)).slice(0, 40)} is not a MAC address`, "mac");
    const now = this.now().toISOString();
    const list = this.db.data.seenPhones;
    const i = list.findIndex((x) => x.mac === mac);
    const old = i >= 0 ? list[i] : undefined;
    const next: SeenPhone = { mac, ip: p.ip, firstSeen: old?.firstSeen ?? now, lastSeen: now, requests: (old?.requests ?? 0) + 1 };
    // A request that omits a clue (no User-Agent this time) keeps what an earlier one told.
    for (const k of ["vendor", "model", "firmware", "userAgent"] as const) {
      const v = p[k] ?? old?.[k];
      if (v !== undefined) next[k] = v;
    }
    const reason = checkSeenPhone(next, "phone");
    if (reason) return fail("invalid", reason, reason.split(" ")[0]?.split(".")[1]);
    if (old) list[i] = next;
    else {
      if (list.length >= MAX_SEEN_PHONES) {
        let oldest = 0;
        for (let k = 1; k < list.length; k++) if (list[k]!.lastSeen < list[oldest]!.lastSeen) oldest = k;
        list.splice(oldest, 1);
      }
      list.push(next);
    }
    this.changed();
    return { ok: true, value: next };
  }

  /** Phones seen by provisioning, the most recently seen first. */
  listSeenPhones(): Readonly<SeenPhone>[] {
    return [...this.db.data.seenPhones].sort((a, b) => (a.lastSeen < b.lastSeen ? 1 : a.lastSeen > b.lastSeen ? -1 : 0));
  }

  /** Forgets a seen phone (any MAC notation). False if it was not there. */
  removeSeenPhone(mac: string): boolean {
    this.assertOpen();
    const m = normalizeMac(mac);
    if (m === null) return false;
    const before = this.db.data.seenPhones.length;
    this.db.data.seenPhones = this.db.data.seenPhones.filter((p) => p.mac !== m);
    if (this.db.data.seenPhones.length === before) return false;
    this.changed();
    return true;
  }

  // --- where devices authenticated from (auth guard memory, issue 11) -------------------------

  /** Every remembered (device, address, transport), newest first per device. */
  listAuthSources(): readonly Readonly<AuthSourceRecord>[] {
    return this.db.data.authSources ?? [];
  }

  /**
   * Records that the device authenticated from the address over the transport at `atMs`. Keeps
   * the newest MAX_AUTH_SOURCES_PER_DEVICE per device. A phone re-registering from the same
   * address within AUTH_SOURCE_REFRESH_MS changes nothing (no save per REGISTER refresh).
   */
  noteAuthSource(deviceId: string, address: string, transport: "udp" | "tcp", atMs: number): StoreResult<boolean> {
    this.assertOpen();
    const rec: AuthSourceRecord = { deviceId, address, transport, at: Math.floor(atMs) };
    const reason = checkAuthSource(rec, "authSource");
    if (reason) return fail("invalid", reason, reason.split(" ")[0]?.split(".")[1]);
    if (!this.byId.has(deviceId)) return fail("not-found", `no device with id "${deviceId}"`, "deviceId");
    const list = this.db.data.authSources ?? [];
    const mine = list.filter((a) => a.deviceId === deviceId);
    const same = mine.find((a) => a.address === address && a.transport === transport);
    if (same !== undefined && rec.at >= same.at && rec.at - same.at < AUTH_SOURCE_REFRESH_MS) return { ok: true, value: false };
    const kept = [rec, ...mine.filter((a) => a !== same)].slice(0, MAX_AUTH_SOURCES_PER_DEVICE);
    this.db.data.authSources = [...list.filter((a) => a.deviceId !== deviceId), ...kept];
    this.changed();
    return { ok: true, value: true };
  }

  // --- operators' own state (routing/operator-state.ts) ---------------------------------------

  /** Every operator's stored state (empty before the first site or feature code). */
  listOperatorStates(): readonly Readonly<OperatorState>[] {
    return this.db.data.operators ?? [];
  }

  /** Replaces the operators' state as a whole (checked first; on a problem nothing changes). Saved in the background. */
  setOperatorStates(states: readonly OperatorState[]): StoreResult<number> {
    this.assertOpen();
    const seen = new Set<string>();
    for (const [i, s] of states.entries()) {
      const reason = checkOperatorState(s, `operators[${i}]`);
      if (reason) return fail("invalid", reason);
      if (seen.has(s.userId)) return fail("duplicate", `operators[${i}].userId "${s.userId}" is listed twice`, "userId");
      seen.add(s.userId);
    }
    this.db.data.operators = states.map(toOperatorState);
    this.changed();
    return { ok: true, value: states.length };
  }

  // --- call log --------------------------------------------------------------------------------

  /**
   * Appends a finished call to the call log (`calls.jsonl`): one line, written within the save
   * window without touching the store file; the last MAX_CALL_LOG calls stay listable.
   */
  appendCall(r: CallRecord): StoreResult<Readonly<CallRecord>> {
    this.assertOpen();
    const reason = checkCallRecord(r, "call");
    if (reason) return fail("invalid", reason, reason.split(" ")[0]?.split(".")[1]);
    const rec = toCallRecord(r);
    this.callLog.append(rec);
    return { ok: true, value: rec };
  }

  /** What opening the call log found and did (skipped lines, a cut-off line, moved calls). */
  get callLogNotes(): readonly string[] {
    return this.callLog.notes;
  }

  /** The most recent calls first, at most `limit` (default 100), optionally of one group. */
  listCalls(opts: { limit?: number; groupId?: string } = {}): Readonly<CallRecord>[] {
    const limit = Number.isInteger(opts.limit) && (opts.limit as number) >= 0 ? (opts.limit as number) : 100;
    return this.callLog.list(limit, opts.groupId);
  }

  // --- bindings --------------------------------------------------------------------------------

  listBindings(): readonly Readonly<BindingRecord>[] {
    return [...this.bindingsByAor.values()].flat();
  }

  bindingsFor(aor: string): readonly Readonly<BindingRecord>[] {
    return this.bindingsByAor.get(aor) ?? [];
  }

  /** Replaces every binding of an AOR (RFC 3261 §10.3: the registrar's view after a REGISTER);
   *  an empty list removes the AOR. Process-local fields (a TCP connectionId) are not kept. */
  replaceBindings(aor: string, bindings: readonly BindingRecord[]): StoreResult<number> {
    this.assertOpen();
    if (!Array.isArray(bindings)) return fail("invalid", "bindings must be an array");
    const records: BindingRecord[] = [];
    for (const [i, b] of bindings.entries()) {
      const reason = checkBinding(b, `bindings[${i}]`);
      if (reason) return fail("invalid", reason);
      if (b.aor !== aor) return fail("invalid", `bindings[${i}].aor "${b.aor}" differs from "${aor}"`, "aor");
      if (!this.byId.has(b.deviceId)) return fail("not-found", `bindings[${i}].deviceId "${b.deviceId}" names no device`, "deviceId");
      records.push(toBindingRecord(b));
    }
    if (records.length === 0) this.bindingsByAor.delete(aor);
    else this.bindingsByAor.set(aor, records);
    this.bindingsChanged = true;
    this.changed();
    return { ok: true, value: records.length };
  }

  /** Alias of replaceBindings (the name the location service's write-behind uses). */
  setBindings(aor: string, bindings: readonly BindingRecord[]): StoreResult<number> {
    return this.replaceBindings(aor, bindings);
  }

  /** Removes one contact of an AOR. False if it was not bound. */
  removeBinding(aor: string, contact: string): boolean {
    this.assertOpen();
    const list = this.bindingsByAor.get(aor);
    if (!list) return false;
    const rest = list.filter((b) => b.contact !== contact);
    if (rest.length === list.length) return false;
    if (rest.length === 0) this.bindingsByAor.delete(aor);
    else this.bindingsByAor.set(aor, rest);
    this.bindingsChanged = true;
    this.changed();
    return true;
  }

  /** Removes every binding of a device; returns how many. */
  removeBindingsOfDevice(deviceId: string): number {
    this.assertOpen();
    return this.keepBindings((b) => b.deviceId !== deviceId);
  }

  /** Drops bindings with expiresAt <= nowMs; returns how many. */
  purgeExpiredBindings(nowMs: number = this.now().getTime()): number {
    this.assertOpen();
    return this.keepBindings((b) => b.expiresAt > nowMs);
  }

  /** Keeps the bindings `keep` accepts, across every AOR; returns how many were dropped. */
  private keepBindings(keep: (b: BindingRecord) => boolean): number {
    let n = 0;
    for (const [aor, list] of this.bindingsByAor) {
      const rest = list.filter(keep);
      n += list.length - rest.length;
      if (rest.length === 0) this.bindingsByAor.delete(aor);
      else if (rest.length !== list.length) this.bindingsByAor.set(aor, rest);
    }
    if (n > 0) {
      this.bindingsChanged = true;
      this.changed();
    }
    return n;
  }

  // --- routing memory and meta -----------------------------------------------------------------

  get routing(): Readonly<RoutingState> {
    return this.db.data.routing;
  }

  /** "evenly" strategy: member id → epoch ms of its last offer, for one group. */
  evenlyLastOffered(groupId: string): Readonly<Record<string, number>> {
    return this.db.data.routing.evenlyLastOffered[groupId] ?? {};
  }

  /** Records that a member was offered a call (answered or not) at `atMs`. */
  recordEvenlyOffer(groupId: string, memberId: string, atMs: number): void {
    this.assertOpen();
    if (!Number.isFinite(atMs)) return;
    const all = this.db.data.routing.evenlyLastOffered;
    // Null-prototype maps: ids come from the console and may be any string, "__proto__" included.
    let group = all[groupId];
    if (group === undefined) {
      group = Object.create(null) as Record<string, number>;
      all[groupId] = group;
    }
    group[memberId] = atMs;
    this.changed();
  }

  /** Forgets a group's memory (group deleted), or only some members (members removed). */
  forgetEvenly(groupId: string, memberIds?: readonly string[]): void {
    this.assertOpen();
    const all = this.db.data.routing.evenlyLastOffered;
    const group = all[groupId];
    if (group === undefined) return;
    if (memberIds === undefined) delete all[groupId];
    else for (const m of memberIds) delete group[m];
    this.changed();
  }

  get meta(): Readonly<StoreMeta> {
    return this.db.data.meta;
  }

  setSiteId(siteId: string): void {
    this.assertOpen();
    this.db.data.meta.siteId = siteId;
    this.changed();
  }

  // --- persistence -----------------------------------------------------------------------------

  /** Number of completed file writes since open (the initial/migration write included). */
  get writeCount(): number {
    return this.adapter.writes;
  }

  /** True while a change is not yet on disk (scheduled, being written, or a failed write). */
  hasPendingWrites(): boolean {
    return this.writes.hasPendingWrites() || this.callLog.hasPendingWrites();
  }

  /** Marks the data changed; a write follows within saveDelayMs. Never waits, never throws. */
  scheduleSave(): void {
    if (this.closed) return;
    this.dirty = true;
    this.writes.arm();
  }

  /** Writes pending changes now and resolves when they are durable; rejects if the write fails. */
  async flush(): Promise<void> {
    this.writes.disarm();
    await this.callLog.flush();
    await this.writes.flush();
  }

  /** Flushes and releases the store (and its lock). */
  async close(): Promise<void> {
    if (this.closed) return;
    try {
      await this.flush();
    } finally {
      this.writes.disarm();
      this.closed = true;
      await this.callLog.close().catch(() => {});
      this.releaseLock();
    }
  }

  /** Synchronous flush + release for a process "exit" handler, where no await can run. */
  closeSync(): void {
    if (this.closed) return;
    this.writes.disarm();
    try {
      try {
        this.callLog.closeSync();
      } finally {
        if (this.dirty || this.lastSaveError) {
          this.prepare();
          this.adapter.writeSync(this.db.data);
          this.dirty = false;
          this.lastSaveError = null;
        }
      }
    } finally {
      this.closed = true;
      this.releaseLock();
    }
  }

  /** One write of the current data. Background (rethrow=false) failures go to onError and retry. */
  private async saveNow(rethrow: boolean): Promise<void> {
    if (!this.dirty) return;
    this.dirty = false;
    this.prepare();
    const started = performance.now();
    try {
      await this.db.write();
      this.lastSaveError = null;
      this.onSaved?.(performance.now() - started, true);
    } catch (e) {
      this.onSaved?.(performance.now() - started, false);
      const err = e instanceof Error ? e : new Error(String(e));
      this.dirty = true;
      this.lastSaveError = err;
      if (rethrow) throw err;
      this.onError(err);
      this.writes.arm(this.retryDelayMs);
    }
  }

  private prepare(): void {
    if (!this.bindingsChanged) return;
    this.db.data.bindings = [...this.bindingsByAor.values()].flat();
    this.bindingsChanged = false;
  }

  private changed(): void {
    this.scheduleSave();
  }

  private now(): Date {
    return this.clock();
  }

  private assertOpen(): void {
    if (this.closed) throw new StoreError(`store ${this.file} is closed`, this.file);
  }

  private replaceRecord(old: DeviceRecord, dev: DeviceRecord): void {
    this.unindex(old);
    const i = this.db.data.devices.indexOf(old);
    this.db.data.devices[i] = dev;
    this.index(dev);
  }

  private index(d: DeviceRecord): void {
    this.byId.set(d.id, d);
    this.byUsername.set(d.username, d);
    if (d.mac !== undefined) this.byMac.set(d.mac, d);
  }

  private unindex(d: DeviceRecord): void {
    this.byId.delete(d.id);
    this.byUsername.delete(d.username);
    if (d.mac !== undefined) this.byMac.delete(d.mac);
  }

  private freshId(username: unknown): string {
    const preferred = `dev-${String(username)}`;
    if (!this.byId.has(preferred)) return preferred; // an invalid username fails validation later
    let id: string;
    do id = `dev-${randomBytes(4).toString("hex")}`;
    while (this.byId.has(id));
    return id;
  }

  private buildDevice(input: NewDevice, createdAt: string): StoreResult<DeviceRecord> {
    let mac: string | undefined;
    if (input.mac !== undefined && input.mac !== null) {
      const m = normalizeMac(input.mac);
      if (m === null) return fail("invalid", `mac ${JSON.stringify(String(input.mac)).slice(0, 40)} is not a MAC address`, "mac");
      mac = m;
    }
    // `mac: undefined` rather than `delete`: a deleted property turns the object into a slow
    // dictionary (a console push builds 600 of these); toDeviceRecord leaves undefined out.
    const candidate = { ...input, mac, createdAt } as DeviceRecord;
    const reason = checkDevice(candidate, "device");
    if (reason) return fail("invalid", reason, reason.split(" ")[0]?.split(".")[1]);
    return { ok: true, value: toDeviceRecord(candidate) };
  }

  private clash(dev: DeviceRecord, self: DeviceRecord | undefined): StoreResult<never> | null {
    const byUser = this.byUsername.get(dev.username);
    if (byUser && byUser !== self) return fail("duplicate", `username "${dev.username}" is already used by device "${byUser.id}"`, "username");
    if (dev.mac !== undefined) {
      const byMac = this.byMac.get(dev.mac);
      if (byMac && byMac !== self) return fail("duplicate", `MAC ${dev.mac} is already used by device "${byMac.id}"`, "mac");
    }
    return null;
  }
}

/**
 * JSON.stringify for the store's data that keeps the text of the operators' states from one
 * write to the next while it is the same array: setOperatorStates replaces the array as a whole
 * and nothing changes it in place, and a console push that changes no operator's state leaves
 * it as it is (500 states are ~80 KB, ~0.7 ms of every write). The text is exactly
 * JSON.stringify(data)'s.
 */
export function storeDataStringifier(): (data: unknown) => string {
  let cached: { of: object; text: string } | undefined;
  return (data) => {
    const ops = typeof data === "object" && data !== null && !Array.isArray(data) ? (data as { operators?: unknown }).operators : undefined;
    if (!Array.isArray(ops)) return JSON.stringify(data);
    if (cached?.of !== ops) cached = { of: ops, text: JSON.stringify(ops) };
    let out = "{";
    for (const key of Object.keys(data as object)) {
      const text: string | undefined = key === "operators" ? cached.text : JSON.stringify((data as Record<string, unknown>)[key]);
      if (text === undefined) continue; // undefined and functions are left out, as JSON.stringify does
      out += (out.length > 1 ? "," : "") + JSON.stringify(key) + ":" + text;
    }
    return out + "}";
  };
}

/** 144-bit random SIP password, URL-safe (same strength as the CLI's generated passwords). */
function generateSipPassword(): string {
  return randomBytes(18).toString("base64url");
}

/** Provisioning server credentials: random user, password and URL token (base64url / hex, which
 *  fit HTTP digest quoted-strings and URL paths unescaped). */
function newProvisioningCredentials(): ProvisioningCredentials {
  return { user: `p${randomBytes(6).toString("hex")}`, password: randomBytes(18).toString("base64url"), token: randomBytes(16).toString("hex") };
}

/**
 * True when applying `input` to the stored site device `old` would build a record equal to `old`
 * (the slow path: candidate → buildDevice → sameDevice): every field the input sets is the
 * stored value, an absent password keeps the stored one, and the provisioning credentials are
 * the ones the slow path would keep (a device with a MAC keeps its own, one without has none).
 * `old` passed checkDevice when it was stored, so an equal record passes too. Any doubt (a MAC
 * in another notation, credentials in the input) answers false and takes the slow path.
 */
export function keepsSiteDevice(old: Readonly<DeviceRecord>, input: SiteDeviceInput): boolean {
  if (old.origin !== "site" || input.username !== old.username || input.kind !== old.kind) return false;
  if (input.password !== undefined && input.password !== old.password) return false;
  if (input.displayName !== old.displayName || input.owner !== old.owner || input.model !== old.model) return false;
  if (input.provisioning !== undefined) return false;
  if (input.mac === undefined || input.mac === null) return old.mac === undefined && old.provisioning === undefined;
  return input.mac === old.mac && old.provisioning !== undefined;
}

/** Same stored fields and values. toDeviceRecord leaves out absent fields (never `undefined`),
 *  so a structural comparison is exact, and much cheaper than comparing canonical texts. */
function sameDevice(a: DeviceRecord, b: DeviceRecord): boolean {
  return isDeepStrictEqual(toDeviceRecord(a), toDeviceRecord(b));
}

export interface RecoverResult {
  restoredFrom: string;
  savedAt: string;
  schemaVersion: number;
  /** Where the damaged file was kept; null when there was none. */
  corruptKeptAs: string | null;
}

export interface StoreInspection {
  /** True when the agent can open the store (possibly after a migration or as a new store). */
  ok: boolean;
  file: string;
  exists: boolean;
  /** Version in the file (0 = legacy prototype format); null when missing or unreadable. */
  schemaVersion: number | null;
  savedAt: string | null;
  needsMigration: boolean;
  counts: { devices: number; bindings: number; groups: number } | null;
  /** The error message open() would throw. */
  error: string | null;
  backup: BackupInfo;
}

/** For `ringedge status` and health checks: read-only, takes no lock, never throws. */
export async function inspect(dataDir: string): Promise<StoreInspection> {
  const file = storeFilePath(dataDir);
  const backup = await inspectBackup(file);
  const base = { file, backup };
  try {
    const loaded = await loadFile(file, path.resolve(dataDir), new Date(), MIGRATIONS, {});
    if (loaded.kind === "missing") return { ...base, ok: true, exists: false, schemaVersion: null, savedAt: null, needsMigration: false, counts: null, error: null };
    const d = loaded.data;
    return {
      ...base,
      ok: true,
      exists: true,
      schemaVersion: loaded.fromVersion,
      savedAt: loaded.savedAt,
      needsMigration: loaded.fromVersion < CURRENT_SCHEMA_VERSION,
      counts: { devices: d.devices.length, bindings: d.bindings.length, groups: d.site?.groups.length ?? 0 },
      error: null,
    };
  } catch (e) {
    const version = e instanceof StoreVersionError ? e.found : null;
    return { ...base, ok: false, exists: fs.existsSync(file), schemaVersion: version, savedAt: null, needsMigration: false, counts: null, error: e instanceof Error ? e.message : String(e) };
  }
}
