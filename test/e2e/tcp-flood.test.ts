// Issue 11: a TCP flood from one source is contained. 4,096 connections from one address leave
// a phone on another address able to register over TCP, and the agent keeps at most
// tcpMaxConnectionsPerAddress (default 32) of them; a header block dripped one byte every
// 200 ms is cut off by the message deadline although bytes keep coming; a message trickled in
// within the deadline is served.
//
// File descriptors: the flood opens its connections 256 at a time and the agent resets all but
// 32 of them at once, so neither process holds more than a few hundred sockets (well inside the
// default limit of 1024; the agent child inherits the test's limit).
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import net from "node:net";
import { seedDevices, sleep, startAgent, tempDir, until, type RunningAgent } from "./harness.ts";
import { SipClient, registerWithAuth } from "./sipclient.ts";

const FLOOD = 4096;
const PER_ADDRESS_CAP = 32; // the default of tcpMaxConnectionsPerAddress
const FLOOD_SOURCE = "127.0.0.77";
const MESSAGE_TIMEOUT_MS = 1500;

function options(localPort: number, branch: string): Buffer {
  return Buffer.from(
    [
      "OPTIONS sip:ringedge@127.0.0.1 SIP/2.0",
      `Via: SIP/2.0/TCP 127.0.0.1:${localPort};branch=z9hG4bK${branch};rport`,
      "Max-Forwards: 70",
      `From: <sip:probe@127.0.0.1>;tag=${branch}`,
      "To: <sip:ringedge@127.0.0.1>",
      `Call-ID: ${branch}@tcp-flood`,
      "CSeq: 1 OPTIONS",
      "Content-Length: 0",
      "",
      "",
    ].join("\r\n"),
  );
}

interface Conn {
  sock: net.Socket;
  data: string;
  closed: boolean;
  closedAt: number;
}

function open(port: number, localAddress: string): { conn: Conn; settled: Promise<void> } {
  const conn: Conn = { sock: net.connect({ host: "127.0.0.1", port, localAddress }), data: "", closed: false, closedAt: 0 };
  conn.sock.setEncoding("latin1");
  conn.sock.on("data", (d: string) => (conn.data += d));
  conn.sock.on("error", () => undefined); // a refused connection is reset: ECONNRESET is expected
  const settled = new Promise<void>((resolve) => {
    conn.sock.once("connect", () => resolve());
    conn.sock.once("close", () => {
      conn.closed = true;
      conn.closedAt = Date.now();
      resolve();
    });
  });
  return { conn, settled };
}

async function transportStats(agent: RunningAgent): Promise<Record<string, number>> {
  const r = await agent.cli(["status", "--json"]);
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout).transport as Record<string, number>;
}

describe("TCP flood from one address is contained", () => {
  let agent: RunningAgent;
  const dir = tempDir();
  const flood: Conn[] = [];

  before(async () => {
    await seedDevices(dir, [["t4001", "tcp-flood-password-4001"]]);
    agent = await startAgent({ dataDir: dir, env: { RINGEDGE_TCP_MESSAGE_TIMEOUT_MS: String(MESSAGE_TIMEOUT_MS), RINGEDGE_LOG_LEVEL: "info" } });
  });
  after(async () => {
    for (const c of flood) c.sock.destroy();
    await agent?.stop();
  });

  test(`${FLOOD} connections from ${FLOOD_SOURCE}: at most ${PER_ADDRESS_CAP} kept, the rest reset; a phone registers over TCP meanwhile`, async () => {
    let opened = 0;
    const flooding = (async () => {
      for (let i = 0; i < FLOOD; i += 256) {
        const batch: Array<Promise<void>> = [];
        for (let j = i; j < Math.min(FLOOD, i + 256); j++) {
          const { conn, settled } = open(agent.port, FLOOD_SOURCE);
          flood.push(conn);
          batch.push(settled);
        }
        await Promise.all(batch);
        opened = flood.length;
      }
    })();
    // The phone registers (digest, over TCP) while the flood is under way.
    await until(() => opened >= 1024, 30_000, 10);
    const phone = await SipClient.open(agent.port, "tcp", "127.0.0.1");
    try {
      const reg = await registerWithAuth(phone, "t4001", { password: "tcp-flood-password-4001" });
      assert.equal(reg.final.status, 200, reg.final.statusLine);
      await flooding;
      // Every refused connection is reset; exactly the cap stays open.
      await until(() => flood.filter((c) => !c.closed).length === PER_ADDRESS_CAP, 20_000);
      const s = await transportStats(agent);
      assert.equal(s.tcpMostFromOneAddress, PER_ADDRESS_CAP);
      assert.equal(s.tcpRefused, FLOOD - PER_ADDRESS_CAP);
      assert.ok((s.tcpConnections ?? Infinity) <= PER_ADDRESS_CAP + 2, `open connections ${s.tcpConnections}`);
      const text = await agent.cli(["status"]);
      assert.match(text.stdout, new RegExp(`tcp \\d+ open, ${FLOOD - PER_ADDRESS_CAP} refused, 0 timed out`));
      // The phone's connection still works after the flood.
      const again = await registerWithAuth(phone, "t4001", { password: "tcp-flood-password-4001" });
      assert.equal(again.final.status, 200);
    } finally {
      phone.close();
      for (const c of flood) c.sock.destroy();
    }
    await until(async () => (await transportStats(agent)).tcpMostFromOneAddress === 0, 10_000, 200);
  });

  test("a header block dripped one byte every 200 ms is closed at the message deadline although bytes keep coming", async () => {
    const { conn, settled } = open(agent.port, "127.0.0.78");
    await settled;
    const text = options(conn.sock.localPort ?? 0, "drip");
    const before = (await transportStats(agent)).tcpMessageTimeouts ?? 0;
    const startedAt = Date.now();
    let sent = 0;
    while (!conn.closed && Date.now() - startedAt < 15_000) {
      conn.sock.write(text.subarray(sent % text.length, (sent % text.length) + 1));
      sent++;
      await sleep(200);
    }
    assert.equal(conn.closed, true, "closed");
    const heldMs = conn.closedAt - startedAt;
    assert.ok(heldMs >= MESSAGE_TIMEOUT_MS - 100 && heldMs < MESSAGE_TIMEOUT_MS + 5000, `closed after ${heldMs} ms`);
    assert.ok(sent < text.length, "never finished a message");
    assert.equal(conn.data, "", "nothing was answered");
    assert.equal((await transportStats(agent)).tcpMessageTimeouts, before + 1);
  });

  test("a message trickled in within the deadline is served, and the connection stays open", async () => {
    const { conn, settled } = open(agent.port, "127.0.0.79");
    await settled;
    try {
      const text = options(conn.sock.localPort ?? 0, "trickle");
      for (let at = 0; at < text.length; at += 25) {
        conn.sock.write(text.subarray(at, at + 25));
        await sleep(50); // about 0.5 s in all, inside the 1.5 s deadline
      }
      await until(() => conn.data.includes("\r\n\r\n") || conn.closed, 10_000, 20);
      assert.match(conn.data, /^SIP\/2\.0 200 OK\r\n/);
      assert.match(conn.data, /^Call-ID: trickle@tcp-flood\r$/m);
      // Past the deadline of the message just served, the connection is still there.
      await sleep(MESSAGE_TIMEOUT_MS + 300);
      assert.equal(conn.closed, false);
    } finally {
      conn.sock.destroy();
    }
  });
});
