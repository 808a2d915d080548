// The mailbox store (voicemail/store.ts): deposits listed only when complete, quotas refused
// before anything is written, retention, restart recovery of every interrupted state, counts
// and voicemail.changed, and hostile ids / metadata.
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { EventBus } from "../../agent/bus.ts";
import { MAILBOX_DEFAULTS, type MailboxConfig } from "../../agent/routing/model.ts";
import { encodeWav } from "../../agent/media/wav.ts";
import { VoicemailStore, type PendingMessage } from "../../agent/voicemail/store.ts";
import { fetchRecording } from "../../agent/voicemail/fetch.ts";
import type { MailboxOwner } from "../../agent/voicemail/types.ts";
import { tempDir } from "../tmpdir.ts";

const SALES: MailboxOwner = { kind: "group", id: "sales" };
const ANNA: MailboxOwner = { kind: "user", id: "anna" };

function world(over: Partial<Record<string, Partial<MailboxConfig> | undefined>> = {}, dataDir = tempDir("ringedge-vm-")) {
  let now = Date.UTC(2026, 11, 3, 12, 0, 0);
  const cfgs: Record<string, MailboxConfig | undefined> = {
    "group/sales": { enabled: true, ...MAILBOX_DEFAULTS, maxMessages: 2, ...over["group/sales"] },
    "user/anna": { enabled: true, ...MAILBOX_DEFAULTS, ...over["user/anna"] },
  };
  const bus = new EventBus();
  const changes: Array<{ mailbox: string; n: number; o: number }> = [];
  bus.on("voicemail.changed", (e) => changes.push({ mailbox: `${e.mailbox.kind}/${e.mailbox.id}`, n: e.newMessages, o: e.oldMessages }));
  const store = new VoicemailStore({ dataDir, mailbox: (o) => cfgs[`${o.kind}/${o.id}`], bus, now: () => now });
  store.start();
  return { store, dataDir, changes, cfgs, advance: (ms: number) => (now += ms), reopen: () => world(over, dataDir) };
}

/** What the media worker does: the WAV appears under its final name, complete. */
function record(p: PendingMessage, seconds: number): { samples: number; bytes: number; sha256: string } {
  const samples = Int16Array.from({ length: seconds * 8000 }, (_, i) => Math.round(5000 * Math.sin(i / 3)));
  const wav = encodeWav(samples);
  fs.writeFileSync(p.finalPath, wav);
  return { samples: samples.length, bytes: wav.length, sha256: createHash("sha256").update(wav).digest("hex") };
}

describe("voicemail store", () => {
  test("a deposit is listed only once complete; counts, heard/save/delete, voicemail.changed", async () => {
    const w = world();
    const b = await w.store.begin(SALES, { caller: "+4930123\x07", callId: "c1@x" });
    assert.ok(b.ok);
    assert.ok(fs.existsSync(path.join(path.dirname(b.pending.finalPath), `${b.pending.id}.pending.json`)));
    // While recording (and after the worker's rename, before complete): not listed.
    fs.writeFileSync(b.pending.tmpPath, "half");
    assert.deepEqual(w.store.list(), []);
    fs.rmSync(b.pending.tmpPath);
    const rec = record(b.pending, 2);
    assert.deepEqual(w.store.list(), []);
    const m = await w.store.complete(b.pending, rec);
    assert.ok(m);
    assert.equal(m.caller, "+4930123", "control characters removed");
    assert.equal(m.durationMs, 2000);
    assert.equal(m.status, "new");
    assert.deepEqual(w.store.counts(SALES), { newMessages: 1, oldMessages: 0 });
    assert.deepEqual(w.changes.at(-1), { mailbox: "group/sales", n: 1, o: 0 });
    assert.equal(fs.readdirSync(path.dirname(b.pending.finalPath)).filter((f) => f.includes("pending")).length, 0);
    const audio = await w.store.verifyAudio(m.id);
    assert.ok(audio.ok && audio.message.bytes === rec.bytes);
    assert.equal((await w.store.readAudioRange(m, 0, 1 << 20)).length, rec.bytes);
    assert.equal((await w.store.markHeard(m.id))?.status, "heard");
    assert.deepEqual(w.store.counts(SALES), { newMessages: 0, oldMessages: 1 });
    assert.deepEqual(w.changes.at(-1), { mailbox: "group/sales", n: 0, o: 1 });
    assert.equal((await w.store.save(m.id))?.status, "saved");
    assert.equal(await w.store.delete(m.id), true);
    assert.equal(await w.store.delete(m.id), false);
    assert.deepEqual(w.store.counts(SALES), { newMessages: 0, oldMessages: 0 });
    assert.deepEqual(w.changes.at(-1), { mailbox: "group/sales", n: 0, o: 0 });
    assert.deepEqual(fs.readdirSync(path.dirname(b.pending.finalPath)), []);
  });

  test("quota: a full mailbox refuses before anything is written; deposits in progress count", async () => {
    const w = world();
    const a = await w.store.begin(SALES, { caller: "a", callId: "1" });
    const b = await w.store.begin(SALES, { caller: "b", callId: "2" });
    assert.ok(a.ok && b.ok);
    const before = fs.readdirSync(path.dirname(a.pending.finalPath)).sort();
    const c = await w.store.begin(SALES, { caller: "c", callId: "3" });
    assert.deepEqual(c.ok ? "ok" : c.reason, "full");
    assert.deepEqual(fs.readdirSync(path.dirname(a.pending.finalPath)).sort(), before, "nothing written");
    w.store.abandon(a.pending);
    const d = await w.store.begin(SALES, { caller: "d", callId: "4" });
    assert.ok(d.ok, "the abandoned deposit freed its place");
    assert.equal((await w.store.begin({ kind: "user", id: "ben" }, { caller: "x", callId: "5" })).ok, false, "no mailbox");
    assert.equal(w.store.counts({ kind: "user", id: "ben" }), undefined);
  });

  test("a recording shorter than half a second is not kept", async () => {
    const w = world();
    const b = await w.store.begin(ANNA, { caller: "a", callId: "1" });
    assert.ok(b.ok);
    const rec = record(b.pending, 0);
    assert.equal(await w.store.complete(b.pending, rec), undefined);
    assert.deepEqual(fs.readdirSync(path.dirname(b.pending.finalPath)), []);
  });

  test("retention: messages older than retentionDays go; 0 keeps them", async () => {
    const w = world({ "group/sales": { retentionDays: 1 }, "user/anna": { retentionDays: 0 } });
    for (const owner of [SALES, ANNA]) {
      const b = await w.store.begin(owner, { caller: "a", callId: "1" });
      assert.ok(b.ok);
      await w.store.complete(b.pending, record(b.pending, 1));
    }
    w.advance(86_400_000 - 1000);
    assert.equal(await w.store.sweep(), 0);
    w.advance(2000);
    assert.equal(await w.store.sweep(), 1);
    assert.deepEqual(w.store.list().map((m) => m.mailbox), ["user/anna"]);
    assert.deepEqual(w.changes.at(-1), { mailbox: "group/sales", n: 0, o: 0 });
  });

  test("restart: a cut recording is removed, a cut commit is finished from the WAV, corrupt metadata is set aside", async () => {
    const w = world();
    // 1. Recording cut: pending + .wav.part.
    const cut = await w.store.begin(ANNA, { caller: "cut", callId: "1" });
    assert.ok(cut.ok);
    fs.writeFileSync(cut.pending.tmpPath, Buffer.alloc(1000));
    // 2. Commit cut: pending + complete .wav, no .json.
    const done = await w.store.begin(ANNA, { caller: "+49301", callId: "2" });
    assert.ok(done.ok);
    const rec = record(done.pending, 1);
    // 3. A good message, and one whose metadata was damaged.
    const good = await w.store.begin(SALES, { caller: "good", callId: "3" });
    assert.ok(good.ok);
    const gm = (await w.store.complete(good.pending, record(good.pending, 1)))!;
    const bad = await w.store.begin(SALES, { caller: "bad", callId: "4" });
    assert.ok(bad.ok);
    const bm = (await w.store.complete(bad.pending, record(bad.pending, 1)))!;
    const badMeta = path.join(path.dirname(bad.pending.finalPath), `${bm.id}.json`);
    fs.writeFileSync(badMeta, "{ not json");
    // 4. A stale temporary of an atomic write, and a WAV nobody describes.
    fs.writeFileSync(path.join(path.dirname(good.pending.finalPath), `${gm.id}.json.tmp-999`), "x");
    w.store.stop();

    const r = w.reopen();
    const list = r.store.list();
    assert.deepEqual(list.map((m) => m.caller).sort(), ["+49301", "good"]);
    const kept = list.find((m) => m.caller === "+49301")!;
    assert.equal(kept.sha256, rec.sha256);
    assert.equal(kept.durationMs, 1000);
    const annaDir = path.dirname(cut.pending.finalPath);
    assert.deepEqual(fs.readdirSync(annaDir).sort(), [`${done.pending.id}.json`, `${done.pending.id}.wav`]);
    const salesDir = path.dirname(good.pending.finalPath);
    assert.deepEqual(fs.readdirSync(salesDir).sort(), [`${bm.id}.json.corrupt`, `${gm.id}.json`, `${gm.id}.wav`].sort());
    assert.deepEqual(r.store.counts(ANNA), { newMessages: 1, oldMessages: 0 });
    r.store.stop();
  });

  test("hostile ids and a damaged recording", async () => {
    const w = world();
    for (const id of ["../../etc/passwd", "", "x".repeat(5000), "20261203T120000Z-zzzzzzzz"]) {
      assert.equal(w.store.get(id), undefined);
      assert.equal(await w.store.delete(id), false);
      assert.equal((await w.store.verifyAudio(id)).ok, false);
    }
    const b = await w.store.begin(SALES, { caller: "a", callId: "1" });
    assert.ok(b.ok);
    const m = (await w.store.complete(b.pending, record(b.pending, 1)))!;
    const wav = fs.readFileSync(b.pending.finalPath);
    wav[100] = (wav[100] ?? 0) ^ 0xff;
    fs.writeFileSync(b.pending.finalPath, wav);
    const r = await w.store.verifyAudio(m.id);
    assert.ok(!r.ok && r.error.includes("damaged"));
  });
});

describe("console fetch of a recording (cmd/voicemail-fetch)", () => {
  test("chunks reassemble to the file; each chunk and the whole carry their SHA-256; bad arguments and a damaged file are refused", async () => {
    const w = world();
    const b = await w.store.begin(SALES, { caller: "a", callId: "1" });
    assert.ok(b.ok);
    const m = (await w.store.complete(b.pending, record(b.pending, 3)))!;
    const parts: Buffer[] = [];
    let offset = 0;
    for (let i = 0; i < 100; i++) {
      const c = await fetchRecording(w.store, { id: m.id, offset }, 10_000);
      const data = Buffer.from(c.data, "base64");
      assert.equal(createHash("sha256").update(data).digest("hex"), c.chunkSha256);
      assert.equal(c.sha256, m.sha256);
      parts.push(data);
      offset += data.length;
      if (c.done) break;
    }
    const whole = Buffer.concat(parts);
    assert.equal(whole.length, m.bytes);
    assert.equal(createHash("sha256").update(whole).digest("hex"), m.sha256);
    await assert.rejects(fetchRecording(w.store, { id: "../x" }), /message id/);
    await assert.rejects(fetchRecording(w.store, { id: m.id, offset: -1 }), /offset/);
    await assert.rejects(fetchRecording(w.store, { id: m.id, offset: 1.5 }), /offset/);
    await assert.rejects(fetchRecording(w.store, { id: m.id, offset: m.bytes + 1 }), /past the end/);
    await assert.rejects(fetchRecording(w.store, { id: "20261203T120000Z-00000000" }), /no message/);
    const wav = fs.readFileSync(b.pending.finalPath);
    wav[50] = (wav[50] ?? 0) ^ 1;
    fs.writeFileSync(b.pending.finalPath, wav);
    await assert.rejects(fetchRecording(w.store, { id: m.id }), /damaged/);
  });
});
