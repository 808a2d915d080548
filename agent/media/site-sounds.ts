// A site's own sounds: the hold music and the queue prompt a group's wait-for-operator action
// names (model.ts SiteSound). Checked when a site is applied, before anything changes:
//
// - { path }: a file on the appliance (site file). It must be a regular file the agent can read,
//   at most SITE_SOUND_MAX_BYTES, and a WAV the media plane plays (wav.ts decodeWav).
// - { url, sha256 }: a file the console serves (console push). Fetched over http or https only,
//   no redirects, bounded in size and time, its SHA-256 compared with the push's, checked as a
//   WAV, then written atomically to <dataDir>/sounds/<sha256>.wav. A file already in the cache
//   with that content is used without fetching, so an agent whose console is away keeps its
//   sounds across restarts and re-applies.
//
// Any problem refuses the apply with an error at the sound's JSON path (site.ts prepare hook),
// so a console push is acknowledged only once every sound it names is in place. Hostile input:
// sizes are checked while the body streams (not after), a slow server is cut off at the
// deadline, a URL never carries credentials into logs (model.ts refuses them).
import { createHash } from "node:crypto";
import fs from "node:fs";
import fsp from "node:fs/promises";
import http from "node:http";
import https from "node:https";
import path from "node:path";
import type { Group, SiteSound } from "../routing/model.ts";
import type { SiteError } from "../site/types.ts";
import { writeFileAtomic } from "../store/atomic-file.ts";
import { mkdirOwned } from "../store/ownership.ts";
import { decodeWav } from "./wav.ts";

/** Largest site sound accepted (about 17 minutes of 8 kHz 16-bit mono). */
export const SITE_SOUND_MAX_BYTES = 16 * 1024 * 1024;
/** Longest a fetch may take, connection to last byte. */
export const SITE_SOUND_FETCH_TIMEOUT_MS = 20_000;
export const SOUND_CACHE_DIR = "sounds";

export interface FetchLimits {
  maxBytes: number;
  timeoutMs: number;
}

const DEFAULT_LIMITS: FetchLimits = { maxBytes: SITE_SOUND_MAX_BYTES, timeoutMs: SITE_SOUND_FETCH_TIMEOUT_MS };

/** Where the cached copy of a fetched sound lives. */
export function cachedSoundPath(dataDir: string, sha256: string): string {
  return path.join(dataDir, SOUND_CACHE_DIR, `${sha256}.wav`);
}

/** The file the media worker reads for a site sound. */
export function soundFile(sound: SiteSound, dataDir: string): string {
  return "path" in sound ? sound.path : cachedSoundPath(dataDir, sound.sha256);
}

/** Why these bytes cannot be played, or undefined when they can. */
export function checkSoundBytes(bytes: Uint8Array, maxBytes = SITE_SOUND_MAX_BYTES): string | undefined {
  if (bytes.length > maxBytes) return `larger than ${maxBytes} bytes`;
  const r = decodeWav(bytes);
  return r.ok ? undefined : `not a WAV file the media plane plays: ${r.reason}`;
}

/** Why the file at `file` cannot be played, or undefined when it can (size checked before reading). */
export function checkSoundFile(file: string, maxBytes = SITE_SOUND_MAX_BYTES): string | undefined {
  let st: fs.Stats;
  try {
    st = fs.statSync(file);
  } catch (err) {
    return `cannot read ${file} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`;
  }
  if (!st.isFile()) return `${file} is not a regular file`;
  if (st.size > maxBytes) return `${file} is larger than ${maxBytes} bytes`;
  let bytes: Buffer;
  try {
    bytes = fs.readFileSync(file);
  } catch (err) {
    return `cannot read ${file} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`;
  }
  const why = checkSoundBytes(bytes, maxBytes);
  return why === undefined ? undefined : `${file}: ${why}`;
}

export function sha256Of(bytes: Uint8Array): string {
  return createHash("sha256").update(bytes).digest("hex");
}

/** Fetches a URL's body (http/https, 200 only, no redirects, bounded size and time). Never rejects. */
export function fetchBytes(url: string, limits: FetchLimits = DEFAULT_LIMITS): Promise<{ ok: true; bytes: Buffer } | { ok: false; reason: string }> {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    return Promise.resolve({ ok: false, reason: "not a URL" });
  }
  const lib = u.protocol === "http:" ? http : u.protocol === "https:" ? https : undefined;
  if (lib === undefined) return Promise.resolve({ ok: false, reason: `${u.protocol} is not http or https` });
  return new Promise((resolve) => {
    let settled = false;
    const done = (r: { ok: true; bytes: Buffer } | { ok: false; reason: string }): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      req.destroy();
      resolve(r);
    };
    const timer = setTimeout(() => done({ ok: false, reason: `no complete answer within ${limits.timeoutMs} ms` }), limits.timeoutMs);
    const req = lib.get(u, { headers: { accept: "audio/wav, audio/x-wav, */*" } }, (res) => {
      const status = res.statusCode ?? 0;
      if (status !== 200) {
        res.resume();
        done({ ok: false, reason: status >= 300 && status < 400 ? `HTTP ${status}: redirects are not followed` : `HTTP ${status}` });
        return;
      }
      const declared = Number(res.headers["content-length"]);
      if (Number.isFinite(declared) && declared > limits.maxBytes) {
        done({ ok: false, reason: `larger than ${limits.maxBytes} bytes (Content-Length ${declared})` });
        return;
      }
      const chunks: Buffer[] = [];
      let size = 0;
      res.on("data", (c: Buffer) => {
        size += c.length;
        if (size > limits.maxBytes) done({ ok: false, reason: `larger than ${limits.maxBytes} bytes` });
        else chunks.push(c);
      });
      res.on("end", () => done({ ok: true, bytes: Buffer.concat(chunks) }));
      res.on("error", (e) => done({ ok: false, reason: e.message }));
      res.on("aborted", () => done({ ok: false, reason: "the connection closed before the end of the file" }));
    });
    req.on("error", (e: NodeJS.ErrnoException) => done({ ok: false, reason: e.code ?? e.message }));
  });
}

/**
 * Makes a site sound ready to play: a path is checked; a URL's file is taken from the cache when
 * it is there with the right content, else fetched, verified and cached. The reason when not.
 */
export async function ensureSound(sound: SiteSound, dataDir: string, limits: FetchLimits = DEFAULT_LIMITS): Promise<string | undefined> {
  if ("path" in sound) return checkSoundFile(sound.path, limits.maxBytes);
  const file = cachedSoundPath(dataDir, sound.sha256);
  try {
    const cached = await fsp.readFile(file);
    if (sha256Of(cached) === sound.sha256 && checkSoundBytes(cached, limits.maxBytes) === undefined) return undefined;
  } catch {
    // not cached yet
  }
  const got = await fetchBytes(sound.url, limits);
  if (!got.ok) return `cannot fetch ${sound.url}: ${got.reason}`;
  const sha = sha256Of(got.bytes);
  if (sha !== sound.sha256) return `${sound.url} has SHA-256 ${sha}, not the ${sound.sha256} the site names`;
  const why = checkSoundBytes(got.bytes, limits.maxBytes);
  if (why !== undefined) return `${sound.url}: ${why}`;
  try {
    // Off the event loop, durable, and the data directory owner's even when a root tool applies.
    await mkdirOwned(path.dirname(file), dataDir);
    await writeFileAtomic(file, got.bytes);
  } catch (err) {
    return `cannot cache ${sound.url} under ${path.dirname(file)}: ${(err as Error).message}`;
  }
  return undefined;
}

/** Every sound the groups name, with its JSON path in the site snapshot. */
export function siteSoundsOf(groups: readonly Group[]): Array<{ at: string; groupId: string; which: "music" | "prompt"; sound: SiteSound }> {
  const out: Array<{ at: string; groupId: string; which: "music" | "prompt"; sound: SiteSound }> = [];
  groups.forEach((g, i) => {
    const a = g.noAnswer;
    if (a.kind !== "wait-for-operator") return;
    if (a.music !== undefined) out.push({ at: `groups[${i}].noAnswer.music`, groupId: g.id, which: "music", sound: a.music });
    if (a.prompt !== undefined) out.push({ at: `groups[${i}].noAnswer.prompt`, groupId: g.id, which: "prompt", sound: a.prompt });
  });
  return out;
}

/**
 * Checks (and fetches) every sound a site names; the errors, by JSON path, that refuse its apply.
 * Each distinct file is looked at once, all at the same time (so the whole takes about as long
 * as the slowest fetch, at most SITE_SOUND_FETCH_TIMEOUT_MS).
 */
export async function prepareSiteSounds(groups: readonly Group[], dataDir: string, limits: FetchLimits = DEFAULT_LIMITS): Promise<SiteError[]> {
  const seen = new Map<string, Promise<string | undefined>>();
  const checks = siteSoundsOf(groups).map((s) => {
    const key = "path" in s.sound ? `path:${s.sound.path}` : `url:${s.sound.sha256}:${s.sound.url}`;
    let p = seen.get(key);
    if (p === undefined) seen.set(key, (p = ensureSound(s.sound, dataDir, limits)));
    return { s, p };
  });
  const errors: SiteError[] = [];
  for (const { s, p } of checks) {
    const why = await p;
    if (why !== undefined) errors.push({ code: "invalid-sound", path: `${s.at}.${"path" in s.sound ? "path" : "url"}`, message: why });
  }
  return errors;
}

/** Removes cached sounds no group names any more (after an apply); returns how many. */
export function pruneSoundCache(dataDir: string, groups: readonly Group[]): number {
  const keep = new Set(siteSoundsOf(groups).flatMap((s) => ("sha256" in s.sound ? [`${s.sound.sha256}.wav`] : [])));
  const dir = path.join(dataDir, SOUND_CACHE_DIR);
  let names: string[];
  try {
    names = fs.readdirSync(dir);
  } catch {
    return 0;
  }
  let n = 0;
  for (const f of names) {
    if (keep.has(f) || !/^[0-9a-f]{64}\.wav$/.test(f)) continue;
    try {
      fs.unlinkSync(path.join(dir, f));
      n++;
    } catch {
      // gone already
    }
  }
  return n;
}
