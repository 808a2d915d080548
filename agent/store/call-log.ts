// The call log as an append-only JSON-lines file (issue 11: a finished call costs one small
// append, not a rewrite of the whole store). `<dataDir>/calls.jsonl` holds one CallRecord per
// line, oldest first; when it reaches `maxRecords` lines it becomes `calls.1.jsonl` (replacing
// the previous generation) and a new `calls.jsonl` starts, so the disk holds between
// `maxRecords` and 2×`maxRecords` calls and memory holds the last `maxRecords`.
//
// Writes are batched: append() only queues the line; at most `writeDelayMs` later one write()
// to the O_APPEND descriptor hands the batch to the kernel (a page-cache copy, a few µs) and an
// fdatasync in the background makes it durable. closeSync() (a process "exit" handler) writes
// what is queued synchronously: nothing appended before a clean stop is lost.
//
// Opening reads both generations. A last line without its newline (a write cut short by a
// crash or a full disk) is ignored and cut off, so the next append starts a clean line; any
// other line that is not a valid record is skipped and reported in `notes`, never fatal (the
// log is history, not configuration). Records still in the store file's legacy `callLog` (the
// format before this file existed) are moved here, durably, before the store drops them.
//
// The store's lock (`ringedge.json.lock`) covers these files: only the Store opens them.
import * as fs from "node:fs";
import { promises as fsp } from "node:fs";
import * as path from "node:path";
import { fsyncDir, writeFileAtomic } from "./atomic-file.ts";
import { keepOwnerSync } from "./ownership.ts";
import { WriteBehind } from "./write-behind.ts";
import { checkCallRecord, toCallRecord, type CallRecord } from "./schema.ts";
import type { WhyRecord } from "../routing/why.ts";
import { freezeWhys, freezeWhysSync, WhyThaw, type ColdWhy } from "./why-archive.ts";

export const CALL_LOG_FILE = "calls.jsonl";
export const CALL_LOG_PREVIOUS_FILE = "calls.1.jsonl";
/** Caller numbers are personal data: owner-only, like the store. */
const FILE_MODE = 0o600;
/** Read at most this much of the end of a generation at open (a sane file is ~2 MB). */
const MAX_READ_BYTES = 32 * 1024 * 1024;

export interface CallLogOptions {
  /** Calls kept in memory and per file generation. */
  maxRecords: number;
  /** Batching window of the appends, ms. */
  writeDelayMs: number;
  /** Delay before a failed write is tried again, ms. */
  retryDelayMs: number;
  /** Background write failures (the lines stay queued and are retried). */
  onError: (err: Error) => void;
  /** The newest calls whose whys stay objects; older ones are deflated (why-archive.ts). Default 256. */
  warmWhys?: number;
  /** Calls whose whys are deflated together. Default 64. */
  freezeBatch?: number;
}

const WARM_WHYS = 256;
const FREEZE_BATCH = 64;

export interface ParsedLog {
  records: CallRecord[];
  /** Complete lines (valid or not). */
  lines: number;
  skipped: number;
  /** Byte length up to and including the last newline. */
  completeBytes: number;
  /** Bytes after the last newline: a half-written line. */
  tornBytes: number;
}

/**
 * Parses JSON-lines text of call records; never throws. `each` (default: keep as is) may hand
 * back another form of each valid record, while the next lines are read: CallLog.open deflates
 * the whys there, so a full log's 5,000 whys never stand in the heap together.
 */
export function parseCallLog(text: string, each?: (rec: CallRecord) => CallRecord): ParsedLog {
  const end = text.lastIndexOf("\n") + 1;
  const records: CallRecord[] = [];
  let lines = 0;
  let skipped = 0;
  let from = 0;
  while (from < end) {
    const nl = text.indexOf("\n", from);
    const line = text.slice(from, nl);
    from = nl + 1;
    lines++;
    if (line.trim() === "") {
      skipped++;
      continue;
    }
    let v: unknown;
    try {
      v = JSON.parse(line);
    } catch {
      skipped++;
      continue;
    }
    if (checkCallRecord(v, "call") !== null) {
      skipped++;
      continue;
    }
    const rec = toCallRecord(v as CallRecord);
    records.push(each === undefined ? rec : each(rec));
  }
  return { records, lines, skipped, completeBytes: Buffer.byteLength(text.slice(0, end)), tornBytes: Buffer.byteLength(text.slice(end)) };
}

/** The text of a generation (at most its last MAX_READ_BYTES, from a line start); "" if absent. */
async function readGeneration(file: string): Promise<{ text: string; cutHead: boolean }> {
  let fh: fsp.FileHandle;
  try {
    fh = await fsp.open(file, "r");
  } catch (e) {
    if ((e as { code?: string }).code === "ENOENT") return { text: "", cutHead: false };
    throw e;
  }
  try {
    const size = (await fh.stat()).size;
    const len = Math.min(size, MAX_READ_BYTES);
    const buf = Buffer.alloc(len);
    let got = 0;
    while (got < len) {
      const { bytesRead } = await fh.read(buf, got, len - got, size - len + got);
      if (bytesRead === 0) break;
      got += bytesRead;
    }
    let text = buf.subarray(0, got).toString("utf8");
    const cutHead = size > len;
    // Started mid-file: drop the partial first line.
    if (cutHead) text = text.slice(text.indexOf("\n") + 1);
    return { text, cutHead };
  } finally {
    await fh.close();
  }
}

function openAppend(file: string): number {
  const fd = fs.openSync(file, "a", FILE_MODE);
  try {
    keepOwnerSync(fd, path.dirname(file));
  } catch (e) {
    fs.closeSync(fd);
    throw e;
  }
  return fd;
}

/**
 * Deflates the whys of records as parseCallLog hands them over, a batch at a time: a record is
 * replaced by a lean copy at once, and its why joins the batch's reference when the batch is
 * full (or at finish()).
 */
class SyncFreezer {
  readonly cold = new WeakMap<CallRecord, ColdWhy>();
  private leans: CallRecord[] = [];
  private whys: WhyRecord[] = [];

  constructor(private readonly size: number) {}

  readonly each = (rec: CallRecord): CallRecord => {
    if (rec.why === undefined) return rec;
    const { why, ...lean } = rec;
    this.leans.push(lean);
    this.whys.push(why);
    if (this.whys.length >= this.size) this.finish();
    return lean;
  };

  finish(): void {
    if (this.whys.length === 0) return;
    const refs = freezeWhysSync(this.whys);
    this.leans.forEach((lean, k) => this.cold.set(lean, refs[k]!));
    this.leans = [];
    this.whys = [];
  }
}

export class CallLog {
  readonly file: string;
  readonly previousFile: string;
  /** What opening found and did (skipped lines, a cut-off last line, migrated records). */
  readonly notes: readonly string[];
  private readonly opts: CallLogOptions;
  /** Newest last; trimmed to maxRecords in batches (amortised, no splice per call). */
  private records: CallRecord[];
  /** Records trimmed off the front so far: records[i] is call number trimmed + i. */
  private trimmed = 0;
  /** Calls (by number) before this one have had their whys handed to the archive. */
  private frozenUpTo = 0;
  /** A lean record (why taken out) → where its why is deflated. */
  private readonly cold: WeakMap<CallRecord, ColdWhy>;
  /** The batch being deflated (one at a time); undefined when none. */
  private freezing: Promise<void> | undefined;
  /** The O_APPEND descriptor of calls.jsonl, opened at the first write. */
  private fd: number | null;
  private linesInCurrent: number;
  private queued: string[] = [];
  /** The background sync/rotation in progress. */
  /** When queued lines are written (one batch at a time, after writeDelayMs). */
  private readonly writes: WriteBehind;
  private lastError: Error | null = null;
  /** calls.jsonl was (perhaps) just created: its directory entry must reach the disk too. */
  private dirSyncDue = false;
  /** The last write stopped part-way through a line. */
  private brokenLine = false;
  private closed = false;

  private constructor(file: string, records: CallRecord[], fd: number | null, linesInCurrent: number, notes: string[], opts: CallLogOptions, opened: SyncFreezer) {
    this.file = file;
    this.cold = opened.cold;
    this.frozenUpTo = records.length;
    this.previousFile = path.join(path.dirname(file), CALL_LOG_PREVIOUS_FILE);
    this.records = records;
    this.fd = fd;
    this.linesInCurrent = linesInCurrent;
    this.notes = notes;
    this.opts = opts;
    this.writes = new WriteBehind({ delayMs: opts.writeDelayMs, write: (rethrow) => this.writeNow(rethrow), pending: () => this.queued.length > 0, lastError: () => this.lastError, closed: () => this.closed });
    this.freezeOld();
  }

  /**
   * Opens the log in `dir` (which the caller holds locked), moving `legacy` records (the store's
   * old in-file call log, oldest first) into it durably first. Throws only on I/O errors.
   */
  static async open(dir: string, opts: CallLogOptions, legacy: readonly CallRecord[] = []): Promise<CallLog> {
    const file = path.join(dir, CALL_LOG_FILE);
    const prevFile = path.join(dir, CALL_LOG_PREVIOUS_FILE);
    const notes: string[] = [];
    // Crash leftovers of a migration write (writeFileAtomic's temp file).
    for (const n of await fsp.readdir(dir).catch(() => [] as string[])) {
      if (n.startsWith(`${CALL_LOG_FILE}.tmp-`)) await fsp.rm(path.join(dir, n), { force: true });
    }
    const prev = await readGeneration(prevFile);
    const cur = await readGeneration(file);
    // The whys of the calls read are deflated as they are parsed (why-archive.ts).
    const freezer = new SyncFreezer(opts.freezeBatch ?? FREEZE_BATCH);
    const p = parseCallLog(prev.text, freezer.each);
    const c = parseCallLog(cur.text, freezer.each);
    freezer.finish();
    if (p.skipped + c.skipped > 0) notes.push(`call log: skipped ${p.skipped + c.skipped} line(s) that are not call records`);
    if (prev.cutHead || cur.cutHead) notes.push(`call log: a file was larger than ${MAX_READ_BYTES} bytes; only its end was read`);
    if (c.tornBytes > 0) {
      // A write cut short: drop the partial line so the next append starts on a line of its own.
      notes.push(`call log: ignored a half-written last line (${c.tornBytes} bytes) of ${CALL_LOG_FILE}`);
      const size = (await fsp.stat(file)).size;
      await fsp.truncate(file, size - c.tornBytes);
    }
    let records = [...p.records, ...c.records];
    let linesInCurrent = c.lines;
    if (legacy.length > 0) {
      // Before the file existed the store kept the log. Move what the file does not hold yet
      // (a crash between this write and the store's may have moved it already), oldest first.
      const have = new Set(records.map((r) => r.id));
      const move = legacy.filter((r) => !have.has(r.id));
      if (move.length > 0) {
        const text = move.map((r) => JSON.stringify(toCallRecord(r)) + "\n").join("") + (await readGeneration(file)).text;
        await writeFileAtomic(file, text);
        records = [...p.records, ...move, ...c.records];
        linesInCurrent = c.lines + move.length;
        notes.push(`call log: moved ${move.length} call(s) from the store file to ${CALL_LOG_FILE}`);
      }
    }
    if (records.length > opts.maxRecords) records = records.slice(records.length - opts.maxRecords);
    return new CallLog(file, records, null, linesInCurrent, notes, opts, freezer);
  }

  /** Queues a record (checked by the caller); written within writeDelayMs. Never throws. */
  append(rec: CallRecord): void {
    if (this.closed) return;
    this.records.push(rec);
    if (this.records.length >= 2 * this.opts.maxRecords) {
      const drop = this.records.length - this.opts.maxRecords;
      this.records = this.records.slice(drop);
      this.trimmed += drop;
    }
    this.queued.push(JSON.stringify(rec) + "\n");
    this.writes.arm();
    this.freezeOld();
  }

  /** The most recent calls first, at most `limit`, optionally of one group. */
  list(limit: number, groupId?: string): CallRecord[] {
    const out: CallRecord[] = [];
    const oldest = Math.max(0, this.records.length - this.opts.maxRecords);
    const thaw = new WhyThaw();
    for (let i = this.records.length - 1; i >= oldest && out.length < limit; i--) {
      const c = this.records[i]!;
      if (groupId !== undefined && c.groupId !== groupId) continue;
      const ref = this.cold.get(c);
      const why = ref === undefined ? undefined : thaw.thaw(ref);
      out.push(why === undefined ? c : { ...c, why });
    }
    return out;
  }

  /** Calls listed from memory, and how many of their whys are deflated. */
  stats(): { records: number; coldWhys: number } {
    const oldest = Math.max(0, this.records.length - this.opts.maxRecords);
    let coldWhys = 0;
    for (let i = oldest; i < this.records.length; i++) if (this.cold.has(this.records[i]!)) coldWhys++;
    return { records: this.records.length - oldest, coldWhys };
  }

  /** Resolves once no batch is left to deflate (tests). */
  async whenFrozen(): Promise<void> {
    while (this.freezing !== undefined) await this.freezing;
  }

  /**
   * Hands the whys of all but the newest `warmWhys` calls to the archive, one batch at a time
   * (each deflate stream holds ~0.4 MB of zlib state while it runs: a full log read at start-up
   * is 79 batches). Each record is replaced by a lean copy once its batch is deflated (a record
   * list() has already handed out is never changed under its holder).
   */
  private freezeOld(): void {
    if (this.freezing !== undefined || this.closed) return;
    const warm = this.opts.warmWhys ?? WARM_WHYS;
    const size = this.opts.freezeBatch ?? FREEZE_BATCH;
    let start: number;
    let batch: CallRecord[];
    do {
      start = Math.max(this.frozenUpTo, this.trimmed);
      const end = this.trimmed + this.records.length - warm;
      if (end - start < size) return;
      batch = this.records.slice(start - this.trimmed, start - this.trimmed + size);
      this.frozenUpTo = start + size;
    } while (batch.every((r) => r.why === undefined));
    this.freezing = freezeWhys(batch.map((r) => r.why)).then(
      (refs) => {
        refs.forEach((ref, k) => {
          const i = start + k - this.trimmed;
          const rec = batch[k]!;
          // Trimmed meanwhile, or no why: nothing to replace.
          if (ref === undefined || i < 0 || this.records[i] !== rec) return;
          const { why: _, ...lean } = rec;
          this.cold.set(lean, ref);
          this.records[i] = lean;
        });
      },
      // The batch stays as it was (objects): memory, not correctness.
      (err: unknown) => this.opts.onError(err instanceof Error ? err : new Error(String(err))),
    ).then(() => {
      this.freezing = undefined;
      this.freezeOld();
    });
  }

  hasPendingWrites(): boolean {
    return this.writes.hasPendingWrites();
  }

  /** Writes what is queued and resolves when it is durable; rejects if the write fails. */
  flush(): Promise<void> {
    return this.writes.flush();
  }

  async close(): Promise<void> {
    if (this.closed) return;
    try {
      await this.flush();
    } finally {
      this.writes.disarm();
      this.closed = true;
      if (this.fd !== null) fs.closeSync(this.fd);
      this.fd = null;
    }
  }

  /** For a process "exit" handler: what is queued reaches the file, synchronously. */
  closeSync(): void {
    if (this.closed) return;
    this.writes.disarm();
    this.closed = true;
    try {
      if (this.queued.length > 0) {
        const fd = this.descriptor();
        fs.writeSync(fd, (this.brokenLine ? "\n" : "") + this.queued.join(""));
        this.queued = [];
        fs.fdatasyncSync(fd);
      }
    } finally {
      if (this.fd !== null) fs.closeSync(this.fd);
      this.fd = null;
    }
  }

  /**
   * One batch: a synchronous write() of the queued lines to the O_APPEND descriptor (a copy to
   * the page cache; done before any await, so closeSync can never write a line twice or lose
   * one), then fdatasync off the event loop, then a rotation when the file is full.
   */
  private async writeNow(rethrow: boolean): Promise<void> {
    if (this.queued.length === 0) return;
    const lines = this.queued;
    this.queued = [];
    let written = false;
    try {
      // After a write cut short (ENOSPC…) the file ends mid-line: end that line first, so the
      // junk stays one skipped line and the first record of this batch survives.
      const buf = Buffer.from((this.brokenLine ? "\n" : "") + lines.join(""));
      let off = 0;
      try {
        const fd = this.descriptor();
        while (off < buf.length) off += fs.writeSync(fd, buf, off, buf.length - off);
      } catch (e) {
        if (off > 0) this.brokenLine = true;
        this.queued = [...lines, ...this.queued];
        throw e;
      }
      written = true;
      this.brokenLine = false;
      this.linesInCurrent += lines.length;
      const fd = this.descriptor();
      await new Promise<void>((resolve, reject) => fs.fdatasync(fd, (e) => (e ? reject(e) : resolve())));
      if (this.dirSyncDue) {
        this.dirSyncDue = false;
        await fsyncDir(path.dirname(this.file));
      }
      if (this.linesInCurrent >= this.opts.maxRecords && !this.closed) await this.rotate();
      this.lastError = null;
    } catch (e) {
      const err = e instanceof Error ? e : new Error(String(e));
      // A failed fdatasync after a complete write: the lines are in the file; only durability
      // is in doubt, and the next batch's fdatasync covers them.
      this.lastError = written ? null : err;
      if (rethrow && !written) throw err;
      this.opts.onError(err);
      if (!written) this.writes.arm(this.opts.retryDelayMs);
    }
  }

  /** The descriptor of calls.jsonl, opened (and created, owner-only) when first needed. */
  private descriptor(): number {
    if (this.fd === null) {
      this.fd = openAppend(this.file);
      this.dirSyncDue = true;
    }
    return this.fd;
  }

  /** calls.jsonl → calls.1.jsonl (replacing the older generation); the next write starts a new
   *  calls.jsonl. The renames and creations reach the disk with the directory's fsync. */
  private async rotate(): Promise<void> {
    fs.renameSync(this.file, this.previousFile);
    if (this.fd !== null) fs.closeSync(this.fd);
    this.fd = null;
    this.linesInCurrent = 0;
    await fsyncDir(path.dirname(this.file));
  }
}
