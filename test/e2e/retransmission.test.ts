// Lost packets recovered by retransmission (RFC 3261 §17), against the real agent process and
// real SIPp peers, over UDP on loopback:
//  - the agent's side: its INVITE server transaction resends a non-2xx final response until
//    the ACK comes (Timer G, §17.2.1), and its keep-alive OPTIONS client transaction resends
//    the request until the phone answers (Timer E, §17.1.2.2). The losses are made
//    deterministic by SIPp scenarios that hold their ACK / 200 back for 2*T1; SIPp's message
//    trace gives the time of every copy.
//  - the phones' side: 50 SIPp phones register while SIPp drops 20% of the packets both ways
//    (-lost 20); SIPp retransmits, the agent's server transactions absorb the copies and resend
//    the same final response, and every phone ends with exactly one binding.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { freePort, runSipp, seedDevices, startAgent, tempDir, writeUsersCsv, type RunningAgent, type SippResult } from "./harness.ts";

/** The agent's T1 in these tests (RINGEDGE_SIP_T1_MS); the SIPp scenarios wait 2*T1. */
const T1 = 300;

// --- SIPp message trace (-trace_msg -message_file) ------------------------------------------

interface TracedMessage {
  /** Local clock, ms. */
  at: number;
  dir: "sent" | "received";
  startLine: string;
  branch: string | undefined;
  text: string;
}

/** Splits a SIPp message file into messages with their times and top-Via branches. */
function readTrace(file: string): TracedMessage[] {
  const raw = fs.readFileSync(file, "utf8");
  const parts = raw.split(/^-{10,} (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+)\r?\n/m);
  const out: TracedMessage[] = [];
  for (let i = 1; i + 1 < parts.length; i += 2) {
    const stamp = parts[i]!;
    const body = parts[i + 1]!;
    const dir = /^\S+ message sent/.test(body) ? "sent" : /^\S+ message received/.test(body) ? "received" : undefined;
    if (!dir) continue;
    const lines = body.split(/\r?\n/).slice(1).filter((l, idx, all) => l !== "" || all.slice(0, idx).some((x) => x !== ""));
    const text = lines.join("\n").trim();
    const startLine = text.split("\n")[0] ?? "";
    const branch = /^Via:[^\n]*;branch=([^;\s,]+)/im.exec(text)?.[1];
    // "2026-11-21 03:07:55.897715" → ms; only differences are used.
    const at = Date.parse(stamp.slice(0, 10) + "T" + stamp.slice(11, 23));
    out.push({ at, dir, startLine, branch, text });
  }
  return out;
}

function describeTrace(trace: TracedMessage[]): string {
  const t0 = trace[0]?.at ?? 0;
  return trace.map((m) => `  +${m.at - t0}ms ${m.dir} ${m.startLine} (${m.branch})`).join("\n");
}

function sippFailure(r: SippResult): string {
  return `sipp exited ${r.code}\n${r.stdout.slice(-1500)}\n${r.stderr.slice(-1500)}`;
}

interface Status {
  transactions: { server: number; client: number; absorbed: number };
  transport: { received: number; sent: number; parseErrors: number; dropped: number };
  guard: { bannedSources: number };
}

async function status(agent: RunningAgent): Promise<Status> {
  const r = await agent.cli(["status", "--json"]);
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout) as Status;
}

interface DeviceJson {
  username: string;
  registered?: boolean;
  online?: boolean;
  lastSeen?: string;
  contacts?: Array<{ contact: string; via: string }>;
}

async function devices(agent: RunningAgent): Promise<DeviceJson[]> {
  const r = await agent.cli(["device", "list", "--json"]);
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout) as DeviceJson[];
}

describe("the agent retransmits what the network lost (Timers G and E)", () => {
  let agent: RunningAgent;
  let dir: string;

  before(async () => {
    dir = tempDir();
    await seedDevices(dir, [["3001", "secret-3001"]]);
    agent = await startAgent({
      dataDir: dir,
      env: {
        RINGEDGE_SIP_T1_MS: String(T1),
        // A keep-alive round waits one interval for its answer: 2 s leaves the late (2*T1)
        // answer plenty of slack on a loaded machine.
        RINGEDGE_KEEPALIVE_INTERVAL_S: "2",
        // One unanswered keep-alive round is enough to go offline: only the retransmission
        // (answered) keeps the phone online.
        RINGEDGE_KEEPALIVE_MISSES: "1",
        RINGEDGE_AUTH_ALGORITHMS: "MD5,SHA-256",
      },
    });
  });
  after(async () => {
    await agent?.stop();
  });

  test("a non-2xx final response to an INVITE is resent every T1, 2*T1... until the ACK comes, then never again", async () => {
    const traceFile = path.join(dir, "invite-refused.trace");
    const r = await runSipp(
      ["-sf", "loss-invite-refused.xml", "-m", "1", "-p", String(await freePort()), "-timeout", "15", "-timeout_error", "-nd", "-trace_msg", "-message_file", traceFile, `127.0.0.1:${agent.port}`],
      20_000,
    );
    assert.equal(r.code, 0, sippFailure(r));
    const trace = readTrace(traceFile);
    const shown = describeTrace(trace);
    const invite = trace.find((m) => m.dir === "sent" && m.startLine.startsWith("INVITE "));
    const ack = trace.find((m) => m.dir === "sent" && m.startLine.startsWith("ACK "));
    assert.ok(invite && ack, `INVITE and ACK in the trace:\n${shown}`);
    // §17.1.1.3: the ACK for a non-2xx belongs to the INVITE's transaction (same branch).
    assert.equal(ack.branch, invite.branch, shown);
    // The agent refuses the INVITE's Proxy-Require (420) through its INVITE server transaction.
    const copies = trace.filter((m) => m.dir === "received" && /^SIP\/2\.0 [3-6]\d\d /.test(m.startLine));
    const beforeAck = copies.filter((m) => m.at <= ack.at);
    assert.ok(beforeAck.length >= 2, `the final response arrived at least twice before the ACK:\n${shown}`);
    // The copies are retransmissions of the one response (same bytes, same To tag), not new answers.
    for (const c of copies) assert.equal(c.text, copies[0]!.text, "every copy is the same response");
    const gap = beforeAck[1]!.at - beforeAck[0]!.at;
    assert.ok(gap >= T1 / 2 && gap <= 2 * T1 + 50, `second copy ${gap} ms after the first; Timer G starts at T1 = ${T1} ms:\n${shown}`);
    // The ACK stops Timer G: within the 2.5 s watched after it, copies were due at 3*T1 and 7*T1.
    // One copy already in flight when the ACK left may still land just after it.
    const late = copies.filter((m) => m.at > ack.at + 100);
    assert.equal(late.length, 0, `no copy after the ACK:\n${shown}`);
  });

  test("a keep-alive OPTIONS the phone leaves unanswered is resent after T1; the answer to the copy keeps the phone online", async () => {
    const traceFile = path.join(dir, "options.trace");
    const csv = writeUsersCsv(dir, [["3001", "secret-3001"]]);
    // The phone registers, stays 9 s (rounds come every 2-3 s), and answers each keep-alive
    // only 2*T1 after it came (out-of-call scenario: keep-alives carry their own Call-IDs).
    const r = await runSipp(
      [
        "-sf", "phone-stay.xml", "-oocsf", "loss-options-late.xml", "-inf", csv, "-m", "1", "-d", "9000",
        "-p", String(await freePort()), "-timeout", "20", "-timeout_error", "-nd", "-trace_msg", "-message_file", traceFile, `127.0.0.1:${agent.port}`,
      ],
      25_000,
    );
    assert.equal(r.code, 0, sippFailure(r));
    const trace = readTrace(traceFile);
    const shown = describeTrace(trace);
    const answers = trace.filter((m) => m.dir === "sent" && m.startLine.startsWith("SIP/2.0 200") && /^CSeq:\s*\d+\s+OPTIONS/im.test(m.text));
    assert.ok(answers.length >= 2, `at least two keep-alive rounds answered:\n${shown}`);
    for (const answer of answers) {
      const copies = trace.filter((m) => m.dir === "received" && m.startLine.startsWith("OPTIONS ") && m.branch === answer.branch);
      const beforeAnswer = copies.filter((m) => m.at <= answer.at);
      assert.ok(beforeAnswer.length >= 2, `OPTIONS ${answer.branch} arrived at least twice before its answer:\n${shown}`);
      for (const c of copies) assert.equal(c.text, copies[0]!.text, "every copy is the same request");
      const gap = beforeAnswer[1]!.at - beforeAnswer[0]!.at;
      assert.ok(gap >= T1 / 2 && gap <= 2 * T1 + 50, `second copy ${gap} ms after the first; Timer E starts at T1 = ${T1} ms:\n${shown}`);
      // The 200 completes the client transaction: Timer E stops (copies were due at 3*T1, 7*T1).
      const late = copies.filter((m) => m.at > answer.at + 100);
      assert.equal(late.length, 0, `no copy of ${answer.branch} after its 200:\n${shown}`);
    }
    // The answers to the copies counted: the agent last saw the phone at (or after) the last
    // 200, and never had it offline before then. (When SIPp quits it abandons the keep-alive
    // it may be holding at that moment, so a miss after the last answer is expected.)
    const lastAnswerAt = answers[answers.length - 1]!.at;
    const d = (await devices(agent)).find((x) => x.username === "3001");
    assert.equal(d?.registered, true);
    assert.ok(d?.lastSeen, "lastSeen set");
    assert.ok(Date.parse(d.lastSeen) >= lastAnswerAt - 50, `lastSeen ${d.lastSeen} is the last answered keep-alive (${new Date(lastAnswerAt).toISOString()})`);
    const offlineAt = agent
      .log()
      .split("\n")
      .filter((l) => /device offline device=3001 /.test(l))
      .map((l) => Date.parse(l.slice(0, l.indexOf(" "))));
    assert.deepEqual(offlineAt.filter((t) => t <= lastAnswerAt), [], "no keep-alive round answered late was counted as missed");
  });
});

describe("phones' packets lost: 50 SIPp phones register through 20% loss", () => {
  const PHONES = 50;
  let agent: RunningAgent;
  let dir: string;
  const users: Array<[string, string]> = Array.from({ length: PHONES }, (_, i) => [String(4001 + i), `secret-${4001 + i}`]);

  before(async () => {
    dir = tempDir();
    await seedDevices(dir, users);
    agent = await startAgent({
      dataDir: dir,
      env: {
        RINGEDGE_AUTH_ALGORITHMS: "MD5,SHA-256",
        // All 50 phones share one source address and retransmit: the REGISTER rate limit
        // (per source) is for floods, not for this site.
        RINGEDGE_GUARD_REQUEST_RATE_MAX: "100000",
        // No keep-alives during the test: every message the agent sends answers a REGISTER copy.
        RINGEDGE_KEEPALIVE_INTERVAL_S: "3600",
      },
    });
  });
  after(async () => {
    await agent?.stop();
  });

  test("every phone ends registered with exactly one binding; retransmissions are absorbed, never processed twice", async (t) => {
    const csv = writeUsersCsv(dir, users);
    // SIPp's unexpected messages and aborted calls, kept for a failure message.
    const errors = path.join(dir, "sipp-register-errors.log");
    // SIPp retransmits each REGISTER after 500 ms, then every second (-T2 1000), up to 14
    // times: with 20% loss each way a transaction fails only if all 15 round trips do
    // (0.36^15, about 2e-7), so the run is deterministic in practice.
    const r = await runSipp(
      [
        "-sf", "register-auth.xml", "-inf", csv, "-m", String(PHONES), "-r", "25", "-l", String(PHONES),
        "-lost", "20", "-max_non_invite_retrans", "14", "-T2", "1000",
        "-p", String(await freePort()), "-timeout", "30", "-timeout_error", "-nd", "-trace_err", "-error_file", errors,
        `127.0.0.1:${agent.port}`,
      ],
      35_000,
    );
    const why = (): string => `${sippFailure(r)}\n--- SIPp errors ---\n${fs.existsSync(errors) ? fs.readFileSync(errors, "utf8").slice(-3000) : "(none)"}`;
    assert.equal(r.code, 0, why());
    assert.equal(r.successful, PHONES, why());

    const list = await devices(agent);
    assert.equal(list.length, PHONES);
    for (const d of list) {
      assert.equal(d.registered, true, `${d.username} registered`);
      assert.equal(d.contacts?.length, 1, `${d.username} has exactly one binding: ${JSON.stringify(d.contacts)}`);
    }
    const s = await status(agent);
    t.diagnostic(`agent received ${s.transport.received} REGISTER copies, absorbed ${s.transactions.absorbed}, sent ${s.transport.sent} answers`);
    // Each phone ran two REGISTER transactions (challenge, then credentials): exactly 100 new
    // transactions reached the registrar; every other copy the agent received was absorbed.
    assert.equal(s.transport.received - s.transactions.absorbed, 2 * PHONES, `received ${s.transport.received}, absorbed ${s.transactions.absorbed}`);
    assert.ok(s.transactions.absorbed >= 1, "some REGISTER copies were retransmissions (their answer had been lost)");
    // Every copy, new or absorbed, got exactly one answer (§17.2.2: the stored final response again).
    assert.equal(s.transport.sent, s.transport.received);
    assert.equal(s.transport.parseErrors, 0);
    assert.equal(s.guard.bannedSources, 0);
  });
});
