import { EventBus } from "/work/main/agent/bus.ts";
import { SiteService, checkSiteConfig } from "/work/main/agent/site/site.ts";
import { Store } from "/work/main/agent/store/store.ts";
import { configHash, judgeDesired } from "/work/main/agent/sync/mqtt-sync.ts";
import { desiredEnvelope, siteSnapshot } from "/work/main/test/e2e/mqtt-fixtures.ts";
import fs from "node:fs"; import os from "node:os"; import path from "node:path";
const BIG = { users: 500, devices: 600, groups: 100 };
const dir = fs.mkdtempSync(path.join(os.tmpdir(), "ps-"));
const store = await Store.open(dir, { siteId: "s", saveDelayMs: 1 });
const site = new SiteService({ store, bus: new EventBus() }); site.start();
const t: Record<string, number[]> = {};
for (const m of ["applySite", "flush"] as const) {
  const orig = (store as any)[m].bind(store);
  (store as any)[m] = (...args: unknown[]) => { const a = performance.now(); const r = orig(...args); if (r && typeof r.then === "function") return r.then((x: unknown) => { (t[m] ??= []).push(performance.now() - a); return x; }); (t[m] ??= []).push(performance.now() - a); return r; };
}
const time = <T>(k: string, f: () => T): T => { const a = performance.now(); const r = f(); (t[k] ??= []).push(performance.now() - a); return r; };
for (let v = 1; v <= 40; v++) {
  const payload = Buffer.from(JSON.stringify(desiredEnvelope("s", siteSnapshot(v, BIG))));
  const verdict = time("judge", () => judgeDesired(payload, { siteId: "s", appliedVersion: v - 1, appliedHash: null, maxBytes: 1e7 }));
  if (verdict.kind !== "apply") throw new Error(JSON.stringify(verdict).slice(0, 300));
  time("hash", () => configHash(verdict.config));
  time("check", () => checkSiteConfig(verdict.config, store.listDevices()));
  const a = performance.now();
  const r = await site.apply(verdict.config, "console");
  (t.apply ??= []).push(performance.now() - a);
  if (!r.ok) throw new Error("apply");
}
for (const [k, xs] of Object.entries(t)) { const s = xs.slice(5).sort((a, b) => a - b); console.log(k.padEnd(8), "p50", s[s.length >> 1].toFixed(2), "ms  first", xs[0].toFixed(1)); }
await store.close();
