// The attack tools real intruders run against SIP servers (sipvicious 0.3.3: svwar
// enumerates extensions, svcrack guesses passwords), against the real agent process on
// loopback UDP. The agent must reveal no extension, yield no password, ban the attacking
// source silently (as SIP scanners like SIPVicious expect), and keep serving everyone else.
// The tools come from the Debian package sipvicious (make test installs it); a missing tool
// is a failure with a message saying so, never a skip.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import fs from "node:fs";
import { freePort, runSipp, seedDevices, startAgent, tempDir, writeUsersCsv, type RunningAgent, type SippResult } from "./harness.ts";

const DEVICES: Array<[string, string]> = [2001, 2002, 2003, 2004, 2005].map((n) => [String(n), `pw-${n}-not-a-number`]);
/** Failures from one source that ban it (RINGEDGE_GUARD_SOURCE_MAX_FAILURES; the default too). */
const SOURCE_MAX_FAILURES = 10;
const AGENT_ENV = {
  // MD5 first, so svcrack's guesses are real digest attempts checked against the password
  // (and so SIPp, MD5 only, can register afterwards).
  RINGEDGE_AUTH_ALGORITHMS: "MD5,SHA-256",
  RINGEDGE_GUARD_SOURCE_MAX_FAILURES: String(SOURCE_MAX_FAILURES),
};

interface ToolResult {
  code: number | null;
  output: string;
}

/** Runs a sipvicious tool under timeout(1), never with -R (it would mail a traceback out). */
function runTool(tool: "svwar" | "svcrack", args: string[], limitS: number): Promise<ToolResult> {
  assert.ok(!args.includes("-R") && !args.includes("--reportback"));
  return new Promise((resolve, reject) => {
    const p = spawn("timeout", ["-s", "KILL", String(limitS), tool, ...args], { stdio: ["ignore", "pipe", "pipe"] });
    let output = "";
    p.stdout.on("data", (d) => (output += d));
    p.stderr.on("data", (d) => (output += d));
    p.on("error", reject);
    p.on("close", (code) => resolve({ code, output }));
  });
}

function requireTool(tool: string): void {
  const found = (process.env.PATH ?? "/usr/bin").split(":").some((dir) => fs.existsSync(`${dir}/${tool}`));
  assert.ok(found, `${tool} is not installed: this test needs the Debian package sipvicious (apt-get install sipvicious; make test installs it)`);
}

/** Rows of the result table svwar/svcrack print when they find something ("| 2001 | reqauth |"). */
function tableRows(output: string): string[] {
  return output.split("\n").filter((l) => /^\|\s*[^|=\s-][^|]*\|/.test(l) && !/Extension|Password|Authentication/.test(l));
}

function sippFailure(r: SippResult): string {
  return `sipp exited ${r.code}\n${r.stdout.slice(-1500)}\n${r.stderr.slice(-1500)}`;
}

interface Status {
  guard: { bannedSources: number; banned: Array<{ source: string; reason: string }> };
  transport: { dropped: number };
  devices: { registered: number };
}

async function statusOf(agent: RunningAgent): Promise<Status> {
  const r = await agent.cli(["status", "--json"]);
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout) as Status;
}

/** "registration refused" log lines for one source, i.e. digests checked and found wrong. */
function refusals(log: string, source: string): number {
  return log.split("\n").filter((l) => l.includes(`registration refused source=${source} `)).length;
}

// Two agents side by side, so that the two slow svcrack runs overlap (svcrack 0.3.3 ignores
// its -b option, so both attack from 127.0.0.1 and need an agent each to start unbanned).
describe("sipvicious against the agent", { concurrency: 2 }, () => {
  // Inside each, tests run in order (subtests would otherwise inherit the concurrency of 2).
  describe("extension scan and a wide password guess", { concurrency: 1 }, () => {
    let agent: RunningAgent;
    let dir: string;

    before(async () => {
      dir = tempDir();
      await seedDevices(dir, DEVICES);
      agent = await startAgent({ dataDir: dir, env: AGENT_ENV });
    });
    after(async () => {
      await agent?.stop();
    });

    test("svwar enumerates 2000-2010 and finds no extension", async () => {
      requireTool("svwar");
      const target = ["127.0.0.1", `-p${agent.port}`];
      // As an intruder runs it: svwar first checks a random name and stops when an unknown
      // extension is challenged like a real one.
      const plain = await runTool("svwar", ["-e2000-2010", "-m", "REGISTER", "--maximumtime", "5", "-P", String(await freePort()), ...target], 25);
      assert.equal(plain.code, 0, plain.output);
      assert.match(plain.output, /found nothing/, plain.output);
      assert.deepEqual(tableRows(plain.output), [], plain.output);
      // Forced past that check, it still cannot tell 2001-2005 from 2000 or 2006-2010.
      const forced = await runTool("svwar", ["-e2000-2010", "-m", "REGISTER", "--force", "--maximumtime", "5", "-P", String(await freePort()), ...target], 25);
      assert.equal(forced.code, 0, forced.output);
      assert.match(forced.output, /found nothing/, forced.output);
      assert.deepEqual(tableRows(forced.output), [], forced.output);
      // Challenges are not failures: enumeration alone bans nobody.
      assert.equal((await statusOf(agent)).guard.bannedSources, 0);
    });

    test("svcrack guesses 1-9999 for 2001, finds no password, and its source is banned", async () => {
      requireTool("svcrack");
      // svcrack stops --maximumtime s after the last answer, then waits out its socket
      // timeout (10 s); timeout(1) bounds it anyway.
      const r = await runTool("svcrack", ["-u2001", "-r1-9999", "--maximumtime", "3", "-P", String(await freePort()), "127.0.0.1", `-p${agent.port}`], 40);
      assert.equal(r.code, 0, r.output);
      assert.match(r.output, /found nothing/, r.output);
      assert.deepEqual(tableRows(r.output), [], r.output);
      const s = await statusOf(agent);
      assert.ok(s.guard.bannedSources >= 1, JSON.stringify(s.guard));
      assert.ok(s.guard.banned.some((b) => b.source === "127.0.0.1"), JSON.stringify(s.guard));
      await agent.waitForLog(/source banned .*source=127\.0\.0\.1( |$)/, 1000);
      // The digest was checked at most threshold times; every later guess met silence.
      const checked = refusals(agent.log(), "127.0.0.1");
      assert.ok(checked >= 1 && checked <= SOURCE_MAX_FAILURES, `${checked} guesses checked`);
      assert.ok(s.transport.dropped > 0, "the banned source's later requests were dropped unanswered");
    });

    test("after the attacks the agent still runs and registers a phone from another address", async () => {
      assert.equal(agent.proc.exitCode, null, "the agent process is alive");
      const csv = writeUsersCsv(dir, [["2002", "pw-2002-not-a-number"]]);
      const r = await runSipp(
        ["-sf", "register-auth.xml", "-inf", csv, "-m", "1", "-i", "127.0.0.2", "-p", String(await freePort()), "-timeout", "10", "-timeout_error", "-nd", `127.0.0.1:${agent.port}`],
        15_000,
      );
      assert.equal(r.code, 0, sippFailure(r));
      const show = await agent.cli(["device", "show", "2002", "--json"]);
      assert.equal(show.code, 0, show.stderr);
      const d = JSON.parse(show.stdout) as { registered?: boolean; contacts?: Array<{ via: string }> };
      assert.equal(d.registered, true);
      assert.deepEqual(
        d.contacts?.map((c) => c.via.replace(/:\d+$/, "")),
        ["udp:127.0.0.2"],
      );
      // The attacker's address stays banned meanwhile: the same phone from 127.0.0.1 gets no answer.
      const banned = await runSipp(
        ["-sf", "register-auth.xml", "-inf", csv, "-m", "1", "-i", "127.0.0.1", "-p", String(await freePort()), "-recv_timeout", "1500", "-timeout", "5", "-nd", `127.0.0.1:${agent.port}`],
        10_000,
      );
      assert.notEqual(banned.code, 0, "no answer to a banned source");
      assert.equal(banned.successful ?? 0, 0);
    });
  });

  describe("a password guess whose range holds the password", { concurrency: 1 }, () => {
    let agent: RunningAgent;

    before(async () => {
      const dir = tempDir();
      // 2003's password is a number svcrack can reach: where it lies in the guessed range
      // decides whether the ban comes first.
      await seedDevices(dir, [["2003", "10000050"]]);
      agent = await startAgent({ dataDir: dir, env: AGENT_ENV });
    });
    after(async () => {
      await agent?.stop();
    });

    test("control: svcrack works against this agent (a password among its first guesses is found)", async () => {
      requireTool("svcrack");
      // The 6th guess of 11, before any ban: shows that "found nothing" elsewhere means something.
      const r = await runTool("svcrack", ["-u2003", "-r10000045-10000055", "--maximumtime", "3", "-P", String(await freePort()), "127.0.0.1", `-p${agent.port}`], 30);
      assert.equal(r.code, 0, r.output);
      assert.deepEqual(tableRows(r.output).map((l) => l.replace(/\s+/g, "")), ["|2003|10000050|"], r.output);
      assert.equal((await statusOf(agent)).guard.bannedSources, 0, "five failures ban nobody");
    });

    test("svcrack over 10000000-10000099 is banned before it reaches the password (51st guess)", async () => {
      requireTool("svcrack");
      const before = refusals(agent.log(), "127.0.0.1");
      const r = await runTool("svcrack", ["-u2003", "-r10000000-10000099", "--maximumtime", "3", "-P", String(await freePort()), "127.0.0.1", `-p${agent.port}`], 40);
      assert.equal(r.code, 0, r.output);
      assert.match(r.output, /found nothing/, r.output);
      assert.deepEqual(tableRows(r.output), [], r.output);
      const s = await statusOf(agent);
      assert.ok(s.guard.banned.some((b) => b.source === "127.0.0.1"), JSON.stringify(s.guard));
      await agent.waitForLog(/source banned .*source=127\.0\.0\.1( |$)/, 1000);
      // The control's success cleared this source's failures for 2003 (a phone that mistyped and
      // then succeeded starts over); the attack then had exactly the threshold of guesses.
      assert.equal(refusals(agent.log(), "127.0.0.1") - before, SOURCE_MAX_FAILURES);
    });
  });
});
