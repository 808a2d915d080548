// `make demo`: the agent with a small site (demo/site.json: six operators, desk phones and two
// soft clients, one group per strategy), simulated phones registering with digest auth, then
// one call from the trunk to each group in turn, printed as a timeline of who rang when and who
// answered. The agent runs in-process so the timeline comes straight from its event bus and
// from the proxy's branch events, not from parsing logs. One ring is shortened to 500 ms.
// Run: node --import tsx demo/run.ts   (about 15 s; nothing is left behind)
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { Agent } from "../agent/agent.ts";
import { defaultSettings } from "../agent/config.ts";
import { createLogger } from "../agent/log.ts";
import type { Branch, BranchTarget, ProxyCall, ProxyCallEvents } from "../agent/sip/proxy-types.ts";
import { SimPhone, SimTrunk, type Behaviour } from "./sim.ts";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const RING_UNIT_MS = 500;
const HOLD_MS = 300;
const TRUNK_IP = "127.0.0.60";

/** How each simulated device takes calls (by SIP username). */
const BEHAVIOUR: Record<string, Behaviour> = {
  anna: { kind: "ring" },
  "anna-soft": { kind: "ring" },
  bob: { kind: "answer", afterMs: 400 },
  carla: { kind: "reject", status: 486, afterMs: 300 },
  dave: { kind: "ring" },
  erik: { kind: "answer", afterMs: 1200 },
  "erik-soft": { kind: "ring" },
  fiona: { kind: "reject", status: 603, afterMs: 500 },
};

function describe(b: Behaviour): string {
  if (b.kind === "answer") return `answers after ${(b.afterMs / 1000).toFixed(1)} s`;
  if (b.kind === "reject") return `rejects with ${b.status} after ${(b.afterMs / 1000).toFixed(1)} s`;
  return "rings, never answers";
}

interface SiteJson {
  settings: { trunk: { port: number } };
  users: Array<{ id: string; name: string }>;
  devices: Array<{ id: string; owner: string; kind: string; username: string; password: string }>;
  groups: Array<{ id: string; number: string; name: string; strategy: string; members: string[] }>;
}

const STATUS_TEXT: Record<number, string> = { 480: "Temporarily Unavailable", 486: "Busy Here", 487: "Request Terminated", 603: "Decline", 408: "Request Timeout" };

async function main(): Promise<void> {
  const site = JSON.parse(fs.readFileSync(path.join(HERE, "site.json"), "utf8")) as SiteJson;
  const userName = new Map(site.users.map((u) => [u.id, u.id]));
  const deviceName = new Map(site.devices.map((d) => [d.id, `${d.owner}'s ${d.kind === "soft" ? "soft client" : "desk phone"}`]));
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "ringedge-demo-"));

  // The trunk's socket port is chosen by the OS; the site file gets it before it is applied.
  const agentAddr = { host: "127.0.0.1", port: 0 };
  const trunk = new SimTrunk(TRUNK_IP, agentAddr);
  await trunk.open();
  site.settings.trunk.port = trunk.port;
  const siteFile = path.join(dir, "site.json");
  fs.writeFileSync(siteFile, JSON.stringify(site, null, 2));

  const settings = {
    ...defaultSettings(),
    dataDir: path.join(dir, "data"),
    sipListen: ["127.0.0.1:0"],
    sipTransports: ["udp" as const],
    httpListen: "127.0.0.1:0",
    httpsListen: "",
    siteFile,
    ringUnitMs: RING_UNIT_MS,
  };
  const agent = new Agent(settings, createLogger("warn"));
  await agent.start();
  agentAddr.port = agent.transport.addresses()[0]!.port;

  // --- the timeline: the bus for decisions, the proxy's branch events for what phones did ---
  let t0 = 0;
  let current: string | undefined;
  const pending: Array<{ kind: "cancel" | "ring" | "other"; text: string }> = [];
  const stamp = (): string => `+${((performance.now() - t0) / 1000).toFixed(2)}s`;
  // Things that happen in one synchronous step (cancel one member, ring the next) share a line.
  const flush = (): void => {
    const items = pending.splice(0);
    const of = (k: string): string[] => items.filter((i) => i.kind === k).map((i) => i.text);
    const parts = [...of("other").filter((t) => !t.startsWith("(")), ...(of("cancel").length ? [`cancel ${of("cancel").join(", ")}`] : []), ...(of("ring").length ? [`ringing: ${of("ring").join(", ")}`] : []), ...of("other").filter((t) => t.startsWith("("))];
    console.log(`  ${stamp().padEnd(8)} ${parts.join(", ").replace(/, \(/, "  (")}`);
  };
  const note = (text: string, kind: "cancel" | "ring" | "other" = "other"): void => {
    if (pending.length === 0) setImmediate(flush);
    pending.push({ kind, text });
  };
  const mine = (callId: string): boolean => callId === current;
  const cancelledMembers = new Set<string>();
  const proxy = agent.proxy;
  const origStart = proxy.startCall.bind(proxy);
  const origCancel = proxy.cancelBranch.bind(proxy);
  proxy.startCall = (tx, req, flow, events): ProxyCall | undefined => {
    const wrapped: ProxyCallEvents = {
      ...events,
      onBranchFailed: (call: ProxyCall, branch: Branch, status: number) => {
        if (mine(call.request.callId) && status !== 487) note(`${deviceName.get(branch.target.deviceId ?? "") ?? branch.target.uri} says ${status} ${STATUS_TEXT[status] ?? ""}`.trim());
        events.onBranchFailed?.(call, branch, status);
      },
    };
    const pc = origStart(tx, req, flow, wrapped);
    if (pc !== undefined && mine(req.callId)) {
      queueMicrotask(() => {
        if (pc.firstForkAt !== undefined) note(`(first fork ${Math.round((pc.firstForkAt - pc.receivedAt) * 1000)} µs after the INVITE)`);
      });
    }
    return pc;
  };
  proxy.cancelBranch = (call: ProxyCall, branch: Branch, reason?: string): void => {
    const m = (branch.target as BranchTarget).memberId;
    if (mine(call.request.callId) && m !== undefined && !cancelledMembers.has(m)) {
      cancelledMembers.add(m);
      note(userName.get(m) ?? m, "cancel");
    }
    origCancel(call, branch, reason);
  };
  agent.bus.on("call.offered", (e) => {
    if (!mine(e.callId)) return;
    cancelledMembers.delete(e.memberId);
    note(e.deviceIds.length > 1 ? `${e.memberId} (${e.deviceIds.length} devices)` : e.memberId, "ring");
  });
  agent.bus.on("call.busy", (e) => mine(e.callId) && note(`skipped (at call limit): ${e.memberIds.join(", ")}`));
  agent.bus.on("call.answered", (e) => mine(e.callId) && note(`answered by ${e.memberId ?? "?"} on ${deviceName.get(e.deviceId ?? "") ?? "?"} after ${(e.answerAfterMs / 1000).toFixed(2)}s`));
  agent.bus.on("call.missed", (e) => mine(e.callId) && note(`missed: nobody answered (offered: ${e.offered.join(", ") || "nobody"})`));

  const phones: SimPhone[] = [];
  try {
    console.log(`ringedge demo — agent on udp:127.0.0.1:${agentAddr.port}, one ring = ${RING_UNIT_MS} ms, trunk at ${TRUNK_IP}:${trunk.port}`);
    console.log("");
    console.log("phones:");
    for (const d of site.devices) {
      const b = BEHAVIOUR[d.username] ?? { kind: "ring" };
      const p = new SimPhone(d.username, d.password, b, agentAddr);
      await p.open();
      await p.register();
      phones.push(p);
      console.log(`  ${d.username.padEnd(10)} ${(deviceName.get(d.id) ?? d.id).padEnd(22)} registered from 127.0.0.1:${p.port}, ${describe(b)}`);
    }
    console.log("");
    console.log("groups:");
    for (const g of site.groups) console.log(`  ${g.number} ${g.name.padEnd(12)} ${g.strategy.padEnd(13)} ${g.members.join(" → ")}`);

    let n = 0;
    for (const g of site.groups) {
      n++;
      console.log("");
      const from = `+49301234500${n}`;
      t0 = performance.now();
      const c = trunk.call(g.number, from, HOLD_MS, (status, reason) => {
        if (status === 182) note(`caller hears ${status} ${reason}`);
      });
      current = c.callId;
      cancelledMembers.clear();
      console.log(`  ${stamp().padEnd(8)} call from trunk (${from}) → group ${g.number} ${g.name} (${g.strategy})`);
      const r = await c.done;
      await new Promise((res) => setTimeout(res, 20));
      if (r.final >= 300) console.log(`  ${stamp().padEnd(8)} caller gets ${r.final} ${r.reason}`);
      await new Promise((res) => setTimeout(res, HOLD_MS + 200));
      console.log(`  ${stamp().padEnd(8)} ${r.final < 300 ? "caller hangs up (BYE through the agent)" : "call over"}`);
    }
    await new Promise((res) => setTimeout(res, 200));
    const st = agent.status();
    console.log("");
    console.log(`agent: ${st.devices.online}/${st.devices.total} devices online, first fork p50 ${st.routing.latency.p50Us} µs / p99 ${st.routing.latency.p99Us} µs over ${st.routing.latency.count} calls, ${st.routing.activeCalls} calls still open`);
    const calls = agent.store.listCalls?.() as Array<{ groupId?: string; outcome: string; answeredBy?: string; answerAfterMs?: number; offered: string[] }> | undefined;
    if (calls !== undefined) {
      console.log("call log:");
      for (const r of calls.slice(-site.groups.length)) console.log(`  ${String(r.groupId).padEnd(11)} ${r.outcome.padEnd(9)} ${r.answeredBy !== undefined ? `by ${r.answeredBy} after ${((r.answerAfterMs ?? 0) / 1000).toFixed(2)}s` : ""}  offered: ${r.offered.join(", ")}`);
    }
  } finally {
    for (const p of phones) p.close();
    trunk.close();
    await agent.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

await main().catch((err: unknown) => {
  console.error(`demo failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
  process.exitCode = 1;
});
