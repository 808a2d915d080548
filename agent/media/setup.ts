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
import { ANNOUNCEMENT_SOUND, HOLD_SOUND, QueueMusic } from "./queue-music.ts";
import { CONFIRM_SOUND, OFFER_SOUND } from "./callback-offer.ts";
import { MediaService } from "./service.ts";
import { decodeWav } from "./wav.ts";

/** The audio shipped with the product (audio/ at the repository root; beside dist/ when bundled). */
export function shippedAudio(name: string): string {
  const up = import.meta.url.endsWith(".ts") ? "../../" : "../";
  return fileURLToPath(new URL(`${up}audio/${name}`, import.meta.url));
}

export interface MediaPlaneHandle {
  media: MediaService;
  queueMusic: QueueMusic;
  stop(): Promise<void>;
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
 * The media worker and the queue's music on hold; undefined when queueMusic is off. The worker
 * starts (and loads its sounds) as soon as the site has a wait-for-operator group — at start,
 * or when a site with one is applied — so the first caller in a queue hears music at once, and
 * an agent without queues pays nothing for it.
 */
export function startMedia(s: Settings, proxy: StatefulProxyApi, log: Logger, site: { bus: EventBus; hasQueue: () => boolean }): MediaPlaneHandle | undefined {
  if (!s.queueMusic) return undefined;
  const range = parsePortRange(s.mediaPorts);
  if (!range.ok) throw new Error(`mediaPorts ${range.reason}`); // validated by loadSettings already
  let hold = shippedAudio("hold.wav");
  if (s.queueMusicFile !== "") {
    // Checked once here, at start, so a bad file is reported where the operator looks.
    const why = checkWav(s.queueMusicFile);
    if (why === undefined) hold = s.queueMusicFile;
    else log.error("queueMusicFile cannot be played; playing the shipped tune", { file: s.queueMusicFile, reason: why });
  }
  const sounds: Record<string, string> = { [HOLD_SOUND]: hold };
  if (s.queueAnnouncement || s.queueAnnouncementIntervalS > 0) sounds[ANNOUNCEMENT_SOUND] = shippedAudio("queue-welcome.wav");
  // The callback offer's prompts (media/callback-offer.ts): small, loaded whether or not a group offers callbacks yet.
  sounds[OFFER_SOUND] = shippedAudio("callback-offer.wav");
  sounds[CONFIRM_SOUND] = shippedAudio("callback-confirm.wav");
  const media = new MediaService({ portMin: range.min, portMax: range.max, log, sounds });
  if (site.hasQueue()) media.start();
  const off = site.bus.on("site.applied", () => {
    if (site.hasQueue()) media.start();
  });
  const queueMusic = new QueueMusic({
    proxy,
    media,
    mediaAddress: (flow) => (s.mediaAddress !== "" ? s.mediaAddress : advertisedAddress(flow, s.sipAdvertise)),
    contact: (flow) => `<sip:${hostPort(advertisedAddress(flow, s.sipAdvertise), flow.localPort)}${flow.transport === "tcp" ? ";transport=tcp" : ""}>`,
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
