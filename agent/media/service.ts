// The main thread's side of the media plane: starts the media worker (worker.ts), sends it
// commands and dispatches its events to the session that asked. The signalling thread only
// posts small messages; sockets, pacing and G.711 run in the worker. A worker that dies is
// restarted on the next open(); the sessions it held are reported closed.
import { Worker } from "node:worker_threads";
import type { Logger } from "../log.ts";
import type { MediaCommand, MediaEvent, SessionStats, WorkerConfig } from "./protocol.ts";
import type { AudioChoice } from "./sdp.ts";

export interface SessionEvents {
  onDigit?(digit: string): void;
  onPlayEnded?(sound: string): void;
  /** A digit sent with dtmf() went out completely. */
  onDtmfSent?(digit: string): void;
  /** A recording stopped and its file is complete (record()). */
  onRecorded?(r: Extract<MediaEvent, { ev: "recorded" }>): void;
  onRecordFailed?(reason: string): void;
  onClosed?(stats: SessionStats | undefined): void;
}

/** What the worker needs to open a stream: the local address and the codec and peer the SDP offer/answer chose. */
export type OpenRequest = Omit<AudioChoice, "index"> & {
  /** Local address to bind and advertise (an IP literal). */
  address: string;
};

/** The stream for an offer's chosen audio (sdp.ts chooseAudio), bound on `address`. */
export function openRequestFor(address: string, choice: AudioChoice): OpenRequest {
  return { address, law: choice.law, payloadType: choice.payloadType, telephoneEvent: choice.telephoneEvent, remoteAddress: choice.remoteAddress, remotePort: choice.remotePort, direction: choice.direction };
}

export interface MediaServiceOptions {
  portMin: number;
  portMax: number;
  log: Logger;
  /** Sounds loaded at start: name → WAV path. */
  sounds?: Record<string, string>;
  /** Bound on a worker answer to open, ms (default 5000). */
  openTimeoutMs?: number;
}

interface Pending {
  resolve: (r: { ok: true; port: number } | { ok: false; reason: string }) => void;
  timer: NodeJS.Timeout;
  events: SessionEvents;
}

/** Where the worker's code is: beside this module from the sources, beside the bundle when built. */
function workerSpec(): { code: string | URL; eval: boolean } {
  const here = import.meta.url;
  if (here.endsWith(".ts")) {
    // Running from the sources under tsx (bin/ringedge.js, tests): the worker loads tsx itself.
    const tsx = import.meta.resolve("tsx/esm/api");
    const target = new URL("./worker.ts", here).href;
    return { code: `import(${JSON.stringify(tsx)}).then((m) => { m.register(); return import(${JSON.stringify(target)}); });`, eval: true };
  }
  // The esbuild bundle (dist/ringedge.mjs) ships dist/media-worker.mjs beside it (Makefile).
  return { code: new URL("./media-worker.mjs", here), eval: false };
}

let sessionSeq = 0;

export class MediaService {
  private worker: Worker | undefined;
  private readonly pending = new Map<string, Pending>();
  private readonly open = new Map<string, SessionEvents>();
  private readonly loaded = new Set<string>();
  private readonly loadWaiters = new Map<string, Array<(r: { ok: true } | { ok: false; reason: string }) => void>>();
  private stopped = false;
  /** Sound name → WAV path, loaded by every worker that starts. */
  private readonly sounds: Map<string, string>;

  constructor(private readonly opts: MediaServiceOptions) {
    this.sounds = new Map(Object.entries(opts.sounds ?? {}));
  }

  /** Starts the worker and loads the sounds (so the first caller hears music at once). Idempotent. */
  start(): void {
    this.stopped = false;
    this.ensureWorker();
  }

  /** Whether the worker runs (or is starting). */
  running(): boolean {
    return this.worker !== undefined;
  }

  /** Ends every session (RTCP BYE) and the worker. */
  async stop(): Promise<void> {
    this.stopped = true;
    const w = this.worker;
    this.worker = undefined;
    for (const [id, p] of this.pending) {
      clearTimeout(p.timer);
      p.resolve({ ok: false, reason: "media stopped" });
      this.pending.delete(id);
    }
    for (const [id, ev] of this.open) {
      this.open.delete(id);
      ev.onClosed?.(undefined);
    }
    for (const sound of [...this.loadWaiters.keys()]) this.settleLoad(sound, { ok: false, reason: "media stopped" });
    if (w === undefined) return;
    const exited = new Promise<void>((resolve) => w.once("exit", () => resolve()));
    w.postMessage("shutdown");
    const t = setTimeout(() => void w.terminate(), 1000);
    await exited;
    clearTimeout(t);
  }

  /** A sound no longer played: has() is false for it and a new worker does not load it. */
  forget(sound: string): void {
    this.sounds.delete(sound);
    this.loaded.delete(sound);
  }

  /** forget(), and the worker drops the sound's samples too (one not played by any session now). */
  unload(sound: string): void {
    this.forget(sound);
    this.post({ op: "unload", sound });
  }

  /** Sounds the worker has loaded (names). */
  has(sound: string): boolean {
    return this.loaded.has(sound);
  }

  sessionCount(): number {
    return this.open.size;
  }

  /** Opens a stream: a port pair bound in the worker. Never rejects. */
  openSession(req: OpenRequest, events: SessionEvents): Promise<{ ok: true; id: string; port: number } | { ok: false; reason: string }> {
    const w = this.ensureWorker();
    if (w === undefined) return Promise.resolve({ ok: false, reason: "media stopped" });
    const id = `m${++sessionSeq}`;
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        this.post({ op: "close", id });
        resolve({ ok: false, reason: "media worker did not answer in time" });
      }, this.opts.openTimeoutMs ?? 5000);
      this.pending.set(id, { resolve: (r) => resolve(r.ok ? { ok: true, id, port: r.port } : r), timer, events });
      this.post({ op: "open", id, ...req });
    });
  }

  /**
   * Registers a sound (or replaces it) under `sound`: loaded now if a worker runs, and by every
   * worker that starts. Never starts one (an agent whose site needs no media runs no worker).
   */
  preload(sound: string, path: string): void {
    this.sounds.set(sound, path);
    this.post({ op: "load", sound, path });
  }

  /**
   * Loads (or replaces) a sound under `sound` now, starting the worker if needed, and again
   * whenever a new worker starts (prompts loaded on first use). Resolves when the worker has
   * it, or with why not.
   */
  load(sound: string, path: string): Promise<{ ok: true } | { ok: false; reason: string }> {
    this.sounds.set(sound, path);
    const w = this.ensureWorker();
    if (w === undefined) return Promise.resolve({ ok: false, reason: "media stopped" });
    return new Promise((resolve) => {
      const list = this.loadWaiters.get(sound) ?? [];
      list.push(resolve);
      this.loadWaiters.set(sound, list);
      w.postMessage({ op: "load", sound, path } satisfies MediaCommand);
    });
  }

  /** Records what the far end sends (protocol.ts "record"); the outcome comes as onRecorded / onRecordFailed. */
  record(id: string, r: { tmpPath: string; finalPath: string; maxMs: number; silenceMs: number; stopDigit: string | undefined }): void {
    if (this.open.has(id)) this.post({ op: "record", id, ...r });
  }

  stopRecording(id: string): void {
    if (this.open.has(id)) this.post({ op: "stop-record", id });
  }

  play(id: string, sound: string, loop: boolean): void {
    if (this.open.has(id)) this.post({ op: "play", id, sound, loop });
  }

  /** Stops what plays on a session (silence follows; no play-ended). */
  stopPlaying(id: string): void {
    if (this.open.has(id)) this.post({ op: "stop", id });
  }

  /** Plays sounds back to back (the last one looping when `loopLast`): prompts, then music. */
  sequence(id: string, sounds: string[], loopLast: boolean): void {
    if (this.open.has(id)) this.post({ op: "sequence", id, sounds, loopLast });
  }

  /** Sends DTMF digits as RFC 4733 telephone-events (when the offer had telephone-event). */
  dtmf(id: string, digits: string, durationMs: number): void {
    if (this.open.has(id)) this.post({ op: "dtmf", id, digits, durationMs });
  }

  /** Ends a session; its ports are free once the worker closed it. Idempotent. */
  close(id: string): void {
    const p = this.pending.get(id);
    if (p !== undefined) {
      clearTimeout(p.timer);
      this.pending.delete(id);
      p.resolve({ ok: false, reason: "closed before it opened" });
    }
    this.post({ op: "close", id });
  }

  private settleLoad(sound: string, r: { ok: true } | { ok: false; reason: string }): void {
    const list = this.loadWaiters.get(sound);
    this.loadWaiters.delete(sound);
    for (const resolve of list ?? []) resolve(r);
  }

  private post(c: MediaCommand): void {
    this.worker?.postMessage(c);
  }

  private ensureWorker(): Worker | undefined {
    if (this.stopped) return undefined;
    if (this.worker !== undefined) return this.worker;
    const spec = workerSpec();
    const config: WorkerConfig = { portMin: this.opts.portMin, portMax: this.opts.portMax, cname: `ringedge@${process.pid}` };
    const w = new Worker(spec.code, { eval: spec.eval, workerData: config });
    this.worker = w;
    w.unref();
    w.on("message", (ev: MediaEvent) => this.onEvent(ev));
    w.on("error", (err) => this.opts.log.error("media worker failed", { err: err.message }));
    w.on("exit", (code) => {
      if (this.worker !== w) return;
      this.worker = undefined;
      this.loaded.clear();
      if (!this.stopped) this.opts.log.error("media worker exited; restarting it on the next call", { code });
      for (const [id, p] of this.pending) {
        clearTimeout(p.timer);
        this.pending.delete(id);
        p.resolve({ ok: false, reason: "media worker exited" });
      }
      for (const [id, ev] of this.open) {
        this.open.delete(id);
        ev.onClosed?.(undefined);
      }
      for (const sound of [...this.loadWaiters.keys()]) this.settleLoad(sound, { ok: false, reason: "media worker exited" });
    });
    for (const [sound, path] of this.sounds) w.postMessage({ op: "load", sound, path } satisfies MediaCommand);
    return w;
  }

  private onEvent(ev: MediaEvent): void {
    switch (ev.ev) {
      case "ready":
        this.opts.log.debug("media worker ready");
        return;
      case "loaded":
        this.loaded.add(ev.sound);
        this.opts.log.debug("sound loaded", { sound: ev.sound, frames: ev.frames });
        this.settleLoad(ev.sound, { ok: true });
        return;
      case "load-failed":
        this.opts.log.error("sound not loaded", { sound: ev.sound, reason: ev.reason });
        this.settleLoad(ev.sound, { ok: false, reason: ev.reason });
        return;
      case "recorded":
        this.open.get(ev.id)?.onRecorded?.(ev);
        return;
      case "record-failed":
        this.opts.log.warn("recording failed", { session: ev.id, reason: ev.reason });
        this.open.get(ev.id)?.onRecordFailed?.(ev.reason);
        return;
      case "opened": {
        const p = this.pending.get(ev.id);
        if (p === undefined) {
          // Nobody waits any more (timed out, closed): free it.
          this.post({ op: "close", id: ev.id });
          return;
        }
        clearTimeout(p.timer);
        this.pending.delete(ev.id);
        this.open.set(ev.id, p.events);
        p.resolve({ ok: true, port: ev.port });
        return;
      }
      case "open-failed": {
        const p = this.pending.get(ev.id);
        if (p === undefined) return;
        clearTimeout(p.timer);
        this.pending.delete(ev.id);
        p.resolve({ ok: false, reason: ev.reason });
        return;
      }
      case "latched":
        this.opts.log.debug("media: RTP latched", { session: ev.id, address: ev.address, port: ev.port });
        return;
      case "digit":
        this.open.get(ev.id)?.onDigit?.(ev.digit);
        return;
      case "play-ended":
        this.open.get(ev.id)?.onPlayEnded?.(ev.sound);
        return;
      case "dtmf-sent":
        this.open.get(ev.id)?.onDtmfSent?.(ev.digit);
        return;
      case "closed": {
        const events = this.open.get(ev.id);
        this.open.delete(ev.id);
        this.opts.log.debug("media session closed", { session: ev.id, ...ev.stats });
        events?.onClosed?.(ev.stats);
        return;
      }
      case "error":
        this.opts.log.warn("media worker", { message: ev.message });
        return;
    }
  }
}
