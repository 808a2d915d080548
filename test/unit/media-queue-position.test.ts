// The sounds that say a caller's place in the queue (agent/media/queue-position.ts), and that
// every one of them ships in audio/ as a WAV the media plane plays.
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { MAX_SPOKEN_POSITION, NUMBER_WORDS, numberSound, numberSounds, POSITION_SOUND, positionSoundFiles, positionSounds } from "../../agent/media/queue-position.ts";
import { decodeWav } from "../../agent/media/wav.ts";

const ROOT = path.resolve(import.meta.dirname, "../..");

describe("queue position prompts", () => {
  it("1-20 are one word, 21-99 tens then units, round tens one word", () => {
    assert.deepEqual(numberSounds(1), [numberSound(1)]);
    assert.deepEqual(numberSounds(13), [numberSound(13)]);
    assert.deepEqual(numberSounds(20), [numberSound(20)]);
    assert.deepEqual(numberSounds(21), [numberSound(20), numberSound(1)]);
    assert.deepEqual(numberSounds(70), [numberSound(70)]);
    assert.deepEqual(numberSounds(99), [numberSound(90), numberSound(9)]);
  });

  it("every number 1-99 is said with shipped words only; other values are not said", () => {
    const words = new Set(NUMBER_WORDS.map(numberSound));
    for (let n = 1; n <= MAX_SPOKEN_POSITION; n++) for (const s of numberSounds(n)!) assert.ok(words.has(s), `${n}: ${s}`);
    for (const bad of [0, -1, 100, 2.5, Number.NaN, Infinity]) assert.equal(numberSounds(bad), undefined, String(bad));
    assert.deepEqual(positionSounds(undefined), []);
    assert.deepEqual(positionSounds(100), []);
    assert.deepEqual(positionSounds(3), [POSITION_SOUND, numberSound(3)]);
  });

  it("each prompt ships as an 8 kHz mono 16-bit WAV the media plane plays", () => {
    const files = positionSoundFiles((name) => path.join(ROOT, "audio", name));
    assert.equal(Object.keys(files).length, NUMBER_WORDS.length + 1);
    for (const [sound, file] of Object.entries(files)) {
      const bytes = fs.readFileSync(file);
      const r = decodeWav(bytes);
      assert.ok(r.ok, `${sound}: ${r.ok ? "" : r.reason}`);
      assert.equal(r.sourceRate, 8000, sound);
      assert.equal(r.channels, 1, sound);
      assert.ok(r.samples.length > 8000 * 0.2 && r.samples.length < 8000 * 3, `${sound}: ${r.samples.length} samples`);
    }
  });
});
