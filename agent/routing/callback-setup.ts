// Wiring of callbacks for impatient callers into the agent (agent.ts only calls this): the
// originator of the agent's own calls (sip/originate.ts), the callback service, and the offer
// on the queue's music (media/callback-offer.ts, only with the media plane).
import type { EventBus } from "../bus.ts";
import type { Settings } from "../config.ts";
import type { Logger } from "../log.ts";
import { CallbackOffer } from "../media/callback-offer.ts";
import type { MediaPlaneHandle } from "../media/setup.ts";
import { Originator } from "../sip/originate.ts";
import type { ClientTransactionCallbacks, SendRequestOptions, SendRequestResult } from "../sip/transaction.ts";
import type { Flow, SipRequest } from "../sip/types.ts";
import { CallbackService } from "./callback-service.ts";
import type { RoutingSite } from "./engine.ts";

export interface CallbackWiring {
  service: CallbackService;
  originator: Originator;
  /** The engine's queueMedia: music plus the offer (keys by RFC 4733 and SIP INFO); undefined without music on hold. */
  queueMedia: CallbackOffer | undefined;
  stop(): Promise<void>;
}

export function wireCallbacks(d: {
  settings: Settings;
  media: MediaPlaneHandle | undefined;
  transactions: { sendRequest(req: SipRequest, flow: Flow, cb: ClientTransactionCallbacks, o?: SendRequestOptions): SendRequestResult; createBranch(): string };
  send: (flow: Flow, bytes: Buffer) => void;
  site: () => RoutingSite;
  bus: EventBus;
  log: Logger;
}): CallbackWiring {
  const originator = new Originator({
    sendRequest: (req, flow, cb, o) => d.transactions.sendRequest(req, flow, cb, o),
    createBranch: () => d.transactions.createBranch(),
    send: d.send,
    log: d.log,
  });
  const service = new CallbackService({ dataDir: d.settings.dataDir, site: d.site, originator, bus: d.bus, log: d.log, sipAdvertise: d.settings.sipAdvertise, ringUnitMs: d.settings.ringUnitMs });
  const music = d.media?.queueMusic;
  const offer =
    d.media === undefined || music === undefined
      ? undefined
      : new CallbackOffer({
          music,
          media: d.media.media,
          settings: (g) => service.settingsOf(g),
          callable: (pc) => service.callable(pc),
          onAccepted: (pc) => service.accepted(pc),
          log: d.log,
        });
  return {
    service,
    originator,
    queueMedia: offer,
    stop: async () => {
      await service.stop();
      originator.stop();
    },
  };
}
