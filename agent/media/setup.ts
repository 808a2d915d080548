// Wiring of the media plane into the agent (agent.ts): the media worker with the sounds it
// plays, and music on hold for the routing engine's queue. Kept here so agent.ts only calls it.
import { fileURLToPath } from "node:url";
import { parsePortRange, type Settings } from "../config.ts";
import type { EventBus } from "../bus.ts";
import type { Logger } from "../log.ts";
import type { Group } from "../routing/model.ts";
import { advertisedAddress } from "../sip/advertise.ts";
import type { StatefulProxyApi } from "../sip/proxy-types.ts";
import { hostPort } from "../sip/requests.ts";
import type { Flow } from "../sip/types.ts";
import { ANNOUNCEMENT_SOUND, HOLD_SOUND, QueueMusic } from "./queue-music.ts";
import { positionSoundFiles } from "./queue-position.ts";
import { CONFIRM_SOUND, OFFER_SOUND } from "./callback-offer.ts";
import { MediaService } from "./service.ts";
import { checkSoundFile, pruneSoundCache, siteSoundsOf, soundFile } from "./site-sounds.ts";

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

/** Why a WAV file cannot be played, or undefined when it can (site-sounds.ts: readable, at most 16 MiB, a WAV the plane plays). */
export function checkWav(file: string): string | undefined {
  return checkSoundFile(file);
}

/** The worker's name of a group's own music or prompt. */
export function siteSoundName(groupId: string, which: "music" | "prompt"): string {
  return `site-${which}-${groupId}`;
}

/** The address media is bound to and advertised at for a call, and the Contact of the appliance's 183. */
export function mediaEndpoints(s: Settings): { mediaAddress: (flow: Flow) => string; contact: (flow: Flow) => string } {
  return {
    mediaAddress: (flow) => (s.mediaAddress !== "" ? s.mediaAddress : advertisedAddress(flow, s.sipAdvertise)),
    contact: (flow) => `<sip:${hostPort(advertisedAddress(flow, s.sipAdvertise), flow.localPort)}${flow.transport === "tcp" ? ";transport=tcp" : ""}>`,
  };
}

/**
 * The media worker and the queue's music on hold (none when queueMusic is off: the worker is
 * then started by the first call that needs it, e.g. a voicemail deposit). The worker
 * starts (and loads its sounds) as soon as the site has a wait-for-operator group — at start,
 * or when a site with one is applied — so the first caller in a queue hears music at once, and
 * an agent without queues pays nothing for it.
 */
export function startMedia(s: Settings, proxy: StatefulProxyApi, log: Logger, site: { bus: EventBus; hasQueue: () => boolean; groups?: () => readonly Group[] }): MediaPlaneHandle {
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
  // The position prompts are small (about 300 KB in all): always loaded, so a group may turn them on.
  Object.assign(sounds, positionSoundFiles(shippedAudio));
  // The callback offer's prompts (media/callback-offer.ts): small, loaded whether or not a group offers callbacks yet.
  sounds[OFFER_SOUND] = shippedAudio("callback-offer.wav");
  sounds[CONFIRM_SOUND] = shippedAudio("callback-confirm.wav");
  const media = new MediaService({ portMin: range.min, portMax: range.max, log, sounds });
  /** Groups' own sounds (checked and cached when the site was applied, site-sounds.ts). */
  let siteNames = new Set<string>();
  const loadSiteSounds = (): void => {
    const now = new Set<string>();
    for (const x of siteSoundsOf(site.groups?.() ?? [])) {
      const name = siteSoundName(x.groupId, x.which);
      now.add(name);
      media.preload(name, soundFile(x.sound, s.dataDir));
    }
    // Sounds no group names any more are not played, nor reloaded by a new worker.
    for (const name of siteNames) if (!now.has(name)) media.forget(name);
    siteNames = now;
  };
  loadSiteSounds();
  if (site.hasQueue()) media.start();
  const off = site.bus.on("site.applied", () => {
    loadSiteSounds();
    const pruned = pruneSoundCache(s.dataDir, site.groups?.() ?? []);
    if (pruned > 0) log.info("site sounds no group names any more removed from the cache", { count: pruned });
    if (site.hasQueue()) media.start();
  });
  const groupOptions = (groupId: string): { music?: string; prompt?: string; announcePosition?: boolean } | undefined => {
    const a = site.groups?.().find((g) => g.id === groupId)?.noAnswer;
    if (a?.kind !== "wait-for-operator") return undefined;
    const o: { music?: string; prompt?: string; announcePosition?: boolean } = {};
    if (a.music !== undefined) o.music = siteSoundName(groupId, "music");
    if (a.prompt !== undefined) o.prompt = siteSoundName(groupId, "prompt");
    if (a.announcePosition !== undefined) o.announcePosition = a.announcePosition;
    return o;
  };
  const queueMusic = new QueueMusic({
    proxy,
    media,
    ...mediaEndpoints(s),
    log,
    announceFirst: s.queueAnnouncement,
    announceEveryMs: s.queueAnnouncementIntervalS * 1000,
    announcePosition: s.queueAnnouncePosition,
    groupOptions,
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
