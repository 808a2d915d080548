// The idle collection (agent/appliance/idle-gc.ts): once the signalling has been quiet for
// longer than a transaction lingers, while V8 holds well more heap than is in use, one full
// collection per look for as long as each gives pages back; a site's keep-alive trickle is quiet,
// a burst is not; nothing without a collector.
import assert from "node:assert/strict";
import { test } from "node:test";
import { execFileSync } from "node:child_process";
import { DEFAULT_IDLE_GC, IdleCollector, exposedGc, shouldCollect } from "../../agent/appliance/idle-gc.ts";

const MB = 1 << 20;

test("shouldCollect: quiet long enough, a large heap or slack enough, the spell not over", () => {
  const p = DEFAULT_IDLE_GC;
  const ok = { quietForMs: 40_000, spellDone: false, collectionsThisSpell: 0, heapTotal: 60 * MB, heapUsed: 45 * MB };
  assert.equal(shouldCollect(ok, p), true);
  assert.equal(shouldCollect({ ...ok, quietForMs: 20_000 }, p), false, "the burst's transactions still linger (Timer J)");
  // The first collection of a spell: "in use" still counts garbage, so a large heap is reason enough.
  assert.equal(shouldCollect({ ...ok, heapTotal: 55.4 * MB, heapUsed: 47.6 * MB }, p), true, "55 MB held, 7.8 MB slack: the spell's first");
  assert.equal(shouldCollect({ ...ok, heapTotal: 24 * MB, heapUsed: 20 * MB }, p), false, "a small heap with 4 MB of slack is not worth it");
  assert.equal(shouldCollect({ ...ok, heapTotal: 24 * MB, heapUsed: 14 * MB }, p), true, "a small heap, 10 MB of slack");
  // Later ones: a collection has run, "in use" is live, the slack decides.
  assert.equal(shouldCollect({ ...ok, collectionsThisSpell: 1, heapUsed: 56 * MB }, p), false, "4 MB of slack after a collection is not worth another");
  assert.equal(shouldCollect({ ...ok, collectionsThisSpell: 1 }, p), true);
  assert.equal(shouldCollect({ ...ok, spellDone: true }, p), false, "the last one gave little back");
  assert.equal(shouldCollect({ ...ok, collectionsThisSpell: p.maxPerSpell }, p), false, "bounded per spell");
  assert.equal(shouldCollect({ ...ok, quietForMs: Number.NaN }, p), false);
});

test("IdleCollector: a burst, then a keep-alive trickle: collections from 35 s into the quiet while they give pages back, again only after the next burst", () => {
  let messages = 0;
  let now = 0;
  // A fragmented heap: each collection frees the garbage and compacts part of what V8 holds.
  const heap = { total: 30 * MB, used: 20 * MB };
  const seen: Array<[number, number]> = [];
  const compacting = (): void => {
    heap.used = 20 * MB;
    heap.total = Math.max(26 * MB, heap.total - 10 * MB);
  };
  let gcImpl = compacting;
  const c = new IdleCollector({
    messages: () => messages,
    heap: () => ({ ...heap }),
    now: () => now,
    gc: () => gcImpl(),
    onCollect: (before, after) => seen.push([before / MB, after / MB]),
  });
  assert.equal(c.available, true);
  c.reset();
  const step = (perS: number): boolean => {
    now += 5_000;
    messages += perS * 5;
    return c.check();
  };
  // The burst: 2,000 registrations a second for 5 s; the heap grows.
  heap.total = 60 * MB;
  heap.used = 47 * MB;
  assert.equal(step(2000), false);
  // Then 60 messages a second (keep-alives): quiet. Nothing for 35 s, then a collection per look
  // while V8 holds 8 MB more than is in use: 60 → 50 → 40 → 30 → 26.
  const quiet: number[] = [];
  for (let i = 0; i < 16; i++) if (step(60)) quiet.push(i);
  assert.deepEqual(quiet, [6, 7, 8, 9], "from the look 35 s into the quiet, while there is slack");
  assert.deepEqual(seen, [[60, 50], [50, 40], [40, 30], [30, 26]]);
  // Slack again in the same spell, but a collection that gives nothing back ends the spell.
  heap.used = 24 * MB;
  heap.total = 40 * MB;
  const before = c.count;
  gcImpl = () => void (heap.used = 24 * MB);
  assert.equal(step(60), true, "collected: 40 MB held, 24 used");
  for (let i = 0; i < 5; i++) assert.equal(step(60), false, "it gave nothing back: the spell's collections are over");
  assert.equal(c.count, before + 1);
  gcImpl = compacting;
  // A new burst ends the spell; the next quiet spell collects again.
  assert.equal(step(3000), false);
  let again = 0;
  for (let i = 0; i < 9; i++) if (step(10)) again++;
  assert.ok(again >= 1);
  assert.equal(c.count, 5 + again);
});

test("without a collector (gc not exposed) it does nothing; a throwing collector is survived and not retried", () => {
  const none = new IdleCollector({ messages: () => 0, heap: () => ({ total: 100 * MB, used: 10 * MB }) });
  assert.equal(none.available, false);
  none.start();
  none.stop();
  let now = 0;
  let tries = 0;
  const bad = new IdleCollector({
    messages: () => 0,
    heap: () => ({ total: 100 * MB, used: 10 * MB }),
    now: () => now,
    gc: () => {
      tries++;
      throw new Error("boom");
    },
  });
  bad.reset();
  let collected = false;
  for (let i = 0; i < 20; i++) {
    now += 5_000;
    collected = bad.check() || collected;
  }
  assert.equal(collected, false);
  assert.equal(tries, 1);
  assert.equal(typeof exposedGc() === "function", typeof (globalThis as { gc?: unknown }).gc === "function");
});

test("the idle collection compacts every page: a fragmented heap gives back far more than a plain full collection does", () => {
  // Each in a child with gc exposed: 600,000 small objects, every fourth kept (pages a quarter full).
  const held = (how: "plain" | "idle"): number => {
    const script = `
      const { exposedGc } = await import(${JSON.stringify(new URL("../../agent/appliance/idle-gc.ts", import.meta.url).href)});
      const build = () => { const keep = [], all = []; for (let i = 0; i < 600000; i++) all.push({ a: i, b: "x" + i, c: [i, i + 1] }); for (let i = 0; i < all.length; i += 4) keep.push(all[i]); return keep; };
      const keep = build();
      setTimeout(() => {
        const collect = ${JSON.stringify(how)} === "idle" ? exposedGc() : () => gc();
        for (let k = 0; k < 3; k++) collect();
        console.log(JSON.stringify({ heapTotal: process.memoryUsage().heapTotal, kept: keep.length }));
      }, 50);
    `;
    const out = execFileSync(process.execPath, ["--expose-gc", "--max-semi-space-size=4", "--import", "tsx", "--input-type=module", "-e", script], { encoding: "utf8", timeout: 60_000 });
    const r = JSON.parse(out) as { heapTotal: number; kept: number };
    assert.equal(r.kept, 150_000);
    return r.heapTotal;
  };
  const plain = held("plain");
  const idle = held("idle");
  assert.ok(idle < plain * 0.8, `compacted: ${(idle / MB).toFixed(1)} MB held against ${(plain / MB).toFixed(1)} MB after plain collections`);
});
