// The media worker's two additions for greetings and menus, over real UDP on loopback: a sound
// loaded after the worker started (a site's prompt file), reloaded by a worker that restarts;
// and `stop`, which silences a session at once (a caller's key cutting a prompt short) without
// a play-ended event, the session staying open for the next prompt.
import { after, describe, it } from "node:test";
import assert from "node:assert/strict";
import dgram from "node:dgram";
import fs from "node:fs";
import path from "node:path";
import { parseRtp } from "../../agent/media/rtp.ts";
import { MediaService } from "../../agent/media/service.ts";
import { encodeWav } from "../../agent/media/wav.ts";
import { createLogger } from "../../agent/log.ts";
import { sleep, until } from "../e2e/harness.ts";
import { freeMediaPorts } from "../media-ports.ts";
import { tempDir } from "../tmpdir.ts";

const dir = tempDir("ringedge-media-stop-");
const wav = path.join(dir, "long.wav");
// 3 s of a tone: long enough that it is still playing when stopped.
fs.writeFileSync(wav, encodeWav(Int16Array.from({ length: 24000 }, (_, i) => Math.round(3000 * Math.sin((2 * Math.PI * 523 * i) / 8000)))));

describe("media worker: load after start, and stop", () => {
  let svc: MediaService | undefined;
  const socks: dgram.Socket[] = [];
  after(async () => {
    for (const s of socks) s.close();
    await svc?.stop();
  });

  it("a sound loaded later plays; stop silences the session at once with no play-ended; the session plays again after", async () => {
    const ports = await freeMediaPorts(6);
    svc = new MediaService({ portMin: ports.min, portMax: ports.max, log: createLogger("silent"), openTimeoutMs: 30_000 });
    svc.start();
    svc.preload("later", wav);
    svc.preload("missing", path.join(dir, "nope.wav"));
    await until(() => svc!.has("later") || undefined, 60_000, 20);
    assert.equal(svc.has("missing"), false);
    const rx = dgram.createSocket("udp4");
    socks.push(rx);
    await new Promise<void>((r) => rx.bind(0, "127.0.0.1", r));
    const got: number[] = [];
    rx.on("message", (b) => {
      if (parseRtp(b).ok) got.push(performance.now());
    });
    const ended: string[] = [];
    const r = await svc.openSession({ address: "127.0.0.1", law: "PCMU", payloadType: 0, telephoneEvent: undefined, remoteAddress: "127.0.0.1", remotePort: rx.address().port, direction: "sendrecv" }, { onPlayEnded: (s) => ended.push(s) });
    assert.ok(r.ok, r.ok ? "" : r.reason);
    svc.play(r.id, "later", false);
    await until(() => got.length >= 10 || undefined, 10_000, 5);
    svc.stopPlaying(r.id);
    const stoppedAt = performance.now();
    await sleep(400);
    const late = got.filter((t) => t > stoppedAt + 150).length;
    assert.equal(late, 0, `${late} packets after stop`);
    assert.deepEqual(ended, [], "a stopped sound reports no end");
    assert.equal(svc.sessionCount(), 1, "the session stays open");
    const before = got.length;
    svc.play(r.id, "later", false);
    await until(() => got.length >= before + 5 || undefined, 5000, 5);
    // stop of an unknown session, and before anything plays: nothing happens.
    svc.stopPlaying("m-unknown");
    svc.close(r.id);
    await until(() => svc!.sessionCount() === 0 || undefined, 5000, 10);
  });

  it("a worker that dies and restarts loads the later sound again", async () => {
    await (svc as unknown as { worker: { terminate(): Promise<number> } }).worker.terminate();
    await until(() => !svc!.has("later") || undefined, 5000, 10);
    const again = await svc!.openSession({ address: "127.0.0.1", law: "PCMU", payloadType: 0, telephoneEvent: undefined, remoteAddress: "127.0.0.1", remotePort: 5004, direction: "sendrecv" }, {});
    assert.ok(again.ok, again.ok ? "" : again.reason);
    await until(() => svc!.has("later") || undefined, 60_000, 20);
    svc!.close(again.id);
    await until(() => svc!.sessionCount() === 0 || undefined, 5000, 10);
  });
});
