// A site's own sounds (agent/media/site-sounds.ts, the site.ts prepare hook): files checked at
// apply time, URLs fetched from a loopback HTTP server (IP literal, never a DNS name), verified
// by SHA-256, cached under the data directory and used from the cache when the server is gone;
// and every kind of bad input refusing the apply with an error at its JSON path, changing nothing.
import { after, describe, it } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import path from "node:path";
import { EventBus } from "../../agent/bus.ts";
import { validatePayload } from "../../agent/contract.ts";
import { cachedSoundPath, checkSoundFile, ensureSound, fetchBytes, prepareSiteSounds, pruneSoundCache, sha256Of } from "../../agent/media/site-sounds.ts";
import { encodeWav } from "../../agent/media/wav.ts";
import { parseSite, type Group } from "../../agent/routing/model.ts";
import { SiteService } from "../../agent/site/site.ts";
import { Store } from "../../agent/store/store.ts";
import { tempDir } from "../tmpdir.ts";

const dir = tempDir("ringedge-sounds-");
const wav = encodeWav(Int16Array.from({ length: 4000 }, (_, i) => Math.round(3000 * Math.sin(i / 5))));
const wavSha = sha256Of(wav);
const good = path.join(dir, "good.wav");
fs.writeFileSync(good, wav);
const text = Buffer.from("RIFF but not really a wave file, just some text that goes on");
fs.writeFileSync(path.join(dir, "text.wav"), text);
const mp3ish = Buffer.from(wav);
mp3ish.writeUInt16LE(85, 20); // format 85: MPEG layer 3
fs.writeFileSync(path.join(dir, "mp3.wav"), mp3ish);
const LIMITS = { maxBytes: 64 * 1024, timeoutMs: 1500 };

// --- a loopback HTTP server with one route per behaviour ---------------------------------------------
const hits = new Map<string, number>();
const server = http.createServer((req, res) => {
  const route = (req.url ?? "").split("?")[0]!;
  hits.set(route, (hits.get(route) ?? 0) + 1);
  switch (route) {
    case "/good.wav":
      res.writeHead(200, { "content-type": "audio/wav", "content-length": wav.length }).end(wav);
      return;
    case "/text.wav":
      res.writeHead(200, { "content-type": "audio/wav" }).end(text);
      return;
    case "/missing.wav":
      res.writeHead(404).end("no");
      return;
    case "/moved.wav":
      res.writeHead(302, { location: "/good.wav" }).end();
      return;
    case "/huge-declared.wav":
      res.writeHead(200, { "content-length": String(LIMITS.maxBytes + 1) });
      res.write(wav.subarray(0, 100));
      return; // never ends: the declared length is refused first
    case "/huge-chunked.wav": {
      // No Content-Length: the size is caught while the body streams.
      res.writeHead(200, { "content-type": "audio/wav" });
      const chunk = Buffer.alloc(16 * 1024);
      let sent = 0;
      const more = (): void => {
        if (res.destroyed || sent > 4 * LIMITS.maxBytes) return void res.end();
        sent += chunk.length;
        res.write(chunk, more);
      };
      more();
      return;
    }
    case "/slow.wav":
      res.writeHead(200, { "content-type": "audio/wav" });
      res.write(wav.subarray(0, 44)); // then nothing: the deadline cuts it off
      return;
    default:
      res.writeHead(404).end();
  }
});
const sockets = new Set<import("node:net").Socket>();
server.on("connection", (s) => {
  sockets.add(s);
  s.on("close", () => sockets.delete(s));
});
await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
/** A port nothing listens on: bound, then closed. */
const deadPort = await new Promise<number>((resolve) => {
  const s = http.createServer().listen(0, "127.0.0.1", () => {
    const p = (s.address() as AddressInfo).port;
    s.close(() => resolve(p));
  });
});
after(async () => {
  for (const s of sockets) s.destroy();
  await new Promise<void>((r) => server.close(() => r()));
});

/** A wait-for-operator group naming sounds. */
function queueGroup(id: string, sounds: Record<string, unknown>): Group {
  return { id, number: String(100 + id.length), name: id, strategy: "sequential", members: [], ringCount: 1, checkAvailability: false, noAnswer: { kind: "wait-for-operator", maxWaitS: 10, then: { kind: "hangup" }, ...sounds } as Group["noAnswer"] };
}

describe("site sound files", () => {
  it("a readable WAV passes; missing, a directory, text, a compressed format and an oversize file are refused with the reason", () => {
    assert.equal(checkSoundFile(good), undefined);
    assert.match(checkSoundFile(path.join(dir, "nope.wav"))!, /cannot read .*ENOENT/);
    assert.match(checkSoundFile(dir)!, /is not a regular file/);
    assert.match(checkSoundFile(path.join(dir, "text.wav"))!, /not a WAV file the media plane plays: not a RIFF WAVE file/);
    assert.match(checkSoundFile(path.join(dir, "mp3.wav"))!, /format 85 is not linear PCM/);
    assert.match(checkSoundFile(good, 1000)!, /larger than 1000 bytes/);
  });
});

describe("site sounds fetched by URL", () => {
  it("fetched, verified and cached; then used from the cache without fetching, also when the server is unreachable", async () => {
    const data = tempDir("ringedge-sounds-data-");
    assert.equal(await ensureSound({ url: `${base}/good.wav`, sha256: wavSha }, data, LIMITS), undefined);
    const cached = cachedSoundPath(data, wavSha);
    assert.deepEqual(fs.readFileSync(cached), wav);
    const before = hits.get("/good.wav");
    assert.equal(await ensureSound({ url: `${base}/good.wav`, sha256: wavSha }, data, LIMITS), undefined);
    assert.equal(hits.get("/good.wav"), before, "the cached copy is used");
    assert.equal(await ensureSound({ url: `http://127.0.0.1:${deadPort}/good.wav`, sha256: wavSha }, data, LIMITS), undefined, "the console is away: the cache serves");
    // A cached file that was damaged is fetched again.
    fs.writeFileSync(cached, "damaged");
    assert.equal(await ensureSound({ url: `${base}/good.wav`, sha256: wavSha }, data, LIMITS), undefined);
    assert.deepEqual(fs.readFileSync(cached), wav);
  });

  it("wrong SHA-256, not a WAV, 404, a redirect, unreachable, too large (declared or streamed), too slow: refused, nothing cached", async () => {
    const data = tempDir("ringedge-sounds-data-");
    const other = "0".repeat(64);
    const cases: Array<[string, string, RegExp]> = [
      [`${base}/good.wav`, other, new RegExp(`has SHA-256 ${wavSha}, not the ${other}`)],
      [`${base}/text.wav`, sha256Of(text), /not a WAV file the media plane plays/],
      [`${base}/missing.wav`, wavSha, /HTTP 404/],
      [`${base}/moved.wav`, wavSha, /HTTP 302: redirects are not followed/],
      [`http://127.0.0.1:${deadPort}/good.wav`, wavSha, /cannot fetch .*ECONNREFUSED/],
      [`${base}/huge-declared.wav`, wavSha, /larger than 65536 bytes \(Content-Length 65537\)/],
      [`${base}/huge-chunked.wav`, wavSha, /larger than 65536 bytes$/],
      [`${base}/slow.wav`, wavSha, /no complete answer within 1500 ms/],
    ];
    for (const [url, sha, why] of cases) {
      const t0 = performance.now();
      const r = await ensureSound({ url, sha256: sha }, data, LIMITS);
      assert.match(r ?? "accepted", why, url);
      assert.ok(performance.now() - t0 < 5000, `${url} bounded in time`);
    }
    assert.deepEqual(fs.existsSync(path.join(data, "sounds")) ? fs.readdirSync(path.join(data, "sounds")) : [], [], "nothing cached");
    for (const bad of ["ftp://127.0.0.1/x.wav", "file:///etc/passwd", "not a url"]) assert.match((await fetchBytes(bad, LIMITS) as { reason: string }).reason, /not http or https|not a URL/, bad);
  });

  it("prepareSiteSounds: errors at each sound's JSON path; a file named twice is looked at once", async () => {
    const data = tempDir("ringedge-sounds-data-");
    const groups = [
      queueGroup("a", { music: { path: good }, prompt: { path: path.join(dir, "text.wav") } }),
      queueGroup("bb", { music: { url: `${base}/good.wav?twice`, sha256: wavSha }, prompt: { url: `${base}/good.wav?twice`, sha256: wavSha } }),
      // (With wavSha it would be served from the cache bb filled: the cache is by content.)
      queueGroup("ccc", { music: { url: `${base}/missing.wav`, sha256: "1".repeat(64) } }),
    ];
    const before = hits.get("/good.wav") ?? 0;
    const errors = await prepareSiteSounds(groups, data, LIMITS);
    assert.deepEqual(errors.map((e) => `${e.code} ${e.path}`), ["invalid-sound groups[0].noAnswer.prompt.path", "invalid-sound groups[2].noAnswer.music.url"]);
    assert.equal(hits.get("/good.wav"), before + 1, "one fetch for the URL named twice");
    assert.equal(pruneSoundCache(data, [groups[0]!]), 1, "the cache keeps only what groups name");
    assert.equal(pruneSoundCache(data, groups), 0);
  });
});

describe("site sounds in the site file and console pushes", () => {
  const EXAMPLE = JSON.parse(fs.readFileSync(new URL("../../examples/site.json", import.meta.url), "utf8")) as Record<string, any>;
  const withSounds = (version: number, sounds: Record<string, unknown>): Record<string, any> => {
    const s = structuredClone(EXAMPLE);
    s.version = version;
    Object.assign(s.groups[0].noAnswer, sounds);
    return s;
  };

  it("bad shapes are refused by the contract and the routing model with their paths", () => {
    const bad: Array<[Record<string, unknown>, string]> = [
      [{ music: { path: "relative/file.wav" } }, "groups[0].noAnswer.music.path"],
      [{ music: { url: "ftp://127.0.0.1/x.wav", sha256: wavSha } }, "groups[0].noAnswer.music.url"],
      [{ music: { url: `${base}/x.wav`, sha256: "ABC" } }, "groups[0].noAnswer.music.sha256"],
      [{ music: { url: `${base}/x.wav` } }, "groups[0].noAnswer.music"],
      [{ prompt: { path: good, url: `${base}/x.wav` } }, "groups[0].noAnswer.prompt"],
      [{ prompt: "hold.wav" }, "groups[0].noAnswer.prompt"],
      [{ announcePosition: "yes" }, "groups[0].noAnswer.announcePosition"],
    ];
    for (const [sounds, at] of bad) {
      const site = withSounds(2, sounds);
      const v = validatePayload("siteConfig", site);
      assert.equal(v.ok, false, JSON.stringify(sounds));
      const m = parseSite({ ...site, devices: site.devices.map((d: Record<string, unknown>) => ({ id: d.id, ownerId: d.owner, kind: d.kind })) });
      assert.equal(m.ok, false, JSON.stringify(sounds));
      assert.ok(!m.ok && m.errors.some((e) => e.path.startsWith(at)), `${JSON.stringify(sounds)}: ${JSON.stringify(!m.ok && m.errors)}`);
    }
    assert.deepEqual(validatePayload("siteConfig", withSounds(2, { announcePosition: true, music: { path: good }, prompt: { url: `${base}/x.wav`, sha256: wavSha } })), { ok: true });
  });

  it("apply: a bad sound refuses the whole snapshot and changes nothing; a good one is in place before the apply resolves", async () => {
    const data = tempDir("ringedge-sounds-store-");
    const store = await Store.open(data);
    const bus = new EventBus();
    const applied: number[] = [];
    bus.on("site.applied", (e) => void applied.push(e.version));
    const svc = new SiteService({ store, bus, prepare: (c) => prepareSiteSounds(c.site.groups, data, LIMITS) });
    svc.start();
    assert.equal((await svc.apply(withSounds(1, {}), "file")).ok, true);
    for (const [sounds, at, why] of [
      [{ music: { path: path.join(dir, "mp3.wav") } }, "groups[0].noAnswer.music.path", /format 85/],
      [{ prompt: { url: `${base}/good.wav`, sha256: "f".repeat(64) } }, "groups[0].noAnswer.prompt.url", /has SHA-256/],
      [{ music: { url: `http://127.0.0.1:${deadPort}/x.wav`, sha256: wavSha.replace(/^./, "0") } }, "groups[0].noAnswer.music.url", /ECONNREFUSED/],
    ] as const) {
      const r = await svc.apply(withSounds(2, sounds), "console");
      assert.equal(r.ok, false);
      assert.ok(!r.ok && r.errors.length === 1 && r.errors[0]!.path === at && why.test(r.errors[0]!.message), JSON.stringify(r));
      assert.equal(svc.current().record!.version, 1, "nothing applied");
    }
    assert.deepEqual(applied, [1]);
    const r = await svc.apply(withSounds(2, { music: { url: `${base}/good.wav`, sha256: wavSha }, announcePosition: true }), "console");
    assert.ok(r.ok, JSON.stringify(r));
    assert.ok(fs.existsSync(cachedSoundPath(data, wavSha)), "the sound is cached when the apply resolves");
    const g = svc.current().index.groupsById.get(EXAMPLE.groups[0].id)!;
    assert.deepEqual(g.noAnswer, { ...EXAMPLE.groups[0].noAnswer, music: { url: `${base}/good.wav`, sha256: wavSha }, announcePosition: true });
    await store.close?.();
  });
});
