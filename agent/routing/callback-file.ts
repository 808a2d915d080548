// Pending callbacks on disk (<dataDir>/callbacks.json), so an agent restart keeps every
// caller's promised callback and its place. The store's checksummed envelope (atomic-file.ts)
// and its write-behind (write-behind.ts): a change is written within delayMs, by tmp + fsync +
// rename, never two writes at once. Read once at start and checked entry by entry
// (callback.ts parseCallbacks); a damaged or hand-edited file is set aside as
// callbacks.json.corrupt-<time> with one clear error in the log, and the agent starts with
// none: losing promised callbacks is bad, refusing to start the switchboard is worse.
import fs from "node:fs";
import path from "node:path";
import type { Logger } from "../log.ts";
import { decodeEnvelope, encodeEnvelope, writeFileAtomic } from "../store/atomic-file.ts";
import { WriteBehind } from "../store/write-behind.ts";
import { parseCallbacks, type PendingCallback } from "./callback.ts";

export const CALLBACKS_FILE = "callbacks.json";
const SCHEMA_VERSION = 1;

export type CallbacksLoad = { callbacks: PendingCallback[]; setAside?: string; problem?: string };

/** Reads the file; never throws. A file that cannot be used is renamed aside (its new path in setAside). */
export function loadCallbacks(file: string, log: Logger, now: Date = new Date()): CallbacksLoad {
  let text: string;
  try {
    text = fs.readFileSync(file, "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return { callbacks: [] };
    const problem = `cannot read it (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`;
    log.error("pending callbacks not loaded", { file, reason: problem });
    return { callbacks: [], problem };
  }
  const r = decodeEnvelope(text);
  let problem: string;
  if (r.kind === "envelope") {
    if (r.envelope.schemaVersion !== SCHEMA_VERSION) problem = `unknown schemaVersion ${r.envelope.schemaVersion}`;
    else {
      const p = parseCallbacks(r.envelope.data);
      if (p.ok) return { callbacks: p.value };
      problem = p.error;
    }
  } else if (r.kind === "corrupt") problem = r.reason;
  else problem = "not a ringedge envelope";
  const aside = `${file}.corrupt-${now.toISOString().replace(/[:.]/g, "-")}`;
  try {
    fs.renameSync(file, aside);
  } catch (err) {
    log.error("pending callbacks file unusable and could not be set aside", { file, reason: problem, err: (err as Error).message });
    return { callbacks: [], problem };
  }
  log.error("pending callbacks file unusable: set aside, starting with no pending callbacks", { file, reason: problem, setAside: aside });
  return { callbacks: [], setAside: aside, problem };
}

/** Write-behind saver of the current list (what `snapshot` returns when the write runs). */
export class CallbacksFile {
  private dirty = false;
  private lastError: Error | null = null;
  private closed = false;
  private readonly wb: WriteBehind;

  constructor(
    readonly file: string,
    private readonly snapshot: () => unknown,
    private readonly log: Logger,
    delayMs = 200,
  ) {
    this.wb = new WriteBehind({
      delayMs,
      write: (rethrow) => this.write(rethrow),
      pending: () => this.dirty,
      lastError: () => this.lastError,
      closed: () => this.closed,
    });
  }

  static in(dataDir: string, snapshot: () => unknown, log: Logger): CallbacksFile {
    return new CallbacksFile(path.join(dataDir, CALLBACKS_FILE), snapshot, log);
  }

  changed(): void {
    this.dirty = true;
    this.wb.arm();
  }

  /** Writes what is pending and stops (agent stop). */
  async close(): Promise<void> {
    try {
      await this.wb.flush();
    } finally {
      this.closed = true;
      this.wb.disarm();
    }
  }

  private async write(rethrow: boolean): Promise<void> {
    this.dirty = false;
    try {
      await writeFileAtomic(this.file, encodeEnvelope(this.snapshot(), SCHEMA_VERSION, new Date()));
      this.lastError = null;
    } catch (err) {
      this.dirty = true;
      this.lastError = err as Error;
      if (rethrow) throw err;
      this.log.error("pending callbacks not saved; retrying", { file: this.file, err: (err as Error).message });
      this.wb.arm(1000);
    }
  }
}
