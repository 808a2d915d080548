// The agent's persistent store: devices (SIP credentials), registrar bindings and routing memory
// in `<dataDir>/ringedge.json`, through lowdb with the AtomicJsonFile adapter.
//
// Reads are in memory (Maps indexed for the registrar's lookups). Mutations change memory at
// once and schedule a batched background write (DESIGN principle 3: the call path never waits
// on disk); flush() waits for durability. Opening refuses damaged files (StoreCorruptError),
// newer schemas (StoreVersionError) and a store another process holds (StoreLockedError).
import * as fs from "node:fs";
import { promises as fsp } from "node:fs";
import * as path from "node:path";
import { randomBytes } from "node:crypto";
import { Low } from "lowdb";
import { AtomicJsonFile, backupPath, inspectBackup, readStoreFile, writeFileAtomic, fsyncDir, type WriteStep } from "./atomic-file.ts";
import { StoreCorruptError, StoreError, StoreLockedError, StoreMigrationError, StoreVersionError, describeBackup, type BackupInfo } from "./errors.ts";
import { MIGRATIONS, isLegacyV0, runMigrations, type Migration } from "./migrations.ts";
import {
  CURRENT_SCHEMA_VERSION,
  checkBinding,
  checkDevice,
  emptyStoreData,
  normalizeMac,
  toBindingRecord,
  toDeviceRecord,
  validateStoreData,
  type BindingRecord,
  type DeviceKind,
  type DeviceRecord,
  type RoutingState,
  type StoreData,
  type StoreMeta,
} from "./schema.ts";

export { StoreCorruptError, StoreError, StoreLockedError, StoreMigrationError, StoreVersionError, RECOVER_COMMAND } from "./errors.ts";
export type { BackupInfo } from "./errors.ts";
export type { BindingFlow, BindingRecord, DeviceKind, DeviceRecord, RoutingState, StoreData, StoreMeta } from "./schema.ts";
export { CURRENT_SCHEMA_VERSION } from "./schema.ts";

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

// ---------------------------------------------------------------------------------------------
// Loading: classify the file and bring its data to the current schema (in memory only).

type Loaded =
  | { kind: "missing" }
  | { kind: "ok"; data: StoreData; fromVersion: number; savedAt: string | null };

async function loadFile(file: string, dataDir: string, now: Date, migrations: readonly Migration[]): Promise<Loaded> {
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
    const m = runMigrations(raw, version, CURRENT_SCHEMA_VERSION, { now }, migrations);
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
  private readonly db: Low<StoreData>;
  private readonly adapter: AtomicJsonFile<StoreData>;
  private readonly releaseLock: () => void;
  private readonly saveDelayMs: number;
  private readonly retryDelayMs: number;
  private readonly onError: (err: Error) => void;
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
  private timer: NodeJS.Timeout | null = null;
  /** The save in progress (at most one at a time). */
  private saving: Promise<void> | null = null;
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
    opts: StoreOptions;
  }) {
    this.file = args.file;
    this.dataDir = args.dataDir;
    this.db = args.db;
    this.adapter = args.adapter;
    this.releaseLock = args.releaseLock;
    this.openedFromVersion = args.openedFromVersion;
    this.migrationBackup = args.migrationBackup;
    this.clock = args.opts.now ?? (() => new Date());
    this.saveDelayMs = args.opts.saveDelayMs ?? 50;
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
      const adapter = new AtomicJsonFile<StoreData>(file, { schemaVersion: CURRENT_SCHEMA_VERSION, now, ...(opts.onWriteStep ? { onStep: opts.onWriteStep } : {}) });
      const loaded = await loadFile(file, dir, now(), opts.migrations ?? MIGRATIONS);
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
      const db = new Low<StoreData>(adapter, data);
      return new Store({ file, dataDir: dir, db, adapter, releaseLock, openedFromVersion: fromVersion, migrationBackup, opts });
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
    const withId = input.id === undefined ? { ...input, id: this.freshId(input.username) } : input;
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
    const built = this.buildDevice(merged, old.createdAt);
    if (!built.ok) return built;
    const dev = built.value;
    const clash = this.clash(dev, old);
    if (clash) return clash;
    this.unindex(old);
    const i = this.db.data.devices.indexOf(old);
    this.db.data.devices[i] = dev;
    this.index(dev);
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
    this.changed();
    return true;
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
    let n = 0;
    for (const [aor, list] of this.bindingsByAor) {
      const rest = list.filter((b) => b.deviceId !== deviceId);
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

  /** Drops bindings with expiresAt <= nowMs; returns how many. */
  purgeExpiredBindings(nowMs: number = this.now().getTime()): number {
    this.assertOpen();
    let n = 0;
    for (const [aor, list] of this.bindingsByAor) {
      const rest = list.filter((b) => b.expiresAt > nowMs);
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
    return this.dirty || this.saving !== null || this.lastSaveError !== null;
  }

  /** Marks the data changed; a write follows within saveDelayMs. Never waits, never throws. */
  scheduleSave(): void {
    if (this.closed) return;
    this.dirty = true;
    this.arm(this.saveDelayMs);
  }

  /** Writes pending changes now and resolves when they are durable; rejects if the write fails. */
  async flush(): Promise<void> {
    this.disarm();
    for (;;) {
      if (this.saving !== null) {
        await this.saving.catch(() => {});
        continue;
      }
      if (this.dirty) {
        await this.startSave(true);
        continue;
      }
      if (this.lastSaveError) throw this.lastSaveError;
      return;
    }
  }

  /** Flushes and releases the store (and its lock). */
  async close(): Promise<void> {
    if (this.closed) return;
    try {
      await this.flush();
    } finally {
      this.disarm();
      this.closed = true;
      this.releaseLock();
    }
  }

  /** Synchronous flush + release for a process "exit" handler, where no await can run. */
  closeSync(): void {
    if (this.closed) return;
    this.disarm();
    try {
      if (this.dirty || this.lastSaveError) {
        this.prepare();
        this.adapter.writeSync(this.db.data);
        this.dirty = false;
        this.lastSaveError = null;
      }
    } finally {
      this.closed = true;
      this.releaseLock();
    }
  }

  private arm(delayMs: number): void {
    if (this.timer !== null) return;
    this.timer = setTimeout(() => {
      this.timer = null;
      // One save at a time: a change made during a save is written by the next one.
      if (this.saving !== null) this.arm(this.saveDelayMs);
      else void this.startSave(false);
    }, delayMs);
    // The agent's sockets keep it alive; a CLI must close() the store, which flushes.
    this.timer.unref();
  }

  private disarm(): void {
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
  }

  private startSave(rethrow: boolean): Promise<void> {
    const p: Promise<void> = this.saveNow(rethrow).finally(() => {
      if (this.saving === p) this.saving = null;
    });
    this.saving = p;
    return p;
  }

  /** One write of the current data. Background (rethrow=false) failures go to onError and retry. */
  private async saveNow(rethrow: boolean): Promise<void> {
    if (!this.dirty) return;
    this.dirty = false;
    this.prepare();
    try {
      await this.db.write();
      this.lastSaveError = null;
    } catch (e) {
      const err = e instanceof Error ? e : new Error(String(e));
      this.dirty = true;
      this.lastSaveError = err;
      if (rethrow) throw err;
      this.onError(err);
      if (!this.closed) this.arm(this.retryDelayMs);
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
    const candidate = { ...input, mac, createdAt } as DeviceRecord;
    if (mac === undefined) delete candidate.mac;
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
    const loaded = await loadFile(file, path.resolve(dataDir), new Date(), MIGRATIONS);
    if (loaded.kind === "missing") return { ...base, ok: true, exists: false, schemaVersion: null, savedAt: null, needsMigration: false, counts: null, error: null };
    const d = loaded.data;
    return {
      ...base,
      ok: true,
      exists: true,
      schemaVersion: loaded.fromVersion,
      savedAt: loaded.savedAt,
      needsMigration: loaded.fromVersion < CURRENT_SCHEMA_VERSION,
      counts: { devices: d.devices.length, bindings: d.bindings.length, groups: Object.keys(d.routing.evenlyLastOffered).length },
      error: null,
    };
  } catch (e) {
    const version = e instanceof StoreVersionError ? e.found : null;
    return { ...base, ok: false, exists: fs.existsSync(file), schemaVersion: version, savedAt: null, needsMigration: false, counts: null, error: e instanceof Error ? e.message : String(e) };
  }
}
