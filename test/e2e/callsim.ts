// Call simulation for the routing end-to-end tests: a site file per test, the agent started on
// it with a short ring unit, SIPp callers entering as the trunk, and phones that register with
// digest authentication and log when each INVITE / CANCEL reached them.
//
// Two kinds of phone:
// - Phone: a small SIP user agent over raw UDP in this process (independent of the agent's own
//   parser and builder). It registers (computeAuthorization), answers INVITEs as told (ring
//   until cancelled, answer after a delay, 486, 603), answers CANCEL with 200 + 487 (RFC 3261
//   §9.2), OPTIONS keep-alives and BYE with 200, can hang up an answered call (BYE along the
//   Record-Route route set, §12.1.1) and dial (for *8 pickup). Timestamps are this process's
//   Date.now(), so ring timing is measured without clock translation.
// - SIPp phones and trunk peers: real SIPp processes; what they saw is read back from their
//   -trace_msg message file (parseSippTrace), whose timestamps are the same wall clock.
import assert from "node:assert/strict";
import type { ChildProcess } from "node:child_process";
import dgram from "node:dgram";
import fs from "node:fs";
import path from "node:path";
import { randomBytes } from "node:crypto";
import { computeAuthorization } from "../../agent/sip/digest.ts";
import { CALL_LOG_FILE, CALL_LOG_PREVIOUS_FILE } from "../../agent/store/store.ts";
import { freePort, noteSecret, runSipp, startAgent, tempDir, until, type RunningAgent, type SippResult } from "./harness.ts";

// --- site files --------------------------------------------------------------------------------

export interface SimUser {
  id: string;
  extension: string;
  name?: string;
  mobile?: string;
  availability?: "available" | "away" | "dnd";
  callLimit?: number;
  voicemail?: Record<string, unknown>;
}

export interface SimDevice {
  id: string;
  owner: string;
  kind: "physical" | "soft";
  username: string;
  password: string;
}

export interface SimGroup {
  id: string;
  number: string;
  strategy: "sequential" | "simultaneous" | "evenly" | "cumulative";
  members: string[];
  ringCount: number;
  checkAvailability?: boolean;
  noAnswer: Record<string, unknown>;
  pickup?: { enabled: boolean };
  hours?: Record<string, unknown>;
  outOfHours?: Record<string, unknown>;
  wrapUpS?: number;
  responsibleFirst?: { ringCount: number };
  voicemail?: Record<string, unknown>;
}

export interface SimSite {
  settings: Record<string, unknown>;
  users: SimUser[];
  devices: SimDevice[];
  groups: SimGroup[];
  knownCallers?: Array<{ number: string; userId: string }>;
}

/** The SIPp caller's source: listed in trunk.allowedSources, so calls enter as the trunk. */
export const TRUNK_CALLER_IP = "127.0.0.50";

/** Password every simulated device uses (the site file sets it; 8+ printable ASCII). */
export const DEVICE_PASSWORD = "sim-Secret-1234";
noteSecret(DEVICE_PASSWORD);

/** One user with one device per kind given, usernames `<id>` (first device) and `<id>-<n>`. */
export function simUser(id: string, extension: string, kinds: Array<"physical" | "soft"> = ["physical"], extra: Partial<SimUser> = {}): { user: SimUser; devices: SimDevice[] } {
  const devices = kinds.map((kind, i) => ({ id: i === 0 ? `dev-${id}` : `dev-${id}-${i}`, owner: id, kind, username: i === 0 ? id : `${id}-${i}`, password: DEVICE_PASSWORD }));
  return { user: { id, extension, name: `User ${id}`, availability: "available", callLimit: 0, ...extra }, devices };
}

/**
 * A site's users and devices, built one user at a time (simUser; `extra` goes to every user,
 * e.g. a call limit): add() gives a user one desk phone and returns it.
 */
export class SimRoster {
  readonly users: SimUser[] = [];
  readonly devices: SimDevice[] = [];
  constructor(private readonly extra: Partial<SimUser> = {}) {}
  /** A user with one desk phone (`extra` for this user only, over the roster's); that phone. */
  add(id: string, extension: string, extra: Partial<SimUser> = {}): SimDevice {
    return this.addUser(id, extension, ["physical"], extra)[0]!;
  }
  /** A user with these devices; its devices. */
  addUser(id: string, extension: string, kinds: Array<"physical" | "soft">, extra: Partial<SimUser> = {}): SimDevice[] {
    const u = simUser(id, extension, kinds, { ...this.extra, ...extra });
    this.users.push(u.user);
    this.devices.push(...u.devices);
    return u.devices;
  }
}

/** Writes a complete site file (schema ringedge.site/1) and returns its path. */
export function writeSiteFile(dir: string, site: SimSite, version = 1): string {
  const file = path.join(dir, `site-${version}.json`);
  const doc = {
    schema: "ringedge.site/1",
    version,
    settings: site.settings,
    users: site.users.map((u) => ({ availability: "available", name: `User ${u.id}`, ...u })),
    devices: site.devices,
    groups: site.groups.map((g) => ({ name: `Group ${g.id}`, checkAvailability: false, ...g })),
    ...(site.knownCallers !== undefined ? { knownCallers: site.knownCallers } : {}),
  };
  fs.writeFileSync(file, JSON.stringify(doc, null, 2));
  return file;
}

export interface RoutingAgentOptions {
  ringUnitMs: number;
  dataDir?: string;
  port?: number;
  env?: Record<string, string>;
}

/** The agent on a site file, SIPp-compatible digest (MD5 first), ring unit shortened. */
export async function startRoutingAgent(siteFile: string, opts: RoutingAgentOptions): Promise<RunningAgent> {
  return startAgent({
    ...(opts.dataDir !== undefined ? { dataDir: opts.dataDir } : {}),
    ...(opts.port !== undefined ? { port: opts.port } : {}),
    env: {
      RINGEDGE_SITE_FILE: siteFile,
      RINGEDGE_RING_UNIT_MS: String(opts.ringUnitMs),
      RINGEDGE_AUTH_ALGORITHMS: "MD5,SHA-256",
      RINGEDGE_SIP_TRANSPORTS: "udp",
      ...opts.env,
    },
  });
}

/** The call log as the agent stored it (read from its data directory: calls.jsonl, one call a line). */
export interface LoggedCall {
  id: string;
  at: number;
  caller: string;
  target: string;
  groupId?: string;
  outcome: string;
  offered: string[];
  answeredBy?: string;
  answerAfterMs?: number;
}

export function readCallLog(dataDir: string): LoggedCall[] {
  const out: LoggedCall[] = [];
  // The previous generation first (the log rotates), then the current file; a line still being
  // written (no newline yet) is left for the next read.
  for (const name of [CALL_LOG_PREVIOUS_FILE, CALL_LOG_FILE]) {
    let text: string;
    try {
      text = fs.readFileSync(path.join(dataDir, name), "utf8");
    } catch {
      continue; // not written yet
    }
    for (const line of text.slice(0, text.lastIndexOf("\n") + 1).split("\n")) {
      if (line !== "") out.push(JSON.parse(line) as LoggedCall);
    }
  }
  return out;
}

/** Waits until the call with this Call-ID is in the stored call log. */
export async function loggedCall(dataDir: string, callId: string, timeoutMs = 5000): Promise<LoggedCall> {
  try {
    return await until(() => readCallLog(dataDir).find((c) => c.id === callId), timeoutMs, 50);
  } catch {
    throw new Error(`call ${callId} not in the call log; the log has: ${JSON.stringify(readCallLog(dataDir)).slice(0, 2000)}`);
  }
}

// --- a minimal SIP message reader (independent of the agent's parser) ----------------------------

const COMPACT: Record<string, string> = { v: "via", f: "from", t: "to", i: "call-id", m: "contact", l: "content-length", c: "content-type", k: "supported", e: "content-encoding", s: "subject" };

export interface SimMessage {
  firstLine: string;
  method?: string;
  status?: number;
  uri?: string;
  /** [lower-case long name, value] in wire order; comma lists left as written. */
  headers: Array<[string, string]>;
  body: string;
  header(name: string): string | undefined;
  all(name: string): string[];
}

export function parseSimMessage(text: string): SimMessage | undefined {
  const end = text.indexOf("\r\n\r\n");
  const head = end >= 0 ? text.slice(0, end) : text;
  const body = end >= 0 ? text.slice(end + 4) : "";
  const lines = head.split(/\r?\n/);
  const first = lines[0] ?? "";
  const res = /^SIP\/2\.0 (\d{3}) /.exec(first);
  const req = /^([A-Z]+) (\S+) SIP\/2\.0$/.exec(first);
  if (!res && !req) return undefined;
  const headers: Array<[string, string]> = [];
  for (const line of lines.slice(1)) {
    if (/^[ \t]/.test(line) && headers.length > 0) {
      headers[headers.length - 1]![1] += " " + line.trim();
      continue;
    }
    const colon = line.indexOf(":");
    if (colon <= 0) continue;
    const raw = line.slice(0, colon).trim().toLowerCase();
    headers.push([COMPACT[raw] ?? raw, line.slice(colon + 1).trim()]);
  }
  const all = (name: string): string[] => headers.filter(([n]) => n === name).map(([, v]) => v);
  return {
    firstLine: first,
    ...(req ? { method: req[1]!, uri: req[2]! } : {}),
    ...(res ? { status: Number(res[1]) } : {}),
    headers,
    body,
    header: (name) => all(name)[0],
    all,
  };
}

function tagOf(nameAddr: string | undefined): string | undefined {
  return /;\s*tag=([^;>\s]+)/i.exec(nameAddr ?? "")?.[1];
}

function uriOf(nameAddr: string): string {
  const m = /<([^>]+)>/.exec(nameAddr);
  return (m ? m[1]! : nameAddr.split(";")[0]!).trim();
}

function token(): string {
  return randomBytes(6).toString("hex");
}

// --- Phone: a raw-UDP user agent -------------------------------------------------------------------

/** What a phone does with an incoming INVITE. */
export type Answering = { kind: "ring" } | { kind: "answer"; afterMs: number } | { kind: "reject"; status: 486 | 603 | 480 };

export const RING: Answering = { kind: "ring" };
export const answerAfter = (afterMs: number): Answering => ({ kind: "answer", afterMs });
export const reject = (status: 486 | 603 | 480): Answering => ({ kind: "reject", status });

export interface SeenRequest {
  /** Date.now() when it arrived. */
  at: number;
  callId: string;
  msg: SimMessage;
}

interface InboundCall {
  invite: SimMessage;
  toTag: string;
  answered: boolean;
  acked: boolean;
  ended: boolean;
  retransmit?: NodeJS.Timeout;
  /** Sends the 2xx (and its retransmissions until the ACK); set while the call rings here. */
  answer?: () => void;
}

export class Phone {
  /** Every INVITE that created a call here (retransmissions not repeated), in arrival order. */
  readonly invites: SeenRequest[] = [];
  readonly cancels: SeenRequest[] = [];
  readonly byes: SeenRequest[] = [];
  readonly acks: SeenRequest[] = [];
  /** Keyed by Call-ID: calls that reached this phone. */
  private readonly calls = new Map<string, InboundCall>();
  /** Keyed by Via branch: responses to requests this phone sent. */
  private readonly pending = new Map<string, (m: SimMessage) => void>();
  private cseq = 100;
  private closed = false;

  private constructor(
    readonly socket: dgram.Socket,
    readonly agentPort: number,
    readonly username: string,
    readonly password: string,
    public answering: Answering,
  ) {
    socket.on("message", (buf) => this.onMessage(buf.toString("utf8")));
  }

  get address(): string {
    return this.socket.address().address;
  }

  get port(): number {
    return this.socket.address().port;
  }

  /** Opens a socket on 127.0.0.1 and registers (401 challenge, digest answer, 200). */
  static async register(agentPort: number, username: string, password: string, answering: Answering = RING): Promise<Phone> {
    const socket = dgram.createSocket("udp4");
    await new Promise<void>((resolve) => socket.bind(0, "127.0.0.1", () => resolve()));
    const phone = new Phone(socket, agentPort, username, password, answering);
    try {
      await phone.sendRegister(3600);
    } catch (err) {
      phone.close();
      throw err;
    }
    return phone;
  }

  /** REGISTER with the given Expires (0 = remove the binding), answering the digest challenge. */
  async sendRegister(expires: number): Promise<void> {
    const callId = `reg-${this.username}-${this.port}@sim`;
    const uri = `sip:127.0.0.1:${this.agentPort}`;
    const build = (auth?: string): { text: string; branch: string } => {
      const branch = `z9hG4bK${token()}`;
      const text = [
        `REGISTER ${uri} SIP/2.0`,
        `Via: SIP/2.0/UDP 127.0.0.1:${this.port};branch=${branch};rport`,
        "Max-Forwards: 70",
        `From: <sip:${this.username}@127.0.0.1>;tag=r${this.port}`,
        `To: <sip:${this.username}@127.0.0.1>`,
        `Call-ID: ${callId}`,
        `CSeq: ${++this.cseq} REGISTER`,
        `Contact: <sip:${this.username}@127.0.0.1:${this.port}>`,
        `Expires: ${expires}`,
        ...(auth !== undefined ? [`Authorization: ${auth}`] : []),
        "User-Agent: ringedge-callsim",
        "Content-Length: 0",
        "",
        "",
      ].join("\r\n");
      return { text, branch };
    };
    const first = build();
    const challenge = await this.transact(first.branch, first.text);
    if (challenge.status === 200) return;
    const www = challenge.header("www-authenticate");
    if (challenge.status !== 401 || www === undefined) throw new Error(`${this.username}: REGISTER got ${challenge.firstLine}`);
    const auth = computeAuthorization(www, { method: "REGISTER", uri, username: this.username, password: this.password });
    if (typeof auth !== "string") throw new Error(`${this.username}: ${auth.error}`);
    const second = build(auth);
    const ok = await this.transact(second.branch, second.text);
    if (ok.status !== 200) throw new Error(`${this.username}: REGISTER with credentials got ${ok.firstLine}`);
  }

  /** Waits for the n-th INVITE (1-based) to have arrived. */
  async waitInvites(n: number, timeoutMs = 5000): Promise<SeenRequest> {
    return until(() => this.invites[n - 1], timeoutMs, 5);
  }

  /** Waits for a CANCEL of the call with this Call-ID. */
  async waitCancel(callId: string, timeoutMs = 5000): Promise<SeenRequest> {
    return until(() => this.cancels.find((c) => c.callId === callId), timeoutMs, 5);
  }

  invitesOf(callId: string): SeenRequest[] {
    return this.invites.filter((i) => i.callId === callId);
  }

  /** Hangs up an answered call (RFC 3261 §15.1.1) through the Record-Route route set; resolves with the BYE's final status. */
  async hangup(callId: string): Promise<number> {
    const call = this.calls.get(callId);
    if (call === undefined || !call.answered) throw new Error(`${this.username}: no answered call ${callId}`);
    const inv = call.invite;
    // §12.1.1: the UAS's route set is Record-Route in order; the remote target the caller's Contact.
    const routes = inv.all("record-route");
    const contact = inv.header("contact");
    const target = contact !== undefined ? uriOf(contact) : uriOf(inv.header("from") ?? "");
    const branch = `z9hG4bK${token()}`;
    const text = [
      `BYE ${target} SIP/2.0`,
      `Via: SIP/2.0/UDP 127.0.0.1:${this.port};branch=${branch};rport`,
      "Max-Forwards: 70",
      ...(routes.length > 0 ? [`Route: ${routes.join(", ")}`] : []),
      `From: ${inv.header("to")};tag=${call.toTag}`,
      `To: ${inv.header("from")}`,
      `Call-ID: ${callId}`,
      `CSeq: ${++this.cseq} BYE`,
      "Content-Length: 0",
      "",
      "",
    ].join("\r\n");
    call.ended = true;
    const res = await this.transact(branch, text);
    return res.status ?? 0;
  }

  /**
   * Dials a number at the agent from the registered socket (so the agent knows the device by
   * its flow). Resolves with the final status; a non-2xx is ACKed (§17.1.1.3). A 407 (calls to
   * the trunk over UDP, toll-fraud rule) is answered once with this phone's credentials
   * (RFC 3261 §22.3: same Call-ID and From tag, CSeq + 1, Proxy-Authorization) unless
   * `answer407` is false; `authUri` puts another digest uri in that answer (tests of the
   * uri check). `challenges` counts the 407s the phone got. `timeoutMs` (default 5000): how long
   * to wait for each final response (a call the test answers later rings longer).
   */
  async dial(number: string, opts: { answer407?: boolean; authUri?: string; timeoutMs?: number; /** An SDP offer to send (application/sdp); default none. */ sdp?: string } = {}): Promise<number> {
    const callId = `dial-${token()}@sim`;
    const fromTag = token();
    const ruri = `sip:${number}@127.0.0.1:${this.agentPort}`;
    const lines = (branch: string, method: string, to: string, cseq: string): string[] => [
      `${method} ${ruri} SIP/2.0`,
      `Via: SIP/2.0/UDP 127.0.0.1:${this.port};branch=${branch};rport`,
      "Max-Forwards: 70",
      `From: <sip:${this.username}@127.0.0.1>;tag=${fromTag}`,
      `To: ${to}`,
      `Call-ID: ${callId}`,
      `CSeq: ${cseq}`,
    ];
    const sendInvite = async (seq: number, auth?: string): Promise<SimMessage> => {
      const branch = `z9hG4bK${token()}`;
      const invite = [...lines(branch, "INVITE", `<${ruri}>`, `${seq} INVITE`), ...(auth !== undefined ? [`Proxy-Authorization: ${auth}`] : []), `Contact: <sip:${this.username}@127.0.0.1:${this.port}>`, ...(opts.sdp !== undefined ? ["Content-Type: application/sdp", `Content-Length: ${Buffer.byteLength(opts.sdp)}`, "", opts.sdp] : ["Content-Length: 0", "", ""])].join("\r\n");
      const res = await this.transact(branch, invite, opts.timeoutMs);
      if (res.status !== undefined && res.status >= 300) {
        // §17.1.1.3: the ACK for a non-2xx final response reuses the INVITE's branch and CSeq number.
        this.send([...lines(branch, "ACK", res.header("to") ?? "", `${seq} ACK`), "Content-Length: 0", "", ""].join("\r\n"));
      }
      return res;
    };
    let seq = 1;
    let res = await sendInvite(seq);
    const challenge = res.header("proxy-authenticate");
    if (res.status === 407) this.challenges++;
    if (res.status === 407 && challenge !== undefined && opts.answer407 !== false) {
      const auth = computeAuthorization(challenge, { method: "INVITE", uri: opts.authUri ?? ruri, username: this.username, password: this.password });
      if (typeof auth !== "string") throw new Error(`${this.username}: ${auth.error}`);
      res = await sendInvite(++seq, auth);
    }
    this.lastFinal = res;
    if (res.status !== undefined && res.status >= 200 && res.status < 300) {
      // §13.2.2.4: the ACK for a 2xx is its own request, to the callee's Contact along the
      // route set (the 2xx's Record-Route reversed, §12.1.2).
      const routes = res.all("record-route").flatMap((v) => v.split(/,(?=\s*<)/).map((r) => r.trim())).reverse();
      const contact = res.header("contact");
      const ack = [
        `ACK ${contact !== undefined ? uriOf(contact) : ruri} SIP/2.0`,
        `Via: SIP/2.0/UDP 127.0.0.1:${this.port};branch=z9hG4bK${token()};rport`,
        "Max-Forwards: 70",
        ...(routes.length > 0 ? [`Route: ${routes.join(", ")}`] : []),
        `From: <sip:${this.username}@127.0.0.1>;tag=${fromTag}`,
        `To: ${res.header("to") ?? ""}`,
        `Call-ID: ${callId}`,
        `CSeq: ${seq} ACK`,
        "Content-Length: 0",
        "",
        "",
      ];
      this.send(ack.join("\r\n"));
      this.dialled.push(callId);
      this.placed.set(callId, { target: contact !== undefined ? uriOf(contact) : ruri, routes, from: `<sip:${this.username}@127.0.0.1>;tag=${fromTag}`, to: res.header("to") ?? "" });
    }
    return res.status ?? 0;
  }

  /** 407 challenges this phone's dial() got. */
  challenges = 0;

  /** The final response to the last dial() (its reason phrase and headers). */
  lastFinal: SimMessage | undefined;

  /** Keyed by Call-ID: answered calls placed with dial(), as hangupPlaced() needs them. */
  private readonly placed = new Map<string, { target: string; routes: string[]; from: string; to: string }>();

  /** Hangs up a call this phone placed with dial() (§15.1.1, along the route set); the BYE's final status. */
  async hangupPlaced(callId: string): Promise<number> {
    const status = await this.inPlaced(callId, "BYE", 50);
    this.placed.delete(callId);
    return status;
  }

  /** A DTMF digit as SIP INFO (application/dtmf-relay) inside a call this phone placed with dial(); the INFO's final status. */
  infoPlaced(callId: string, digit: string, cseq: number): Promise<number> {
    return this.inPlaced(callId, "INFO", cseq, { type: "application/dtmf-relay", text: `Signal=${digit}\r\nDuration=160\r\n` });
  }

  /** A request inside a call this phone placed with dial() (its route set and remote target); the final status. */
  private async inPlaced(callId: string, method: string, cseq: number, body?: { type: string; text: string }): Promise<number> {
    const call = this.placed.get(callId);
    if (call === undefined) throw new Error(`${this.username}: placed no answered call ${callId}`);
    const branch = `z9hG4bK${token()}`;
    const text = [
      `${method} ${call.target} SIP/2.0`,
      `Via: SIP/2.0/UDP 127.0.0.1:${this.port};branch=${branch};rport`,
      "Max-Forwards: 70",
      ...(call.routes.length > 0 ? [`Route: ${call.routes.join(", ")}`] : []),
      `From: ${call.from}`,
      `To: ${call.to}`,
      `Call-ID: ${callId}`,
      `CSeq: ${cseq} ${method}`,
      ...(body !== undefined ? [`Content-Type: ${body.type}`] : []),
      `Content-Length: ${body === undefined ? 0 : Buffer.byteLength(body.text)}`,
      "",
      body?.text ?? "",
    ].join("\r\n");
    const res = await this.transact(branch, text);
    return res.status ?? 0;
  }

  /** Call-IDs of the calls this phone placed with dial() that were answered, in order. */
  readonly dialled: string[] = [];

  /** Removes the binding (Expires: 0) and closes the socket. */
  async unregister(): Promise<void> {
    if (this.closed) return;
    try {
      await this.sendRegister(0);
    } finally {
      this.close();
    }
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const c of this.calls.values()) if (c.retransmit) clearInterval(c.retransmit);
    this.socket.close();
  }

  // --- internals ---------------------------------------------------------------------------------

  private send(text: string): void {
    if (this.closed) return;
    this.socket.send(Buffer.from(text), this.agentPort, "127.0.0.1");
  }

  /** Sends a request and waits for its final response (provisional ones are skipped). */
  private transact(branch: string, text: string, timeoutMs = 5000): Promise<SimMessage> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(branch);
        reject(new Error(`${this.username}: no final response to ${text.split("\r\n")[0]}`));
      }, timeoutMs);
      this.pending.set(branch, (m) => {
        if ((m.status ?? 0) < 200) return;
        clearTimeout(timer);
        this.pending.delete(branch);
        resolve(m);
      });
      this.send(text);
    });
  }

  private onMessage(text: string): void {
    const m = parseSimMessage(text);
    if (m === undefined) return;
    if (m.status !== undefined) {
      const branch = /;branch=([^;,\s]+)/.exec(m.header("via") ?? "")?.[1];
      if (branch !== undefined) this.pending.get(branch)?.(m);
      return;
    }
    const at = Date.now();
    const callId = m.header("call-id") ?? "";
    switch (m.method) {
      case "INVITE":
        this.onInvite(m, callId, at);
        return;
      case "CANCEL": {
        this.cancels.push({ at, callId, msg: m });
        this.reply(m, 200, "OK");
        const call = this.calls.get(callId);
        if (call !== undefined && !call.answered && !call.ended) {
          call.ended = true;
          this.reply(call.invite, 487, "Request Terminated", call.toTag);
        }
        return;
      }
      case "ACK": {
        this.acks.push({ at, callId, msg: m });
        const call = this.calls.get(callId);
        if (call !== undefined) {
          call.acked = true;
          if (call.retransmit) clearInterval(call.retransmit);
        }
        return;
      }
      case "BYE":
        this.byes.push({ at, callId, msg: m });
        const c = this.calls.get(callId);
        if (c !== undefined) c.ended = true;
        this.reply(m, 200, "OK");
        return;
      default:
        // OPTIONS keep-alives, NOTIFY, INFO...: 200 (a phone that is up).
        this.reply(m, 200, "OK");
    }
  }

  private onInvite(m: SimMessage, callId: string, at: number): void {
    const known = this.calls.get(callId);
    if (known !== undefined && known.invite.header("via") === m.header("via")) return; // retransmission
    const call: InboundCall = { invite: m, toTag: token(), answered: false, acked: false, ended: false };
    this.calls.set(callId, call);
    this.invites.push({ at, callId, msg: m });
    // Auto-answer request (pickup branch): answer at once, whatever the phone is set to.
    const autoAnswer = /answer-after=0/i.test(m.header("call-info") ?? "");
    const how: Answering = autoAnswer ? answerAfter(0) : this.answering;
    if (how.kind === "reject") {
      call.ended = true;
      this.reply(m, how.status, how.status === 486 ? "Busy Here" : how.status === 603 ? "Decline" : "Temporarily Unavailable", call.toTag);
      return;
    }
    this.reply(m, 180, "Ringing", call.toTag);
    {
      const answer = (): void => {
        if (call.ended || this.closed) return;
        call.answered = true;
        const ok = (): void => this.reply(m, 200, "OK", call.toTag, true);
        ok();
        // §13.3.1.4: the 2xx is retransmitted until the ACK arrives.
        let n = 0;
        call.retransmit = setInterval(() => {
          if (call.acked || ++n > 6 || this.closed) clearInterval(call.retransmit);
          else ok();
        }, 500);
      };
      call.answer = answer;
      if (how.kind === "answer") {
        if (how.afterMs <= 0) answer();
        else setTimeout(answer, how.afterMs);
      }
    }
  }

  /** Answers a call ringing here now, whatever the phone was told at the INVITE (the test decides when). */
  answerNow(callId: string): void {
    const call = this.calls.get(callId);
    if (call?.answer === undefined || call.ended || call.answered) throw new Error(`${this.username}: no call ${callId} ringing here`);
    call.answer();
  }

  /** A response to a request that reached this phone (§8.2.6: Via, From, To, Call-ID, CSeq copied). */
  private reply(req: SimMessage, status: number, reason: string, toTag?: string, withSdp = false): void {
    const to = req.header("to") ?? "";
    const sdp = withSdp ? ["v=0", `o=- 1 1 IN IP4 127.0.0.1`, "s=-", "c=IN IP4 127.0.0.1", "t=0 0", "m=audio 40000 RTP/AVP 0", "a=rtpmap:0 PCMU/8000", ""].join("\r\n") : "";
    const lines = [
      `SIP/2.0 ${status} ${reason}`,
      ...req.all("via").map((v) => `Via: ${v}`),
      `From: ${req.header("from") ?? ""}`,
      `To: ${toTag !== undefined && tagOf(to) === undefined ? `${to};tag=${toTag}` : to}`,
      `Call-ID: ${req.header("call-id") ?? ""}`,
      `CSeq: ${req.header("cseq") ?? ""}`,
      ...(req.method === "INVITE" && status > 100 && status < 300 ? req.all("record-route").map((r) => `Record-Route: ${r}`) : []),
      ...(req.method === "INVITE" && status < 300 ? [`Contact: <sip:${this.username}@127.0.0.1:${this.port}>`] : []),
      ...(withSdp ? ["Content-Type: application/sdp"] : []),
      `Content-Length: ${Buffer.byteLength(sdp)}`,
      "",
      sdp,
    ];
    this.send(lines.join("\r\n"));
  }
}

/** Registers several phones at once. */
export async function registerPhones(agentPort: number, devices: readonly SimDevice[], answering: Answering = RING): Promise<Phone[]> {
  return Promise.all(devices.map((d) => Phone.register(agentPort, d.username, d.password, answering)));
}

// --- SIPp ---------------------------------------------------------------------------------------------

export interface TraceEntry {
  /** Epoch ms (the trace's local wall-clock time). */
  at: number;
  dir: "sent" | "received";
  msg: SimMessage;
}

/** Reads a SIPp -trace_msg message file into its messages, in order. */
export function parseSippTrace(file: string): TraceEntry[] {
  if (!fs.existsSync(file)) return [];
  const text = fs.readFileSync(file, "utf8");
  const out: TraceEntry[] = [];
  const parts = text.split(/^-{20,} (\d{4}-\d\d-\d\d)\s+(\d\d:\d\d:\d\d)\.(\d+)\s*$/m);
  // split with captures: [pre, date, time, frac, body, date, time, frac, body, ...]
  for (let i = 1; i + 3 < parts.length + 1; i += 4) {
    const [date, time, frac, body] = [parts[i], parts[i + 1], parts[i + 2], parts[i + 3] ?? ""];
    if (date === undefined || time === undefined || frac === undefined) break;
    const at = new Date(`${date}T${time}`).getTime() + Math.floor(Number(`0.${frac}`) * 1000);
    const m = /^\s*\S+ message (sent|received)[^\n]*\n\n?([\s\S]*)$/.exec(body);
    if (!m) continue;
    const raw = m[2]!.replace(/\r?\n/g, "\r\n").replace(/(\r\n)+$/, "\r\n\r\n");
    const msg = parseSimMessage(raw);
    if (msg !== undefined) out.push({ at, dir: m[1] as "sent" | "received", msg });
  }
  return out;
}

export interface SippPeer {
  port: number;
  traceFile: string;
  run: Promise<SippResult> & { proc: ChildProcess };
  trace(): TraceEntry[];
  /** The messages this SIPp received, or sent. */
  received(): TraceEntry[];
  sent(): TraceEntry[];
}

/** Whether something holds the UDP port on this address already. */
function udpBound(address: string, p: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = dgram.createSocket("udp4");
    s.once("error", () => resolve(true));
    s.bind(p, address, () => s.close(() => resolve(false)));
  });
}

const traceDir = tempDir("ringedge-sipp-trace-");

function peer(port: number, traceFile: string, run: Promise<SippResult> & { proc: ChildProcess }): SippPeer {
  const trace = (): TraceEntry[] => parseSippTrace(traceFile);
  return { port, traceFile, run, trace, received: () => trace().filter((e) => e.dir === "received"), sent: () => trace().filter((e) => e.dir === "sent") };
}

/**
 * A SIPp UAS (voicemail box, trunk gateway or phone) listening on 127.0.0.1:port (free port unless
 * given), handling `calls` calls of `scenario`; ready when this resolves.
 */
export async function sippServer(scenario: string, opts: { port?: number; calls?: number; pauseMs?: number; timeoutS?: number; extra?: string[] } = {}): Promise<SippPeer> {
  const port = opts.port ?? (await freePort());
  const traceFile = path.join(traceDir, `uas-${port}-${token()}.msg`);
  const run = runSipp(
    ["-sf", scenario, "-i", "127.0.0.1", "-p", String(port), "-m", String(opts.calls ?? 1), "-nd", "-timeout", String(opts.timeoutS ?? 15), "-timeout_error", "-d", String(opts.pauseMs ?? 0), "-trace_msg", "-message_file", traceFile, ...(opts.extra ?? [])],
    (opts.timeoutS ?? 15) * 1000 + 5000,
  );
  await until(() => udpBound("127.0.0.1", port), 5000, 20);
  return peer(port, traceFile, run);
}

/** A SIPp caller entering as the trunk (source TRUNK_CALLER_IP) and dialling `number` once. */
export async function sippCall(agentPort: number, scenario: string, number: string, opts: { pauseMs?: number; timeoutS?: number; extra?: string[] } = {}): Promise<SippPeer> {
  const port = await freePort();
  const traceFile = path.join(traceDir, `uac-${port}-${token()}.msg`);
  const run = runSipp(
    ["-sf", scenario, "-i", TRUNK_CALLER_IP, "-p", String(port), "-m", "1", "-nd", "-timeout", String(opts.timeoutS ?? 15), "-timeout_error", "-d", String(opts.pauseMs ?? 0), "-s", number, "-trace_msg", "-message_file", traceFile, ...(opts.extra ?? []), `127.0.0.1:${agentPort}`],
    (opts.timeoutS ?? 15) * 1000 + 5000,
  );
  return peer(port, traceFile, run);
}

/** The Call-ID of a SIPp caller's call: SIPp's [call_id] is "<call number>-<pid>@<local ip>". */
export function callIdOf(caller: SippPeer): string {
  return `1-${caller.run.proc.pid}@${TRUNK_CALLER_IP}`;
}

/**
 * SIPp desk phones: one SIPp process registers every user (phone-stay.xml, -inf) and answers
 * INVITEs for any of them with the out-of-call scenario `oocsf`; -aa answers keep-alives.
 * Resolves once the agent lists every one of these users' devices online.
 */
export async function sippPhones(agent: RunningAgent, users: ReadonlyArray<readonly [string, string]>, oocsf: string, stayMs = 20_000): Promise<SippPeer> {
  const port = await freePort();
  const dir = tempDir("ringedge-sipp-phones-");
  const csv = path.join(dir, "users.csv");
  fs.writeFileSync(csv, ["SEQUENTIAL", ...users.map(([u, p]) => `${u};${p}`)].join("\n") + "\n");
  const traceFile = path.join(traceDir, `phones-${port}-${token()}.msg`);
  const run = runSipp(
    ["-sf", "phone-stay.xml", "-oocsf", oocsf, "-inf", csv, "-aa", "-i", "127.0.0.1", "-p", String(port), "-m", String(users.length), "-r", "200", "-d", String(stayMs), "-nd", "-timeout", String(Math.ceil(stayMs / 1000) + 5), "-trace_msg", "-message_file", traceFile, `127.0.0.1:${agent.port}`],
    stayMs + 10_000,
  );
  const wanted = new Set(users.map(([u]) => u));
  let seen = "";
  try {
    await until(async () => {
      const r = await agent.cli(["device", "list", "--json"]);
      seen = r.stdout;
      const list = JSON.parse(r.stdout) as Array<{ username: string; online?: boolean }>;
      return list.filter((d) => wanted.has(d.username) && d.online === true).length === wanted.size;
    }, 10_000, 100);
  } catch (err) {
    run.proc.kill("SIGKILL");
    const r = await run;
    throw new Error(`SIPp phones did not all come online: ${(err as Error).message}\nSIPp: ${r.stderr.slice(-1500)}\ndevices: ${seen.slice(0, 1500)}`);
  }
  return peer(port, traceFile, run);
}

/** Statuses a SIPp caller received for its INVITE, in order. */
export function statusesOf(caller: SippPeer): number[] {
  return caller.received().filter((e) => e.msg.status !== undefined && /INVITE/.test(e.msg.header("cseq") ?? "")).map((e) => e.msg.status!);
}

/** Reason header of a CANCEL, or undefined. */
export function reasonOf(r: SeenRequest | TraceEntry): string | undefined {
  return r.msg.header("reason");
}

/** A SIPp run ended with every call successful; otherwise the failure with SIPp's own words. */
export function assertSippOk(name: string, r: { code: number | null; stdout: string; stderr: string }): void {
  assert.equal(r.code, 0, `${name}: SIPp exit ${r.code}\n${r.stdout.slice(-1500)}\n${r.stderr.slice(-800)}`);
}

/** Timing tolerance: a timer may fire a little early (clock granularity) or late (a loaded machine). */
export const EARLY_MS = 40;
export const LATE_MS = 300;

/** `actual` is `expected` ms after `base`, within the tolerance (late timers, never much early). */
export function assertAfter(what: string, base: number, actual: number, expected: number): void {
  const d = actual - base;
  assert.ok(d >= expected - EARLY_MS && d <= expected + LATE_MS, `${what}: ${d} ms after the reference, expected ${expected} ms (-${EARLY_MS}/+${LATE_MS})`);
}

/**
 * What one routing test file starts and must stop: its agent, the phones it registered and the
 * SIPp peers it ran. `register` keeps the phones; `close` ends everything (use in after()).
 */
export class CallScene {
  readonly phones: Phone[] = [];
  readonly peers: SippPeer[] = [];
  constructor(private readonly agent: () => RunningAgent | undefined) {}

  async register(devices: readonly SimDevice[], answering: Answering = RING): Promise<Phone[]> {
    const ps = await registerPhones(this.agent()!.port, devices, answering);
    this.phones.push(...ps);
    return ps;
  }

  async close(): Promise<void> {
    for (const p of this.phones) p.close();
    for (const p of this.peers) p.run.proc.kill("SIGKILL");
    await this.agent()?.kill();
  }
}
