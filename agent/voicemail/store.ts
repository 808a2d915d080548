// The mailbox store: voicemail messages under the data directory, one folder per mailbox.
//
//   <dataDir>/voicemail/boxes/<user|group>/<id>/<msg>.wav            the recording (8 kHz mono 16-bit)
//   <dataDir>/voicemail/boxes/<user|group>/<id>/<msg>.json           its metadata (written last)
//   <dataDir>/voicemail/boxes/<user|group>/<id>/<msg>.pending.json   a deposit in progress
//   <dataDir>/voicemail/boxes/<user|group>/<id>/<msg>.wav.part       the recording being written
//   <dataDir>/voicemail/greetings/<file>.wav                          mailboxes' own greetings
//
// A message exists when its .json does; the .json is written (tmp + fsync + rename + directory
// fsync) only after the media worker has finalized the WAV under its final name (the worker's
// own atomic rename, media/recorder.ts). So a listing never shows a half-written file, and a
// crash at any point leaves one of: nothing, a .pending.json with a .wav.part (the recording
// was cut: both removed at the next start), or a .pending.json with a complete .wav (the commit
// was cut: finished at the next start from the WAV itself). Metadata that does not parse is
// renamed *.corrupt and not listed; a WAV without metadata nor pending deposit is removed.
//
// Quotas: a deposit is refused before anything is written when the mailbox holds maxMessages
// (deposits in progress count). Retention: messages older than retentionDays are removed at
// start, hourly, and when a site is applied. Every change of a mailbox's counts emits
// voicemail.changed (the message-waiting notifier's input, voicemail/types.ts).
//
// Writes while the agent runs are asynchronous (temporary file, fsync, rename, folder fsync off
// the event loop: an fsync on slow flash must not hold up other calls' signalling); the map the
// listings come from changes only once the write is durable. Only the recovery at start, before
// any call, works synchronously.
import { createHash, randomBytes } from "node:crypto";
import fs, { promises as fsp } from "node:fs";
import path from "node:path";
import type { EventBus } from "../bus.ts";
import type { Logger } from "../log.ts";
import { decodeWav } from "../media/wav.ts";
import { fsyncDir, fsyncDirSync, writeFileAtomic } from "../store/atomic-file.ts";
import { keepOwnerSync, mkdirOwned, mkdirOwnedSync } from "../store/ownership.ts";
import type { MailboxConfig } from "../routing/model.ts";
import { parseMailboxRef } from "../routing/model.ts";
import type { MailboxCounts, MailboxOwner, VoicemailCounts } from "./types.ts";

/** Recordings shorter than this are not kept (a caller who hung up at the tone). */
export const MIN_MESSAGE_MS = 500;
export const MESSAGE_ID_RE = /^[0-9]{8}T[0-9]{6}Z-[0-9a-f]{8}$/;
const DAY_MS = 86_400_000;
const SWEEP_EVERY_MS = 3_600_000;
/** Metadata files larger than this are not metadata. */
const META_MAX_BYTES = 16 * 1024;

export type MessageStatus = "new" | "heard" | "saved";

export interface VoicemailMessage {
  id: string;
  /** "user/<id>" or "group/<id>". */
  mailbox: string;
  /** Who called, as the call log shows it. */
  caller: string;
  callId: string;
  /** Epoch ms the recording started. */
  receivedAt: number;
  durationMs: number;
  bytes: number;
  /** SHA-256 (hex) of the WAV file. */
  sha256: string;
  status: MessageStatus;
}

/** A deposit between begin() and complete()/abandon(). */
export interface PendingMessage {
  id: string;
  owner: MailboxOwner;
  caller: string;
  callId: string;
  receivedAt: number;
  /** Where the media worker writes, and what it renames that to when the recording stops. */
  tmpPath: string;
  finalPath: string;
}

export type BeginResult = { ok: true; pending: PendingMessage } | { ok: false; reason: "disabled" | "full" | "io"; detail: string };

export interface VoicemailStoreOptions {
  dataDir: string;
  /** The applied site's mailbox settings; undefined when the owner has no enabled mailbox. */
  mailbox: (owner: MailboxOwner) => MailboxConfig | undefined;
  bus?: EventBus;
  log?: Logger;
  now?: () => number;
}

export function ownerRef(o: MailboxOwner): string {
  return `${o.kind}/${o.id}`;
}

/** "user/<id>" / "group/<id>" → the owner; undefined when malformed (a CLI argument, a push). */
export const parseOwnerRef: (ref: string) => MailboxOwner | undefined = parseMailboxRef;

export class VoicemailStore implements VoicemailCounts {
  readonly root: string;
  private readonly boxes: string;
  private readonly messages = new Map<string, VoicemailMessage>();
  /** Deposits in progress per mailbox ref (they count against the quota). */
  private readonly inProgress = new Map<string, number>();
  private timer: NodeJS.Timeout | undefined;
  private offSite: (() => void) | undefined;
  private readonly now: () => number;

  constructor(private readonly opts: VoicemailStoreOptions) {
    this.root = path.join(opts.dataDir, "voicemail");
    this.boxes = path.join(this.root, "boxes");
    this.now = opts.now ?? Date.now;
  }

  /** Folder of a mailbox's own greetings. */
  get greetingsDir(): string {
    return path.join(this.root, "greetings");
  }

  /** Loads every mailbox, finishing or removing what a restart interrupted; sweeps; starts the hourly sweep. */
  start(): void {
    // A root tool (the offline CLI, a trial run) leaves what it makes to the data directory's owner.
    mkdirOwnedSync(this.boxes, this.opts.dataDir);
    mkdirOwnedSync(this.greetingsDir, this.opts.dataDir);
    this.recover();
    const sweep = (): void => void this.sweep().catch((err: Error) => this.opts.log?.error("voicemail retention sweep failed", { err: err.message }));
    sweep();
    this.timer = setInterval(sweep, SWEEP_EVERY_MS);
    this.timer.unref();
    this.offSite = this.opts.bus?.on("site.applied", sweep);
  }

  stop(): void {
    if (this.timer !== undefined) clearInterval(this.timer);
    this.timer = undefined;
    this.offSite?.();
    this.offSite = undefined;
  }

  // --- reading --------------------------------------------------------------------------------

  counts(owner: MailboxOwner): MailboxCounts | undefined {
    if (this.opts.mailbox(owner) === undefined) return undefined;
    return this.countOf(ownerRef(owner));
  }

  /** Messages, oldest first; of one mailbox when given. */
  list(owner?: MailboxOwner): VoicemailMessage[] {
    const ref = owner === undefined ? undefined : ownerRef(owner);
    return [...this.messages.values()].filter((m) => ref === undefined || m.mailbox === ref).sort((a, b) => a.receivedAt - b.receivedAt || a.id.localeCompare(b.id)).map((m) => ({ ...m }));
  }

  /** Where a message's recording is. */
  audioPath(m: VoicemailMessage): string {
    return this.wavPath(m);
  }

  get(id: string): VoicemailMessage | undefined {
    const m = MESSAGE_ID_RE.test(id) ? this.messages.get(id) : undefined;
    return m === undefined ? undefined : { ...m };
  }

  /**
   * A message's recording checked against its SHA-256 (streamed: a ten-minute file never holds
   * the event loop), or why it cannot be given.
   */
  async verifyAudio(id: string): Promise<{ ok: true; message: VoicemailMessage } | { ok: false; error: string }> {
    const m = this.get(id);
    if (m === undefined) return { ok: false, error: MESSAGE_ID_RE.test(id) ? `no message ${id}` : `"${id.slice(0, 40).replace(/[^\x20-\x7e]/g, "?")}" is not a message id` };
    const hash = createHash("sha256");
    try {
      for await (const chunk of fs.createReadStream(this.wavPath(m))) hash.update(chunk as Buffer);
    } catch (err) {
      return { ok: false, error: `cannot read the recording: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}` };
    }
    const sha = hash.digest("hex");
    if (sha !== m.sha256) return { ok: false, error: `the recording of ${id} is damaged (SHA-256 ${sha} is not ${m.sha256})` };
    return { ok: true, message: m };
  }

  /** Up to `length` bytes of a message's recording from `offset` (no check: see verifyAudio). */
  async readAudioRange(m: VoicemailMessage, offset: number, length: number): Promise<Buffer> {
    const fh = await fsp.open(this.wavPath(m), "r");
    try {
      const buf = Buffer.alloc(Math.max(0, Math.min(length, m.bytes - offset)));
      const { bytesRead } = await fh.read(buf, 0, buf.length, offset);
      return buf.subarray(0, bytesRead);
    } finally {
      await fh.close();
    }
  }

  // --- deposits -------------------------------------------------------------------------------

  /** Reserves a message in a mailbox (quota checked, nothing written when refused). */
  async begin(owner: MailboxOwner, info: { caller: string; callId: string }): Promise<BeginResult> {
    const cfg = this.opts.mailbox(owner);
    const ref = ownerRef(owner);
    if (cfg === undefined) return { ok: false, reason: "disabled", detail: `${ref} has no enabled mailbox` };
    const c = this.countOf(ref);
    const busy = this.inProgress.get(ref) ?? 0;
    if (c.newMessages + c.oldMessages + busy >= cfg.maxMessages) return { ok: false, reason: "full", detail: `${ref} holds ${cfg.maxMessages} messages` };
    const at = this.now();
    const id = `${new Date(at).toISOString().replace(/[-:]/g, "").replace(/\.[0-9]+Z$/, "Z")}-${randomBytes(4).toString("hex")}`;
    const dir = this.dirOf(owner);
    const pending: PendingMessage = {
      id,
      owner: { ...owner },
      caller: clean(info.caller, 128),
      callId: clean(info.callId, 256),
      receivedAt: at,
      tmpPath: path.join(dir, `${id}.wav.part`),
      finalPath: path.join(dir, `${id}.wav`),
    };
    // Reserved before the write: deposits that begin meanwhile see it in the quota.
    this.inProgress.set(ref, busy + 1);
    try {
      await mkdirOwned(dir, this.opts.dataDir);
      await writeFileAtomic(path.join(dir, `${id}.pending.json`), JSON.stringify({ id, mailbox: ref, caller: pending.caller, callId: pending.callId, receivedAt: at }) + "\n");
    } catch (err) {
      this.release(pending);
      return { ok: false, reason: "io", detail: (err as NodeJS.ErrnoException).code ?? (err as Error).message };
    }
    return { ok: true, pending };
  }

  /**
   * The worker finalized the recording at pending.finalPath: its metadata is written and the
   * message is listed. Too short a recording is dropped instead (undefined).
   */
  async complete(p: PendingMessage, rec: { samples: number; bytes: number; sha256: string }): Promise<VoicemailMessage | undefined> {
    const durationMs = Math.round(rec.samples / 8);
    if (durationMs < MIN_MESSAGE_MS) {
      this.release(p);
      await this.removeDeposit(p);
      return undefined;
    }
    const m: VoicemailMessage = { id: p.id, mailbox: ownerRef(p.owner), caller: p.caller, callId: p.callId, receivedAt: p.receivedAt, durationMs, bytes: rec.bytes, sha256: rec.sha256, status: "new" };
    try {
      await this.writeMeta(m);
      await fsp.rm(path.join(path.dirname(p.finalPath), `${p.id}.pending.json`), { force: true });
    } catch (err) {
      // Left as a pending deposit with its WAV: the next start finishes it.
      this.release(p);
      this.opts.log?.error("voicemail metadata not written; finished at the next start", { id: p.id, err: (err as Error).message });
      return undefined;
    }
    this.messages.set(m.id, m);
    this.release(p);
    this.changed(p.owner);
    return { ...m };
  }

  /** The deposit ended without a message (no recording, a failure): everything of it removed. */
  abandon(p: PendingMessage): void {
    this.release(p);
    void this.removeDeposit(p);
  }

  // --- operations (the CLI now, listening later) ----------------------------------------------

  markHeard(id: string): Promise<VoicemailMessage | undefined> {
    return this.setStatus(id, "heard", (s) => s === "new");
  }

  save(id: string): Promise<VoicemailMessage | undefined> {
    return this.setStatus(id, "saved", () => true);
  }

  async delete(id: string): Promise<boolean> {
    const m = MESSAGE_ID_RE.test(id) ? this.messages.get(id) : undefined;
    if (m === undefined) return false;
    // Unlisted at once; metadata removed first: a crash between the two leaves an orphan WAV,
    // removed at the next start.
    this.messages.delete(id);
    await fsp.rm(this.metaPath(m), { force: true });
    await fsp.rm(this.wavPath(m), { force: true });
    await fsyncDir(path.dirname(this.metaPath(m))).catch(() => undefined);
    const owner = parseOwnerRef(m.mailbox);
    if (owner !== undefined) this.changed(owner);
    return true;
  }

  /** Removes messages past their mailbox's retention; returns how many. */
  async sweep(): Promise<number> {
    const now = this.now();
    let removed = 0;
    for (const m of [...this.messages.values()]) {
      const owner = parseOwnerRef(m.mailbox);
      const days = owner === undefined ? undefined : this.opts.mailbox(owner)?.retentionDays;
      if (days === undefined || days <= 0 || m.receivedAt > now - days * DAY_MS) continue;
      if (await this.delete(m.id)) removed++;
    }
    if (removed > 0) this.opts.log?.info("voicemail retention: old messages removed", { removed });
    return removed;
  }

  // --- internals ------------------------------------------------------------------------------

  private async setStatus(id: string, status: MessageStatus, when: (s: MessageStatus) => boolean): Promise<VoicemailMessage | undefined> {
    const m = MESSAGE_ID_RE.test(id) ? this.messages.get(id) : undefined;
    if (m === undefined) return undefined;
    if (!when(m.status) || m.status === status) return { ...m };
    const next = { ...m, status };
    await this.writeMeta(next);
    if (this.messages.get(id) !== m) return undefined; // deleted (or changed) meanwhile
    this.messages.set(id, next);
    const owner = parseOwnerRef(m.mailbox);
    if (owner !== undefined && m.status === "new") this.changed(owner);
    return { ...next };
  }

  private countOf(ref: string): MailboxCounts {
    let n = 0;
    let o = 0;
    for (const m of this.messages.values()) {
      if (m.mailbox !== ref) continue;
      if (m.status === "new") n++;
      else o++;
    }
    return { newMessages: n, oldMessages: o };
  }

  private changed(owner: MailboxOwner): void {
    const c = this.countOf(ownerRef(owner));
    this.opts.bus?.emit("voicemail.changed", { mailbox: { ...owner }, at: this.now(), ...c });
  }

  private release(p: PendingMessage): void {
    const ref = ownerRef(p.owner);
    const n = (this.inProgress.get(ref) ?? 0) - 1;
    if (n > 0) this.inProgress.set(ref, n);
    else this.inProgress.delete(ref);
  }

  private async removeDeposit(p: PendingMessage): Promise<void> {
    for (const f of [p.tmpPath, p.finalPath, path.join(path.dirname(p.finalPath), `${p.id}.pending.json`)]) await fsp.rm(f, { force: true }).catch(() => undefined);
  }

  private dirOf(owner: MailboxOwner): string {
    return path.join(this.boxes, owner.kind, owner.id);
  }

  private metaPath(m: VoicemailMessage): string {
    const owner = parseOwnerRef(m.mailbox)!;
    return path.join(this.dirOf(owner), `${m.id}.json`);
  }

  private wavPath(m: VoicemailMessage): string {
    const owner = parseOwnerRef(m.mailbox)!;
    return path.join(this.dirOf(owner), `${m.id}.wav`);
  }

  private writeMeta(m: VoicemailMessage): Promise<void> {
    return writeFileAtomic(this.metaPath(m), JSON.stringify(m, null, 2) + "\n");
  }

  /** Reads every mailbox folder; finishes or removes interrupted deposits (header comment). */
  private recover(): void {
    for (const kind of ["user", "group"] as const) {
      const kindDir = path.join(this.boxes, kind);
      for (const id of readDirQuiet(kindDir)) {
        const owner = parseOwnerRef(`${kind}/${id}`);
        if (owner === undefined) continue;
        this.recoverBox(owner);
      }
    }
  }

  private recoverBox(owner: MailboxOwner): void {
    const dir = this.dirOf(owner);
    const files = new Set(readDirQuiet(dir));
    const log = this.opts.log;
    for (const f of files) {
      // Leftovers of an atomic write that was cut: never the live file.
      if (/\.tmp-[0-9]+(-w)?$/.test(f)) rmQuiet(path.join(dir, f));
    }
    for (const f of files) {
      const pm = /^(.+)\.pending\.json$/.exec(f);
      if (pm === null || !MESSAGE_ID_RE.test(pm[1]!)) continue;
      const id = pm[1]!;
      const pendingFile = path.join(dir, f);
      rmQuiet(path.join(dir, `${id}.wav.part`));
      const wav = path.join(dir, `${id}.wav`);
      const info = readJsonQuiet(pendingFile);
      const finished = files.has(`${id}.wav`) && !files.has(`${id}.json`) ? finishFromWav(wav) : undefined;
      if (finished !== undefined && info !== undefined && finished.durationMs >= MIN_MESSAGE_MS) {
        const m: VoicemailMessage = {
          id,
          mailbox: ownerRef(owner),
          caller: clean(String(info.caller ?? "unknown"), 128),
          callId: clean(String(info.callId ?? ""), 256),
          receivedAt: typeof info.receivedAt === "number" && Number.isFinite(info.receivedAt) ? info.receivedAt : this.now(),
          ...finished,
          status: "new",
        };
        writeJsonAtomicSync(this.metaPath(m), m);
        files.add(`${id}.json`);
        log?.info("voicemail: a message whose commit a restart interrupted was kept", { id, mailbox: m.mailbox });
      } else if (!files.has(`${id}.json`)) {
        rmQuiet(wav);
        files.delete(`${id}.wav`);
        log?.info("voicemail: a recording a restart interrupted was removed", { id, mailbox: ownerRef(owner) });
      }
      rmQuiet(pendingFile);
    }
    for (const f of files) {
      if (f.endsWith(".wav.part")) {
        rmQuiet(path.join(dir, f));
        continue;
      }
      const mm = /^(.+)\.json$/.exec(f);
      if (mm !== null && MESSAGE_ID_RE.test(mm[1]!)) {
        const m = parseMeta(readJsonQuiet(path.join(dir, f)), mm[1]!, ownerRef(owner));
        if (m === undefined || !files.has(`${m.id}.wav`)) {
          log?.warn("voicemail: unreadable message metadata (or its recording is missing) set aside", { file: path.join(dir, f) });
          renameQuiet(path.join(dir, f), path.join(dir, `${f}.corrupt`));
          continue;
        }
        this.messages.set(m.id, m);
      }
    }
    for (const f of files) {
      const wm = /^(.+)\.wav$/.exec(f);
      if (wm !== null && MESSAGE_ID_RE.test(wm[1]!) && !this.messages.has(wm[1]!)) rmQuiet(path.join(dir, f));
    }
  }
}

/** Duration, size and SHA-256 of a complete WAV; undefined when it is not one. */
function finishFromWav(file: string): { durationMs: number; bytes: number; sha256: string } | undefined {
  let bytes: Buffer;
  try {
    bytes = fs.readFileSync(file);
  } catch {
    return undefined;
  }
  const wav = decodeWav(bytes);
  if (!wav.ok) return undefined;
  return { durationMs: Math.round(wav.samples.length / 8), bytes: bytes.length, sha256: createHash("sha256").update(bytes).digest("hex") };
}

function parseMeta(v: Record<string, unknown> | undefined, id: string, mailbox: string): VoicemailMessage | undefined {
  if (v === undefined || v.id !== id || v.mailbox !== mailbox) return undefined;
  const { caller, callId, receivedAt, durationMs, bytes, sha256, status } = v;
  if (typeof caller !== "string" || typeof callId !== "string" || typeof sha256 !== "string" || !/^[0-9a-f]{64}$/.test(sha256)) return undefined;
  if (![receivedAt, durationMs, bytes].every((n) => typeof n === "number" && Number.isFinite(n) && n >= 0)) return undefined;
  if (status !== "new" && status !== "heard" && status !== "saved") return undefined;
  return { id, mailbox, caller: clean(caller, 128), callId: clean(callId, 256), receivedAt: receivedAt as number, durationMs: durationMs as number, bytes: bytes as number, sha256, status };
}

function clean(s: string, max: number): string {
  return s.replace(/[\x00-\x1f\x7f]/g, "").slice(0, max);
}

/** tmp + fsync + rename + directory fsync, synchronously: only for the recovery at start. */
function writeJsonAtomicSync(file: string, value: unknown): void {
  const tmp = `${file}.tmp-${process.pid}`;
  const fd = fs.openSync(tmp, "w", 0o640);
  try {
    keepOwnerSync(fd, path.dirname(file));
    fs.writeSync(fd, JSON.stringify(value, null, 2) + "\n");
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  fs.renameSync(tmp, file);
  fsyncDirSync(path.dirname(file));
}

function readJsonQuiet(file: string): Record<string, unknown> | undefined {
  try {
    const st = fs.statSync(file);
    if (!st.isFile() || st.size > META_MAX_BYTES) return undefined;
    const v: unknown = JSON.parse(fs.readFileSync(file, "utf8"));
    return typeof v === "object" && v !== null && !Array.isArray(v) ? (v as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

function readDirQuiet(dir: string): string[] {
  try {
    return fs.readdirSync(dir);
  } catch {
    return [];
  }
}

function rmQuiet(file: string): void {
  try {
    fs.rmSync(file, { force: true });
  } catch {
    // a folder, or permissions: left for the installer
  }
}

function renameQuiet(from: string, to: string): void {
  try {
    fs.renameSync(from, to);
  } catch {
    // left where it is; it is not listed either way
  }
}
