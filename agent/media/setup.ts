// Wiring of the media plane into the agent (agent.ts): the media worker with the sounds it
// plays, and music on hold for the routing engine's queue. Kept here so agent.ts only calls it.
import fs from "node:fs";
import { fileURLToPath } from "node:url";
import { parsePortRange, type Settings } from "../config.ts";
import type { EventBus } from "../bus.ts";
import type { Logger } from "../log.ts";
import { advertisedAddress } from "../sip/advertise.ts";
import type { StatefulProxyApi } from "../sip/proxy-types.ts";
import { hostPort } from "../sip/requests.ts";
import type { Flow } from "../sip/types.ts";
import { ANNOUNCEMENT_SOUND, HOLD_SOUND, QueueMusic } from "./queue-music.ts";
import { MediaService } from "./service.ts";
import { decodeWav } from "./wav.ts";

/** The audio shipped with the product (audio/ at the repository root; beside dist/ when bundled). */
export function shippedAudio(name: string): string {
  const up = import.meta.url.endsWith(".ts") ? "../../" : "../";
  return fileURLToPath(new URL(`${up}audio/${name}`, import.meta.url));
}

export interface MediaPlaneHandle {
  media: MediaService;
  /** Undefined when the queueMusic setting is off. */
  queueMusic: QueueMusic | undefined;
  stop(): Promise<void>;
}

/** The local IP literal media binds and advertises for a call that came in on `flow`. */
export function mediaAddressFor(s: Settings): (flow: Flow) => string {
  return (flow) => (s.mediaAddress !== "" ? s.mediaAddress : advertisedAddress(flow, s.sipAdvertise));
}

/** Contact URI (with <>) of responses the appliance sends itself on `flow` (RFC 3261 §12.1.1). */
export function contactFor(s: Settings): (flow: Flow) => string {
  return (flow) => `<sip:${hostPort(advertisedAddress(flow, s.sipAdvertise), flow.localPort)}${flow.transport === "tcp" ? ";transport=tcp" : ""}>`;
}

/** Why a WAV file cannot be played, or undefined when it can. */
export function checkWav(file: string): string | undefined {
  let bytes: Buffer;
  try {
    bytes = fs.readFileSync(file);
  } catch (err) {
    return `cannot read it (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`;
  }
  const r = decodeWav(bytes);
  return r.ok ? undefined : r.reason;
}

/**
 * The media worker and the queue's music on hold (none when queueMusic is off: the worker is
 * then started by the first call that needs it, e.g. a voicemail deposit). The worker
 * starts (and loads its sounds) as soon as the site has a wait-for-operator group — at start,
 * or when a site with one is applied — so the first caller in a queue hears music at once, and
 * an agent without queues pays nothing for it.
 */
export function startMedia(s: Settings, proxy: StatefulProxyApi, log: Logger, site: { bus: EventBus; hasQueue: () => boolean }): MediaPlaneHandle {
  const range = parsePortRange(s.mediaPorts);
  if (!range.ok) throw new Error(`mediaPorts ${range.reason}`); // validated by loadSettings already
  if (!s.queueMusic) {
    const media = new MediaService({ portMin: range.min, portMax: range.max, log });
    return { media, queueMusic: undefined, stop: () => media.stop() };
  }
  let hold = shippedAudio("hold.wav");
  if (s.queueMusicFile !== "") {
    // Checked once here, at start, so a bad file is reported where the operator looks.
    const why = checkWav(s.queueMusicFile);
    if (why === undefined) hold = s.queueMusicFile;
    else log.error("queueMusicFile cannot be played; playing the shipped tune", { file: s.queueMusicFile, reason: why });
  }
  const sounds: Record<string, string> = { [HOLD_SOUND]: hold };
  if (s.queueAnnouncement || s.queueAnnouncementIntervalS > 0) sounds[ANNOUNCEMENT_SOUND] = shippedAudio("queue-welcome.wav");
  const media = new MediaService({ portMin: range.min, portMax: range.max, log, sounds });
  if (site.hasQueue()) media.start();
  const off = site.bus.on("site.applied", () => {
    if (site.hasQueue()) media.start();
  });
  const queueMusic = new QueueMusic({
    proxy,
    media,
    mediaAddress: mediaAddressFor(s),
    contact: contactFor(s),
    log,
    announceFirst: s.queueAnnouncement,
    announceEveryMs: s.queueAnnouncementIntervalS * 1000,
  });
  return {
    media,
    queueMusic,
    stop: async () => {
      off();
      await media.stop();
    },
  };
}
