import { test, describe } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import {
  Store,
  inspect,
  storeFilePath,
  StoreCorruptError,
  StoreVersionError,
  StoreMigrationError,
  StoreLockedError,
  StoreError,
  AUTH_SOURCE_REFRESH_MS,
  MAX_AUTH_SOURCES_PER_DEVICE,
  keepsSiteDevice,
  storeDataStringifier,
  type BindingRecord,
} from "../../agent/store/store.ts";
import { AtomicJsonFile, canonicalJson, decodeEnvelope, encodeEnvelope, readStoreFile, sha256Hex, type WriteStep } from "../../agent/store/atomic-file.ts";
import { MIGRATIONS, MigrationError, runMigrations, isLegacyV0, type Migration, type ModelCanonicaliser } from "../../agent/store/migrations.ts";
import { CURRENT_SCHEMA_VERSION, MAX_CALL_LOG, MAX_SEEN_PHONES, checkSiteRecord, validateStoreData } from "../../agent/store/schema.ts";
import { parseSite, parsedSiteOf } from "../../agent/routing/model.ts";
import { siteSnapshot } from "../e2e/mqtt-fixtures.ts";
import { tempDir } from "../tmpdir.ts";

const FIXED = new Date("2024-05-01T10:00:00.000Z");

function tmpDir(): string {
  return tempDir("ringedge-store-");
}

function binding(over: Partial<BindingRecord> = {}): BindingRecord {
  return {
    deviceId: "dev-1001",
    aor: "1001",
    contact: "<sip:1001@192.0.2.10:5062;transport=udp;line=abc>",
    expiresAt: FIXED.getTime() + 3600_000,
    callId: "a84b4c76e66710@pc33",
    cseq: 7,
    q: 0.5,
    flow: { transport: "udp", remoteAddress: "192.0.2.10", remotePort: 5062, localAddress: "192.0.2.1", localPort: 5060 },
    userAgent: "Yealink SIP-T46U",
    ...over,
  };
}

const DEV = { id: "dev-1001", username: "1001", password: "s3cret-1001", kind: "physical" as const, mac: "00:15:65:AA:BB:01", model: "yealink-t46u", displayName: "Front desk" };

/** A store whose .bak holds one device and whose main file holds two. */
async function storeWithBackup(dir: string): Promise<void> {
  const s = await Store.open(dir, { now: () => FIXED });
  assert.ok(s.addDevice(DEV).ok);
  await s.flush(); // main: 1 device, .bak: the initial empty store
  assert.ok(s.addDevice({ id: "dev-1002", username: "1002", password: "pw-1002", kind: "soft" }).ok);
  await s.close(); // main: 2 devices, .bak: 1 device
}

function filesIn(dir: string): string[] {
  return fs.readdirSync(dir).sort();
}

describe("Store: round trip and files", () => {
  test("creates the data dir and a 0600 envelope file; data survives close/reopen", async () => {
    const dir = path.join(tmpDir(), "nested", "data");
    const s = await Store.open(dir, { now: () => FIXED, siteId: "site-7" });
    assert.equal(s.writeCount, 1, "initial file written at open");
    const added = s.addDevice(DEV);
    assert.ok(added.ok);
    assert.equal(added.value.mac, "001565aabb01", "MAC normalised");
    assert.deepEqual(s.replaceBindings("1001", [{ ...binding(), flow: { ...binding().flow, connectionId: 42 } } as BindingRecord]), { ok: true, value: 1 });
    s.recordEvenlyOffer("g1", "m1", 1000);
    s.recordEvenlyOffer("__proto__", "m2", 2000);
    await s.close();

    const file = storeFilePath(dir);
    assert.equal(fs.statSync(file).mode & 0o777, 0o600);
    assert.equal(fs.statSync(`${file}.bak`).mode & 0o777, 0o600);
    const raw = JSON.parse(fs.readFileSync(file, "utf8"));
    assert.equal(raw.format, "ringedge-store");
    assert.equal(raw.schemaVersion, CURRENT_SCHEMA_VERSION);
    // The checksum covers the data text exactly as written (V8's JSON.stringify order).
    assert.equal(raw.sha256, sha256Hex(JSON.stringify(raw.data)));
    assert.equal("connectionId" in raw.data.bindings[0].flow, false, "process-local state not persisted");

    const r = await Store.open(dir);
    assert.equal(r.meta.siteId, "site-7");
    assert.equal(r.meta.createdAt, FIXED.toISOString());
    assert.equal(r.findDeviceByUsername("1001")?.password, "s3cret-1001");
    assert.equal(r.findDeviceByMac("00-15-65-aa-bb-01")?.id, "dev-1001");
    assert.deepEqual(r.bindingsFor("1001"), [binding()]);
    assert.deepEqual({ ...r.evenlyLastOffered("g1") }, { m1: 1000 });
    assert.deepEqual({ ...r.evenlyLastOffered("__proto__") }, { m2: 2000 });
    assert.equal(Object.getPrototypeOf({}), Object.prototype, "no prototype pollution");
    await r.close();
  });

  test("writes leave no temp files; the lock goes away on close", async () => {
    const dir = tmpDir();
    const s = await Store.open(dir, { saveDelayMs: 1 });
    for (let i = 0; i < 5; i++) {
      s.addDevice({ id: `d${i}`, username: `10${i}`, password: "pw", kind: "soft" });
      await s.flush();
    }
    assert.deepEqual(filesIn(dir), ["ringedge.json", "ringedge.json.bak", "ringedge.json.lock"]);
    await s.close();
    assert.deepEqual(filesIn(dir), ["ringedge.json", "ringedge.json.bak"]);
  });

  test("stale temp files of a crashed writer are removed at open", async () => {
    const dir = tmpDir();
    await (await Store.open(dir)).close();
    fs.writeFileSync(path.join(dir, "ringedge.json.tmp-99999"), "{half");
    fs.writeFileSync(path.join(dir, "ringedge.json.bak.tmp-99999"), "x");
    fs.writeFileSync(path.join(dir, "ringedge.json.v0.bak.tmp-99999-w"), "x");
    const s = await Store.open(dir);
    await s.close();
    assert.deepEqual(filesIn(dir), ["ringedge.json"]);
  });

  test("the .bak is the previous good version", async () => {
    const dir = tmpDir();
    await storeWithBackup(dir);
    const bak = await readStoreFile(`${storeFilePath(dir)}.bak`);
    assert.equal(bak.kind, "envelope");
    if (bak.kind === "envelope") assert.equal((bak.envelope.data as { devices: unknown[] }).devices.length, 1);
  });

  test("a second open of the same store is refused; a stale lock is taken over", async () => {
    const dir = tmpDir();
    const s = await Store.open(dir);
    await assert.rejects(Store.open(dir), (e: unknown) => e instanceof StoreLockedError && e.holderPid === process.pid);
    await s.close();
    // A lock left by a process that no longer exists.
    fs.writeFileSync(path.join(dir, "ringedge.json.lock"), JSON.stringify({ pid: 2 ** 22 + 12345, bootId: "" }));
    const again = await Store.open(dir);
    await again.close();
  });
});

describe("AtomicJsonFile", () => {
  test("concurrent writes coalesce into one follow-up write with the latest data", async () => {
    const file = path.join(tmpDir(), "x.json");
    const a = new AtomicJsonFile<{ n: number }>(file, { schemaVersion: 1 });
    const done = [];
    for (let n = 1; n <= 10; n++) done.push(a.write({ n }));
    await Promise.all(done);
    assert.equal(a.writes, 2, "first write + one coalesced write");
    assert.deepEqual(await a.read(), { n: 10 });
  });

  test("read() returns null for a missing file and rejects other versions", async () => {
    const file = path.join(tmpDir(), "x.json");
    const a = new AtomicJsonFile<{ n: number }>(file, { schemaVersion: 1 });
    assert.equal(await a.read(), null);
    fs.writeFileSync(file, encodeEnvelope({ n: 1 }, 3, FIXED));
    await assert.rejects(a.read(), StoreCorruptError);
  });

  for (const step of ["tmp-synced", "backup-rotated", "renamed"] as WriteStep[]) {
    test(`a crash after step "${step}" leaves a complete file and a complete .bak`, async () => {
      const file = path.join(tmpDir(), "x.json");
      const good = new AtomicJsonFile<{ n: number }>(file, { schemaVersion: 1 });
      await good.write({ n: 1 });
      await good.write({ n: 2 });
      const crashing = new AtomicJsonFile<{ n: number }>(file, {
        schemaVersion: 1,
        onStep: (s) => {
          if (s === step) throw new Error("power cut");
        },
      });
      await assert.rejects(crashing.write({ n: 3 }), /power cut/);
      const main = await readStoreFile(file);
      const bak = await readStoreFile(`${file}.bak`);
      assert.equal(main.kind, "envelope");
      assert.equal(bak.kind, "envelope");
      if (main.kind === "envelope") assert.equal((main.envelope.data as { n: number }).n, step === "renamed" ? 3 : 2);
      if (bak.kind === "envelope") assert.equal((bak.envelope.data as { n: number }).n, step === "tmp-synced" ? 1 : 2);
    });
  }

  test("writeSync supersedes an async write still in flight", async () => {
    const file = path.join(tmpDir(), "x.json");
    const a = new AtomicJsonFile<{ n: number }>(file, { schemaVersion: 1 });
    await a.write({ n: 1 });
    const pending = a.write({ n: 2 });
    a.writeSync({ n: 3 });
    await pending;
    assert.deepEqual(await a.read(), { n: 3 });
    assert.deepEqual(filesIn(path.dirname(file)), ["x.json", "x.json.bak"]);
  });

  test("a damaged current file is never rotated into .bak", async () => {
    const file = path.join(tmpDir(), "x.json");
    const a = new AtomicJsonFile<{ n: number }>(file, { schemaVersion: 1 });
    await a.write({ n: 1 });
    await a.write({ n: 2 });
    fs.writeFileSync(file, "garbage");
    await a.write({ n: 3 });
    const bak = await readStoreFile(`${file}.bak`);
    assert.ok(bak.kind === "envelope" && (bak.envelope.data as { n: number }).n === 1);
  });

  test("files checksummed over the canonical (sorted-key) data, as earlier versions wrote them, still read", () => {
    const data = { z: 1, a: { y: [1, 2], b: "x" } };
    const old = `{\n  "format": "ringedge-store",\n  "schemaVersion": 1,\n  "savedAt": "2026-01-01T00:00:00.000Z",\n  "sha256": "${sha256Hex(canonicalJson(data))}",\n  "data": ${canonicalJson(data)}\n}\n`;
    assert.equal(decodeEnvelope(old).kind, "envelope");
    const fresh = encodeEnvelope(data, 1, new Date(0));
    assert.equal(decodeEnvelope(fresh).kind, "envelope");
    // One changed byte in the data text is caught by either form of the checksum.
    assert.equal(decodeEnvelope(fresh.replace('"x"', '"X"')).kind, "corrupt");
    assert.equal(decodeEnvelope(old.replace('"x"', '"X"')).kind, "corrupt");
  });

  test("a file cut anywhere is reported as truncated, whatever token the cut lands in", () => {
    const full = encodeEnvelope({ devices: [{ id: "d1", n: 12345, s: "abc" }], x: [1, 2, 3] }, 2, new Date(0));
    for (let cut = 1; cut < full.trimEnd().length; cut++) {
      const r = decodeEnvelope(full.slice(0, cut));
      assert.equal(r.kind, "corrupt", `cut at ${cut}`);
      if (r.kind === "corrupt" && full.slice(0, cut).trim() !== "") assert.match(r.reason, /truncated|empty/, `cut at ${cut}: ${r.reason}`);
    }
  });

  test("decodeEnvelope never throws on hostile bytes", () => {
    const samples = ["", " ", "{", "[]", "null", "1", '"x"', "{}", '{"format":1}', '{"__proto__":{"a":1}}', "\u0000\u0001", '{"data":null,"format":"ringedge-store","schemaVersion":-1,"savedAt":"x","sha256":"y"}'];
    let seed = 7;
    for (let i = 0; i < 200; i++) {
      let s = "";
      for (let j = 0; j < 40; j++) {
        seed = (seed * 1103515245 + 12345) % 2 ** 31;
        s += '{}[]":,0aZ-\\ \n'.charAt(seed % 15);
      }
      samples.push(s);
    }
    for (const s of samples) {
      const r = decodeEnvelope(s);
      assert.ok(["corrupt", "bare", "envelope"].includes(r.kind));
    }
  });

  test("canonicalJson equals JSON.stringify of a key-sorted copy on random data (escapes, unicode, numbers, toJSON, holes)", () => {
    let seed = 7;
    const rnd = (n: number): number => ((seed = (seed * 1103515245 + 12345) % 2 ** 31), seed % n);
    const strings = ["", "a", 'quo"te', "back\\slash", "tab\t", "nul\u0000", "é", "😀", "\u2028", "<>&", "key", "Key", "k-1"];
    const gen = (depth: number): unknown => {
      switch (depth > 3 ? rnd(4) : rnd(8)) {
        case 0: return strings[rnd(strings.length)];
        case 1: return [0, -0, 1.5, -3e-7, 1e21, 2 ** 53, NaN, Infinity][rnd(8)];
        case 2: return rnd(2) === 0;
        case 3: return null;
        case 4: return Array.from({ length: rnd(4) }, () => (rnd(6) === 0 ? undefined : gen(depth + 1)));
        case 5: return new Date(Date.UTC(2026, rnd(12), 1 + rnd(28)));
        default: {
          const o: Record<string, unknown> = {};
          for (let i = rnd(6); i > 0; i--) o[strings[rnd(strings.length)]! + (rnd(3) === 0 ? "z" : "")] = rnd(8) === 0 ? undefined : gen(depth + 1);
          return o;
        }
      }
    };
    // The reference: sort keys in a deep copy, then let V8 write it (no integer-like keys here,
    // which V8 would enumerate first).
    const sortDeep = (v: unknown): unknown => {
      if (v === null || typeof v !== "object") return v;
      if (typeof (v as { toJSON?: unknown }).toJSON === "function") return sortDeep((v as { toJSON: () => unknown }).toJSON());
      if (Array.isArray(v)) return v.map(sortDeep);
      const o: Record<string, unknown> = {};
      for (const k of Object.keys(v).sort()) o[k] = sortDeep((v as Record<string, unknown>)[k]);
      return o;
    };
    for (let i = 0; i < 2000; i++) {
      const v = gen(0);
      assert.equal(canonicalJson(v), JSON.stringify(sortDeep(v)) ?? "null", JSON.stringify(v));
    }
  });

  test("canonicalJson sorts keys at every depth and drops undefined", () => {
    assert.equal(canonicalJson({ b: 1, a: { d: [1, undefined], c: "x" }, u: undefined }), '{"a":{"c":"x","d":[1,null]},"b":1}');
  });
});

describe("Store: corruption is detected and never silently replaced", () => {
  const cases: Array<[string, (text: string) => string, RegExp]> = [
    ["truncated file", (t) => t.slice(0, Math.floor(t.length / 2)), /truncated/],
    ["flipped bit in the data", (t) => {
      const i = t.indexOf("pw-1002");
      return t.slice(0, i) + String.fromCharCode(t.charCodeAt(i) ^ 0x01) + t.slice(i + 1);
    }, /checksum mismatch/],
    ["empty file", () => "", /empty/],
    ["not JSON", () => "this is not json\n", /not valid JSON/],
    ["wrong format", (t) => t.replace('"ringedge-store"', '"something-else"'), /wrong format/],
    ["missing envelope field", (t) => t.replace(/"sha256": "[0-9a-f]+",\n/, ""), /no "sha256" field/],
    ["JSON without an envelope", () => '{"hello": "world"}', /envelope/],
    ["data not matching the schema", (t) => {
      const env = JSON.parse(t);
      env.data.devices[0].kind = "fax";
      return encodeEnvelope(env.data, CURRENT_SCHEMA_VERSION, FIXED);
    }, /does not match schema/],
  ];
  for (const [name, damage, reason] of cases) {
    test(name, async () => {
      const dir = tmpDir();
      await storeWithBackup(dir);
      const file = storeFilePath(dir);
      const damaged = damage(fs.readFileSync(file, "utf8"));
      fs.writeFileSync(file, damaged);
      await assert.rejects(Store.open(dir), (e: unknown) => {
        assert.ok(e instanceof StoreCorruptError, String(e));
        assert.match(e.reason, reason);
        assert.ok(e.message.includes(file), "names the file");
        assert.ok(e.message.includes(`${file}.bak`), "names the last good copy");
        assert.ok(e.message.includes(FIXED.toISOString()), "gives its savedAt");
        assert.ok(e.message.includes("ringedge store recover"), "gives the command");
        assert.equal(e.backup.usable, true);
        return true;
      });
      assert.equal(fs.readFileSync(file, "utf8"), damaged, "damaged file left untouched");
      assert.equal(fs.existsSync(`${file}.lock`), false, "lock released after a refused open");
    });
  }

  test("the error says when the .bak is unusable too", async () => {
    const dir = tmpDir();
    await storeWithBackup(dir);
    const file = storeFilePath(dir);
    fs.writeFileSync(file, "{");
    fs.rmSync(`${file}.bak`);
    await assert.rejects(Store.open(dir), (e: unknown) => e instanceof StoreCorruptError && /ringedge\.json\.bak is missing/.test(e.message) && !e.backup.usable);
  });

  test("a missing file next to a .bak is not a fresh install", async () => {
    const dir = tmpDir();
    await storeWithBackup(dir);
    fs.rmSync(storeFilePath(dir));
    await assert.rejects(Store.open(dir), (e: unknown) => e instanceof StoreCorruptError && /missing but a last good copy exists/.test(e.reason));
    assert.equal(fs.existsSync(storeFilePath(dir)), false);
    const res = await Store.recover(dir);
    assert.equal(res.corruptKeptAs, null);
    const s = await Store.open(dir);
    assert.equal(s.listDevices().length, 1);
    await s.close();
  });

  test("recover() promotes .bak and keeps the damaged file", async () => {
    const dir = tmpDir();
    await storeWithBackup(dir);
    const file = storeFilePath(dir);
    fs.writeFileSync(file, "{\"format\": \"ringedge-st");
    const res = await Store.recover(dir, { now: () => FIXED });
    assert.equal(res.restoredFrom, `${file}.bak`);
    assert.equal(res.corruptKeptAs, `${file}.corrupt-2024-05-01T10-00-00-000Z`);
    assert.equal(fs.readFileSync(res.corruptKeptAs, "utf8"), "{\"format\": \"ringedge-st");
    assert.equal(fs.statSync(file).mode & 0o777, 0o600);
    const s = await Store.open(dir);
    assert.deepEqual(s.listDevices().map((d) => d.id), ["dev-1001"], "state of the last good copy");
    await s.close();
  });

  test("recover() refuses a healthy file unless forced, and needs a usable .bak", async () => {
    const dir = tmpDir();
    await storeWithBackup(dir);
    await assert.rejects(Store.recover(dir), /not damaged/);
    const forced = await Store.recover(dir, { force: true });
    assert.ok(forced.corruptKeptAs !== null);
    fs.writeFileSync(`${storeFilePath(dir)}.bak`, "nope");
    fs.writeFileSync(storeFilePath(dir), "nope");
    await assert.rejects(Store.recover(dir), (e: unknown) => e instanceof StoreError && /No usable last good copy/.test(e.message));
    assert.equal(fs.readFileSync(storeFilePath(dir), "utf8"), "nope");
  });

  test("inspect() reports health without opening", async () => {
    const dir = tmpDir();
    const fresh = await inspect(dir);
    assert.equal(fresh.ok, true);
    assert.equal(fresh.exists, false);
    await storeWithBackup(dir);
    const good = await inspect(dir);
    assert.equal(good.ok, true);
    assert.equal(good.schemaVersion, CURRENT_SCHEMA_VERSION);
    assert.deepEqual(good.counts, { devices: 2, bindings: 0, groups: 0 });
    assert.equal(good.backup.usable, true);
    fs.writeFileSync(storeFilePath(dir), "");
    const bad = await inspect(dir);
    assert.equal(bad.ok, false);
    assert.match(bad.error ?? "", /empty/);
  });
});

describe("Store: migrations", () => {
  const legacy = {
    siteId: "hq",
    devices: [
      { id: "d1", username: "1001", secret: "old-pw-1", displayName: "Desk", mac: "00:11:22:33:44:55", model: "yealink-t46u" },
      { username: "2001", secret: "old-pw-2" },
    ],
  };

  test("a version-0 (legacy prototype) file is migrated, with a .v0.bak kept first", async () => {
    const dir = tmpDir();
    const file = storeFilePath(dir);
    const original = JSON.stringify(legacy, null, 2);
    fs.writeFileSync(file, original, { mode: 0o644 });
    const s = await Store.open(dir, { now: () => FIXED });
    assert.equal(s.openedFromVersion, 0);
    assert.equal(s.migrationBackup, `${file}.v0.bak`);
    assert.equal(fs.readFileSync(`${file}.v0.bak`, "utf8"), original);
    assert.deepEqual(s.getDevice("d1"), { id: "d1", username: "1001", password: "old-pw-1", kind: "physical", mac: "001122334455", model: "yealink-t46u", displayName: "Desk", createdAt: FIXED.toISOString(), origin: "local" });
    assert.equal(s.findDeviceByUsername("2001")?.id, "dev-2001");
    assert.equal(s.findDeviceByUsername("2001")?.kind, "soft");
    assert.equal(s.meta.siteId, "hq");
    await s.close();
    const raw = JSON.parse(fs.readFileSync(file, "utf8"));
    assert.equal(raw.schemaVersion, CURRENT_SCHEMA_VERSION);
    assert.equal(fs.statSync(file).mode & 0o777, 0o600);
    assert.equal(fs.statSync(`${file}.v0.bak`).mode & 0o777, 0o600);
    const info = await inspect(dir);
    assert.equal(info.needsMigration, false);
  });

  test("inspect() sees a pending migration", async () => {
    const dir = tmpDir();
    fs.writeFileSync(storeFilePath(dir), JSON.stringify(legacy));
    const info = await inspect(dir);
    assert.equal(info.ok, true);
    assert.equal(info.schemaVersion, 0);
    assert.equal(info.needsMigration, true);
    assert.equal(info.counts?.devices, 2);
  });

  test("a version-0 file that cannot be migrated is left as it was", async () => {
    const dir = tmpDir();
    const file = storeFilePath(dir);
    const text = JSON.stringify({ devices: [{ username: "1001" }] });
    fs.writeFileSync(file, text);
    await assert.rejects(Store.open(dir), (e: unknown) => e instanceof StoreMigrationError && /devices\[0\]\.secret/.test(e.message));
    assert.equal(fs.readFileSync(file, "utf8"), text);
    assert.equal(fs.existsSync(`${file}.v0.bak`), false);
  });

  test("a file from a newer release is refused, not downgraded", async () => {
    const dir = tmpDir();
    const file = storeFilePath(dir);
    const newer = CURRENT_SCHEMA_VERSION + 1;
    const text = encodeEnvelope({ devices: [], something: "new" }, newer, FIXED);
    fs.writeFileSync(file, text);
    await assert.rejects(Store.open(dir), (e: unknown) => e instanceof StoreVersionError && e.found === newer && e.supported === CURRENT_SCHEMA_VERSION && /newer release/.test(e.message));
    assert.equal(fs.readFileSync(file, "utf8"), text);
    const info = await inspect(dir);
    assert.equal(info.ok, false);
    assert.equal(info.schemaVersion, newer);
  });

  test("runMigrations chains steps in order and reports gaps and failures", () => {
    const steps: Migration[] = [
      { from: 1, to: 2, description: "add b", migrate: (d) => ({ ...(d as object), b: 2 }) },
      { from: 2, to: 3, description: "add c", migrate: (d) => ({ ...(d as object), c: 3 }) },
    ];
    const ok = runMigrations({ a: 1 }, 1, 3, { now: FIXED }, steps);
    assert.deepEqual(ok, { ok: true, data: { a: 1, b: 2, c: 3 }, applied: steps });
    assert.deepEqual(runMigrations({}, 0, 3, { now: FIXED }, steps), { ok: false, error: "no migration from schemaVersion 0" });
    const failing: Migration[] = [{ from: 1, to: 2, description: "x", migrate: () => { throw new Error("bad row 3"); } }];
    assert.deepEqual(runMigrations({}, 1, 2, { now: FIXED }, failing), { ok: false, error: "step 1→2: bad row 3" });
    assert.equal(isLegacyV0({ devices: [] }), true);
    assert.equal(isLegacyV0({ devices: [], other: 1 }), false);
  });
});

describe("Store: batching and write errors", () => {
  test("many scheduleSave calls within the window make few writes", async () => {
    const dir = tmpDir();
    const s = await Store.open(dir, { saveDelayMs: 30 });
    s.addDevice(DEV);
    const before = s.writeCount;
    for (let i = 0; i < 500; i++) s.recordEvenlyOffer("g1", `m${i % 7}`, i);
    assert.equal(s.writeCount, before, "nothing written synchronously");
    // Wait for the write (a loaded machine may run the 30 ms timer late), then past another window.
    for (const end = Date.now() + 5000; s.writeCount === before && Date.now() < end; ) await new Promise((r) => setTimeout(r, 5));
    await new Promise((r) => setTimeout(r, 80));
    assert.equal(s.writeCount - before, 1, "one batched write");
    await s.flush();
    assert.equal(s.writeCount - before, 1, "flush with nothing pending writes nothing");
    const env = await readStoreFile(storeFilePath(dir));
    assert.ok(env.kind === "envelope");
    assert.equal((env.envelope.data as { routing: { evenlyLastOffered: Record<string, Record<string, number>> } }).routing.evenlyLastOffered.g1?.m6, 496);
    await s.close();
  });

  test("a failed background write is reported and retried; flush reports a failure", async () => {
    const dir = tmpDir();
    let failures = 0;
    const errors: Error[] = [];
    const s = await Store.open(dir, {
      saveDelayMs: 1,
      retryDelayMs: 5,
      onError: (e) => errors.push(e),
      onWriteStep: (step) => {
        if (step === "tmp-synced" && failures > 0) {
          failures--;
          throw new Error("disk full");
        }
      },
    });
    failures = 1;
    s.addDevice(DEV);
    // Wait for the failed write and its retry (polling: a loaded machine may be slow).
    for (let i = 0; i < 200 && (s.hasPendingWrites() || errors.length === 0); i++) await new Promise((r) => setTimeout(r, 10));
    assert.equal(errors.length, 1);
    assert.match(errors[0]!.message, /disk full/);
    assert.equal((await inspect(dir)).counts?.devices, 1, "retried and written");
    failures = 1;
    s.removeDevice("dev-1001");
    await assert.rejects(s.flush(), /disk full/);
    await s.flush(); // the next attempt succeeds
    assert.equal((await inspect(dir)).counts?.devices, 0);
    await s.close();
  });

  test("closeSync writes pending changes synchronously", async () => {
    const dir = tmpDir();
    const s = await Store.open(dir, { saveDelayMs: 10_000 });
    s.addDevice(DEV);
    s.closeSync();
    assert.equal((await inspect(dir)).counts?.devices, 1);
    assert.equal(fs.existsSync(`${storeFilePath(dir)}.lock`), false);
    assert.throws(() => s.addDevice(DEV), StoreError);
  });
});

describe("Store: devices and bindings", () => {
  test("device validation and uniqueness; bad input changes nothing", async () => {
    const s = await Store.open(tmpDir());
    assert.ok(s.addDevice(DEV).ok);
    const dupId = s.addDevice({ ...DEV, username: "1009", mac: undefined });
    assert.ok(!dupId.ok && dupId.error.code === "duplicate" && dupId.error.field === "id");
    const dupUser = s.addDevice({ ...DEV, id: "other", mac: undefined });
    assert.ok(!dupUser.ok && dupUser.error.field === "username");
    const dupMac = s.addDevice({ ...DEV, id: "other", username: "1009", mac: "001565aabb01" });
    assert.ok(!dupMac.ok && dupMac.error.field === "mac");
    const badUser = s.addDevice({ ...DEV, id: "other", username: "10 01", mac: undefined });
    assert.ok(!badUser.ok && badUser.error.code === "invalid" && badUser.error.field === "username");
    const badMac = s.addDevice({ ...DEV, id: "other", username: "1009", mac: "zz:zz" });
    assert.ok(!badMac.ok && badMac.error.field === "mac");
    const badPw = s.addDevice({ ...DEV, id: "other", username: "1009", mac: undefined, password: "" });
    assert.ok(!badPw.ok && badPw.error.field === "password");
    const badKind = s.addDevice({ ...DEV, id: "other", username: "1009", mac: undefined, kind: "fax" as "soft" });
    assert.ok(!badKind.ok && badKind.error.field === "kind");
    assert.ok(!s.addDevice(null as unknown as typeof DEV).ok);
    const auto = s.addDevice({ username: "2001", password: "pw", kind: "soft" });
    assert.ok(auto.ok && auto.value.id === "dev-2001");
    s.updateDevice("dev-2001", { username: "2002" });
    const again = s.addDevice({ username: "2001", password: "pw", kind: "soft" });
    assert.ok(again.ok && /^dev-[0-9a-f]{8}$/.test(again.value.id), "generated id when dev-<username> is taken");
    s.removeDevice("dev-2001");
    s.removeDevice(again.value.id);
    assert.equal(s.listDevices().length, 1);
    await s.close();
  });

  test("updateDevice re-indexes; a username change drops the old AOR's bindings", async () => {
    const s = await Store.open(tmpDir());
    s.addDevice(DEV);
    s.replaceBindings("1001", [binding()]);
    assert.ok(!s.updateDevice("nope", { displayName: "x" }).ok);
    assert.ok(!s.updateDevice("dev-1001", { id: "x" } as never).ok);
    const up = s.updateDevice("dev-1001", { username: "1011", password: "new-pw" });
    assert.ok(up.ok);
    assert.equal(s.findDeviceByUsername("1001"), undefined);
    assert.equal(s.findDeviceByUsername("1011")?.password, "new-pw");
    assert.deepEqual(s.bindingsFor("1001"), []);
    assert.equal(s.removeDevice("dev-1001"), true);
    assert.equal(s.removeDevice("dev-1001"), false);
    assert.equal(s.findDeviceByMac("001565aabb01"), undefined);
    await s.close();
  });

  test("bindings: replace, remove, purge, device removal; bad bindings rejected", async () => {
    const s = await Store.open(tmpDir());
    s.addDevice(DEV);
    const b2 = binding({ contact: "<sip:1001@192.0.2.11>", expiresAt: 1000 });
    assert.deepEqual(s.replaceBindings("1001", [binding(), b2]), { ok: true, value: 2 });
    const wrongAor = s.replaceBindings("1002", [binding()]);
    assert.ok(!wrongAor.ok && wrongAor.error.field === "aor");
    const noDevice = s.replaceBindings("1001", [binding({ deviceId: "ghost" })]);
    assert.ok(!noDevice.ok && noDevice.error.code === "not-found");
    const badPort = s.replaceBindings("1001", [binding({ flow: { ...binding().flow, remotePort: 70000 } })]);
    assert.ok(!badPort.ok && /remotePort/.test(badPort.error.message));
    assert.equal(s.bindingsFor("1001").length, 2, "rejected replace changed nothing");
    assert.equal(s.purgeExpiredBindings(5000), 1);
    assert.equal(s.removeBinding("1001", "<sip:nobody@x>"), false);
    assert.equal(s.removeBinding("1001", binding().contact), true);
    assert.deepEqual(s.listBindings(), []);
    s.replaceBindings("1001", [binding()]);
    s.removeDevice("dev-1001");
    assert.deepEqual(s.listBindings(), []);
    await s.close();
  });

  test("validateStoreData rejects duplicates and dangling bindings", () => {
    const base = { devices: [], bindings: [], meta: { createdAt: FIXED.toISOString() }, routing: { evenlyLastOffered: {} }, site: null, seenPhones: [], callLog: [] };
    assert.equal(validateStoreData(base).ok, true);
    const dev = { id: "a", username: "1", password: "p", kind: "soft", createdAt: FIXED.toISOString() };
    assert.match((validateStoreData({ ...base, devices: [dev, { ...dev, id: "b" }] }) as { error: string }).error, /username "1" is a duplicate/);
    assert.match((validateStoreData({ ...base, bindings: [binding()] }) as { error: string }).error, /names no device/);
  });
});

describe("Store: schema version 2", () => {
  const v1Data = {
    devices: [
      { id: "dev-1001", username: "1001", password: "pw-1001-x", kind: "physical", mac: "001565aabb01", createdAt: FIXED.toISOString() },
      { id: "dev-2001", username: "2001", password: "pw-2001-x", kind: "soft", createdAt: FIXED.toISOString() },
    ],
    bindings: [],
    meta: { createdAt: FIXED.toISOString(), siteId: "hq" },
    routing: { evenlyLastOffered: { sales: { anna: 5 } } },
  };

  test("a version-1 file migrates to 2 (devices local, empty site/seenPhones/callLog), keeping .v1.bak", async () => {
    const dir = tmpDir();
    const file = storeFilePath(dir);
    const original = encodeEnvelope(v1Data, 1, FIXED);
    fs.writeFileSync(file, original);
    const s = await Store.open(dir, { now: () => FIXED });
    assert.equal(s.openedFromVersion, 1);
    assert.equal(s.migrationBackup, `${file}.v1.bak`);
    assert.equal(fs.readFileSync(`${file}.v1.bak`, "utf8"), original);
    assert.deepEqual(s.listDevices().map((d) => [d.id, d.origin, d.provisioning]), [["dev-1001", "local", undefined], ["dev-2001", "local", undefined]]);
    assert.equal(s.site, null);
    assert.deepEqual(s.listSeenPhones(), []);
    assert.deepEqual(s.listCalls(), []);
    assert.deepEqual({ ...s.evenlyLastOffered("sales") }, { anna: 5 });
    await s.close();
    const raw = JSON.parse(fs.readFileSync(file, "utf8"));
    assert.equal(raw.schemaVersion, CURRENT_SCHEMA_VERSION);
    assert.equal(raw.data.site, null);
    assert.deepEqual(raw.data.seenPhones, []);
    // Reopening reads the current version as is.
    const again = await Store.open(dir, { now: () => FIXED });
    assert.equal(again.openedFromVersion, CURRENT_SCHEMA_VERSION);
    assert.equal(again.migrationBackup, null);
    await again.close();
  });

  test("a version-0 file migrates 0→1→2→3 in one open", async () => {
    const dir = tmpDir();
    const file = storeFilePath(dir);
    fs.writeFileSync(file, JSON.stringify({ devices: [{ username: "3001", secret: "legacy-pw", mac: "00-11-22-33-44-66" }] }));
    const s = await Store.open(dir, { now: () => FIXED });
    assert.equal(s.openedFromVersion, 0);
    assert.equal(s.migrationBackup, `${file}.v0.bak`);
    const d = s.findDeviceByUsername("3001");
    assert.equal(d?.origin, "local");
    assert.equal(d?.mac, "001122334466");
    assert.equal(s.site, null);
    await s.close();
    assert.equal(JSON.parse(fs.readFileSync(file, "utf8")).schemaVersion, CURRENT_SCHEMA_VERSION);
  });

  test("a version-1 file that already carries v2 fields is refused and left as it was", async () => {
    const dir = tmpDir();
    const file = storeFilePath(dir);
    const text = encodeEnvelope({ ...v1Data, callLog: [] }, 1, FIXED);
    fs.writeFileSync(file, text);
    await assert.rejects(Store.open(dir), (e: unknown) => e instanceof StoreMigrationError && /callLog/.test(e.message));
    assert.equal(fs.readFileSync(file, "utf8"), text);
  });

  test("addDevice: origin local by default; a device with a MAC gets random provisioning credentials", async () => {
    const s = await Store.open(tmpDir(), { now: () => FIXED });
    const phone = s.addDevice(DEV);
    assert.ok(phone.ok);
    assert.equal(phone.value.origin, "local");
    const p = phone.value.provisioning;
    assert.ok(p);
    assert.match(p.user, /^[A-Za-z0-9._~-]{8,}$/);
    assert.match(p.password, /^[A-Za-z0-9_-]{24}$/);
    assert.match(p.token, /^[0-9a-f]{32}$/);
    const other = s.addDevice({ ...DEV, id: "dev-1009", username: "1009", mac: "00:15:65:AA:BB:09" });
    assert.ok(other.ok);
    assert.notEqual(other.value.provisioning?.password, p.password);
    assert.notEqual(other.value.provisioning?.token, p.token);
    const soft = s.addDevice({ username: "2001", password: "pw-2001-x", kind: "soft" });
    assert.ok(soft.ok);
    assert.equal(soft.value.provisioning, undefined);
    // ensureProvisioningCredentials: creates once, then returns the same.
    const made = s.ensureProvisioningCredentials(soft.value.id);
    assert.ok(made.ok);
    assert.deepEqual(s.ensureProvisioningCredentials(soft.value.id), made);
    assert.deepEqual(s.getDevice(soft.value.id)?.provisioning, made.value);
    assert.deepEqual(s.ensureProvisioningCredentials("nope"), { ok: false, error: { code: "not-found", field: "id", message: 'no device with id "nope"' } });
    // Bad credentials are refused by validation.
    const bad = s.addDevice({ username: "2002", password: "pw-2002-x", kind: "soft", provisioning: { user: "a b", password: "x", token: "y" } });
    assert.equal(bad.ok, false);
    await s.close();
    const again = await Store.open(s.dataDir);
    assert.deepEqual(again.getDevice(soft.value.id)?.provisioning, made.value);
    await again.close();
  });

  test("seen phones: upsert by MAC, clues kept, bounded with the oldest evicted", async () => {
    let t = FIXED.getTime();
    const s = await Store.open(tmpDir(), { now: () => new Date(t), saveDelayMs: 10_000 });
    const first = s.noteSeenPhone({ mac: "80:5E:C0:11:22:33", ip: "192.0.2.20", vendor: "yealink", userAgent: "Yealink SIP-T46U 66.86.0.15" });
    assert.ok(first.ok);
    t += 1000;
    const second = s.noteSeenPhone({ mac: "805ec0112233", ip: "192.0.2.21" });
    assert.ok(second.ok);
    assert.deepEqual(second.value, {
      mac: "805ec0112233", ip: "192.0.2.21", vendor: "yealink", userAgent: "Yealink SIP-T46U 66.86.0.15",
      firstSeen: FIXED.toISOString(), lastSeen: new Date(t).toISOString(), requests: 2,
    });
    assert.equal(s.noteSeenPhone({ mac: "not-a-mac", ip: "192.0.2.1" }).ok, false);
    assert.equal(s.noteSeenPhone({ mac: "805ec0112244", ip: "" }).ok, false);
    assert.equal(s.listSeenPhones().length, 1);
    for (let i = 0; i < MAX_SEEN_PHONES; i++) {
      t += 1000;
      assert.ok(s.noteSeenPhone({ mac: `aa0000${i.toString(16).padStart(6, "0")}`, ip: "192.0.2.30" }).ok);
    }
    const list = s.listSeenPhones();
    assert.equal(list.length, MAX_SEEN_PHONES);
    assert.equal(list.some((p) => p.mac === "805ec0112233"), false, "the phone seen longest ago was evicted");
    assert.equal(list[0]?.mac, `aa0000${(MAX_SEEN_PHONES - 1).toString(16).padStart(6, "0")}`, "newest first");
    assert.equal(s.removeSeenPhone("aa:00:00:00:00:00"), true);
    assert.equal(s.removeSeenPhone("aa:00:00:00:00:00"), false);
    assert.equal(s.listSeenPhones().length, MAX_SEEN_PHONES - 1);
    await s.close();
  });

  test("call log: validated, newest first, filtered by group, a ring of the last MAX_CALL_LOG", async () => {
    const s = await Store.open(tmpDir(), { now: () => FIXED, saveDelayMs: 10_000 });
    const call = (i: number, groupId?: string) => ({ id: `c${i}`, at: FIXED.getTime() + i, caller: "0301234", target: "600", outcome: "answered" as const, offered: ["anna"], answeredBy: "anna", answerAfterMs: 3200, ...(groupId ? { groupId } : {}) });
    for (let i = 0; i < MAX_CALL_LOG + 10; i++) assert.ok(s.appendCall(call(i, i % 2 === 0 ? "sales" : "support")).ok);
    const all = s.listCalls({ limit: MAX_CALL_LOG + 100 });
    assert.equal(all.length, MAX_CALL_LOG);
    assert.equal(all[0]?.id, `c${MAX_CALL_LOG + 9}`);
    assert.equal(all.at(-1)?.id, "c10", "the ten oldest went first");
    assert.deepEqual(s.listCalls({ limit: 2, groupId: "sales" }).map((c) => c.id), [`c${MAX_CALL_LOG + 8}`, `c${MAX_CALL_LOG + 6}`]);
    assert.equal(s.listCalls().length, 100, "default limit");
    const bad = s.appendCall({ ...call(1), outcome: "exploded" as never });
    assert.equal(bad.ok, false);
    assert.equal(s.appendCall({ ...call(1), offered: "anna" as never }).ok, false);
    assert.equal(s.listCalls({ limit: MAX_CALL_LOG + 100 }).length, MAX_CALL_LOG);
    await s.close();
    const again = await Store.open(s.dataDir);
    assert.equal(again.listCalls({ limit: 1 })[0]?.id, `c${MAX_CALL_LOG + 9}`);
    await again.close();
  });

  const site = (version: number, groups: unknown[] = []) => ({
    version,
    hash: "a".repeat(64),
    appliedAt: FIXED.toISOString(),
    source: "file" as const,
    settings: { pickupCode: "*8" },
    users: [{ id: "anna", extension: "1001", name: "Anna", availability: "available" as const, callLimit: 1 }],
    groups: groups as never[],
  });

  test("applySite: upserts site devices, keeps passwords, removes absent site devices and their bindings, never touches local ones", async () => {
    const s = await Store.open(tmpDir(), { now: () => FIXED });
    assert.ok(s.addDevice({ id: "local-1", username: "9001", password: "local-pw-1", kind: "soft" }).ok);
    const first = s.applySite(site(1), [
      { id: "anna-desk", username: "1001", kind: "physical", owner: "anna", mac: "80:5e:c0:00:00:01" },
      { id: "anna-soft", username: "anna-soft", password: "given-pw-1", kind: "soft", owner: "anna" },
    ]);
    assert.ok(first.ok, JSON.stringify(first));
    assert.deepEqual(first.value, { added: ["anna-desk", "anna-soft"], updated: [], removed: [], unchanged: [] });
    const desk = s.getDevice("anna-desk")!;
    assert.equal(desk.origin, "site");
    assert.match(desk.password, /^[A-Za-z0-9_-]{24}$/, "generated");
    assert.ok(desk.provisioning);
    assert.equal(s.getDevice("anna-soft")?.password, "given-pw-1");
    assert.equal(s.site?.version, 1);
    assert.ok(s.replaceBindings("anna-soft", [binding({ deviceId: "anna-soft", aor: "anna-soft" })]).ok);

    const second = s.applySite(site(2), [{ id: "anna-desk", username: "1001", kind: "physical", owner: "anna", mac: "80:5e:c0:00:00:01", displayName: "Anna desk" }]);
    assert.ok(second.ok);
    assert.deepEqual(second.value, { added: [], updated: ["anna-desk"], removed: ["anna-soft"], unchanged: [] });
    assert.equal(s.getDevice("anna-desk")?.password, desk.password, "password kept");
    assert.deepEqual(s.getDevice("anna-desk")?.provisioning, desk.provisioning, "provisioning kept");
    assert.equal(s.getDevice("anna-soft"), undefined);
    assert.equal(s.findDeviceByUsername("anna-soft"), undefined);
    assert.deepEqual(s.bindingsFor("anna-soft"), [], "bindings of a removed site device go too");
    assert.equal(s.getDevice("local-1")?.password, "local-pw-1");
    assert.equal(s.site?.version, 2);
    await s.close();
  });

  test("applySite: any problem changes nothing", async () => {
    const s = await Store.open(tmpDir(), { now: () => FIXED });
    assert.ok(s.addDevice({ id: "local-1", username: "9001", password: "local-pw-1", kind: "physical", mac: "80:5e:c0:00:00:09" }).ok);
    assert.ok(s.applySite(site(1), [{ id: "anna-desk", username: "1001", kind: "physical", owner: "anna" }]).ok);
    const before = JSON.stringify({ d: s.listDevices(), site: s.site });
    const cases: Array<[string, Parameters<Store["applySite"]>[1], RegExp]> = [
      ["username of a local device", [{ id: "x", username: "9001", kind: "soft", owner: "anna" }], /username "9001" is already used by local device "local-1"/],
      ["MAC of a local device", [{ id: "x", username: "1002", kind: "physical", owner: "anna", mac: "805ec0000009" }], /mac 805ec0000009 is already used by local device/],
      ["id of a local device", [{ id: "local-1", username: "1002", kind: "soft", owner: "anna" }], /id of a local device/],
      ["username twice in the snapshot", [{ id: "a", username: "1002", kind: "soft", owner: "anna" }, { id: "b", username: "1002", kind: "soft", owner: "anna" }], /devices\[1\]\.username "1002" is already used by devices\[0\]/],
      ["bad password", [{ id: "a", username: "1002", password: "\u0001", kind: "soft", owner: "anna" }], /password/],
    ];
    for (const [name, devices, re] of cases) {
      const r = s.applySite(site(2), devices);
      assert.equal(r.ok, false, name);
      assert.match((r as { error: { message: string } }).error.message, re, name);
      assert.equal(JSON.stringify({ d: s.listDevices(), site: s.site }), before, `${name}: nothing changed`);
    }
    const badRecord = s.applySite({ ...site(2), users: [{ id: "anna" } as never] }, []);
    assert.equal(badRecord.ok, false);
    assert.equal(JSON.stringify({ d: s.listDevices(), site: s.site }), before);
    await s.close();
  });

  test("applySite: a device repeated as stored is kept as it is (not rebuilt); a changed one is rebuilt; the result equals a full rebuild", async () => {
    const dir = tmpDir();
    const s = await Store.open(dir, { now: () => FIXED });
    const v1 = [
      { id: "desk", username: "1001", kind: "physical" as const, owner: "anna", mac: "805ec0000001", model: "yealink/t46u", displayName: "Desk" },
      { id: "soft", username: "anna-soft", password: "given-pw-1", kind: "soft" as const, owner: "anna" },
      { id: "colon-mac", username: "1003", kind: "physical" as const, owner: "anna", mac: "80:5E:C0:00:00:03" },
      { id: "renamed", username: "1004", kind: "soft" as const, owner: "anna", displayName: "Old name" },
      { id: "gone", username: "1005", kind: "soft" as const },
    ];
    assert.ok(s.applySite(site(1), v1).ok);
    const before = new Map(s.listDevices().map((d) => [d.id, d]));
    const v2 = [
      v1[0]!, // as stored
      { ...v1[1]!, password: undefined }, // no password: keeps the stored one
      v1[2]!, // MAC in another notation: the slow path, which finds it unchanged
      { ...v1[3]!, displayName: "New name" },
      { id: "new", username: "1006", kind: "soft" as const },
    ];
    const r = s.applySite(site(2), v2);
    assert.ok(r.ok, JSON.stringify(r));
    assert.deepEqual(r.value, { added: ["new"], updated: ["renamed"], removed: ["gone"], unchanged: ["desk", "soft", "colon-mac"] });
    assert.equal(s.getDevice("desk"), before.get("desk"), "kept, not rebuilt");
    assert.equal(s.getDevice("soft"), before.get("soft"), "kept, not rebuilt");
    assert.notEqual(s.getDevice("colon-mac"), before.get("colon-mac"), "rebuilt (another MAC notation)");
    assert.deepEqual(s.getDevice("colon-mac"), before.get("colon-mac"));
    assert.notEqual(s.getDevice("renamed"), before.get("renamed"), "rebuilt");
    assert.equal(s.getDevice("renamed")?.displayName, "New name");
    assert.equal(s.findDeviceByUsername("1001"), s.getDevice("desk"), "indexed");
    assert.equal(s.findDeviceByMac("805ec0000001"), s.getDevice("desk"), "indexed");
    // The same end state built from scratch (every device through buildDevice, with the
    // credentials the first store generated): the stored text is byte for byte the same.
    const dir2 = tmpDir();
    const t = await Store.open(dir2, { now: () => FIXED });
    const full = s.listDevices().map((d) => ({ id: d.id, username: d.username, password: d.password, kind: d.kind, ...(d.owner ? { owner: d.owner } : {}), ...(d.mac ? { mac: d.mac } : {}), ...(d.model ? { model: d.model } : {}), ...(d.displayName ? { displayName: d.displayName } : {}), ...(d.provisioning ? { provisioning: d.provisioning } : {}) }));
    assert.ok(t.applySite(site(2), full).ok);
    await s.close();
    await t.close();
    const data = (d: string): unknown => JSON.parse(fs.readFileSync(storeFilePath(d), "utf8")).data;
    assert.equal(JSON.stringify(data(dir)), JSON.stringify(data(dir2)));
  });

  test("applySite: a kept device still takes part in the duplicate checks, and a refused apply changes nothing", async () => {
    const s = await Store.open(tmpDir(), { now: () => FIXED });
    const desk = { id: "desk", username: "1001", kind: "physical" as const, owner: "anna", mac: "805ec0000001" };
    assert.ok(s.applySite(site(1), [desk]).ok);
    const snapshot = JSON.stringify({ d: s.listDevices(), site: s.site });
    const dupUser = s.applySite(site(2), [{ id: "other", username: "1001", kind: "soft" }, desk]);
    assert.equal(dupUser.ok, false);
    assert.match((dupUser as { error: { message: string } }).error.message, /devices\[1\]\.username "1001" is already used by devices\[0\]/);
    const dupMac = s.applySite(site(2), [{ id: "other", username: "1002", kind: "physical", mac: "80-5E-C0-00-00-01" }, desk]);
    assert.equal(dupMac.ok, false);
    assert.match((dupMac as { error: { message: string } }).error.message, /devices\[1\]\.mac 805ec0000001 is already used by devices\[0\]/);
    assert.equal(JSON.stringify({ d: s.listDevices(), site: s.site }), snapshot, "nothing changed");
    await s.close();
  });

  test("checkSiteRecord: a record made of parseSite's own output is not parsed again, and equals the full check; any other part is parsed", () => {
    const snap = siteSnapshot(7, { users: 20, devices: 0, groups: 5 });
    const parsed = parseSite({ users: snap.users, devices: [], groups: snap.groups, settings: { timeZone: "Europe/Berlin" }, knownCallers: [{ number: "+4930123456", userId: "u-3" }] });
    assert.ok(parsed.ok, JSON.stringify(parsed));
    const record = { version: 7, hash: "b".repeat(64), appliedAt: FIXED.toISOString(), source: "console" as const, settings: { pickupCode: "*8", timeZone: "Europe/Berlin" }, users: parsed.site.users, groups: parsed.site.groups, knownCallers: parsed.site.knownCallers };
    const fast = checkSiteRecord(record, "site");
    const full = checkSiteRecord(structuredClone(record), "site");
    assert.ok(fast.ok && full.ok);
    assert.equal(fast.value.users, parsed.site.users, "reused, not copied");
    assert.notEqual(full.value.users, parsed.site.users);
    assert.equal(JSON.stringify(fast.value), JSON.stringify(full.value), "the same record either way");
    // Parts that are not all of one parsed site are checked in full.
    const ghost = { ...parsed.site.groups[0]!, members: ["ghost"] };
    const mixed = checkSiteRecord({ ...record, groups: [ghost, ...parsed.site.groups.slice(1)] }, "site");
    assert.equal(mixed.ok, false);
    assert.match((mixed as { error: string }).error, /groups\[0\]\.members\[0\]/);
    assert.ok(!checkSiteRecord({ ...record, settings: { pickupCode: "*8", timeZone: "Mars/Olympus" } }, "site").ok, "another time zone: parsed, and refused");
    assert.equal(parsedSiteOf({ users: parsed.site.users, groups: parsed.site.groups }), undefined, "knownCallers left out: not the parsed site");
  });

  test("storeDataStringifier: the text JSON.stringify gives, with the operators' part kept while the array is the same", async () => {
    const stringify = storeDataStringifier();
    const ops = [{ userId: "anna", availability: "dnd", loggedOutOf: ["sales"], changedAt: 5, source: "phone", deviceId: "desk", pushed: { availability: "available", loggedOutOf: [] } }];
    const data: Record<string, unknown> = { devices: [{ id: "d", name: "é \u2028 \"q\"" }], gone: undefined, operators: ops, site: null, meta: { n: 1 } };
    assert.equal(stringify(data), JSON.stringify(data));
    assert.equal(stringify({ ...data, devices: [] }), JSON.stringify({ ...data, devices: [] }), "other parts are serialised afresh");
    const ops2 = [{ ...ops[0]!, availability: "away" }];
    assert.equal(stringify({ ...data, operators: ops2 }), JSON.stringify({ ...data, operators: ops2 }), "a new array: new text");
    assert.equal(stringify({ devices: [] }), JSON.stringify({ devices: [] }));
    assert.equal(stringify({ operators: [] }), JSON.stringify({ operators: [] }));
    // Through a store: operator states set, saved and read back, then replaced and saved again.
    const dir = tmpDir();
    const s = await Store.open(dir, { now: () => FIXED });
    assert.ok(s.applySite(site(1), []).ok);
    const st = { userId: "anna", availability: "away" as const, loggedOutOf: [], changedAt: 1, source: "console" as const, pushed: { availability: "available" as const, loggedOutOf: [] } };
    assert.ok(s.setOperatorStates([st]).ok);
    await s.flush();
    assert.ok(s.addDevice({ id: "x", username: "9001", password: "local-pw-1", kind: "soft" }).ok);
    await s.flush();
    assert.ok(s.setOperatorStates([{ ...st, availability: "dnd" }]).ok);
    await s.flush();
    const text = fs.readFileSync(storeFilePath(dir), "utf8");
    assert.equal(decodeEnvelope(text).kind, "envelope");
    const saved = JSON.parse(text).data;
    assert.equal(saved.operators[0].availability, "dnd");
    assert.equal(saved.devices.length, 1);
    await s.close();
  });

  test("keepsSiteDevice: only an input that would rebuild the stored record exactly", () => {
    const stored = { id: "d", username: "1001", password: "pw-1001-abc", kind: "physical" as const, owner: "anna", mac: "805ec0000001", model: "yealink/t46u", displayName: "Desk", createdAt: FIXED.toISOString(), origin: "site" as const, provisioning: { user: "pabc", password: "ppw", token: "tok" } };
    const same = { id: "d", username: "1001", kind: "physical" as const, owner: "anna", mac: "805ec0000001", model: "yealink/t46u", displayName: "Desk" };
    assert.equal(keepsSiteDevice(stored, same), true);
    assert.equal(keepsSiteDevice(stored, { ...same, password: "pw-1001-abc" }), true);
    const differs: Array<[string, Record<string, unknown>]> = [
      ["password", { password: "other-pw-1" }],
      ["username", { username: "1002" }],
      ["kind", { kind: "soft" }],
      ["owner", { owner: "bob" }],
      ["no owner", { owner: undefined }],
      ["model", { model: "yealink/t48u" }],
      ["displayName", { displayName: "Other" }],
      ["MAC notation", { mac: "80:5e:c0:00:00:01" }],
      ["no MAC", { mac: undefined }],
      ["credentials given", { provisioning: stored.provisioning }],
    ];
    for (const [name, over] of differs) assert.equal(keepsSiteDevice(stored, { ...same, ...over } as never), false, name);
    assert.equal(keepsSiteDevice({ ...stored, origin: "local" }, same), false, "a local device");
    assert.equal(keepsSiteDevice({ ...stored, provisioning: undefined }, same), false, "a MAC without credentials gets new ones");
    const { mac: _m, provisioning: _p, ...noMac } = stored;
    const { mac: _m2, ...sameNoMac } = same;
    assert.equal(keepsSiteDevice(noMac, sameNoMac), true);
    assert.equal(keepsSiteDevice({ ...noMac, provisioning: stored.provisioning }, sameNoMac), false, "credentials the slow path would drop");
  });

  test("the applied site survives reopening; a damaged site record is refused as corrupt", async () => {
    const dir = tmpDir();
    const s = await Store.open(dir, { now: () => FIXED });
    const group = { id: "sales", number: "600", name: "Sales", strategy: "evenly", members: ["anna"], ringCount: 3, checkAvailability: false, noAnswer: { kind: "hangup" }, pickup: { enabled: true } };
    assert.ok(s.applySite(site(4, [group]), []).ok);
    await s.close();
    const again = await Store.open(dir);
    assert.equal(again.site?.version, 4);
    assert.deepEqual(again.site?.groups, [group]);
    await again.close();
    const file = storeFilePath(dir);
    const env = JSON.parse(fs.readFileSync(file, "utf8"));
    env.data.site.groups[0].members = ["ghost"];
    fs.writeFileSync(file, encodeEnvelope(env.data, CURRENT_SCHEMA_VERSION, FIXED));
    await assert.rejects(Store.open(dir), (e: unknown) => e instanceof StoreCorruptError && /site\.groups\[0\]\.members\[0\]/.test(e.reason));
  });
});

describe("Store: schema version 3 (canonical phone models)", () => {
  const device = (id: string, model?: string): Record<string, unknown> => ({ id, username: id.slice(4), password: `pw-${id}-x`, kind: "physical", mac: `001565aa${id.slice(4).padStart(4, "0")}`, createdAt: FIXED.toISOString(), origin: "local", ...(model !== undefined ? { model } : {}) });
  const v2Data = (devices: Array<Record<string, unknown>>, seenPhones: Array<Record<string, unknown>> = []): Record<string, unknown> => ({
    devices,
    bindings: [],
    meta: { createdAt: FIXED.toISOString(), siteId: "hq" },
    routing: { evenlyLastOffered: {} },
    site: null,
    seenPhones,
    callLog: [],
  });
  const step = MIGRATIONS.find((m) => m.from === 2)!;
  /** A canonicaliser over a fixed table: T46U is Yealink's, X1 is known to two vendors. */
  const table: ModelCanonicaliser = (model, vendor) => {
    const key = model.toLowerCase();
    if ((key === "t46u" || key === "sip-t46u" || key === "yealink/t46u") && (vendor === undefined || vendor === "yealink")) return { ok: true, ref: "yealink/T46U" };
    if (key === "d735" || key === "snom/d735") return { ok: true, ref: "snom/D735" };
    if (key === "x1") return { ok: false, message: 'model "X1" is ambiguous: write one of a/X1, b/X1' };
    return { ok: false, message: `unknown model ${JSON.stringify(model)}` };
  };

  test("2→3 rewrites bare and alias model ids canonical, keeps canonical ones, leaves unknown and ambiguous ones and reports them", () => {
    assert.equal(step.to, 3);
    assert.equal(CURRENT_SCHEMA_VERSION, 3);
    const notes: string[] = [];
    const data = v2Data(
      [device("dev-201", "T46U"), device("dev-202", "SIP-T46U"), device("dev-203", "snom/D735"), device("dev-204", "T99Z"), device("dev-205", "X1"), device("dev-206")],
      [{ mac: "001565aabb01", ip: "192.0.2.9", vendor: "yealink", model: "T46U", firstSeen: FIXED.toISOString(), lastSeen: FIXED.toISOString(), requests: 1 }, { mac: "001565aabb02", ip: "192.0.2.9", vendor: "yealink", model: "T48G", firstSeen: FIXED.toISOString(), lastSeen: FIXED.toISOString(), requests: 1 }],
    );
    const before = structuredClone(data);
    const out = step.migrate(data, { now: FIXED, canonicalModel: table, report: (m) => notes.push(m) }) as { devices: Array<{ id: string; model?: string }>; seenPhones: Array<{ model?: string }> };
    assert.deepEqual(out.devices.map((d) => d.model), ["yealink/T46U", "yealink/T46U", "snom/D735", "T99Z", "X1", undefined]);
    assert.deepEqual(out.seenPhones.map((p) => p.model), ["yealink/T46U", "T48G"]);
    assert.deepEqual(notes, ['device "dev-204": model "T99Z" left as it was: unknown model "T99Z"', 'device "dev-205": model "X1" left as it was: model "X1" is ambiguous: write one of a/X1, b/X1']);
    assert.deepEqual(data, before, "the input is not modified");
    assert.ok(validateStoreData(out).ok, "the result is valid version-3 data");
    // Run again: nothing left to change.
    const twice = step.migrate(out, { now: FIXED, canonicalModel: table }) as { devices: Array<{ model?: string }> };
    assert.deepEqual(twice.devices.map((d) => d.model), out.devices.map((d) => d.model));
  });

  test("2→3 without a canonicaliser changes nothing and says so; malformed data is refused", () => {
    const notes: string[] = [];
    const data = v2Data([device("dev-201", "T46U")]);
    assert.deepEqual(step.migrate(data, { now: FIXED, report: (m) => notes.push(m) }), data);
    assert.match(notes[0]!, /left as they were/);
    assert.throws(() => step.migrate(null, { now: FIXED, canonicalModel: table }), MigrationError);
    assert.throws(() => step.migrate({ devices: "x" }, { now: FIXED, canonicalModel: table }), /devices is not an array/);
    assert.throws(() => step.migrate(v2Data([7 as never]), { now: FIXED, canonicalModel: table }), /devices\[0\] is not an object/);
  });

  test("opening a version-2 store migrates its phones' models with the shipped profiles, keeps .v2.bak and lists what it left", async () => {
    const dir = tmpDir();
    const file = storeFilePath(dir);
    const original = encodeEnvelope(v2Data([device("dev-201", "T46U"), device("dev-202", "vvx_411"), device("dev-203", "grandstream/GXP2170"), device("dev-204", "NoSuchPhone")]), 2, FIXED);
    fs.writeFileSync(file, original);
    const s = await Store.open(dir, { now: () => FIXED });
    assert.equal(s.openedFromVersion, 2);
    assert.equal(s.migrationBackup, `${file}.v2.bak`);
    assert.equal(fs.readFileSync(`${file}.v2.bak`, "utf8"), original);
    assert.deepEqual(s.listDevices().map((d) => d.model), ["yealink/T46U", "poly/VVX411", "grandstream/GXP2170", "NoSuchPhone"]);
    assert.equal(s.migrationNotes.length, 1);
    assert.match(s.migrationNotes[0]!, /dev-204.*"NoSuchPhone" left as it was: unknown model/);
    await s.close();
    assert.equal(JSON.parse(fs.readFileSync(file, "utf8")).schemaVersion, 3);
    const again = await Store.open(dir, { now: () => FIXED });
    assert.deepEqual(again.migrationNotes, [], "nothing migrated, nothing to report");
    await again.close();
  });
});

describe("Store: where devices authenticated from (optional authSources, no migration)", () => {
  test("kept newest first, at most a few per device, saved, restored, dropped with the device", async () => {
    const dir = tmpDir();
    const s = await Store.open(dir, { now: () => FIXED });
    assert.ok(s.addDevice(DEV).ok);
    assert.deepEqual(s.listAuthSources(), [], "a version-3 file without the field reads as nothing remembered");
    const t0 = FIXED.getTime();
    for (let i = 0; i < MAX_AUTH_SOURCES_PER_DEVICE + 2; i++) assert.deepEqual(s.noteAuthSource("dev-1001", `192.0.2.${10 + i}`, "udp", t0 + i), { ok: true, value: true });
    const list = s.listAuthSources();
    assert.equal(list.length, MAX_AUTH_SOURCES_PER_DEVICE);
    assert.equal(list[0]!.address, `192.0.2.${10 + MAX_AUTH_SOURCES_PER_DEVICE + 1}`, "newest first");
    // A refresh from a remembered address within the refresh interval changes nothing; later it moves to the front.
    const last = list[list.length - 1]!;
    assert.deepEqual(s.noteAuthSource("dev-1001", list[0]!.address, "udp", t0 + 1000), { ok: true, value: false });
    assert.deepEqual(s.noteAuthSource("dev-1001", last.address, "udp", t0 + AUTH_SOURCE_REFRESH_MS + 10), { ok: true, value: true });
    assert.equal(s.listAuthSources()[0]!.address, last.address);
    // Same address over another transport is its own entry.
    assert.ok(s.noteAuthSource("dev-1001", last.address, "tcp", t0 + AUTH_SOURCE_REFRESH_MS + 20).ok);
    assert.deepEqual(s.listAuthSources().slice(0, 2).map((a) => a.transport), ["tcp", "udp"]);
    // Bad input: clear error, nothing changed.
    const before = JSON.stringify(s.listAuthSources());
    for (const [dev, addr, tr, at] of [["dev-1001", "not-an-ip", "udp", t0], ["dev-1001", "192.0.2.1", "sctp", t0], ["dev-1001", "192.0.2.1", "udp", Number.NaN], ["", "192.0.2.1", "udp", t0]] as const) {
      const r = s.noteAuthSource(dev, addr, tr as "udp", at);
      assert.equal(r.ok, false);
      assert.equal(!r.ok && r.error.code, "invalid");
    }
    const unknown = s.noteAuthSource("nobody", "192.0.2.1", "udp", t0);
    assert.equal(!unknown.ok && unknown.error.code, "not-found");
    assert.equal(JSON.stringify(s.listAuthSources()), before);
    await s.close();
    const again = await Store.open(dir, { now: () => FIXED });
    assert.equal(JSON.stringify(again.listAuthSources()), before, "survives a restart");
    assert.ok(again.removeDevice("dev-1001"));
    assert.deepEqual(again.listAuthSources(), []);
    await again.close();
  });

  test("validateStoreData: authSources optional; bad entries are clear errors", () => {
    const base = { devices: [{ ...DEV, mac: "001565aabb01", createdAt: FIXED.toISOString() }], bindings: [], meta: { createdAt: FIXED.toISOString() }, routing: { evenlyLastOffered: {} }, site: null, seenPhones: [], callLog: [] };
    const ok = validateStoreData(base);
    assert.ok(ok.ok, ok.ok ? "" : ok.error);
    assert.equal(ok.ok && ok.data.authSources, undefined);
    const good = { deviceId: DEV.id, address: "2001:db8::1", transport: "udp", at: 1 };
    const withOne = validateStoreData({ ...base, authSources: [good] });
    assert.ok(withOne.ok && withOne.data.authSources?.length === 1);
    const cases: Array<[unknown, RegExp]> = [
      ["x", /authSources must be an array/],
      [[{ ...good, address: "host.example" }], /authSources\[0\]\.address must be an IP address/],
      [[{ ...good, transport: "tls" }], /authSources\[0\]\.transport/],
      [[{ ...good, at: -1 }], /authSources\[0\]\.at/],
      [[{ ...good, deviceId: "ghost" }], /names no device/],
      [[null], /authSources\[0\] must be an object/],
      [Array.from({ length: MAX_AUTH_SOURCES_PER_DEVICE + 1 }, (_, i) => ({ ...good, at: i })), /more than/],
    ];
    for (const [authSources, re] of cases) {
      const r = validateStoreData({ ...base, authSources });
      assert.equal(r.ok, false);
      assert.match(r.ok ? "" : r.error, re);
    }
  });
});
