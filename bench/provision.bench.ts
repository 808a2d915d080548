// Provisioning benchmark: configs served per second (the decision + render alone, and over real
// HTTP on 127.0.0.1 with keep-alive), and the time to import 1,000 phones from a CSV into a real
// store (parse, check every row, add, flush to disk).
// Run: node --import tsx bench/provision.bench.ts   → bench/results/provision.json
import fs from "node:fs";
import http from "node:http";
import os from "node:os";
import path from "node:path";
import { performance } from "node:perf_hooks";
import { createLogger } from "../agent/log.ts";
import { Store } from "../agent/store/store.ts";
import { parsePhoneCsv } from "../provisioning/csv.ts";
import { FirmwareStore } from "../provisioning/firmware.ts";
import { phoneCommands } from "../provisioning/installer.ts";
import { loadProfiles } from "../provisioning/profiles.ts";
import { ProvisioningServer } from "../provisioning/server.ts";
import { StoreDirectory } from "../provisioning/store-directory.ts";
import { fmt, machine, round, table, writeResult } from "./lib.ts";
import { tempDir } from "../test/tmpdir.ts";

const PHONES = 1000;
const DECISIONS = 20_000;
const HTTP_REQUESTS = 5_000;
const HTTP_CONCURRENCY = 16;

const { profiles } = loadProfiles(path.join(path.dirname(new URL(import.meta.url).pathname), "../device-profiles"));
const log = createLogger("silent");

function csvOf(n: number): string {
  const lines = ["mac,model,extension,name,owner"];
  for (let i = 0; i < n; i++) lines.push(`001565${i.toString(16).padStart(6, "0")},T46U,${2000 + i},Desk ${i},`);
  return lines.join("\n") + "\n";
}

async function importBench(dir: string): Promise<{ ms: number; parseMs: number; store: Store }> {
  const store = await Store.open(dir, { siteId: "bench" });
  const text = csvOf(PHONES);
  const t0 = performance.now();
  const parsed = parsePhoneCsv(text, profiles);
  const t1 = performance.now();
  if (parsed.errors.length) throw new Error(`bench CSV has errors: ${parsed.errors[0]!.message}`);
  const cmds = phoneCommands({ store });
  const r = (await cmds["phone.import"]!({ rows: parsed.rows, dryRun: false })) as { applied: number };
  const t2 = performance.now();
  if (r.applied !== PHONES) throw new Error(`imported ${r.applied}`);
  return { ms: t2 - t0, parseMs: t1 - t0, store };
}

async function main(): Promise<void> {
  const dir = tempDir("ringedge-bench-prov-");
  try {
    const imp = await importBench(dir);
    const store = imp.store;
    const directory = new StoreDirectory(store);
    const server = new ProvisioningServer({
      profiles,
      directory,
      firmware: new FirmwareStore({ dir: undefined }),
      site: () => ({ sipPort: 5060, transport: "udp", ntpServer: "pool.ntp.org", timeZone: "Europe/Berlin", resyncIntervalMin: 1440 }),
      log,
      bootstrapWindowMs: 0,
      // The benchmark is one source asking fast: no burst limit in the way.
      burst: { max: 1_000_000_000, windowMs: 1000, blockMs: 0 },
      http: { host: "127.0.0.1", port: 0 },
    });
    const phones = directory.phones();
    const targets = phones.map((p) => ({ url: `/p/${p.provisioning!.token}/${p.mac}.cfg`, ua: `Yealink SIP-T46U 108.86.0.75 ${p.mac}` }));

    // 1. Decision + render, no sockets: full per-device config through the token path.
    for (let i = 0; i < 2000; i++) server.handle({ method: "GET", url: targets[i % PHONES]!.url, userAgent: targets[i % PHONES]!.ua, hasBody: false, source: "10.0.0.20", local: { address: "10.0.0.5", port: 8080, scheme: "http" } });
    let t = performance.now();
    for (let i = 0; i < DECISIONS; i++) {
      const x = targets[i % PHONES]!;
      const r = server.handle({ method: "GET", url: x.url, userAgent: x.ua, hasBody: false, source: "10.0.0.20", local: { address: "10.0.0.5", port: 8080, scheme: "http" } });
      if (r.status !== 200) throw new Error(`status ${r.status}`);
    }
    const handleMs = performance.now() - t;

    // 2. Over HTTP on loopback, keep-alive, a few requests in flight.
    await server.start();
    const port = server.addresses()[0]!.port;
    const agent = new http.Agent({ keepAlive: true, maxSockets: HTTP_CONCURRENCY });
    const one = (i: number): Promise<void> =>
      new Promise((resolve, reject) => {
        const x = targets[i % PHONES]!;
        http
          .get({ host: "127.0.0.1", port, path: x.url, headers: { "user-agent": x.ua }, agent }, (res) => {
            res.resume();
            res.on("end", () => (res.statusCode === 200 ? resolve() : reject(new Error(`status ${res.statusCode}`))));
          })
          .on("error", reject);
      });
    let next = 0;
    const run = async (n: number): Promise<void> => {
      next = 0;
      await Promise.all(Array.from({ length: HTTP_CONCURRENCY }, async () => {
        while (next < n) await one(next++);
      }));
    };
    await run(500);
    t = performance.now();
    await run(HTTP_REQUESTS);
    const httpMs = performance.now() - t;
    agent.destroy();
    await server.stop();
    await store.close();

    const result = {
      machine: machine(),
      phones: PHONES,
      import1000Ms: round(imp.ms, 1),
      import1000ParseMs: round(imp.parseMs, 1),
      handlePerSec: Math.round(DECISIONS / (handleMs / 1000)),
      handleUsPerConfig: round((handleMs * 1000) / DECISIONS, 1),
      httpPerSec: Math.round(HTTP_REQUESTS / (httpMs / 1000)),
      httpConcurrency: HTTP_CONCURRENCY,
      note: "Full Yealink per-device config via the token path (identify + lookup + render + seen-phone note). import = parse CSV + check rows + add devices + flush the store to disk.",
    };
    const file = writeResult("provision", result);
    console.log(
      table(
        ["provisioning", "figure"],
        [
          ["configs/s (decision + render, in process)", fmt(result.handlePerSec)],
          ["µs per config (in process)", fmt(result.handleUsPerConfig, 1)],
          [`configs/s over HTTP (keep-alive, ${HTTP_CONCURRENCY} in flight)`, fmt(result.httpPerSec)],
          [`import ${PHONES} phones from CSV (ms, incl. disk flush)`, fmt(result.import1000Ms, 1)],
          ["  of which CSV parse + row checks (ms)", fmt(result.import1000ParseMs, 1)],
        ],
      ),
    );
    console.log(`written ${file}`);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

await main();
