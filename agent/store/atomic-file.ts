// A lowdb Adapter that writes a JSON file so that a power cut at any instant leaves a complete
// file behind (DESIGN principle 7), with a checksummed envelope so damage is detected on read,
// and a last good copy `<file>.bak`.
//
// On-disk envelope:
//   { "format": "ringedge-store", "schemaVersion": N, "savedAt": ISO, "sha256": hex, "data": {...} }
// sha256 is over canonicalJson(data) (keys sorted, no whitespace), which is also exactly the text
// written for "data", so a truncated or bit-flipped file fails the check.
//
// Write sequence (one write; W = the new text):
//   1. open `<file>.tmp-<pid>` (O_TRUNC, mode 0600), write W, fsync it, close.
//      Crash here: <file> and <file>.bak are untouched; a stale tmp is removed at next open.
//      The fsync comes before any rename: without it ext4/xfs may commit the rename before the
//      data blocks, leaving a zero-length <file> after a power cut.
//   2. if <file> exists and is known good (its inode is the one we wrote last, or it passes the
//      envelope check): link(<file>, `<file>.bak.tmp-<pid>`) then rename that over <file>.bak.
//      The hard link shares <file>'s inode, whose data was fsynced when it was written, so the
//      new .bak is complete the moment it exists; rename makes the switch atomic (the previous
//      .bak stays in place until then). Crash here: <file> is still the old good file; .bak is
//      the old or the previous good copy. A damaged <file> is never rotated into .bak.
//      (Filesystems without hard links: copy + fsync instead of link.)
//   3. rename(`<file>.tmp-<pid>`, <file>): atomic replace (POSIX rename(2)). Before it, readers
//      see the old file; after it, the new one; never a mix. .bak keeps the old inode.
//   4. fsync the directory so the renames themselves are durable before write() resolves.
//      Crash before it: after reboot <file> is the old or the new complete file (both inodes
//      were fsynced), and .bak is a complete good copy either way.
// Steps 2-3 run synchronously (three metadata syscalls) so that writeSync(), used on shutdown,
// cannot interleave with an async write's renames.
import * as fs from "node:fs";
import { promises as fsp } from "node:fs";
import * as path from "node:path";
import { createHash, randomBytes } from "node:crypto";
import type { Adapter } from "lowdb";
import { StoreCorruptError, type BackupInfo } from "./errors.ts";
import { keepOwner, keepOwnerSync } from "./ownership.ts";

export const STORE_FORMAT = "ringedge-store";
const FILE_MODE = 0o600; // holds SIP passwords

export interface StoreEnvelope {
  format: typeof STORE_FORMAT;
  schemaVersion: number;
  savedAt: string;
  sha256: string;
  data: unknown;
}

/** What a store file holds, decided without trusting any of it. */
export type FileReading =
  | { kind: "missing" }
  /** The OS refused the read (permissions, I/O error); not a statement about the content. */
  | { kind: "unreadable"; reason: string }
  | { kind: "corrupt"; reason: string }
  /** Valid JSON object with none of the envelope keys: a pre-envelope (legacy) file. */
  | { kind: "bare"; value: unknown }
  | { kind: "envelope"; envelope: StoreEnvelope };

/** Printable ASCII without `"` and `\\`: JSON quotes such a string as it is. */
const PLAIN_STRING = /^[\x20\x21\x23-\x5b\x5d-\x7e]*$/;
function quote(s: string): string {
  return PLAIN_STRING.test(s) ? '"' + s + '"' : JSON.stringify(s);
}
/** Quoted keys with their colon: a site's few dozen key names recur thousands of times. Bounded. */
const quotedKeys = new Map<string, string>();
function quoteKey(k: string): string {
  let q = quotedKeys.get(k);
  if (q === undefined) {
    q = quote(k) + ":";
    if (quotedKeys.size < 4096) quotedKeys.set(k, q);
  }
  return q;
}

/**
 * JSON with object keys sorted and no whitespace: the same data always gives the same text.
 * Console pushes hash a ~160 KB snapshot with it, so it builds one string by concatenation
 * (no per-object arrays and joins, keys quoted once) — about twice as fast as the plain form.
 */
export function canonicalJson(value: unknown): string {
  if (value === null) return "null";
  switch (typeof value) {
    case "string":
      return quote(value);
    case "number":
      // Number#toString is the algorithm JSON.stringify uses for finite numbers (-0 gives "0").
      return Number.isFinite(value) ? String(value) : "null";
    case "boolean":
      return value ? "true" : "false";
    case "object": {
      const toJSON = (value as { toJSON?: () => unknown }).toJSON;
      if (typeof toJSON === "function") return canonicalJson(toJSON.call(value));
      if (Array.isArray(value)) {
        let out = "[";
        for (let i = 0; i < value.length; i++) {
          const v: unknown = value[i];
          if (i > 0) out += ",";
          out += v === undefined || typeof v === "function" || typeof v === "symbol" ? "null" : canonicalJson(v);
        }
        return out + "]";
      }
      const rec = value as Record<string, unknown>;
      const keys = Object.keys(rec);
      let sorted = true;
      for (let i = 1; i < keys.length; i++) {
        if (keys[i - 1]! > keys[i]!) {
          sorted = false;
          break;
        }
      }
      if (!sorted) keys.sort();
      let out = "{";
      let first = true;
      for (const key of keys) {
        const v = rec[key];
        if (v === undefined || typeof v === "function" || typeof v === "symbol") continue;
        if (!first) out += ",";
        first = false;
        out += quoteKey(key) + canonicalJson(v);
      }
      return out + "}";
    }
    default:
      // undefined, bigint, function, symbol: not representable; JSON.stringify would drop or throw.
      return "null";
  }
}

export function sha256Hex(text: string): string {
  return createHash("sha256").update(text, "utf8").digest("hex");
}

/**
 * The file text for `data`. The checksum covers the exact text of "data" as written, which
 * is V8's own JSON.stringify: on a site with 2,000 phones that is ~1.5 ms where the sorted
 * canonical form took ~12 ms of event-loop time per save, right on the call hot path.
 */
export function encodeEnvelope(data: unknown, schemaVersion: number, savedAt: Date, stringify: (data: unknown) => string = JSON.stringify): string {
  const body = stringify(data);
  return (
    "{\n" +
    `  "format": ${JSON.stringify(STORE_FORMAT)},\n` +
    `  "schemaVersion": ${schemaVersion},\n` +
    `  "savedAt": ${JSON.stringify(savedAt.toISOString())},\n` +
    `  "sha256": "${sha256Hex(body)}",\n` +
    `  "data": ${body}\n` +
    "}\n"
  );
}

const ENVELOPE_KEYS = ["format", "schemaVersion", "savedAt", "sha256", "data"] as const;

/** Classifies file text. Pure and total: never throws, whatever the bytes. */
export function decodeEnvelope(text: string): FileReading {
  if (text.trim() === "") return { kind: "corrupt", reason: `the file is empty (${Buffer.byteLength(text)} bytes)` };
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (e) {
    const msg = e instanceof Error ? e.message : String(e);
    // Every file we write ends with a line holding only "}": one that does not was cut short
    // (a full disk, an interrupted copy), whatever token the cut happened to land in.
    const truncated = /end of (JSON )?input|Unterminated/i.test(msg) || !/\n\}\s*$/.test(text);
    return { kind: "corrupt", reason: truncated ? `the JSON ends early (truncated file, ${Buffer.byteLength(text)} bytes): ${msg}` : `not valid JSON: ${msg}` };
  }
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) return { kind: "corrupt", reason: "the file is JSON but not an object" };
  const obj = parsed as Record<string, unknown>;
  if (!ENVELOPE_KEYS.some((k) => Object.prototype.hasOwnProperty.call(obj, k))) return { kind: "bare", value: obj };
  for (const k of ENVELOPE_KEYS) {
    if (!Object.prototype.hasOwnProperty.call(obj, k)) return { kind: "corrupt", reason: `the envelope has no "${k}" field` };
  }
  if (obj.format !== STORE_FORMAT) return { kind: "corrupt", reason: `wrong format ${JSON.stringify(obj.format)} (expected "${STORE_FORMAT}")` };
  if (!Number.isSafeInteger(obj.schemaVersion) || (obj.schemaVersion as number) < 0) {
    return { kind: "corrupt", reason: `invalid schemaVersion ${JSON.stringify(obj.schemaVersion)}` };
  }
  if (typeof obj.savedAt !== "string" || Number.isNaN(Date.parse(obj.savedAt))) return { kind: "corrupt", reason: "invalid savedAt timestamp" };
  if (typeof obj.sha256 !== "string" || !/^[0-9a-f]{64}$/.test(obj.sha256)) return { kind: "corrupt", reason: "invalid sha256 field" };
  if (typeof obj.data !== "object" || obj.data === null || Array.isArray(obj.data)) return { kind: "corrupt", reason: '"data" is not an object' };
  // Files are written with "data" last, as `  "data": <text>\n}\n`: hash that exact text.
  // Files written by earlier versions checksummed the canonical (sorted-key) form instead.
  const marker = text.lastIndexOf('\n  "data": ');
  const end = text.lastIndexOf("\n}");
  const written = marker >= 0 && end > marker ? text.slice(marker + 11, end) : undefined;
  const actual = written !== undefined && sha256Hex(written) === obj.sha256 ? obj.sha256 : sha256Hex(canonicalJson(obj.data));
  if (actual !== obj.sha256) {
    return { kind: "corrupt", reason: `checksum mismatch: the data was changed or damaged after it was saved at ${obj.savedAt} (recorded sha256 ${obj.sha256.slice(0, 12)}…, actual ${actual.slice(0, 12)}…)` };
  }
  return { kind: "envelope", envelope: obj as unknown as StoreEnvelope };
}

function errnoOf(e: unknown): string | undefined {
  return typeof e === "object" && e !== null && "code" in e ? String((e as { code: unknown }).code) : undefined;
}

function describeIoError(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

export async function readStoreFile(file: string): Promise<FileReading> {
  let text: string;
  try {
    text = await fsp.readFile(file, "utf8");
  } catch (e) {
    if (errnoOf(e) === "ENOENT") return { kind: "missing" };
    return { kind: "unreadable", reason: describeIoError(e) };
  }
  return decodeEnvelope(text);
}

export function readStoreFileSync(file: string): FileReading {
  let text: string;
  try {
    text = fs.readFileSync(file, "utf8");
  } catch (e) {
    if (errnoOf(e) === "ENOENT") return { kind: "missing" };
    return { kind: "unreadable", reason: describeIoError(e) };
  }
  return decodeEnvelope(text);
}

export function backupPath(file: string): string {
  return `${file}.bak`;
}

/** Describes `<file>.bak` for error messages and recovery. Never throws. */
export async function inspectBackup(file: string): Promise<BackupInfo> {
  const p = backupPath(file);
  const r = await readStoreFile(p);
  switch (r.kind) {
    case "envelope":
      return { path: p, usable: true, savedAt: r.envelope.savedAt, schemaVersion: r.envelope.schemaVersion };
    case "missing":
      return { path: p, usable: false, reason: "missing" };
    case "unreadable":
      return { path: p, usable: false, reason: `unreadable (${r.reason})` };
    case "corrupt":
      return { path: p, usable: false, reason: `damaged too (${r.reason})` };
    case "bare":
      return { path: p, usable: false, reason: "not a ringedge-store envelope" };
  }
}

/** Steps of a write, for tests that simulate a crash between them (throwing stops the write). */
export type WriteStep = "tmp-synced" | "backup-rotated" | "renamed";

export interface AtomicJsonFileOptions {
  /** Written into every envelope; read() rejects any other version (the Store migrates first). */
  schemaVersion: number;
  now?: () => Date;
  /** Test hook called after each step of a write. */
  onStep?: (step: WriteStep) => void;
  /** The text of "data": must equal JSON.stringify(data) (default: JSON.stringify itself). */
  stringify?: (data: unknown) => string;
}

interface FileId {
  ino: number;
  size: number;
  mtimeMs: number;
}

function sameFile(a: FileId | null, b: fs.Stats | null): boolean {
  return a !== null && b !== null && a.ino === b.ino && a.size === b.size && a.mtimeMs === b.mtimeMs;
}

/** Errors from fsync on a directory that only mean "not supported here". */
const DIR_FSYNC_UNSUPPORTED = new Set(["EINVAL", "EISDIR", "EPERM", "EBADF", "ENOTSUP"]);
/** Errors from link(2) that mean "no hard links on this filesystem": fall back to a copy. */
const LINK_UNSUPPORTED = new Set(["EPERM", "ENOTSUP", "EOPNOTSUPP", "EXDEV", "ENOSYS", "EMLINK"]);

interface Deferred {
  data: unknown;
  promise: Promise<void>;
  resolve: () => void;
  reject: (e: unknown) => void;
}

export class AtomicJsonFile<T> implements Adapter<T> {
  readonly file: string;
  readonly dir: string;
  private readonly schemaVersion: number;
  private readonly now: () => Date;
  private readonly onStep: (step: WriteStep) => void;
  private readonly stringify: (data: unknown) => string;
  /** The write in progress, if any. */
  private current: Promise<void> | null = null;
  /** Writes requested while one is in flight: collapsed into one, carrying the latest data. */
  private next: Deferred | null = null;
  /** Bumped by writeSync so an older async write in flight does not rename over it. */
  private generation = 0;
  /** Identity of the file we last renamed into place: a cheap proof it is still our good file. */
  private lastWritten: FileId | null = null;
  private writeCount = 0;

  constructor(file: string, opts: AtomicJsonFileOptions) {
    this.file = path.resolve(file);
    this.dir = path.dirname(this.file);
    this.schemaVersion = opts.schemaVersion;
    this.now = opts.now ?? (() => new Date());
    this.onStep = opts.onStep ?? (() => {});
    this.stringify = opts.stringify ?? JSON.stringify;
  }

  /** Number of completed writes (each one a full tmp/fsync/rename cycle). */
  get writes(): number {
    return this.writeCount;
  }

  get tmpPath(): string {
    return `${this.file}.tmp-${process.pid}`;
  }

  /**
   * lowdb read: null when the file does not exist; the data when the envelope is valid and of
   * this adapter's schemaVersion; otherwise a StoreCorruptError (never an empty default).
   */
  async read(): Promise<T | null> {
    const r = await readStoreFile(this.file);
    if (r.kind === "missing") return null;
    let reason: string;
    if (r.kind === "envelope") {
      if (r.envelope.schemaVersion === this.schemaVersion) return r.envelope.data as T;
      reason = `schemaVersion ${r.envelope.schemaVersion} where ${this.schemaVersion} was expected (open it through Store, which migrates)`;
    } else if (r.kind === "bare") {
      reason = `no "${STORE_FORMAT}" envelope`;
    } else {
      reason = r.reason;
    }
    throw new StoreCorruptError(this.file, reason, await inspectBackup(this.file), this.dir);
  }

  /**
   * lowdb write. Serialises writes: while one is in flight, every further call is folded into a
   * single follow-up write of the latest data; all those callers resolve when it is on disk.
   */
  write(data: T): Promise<void> {
    if (this.current === null) return this.start(data);
    if (this.next === null) {
      let resolve!: () => void;
      let reject!: (e: unknown) => void;
      const promise = new Promise<void>((res, rej) => {
        resolve = res;
        reject = rej;
      });
      this.next = { data, promise, resolve, reject };
    } else {
      this.next.data = data;
    }
    return this.next.promise;
  }

  /** Resolves when no write is in flight or queued (errors are the writers' to handle). */
  async settled(): Promise<void> {
    while (this.current !== null) {
      const waitFor = this.next?.promise ?? this.current;
      await waitFor.catch(() => {});
    }
  }

  private start(data: unknown): Promise<void> {
    const p = this.writeOnce(data).finally(() => {
      this.current = null;
      const n = this.next;
      this.next = null;
      if (n) this.start(n.data).then(n.resolve, n.reject);
    });
    this.current = p;
    return p;
  }

  private async writeOnce(data: unknown): Promise<void> {
    // Serialise now: the text is a snapshot even if the caller mutates data while we await.
    const text = encodeEnvelope(data, this.schemaVersion, this.now(), this.stringify);
    const gen = this.generation;
    const tmp = this.tmpPath;
    let tmpStat: fs.Stats;
    try {
      const fh = await fsp.open(tmp, "w", FILE_MODE);
      try {
        // Run as root (an offline CLI command, a migration): the file stays the data directory owner's.
        await keepOwner(fh, this.dir);
        await fh.writeFile(text, "utf8");
        await fh.sync();
        tmpStat = await fh.stat();
      } finally {
        await fh.close();
      }
      this.onStep("tmp-synced");
      const good = await this.currentIfGood();
      if (gen !== this.generation) {
        // A writeSync() with newer data landed meanwhile; ours must not replace it.
        await fsp.rm(tmp, { force: true });
        return;
      }
      this.commit(tmp, good, tmpStat);
    } catch (e) {
      await fsp.rm(tmp, { force: true }).catch(() => {});
      throw e;
    }
    await fsyncDir(this.dir);
    this.writeCount++;
  }

  /**
   * Synchronous write for shutdown paths (e.g. a process "exit" handler) where the event loop
   * will not run again. Same sequence as write(); supersedes any async write not yet renamed.
   */
  writeSync(data: T): void {
    this.generation++;
    const text = encodeEnvelope(data, this.schemaVersion, this.now(), this.stringify);
    const tmp = `${this.tmpPath}.sync`;
    try {
      const fd = fs.openSync(tmp, "w", FILE_MODE);
      let st: fs.Stats;
      try {
        keepOwnerSync(fd, this.dir);
        fs.writeFileSync(fd, text, "utf8");
        fs.fsyncSync(fd);
        st = fs.fstatSync(fd);
      } finally {
        fs.closeSync(fd);
      }
      this.onStep("tmp-synced");
      this.commit(tmp, this.currentIfGoodSync(), st);
    } catch (e) {
      fs.rmSync(tmp, { force: true });
      throw e;
    }
    fsyncDirSync(this.dir);
    this.writeCount++;
  }

  /** Stats of <file> if it is a good copy worth keeping as .bak, else null. */
  private async currentIfGood(): Promise<fs.Stats | null> {
    const st = await fsp.stat(this.file).catch(() => null);
    if (st === null) return null;
    if (sameFile(this.lastWritten, st)) return st;
    // Not the file we wrote last (first write after open, or changed by someone else): check it.
    const r = await readStoreFile(this.file);
    return r.kind === "envelope" ? st : null;
  }

  private currentIfGoodSync(): fs.Stats | null {
    let st: fs.Stats;
    try {
      st = fs.statSync(this.file);
    } catch {
      return null;
    }
    if (sameFile(this.lastWritten, st)) return st;
    return readStoreFileSync(this.file).kind === "envelope" ? st : null;
  }

  /** Steps 2 and 3 of the sequence in the header. Synchronous on purpose (see header). */
  private commit(tmp: string, good: fs.Stats | null, tmpStat: fs.Stats): void {
    if (good !== null) {
      let now: fs.Stats | null = null;
      try {
        now = fs.statSync(this.file);
      } catch {
        now = null;
      }
      // Only rotate the exact file we checked (it could have been replaced in between).
      if (now !== null && now.ino === good.ino && now.size === good.size && now.mtimeMs === good.mtimeMs) {
        const bakTmp = `${backupPath(this.file)}.tmp-${process.pid}`;
        fs.rmSync(bakTmp, { force: true });
        try {
          fs.linkSync(this.file, bakTmp);
        } catch (e) {
          if (!LINK_UNSUPPORTED.has(errnoOf(e) ?? "")) throw e;
          copyDurablySync(this.file, bakTmp);
        }
        fs.renameSync(bakTmp, backupPath(this.file));
        this.onStep("backup-rotated");
      }
    }
    fs.renameSync(tmp, this.file);
    this.lastWritten = { ino: tmpStat.ino, size: tmpStat.size, mtimeMs: tmpStat.mtimeMs };
    this.onStep("renamed");
  }
}

/** Copies src to dst (mode 0600) and fsyncs dst, so dst is complete once this returns. */
export function copyDurablySync(src: string, dst: string): void {
  const data = fs.readFileSync(src);
  const fd = fs.openSync(dst, "w", FILE_MODE);
  try {
    keepOwnerSync(fd, path.dirname(dst));
    fs.writeFileSync(fd, data);
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * Writes `bytes` to `file` via tmp + fsync + rename + directory fsync. The temporary name is
 * unique per write, so two writes of one file at once (two groups naming one sound) each rename
 * a whole file into place.
 */
export async function writeFileAtomic(file: string, bytes: Buffer | string): Promise<void> {
  const tmp = `${file}.tmp-${process.pid}-${randomBytes(4).toString("hex")}-w`;
  try {
    const fh = await fsp.open(tmp, "w", FILE_MODE);
    try {
      await keepOwner(fh, path.dirname(file));
      await fh.writeFile(bytes);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await fsp.rename(tmp, file);
  } catch (e) {
    await fsp.rm(tmp, { force: true }).catch(() => {});
    throw e;
  }
  await fsyncDir(path.dirname(file));
}

export async function fsyncDir(dir: string): Promise<void> {
  let fh: fsp.FileHandle | undefined;
  try {
    fh = await fsp.open(dir, "r");
    await fh.sync();
  } catch (e) {
    if (!DIR_FSYNC_UNSUPPORTED.has(errnoOf(e) ?? "")) throw e;
  } finally {
    await fh?.close();
  }
}

export function fsyncDirSync(dir: string): void {
  let fd: number | undefined;
  try {
    fd = fs.openSync(dir, "r");
    fs.fsyncSync(fd);
  } catch (e) {
    if (!DIR_FSYNC_UNSUPPORTED.has(errnoOf(e) ?? "")) throw e;
  } finally {
    if (fd !== undefined) fs.closeSync(fd);
  }
}
