// The persistent event outbox: every event bound for the console is written to disk (fsync'd)
// before it is published, delivered in order after reconnects, removed only after the broker's
// PUBACK, and drained after a restart. MQTT.js's own stores are not durable (they
// live in memory), so this file is the only thing that makes "no event lost" true.
//
// File: <dataDir>/sync-outbox.jsonl, append-only JSON lines, one record per line:
//   {"k":"e","e":<event>}            an event (a later line with the same seq replaces it: gap markers)
//   {"k":"d","s":<seq>}              the event with this seq was delivered (PUBACK received)
//   {"k":"x","from":a,"to":b}        events a..b were dropped because the outbox was full
//   {"k":"h","next":n}               header written by compaction: the next seq to assign
// Replay applies the lines in order; a torn last line (crash mid-write) is ignored. When nothing
// is pending the file is compacted (temp file + fsync + rename) down to a header line.
//
// Sequence numbers are global and monotonic across restarts (persisted through the header), so
// the console can detect a gap by seq alone; bootId says which run produced each event.
//
// Bound policy (outboxMax): when an append would exceed the bound, the oldest events not in
// flight are dropped and replaced by ONE event of type "gap" that takes the seq of the first
// dropped event and says which seqs were lost ({from, to, count}); further drops extend it. The
// console resyncs (cmd republish) when it sees a gap event. Events in flight are never dropped,
// so the bound can be exceeded by at most the publish window.
import * as fs from "node:fs";
import * as path from "node:path";
import { keepOwnerSync } from "../store/ownership.ts";

export const OUTBOX_FILE = "sync-outbox.jsonl";

export interface OutboxEvent {
  bootId: string;
  seq: number;
  type: string;
  /** Milliseconds since the epoch when the event happened. */
  at: number;
  data: Record<string, unknown>;
}

export interface GapData extends Record<string, unknown> {
  from: number;
  to: number;
  count: number;
}

export interface OutboxOptions {
  dataDir: string;
  bootId: string;
  /** Most undelivered events kept; see the bound policy above. */
  max: number;
  /** Events are fsync'd in batches: at most this many ms after the first unsynced append. */
  batchMs?: number;
  /** Compact once this many bytes of delivered records have accumulated, even if events are pending. */
  compactBytes?: number;
  /** Compact when nothing is pending and the file is larger than this. */
  compactIdleBytes?: number;
  /** Called (after fsync) when new events became durable and may be published. */
  onDurable?: () => void;
  /** Called when a write or fsync failed; the outbox keeps the events in memory and retries. */
  onError?: (err: Error) => void;
  now?: () => number;
}

export interface OutboxStats {
  pending: number;
  durable: number;
  inFlight: number;
  /** Most events in flight at once since open. */
  peakInFlight: number;
  nextSeq: number;
  dropped: number;
  fileBytes: number;
  tornLines: number;
}

type Line = { k: "e"; e: OutboxEvent } | { k: "d"; s: number } | { k: "x"; from: number; to: number } | { k: "h"; next: number };

/** One pending event and where it is in its life. */
interface Entry {
  event: OutboxEvent;
  /** Written and fsync'd: may be published. */
  durable: boolean;
  /** Published and waiting for the PUBACK. */
  inFlight: boolean;
  /** Number of the last line written for this event: durable once a flush covers it. */
  line: number;
}

export class Outbox {
  readonly file: string;
  /** Undelivered events in seq order. */
  private entries: Entry[] = [];
  private nextSeq = 1;
  private fd: number | undefined;
  /** Lines appended but not yet written+fsync'd. */
  private unsynced: string[] = [];
  /** Lines written since open (each entry remembers the number of its latest line). */
  private lines = 0;
  private flushTimer: NodeJS.Timeout | undefined;
  private flushing: Promise<void> | undefined;
  private deliveredBytes = 0;
  private fileBytes = 0;
  private dropped = 0;
  private tornLines = 0;
  private inFlight = 0;
  private peakInFlight = 0;
  /** The file did not end with a complete line when replayed. */
  private tornTail = false;
  private closed = false;

  private constructor(private readonly opts: OutboxOptions) {
    this.file = path.join(opts.dataDir, OUTBOX_FILE);
  }

  /** Opens (creating if missing) and replays the outbox; events left from earlier runs are pending and durable. */
  static open(opts: OutboxOptions): Outbox {
    const box = new Outbox(opts);
    box.replay();
    box.fd = fs.openSync(box.file, "a", 0o600);
    keepOwnerSync(box.fd, opts.dataDir); // an agent run as root leaves it to the data directory's owner
    box.fileBytes = fs.fstatSync(box.fd).size;
    // A torn tail would glue the next append onto a broken line: rewrite the file cleanly.
    if (box.entries.length === 0 || box.tornTail) box.compact();
    return box;
  }

  private replay(): void {
    let text: string;
    try {
      text = fs.readFileSync(this.file, "utf8");
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return;
      throw err;
    }
    this.tornTail = text.length > 0 && !text.endsWith("\n");
    const bySeq = new Map<number, OutboxEvent>();
    let maxSeq = 0;
    for (const raw of text.split("\n")) {
      if (raw === "") continue;
      let line: Line;
      try {
        line = JSON.parse(raw) as Line;
      } catch {
        // Only the last line can be torn (appends are sequential); count, never fail.
        this.tornLines++;
        continue;
      }
      if (line === null || typeof line !== "object") {
        this.tornLines++;
        continue;
      }
      switch (line.k) {
        case "e":
          if (!isEvent(line.e)) {
            this.tornLines++;
            break;
          }
          bySeq.set(line.e.seq, line.e);
          maxSeq = Math.max(maxSeq, line.e.seq);
          break;
        case "d":
          bySeq.delete(line.s);
          break;
        case "x":
          for (let s = line.from; s <= line.to; s++) bySeq.delete(s);
          break;
        case "h":
          maxSeq = Math.max(maxSeq, line.next - 1);
          break;
        default:
          this.tornLines++;
      }
    }
    this.nextSeq = maxSeq + 1;
    this.entries = [...bySeq.values()].sort((a, b) => a.seq - b.seq).map((event) => ({ event, durable: true, inFlight: false, line: 0 }));
  }

  /** Adds an event; it becomes publishable once fsync'd (onDurable). Returns the event as stored. */
  append(type: string, data: Record<string, unknown>, at = (this.opts.now ?? Date.now)()): OutboxEvent {
    const event: OutboxEvent = { bootId: this.opts.bootId, seq: this.nextSeq++, type, at, data };
    this.makeRoom();
    this.write({ k: "e", e: event });
    this.entries.push({ event, durable: false, inFlight: false, line: this.lines });
    return event;
  }

  /** Drop the oldest events not in flight until one more fits; they become (or extend) one gap event. */
  private makeRoom(): void {
    const max = Math.max(1, this.opts.max);
    while (this.entries.length >= max) {
      const i = this.entries.findIndex((en) => !en.inFlight && en.event.type !== "gap");
      if (i < 0) return; // everything left is in flight or a gap marker: exceed the bound rather than lose order
      const victim = this.entries[i]!;
      const prev = i > 0 ? this.entries[i - 1] : undefined;
      this.dropped++;
      if (prev && prev.event.type === "gap" && !prev.inFlight && (prev.event.data as GapData).to === victim.event.seq - 1) {
        // Extend the gap right before it.
        const g = prev.event.data as GapData;
        prev.event = { ...prev.event, data: { from: g.from, to: victim.event.seq, count: g.count + 1 } };
        this.entries.splice(i, 1);
        this.write({ k: "x", from: victim.event.seq, to: victim.event.seq });
        this.write({ k: "e", e: prev.event });
        prev.durable = false;
        prev.line = this.lines;
      } else {
        // The victim's slot becomes the gap marker (same seq: the stream stays ordered).
        const gap: OutboxEvent = { bootId: this.opts.bootId, seq: victim.event.seq, type: "gap", at: (this.opts.now ?? Date.now)(), data: { from: victim.event.seq, to: victim.event.seq, count: 1 } };
        this.write({ k: "e", e: gap });
        this.entries[i] = { event: gap, durable: false, inFlight: false, line: this.lines };
      }
    }
  }

  /**
   * Durable events that are not in flight, oldest first, up to `limit`; each returned event is
   * marked in flight. The caller publishes them in this order.
   */
  take(limit: number): OutboxEvent[] {
    const out: OutboxEvent[] = [];
    for (const en of this.entries) {
      if (out.length >= limit) break;
      if (!en.durable) break; // keep order: nothing after an unsynced event goes out first
      if (en.inFlight) continue;
      en.inFlight = true;
      out.push(en.event);
    }
    this.inFlight += out.length;
    this.peakInFlight = Math.max(this.peakInFlight, this.inFlight);
    return out;
  }

  /** The publish failed or timed out: the event goes back to be taken again (in seq order). */
  release(seq: number): void {
    const en = this.find(seq);
    if (en?.inFlight) {
      en.inFlight = false;
      this.inFlight--;
    }
  }

  /** Every event in flight goes back (a new connection: nothing sent before counts as acknowledged). */
  releaseAll(): void {
    for (const en of this.entries) en.inFlight = false;
    this.inFlight = 0;
  }

  /** PUBACK received: the event is done. A seq no longer pending (duplicate ack) is ignored. */
  delivered(seq: number): void {
    const i = this.entries.findIndex((en) => en.event.seq === seq);
    if (i < 0) return;
    if (this.entries[i]!.inFlight) this.inFlight--;
    this.entries.splice(i, 1);
    const line = this.write({ k: "d", s: seq });
    this.deliveredBytes += line;
  }

  inFlightCount(): number {
    return this.inFlight;
  }

  /** Undelivered events (durable or not), oldest first; for status and tests. */
  pending(): readonly OutboxEvent[] {
    return this.entries.map((en) => en.event);
  }

  stats(): OutboxStats {
    return {
      pending: this.entries.length,
      durable: this.entries.filter((en) => en.durable).length,
      inFlight: this.inFlight,
      peakInFlight: this.peakInFlight,
      nextSeq: this.nextSeq,
      dropped: this.dropped,
      fileBytes: this.fileBytes,
      tornLines: this.tornLines,
    };
  }

  /** Writes and fsyncs everything appended so far; resolves when it is on disk. */
  flush(): Promise<void> {
    if (this.flushTimer) {
      clearTimeout(this.flushTimer);
      this.flushTimer = undefined;
    }
    if (this.flushing) return this.flushing.then(() => (this.unsynced.length ? this.flush() : undefined));
    if (this.unsynced.length === 0 || this.fd === undefined) return Promise.resolve();
    const lines = this.unsynced;
    const upTo = this.lines;
    this.unsynced = [];
    const fd = this.fd;
    const buf = Buffer.from(lines.join(""), "utf8");
    this.flushing = new Promise<void>((resolve) => {
      writeAll(fd, buf, (err) => {
        if (err) return this.failed(err, lines, resolve);
        fs.fdatasync(fd, (err2) => {
          if (err2) return this.failed(err2, lines, resolve);
          this.fileBytes += buf.length;
          this.flushing = undefined;
          this.synced(upTo);
          resolve();
        });
      });
    });
    return this.flushing;
  }

  /** Synchronous flush for shutdown paths. */
  flushSync(): void {
    if (this.flushTimer) clearTimeout(this.flushTimer);
    this.flushTimer = undefined;
    if (this.unsynced.length === 0 || this.fd === undefined) return;
    const buf = Buffer.from(this.unsynced.join(""), "utf8");
    this.unsynced = [];
    fs.writeSync(this.fd, buf);
    fs.fdatasyncSync(this.fd);
    this.fileBytes += buf.length;
    this.synced(this.lines);
  }

  private failed(err: Error, lines: string[], resolve: () => void): void {
    // Keep the lines for the next attempt; a partial write leaves at most a torn line that
    // replay skips (the same line is written again whole).
    this.unsynced = [...lines, ...this.unsynced];
    this.flushing = undefined;
    this.opts.onError?.(err);
    if (!this.closed) this.flushTimer = setTimeout(() => void this.flush(), 1000);
    resolve();
  }

  /** Lines up to `upTo` are on disk: their events may be published. */
  private synced(upTo: number): void {
    let any = false;
    for (const en of this.entries) {
      if (!en.durable && en.line <= upTo) {
        en.durable = true;
        any = true;
      }
    }
    // Compaction costs two fsyncs: only once the file has grown (replay handles long files).
    if (this.entries.length === 0 && this.fileBytes > (this.opts.compactIdleBytes ?? 64 * 1024)) this.compact();
    else if (this.deliveredBytes > (this.opts.compactBytes ?? 1 << 20)) this.compact();
    if (any) this.opts.onDurable?.();
    if (this.unsynced.length) this.schedule();
  }

  private write(line: Line): number {
    const text = JSON.stringify(line) + "\n";
    this.unsynced.push(text);
    this.lines++;
    this.schedule();
    return text.length;
  }

  private schedule(): void {
    if (this.closed || this.flushTimer || this.flushing) return;
    this.flushTimer = setTimeout(() => {
      this.flushTimer = undefined;
      void this.flush();
    }, this.opts.batchMs ?? 2);
  }

  /**
   * Rewrites the file as a header plus the pending events (temp + fsync + rename + dir fsync).
   * Runs only when nothing is unsynced or being flushed, so no append is lost.
   */
  private compact(): void {
    if (this.unsynced.length || this.flushing || this.fd === undefined) return;
    const tmp = `${this.file}.tmp-${process.pid}`;
    const lines = [JSON.stringify({ k: "h", next: this.nextSeq } satisfies Line), ...this.entries.filter((en) => en.durable).map((en) => JSON.stringify({ k: "e", e: en.event } satisfies Line))];
    const text = lines.join("\n") + "\n";
    try {
      const fd = fs.openSync(tmp, "w", 0o600);
      try {
        keepOwnerSync(fd, path.dirname(this.file));
        fs.writeSync(fd, text);
        fs.fsyncSync(fd);
      } finally {
        fs.closeSync(fd);
      }
      fs.renameSync(tmp, this.file);
      fsyncDir(path.dirname(this.file));
      fs.closeSync(this.fd);
      this.fd = fs.openSync(this.file, "a", 0o600);
      this.fileBytes = Buffer.byteLength(text);
      this.deliveredBytes = 0;
    } catch (err) {
      try {
        fs.rmSync(tmp, { force: true });
      } catch {
        /* best effort */
      }
      this.opts.onError?.(err as Error);
    }
  }

  /** Flushes what is left and closes the file. */
  async close(): Promise<void> {
    if (this.closed) return;
    await this.flush();
    this.closed = true;
    if (this.flushTimer) clearTimeout(this.flushTimer);
    if (this.fd !== undefined) fs.closeSync(this.fd);
    this.fd = undefined;
  }

  private find(seq: number): Entry | undefined {
    return this.entries.find((en) => en.event.seq === seq);
  }
}

function isEvent(e: unknown): e is OutboxEvent {
  if (typeof e !== "object" || e === null) return false;
  const o = e as Record<string, unknown>;
  return typeof o.bootId === "string" && Number.isSafeInteger(o.seq) && typeof o.type === "string" && typeof o.at === "number" && typeof o.data === "object" && o.data !== null;
}

function writeAll(fd: number, buf: Buffer, cb: (err: Error | null) => void, offset = 0): void {
  fs.write(fd, buf, offset, buf.length - offset, null, (err, n) => {
    if (err) return cb(err);
    if (offset + n < buf.length) return writeAll(fd, buf, cb, offset + n);
    cb(null);
  });
}

function fsyncDir(dir: string): void {
  try {
    const fd = fs.openSync(dir, "r");
    try {
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
  } catch {
    /* some filesystems refuse directory fsync; the rename is still atomic */
  }
}
