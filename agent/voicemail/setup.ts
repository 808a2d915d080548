// Wiring of voicemail into the agent (agent.ts): the mailbox store over the applied site's
// mailboxes, and deposits for the routing engine (EngineDeps.mailboxes). Kept here so agent.ts
// only calls it.
import type { EventBus } from "../bus.ts";
import type { Settings } from "../config.ts";
import type { Logger } from "../log.ts";
import { mediaEndpoints, shippedAudio } from "../media/setup.ts";
import type { MediaService } from "../media/service.ts";
import { mailboxOf, type SiteIndex } from "../routing/model.ts";
import type { StatefulProxyApi } from "../sip/proxy-types.ts";
import type { UasDialogs } from "../sip/uas-session.ts";
import { VoicemailDeposits } from "./deposit.ts";
import { VoicemailListening } from "./listen.ts";
import { VoicemailStore } from "./store.ts";

export interface VoicemailHandle {
  store: VoicemailStore;
  deposits: VoicemailDeposits;
  /** Listening from the owner's phone (the voicemail code). */
  listening: VoicemailListening;
  stop(): void;
}

export function startVoicemail(s: Settings, deps: { bus: EventBus; proxy: StatefulProxyApi; uas: UasDialogs; media: MediaService; site: () => SiteIndex; log: Logger }): VoicemailHandle {
  const mailbox = (owner: { kind: "user" | "group"; id: string }) => mailboxOf(deps.site(), owner);
  const store = new VoicemailStore({ dataDir: s.dataDir, mailbox, bus: deps.bus, log: deps.log });
  store.start();
  const deposits = new VoicemailDeposits({
    proxy: deps.proxy,
    uas: deps.uas,
    media: deps.media,
    store,
    mailbox,
    ...mediaEndpoints(s),
    shippedAudio,
    bus: deps.bus,
    log: deps.log,
  });
  const listening = new VoicemailListening({ proxy: deps.proxy, uas: deps.uas, media: deps.media, store, ...mediaEndpoints(s), shippedAudio, log: deps.log });
  return {
    store,
    deposits,
    listening,
    stop: () => {
      deposits.stopAll();
      listening.stopAll();
      store.stop();
    },
  };
}
