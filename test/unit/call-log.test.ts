// The call log as an append-only JSON-lines file (agent/store/call-log.ts) and its place in the
// Store: one line per call, nothing lost on a clean stop, a half-written last line ignored,
// bad lines skipped, bounded by rotation, and the old in-store call log moved out once.
import { test, describe } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { CALL_LOG_FILE, CALL_LOG_PREVIOUS_FILE, CallLog, parseCallLog } from "../../agent/store/call-log.ts";
import { Store, StoreError, storeFilePath, type CallRecord } from "../../agent/store/store.ts";
import { encodeEnvelope } from "../../agent/store/atomic-file.ts";
import { CURRENT_SCHEMA_VERSION, emptyStoreData, toCallRecord } from "../../agent/store/schema.ts";
import { tempDir } from "../tmpdir.ts";

const FIXED = new Date("2024-05-01T10:00:00.000Z");

const call = (i: number, groupId?: string): CallRecord => ({
  id: `c${i}`,
  at: FIXED.getTime() + i,
  caller: "+49301234",
  target: "700",
  outcome: "answered",
  offered: ["anna", "ben"],
  answeredBy: "anna",
  answerAfterMs: 1200,
  ...(groupId !== undefined ? { groupId } : {}),
});

const lines = (file: string): string[] => fs.readFileSync(file, "utf8").split("\n").filter((l) => l !== "");
const opts = (maxRecords = 100, errors: Error[] = []) => ({ maxRecords, writeDelayMs: 10_000, retryDelayMs: 10_000, onError: (e: Error) => void errors.push(e) });

describe("parseCallLog", () => {
  test("valid lines become records; blank, non-JSON and invalid records are counted as skipped", () => {
    const text = [JSON.stringify(call(1)), "", "{not json", JSON.stringify({ ...call(2), outcome: "exploded" }), JSON.stringify([1, 2]), JSON.stringify(call(3))].join("\n") + "\n";
    const p = parseCallLog(text);
    assert.deepEqual(p.records.map((r) => r.id), ["c1", "c3"]);
    assert.equal(p.lines, 6);
    assert.equal(p.skipped, 4);
    assert.equal(p.tornBytes, 0);
  });

  test("text after the last newline is a torn line: not parsed, its length reported", () => {
    const whole = JSON.stringify(call(1)) + "\n";
    const torn = JSON.stringify(call(2)).slice(0, 20);
    const p = parseCallLog(whole + torn);
    assert.deepEqual(p.records.map((r) => r.id), ["c1"]);
    assert.equal(p.completeBytes, Buffer.byteLength(whole));
    assert.equal(p.tornBytes, 20);
    assert.deepEqual(parseCallLog(""), { records: [], lines: 0, skipped: 0, completeBytes: 0, tornBytes: 0 });
  });

  test("a record with extra fields keeps only the known ones", () => {
    const p = parseCallLog(JSON.stringify({ ...call(1), injected: "x".repeat(10) }) + "\n");
    assert.equal(p.records.length, 1);
    assert.equal((p.records[0] as unknown as Record<string, unknown>).injected, undefined);
  });
});

describe("CallLog", () => {
  test("appends are batched into one write; flush makes them durable; reopen lists them newest first", async () => {
    const dir = tempDir("ringedge-calllog-");
    const log = await CallLog.open(dir, opts());
    assert.equal(fs.existsSync(path.join(dir, CALL_LOG_FILE)), false, "no file before the first call");
    for (let i = 0; i < 3; i++) log.append(call(i));
    assert.equal(log.hasPendingWrites(), true);
    assert.equal(fs.existsSync(path.join(dir, CALL_LOG_FILE)), false, "append itself touches no file");
    await log.flush();
    assert.equal(log.hasPendingWrites(), false);
    assert.deepEqual(lines(path.join(dir, CALL_LOG_FILE)).map((l) => (JSON.parse(l) as CallRecord).id), ["c0", "c1", "c2"]);
    assert.equal((fs.statSync(path.join(dir, CALL_LOG_FILE)).mode & 0o777).toString(8), "600");
    log.append(call(3));
    await log.close();
    const again = await CallLog.open(dir, opts());
    assert.deepEqual(again.list(10).map((r) => r.id), ["c3", "c2", "c1", "c0"]);
    assert.deepEqual(again.notes, []);
    await again.close();
  });

  test("closeSync (an exit handler) writes what is still queued", async () => {
    const dir = tempDir("ringedge-calllog-");
    const log = await CallLog.open(dir, opts());
    log.append(call(1));
    log.append(call(2));
    log.closeSync();
    assert.equal(lines(path.join(dir, CALL_LOG_FILE)).length, 2);
    log.append(call(3)); // after close: ignored, never throws
    const again = await CallLog.open(dir, opts());
    assert.deepEqual(again.list(10).map((r) => r.id), ["c2", "c1"]);
    await again.close();
  });

  test("a half-written last line is ignored and cut off; the next append starts a clean line", async () => {
    const dir = tempDir("ringedge-calllog-");
    const file = path.join(dir, CALL_LOG_FILE);
    fs.writeFileSync(file, JSON.stringify(call(1)) + "\n" + JSON.stringify(call(2)).slice(0, 30));
    const log = await CallLog.open(dir, opts());
    assert.deepEqual(log.list(10).map((r) => r.id), ["c1"]);
    assert.match(log.notes.join("\n"), /half-written last line \(30 bytes\)/);
    log.append(call(3));
    await log.close();
    assert.deepEqual(lines(file).map((l) => (JSON.parse(l) as CallRecord).id), ["c1", "c3"]);
  });

  test("lines that are not call records are skipped and reported, the rest kept", async () => {
    const dir = tempDir("ringedge-calllog-");
    fs.writeFileSync(path.join(dir, CALL_LOG_FILE), ["garbage", JSON.stringify(call(1)), JSON.stringify({ id: "" }), "\u0000\u0001", JSON.stringify(call(2))].join("\n") + "\n");
    const log = await CallLog.open(dir, opts());
    assert.deepEqual(log.list(10).map((r) => r.id), ["c2", "c1"]);
    assert.match(log.notes.join("\n"), /skipped 3 line/);
    await log.close();
  });

  test("rotation bounds the disk: calls.jsonl becomes calls.1.jsonl at maxRecords lines; memory keeps the last maxRecords", async () => {
    const dir = tempDir("ringedge-calllog-");
    const log = await CallLog.open(dir, opts(5));
    for (let i = 0; i < 23; i++) {
      log.append(call(i, i % 2 === 0 ? "sales" : "support"));
      if (i % 3 === 2) await log.flush();
    }
    await log.flush();
    assert.deepEqual(log.list(100).map((r) => r.id), ["c22", "c21", "c20", "c19", "c18"]);
    assert.deepEqual(log.list(2, "sales").map((r) => r.id), ["c22", "c20"]);
    // The current file may be absent: the last batch filled it, it rotated, nothing came since.
    const cur = fs.existsSync(path.join(dir, CALL_LOG_FILE)) ? lines(path.join(dir, CALL_LOG_FILE)) : [];
    const prev = lines(path.join(dir, CALL_LOG_PREVIOUS_FILE));
    assert.ok(prev.length >= 5 && prev.length < 5 + 3, `previous generation holds one full file (${prev.length})`);
    assert.ok(cur.length < 5, `current generation is below the limit (${cur.length})`);
    assert.equal((JSON.parse([...prev, ...cur].at(-1)!) as CallRecord).id, "c22");
    await log.close();
    const again = await CallLog.open(dir, opts(5));
    assert.deepEqual(again.list(100).map((r) => r.id), ["c22", "c21", "c20", "c19", "c18"]);
    await again.close();
  });

  test("older calls' whys are deflated in batches and read back as they were; the newest stay objects; a reopened log freezes too", async () => {
    const dir = tempDir("ringedge-calllog-");
    const o = { ...opts(50), warmWhys: 8, freezeBatch: 4 };
    // A 30-member group ringing 3: 3 offered, the rest skipped for the cap; every fourth call has no why.
    const withWhy = (i: number): CallRecord => {
      const c = call(i, "sales");
      if (i % 4 === 3) return c;
      const items = Array.from({ length: 30 }, (_, m) => (m < 3 ? { userId: `u${(i + m) % 30}`, devices: [`d${(i + m) % 30}`] } : { userId: `u${(i + m) % 30}`, reason: "cap" as const }));
      return { ...c, why: { steps: [{ at: c.at, groupId: "sales", kind: "step", items }] } };
    };
    const log = await CallLog.open(dir, o);
    const want: CallRecord[] = [];
    for (let i = 0; i < 40; i++) {
      want.push(withWhy(i));
      log.append(withWhy(i));
    }
    const handedOut = log.list(40);
    await log.whenFrozen();
    // 40 calls, 8 warm: 32 handed to the archive in batches of 4, a quarter of them without a why.
    assert.equal(log.stats().coldWhys, 24);
    assert.deepEqual(log.list(40), [...want].reverse(), "every record, why included, as appended");
    assert.deepEqual(handedOut, [...want].reverse(), "records handed out before the freeze are not changed under their holders");
    assert.deepEqual(log.list(3, "sales").map((r) => r.id), ["c39", "c38", "c37"]);
    // Past 2×maxRecords the oldest are trimmed, cold ones with them.
    for (let i = 40; i < 100; i++) log.append(withWhy(i));
    await log.whenFrozen();
    assert.equal(log.stats().records, 50);
    assert.ok(log.stats().coldWhys <= 50 && log.stats().coldWhys >= 30, `cold whys of the held records only (${log.stats().coldWhys})`);
    assert.deepEqual(log.list(50), Array.from({ length: 50 }, (_, k) => withWhy(99 - k)));
    await log.close();
    // Reopened: the calls read from the file are frozen the same way.
    const again = await CallLog.open(dir, o);
    await again.whenFrozen();
    assert.ok(again.stats().coldWhys >= 30, `whys from the file deflated (${again.stats().coldWhys})`);
    assert.deepEqual(again.list(50), Array.from({ length: 50 }, (_, k) => withWhy(99 - k)));
    await again.close();
  });

  test("a failed write keeps the lines queued, reports the error and succeeds later", async () => {
    const dir = tempDir("ringedge-calllog-");
    const sub = path.join(dir, "data");
    fs.mkdirSync(sub);
    const errors: Error[] = [];
    const log = await CallLog.open(sub, opts(100, errors));
    log.append(call(1));
    // The file cannot be created: its directory is gone.
    fs.rmSync(sub, { recursive: true });
    await assert.rejects(log.flush(), /ENOENT/);
    assert.equal(log.hasPendingWrites(), true);
    fs.mkdirSync(sub);
    await log.flush();
    assert.deepEqual(lines(path.join(sub, CALL_LOG_FILE)).map((l) => (JSON.parse(l) as CallRecord).id), ["c1"]);
    await log.close();
  });
});

describe("Store with the call log file", () => {
  test("a finished call is one line in calls.jsonl; the store file is not rewritten for it", async () => {
    const dir = tempDir("ringedge-store-calllog-");
    const s = await Store.open(dir, { now: () => FIXED, saveDelayMs: 10_000 });
    const writes = s.writeCount;
    const storeBytes = fs.readFileSync(storeFilePath(dir), "utf8");
    for (let i = 0; i < 50; i++) assert.ok(s.appendCall(call(i)).ok);
    assert.equal(s.hasPendingWrites(), true);
    await s.flush();
    assert.equal(s.writeCount, writes, "no store write for calls");
    assert.equal(fs.readFileSync(storeFilePath(dir), "utf8"), storeBytes);
    assert.equal(lines(path.join(dir, CALL_LOG_FILE)).length, 50);
    assert.equal(s.appendCall({ ...call(99), outcome: "exploded" as never }).ok, false, "bad record refused");
    await s.close();
    assert.equal(lines(path.join(dir, CALL_LOG_FILE)).length, 50, "the refused record was not written");
  });

  test("closeSync keeps calls appended within the save window", async () => {
    const dir = tempDir("ringedge-store-calllog-");
    const s = await Store.open(dir, { now: () => FIXED, saveDelayMs: 10_000 });
    s.appendCall(call(1));
    s.closeSync();
    const again = await Store.open(dir);
    assert.deepEqual(again.listCalls().map((c) => c.id), ["c1"]);
    await again.close();
  });

  test("calls in the old in-store callLog move to calls.jsonl once, oldest first, and leave the store file", async () => {
    const dir = tempDir("ringedge-store-calllog-");
    const data = { ...emptyStoreData(FIXED), callLog: [call(1, "sales"), call(2), call(3, "sales")] };
    fs.writeFileSync(storeFilePath(dir), encodeEnvelope(data, CURRENT_SCHEMA_VERSION, FIXED), { mode: 0o600 });
    const s = await Store.open(dir, { now: () => FIXED });
    assert.deepEqual(s.listCalls().map((c) => c.id), ["c3", "c2", "c1"]);
    assert.deepEqual(s.listCalls({ groupId: "sales" }).map((c) => c.id), ["c3", "c1"]);
    assert.match(s.callLogNotes.join("\n"), /moved 3 call/);
    const stored = JSON.parse(fs.readFileSync(storeFilePath(dir), "utf8")) as { data: { callLog: unknown[] } };
    assert.deepEqual(stored.data.callLog, [], "the store file no longer holds calls");
    s.appendCall(call(4));
    await s.close();
    const again = await Store.open(dir);
    assert.deepEqual(again.listCalls().map((c) => c.id), ["c4", "c3", "c2", "c1"]);
    assert.deepEqual(again.callLogNotes, []);
    await again.close();
  });

  test("a call log that cannot be read (a directory in its place) stops the open with a clear error and releases the lock", async () => {
    const dir = tempDir("ringedge-store-calllog-");
    fs.mkdirSync(path.join(dir, CALL_LOG_FILE));
    await assert.rejects(Store.open(dir), (e: unknown) => e instanceof StoreError && /Call log .*calls\.jsonl cannot be opened/.test(e.message));
    fs.rmdirSync(path.join(dir, CALL_LOG_FILE));
    const s = await Store.open(dir);
    assert.deepEqual(s.listCalls(), []);
    await s.close();
  });

  test("a move interrupted after the file was written (the store still lists the calls) adds no duplicates", async () => {
    const dir = tempDir("ringedge-store-calllog-");
    // calls.jsonl already holds c1 and c2 from the interrupted open; c3 made it only to the store.
    fs.writeFileSync(path.join(dir, CALL_LOG_FILE), [call(1), call(2)].map((c) => JSON.stringify(c) + "\n").join(""));
    const data = { ...emptyStoreData(FIXED), callLog: [call(1), call(2), call(3)] };
    fs.writeFileSync(storeFilePath(dir), encodeEnvelope(data, CURRENT_SCHEMA_VERSION, FIXED), { mode: 0o600 });
    const s = await Store.open(dir, { now: () => FIXED });
    assert.deepEqual(s.listCalls().map((c) => c.id).sort(), ["c1", "c2", "c3"]);
    assert.equal(lines(path.join(dir, CALL_LOG_FILE)).length, 3);
    await s.close();
  });
});

test("a kept call record does not hold the INVITE its Call-ID, caller and dialled number were cut from", () => {
  // Measured in a child with gc exposed: 500 records whose strings are slices of 20 KB INVITEs,
  // kept as Store.appendCall keeps them (toCallRecord), against the same slices kept as they are.
  const script = `
    const { toCallRecord } = await import(${JSON.stringify(new URL("../../agent/store/schema.ts", import.meta.url).href)});
    const keep = (f) => {
      const out = [];
      for (let i = 0; i < 500; i++) {
        const invite = ("INVITE sip:700-group-number@127.0.0.1 SIP/2.0\\r\\nCall-ID: call-id-of-this-invite-" + i + "@host\\r\\n" + "v=0 ".repeat(5000)).slice(0);
        const cut = (a, b) => invite.slice(invite.indexOf(a) + a.length, invite.indexOf(b, invite.indexOf(a) + a.length));
        out.push(f({ id: cut("Call-ID: ", "\\r\\n"), at: i, caller: cut("INVITE ", " SIP"), target: cut("sip:", "@"), outcome: "answered", offered: [cut("sip:", " ")], answeredBy: cut("sip:", " ") }));
      }
      return out;
    };
    const grown = (f) => { gc(); const base = process.memoryUsage().heapUsed; const kept = keep(f); gc(); const d = process.memoryUsage().heapUsed - base; return kept.length > 0 ? d : 0; };
    console.log(JSON.stringify({ sliced: grown((r) => ({ ...r })), kept: grown(toCallRecord) }));
  `;
  const out = execFileSync(process.execPath, ["--expose-gc", "--import", "tsx", "--input-type=module", "-e", script], { encoding: "utf8", timeout: 30_000 });
  const { sliced, kept } = JSON.parse(out) as { sliced: number; kept: number };
  assert.ok(sliced > 5_000_000, `the slices hold their INVITEs (${sliced} B)`);
  assert.ok(kept < 1_000_000, `the kept records do not (${kept} B)`);
  // And the copies are the same text.
  const r = toCallRecord({ id: "x".repeat(40), at: 1, caller: "+49301234567890", target: "700", outcome: "missed", offered: ["a-long-user-id-0001"], groupId: "sales-group-of-the-site", answeredBy: "a-long-user-id-0001" });
  assert.deepEqual(r, { id: "x".repeat(40), at: 1, caller: "+49301234567890", target: "700", outcome: "missed", offered: ["a-long-user-id-0001"], groupId: "sales-group-of-the-site", answeredBy: "a-long-user-id-0001" });
});
