// The routing engine's policy, driven apart from the SIP mechanism: a recording fake of
// StatefulProxyApi stands in for agent/sip/proxy.ts, and a fake clock drives the step, queue
// and offer timers. Each test reads as a timeline: which branches were forked when, which
// were cancelled, what the caller got, what was recorded.
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { EventBus, type AgentEvents } from "../../agent/bus.ts";
import { createLogger } from "../../agent/log.ts";
import { RoutingEngine, bestFailure, type CallRecord, type QueueCallbacks, type RoutingSettings } from "../../agent/routing/engine.ts";
import { CallbackBook } from "../../agent/routing/callback.ts";
import { admit, classifyCaller, flowKey, resolveDestination, trunkUri, voicemailRoute, type Caller } from "../../agent/routing/classify.ts";
import { indexSite, mailboxOf, parseSite, type DeviceRef, type Group, type SiteIndex, type User } from "../../agent/routing/model.ts";
import { computeAuthorization, DigestAuthenticator } from "../../agent/sip/digest.ts";
import type { Binding } from "../../agent/sip/location.ts";
import { getHeader, parseDatagram } from "../../agent/sip/message.ts";
import type { Branch, BranchState, BranchTarget, ProxyCall, ProxyCallEvents, StatefulProxyApi } from "../../agent/sip/proxy-types.ts";
import type { ServerTransaction } from "../../agent/sip/transaction.ts";
import { checkCallRecord } from "../../agent/store/schema.ts";
import { FakeClock } from "./fakes.ts";
import type { Flow, SipHeader, SipRequest, SipResponse } from "../../agent/sip/types.ts";

// --- fakes -----------------------------------------------------------------------------------------

const T0 = 1_700_000_000_000;
const UNIT = 1000; // one ring in these tests

interface FakeBranch extends Branch {
  state: BranchState;
  lastStatus: number | undefined;
}
interface FakeCall extends ProxyCall {
  events: ProxyCallEvents;
  branches: FakeBranch[];
  answered: FakeBranch | undefined;
  finished: boolean;
  firstForkAt: number | undefined;
  provisionals: number[];
  rejected: number | undefined;
}
type Op = { at: number; op: "fork" | "cancel"; call: string; device: string | undefined; member: string | undefined; uri: string; headers?: SipHeader[] };

/** Records what the engine asks of the proxy; tests play the phones' side through it. */
class FakeProxy implements StatefulProxyApi {
  readonly calls: FakeCall[] = [];
  readonly ops: Op[] = [];
  /** Shared with the store fake so tests can check the order "forks, then persistence". */
  constructor(private readonly clock: FakeClock, private readonly journal: string[], private readonly forkLatencyMs = 0.05) {}
  private n = 0;

  startCall(_tx: ServerTransaction, req: SipRequest, flow: Flow, events: ProxyCallEvents): ProxyCall | undefined {
    const c: FakeCall = { id: `pc${++this.n}`, request: req, flow, receivedAt: 1000, firstForkAt: undefined, branches: [], answered: undefined, finished: false, events, provisionals: [], rejected: undefined };
    this.calls.push(c);
    return c;
  }
  fork(call: ProxyCall, target: BranchTarget): Branch | undefined {
    const c = call as FakeCall;
    if (c.finished) return undefined;
    const b: FakeBranch = { id: `b${++this.n}`, target, state: "calling", lastStatus: undefined, sentAt: 0 };
    c.branches.push(b);
    c.firstForkAt ??= c.receivedAt + this.forkLatencyMs;
    this.ops.push({ at: this.clock.now() - T0, op: "fork", call: c.id, device: target.deviceId, member: target.memberId, uri: target.uri, ...(target.headers ? { headers: target.headers } : {}) });
    this.journal.push(`fork ${target.deviceId ?? target.uri}`);
    return b;
  }
  cancelBranch(call: ProxyCall, branch: Branch): void {
    const b = branch as FakeBranch;
    if (b.state !== "calling" && b.state !== "ringing") return;
    b.state = "cancelled";
    this.ops.push({ at: this.clock.now() - T0, op: "cancel", call: call.id, device: b.target.deviceId, member: b.target.memberId, uri: b.target.uri });
  }
  provisional(call: ProxyCall, status: number): void {
    (call as FakeCall).provisionals.push(status);
  }
  reject(call: ProxyCall, status: number): void {
    const c = call as FakeCall;
    for (const b of this.activeBranches(c)) this.cancelBranch(c, b);
    c.finished = true;
    c.rejected = status;
    c.events.onEnded?.(c, { answered: false, by: "proxy", status });
  }
  activeBranches(call: ProxyCall): Branch[] {
    return (call as FakeCall).branches.filter((b) => b.state === "calling" || b.state === "ringing");
  }

  // --- the phones' side ---
  answer(b: Branch): void {
    const c = this.callOf(b);
    const fb = b as FakeBranch;
    fb.state = "answered";
    c.answered = fb;
    c.finished = true;
    for (const o of this.activeBranches(c)) (o as FakeBranch).state = "cancelled"; // "Call completed elsewhere"
    c.events.onAnswered?.(c, b);
  }
  fail(b: Branch, status: number): void {
    const c = this.callOf(b);
    const fb = b as FakeBranch;
    fb.state = "failed";
    fb.lastStatus = status;
    c.events.onBranchFailed?.(c, b, status);
  }
  hangup(c: FakeCall): void {
    c.events.onEnded?.(c, { answered: true, by: "caller" });
  }
  callerCancel(c: FakeCall): void {
    for (const b of this.activeBranches(c)) (b as FakeBranch).state = "cancelled";
    c.finished = true;
    c.events.onCallerCancelled?.(c);
    c.events.onEnded?.(c, { answered: false, by: "caller", status: 487 });
  }
  callOf(b: Branch): FakeCall {
    const c = this.calls.find((x) => x.branches.includes(b as FakeBranch));
    if (c === undefined) throw new Error("unknown branch");
    return c;
  }
  live(c: FakeCall): FakeBranch[] {
    return c.branches.filter((b) => b.state === "calling" || b.state === "ringing");
  }
  /** Live branches ringing a device. */
  ringing(c: FakeCall, deviceId: string): FakeBranch[] {
    return this.live(c).filter((b) => b.target.deviceId === deviceId);
  }
  /** "t device" for every fork / cancel, in order. */
  timeline(op: "fork" | "cancel", call?: FakeCall): string[] {
    return this.ops.filter((o) => o.op === op && (call === undefined || o.call === call.id)).map((o) => `${o.at} ${o.device ?? o.uri}`);
  }
}

class FakeTx {
  readonly responses: SipResponse[] = [];
  respond(res: SipResponse): { ok: true } {
    this.responses.push(res);
    return { ok: true };
  }
  get status(): number | undefined {
    return this.responses.at(-1)?.status;
  }
}

// --- site fixtures ----------------------------------------------------------------------------------

const LOCAL: Pick<Flow, "localAddress" | "localPort"> = { localAddress: "10.0.0.1", localPort: 5060 };
const TRUNK_IP = "192.0.2.10";

function user(id: string, extension: string, over: Partial<User> = {}): User {
  return { id, extension, name: id, availability: "available", callLimit: 1, ...over };
}
function group(over: Partial<Group>): Group {
  return { id: "g1", number: "100", name: "G", strategy: "sequential", members: [], ringCount: 1, checkAvailability: false, noAnswer: { kind: "hangup" }, ...over };
}

interface World {
  clock: FakeClock;
  proxy: FakeProxy;
  engine: RoutingEngine;
  bus: EventBus;
  index: SiteIndex;
  settings: RoutingSettings;
  journal: string[];
  records: CallRecord[];
  events: Array<{ name: string; e: unknown }>;
  /** Device id → its flow (each device registered from its own port). */
  flowOf(deviceId: string): Flow;
  setOnline(deviceId: string, online: boolean): void;
  /** A new INVITE from a device (or any flow) to a number. */
  call(to: string, from: string | Flow, headers?: string[]): { tx: FakeTx; pc: FakeCall | undefined };
}

/**
 * users u1..uN (extension 201..) with one physical phone p<i> each (plus extra devices given),
 * all online unless listed in `offline`.
 */
function world(opts: {
  users: number | User[];
  groups: Group[];
  extraDevices?: DeviceRef[];
  offline?: string[];
  settings?: Partial<RoutingSettings>;
  evenly?: Record<string, Record<string, number>>;
  forkLatencyMs?: number;
  maxPhysical?: number;
  /** Collects what the engine sends statelessly (respondStatelessly); absent: the engine answers through the transaction. */
  stateless?: Array<{ tx: unknown; res: SipResponse }>;
  /** Devices registered over TCP (connection id 100 + index) instead of UDP. */
  tcp?: boolean;
  /** The site's time zone (groups with working hours need one) and its known callers. */
  timeZone?: string;
  knownCallers?: Array<{ number: string; userId: string }>;
  /** Greetings and menus (menu-model.ts) and the call flow standing in for agent/media/call-menu.ts. */
  inbound?: unknown[];
  menus?: unknown[];
  callMenus?: NonNullable<ConstructorParameters<typeof RoutingEngine>[0]["callMenus"]>;
  /** Stands in for the music on hold (EngineDeps.queueMedia). */
  queueMedia?: NonNullable<ConstructorParameters<typeof RoutingEngine>[0]["queueMedia"]>;
  /** Mailboxes on the appliance (EngineDeps.mailboxes): what they were handed, in order. */
  mailboxes?: Array<{ pc: ProxyCall; mailbox: string; caller: string; events: { answered(): void; ended(status: number | undefined): void }; left: boolean }>;
  /** Pending callbacks served from the queue (callback-service.ts's side of EngineDeps.callbacks). */
  callbacks?: QueueCallbacks;
  /** Listening to voicemail (EngineDeps.listen, code *97): the calls handed over and their mailboxes. */
  listen?: Array<{ pc: ProxyCall; mailboxes: string[] }>;
}): World {
  const users = typeof opts.users === "number" ? Array.from({ length: opts.users }, (_, i) => user(`u${i + 1}`, String(201 + i))) : opts.users;
  const devices: DeviceRef[] = users.map((u, i) => ({ id: `p${i + 1}`, ownerId: u.id, kind: "physical" as const }));
  devices.push(...(opts.extraDevices ?? []));
  const parsed = parseSite({ users, devices, groups: opts.groups, settings: opts.timeZone === undefined ? {} : { timeZone: opts.timeZone }, knownCallers: opts.knownCallers, inbound: opts.inbound, menus: opts.menus });
  if (!parsed.ok) throw new Error(JSON.stringify(parsed.errors));
  const index = indexSite(parsed.site);
  const settings: RoutingSettings = { pickupCode: "*8", trunk: { host: TRUNK_IP, port: 5070, transport: "udp", allowedSources: [TRUNK_IP], prefix: "0" }, ...opts.settings };
  const clock = new FakeClock(T0);
  const journal: string[] = [];
  const proxy = new FakeProxy(clock, journal, opts.forkLatencyMs);
  const bus = new EventBus();
  const events: Array<{ name: string; e: unknown }> = [];
  for (const name of ["call.offered", "call.answered", "call.missed", "call.busy"] as const) bus.on(name, (e) => events.push({ name, e }));
  const flows = new Map<string, Flow>();
  const bindings: Binding[] = devices.map((d, i) => {
    const flow: Flow = opts.tcp === true ? { transport: "tcp", remoteAddress: "10.0.1.5", remotePort: 6000 + i, ...LOCAL, connectionId: 100 + i } : { transport: "udp", remoteAddress: "10.0.1.5", remotePort: 6000 + i, ...LOCAL };
    flows.set(d.id, flow);
    return { deviceId: d.id, aor: `sip-${d.id}`, contact: `sip:sip-${d.id}@10.0.1.5:${6000 + i}`, expiresAt: T0 + 3_600_000, callId: `r-${d.id}`, cseq: 1, q: undefined, flow, userAgent: undefined, instance: undefined };
  });
  const online = new Set(devices.map((d) => d.id).filter((id) => !(opts.offline ?? []).includes(id)));
  const records: CallRecord[] = [];
  const evenly = opts.evenly ?? {};
  const engine = new RoutingEngine({
    proxy,
    site: () => ({ index, settings }),
    location: { lookup: (aor) => bindings.filter((b) => b.aor === aor), all: () => bindings },
    presence: { snapshot: () => devices.map((d) => ({ deviceId: d.id, online: online.has(d.id) })) },
    devices: {
      username: (id) => (devices.some((d) => d.id === id) ? `sip-${id}` : undefined),
      credentials: (username) => {
        const d = devices.find((x) => `sip-${x.id}` === username);
        return d === undefined ? undefined : { deviceId: d.id, username, password: `pw-${d.id}` };
      },
    },
    store: {
      evenlyLastOffered: (g) => evenly[g] ?? {},
      recordEvenlyOffer: (g, m, at) => {
        journal.push(`evenly ${m}`);
        (evenly[g] ??= {})[m] = at;
      },
      appendCall: (r) => records.push(r),
    },
    bus,
    authenticator: new DigestAuthenticator({ realm: "site", algorithms: ["MD5"], header: "proxy-authenticate", now: () => clock.now() }),
    log: createLogger("silent"),
    ringUnitMs: UNIT,
    clock,
    ...(opts.maxPhysical !== undefined ? { maxPhysical: opts.maxPhysical } : {}),
    ...(opts.callMenus !== undefined ? { callMenus: opts.callMenus } : {}),
    ...(opts.queueMedia !== undefined ? { queueMedia: opts.queueMedia } : {}),
    ...(opts.mailboxes !== undefined
      ? {
          mailboxes: {
            take: (pc: ProxyCall, mailbox: { kind: string; id: string }, caller: string, events: { answered(): void; ended(status: number | undefined): void }) => void opts.mailboxes!.push({ pc, mailbox: `${mailbox.kind}/${mailbox.id}`, caller, events, left: false }),
            leave: (pc: ProxyCall) => opts.mailboxes!.filter((m) => m.pc === pc).forEach((m) => (m.left = true)),
          },
        }
      : {}),
    ...(opts.callbacks !== undefined ? { callbacks: opts.callbacks } : {}),
    ...(opts.listen !== undefined
      ? {
          listen: {
            code: () => "*97",
            enabled: (o: { kind: "user" | "group"; id: string }) => mailboxOf(index, o) !== undefined,
            take: (pc: ProxyCall, mailboxes: Array<{ kind: string; id: string }>) => void opts.listen!.push({ pc, mailboxes: mailboxes.map((m) => `${m.kind}/${m.id}`) }),
          },
        }
      : {}),
    ...(opts.stateless !== undefined ? { respondStatelessly: (tx: ServerTransaction, res: SipResponse) => opts.stateless!.push({ tx, res }) } : {}),
  });
  engine.start();
  let seq = 0;
  return {
    clock,
    proxy,
    engine,
    bus,
    index,
    settings,
    journal,
    records,
    events,
    flowOf: (id) => flows.get(id)!,
    setOnline: (deviceId, on) => {
      if (on) online.add(deviceId);
      else online.delete(deviceId);
      bus.emit("device.presence", { deviceId, username: `sip-${deviceId}`, online: on, reason: on ? "registered" : "keepalive-timeout", at: clock.now() });
    },
    call: (to, from, headers = []) => {
      const flow: Flow = typeof from === "string" ? flows.get(from)! : from;
      const req = invite(`sip:${to}@10.0.0.1`, `c${++seq}`, headers);
      const tx = new FakeTx();
      const before = proxy.calls.length;
      engine.onInvite(tx as unknown as ServerTransaction, req, flow);
      return { tx, pc: proxy.calls.length > before ? proxy.calls.at(-1) : undefined };
    },
  };
}

function invite(ruri: string, callId: string, extra: string[] = []): SipRequest {
  const text = [
    `INVITE ${ruri} SIP/2.0`,
    "Via: SIP/2.0/UDP 10.0.1.5:5999;branch=z9hG4bK-" + callId,
    "Max-Forwards: 70",
    "From: <sip:555@10.0.1.5>;tag=f1",
    `To: <${ruri}>`,
    `Call-ID: ${callId}`,
    "CSeq: 1 INVITE",
    "Contact: <sip:555@10.0.1.5:5999>",
    ...extra,
    "Content-Length: 0",
    "",
    "",
  ].join("\r\n");
  const r = parseDatagram(Buffer.from(text));
  if (!r.ok || r.message.kind !== "request") throw new Error("bad test INVITE");
  return r.message;
}

const trunkFlow: Flow = { transport: "udp", remoteAddress: TRUNK_IP, remotePort: 5070, ...LOCAL };
const strangerFlow: Flow = { transport: "udp", remoteAddress: "203.0.113.9", remotePort: 5060, ...LOCAL };

function events<K extends keyof AgentEvents>(w: World, name: K): Array<AgentEvents[K]> {
  return w.events.filter((x) => x.name === name).map((x) => x.e as AgentEvents[K]);
}

// --- strategies over time ---------------------------------------------------------------------------

describe("strategies over time", () => {
  it("sequential: one member per step, the previous one cancelled, then the no-answer action", () => {
    const w = world({ users: 3, groups: [group({ members: ["u1", "u2", "u3"], ringCount: 2 })] });
    const { pc } = w.call("100", trunkFlow);
    assert.ok(pc);
    w.clock.advance(10 * UNIT);
    assert.deepEqual(w.proxy.timeline("fork"), ["0 p1", "2000 p2", "4000 p3"]);
    assert.deepEqual(w.proxy.timeline("cancel"), ["2000 p1", "4000 p2", "6000 p3"]);
    assert.equal(pc.rejected, 480);
    assert.equal(w.records.length, 1);
    assert.deepEqual({ outcome: w.records[0]!.outcome, offered: w.records[0]!.offered, groupId: w.records[0]!.groupId }, { outcome: "missed", offered: ["u1", "u2", "u3"], groupId: "g1" });
    assert.deepEqual(events(w, "call.missed").map((e) => e.offered), [["u1", "u2", "u3"]]);
    assert.equal(w.clock.pending(), 0);
  });

  it("simultaneous: everyone at once, all cancelled together when the step runs out", () => {
    const w = world({ users: 3, groups: [group({ strategy: "simultaneous", members: ["u1", "u2", "u3"], ringCount: 3 })] });
    const { pc } = w.call("100", trunkFlow);
    w.clock.advance(2999);
    assert.deepEqual(w.proxy.timeline("fork"), ["0 p1", "0 p2", "0 p3"]);
    assert.deepEqual(w.proxy.timeline("cancel"), []);
    w.clock.advance(1);
    assert.deepEqual(w.proxy.timeline("cancel"), ["3000 p1", "3000 p2", "3000 p3"]);
    assert.equal(pc!.rejected, 480);
  });

  it("cumulative: earlier members keep ringing while the next is added", () => {
    const w = world({ users: 3, groups: [group({ strategy: "cumulative", members: ["u1", "u2", "u3"] })] });
    const { pc } = w.call("100", trunkFlow);
    w.clock.advance(2500);
    assert.deepEqual(w.proxy.timeline("fork"), ["0 p1", "1000 p2", "2000 p3"]);
    assert.deepEqual(w.proxy.timeline("cancel"), []);
    assert.equal(w.proxy.live(pc!).length, 3);
    w.clock.advance(500);
    assert.deepEqual(w.proxy.timeline("cancel"), ["3000 p1", "3000 p2", "3000 p3"]);
  });

  it("evenly: the member offered longest ago first; offers persisted only after the forks", () => {
    const w = world({
      users: 3,
      groups: [group({ strategy: "evenly", members: ["u1", "u2", "u3"] })],
      evenly: { g1: { u1: T0 - 10, u2: T0 - 30, u3: T0 - 20 } },
    });
    w.call("100", trunkFlow);
    assert.deepEqual(w.journal, ["fork p2", "evenly u2"]);
    w.clock.advance(3000);
    assert.deepEqual(w.proxy.timeline("fork"), ["0 p2", "1000 p3", "2000 p1"]);
    assert.deepEqual(w.journal, ["fork p2", "evenly u2", "fork p3", "evenly u3", "fork p1", "evenly u1"]);
    // The next call starts with the one offered longest ago: u2 again.
    w.call("100", trunkFlow);
    assert.equal(w.proxy.ops.at(-1)!.device, "p2");
  });

  it("a member rings on every online device at once (phone + soft client)", () => {
    const w = world({ users: 2, groups: [group({ members: ["u1", "u2"] })], extraDevices: [{ id: "s1", ownerId: "u1", kind: "soft" }, { id: "s1b", ownerId: "u1", kind: "soft" }], offline: ["s1b"] });
    w.call("100", trunkFlow);
    assert.deepEqual(w.proxy.timeline("fork"), ["0 p1", "0 s1"]);
  });
});

describe("the 10-phone cap", () => {
  it("simultaneous with 12 desk phones and 3 soft clients: the first 10 phones plus every soft client", () => {
    const members = Array.from({ length: 12 }, (_, i) => `u${i + 1}`);
    const extra: DeviceRef[] = [
      { id: "s2", ownerId: "u2", kind: "soft" },
      { id: "s11", ownerId: "u11", kind: "soft" },
      { id: "s12", ownerId: "u12", kind: "soft" },
    ];
    const w = world({ users: 12, groups: [group({ strategy: "simultaneous", members })], extraDevices: extra });
    w.call("100", trunkFlow);
    const forked = w.proxy.ops.filter((o) => o.op === "fork").map((o) => o.device!);
    assert.deepEqual(forked.filter((d) => d.startsWith("p")), ["p1", "p2", "p3", "p4", "p5", "p6", "p7", "p8", "p9", "p10"]);
    assert.deepEqual(forked.filter((d) => d.startsWith("s")).sort(), ["s11", "s12", "s2"]);
  });

  it("cumulative stops adding desk phones at the cap but keeps adding soft clients", () => {
    const members = Array.from({ length: 12 }, (_, i) => `u${i + 1}`);
    const w = world({ users: 12, groups: [group({ strategy: "cumulative", members })], extraDevices: [{ id: "s12", ownerId: "u12", kind: "soft" }] });
    const { pc } = w.call("100", trunkFlow);
    w.clock.advance(10_500); // u11 (desk phone only) passed over for the cap; u12 rings its soft client at 10000
    const live = w.proxy.live(pc!).map((b) => b.target.deviceId);
    assert.equal(live.filter((d) => d!.startsWith("p")).length, 10);
    assert.ok(live.includes("s12"));
    assert.ok(!live.includes("p11") && !live.includes("p12"));
  });
});

// --- failures, busy, presence -------------------------------------------------------------------------

describe("member failures and busy members", () => {
  it("486 from the ringing member moves a sequential group on at once", () => {
    const w = world({ users: 3, groups: [group({ members: ["u1", "u2", "u3"], ringCount: 5 })] });
    const { pc } = w.call("100", trunkFlow);
    w.clock.advance(300);
    w.proxy.fail(w.proxy.ringing(pc!, "p1")[0]!, 486);
    assert.deepEqual(w.proxy.timeline("fork"), ["0 p1", "300 p2"]);
    // The new step has its full length from now.
    w.clock.advance(4999);
    assert.equal(w.proxy.timeline("fork").length, 2);
    w.clock.advance(1);
    assert.deepEqual(w.proxy.timeline("fork"), ["0 p1", "300 p2", "5300 p3"]);
  });

  it("603 from one device ends the member: their other devices are cancelled", () => {
    const w = world({ users: 2, groups: [group({ members: ["u1", "u2"], ringCount: 5 })], extraDevices: [{ id: "s1", ownerId: "u1", kind: "soft" }] });
    const { pc } = w.call("100", trunkFlow);
    w.proxy.fail(w.proxy.ringing(pc!, "p1")[0]!, 603);
    assert.deepEqual(w.proxy.timeline("cancel"), ["0 s1"]);
    assert.deepEqual(w.proxy.timeline("fork"), ["0 p1", "0 s1", "0 p2"]);
  });

  it("486 from one of two devices: the member keeps ringing on the other", () => {
    const w = world({ users: 2, groups: [group({ members: ["u1", "u2"], ringCount: 5 })], extraDevices: [{ id: "s1", ownerId: "u1", kind: "soft" }] });
    const { pc } = w.call("100", trunkFlow);
    w.proxy.fail(w.proxy.ringing(pc!, "p1")[0]!, 486);
    assert.deepEqual(w.proxy.timeline("fork"), ["0 p1", "0 s1"]);
    assert.equal(w.proxy.ringing(pc!, "s1").length, 1);
  });

  it("simultaneous: when every member rejected, the no-answer action applies at once", () => {
    const w = world({ users: 2, groups: [group({ strategy: "simultaneous", members: ["u1", "u2"], ringCount: 5 })] });
    const { pc } = w.call("100", trunkFlow);
    w.proxy.fail(w.proxy.ringing(pc!, "p1")[0]!, 486);
    assert.equal(pc!.rejected, undefined);
    w.proxy.fail(w.proxy.ringing(pc!, "p2")[0]!, 603);
    assert.equal(pc!.rejected, 480);
  });

  it("members at their call limit are skipped (counted from answered dialogs), and freed when the dialog ends", () => {
    const w = world({ users: 3, groups: [group({ members: ["u1", "u2", "u3"] })] });
    const first = w.call("100", trunkFlow).pc!;
    w.proxy.answer(w.proxy.ringing(first, "p1")[0]!);
    assert.equal(w.engine.activeCallsOf("u1"), 1);
    const second = w.call("100", trunkFlow).pc!;
    assert.deepEqual(w.proxy.timeline("fork", second), ["0 p2"]);
    assert.deepEqual(events(w, "call.busy").map((e) => e.memberIds), [["u1"]]);
    w.proxy.hangup(first);
    assert.equal(w.engine.activeCallsOf("u1"), 0);
    const third = w.call("100", trunkFlow).pc!;
    assert.deepEqual(w.proxy.timeline("fork", third), ["0 p1"]);
  });

  it("a device that dies in the middle of a call frees its operator (no BYE will ever come from it)", () => {
    const w = world({ users: 2, groups: [group({ members: ["u1", "u2"] })] });
    const first = w.call("100", trunkFlow).pc!;
    w.proxy.answer(w.proxy.ringing(first, "p1")[0]!);
    assert.equal(w.engine.activeCallsOf("u1"), 1);
    w.setOnline("p1", false);
    assert.equal(w.engine.activeCallsOf("u1"), 0, "freed once the phone stopped answering keep-alives");
    w.setOnline("p1", true);
    const next = w.call("100", trunkFlow).pc!;
    assert.deepEqual(w.proxy.timeline("fork", next), ["0 p1"], "rings again first in line");
    // The far end's BYE for the old call, when it comes, changes nothing more.
    w.proxy.hangup(first);
    assert.equal(w.engine.activeCallsOf("u1"), 0);
  });

  it("a 486 does not make a member busy: only dialogs count", () => {
    const w = world({ users: 2, groups: [group({ members: ["u1", "u2"] })] });
    const a = w.call("100", trunkFlow).pc!;
    w.proxy.fail(w.proxy.ringing(a, "p1")[0]!, 486);
    const b = w.call("100", trunkFlow).pc!;
    assert.deepEqual(w.proxy.timeline("fork", b), ["0 p1"]);
  });

  it("a device going offline mid-ring is cancelled, and sequential moves on", () => {
    const w = world({ users: 2, groups: [group({ members: ["u1", "u2"], ringCount: 5 })] });
    const { pc } = w.call("100", trunkFlow);
    w.clock.advance(200);
    w.setOnline("p1", false);
    assert.deepEqual(w.proxy.timeline("cancel"), ["200 p1"]);
    assert.deepEqual(w.proxy.timeline("fork"), ["0 p1", "200 p2"]);
    // The cancelled branch's 487 later is not news.
    w.proxy.fail(pc!.branches[0]!, 487);
    assert.deepEqual(w.proxy.timeline("fork"), ["0 p1", "200 p2"]);
  });

  it("the caller's own device never rings for its own group call", () => {
    const w = world({ users: 2, groups: [group({ strategy: "simultaneous", members: ["u1", "u2"] })] });
    w.call("100", "p1");
    assert.deepEqual(w.proxy.timeline("fork"), ["0 p2"]);
  });
});

// --- no answer -------------------------------------------------------------------------------------------

describe("no-answer actions", () => {
  const two = (noAnswer: Group["noAnswer"], extra: Partial<Group> = {}) => group({ members: ["u1", "u2"], noAnswer, ...extra });

  it("voicemail at an IP-literal URI is forked to directly; its answer records outcome voicemail", () => {
    const w = world({ users: 2, groups: [two({ kind: "voicemail", uri: "sip:vm@10.0.0.50:5090" })] });
    const { pc } = w.call("100", trunkFlow);
    w.clock.advance(2000);
    const vm = pc!.branches.at(-1)!;
    assert.equal(vm.target.uri, "sip:vm@10.0.0.50:5090");
    assert.deepEqual([vm.target.flow.remoteAddress, vm.target.flow.remotePort], ["10.0.0.50", 5090]);
    assert.equal(vm.target.memberId, undefined);
    w.proxy.answer(vm);
    w.proxy.hangup(pc!);
    assert.equal(w.records[0]!.outcome, "voicemail");
    assert.deepEqual(w.records[0]!.offered, ["u1", "u2"]);
    assert.equal(events(w, "call.missed").length, 1);
  });

  it("voicemail as tel: goes through the trunk", () => {
    const w = world({ users: 1, groups: [group({ members: ["u1"], noAnswer: { kind: "voicemail", uri: "tel:+4930999" } })] });
    const { pc } = w.call("100", trunkFlow);
    w.clock.advance(1000);
    const vm = pc!.branches.at(-1)!;
    assert.equal(vm.target.uri, "tel:+4930999");
    assert.equal(vm.target.flow.remoteAddress, TRUNK_IP);
  });

  it("forward-mobile: the last offered member's mobile through the trunk with its prefix", () => {
    const users = [user("u1", "201", { mobile: "+491701" }), user("u2", "202", { mobile: "+491702" })];
    const w = world({ users, groups: [two({ kind: "forward-mobile" })] });
    const { pc } = w.call("100", trunkFlow);
    w.clock.advance(2000);
    const fwd = pc!.branches.at(-1)!;
    assert.equal(fwd.target.uri, `sip:0+491702@${TRUNK_IP}:5070`);
    assert.deepEqual([fwd.target.flow.remoteAddress, fwd.target.flow.remotePort, fwd.target.flow.transport], [TRUNK_IP, 5070, "udp"]);
    w.proxy.fail(fwd, 404);
    assert.equal(pc!.rejected, 404);
    assert.equal(w.records[0]!.outcome, "missed");
  });

  it("forward-number through the trunk; without a trunk the call ends 480", () => {
    const w = world({ users: 1, groups: [group({ members: ["u1"], noAnswer: { kind: "forward-number", number: "0301234" } })] });
    const { pc } = w.call("100", trunkFlow);
    w.clock.advance(1000);
    assert.equal(pc!.branches.at(-1)!.target.uri, `sip:00301234@${TRUNK_IP}:5070`);
    w.proxy.answer(pc!.branches.at(-1)!);
    w.proxy.hangup(pc!);
    assert.equal(w.records[0]!.outcome, "forwarded");

    const noTrunk = world({ users: 1, groups: [group({ members: ["u1"], noAnswer: { kind: "forward-number", number: "0301234" } })], settings: { trunk: undefined } });
    const { pc: pc2 } = noTrunk.call("100", "p1"); // p1 is u1's own phone: nobody else rings
    assert.equal(pc2!.rejected, 480);
  });

  it("hangup with the configured status", () => {
    const w = world({ users: 1, groups: [group({ members: ["u1"], noAnswer: { kind: "hangup", status: 603 } })] });
    const { pc } = w.call("100", trunkFlow);
    w.clock.advance(1000);
    assert.equal(pc!.rejected, 603);
  });

  it("overflow-group after the group's own steps, with the offered list spanning both groups", () => {
    const w = world({
      users: 3,
      groups: [two({ kind: "overflow-group", groupId: "g2" }), group({ id: "g2", number: "200", members: ["u3"], noAnswer: { kind: "hangup" } })],
    });
    const { pc } = w.call("100", trunkFlow);
    w.clock.advance(5000);
    assert.deepEqual(w.proxy.timeline("fork"), ["0 p1", "1000 p2", "2000 p3"]);
    assert.equal(pc!.rejected, 480);
    assert.deepEqual(w.records[0]!.offered, ["u1", "u2", "u3"]);
    assert.equal(w.records[0]!.groupId, "g1");
  });

  it("overflow at once when every member is offline", () => {
    const w = world({
      users: 3,
      offline: ["p1", "p2"],
      groups: [two({ kind: "overflow-group", groupId: "g2" }), group({ id: "g2", number: "200", members: ["u3"] })],
    });
    w.call("100", trunkFlow);
    assert.deepEqual(w.proxy.timeline("fork"), ["0 p3"]);
  });

  it("the overflow target distributes afresh (a member of both rings again) and applies its own action", () => {
    const w = world({
      users: 2,
      groups: [two({ kind: "overflow-group", groupId: "g2" }), group({ id: "g2", number: "200", members: ["u1"], noAnswer: { kind: "hangup", status: 486 } })],
    });
    const { pc } = w.call("100", trunkFlow);
    w.clock.advance(10_000);
    assert.equal(pc!.rejected, 486);
    assert.deepEqual(w.proxy.timeline("fork"), ["0 p1", "1000 p2", "2000 p1"]);
  });
});

describe("wait for a free operator", () => {
  const waiting = (then: Group["noAnswer"] = { kind: "hangup" }) =>
    group({ strategy: "sequential", members: ["u1", "u2"], noAnswer: { kind: "wait-for-operator", maxWaitS: 30, then: then as never } });

  it("all busy: 182 Queued, then the first member whose call ends gets the call", () => {
    const w = world({ users: 4, groups: [waiting(), group({ id: "g9", number: "900", strategy: "simultaneous", members: ["u1", "u2"] })] });
    // u1 and u2 each take a call through g9.
    const busy1 = w.call("900", trunkFlow).pc!;
    w.proxy.answer(w.proxy.ringing(busy1, "p1")[0]!);
    const busy2 = w.call("900", trunkFlow).pc!;
    w.proxy.answer(w.proxy.ringing(busy2, "p2")[0]!);
    const { pc } = w.call("100", trunkFlow);
    assert.deepEqual(pc!.provisionals, [182]);
    assert.equal(pc!.branches.length, 0);
    assert.equal(w.engine.stats().queued, 1);
    w.clock.advance(5000);
    w.proxy.hangup(busy2); // u2 is free first
    assert.deepEqual(w.proxy.timeline("fork", pc), ["5000 p2"]);
    w.proxy.answer(pc!.branches[0]!);
    assert.equal(w.engine.stats().queued, 0);
    w.proxy.hangup(pc!);
    const rec = w.records.find((r) => r.id === pc!.request.callId)!;
    assert.equal(rec.answeredBy, "u2");
    assert.equal(rec.answerAfterMs, 5000);
  });

  it("a member coming online gets the waiting call", () => {
    const w = world({ users: 2, offline: ["p1"], groups: [waiting()] });
    const { pc } = w.call("100", trunkFlow);
    w.clock.advance(1000); // u1 offline (passed over), u2 rang one step, nobody answered → queued
    assert.deepEqual(pc!.provisionals, [182]);
    w.clock.advance(1000);
    w.setOnline("p1", true);
    assert.deepEqual(w.proxy.timeline("fork", pc), ["0 p2", "2000 p1"]);
    w.proxy.answer(w.proxy.ringing(pc!, "p1")[0]!);
    assert.equal(w.engine.activeCallsOf("u1"), 1);
  });

  it("after maxWaitS the final action applies", () => {
    const w = world({ users: 2, groups: [waiting({ kind: "hangup", status: 486 })] });
    const { pc } = w.call("100", trunkFlow);
    w.clock.advance(2000);
    assert.deepEqual(pc!.provisionals, [182]);
    w.clock.advance(29_999);
    assert.equal(pc!.rejected, undefined);
    w.clock.advance(1);
    assert.equal(pc!.rejected, 486);
    assert.equal(w.engine.stats().queued, 0);
    assert.equal(w.engine.stats().activeCalls, 0);
  });

  it("an offer that is not answered rings one step, then the call waits again", () => {
    const w = world({ users: 2, groups: [waiting()] });
    const { pc } = w.call("100", trunkFlow);
    w.clock.advance(2000);
    w.setOnline("p1", false);
    w.setOnline("p1", true); // offered to u1 at 2000
    w.clock.advance(1000);
    assert.deepEqual(w.proxy.timeline("cancel", pc).slice(-1), ["3000 p1"]);
    assert.equal(w.proxy.live(pc!).length, 0);
    assert.equal(w.engine.stats().queued, 1);
  });

  it("all members offline: no wait, the final action at once", () => {
    const w = world({ users: 2, offline: ["p1", "p2"], groups: [waiting({ kind: "hangup", status: 603 })] });
    const { pc } = w.call("100", trunkFlow);
    assert.equal(pc!.rejected, 603);
    assert.deepEqual(pc!.provisionals, []);
  });
});

// --- direct calls and outbound --------------------------------------------------------------------------

describe("direct calls to an extension", () => {
  it("ring every online device of the user; 480 when none; 486 at the call limit", () => {
    const w = world({ users: 3, groups: [], extraDevices: [{ id: "s1", ownerId: "u1", kind: "soft" }] });
    const { pc } = w.call("201", "p2");
    assert.deepEqual(w.proxy.timeline("fork", pc), ["0 p1", "0 s1"]);
    w.proxy.answer(pc!.branches[0]!);
    assert.equal(w.engine.activeCallsOf("u1"), 1);
    assert.equal(w.engine.activeCallsOf("u2"), 1); // the caller's operator is in a call too
    const again = w.call("201", "p3");
    assert.equal(again.pc, undefined);
    assert.equal(again.tx.status, 486);
    assert.deepEqual(events(w, "call.busy").at(-1)!.memberIds, ["u1"]);
    w.setOnline("p3", false);
    const off = w.call("203", trunkFlow);
    assert.equal(off.tx.status, 480);
    assert.equal(w.records.at(-1)!.outcome, "missed");
  });

  it("every branch failing ends the call with the best failure", () => {
    const w = world({ users: 2, groups: [], extraDevices: [{ id: "s1", ownerId: "u1", kind: "soft" }] });
    const { pc } = w.call("201", trunkFlow);
    w.proxy.fail(pc!.branches[0]!, 486);
    assert.equal(pc!.rejected, undefined);
    w.proxy.fail(pc!.branches[1]!, 408);
    assert.equal(pc!.rejected, 486);
    assert.equal(bestFailure([408, 480, 603, 486]), 603);
    assert.equal(bestFailure([408]), 480);
  });
});

// --- admission: toll-fraud rules ------------------------------------------------------------------------

describe("admission and toll-fraud rules", () => {
  it("the trunk may reach local numbers only", () => {
    const w = world({ users: 1, groups: [group({ members: ["u1"] })] });
    assert.ok(w.call("100", trunkFlow).pc);
    assert.ok(w.call("201", trunkFlow).pc);
    const relay = w.call("004930123", trunkFlow);
    assert.equal(relay.pc, undefined);
    assert.equal(relay.tx.status, 403);
    assert.equal(relay.tx.responses[0]!.reason, "Not relaying");
    assert.equal(w.call("*8", trunkFlow).tx.status, 403);
  });

  it("the trunk prefix is stripped from inbound numbers it puts before ours", () => {
    const w = world({ users: 1, groups: [group({ members: ["u1"] })] });
    assert.ok(w.call("0100", trunkFlow).pc);
  });

  it("toll fraud: a registered phone's UDP flow is challenged toward the trunk and needs its own device's credentials", () => {
    const w = world({ users: 2, groups: [group({ members: ["u1", "u2"] })] });
    // Local numbers from the phone's flow: no challenge.
    assert.ok(w.call("100", "p1").pc, "group");
    assert.ok(w.call("202", "p1").pc, "extension");
    // Outside number: 407 with a Proxy-Authenticate challenge, nothing forked.
    const first = w.call("0301234", "p1");
    assert.equal(first.tx.status, 407);
    assert.equal(first.pc, undefined);
    const challenge = getHeader(first.tx.responses[0]!, "proxy-authenticate");
    assert.ok(challenge?.startsWith("Digest "));
    const ruri = "sip:0301234@10.0.0.1";
    // The phone's own credentials: to the trunk with the prefix.
    const good = computeAuthorization(challenge!, { method: "INVITE", uri: ruri, username: "sip-p1", password: "pw-p1" }) as string;
    const ok = w.call("0301234", "p1", [`Proxy-Authorization: ${good}`, 'Proxy-Authorization: Digest username="x", realm="upstream.example", nonce="n", uri="u", response="0"']);
    assert.equal(ok.pc!.branches[0]!.target.uri, `sip:00301234@${TRUNK_IP}:5070`);
    // RFC 3261 §22.3: our realm's credentials are consumed; another realm's pass on.
    assert.deepEqual(ok.pc!.request.headers.filter((h) => h.name === "proxy-authorization").map((h) => /realm="([^"]*)"/.exec(h.value)?.[1]), ["upstream.example"]);
    // Another device's valid credentials over p1's flow: refused.
    const foreign = computeAuthorization(challenge!, { method: "INVITE", uri: ruri, username: "sip-p2", password: "pw-p2", nc: 2 }) as string;
    const f = w.call("0301234", "p1", [`Proxy-Authorization: ${foreign}`]);
    assert.equal(f.tx.status, 403);
    assert.equal(f.pc, undefined);
    // Wrong password, and the right password computed for another number (uri ≠ Request-URI): 403.
    const wrong = computeAuthorization(challenge!, { method: "INVITE", uri: ruri, username: "sip-p1", password: "nope", nc: 3 }) as string;
    assert.equal(w.call("0301234", "p1", [`Proxy-Authorization: ${wrong}`]).tx.status, 403);
    const moved = computeAuthorization(challenge!, { method: "INVITE", uri: "sip:0900123@10.0.0.1", username: "sip-p1", password: "pw-p1", nc: 4 }) as string;
    const m = w.call("0301234", "p1", [`Proxy-Authorization: ${moved}`]);
    assert.equal(m.tx.status, 403);
    assert.equal(m.pc, undefined);
  });

  it("a device over the TCP connection it registered on reaches the trunk unchallenged; only that connection counts", () => {
    const w = world({ users: 1, groups: [], tcp: true });
    const { pc } = w.call("0301234", "p1");
    assert.equal(pc!.branches[0]!.target.uri, `sip:00301234@${TRUNK_IP}:5070`);
    // Same address and port, another connection: challenged.
    assert.equal(w.call("0301234", { ...w.flowOf("p1"), connectionId: 999 }).tx.status, 407);
    // Same address, other port: not the registered flow → challenged.
    assert.equal(w.call("0301234", { ...w.flowOf("p1"), remotePort: 7777 }).tx.status, 407);
    // Same address and port over UDP: challenged.
    const { connectionId: _c, ...rest } = w.flowOf("p1");
    assert.equal(w.call("0301234", { ...rest, transport: "udp" }).tx.status, 407);
  });

  it("isDeviceFlow: exactly the transport, address and port of a live binding (what a ban lets through)", () => {
    const w = world({ users: 2, groups: [] });
    const f = w.flowOf("p1");
    assert.equal(w.engine.isDeviceFlow(f), true);
    assert.equal(w.engine.isDeviceFlow(w.flowOf("p2")), true);
    assert.equal(w.engine.isDeviceFlow({ ...f, remotePort: 7777 }), false);
    assert.equal(w.engine.isDeviceFlow({ ...f, transport: "tcp" }), false);
    assert.equal(w.engine.isDeviceFlow({ ...f, remoteAddress: "10.0.1.6" }), false);
    assert.equal(w.engine.isDeviceFlow({ ...f, remoteAddress: "::ffff:10.0.1.5" }), true, "IPv4-mapped IPv6 is the same address");
  });

  it("unknown sources are challenged with 407 whatever they dial; the right credentials make them a device", () => {
    const w = world({ users: 1, groups: [group({ members: ["u1"] })] });
    for (const n of ["100", "0301234", "999", "alice"]) {
      const r = w.call(n, strangerFlow);
      assert.equal(r.tx.status, 407, n);
      assert.equal(r.pc, undefined);
    }
    const challenge = getHeader(w.call("0301234", strangerFlow).tx.responses[0]!, "proxy-authenticate");
    assert.ok(challenge?.startsWith("Digest "));
    const good = computeAuthorization(challenge!, { method: "INVITE", uri: "sip:0301234@10.0.0.1", username: "sip-p1", password: "pw-p1" });
    assert.equal(typeof good, "string");
    const ok = w.call("0301234", strangerFlow, [`Proxy-Authorization: ${good as string}`]);
    assert.equal(ok.pc!.branches[0]!.target.flow.remoteAddress, TRUNK_IP);
    assert.equal(w.records.length, 0);

    const bad = computeAuthorization(challenge!, { method: "INVITE", uri: "sip:0301234@10.0.0.1", username: "sip-p1", password: "wrong" });
    const refused = w.call("0301234", strangerFlow, [`Proxy-Authorization: ${bad as string}`]);
    assert.equal(refused.tx.status, 403);
    assert.equal(refused.pc, undefined);
  });

  it("with a stateless sender the 407 goes out statelessly, not through the transaction; other answers still do", () => {
    const stateless: Array<{ tx: unknown; res: SipResponse }> = [];
    const w = world({ users: 1, groups: [], stateless });
    const r = w.call("0301234", strangerFlow);
    assert.equal(r.tx.responses.length, 0, "nothing through the transaction");
    assert.equal(stateless.length, 1);
    assert.equal(stateless[0]!.tx, r.tx);
    const res = stateless[0]!.res;
    assert.equal(res.status, 407);
    assert.ok(getHeader(res, "proxy-authenticate")?.startsWith("Digest "));
    assert.ok(res.to.tag !== undefined && res.to.tag.length > 0, "a To tag, so the ACK can be told apart (RFC 3261 §8.2.6.2)");
    // A wrong password is still a 403 through the transaction (absorbing retransmissions).
    const challenge = getHeader(res, "proxy-authenticate")!;
    const bad = computeAuthorization(challenge, { method: "INVITE", uri: "sip:0301234@10.0.0.1", username: "sip-p1", password: "wrong" });
    const refused = w.call("0301234", strangerFlow, [`Proxy-Authorization: ${bad as string}`]);
    assert.equal(refused.tx.status, 403);
    assert.equal(stateless.length, 1);
  });

  it("From is never trusted: a stranger claiming a local From is still challenged", () => {
    const w = world({ users: 1, groups: [] });
    const r = w.call("0301234", strangerFlow, []);
    assert.equal(r.tx.status, 407);
  });

  it("devices dialling something that is not a number get 404", () => {
    const w = world({ users: 1, groups: [] });
    assert.equal(w.call("alice", "p1").tx.status, 404);
    assert.equal(w.call("12ab", "p1").tx.status, 404);
  });
});

// --- pickup -------------------------------------------------------------------------------------------------

describe("call pickup", () => {
  it("group pickup: the picker's *8 is answered first, then a new auto-answer branch of the ringing call", () => {
    const w = world({ users: 3, groups: [group({ members: ["u1", "u2", "u3"], ringCount: 5, pickup: { enabled: true } })] });
    const { pc } = w.call("100", trunkFlow);
    w.clock.advance(100);
    const star = w.call("*8", "p3");
    assert.equal(star.pc, undefined);
    assert.equal(star.tx.status, 480);
    assert.match(getHeader(star.tx.responses[0]!, "warning") ?? "", /^399 ringedge "/);
    const pick = pc!.branches.at(-1)!;
    assert.equal(pick.target.deviceId, "p3");
    assert.deepEqual(pick.target.headers?.map((h) => h.name), ["call-info", "alert-info"]);
    assert.match(pick.target.headers![0]!.value, /;answer-after=0$/);
    assert.equal(pick.target.headers![1]!.value, "<http://127.0.0.1/>;info=alert-autoanswer");
    w.proxy.answer(pick);
    w.proxy.hangup(pc!);
    const rec = w.records.find((r) => r.id === pc!.request.callId)!;
    assert.equal(rec.answeredBy, "u3");
    assert.equal(rec.outcome, "answered");
  });

  it("the step timer does not cut a pickup branch that is being delivered", () => {
    const w = world({ users: 2, groups: [group({ members: ["u1"], ringCount: 1, pickup: { enabled: true } }), group({ id: "g2", number: "300", members: ["u2"], pickup: { enabled: true } })] });
    const { pc } = w.call("100", trunkFlow);
    w.clock.advance(900);
    const star = w.call("*8201", "p2"); // directed at u1's extension; u2 is not in g1
    assert.equal(star.tx.status, 480);
    w.clock.advance(500); // the step would have ended at 1000
    assert.equal(pc!.rejected, undefined);
    assert.equal(w.proxy.live(pc!).some((b) => b.target.deviceId === "p2"), true);
  });

  it("nothing to pick up, unknown extension, pickup disabled, or not a member", () => {
    const w = world({ users: 3, groups: [group({ members: ["u1", "u2"] }), group({ id: "g2", number: "300", members: ["u3"], pickup: { enabled: true } })] });
    assert.equal(w.call("*8", "p1").tx.status, 480);
    w.call("100", trunkFlow); // g1 has no pickup
    assert.equal(w.call("*8", "p2").tx.status, 480);
    assert.equal(w.call("*8999", "p2").tx.status, 404);
    w.call("300", trunkFlow);
    // u1 is not in g2: group pickup finds nothing for them.
    assert.equal(w.call("*8", "p1").tx.status, 480);
    assert.equal(w.proxy.ops.filter((o) => o.headers !== undefined).length, 0);
  });

  it("directed pickup of a direct call to a user", () => {
    const w = world({ users: 2, groups: [] });
    const { pc } = w.call("201", trunkFlow);
    w.call("*8201", "p2");
    assert.equal(pc!.branches.at(-1)!.target.deviceId, "p2");
  });
});

// --- records, events, latency ------------------------------------------------------------------------------

describe("call records and events", () => {
  it("an answered call records who answered and after how long; a cancelled one who was offered", () => {
    const w = world({ users: 2, groups: [group({ members: ["u1", "u2"], ringCount: 2 })] });
    const a = w.call("100", trunkFlow).pc!;
    w.clock.advance(2500);
    w.proxy.answer(w.proxy.ringing(a, "p2")[0]!);
    w.clock.advance(60_000);
    w.proxy.hangup(a);
    const b = w.call("100", trunkFlow).pc!;
    w.clock.advance(1200);
    w.proxy.callerCancel(b);
    assert.equal(w.records.length, 2);
    const [ans, miss] = w.records as [CallRecord, CallRecord];
    assert.deepEqual(
      { id: ans.id, at: ans.at, outcome: ans.outcome, answeredBy: ans.answeredBy, answerAfterMs: ans.answerAfterMs, durationMs: ans.durationMs, offered: ans.offered, caller: ans.caller, target: ans.target, groupId: ans.groupId },
      { id: a.request.callId, at: T0, outcome: "answered", answeredBy: "u2", answerAfterMs: 2500, durationMs: 60_000, offered: ["u1", "u2"], caller: "555", target: "100", groupId: "g1" },
    );
    assert.deepEqual({ outcome: miss.outcome, offered: miss.offered, answeredBy: miss.answeredBy, durationMs: miss.durationMs }, { outcome: "missed", offered: ["u1"], answeredBy: undefined, durationMs: undefined });
    for (const r of w.records) assert.equal(checkCallRecord(r, "call"), null);
    assert.deepEqual(events(w, "call.offered").map((e) => e.memberId), ["u1", "u2", "u1"]);
    assert.deepEqual(events(w, "call.answered").map((e) => [e.memberId, e.answerAfterMs]), [["u2", 2500]]);
    assert.deepEqual(events(w, "call.missed").map((e) => e.offered), [["u1"]]);
    assert.equal(w.engine.stats().activeCalls, 0);
  });

  it("a group where everyone is busy records outcome busy", () => {
    const w = world({ users: 1, groups: [group({ members: ["u1"] }), group({ id: "g2", number: "200", members: ["u1"] })] });
    const a = w.call("100", trunkFlow).pc!;
    w.proxy.answer(a.branches[0]!);
    const b = w.call("200", trunkFlow).pc!;
    assert.equal(b.rejected, 480);
    assert.equal(w.records.at(-1)!.outcome, "busy");
  });

  it("first-fork latency goes into the histogram once per call, with the over-budget count", () => {
    const w = world({ users: 1, groups: [group({ members: ["u1"] })], forkLatencyMs: 3.5 });
    const pc = w.call("100", trunkFlow).pc!;
    w.clock.advance(1000);
    assert.equal(pc.rejected, 480);
    const s = w.engine.stats();
    assert.equal(s.latency.count, 1);
    assert.equal(s.latency.maxUs, 3500);
    assert.equal(s.latency.overBudget, 1);
    assert.ok(Math.abs(s.latency.p50Us - 3500) <= 3500 / 32);
  });
});

// --- classify.ts: the pure admission pieces ------------------------------------------------------------------

describe("resolveDestination and admit", () => {
  const w = world({ users: 2, groups: [group({ members: ["u1"] })] });
  const dest = (uri: string, prefix?: string) => resolveDestination(uri, w.index, "*8", prefix);

  it("reads the Request-URI user part into a destination", () => {
    assert.equal(dest("sip:100@10.0.0.1").kind, "group");
    assert.equal(dest("sip:201@anything.example;user=phone").kind, "user");
    assert.deepEqual(dest("sip:*8@10.0.0.1"), { kind: "pickup", request: { kind: "group" } });
    assert.deepEqual(dest("sip:*8202@10.0.0.1"), { kind: "pickup", request: { kind: "directed", extension: "202" } });
    assert.deepEqual(dest("sip:+4930123@10.0.0.1"), { kind: "outbound", number: "+4930123" });
    assert.deepEqual(dest("tel:+49-30-123"), { kind: "outbound", number: "+4930123" });
    assert.deepEqual(dest("sip:%31%30%30@10.0.0.1").kind, "group");
    for (const bad of ["sip:10.0.0.1", "sip:alice@10.0.0.1", "http://x/", "garbage", "", `sip:${"1".repeat(40)}@h`, "sip:%00%01@h"]) {
      assert.equal(dest(bad).kind, "unroutable", bad);
    }
  });

  it("strips the trunk prefix only when a local number follows", () => {
    assert.equal(dest("sip:0100@h", "0").kind, "group");
    assert.deepEqual(dest("sip:0999@h", "0"), { kind: "outbound", number: "0999" });
  });

  it("admits by the toll-fraud rules", () => {
    const device: Caller = { kind: "device", deviceId: "p1", username: "x", userId: "u1", proof: "flow" };
    const ownerless: Caller = { ...device, userId: undefined };
    const trunk: Caller = { kind: "trunk" };
    const group = dest("sip:100@h");
    const out = dest("sip:0301@h");
    const pick = dest("sip:*8@h");
    assert.deepEqual(admit(trunk, group), { ok: true });
    assert.deepEqual(admit(trunk, out), { ok: false, status: 403, reason: "Not relaying" });
    assert.deepEqual(admit(trunk, pick), { ok: false, status: 403, reason: "Not relaying" });
    assert.deepEqual(admit(device, out), { ok: true });
    assert.deepEqual(admit(device, pick), { ok: true });
    assert.equal(admit(ownerless, pick).ok, false);
    assert.equal(admit({ kind: "unknown" }, group).ok, false);
    assert.deepEqual(admit(device, dest("sip:alice@h")), { ok: false, status: 404, reason: "Not Found" });
  });

  it("classifies sources: a binding's exact flow, then the trunk's addresses, else unknown", () => {
    const trunkSettings = w.settings.trunk!;
    const byFlow = (k: string) => (k === flowKey("udp", "10.0.1.5", 6000) ? { deviceId: "p1", username: "sip-p1" } : undefined);
    const c = (flow: Flow) => classifyCaller({ flow, trunk: trunkSettings, deviceByFlow: byFlow, ownerOf: () => "u1" }).kind;
    assert.equal(c(w.flowOf("p1")), "device");
    assert.equal(c({ ...w.flowOf("p1"), remoteAddress: "::ffff:10.0.1.5" }), "device");
    assert.equal(c(trunkFlow), "trunk");
    assert.equal(c({ ...trunkFlow, remoteAddress: `::ffff:${TRUNK_IP}` }), "trunk");
    assert.equal(c(strangerFlow), "unknown");
    assert.equal(classifyCaller({ flow: trunkFlow, trunk: undefined, deviceByFlow: byFlow, ownerOf: () => undefined }).kind, "unknown");
  });

  it("routes voicemail URIs: IP literal direct, anything else through the trunk", () => {
    assert.deepEqual(voicemailRoute("sip:vm@10.0.0.9"), { direct: true, host: "10.0.0.9", port: 5060, transport: "udp" });
    assert.deepEqual(voicemailRoute("sip:vm@[2001:db8::1]:5070;transport=tcp"), { direct: true, host: "2001:db8::1", port: 5070, transport: "tcp" });
    assert.deepEqual(voicemailRoute("sip:vm@voicemail.example"), { direct: false, number: "vm" });
    assert.deepEqual(voicemailRoute("tel:+4930999"), { direct: false, number: "+4930999" });
    assert.equal(trunkUri({ host: "2001:db8::2", port: 5080, transport: "tcp", allowedSources: [], prefix: "9" }, "12#"), "sip:912%23@[2001:db8::2]:5080;transport=tcp");
  });
});

// --- BLF: the engine's dialog events and pickup by Replaces (RFC 3891) ---------------------------------

describe("BLF events and pickup by INVITE with Replaces", () => {
  const ringing = (pc: FakeCall, b: Branch, tag: string): void => pc.events.onRinging?.(pc, b, { to: { tag } } as unknown as SipResponse);
  const collect = (w: World): Array<{ name: string; e: unknown }> => {
    const seen: Array<{ name: string; e: unknown }> = [];
    for (const name of ["call.placed", "call.ringing", "call.offer-ended", "call.ended", "call.offered"] as const) w.bus.on(name, (e) => seen.push({ name, e }));
    return seen;
  };

  it("emits call.placed (after the forks), call.ringing with the callee's tag, call.offer-ended when a step ends, call.ended once", () => {
    const w = world({ users: 3, groups: [group({ members: ["u1", "u2"], ringCount: 1 })] });
    const seen = collect(w);
    w.bus.on("call.placed", () => w.journal.push("placed"));
    const pc = w.call("100", "p3").pc!;
    assert.deepEqual(w.journal.slice(0, 2), ["fork p1", "placed"]);
    ringing(pc, pc.branches[0]!, "t1");
    w.clock.advance(UNIT); // u1's step ends, u2 rings
    w.proxy.answer(w.proxy.ringing(pc, "p2")[0]!);
    w.proxy.hangup(pc);
    assert.deepEqual(
      seen.map((x) => x.name),
      ["call.offered", "call.placed", "call.ringing", "call.offer-ended", "call.offered", "call.ended"],
    );
    assert.deepEqual(seen[1]!.e, { callId: "c1", callerTag: "f1", userId: "u3", deviceId: "p3", target: "100", at: T0 });
    assert.deepEqual(seen[2]!.e, { callId: "c1", memberId: "u1", deviceId: "p1", calleeTag: "t1", at: T0 });
    assert.deepEqual(seen[3]!.e, { callId: "c1", memberId: "u1", at: T0 + UNIT });
    assert.equal((seen[0]!.e as AgentEvents["call.offered"]).callerTag, "f1");
  });

  it("a Replaces naming the ringing call (tags in either order) picks it up like directed pickup", () => {
    for (const replaces of ["c1;to-tag=f1;from-tag=t1", "c1;from-tag=f1;to-tag=t1", "c1;to-tag=f1;from-tag="]) {
      const w = world({ users: 2, groups: [] });
      const pc = w.call("201", trunkFlow).pc!;
      ringing(pc, pc.branches[0]!, "t1");
      const pick = w.call("201", "p2", [`Replaces: ${replaces}`]);
      assert.equal(pick.pc, undefined, replaces);
      assert.equal(pick.tx.status, 480, replaces);
      const b = pc.branches.at(-1)!;
      assert.equal(b.target.deviceId, "p2", replaces);
      assert.match(b.target.headers?.[0]?.value ?? "", /answer-after=0/);
    }
  });

  it("a Replaces naming nothing gets 481, a malformed one 400; neither forks anything", () => {
    const w = world({ users: 2, groups: [] });
    const pc = w.call("201", trunkFlow).pc!;
    ringing(pc, pc.branches[0]!, "t1");
    const forks = w.proxy.ops.length;
    assert.equal(w.call("201", "p2", ["Replaces: nope;to-tag=f1;from-tag=t1"]).tx.status, 481, "unknown Call-ID");
    assert.equal(w.call("201", "p2", ["Replaces: c1;to-tag=f1;from-tag=other"]).tx.status, 481, "a tag the call never had");
    assert.equal(w.call("201", "p2", ["Replaces: c1;to-tag=x;from-tag=t1"]).tx.status, 481, "not the caller's tag");
    assert.equal(w.call("201", "p2", ["Replaces: c1"]).tx.status, 400, "no tags");
    assert.equal(w.call("201", "p2", ["Replaces: ;to-tag=a;from-tag=b"]).tx.status, 400, "no Call-ID");
    assert.equal(w.proxy.ops.length, forks);
  });

  it("a Replaces naming a group call without pickup is refused; one naming an answered call is routed as usual", () => {
    const w = world({ users: 3, groups: [group({ members: ["u1"], ringCount: 5 })] });
    const g = w.call("100", trunkFlow).pc!;
    ringing(g, g.branches[0]!, "t1");
    assert.equal(w.call("100", "p2", ["Replaces: c1;to-tag=f1;from-tag=t1"]).tx.status, 480);
    assert.equal(g.branches.some((b) => b.target.deviceId === "p2"), false);
    w.proxy.answer(g.branches[0]!);
    (g as { dialog?: unknown }).dialog = { callId: "c1", callerTag: "f1", calleeTag: "t1", state: "confirmed", createdAt: 0 };
    // Attended transfer to u3: the INVITE rings u3's phone, Replaces and all.
    const t = w.call("203", "p2", ["Replaces: c1;to-tag=f1;from-tag=t1"]);
    assert.ok(t.pc, "routed to the Request-URI");
    assert.equal(t.pc!.branches[0]!.target.deviceId, "p3");
  });
});

// --- working hours, wrap-up, the responsible operator, why (issue 14) ------------------------------

describe("working hours, wrap-up and the responsible operator in the engine", () => {
  // T0 is Tuesday 2023-11-14 22:13:20 UTC, 23:13 in Berlin: after office hours.
  const office = { weekly: [{ days: ["mon", "tue", "wed", "thu", "fri"] as Array<"mon" | "tue" | "wed" | "thu" | "fri">, from: "08:00", to: "18:00" }] };
  const toWednesday8 = Date.parse("2023-11-15T07:00:00Z") - T0;

  it("a call to a closed group takes the out-of-hours action without ringing anyone; at opening time members ring again", () => {
    const w = world({ users: 1, timeZone: "Europe/Berlin", groups: [group({ members: ["u1"], hours: office, outOfHours: { kind: "hangup", status: 486 } })] });
    const { pc } = w.call("100", trunkFlow);
    assert.equal(pc?.rejected, 486);
    assert.deepEqual(w.proxy.timeline("fork"), []);
    const why = w.records[0]?.why;
    assert.deepEqual(why?.steps.map((s) => s.kind), ["closed", "action"]);
    assert.equal(why?.steps[0]?.opensAt, T0 + toWednesday8);
    assert.equal(why?.steps[1]?.outOfHours, true);
    // One minute before opening: still closed (the cached answer holds); at opening: open.
    w.clock.advance(toWednesday8 - 60_000);
    assert.equal(w.call("100", trunkFlow).pc?.rejected, 486);
    w.clock.advance(60_000);
    const open = w.call("100", trunkFlow).pc!;
    assert.equal(w.proxy.ringing(open, "p1").length, 1);
    assert.deepEqual(w.engine.openState(w.index.groupsById.get("g1")!), { open: true, until: Date.parse("2023-11-15T17:00:00Z") });
  });

  it("an overflow into a closed group goes on to that group's out-of-hours action at once", () => {
    const w = world({
      users: 2,
      timeZone: "Europe/Berlin",
      groups: [
        group({ id: "g1", number: "100", members: ["u1"], noAnswer: { kind: "overflow-group", groupId: "g2" } }),
        group({ id: "g2", number: "101", members: ["u2"], hours: office, outOfHours: { kind: "voicemail", uri: "sip:vm@192.0.2.9:5080" } }),
      ],
    });
    const { pc } = w.call("100", trunkFlow);
    w.clock.advance(UNIT);
    assert.deepEqual(w.proxy.timeline("fork", pc), ["0 p1", `${UNIT} sip:vm@192.0.2.9:5080`]);
    w.proxy.answer(pc!.branches.at(-1)!);
    w.proxy.hangup(pc!);
    const action = w.records[0]?.why?.steps.find((s) => s.kind === "action");
    assert.deepEqual(action?.passed, [{ groupId: "g2", reason: "closed" }]);
    assert.equal(w.records[0]?.outcome, "voicemail");
  });

  it("wrap-up: the operator is skipped for wrapUpS after their answered call ends; a waiting call reaches them when it is over", () => {
    const w = world({ users: 1, groups: [group({ members: ["u1"], wrapUpS: 10, noAnswer: { kind: "wait-for-operator", maxWaitS: 60, then: { kind: "hangup" } } })] });
    const first = w.call("100", trunkFlow).pc!;
    w.proxy.answer(w.proxy.ringing(first, "p1")[0]!);
    w.clock.advance(5_000);
    w.proxy.hangup(first);
    assert.equal(w.engine.wrapUpOf("g1").get("u1"), w.clock.now() + 10_000);
    const second = w.call("100", trunkFlow).pc!;
    assert.deepEqual(second.provisionals, [182]);
    assert.equal(w.proxy.ringing(second, "p1").length, 0);
    assert.deepEqual(w.engine.why.get("c2")?.trace.entries.flatMap((e) => (e.kind === "step" ? e.plan.skipped : [])), [{ memberId: "u1", reason: "wrap-up" }]);
    w.clock.advance(9_999);
    assert.equal(w.proxy.ringing(second, "p1").length, 0, "still in wrap-up");
    w.clock.advance(1);
    assert.equal(w.proxy.ringing(second, "p1").length, 1, "offered when the wrap-up ends");
    w.proxy.answer(w.proxy.ringing(second, "p1")[0]!);
    assert.deepEqual(w.records.length, 1);
    w.proxy.hangup(second);
    const steps = w.records[1]?.why?.steps.map((s) => `${s.kind}${s.items ? ":" + s.items.map((i) => `${i.userId}=${i.reason ?? "offered"}`).join(",") : ""}`);
    assert.deepEqual(steps, ["step:u1=wrap-up", "action", "offer:u1=offered"]);
  });

  it("the responsible operator: from the directory first, else who answered this caller last (P-Asserted-Identity)", () => {
    const g = group({ members: ["u1", "u2"], responsibleFirst: { ringCount: 2 } });
    const pai = ["P-Asserted-Identity: <sip:+4930999000@192.0.2.10>"];
    const w = world({ users: 3, groups: [g], settings: { knownCallers: { rememberAnsweredS: 3600 } } });
    // Nobody known yet: the group's strategy; u2 answers and is remembered.
    const first = w.call("100", trunkFlow, pai).pc!;
    assert.deepEqual(w.proxy.timeline("fork", first), ["0 p1"]);
    w.clock.advance(UNIT);
    w.proxy.answer(w.proxy.ringing(first, "p2")[0]!);
    w.proxy.hangup(first);
    // The same caller again: u2 alone for two rings, then the group from the start.
    const second = w.call("100", trunkFlow, pai).pc!;
    const t = w.clock.now() - T0;
    w.clock.advance(2 * UNIT);
    assert.deepEqual(w.proxy.timeline("fork", second), [`${t} p2`, `${t + 2 * UNIT} p1`]);
    assert.deepEqual(w.proxy.timeline("cancel", second), [`${t + 2 * UNIT} p2`]);
    assert.deepEqual(w.engine.why.get("c2")?.trace.responsible, { userId: "u2", source: "memory" });
    // A caller the directory lists goes to their responsible operator, whatever the memory says.
    const d = world({ users: 3, groups: [g], knownCallers: [{ number: "+4930999000", userId: "u3" }], settings: { knownCallers: { rememberAnsweredS: 3600 } } });
    assert.deepEqual(d.proxy.timeline("fork", d.call("100", trunkFlow, pai).pc), ["0 p3"]);
    // A caller from a phone of the site has no responsible operator.
    const internal = d.call("100", "p2").pc!;
    assert.deepEqual(d.proxy.timeline("fork", internal), [`0 p1`]);
  });
});

// --- greetings and menus (docs/menus.md) -------------------------------------------------------------

describe("greetings and menus: admission and where the call goes", () => {
  /** A call flow that records each greeting and lets the test decide where it goes. */
  function menusFake(): { starts: Array<{ pc: ProxyCall; greeting: unknown; ctx: import("../../agent/routing/menu.ts").IvrContext; route: (t: import("../../agent/routing/menu.ts").FinalTarget) => void }>; left: string[]; dep: NonNullable<ConstructorParameters<typeof RoutingEngine>[0]["callMenus"]> } {
    const starts: Array<{ pc: ProxyCall; greeting: unknown; ctx: import("../../agent/routing/menu.ts").IvrContext; route: (t: import("../../agent/routing/menu.ts").FinalTarget) => void }> = [];
    const left: string[] = [];
    return { starts, left, dep: { start: (pc, greeting, ctx, route) => starts.push({ pc, greeting, ctx, route }), leave: (pc) => left.push(pc.id) } };
  }
  const users = [user("u1", "201"), user("u2", "202"), user("u3", "2025")];
  const groups = [
    group({ id: "sales", number: "600", members: ["u1"], ringCount: 2 }),
    group({ id: "support", number: "61", members: ["u2"], ringCount: 2, noAnswer: { kind: "voicemail", uri: "sip:vm-support@192.0.2.9" } }),
  ];
  const inbound = [
    { number: "4000", greeting: { then: { kind: "group", groupId: "support" }, extensionDialling: { maxDigits: 4 } } },
    { greeting: { then: { kind: "menu", menuId: "main" } } },
  ];
  const menus = [{ id: "main", options: [{ digit: "1", target: { kind: "group", groupId: "sales" } }], afterLast: { kind: "hangup" } }];
  const setup = (extra: { offline?: string[] } = {}) => {
    const m = menusFake();
    const w = world({ users, groups, inbound, menus, callMenus: m.dep, ...extra });
    return { w, m };
  };

  it("a trunk call to a listed number gets its greeting: nothing rings until the greeting routes it; then the group rings", () => {
    const { w, m } = setup();
    const { pc } = w.call("4000", trunkFlow);
    assert.ok(pc !== undefined);
    assert.equal(m.starts.length, 1);
    assert.deepEqual((m.starts[0]!.greeting as { then: unknown }).then, { kind: "group", groupId: "support" });
    assert.deepEqual(w.proxy.timeline("fork"), [], "nothing rings during the greeting");
    // The engine's dial lookups for extension dialling: numbers and longer ones within maxDigits.
    assert.deepEqual(m.starts[0]!.ctx.dial("600"), { target: { kind: "group", groupId: "sales" }, longer: false });
    assert.deepEqual(m.starts[0]!.ctx.dial("202"), { target: { kind: "user", userId: "u2" }, longer: true }, "2025 starts with 202");
    assert.deepEqual(m.starts[0]!.ctx.dial("9"), { target: undefined, longer: false });
    assert.equal(m.starts[0]!.ctx.menus.get("main")?.id, "main");
    m.starts[0]!.route({ kind: "group", groupId: "sales" });
    assert.deepEqual(w.proxy.timeline("fork"), ["0 p1"]);
    w.proxy.answer(w.proxy.ringing(pc!, "p1")[0]!);
    w.proxy.hangup(pc!);
    assert.equal(w.records.at(-1)?.groupId, "sales");
    assert.equal(w.records.at(-1)?.outcome, "answered");
    assert.deepEqual(m.left, [pc!.id], "the call flow is told when the call ends");
  });

  it("to a user: their phones ring as a direct call; offline → 480; a second route is ignored", () => {
    const { w, m } = setup({ offline: ["p3"] });
    const a = w.call("+4930999", trunkFlow).pc!;
    assert.equal(m.starts.length, 1, "the default route");
    m.starts[0]!.route({ kind: "user", userId: "u2" });
    m.starts[0]!.route({ kind: "hangup" });
    assert.deepEqual(w.proxy.timeline("fork", a), ["0 p2"]);
    assert.equal(a.rejected, undefined);
    const b = w.call("+4930998", trunkFlow).pc!;
    m.starts[1]!.route({ kind: "user", userId: "u3" });
    assert.equal(b.rejected, 480);
    assert.equal(w.records.at(-1)?.outcome, "missed");
  });

  it("voicemail of a group forwards to its voicemail action; a group without one, a user's mailbox and hang-up end with 480", () => {
    const { w, m } = setup();
    const a = w.call("4000", trunkFlow).pc!;
    m.starts[0]!.route({ kind: "voicemail", owner: { kind: "group", id: "support" } });
    assert.deepEqual(w.proxy.timeline("fork", a), ["0 sip:vm-support@192.0.2.9"]);
    for (const t of [{ kind: "voicemail", owner: { kind: "group", id: "sales" } }, { kind: "voicemail", owner: { kind: "user", id: "u1" } }, { kind: "hangup" }] as const) {
      const c = w.call("4000", trunkFlow).pc!;
      m.starts.at(-1)!.route(t);
      assert.equal(c.rejected, 480, JSON.stringify(t));
      assert.deepEqual(w.proxy.timeline("fork", c), []);
    }
  });

  it("the caller hanging up during the greeting: the flow is told, a late route rings nobody, the call is recorded once", () => {
    const { w, m } = setup();
    const pc = w.call("4000", trunkFlow).pc!;
    w.proxy.callerCancel(pc);
    assert.deepEqual(m.left, [pc.id]);
    m.starts[0]!.route({ kind: "group", groupId: "sales" });
    assert.deepEqual(w.proxy.timeline("fork"), []);
    assert.equal(w.records.length, 1);
    assert.equal(w.records[0]!.outcome, "missed");
  });

  it("a local number not listed rings as before; the site's own phones are never greeted; without the call flow, inbound routes are ignored", () => {
    const { w, m } = setup();
    w.call("600", trunkFlow);
    w.call("0600", trunkFlow);
    assert.equal(m.starts.length, 0);
    assert.deepEqual(w.proxy.timeline("fork"), ["0 p1", "0 p1"]);
    w.call("4000", "p1");
    assert.equal(m.starts.length, 0, "a phone dialling 4000 goes to the trunk");
    const plain = world({ users, groups, inbound, menus });
    const r = plain.call("+4930999", trunkFlow);
    assert.equal(r.tx.status, 403, "not relaying, as before");
  });
});

// --- the queue: order, positions, figures ------------------------------------------------------------

describe("queue order, positions and statistics", () => {
  it("a new call queues behind older waiting ones instead of ringing a free operator; an unanswered offer is retried after a ring", () => {
    const w = world({ users: 2, groups: [group({ members: ["u1"], noAnswer: { kind: "wait-for-operator", maxWaitS: 60, then: { kind: "hangup" } } }), group({ id: "g9", number: "900", members: ["u1"] })] });
    const busy = w.call("900", trunkFlow).pc!;
    w.proxy.answer(w.proxy.ringing(busy, "p1")[0]!);
    const a = w.call("100", trunkFlow).pc!;
    w.clock.advance(1000);
    w.proxy.hangup(busy); // u1 free at 1000: A is offered
    w.clock.advance(1000); // one step: not answered, A waits again
    assert.deepEqual(w.proxy.timeline("fork", a), ["1000 p1"]);
    assert.deepEqual(w.proxy.timeline("cancel", a), ["2000 p1"]);
    // C arrives while A waits and u1 is free: C queues (182), A is offered first.
    w.clock.advance(500);
    const c = w.call("100", trunkFlow).pc!;
    assert.deepEqual(c.provisionals, [182]);
    assert.deepEqual(w.proxy.timeline("fork", c), []);
    assert.deepEqual(w.proxy.timeline("fork", a), ["1000 p1", "2500 p1"]);
    // Not answered again: after a ring's pause (1000) A is offered again, still before C.
    w.clock.advance(2000);
    assert.deepEqual(w.proxy.timeline("fork", a), ["1000 p1", "2500 p1", "4500 p1"]);
    assert.deepEqual(w.proxy.timeline("fork", c), []);
    w.proxy.answer(w.proxy.ringing(a, "p1")[0]!);
    w.proxy.hangup(a);
    assert.deepEqual(w.proxy.timeline("fork", c), ["4500 p1"], "C next, when u1 is free again");
  });

  it("callers are served in arrival order; each hears its place in its group's queue; joined/left events and figures follow", () => {
    const entries = new Map<string, { groupId: string; position: () => number | undefined }>();
    const left: string[] = [];
    const w = world({
      users: 3,
      groups: [
        group({ members: ["u1"], noAnswer: { kind: "wait-for-operator", maxWaitS: 30, then: { kind: "hangup" } } }),
        group({ id: "g2", number: "110", members: ["u2"], noAnswer: { kind: "wait-for-operator", maxWaitS: 20, then: { kind: "hangup", status: 486 } } }),
        group({ id: "g9", number: "900", strategy: "simultaneous", members: ["u1", "u2"] }),
      ],
      queueMedia: { enter: (pc, e) => void entries.set(pc.request.callId, e!), leave: (pc) => void left.push(pc.request.callId) },
    });
    const joined: Array<AgentEvents["queue.joined"]> = [];
    const leaving: Array<AgentEvents["queue.left"]> = [];
    w.bus.on("queue.joined", (e) => void joined.push(e));
    w.bus.on("queue.left", (e) => void leaving.push(e));
    // u1 and u2 busy.
    const busy1 = w.call("900", trunkFlow).pc!;
    w.proxy.answer(w.proxy.ringing(busy1, "p1")[0]!);
    const busy2 = w.call("900", trunkFlow).pc!;
    w.proxy.answer(w.proxy.ringing(busy2, "p2")[0]!);
    const a = w.call("100", trunkFlow).pc!;
    w.clock.advance(1000);
    const other = w.call("110", trunkFlow).pc!;
    const b = w.call("100", trunkFlow).pc!;
    w.clock.advance(1000);
    const c = w.call("100", trunkFlow).pc!;
    const pos = (pc: FakeCall): number | undefined => entries.get(pc.request.callId)!.position();
    assert.deepEqual([a, b, c, other].map(pos), [1, 2, 3, 1], "places in each group's own queue");
    assert.deepEqual(joined.map((e) => `${e.groupId}:${e.position}`), ["g1:1", "g2:1", "g1:2", "g1:3"]);
    assert.deepEqual(entries.get(a.request.callId)!.groupId, "g1");
    assert.deepEqual(w.engine.queueLengths(), new Map([["g1", 3], ["g2", 1]]));

    // u1 frees at 5000: the oldest caller, A, is offered first; B and C wait.
    w.clock.advance(3000);
    w.proxy.hangup(busy1);
    assert.deepEqual(w.proxy.timeline("fork", a), ["5000 p1"]);
    assert.equal(b.branches.length + c.branches.length, 0);
    assert.deepEqual([a, b, c].map(pos), [1, 2, 3], "a caller being offered keeps its place until answered");
    w.proxy.answer(a.branches[0]!);
    assert.deepEqual([a, b, c].map(pos), [undefined, 1, 2]);
    // C hangs up while waiting: abandoned.
    w.clock.advance(1000);
    w.proxy.callerCancel(c);
    assert.deepEqual(pos(b), 1);
    // u1 ends A's call at 10000: B is next.
    w.clock.advance(4000);
    w.proxy.hangup(a);
    assert.deepEqual(w.proxy.timeline("fork", b), ["10000 p1"]);
    w.proxy.answer(b.branches[0]!);
    // The g2 caller runs out of time (20 s after it joined at 1000).
    w.clock.advance(11_000);
    assert.equal(other.rejected, 486);

    assert.deepEqual(leaving.map((e) => `${e.groupId}:${e.reason}:${e.waitedMs}`), ["g1:answered:5000", "g1:abandoned:4000", "g1:answered:9000", "g2:max-wait:20000"]);
    for (const x of [a, b, c, other]) assert.ok(left.includes(x.request.callId), `the music left with ${x.request.callId}`);
    assert.deepEqual(w.engine.queueFigures(), [
      { groupId: "g1", waiting: 0, joined: 3, answered: 2, abandoned: 1, timedOut: 0, waitMedianMs: 7000, waitMaxMs: 9000 },
      { groupId: "g2", waiting: 0, joined: 1, answered: 0, abandoned: 0, timedOut: 1, waitMedianMs: null, waitMaxMs: null },
    ]);
    assert.equal(w.engine.stats().queued, 0);
    assert.deepEqual(w.engine.queueLengths(), new Map([["g1", 0], ["g2", 0]]), "every wait-for-operator group, empty ones too");
  });
});

describe("mailboxes on the appliance (voicemail)", () => {
  type Taken = NonNullable<Parameters<typeof world>[0]["mailboxes"]>;
  const withBox = (over: Partial<Group> = {}) => group({ members: ["u1"], noAnswer: { kind: "voicemail" }, voicemail: { enabled: true, maxMessageS: 60, maxMessages: 5, retentionDays: 30, silenceS: 5, noAnswerS: 10 }, ...over });

  it("the group's own mailbox takes the call after the last step; answered by no member, recorded as voicemail", () => {
    const taken: Taken = [];
    const w = world({ users: 1, groups: [withBox()], mailboxes: taken });
    const { pc } = w.call("100", trunkFlow);
    assert.equal(taken.length, 0);
    w.clock.advance(1000);
    assert.equal(taken.length, 1);
    assert.equal(taken[0]!.mailbox, "group/g1");
    assert.equal(taken[0]!.caller, "555");
    assert.ok(pc!.branches.every((b) => b.state !== "calling" && b.state !== "ringing"), "the member's phone was cancelled");
    taken[0]!.events.answered();
    const answered = events(w, "call.answered");
    assert.equal(answered.length, 1);
    assert.equal(answered[0]!.memberId, undefined);
    taken[0]!.events.ended(undefined);
    assert.equal(w.records[0]!.outcome, "voicemail");
  });

  it("a named user mailbox; the caller cancelling before the answer makes the engine leave it", () => {
    const taken: Taken = [];
    const anna = user("u1", "201", { voicemail: { enabled: true, maxMessageS: 60, maxMessages: 5, retentionDays: 30, silenceS: 5, noAnswerS: 10 } });
    const w = world({ users: [anna], groups: [group({ members: ["u1"], noAnswer: { kind: "voicemail", mailbox: "user/u1" } })], mailboxes: taken });
    const { pc } = w.call("100", trunkFlow);
    w.clock.advance(1000);
    assert.equal(taken[0]!.mailbox, "user/u1");
    pc!.events.onCallerCancelled?.(pc!);
    assert.equal(taken[0]!.left, true);
    assert.equal(w.records[0]!.outcome, "missed");
  });

  it("without voicemail running, a mailbox action gets 480", () => {
    const w = world({ users: 1, groups: [withBox()] });
    const { pc } = w.call("100", trunkFlow);
    w.clock.advance(1000);
    assert.equal(pc!.rejected, 480);
  });

  it("direct calls to a user with a mailbox: at once when offline, after noAnswerS of ringing otherwise", () => {
    const taken: Taken = [];
    const box = { enabled: true, maxMessageS: 60, maxMessages: 5, retentionDays: 30, silenceS: 5, noAnswerS: 10 };
    const w = world({ users: [user("u1", "201", { voicemail: box }), user("u2", "202")], groups: [], offline: ["p1"], mailboxes: taken });
    w.call("201", trunkFlow);
    assert.deepEqual(taken.map((t) => t.mailbox), ["user/u1"], "offline: straight to the mailbox");
    w.setOnline("p1", true);
    const { pc } = w.call("201", trunkFlow);
    assert.equal(pc!.branches.length, 1, "the phone rings first");
    w.clock.advance(9_999);
    assert.equal(taken.length, 1);
    w.clock.advance(1);
    assert.equal(taken.length, 2);
    assert.ok(pc!.branches.every((b) => b.state !== "calling" && b.state !== "ringing"));
    // A user without a mailbox is unchanged: 480 when offline.
    w.setOnline("p2", false);
    const r = w.call("202", trunkFlow);
    assert.equal(r.pc, undefined);
    assert.equal(taken.length, 2);
  });
});

describe("routing engine: callbacks in the queue (routing/callback.ts order)", () => {
  /** QueueCallbacks over a CallbackBook, recording what was dispatched to whom; like the service, a dispatched operator is held busy. */
  function callbacks(): QueueCallbacks & { book: CallbackBook; dispatched: string[]; engine?: RoutingEngine } {
    const book = new CallbackBook();
    const dispatched: string[] = [];
    const self: QueueCallbacks & { book: CallbackBook; dispatched: string[]; engine?: RoutingEngine } = {
      book,
      dispatched,
      pending: () => book.all(),
      busy: () => book.operatorsBusy(),
      dispatch: (id, memberId) => {
        if (!book.begin(id, memberId)) return false;
        dispatched.push(`${id}→${memberId}`);
        self.engine?.holdOperator(memberId);
        return true;
      },
    };
    return self;
  }
  const wait = { kind: "wait-for-operator", maxWaitS: 600, then: { kind: "hangup" } } as const;

  it("a callback waits behind an earlier caller and goes before a later one; one free operator serves one head", () => {
    const cbs = callbacks();
    const w = world({ users: 2, groups: [group({ members: ["u1"], noAnswer: wait })], callbacks: cbs });
    cbs.engine = w.engine;
    // u1 busy with a first call.
    const first = w.call("100", trunkFlow).pc!;
    w.proxy.answer(w.proxy.ringing(first, "p1")[0]!);
    w.clock.advance(1000);
    const a = w.call("100", trunkFlow).pc!; // waiting since T0+1000
    assert.deepEqual(a.provisionals, [182]);
    w.clock.advance(500);
    cbs.book.add({ id: "cb", groupId: "g1", number: "+4930111", place: w.clock.now(), requestedAt: w.clock.now() }); // place T0+1500
    w.engine.serveQueue();
    assert.deepEqual(cbs.dispatched, [], "u1 is busy: nothing served");
    w.clock.advance(500);
    const c = w.call("100", trunkFlow).pc!; // waiting since T0+2000
    // u1 frees: the head is caller a, not the callback.
    w.proxy.hangup(first);
    assert.equal(w.proxy.ringing(a, "p1").length, 1, "the earlier caller is offered");
    assert.deepEqual(cbs.dispatched, [], "the callback does not jump ahead of a caller still waiting");
    assert.equal(w.proxy.ringing(c, "p1").length, 0);
    // u1 answers a and hangs up: now the callback is the head, before c.
    w.proxy.answer(w.proxy.ringing(a, "p1")[0]!);
    w.proxy.hangup(a);
    assert.deepEqual(cbs.dispatched, ["cb→u1"]);
    assert.equal(w.proxy.ringing(c, "p1").length, 0, "the later caller waits behind the callback");
    // The callback holds u1 (its call is up) until it releases them: then c.
    cbs.book.connected("cb");
    w.engine.releaseOperator("u1");
    assert.equal(w.proxy.ringing(c, "p1").length, 1);
  });

  it("release rate: two callbacks and one free operator start one; the operator reserved by a callback is offered nothing else; a second operator takes the next", () => {
    const cbs = callbacks();
    const w = world({ users: 2, groups: [group({ members: ["u1", "u2"], noAnswer: wait })], offline: ["p2"], callbacks: cbs });
    cbs.engine = w.engine;
    cbs.book.add({ id: "x", groupId: "g1", number: "+4930111", place: T0 - 2000, requestedAt: T0 });
    cbs.book.add({ id: "y", groupId: "g1", number: "+4930222", place: T0 - 1000, requestedAt: T0 });
    w.engine.serveQueue();
    assert.deepEqual(cbs.dispatched, ["x→u1"]);
    // A caller arriving now is offered to nobody: u1 is reserved, u2 offline.
    const late = w.call("100", trunkFlow).pc!;
    assert.equal(w.proxy.ringing(late, "p1").length, 0);
    w.engine.serveQueue();
    assert.deepEqual(cbs.dispatched, ["x→u1"], "never faster than operators free up");
    // u2 comes online: the next head (callback y, earlier than the caller) goes to them.
    w.setOnline("p2", true);
    assert.deepEqual(cbs.dispatched, ["x→u1", "y→u2"]);
    assert.equal(w.proxy.ringing(late, "p2").length, 0);
  });

  it("a callback of a group that no longer exists, or not yet due, is not served", () => {
    const cbs = callbacks();
    const w = world({ users: 1, groups: [group({ members: ["u1"], noAnswer: wait })], callbacks: cbs });
    cbs.engine = w.engine;
    cbs.book.add({ id: "gone", groupId: "nowhere", number: "+4930111", place: T0 - 2000, requestedAt: T0 });
    cbs.book.add({ id: "later", groupId: "g1", number: "+4930222", place: T0 - 1000, requestedAt: T0 });
    cbs.book.begin("later", "u1");
    cbs.book.callerFailed("later", w.clock.now(), { retries: 1, retryDelayS: 60 });
    w.engine.serveQueue();
    assert.deepEqual(cbs.dispatched, []);
    w.clock.advance(60_000);
    w.engine.serveQueue();
    assert.deepEqual(cbs.dispatched, ["later→u1"]);
  });
});

describe("listening to voicemail: the voicemail code and menu targets (EngineDeps.listen)", () => {
  const box = { enabled: true, maxMessageS: 60, maxMessages: 5, retentionDays: 30, silenceS: 5, noAnswerS: 10 };
  const users = [user("u1", "201", { voicemail: box }), user("u2", "202", { voicemail: box }), user("u3", "203")];
  const groups = [group({ id: "g1", number: "100", members: ["u1", "u3"], voicemail: box }), group({ id: "g2", number: "101", members: ["u2"], voicemail: box })];
  const setup = (o: { tcp?: boolean } = {}) => {
    const heard: Array<{ pc: ProxyCall; mailboxes: string[] }> = [];
    const w = world({ users, groups, listen: heard, tcp: o.tcp ?? true });
    return { w, heard };
  };
  const reason = (tx: FakeTx): string | undefined => tx.responses.at(-1)?.reason;

  it("the owner's phone: the code alone opens their own mailbox then their groups' (enabled ones); the code and a number that mailbox", () => {
    const { w, heard } = setup();
    const a = w.call("*97", "p1");
    assert.ok(a.pc, "handed over as a call");
    assert.deepEqual(heard.map((h) => h.mailboxes), [["user/u1", "group/g1"]]);
    assert.equal(a.tx.responses.length, 0, "nothing answered by the engine");
    w.call("*97100", "p1");
    w.call("*97201", "p1");
    assert.deepEqual(heard.slice(1).map((h) => h.mailboxes), [["group/g1"], ["user/u1"]]);
    // u3 has no mailbox of their own: their group's only.
    w.call("*97", "p3");
    assert.deepEqual(heard.at(-1)!.mailboxes, ["group/g1"]);
    assert.equal(w.records.length, 0, "feature-code calls are not in the call log");
  });

  it("refused before any answer, with the reason: another user's mailbox, a group not theirs, no such number, not enabled, no owner, the trunk", () => {
    const { w, heard } = setup();
    const cases: Array<[string, string, number, string]> = [
      ["*97202", "p1", 403, "Not your mailbox"],
      ["*97101", "p1", 403, "Not your mailbox"],
      ["*979999", "p1", 404, "No such mailbox"],
      ["*97abc", "p1", 404, "No such mailbox"],
      ["*97203", "p3", 404, "Mailbox not enabled"],
    ];
    for (const [to, from, status, why] of cases) {
      const r = w.call(to, from);
      assert.equal(r.pc, undefined, to);
      assert.equal(r.tx.status, status, `${to} from ${from}`);
      assert.equal(reason(r.tx), why, `${to} from ${from}`);
    }
    const t = w.call("*97", trunkFlow);
    assert.equal(t.tx.status, 403);
    assert.equal(reason(t.tx), "Not relaying");
    assert.equal(heard.length, 0);
    // A phone of the site whose device has no owner (not in the site's devices): admission says no.
    const ownerless: Caller = { kind: "device", deviceId: "lobby", username: "sip-lobby", userId: undefined, proof: "digest" };
    assert.deepEqual(admit(ownerless, { kind: "voicemail", selector: "" }), { ok: false, status: 403, reason: "Forbidden (device has no operator)" });
  });

  it("a user with no enabled mailbox at all: 404 No mailbox", () => {
    const heard: Array<{ pc: ProxyCall; mailboxes: string[] }> = [];
    const w = world({ users: [user("u1", "201")], groups: [], listen: heard, tcp: true });
    const r = w.call("*97", "p1");
    assert.equal(r.tx.status, 404);
    assert.equal(reason(r.tx), "No mailbox");
    assert.equal(heard.length, 0);
  });

  it("a phone known only by its UDP source must prove its password (407) before anything plays; a stranger too", () => {
    const { w, heard } = setup({ tcp: false });
    const r = w.call("*97", "p1");
    assert.equal(r.tx.status, 407);
    assert.equal(heard.length, 0);
    const s = w.call("*97", strangerFlow);
    assert.equal(s.tx.status, 407);
    assert.equal(heard.length, 0);
  });

  it("without listening wired the code is not recognised (it dials out as before)", () => {
    const w = world({ users, groups, tcp: true });
    const r = w.call("*97", "p1");
    assert.ok(r.pc, "an outbound call to the trunk");
    assert.deepEqual(w.proxy.timeline("fork", r.pc), [`0 sip:0*97@${TRUNK_IP}:5070`]);
  });
});

describe("menus: voicemail to a mailbox on the appliance", () => {
  const box = { enabled: true, maxMessageS: 60, maxMessages: 5, retentionDays: 30, silenceS: 5, noAnswerS: 10 };
  it("a user's or group's enabled mailbox takes the call; one not enabled still gets 480", () => {
    const starts: Array<(t: import("../../agent/routing/menu.ts").FinalTarget) => void> = [];
    const taken: NonNullable<Parameters<typeof world>[0]["mailboxes"]> = [];
    const w = world({
      users: [user("u1", "201", { voicemail: box }), user("u2", "202")],
      groups: [group({ id: "sales", number: "600", members: ["u1"], voicemail: box })],
      inbound: [{ greeting: { then: { kind: "group", groupId: "sales" } } }],
      callMenus: { start: (_pc, _g, _ctx, route) => void starts.push(route), leave: () => undefined },
      mailboxes: taken,
    });
    const a = w.call("+4930111", trunkFlow).pc!;
    starts[0]!({ kind: "voicemail", owner: { kind: "user", id: "u1" } });
    const b = w.call("+4930112", trunkFlow).pc!;
    starts[1]!({ kind: "voicemail", owner: { kind: "group", id: "sales" } });
    assert.deepEqual(taken.map((t) => t.mailbox), ["user/u1", "group/sales"]);
    assert.equal(taken[0]!.pc, a);
    assert.equal(taken[1]!.pc, b);
    assert.deepEqual(w.proxy.timeline("fork"), [], "no phone rings");
    taken[1]!.events.answered();
    taken[1]!.events.ended(undefined);
    assert.equal(w.records.at(-1)?.outcome, "voicemail");
    assert.equal(w.records.at(-1)?.groupId, "sales");
    const c = w.call("+4930113", trunkFlow).pc!;
    starts[2]!({ kind: "voicemail", owner: { kind: "user", id: "u2" } });
    assert.equal(c.rejected, 480);
    assert.equal(taken.length, 2);
  });
});
