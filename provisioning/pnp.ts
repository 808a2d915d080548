// SIP plug-and-play responder (draft-ietf-sipping-config-framework, as the phone vendors
// implement it; provisioning.md §1). A booting phone multicasts
//   SUBSCRIBE sip:MAC%3a000413A11FA7@224.0.1.75   Event: ua-profile;profile-type="device";...
// to 224.0.1.75:5060; we answer 200 OK, then send a NOTIFY (Event: ua-profile,
// Subscription-State: terminated;reason=timeout, Content-Type: application/url) whose body is the
// provisioning URL. RFC 6080 specifies content indirection (RFC 4483); the vendors use
// application/url, so that is what is sent.
//
// Off by default and bound to one configured interface: a rogue responder can take over phones
// (provisioning.md §4.6), and so can anyone answering here, so the responder hands out a
// per-device URL only while that phone's bootstrap is still open (the caller's urlFor decides).
// Replies go to the packet's source address only (never to a host named in the message), so the
// responder cannot be used to reflect traffic at a third party.

import dgram from "node:dgram";
import net from "node:net";
import type { Logger } from "../agent/log.ts";
import { getHeader, headerParams, parseDatagram, unquote } from "../agent/sip/message.ts";
import { parseUri, unescapeUser } from "../agent/sip/uri.ts";
import { encodeResponse } from "../agent/sip/serialize.ts";
import { randomToken } from "../agent/sip/requests.ts";
import { createBranch } from "../agent/sip/transaction.ts";
import type { SipRequest } from "../agent/sip/types.ts";
import type { SeenPhoneNote } from "./directory.ts";
import { resolveModel, type Profile } from "./profiles.ts";
import { normaliseMac } from "./render.ts";
import { BurstLimiter } from "./ratelimit.ts";

export const PNP_MULTICAST_GROUP = "224.0.1.75";
const MAX_DATAGRAM = 4096;

export interface PnpSubscription {
  /** From the Request-URI ("MAC%3a0004…" / "MAC0015…") or the From user. */
  mac?: string;
  vendor?: string;
  model?: string;
  firmware?: string;
  /** The packet's source. */
  source: { address: string; port: number };
}

export type PnpParse = { ok: true; sub: PnpSubscription } | { ok: false; status?: number; reason: string };

function macFromUser(user: string | undefined): string | undefined {
  if (!user) return undefined;
  const m = /^MAC:?([0-9A-Fa-f]{12})$/i.exec(unescapeUser(user));
  return m ? normaliseMac(m[1]) : undefined;
}

/**
 * Check a request is a ua-profile SUBSCRIBE for a device profile and pull out its clues.
 * `status` is set when the request deserves an error response (RFC 6665 §8.2.1: 489 Bad Event).
 */
export function parsePnpSubscribe(req: SipRequest, source: { address: string; port: number }): PnpParse {
  if (req.method !== "SUBSCRIBE") return { ok: false, reason: `method ${req.method}` };
  const event = getHeader(req, "event");
  if (event === undefined) return { ok: false, status: 489, reason: "no Event header" };
  const semi = event.indexOf(";");
  // RFC 6665 §8.2.1: event-type tokens compare case-sensitively.
  const type = (semi >= 0 ? event.slice(0, semi) : event).trim();
  if (type !== "ua-profile") return { ok: false, status: 489, reason: `event ${type.slice(0, 40)}` };
  const params = headerParams(event);
  const profileType = params.get("profile-type");
  if (profileType !== undefined && profileType !== null && unquote(profileType).toLowerCase() !== "device") return { ok: false, status: 489, reason: `profile-type ${unquote(profileType).slice(0, 40)}` };
  const sub: PnpSubscription = { source };
  const mac = macFromUser(parseUri(req.uri)?.user) ?? macFromUser(parseUri(req.from.uri)?.user);
  if (mac) sub.mac = mac;
  const clue = (name: string): string | undefined => {
    const v = params.get(name);
    if (v === undefined || v === null) return undefined;
    const s = unquote(v);
    return /^[\x20-\x7e]{1,64}$/.test(s) ? s : undefined;
  };
  const vendor = clue("vendor");
  const model = clue("model");
  const firmware = clue("version");
  if (vendor) sub.vendor = vendor;
  if (model) sub.model = model;
  if (firmware) sub.firmware = firmware;
  return { ok: true, sub };
}

/**
 * Where the NOTIFY goes: the packet's source address (never another host), on the port the
 * phone's Contact or Via names when those name that same address, else the source port.
 */
export function notifyTarget(req: SipRequest, source: { address: string; port: number }): { address: string; port: number } {
  const contact = getHeader(req, "contact");
  const cu = contact ? parseUri(contact.replace(/^[^<]*<([^>]*)>.*$/, "$1")) : undefined;
  if (cu && cu.host.replace(/^\[|\]$/g, "") === source.address && cu.port) return { address: source.address, port: cu.port };
  const via = req.via[0];
  if (via && via.host.replace(/^\[|\]$/g, "") === source.address && via.port) return { address: source.address, port: via.port };
  return source;
}

/** The NOTIFY carrying the URL, in the dialog the SUBSCRIBE created (RFC 6665 §4.2.2). */
export function buildPnpNotify(req: SipRequest, args: { url: string; toTag: string; local: { address: string; port: number }; target: { address: string; port: number }; branch: string }): Buffer {
  const hp = (a: string, p: number): string => `${net.isIPv6(a) ? `[${a}]` : a}:${p}`;
  const contact = getHeader(req, "contact");
  const contactUri = contact ? /<([^>]*)>/.exec(contact)?.[1] ?? contact.split(";")[0]!.trim() : undefined;
  // Request-URI: the phone's Contact when it is on the source address, else sip:<source>.
  const cu = contactUri ? parseUri(contactUri) : undefined;
  const ruri = cu && cu.host.replace(/^\[|\]$/g, "") === args.target.address ? contactUri! : `sip:${hp(args.target.address, args.target.port)}`;
  const body = args.url;
  const lines = [
    `NOTIFY ${ruri} SIP/2.0`,
    `Via: SIP/2.0/UDP ${hp(args.local.address, args.local.port)};branch=${args.branch};rport`,
    "Max-Forwards: 70",
    // From/To swap the SUBSCRIBE's: we are the notifier (RFC 6665 §4.2.2).
    `From: ${req.to.raw};tag=${args.toTag}`,
    `To: ${req.from.raw}`,
    `Call-ID: ${req.callId}`,
    `CSeq: 1 NOTIFY`,
    `Contact: <sip:${hp(args.local.address, args.local.port)}>`,
    `Event: ${getHeader(req, "event") ?? "ua-profile"}`,
    "Subscription-State: terminated;reason=timeout",
    "User-Agent: ringedge",
    "Content-Type: application/url",
    `Content-Length: ${Buffer.byteLength(body)}`,
    "",
    body,
  ];
  return Buffer.from(lines.join("\r\n"));
}

export interface PnpOptions {
  /** IPv4 address of the interface to listen on (joined to the group there). */
  interfaceAddress: string;
  port: number;
  group?: string;
  /** The URL to hand this phone, or undefined to stay silent (e.g. provisioning is down). */
  urlFor: (sub: PnpSubscription) => string | undefined;
  log: Logger;
  /** NOTIFY retransmission start interval over UDP (RFC 3261 §17.1.2.2 Timer E = T1). */
  t1Ms?: number;
  /** SUBSCRIBE bursts per source: at most `max` in `windowMs`, then ignored for `blockMs`. */
  burst?: { max: number; windowMs: number; blockMs: number };
}

export class PnpResponder {
  private rx: dgram.Socket | undefined;
  private tx: dgram.Socket | undefined;
  /** SUBSCRIBE branch → the To tag we answered with: a retransmission gets the same 200, no second NOTIFY. */
  private readonly answered = new Map<string, string>();
  /** NOTIFY branch → its retransmission timer (until a response arrives or Timer F). */
  private readonly pending = new Map<string, NodeJS.Timeout>();
  private readonly limiter: BurstLimiter;
  readonly stats = { subscribes: 0, notifies: 0, acknowledged: 0, ignored: 0 };

  constructor(private readonly opts: PnpOptions) {
    const b = opts.burst ?? { max: 10, windowMs: 10_000, blockMs: 60_000 };
    this.limiter = new BurstLimiter({ ...b, maxTracked: 4096 });
  }

  async start(): Promise<void> {
    const group = this.opts.group ?? PNP_MULTICAST_GROUP;
    // Receive: bound to the group address, so unicast traffic to the port is not ours; reuseAddr
    // lets it share the port with a SIP socket bound to a unicast address.
    const rx = dgram.createSocket({ type: "udp4", reuseAddr: true });
    const tx = dgram.createSocket({ type: "udp4" });
    this.rx = rx;
    this.tx = tx;
    rx.on("message", (buf, rinfo) => this.onDatagram(buf, rinfo));
    tx.on("message", (buf) => this.onTxDatagram(buf));
    rx.on("error", (e) => this.opts.log.warn("PnP socket error", { err: e.message }));
    tx.on("error", (e) => this.opts.log.warn("PnP socket error", { err: e.message }));
    await new Promise<void>((resolve, reject) => {
      rx.once("error", reject);
      rx.bind(this.opts.port, group, () => {
        rx.off("error", reject);
        resolve();
      });
    });
    rx.addMembership(group, this.opts.interfaceAddress);
    await new Promise<void>((resolve, reject) => {
      tx.once("error", reject);
      tx.bind(0, this.opts.interfaceAddress, () => {
        tx.off("error", reject);
        resolve();
      });
    });
    this.opts.log.info("PnP responder listening", { group: `${group}:${this.opts.port}`, interface: this.opts.interfaceAddress });
  }

  async stop(): Promise<void> {
    for (const t of this.pending.values()) clearTimeout(t);
    this.pending.clear();
    await Promise.all(
      [this.rx, this.tx].map(
        (s) =>
          new Promise<void>((resolve) => {
            if (!s) return resolve();
            try {
              s.close(() => resolve());
            } catch {
              resolve();
            }
          }),
      ),
    );
    this.rx = this.tx = undefined;
  }

  private onDatagram(buf: Buffer, rinfo: dgram.RemoteInfo): void {
    const source = { address: rinfo.address, port: rinfo.port };
    if (buf.length > MAX_DATAGRAM) return this.ignore(source, "oversized datagram");
    if (this.limiter.isBlocked(source.address)) return void this.stats.ignored++;
    const parsed = parseDatagram(buf);
    if (!parsed.ok || parsed.message.kind !== "request") return this.ignore(source, parsed.ok ? "not a request" : parsed.error.reason);
    const req = parsed.message;
    if (req.method === "ACK") return;
    const branch = req.via[0]?.branch;
    if (branch === undefined) return this.ignore(source, "no Via branch");
    if (this.limiter.note(source.address) === "tripped") this.opts.log.warn("PnP source ignored after a burst of SUBSCRIBEs", { source: source.address });
    const sub = parsePnpSubscribe(req, source);
    const target = notifyTarget(req, source);
    if (!sub.ok) {
      this.ignore(source, sub.reason);
      if (sub.status !== undefined) this.send(encodeResponse(req, sub.status, "Bad Event", { toTag: randomToken(6), headers: [{ name: "allow-events", value: "ua-profile" }] }), target);
      return;
    }
    this.stats.subscribes++;
    const again = this.answered.get(branch);
    if (again !== undefined) {
      // A retransmitted SUBSCRIBE (RFC 3261 §17.2.2): the same 200, no second NOTIFY.
      this.send(encodeResponse(req, 200, "OK", { toTag: again, headers: [{ name: "expires", value: "0" }] }), target);
      return;
    }
    const url = this.opts.urlFor(sub.sub);
    if (url === undefined) return this.ignore(source, "no provisioning URL to offer");
    const toTag = randomToken(6);
    this.answered.set(branch, toTag);
    if (this.answered.size > 1024) this.answered.delete(this.answered.keys().next().value!);
    // RFC 6665 §4.2.1.1: 200 with Expires: 0 — a one-shot fetch of the state, then the NOTIFY.
    this.send(encodeResponse(req, 200, "OK", { toTag, headers: [{ name: "expires", value: "0" }, { name: "contact", value: `<sip:${this.localHostPort()}>` }] }), target);
    this.notify(req, url, toTag, target);
    this.opts.log.info("PnP SUBSCRIBE answered", { mac: sub.sub.mac, vendor: sub.sub.vendor, model: sub.sub.model, source: `${source.address}:${source.port}`, url: url.replace(/\/p\/[^/]+\//, "/p/<token>/") });
  }

  private localHostPort(): string {
    const a = this.tx?.address();
    return a ? `${a.address}:${a.port}` : this.opts.interfaceAddress;
  }

  private notify(req: SipRequest, url: string, toTag: string, target: { address: string; port: number }): void {
    const a = this.tx?.address();
    if (!a) return;
    const branch = createBranch();
    const bytes = buildPnpNotify(req, { url, toTag, local: { address: a.address, port: a.port }, target, branch });
    this.stats.notifies++;
    // Non-INVITE client retransmissions over UDP (RFC 3261 §17.1.2.2): T1, 2T1, … capped at T2
    // (4 s), given up at 64*T1 (Timer F).
    const t1 = this.opts.t1Ms ?? 500;
    const start = Date.now();
    let interval = t1;
    const fire = (): void => {
      this.send(bytes, target);
      if (Date.now() - start + interval > 64 * t1) {
        this.pending.delete(branch);
        return;
      }
      this.pending.set(branch, setTimeout(fire, interval));
      interval = Math.min(interval * 2, 4000);
    };
    fire();
  }

  private onTxDatagram(buf: Buffer): void {
    const parsed = parseDatagram(buf);
    if (!parsed.ok || parsed.message.kind !== "response") return;
    const branch = parsed.message.via[0]?.branch;
    if (branch === undefined || parsed.message.cseq.method !== "NOTIFY") return;
    const t = this.pending.get(branch);
    if (t === undefined) return;
    if (parsed.message.status < 200) return;
    clearTimeout(t);
    this.pending.delete(branch);
    this.stats.acknowledged++;
  }

  private send(bytes: Buffer, to: { address: string; port: number }): void {
    this.tx?.send(bytes, to.port, to.address, (err) => {
      if (err) this.opts.log.debug("PnP send failed", { err: err.message, to: `${to.address}:${to.port}` });
    });
  }

  private ignore(source: { address: string; port: number }, reason: string): void {
    this.stats.ignored++;
    this.opts.log.debug("PnP datagram ignored", { reason, source: `${source.address}:${source.port}` });
  }
}

/**
 * What a PnP SUBSCRIBE tells about a phone, as a seen-phone record for `phone seen` / `phone
 * adopt`: vendor and model canonical (`<vendor>/<model id>`) when the profiles know them. The
 * Event's vendor is the maker's name in any case ("Yealink"); its model may carry the vendor's
 * prefix ("snomD785") or not ("T53W"). An unknown model is kept as the phone said it.
 * Undefined without a MAC (nothing to adopt).
 */
export function pnpSeenNote(profiles: ReadonlyMap<string, Profile>, sub: PnpSubscription): SeenPhoneNote | undefined {
  if (sub.mac === undefined) return undefined;
  const note: SeenPhoneNote = { mac: sub.mac, ip: sub.source.address };
  const vendor = sub.vendor !== undefined ? [...profiles.keys()].find((v) => v.toLowerCase() === sub.vendor!.toLowerCase()) : undefined;
  if (vendor !== undefined) note.vendor = vendor;
  if (sub.firmware !== undefined) note.firmware = sub.firmware;
  if (sub.model === undefined) return note;
  const unprefixed = vendor !== undefined && sub.model.toLowerCase().startsWith(vendor.toLowerCase()) ? sub.model.slice(vendor.length) : undefined;
  const found = [sub.model, unprefixed].flatMap((m) => {
    if (m === undefined || m === "") return [];
    const r = resolveModel(profiles, m, vendor);
    return r.ok ? [r] : [];
  })[0];
  if (found) {
    note.vendor = found.profile.vendor;
    note.model = found.ref;
  } else note.model = sub.model;
  return note;
}
