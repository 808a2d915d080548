// The first-fork latency histogram: log-linear buckets, percentiles within the bucket
// precision (≤ 1/32 relative), exact max and over-budget count, hostile samples ignored.
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { LatencyHistogram, MAX_TRACKABLE_US } from "../../agent/routing/latency.ts";

/** Within the histogram's relative precision (one sub-bucket of 32 per power of two). */
function near(actual: number, expected: number): void {
  assert.ok(actual >= expected && actual <= expected * (1 + 1 / 32) + 1, `${actual} not within 1/32 above ${expected}`);
}

describe("LatencyHistogram", () => {
  it("is empty at first", () => {
    assert.deepEqual(new LatencyHistogram(2000).summary(), { count: 0, p50Us: 0, p99Us: 0, maxUs: 0, overBudget: 0, budgetUs: 2000 });
  });

  it("small values are exact", () => {
    const h = new LatencyHistogram(2000);
    for (let v = 1; v <= 31; v++) h.record(v);
    assert.equal(h.percentile(50), 16);
    assert.equal(h.percentile(100), 31);
  });

  it("p50 / p99 / max of 1..10000 µs, and the count over a 2 ms budget", () => {
    const h = new LatencyHistogram(2000);
    for (let v = 1; v <= 10_000; v++) h.record(v);
    const s = h.summary();
    assert.equal(s.count, 10_000);
    near(s.p50Us, 5000);
    near(s.p99Us, 9900);
    assert.equal(s.maxUs, 10_000);
    assert.equal(s.overBudget, 8000);
  });

  it("a skewed distribution: p99 catches the tail, p50 does not", () => {
    const h = new LatencyHistogram(2000);
    for (let i = 0; i < 980; i++) h.record(150);
    for (let i = 0; i < 20; i++) h.record(4000);
    near(h.percentile(50), 150);
    near(h.percentile(99), 4000);
    assert.equal(h.summary().overBudget, 20);
  });

  it("percentiles never exceed the exact maximum", () => {
    const h = new LatencyHistogram(2000);
    h.record(1000);
    assert.equal(h.percentile(99), 1000);
  });

  it("ignores negative and non-finite samples; clamps huge ones; rounds fractions", () => {
    const h = new LatencyHistogram(2000);
    h.record(-5);
    h.record(Number.NaN);
    h.record(Number.POSITIVE_INFINITY);
    assert.equal(h.summary().count, 0);
    h.record(1e15);
    assert.equal(h.summary().maxUs, MAX_TRACKABLE_US);
    assert.equal(h.percentile(50), MAX_TRACKABLE_US);
    h.reset();
    h.record(12.4);
    assert.equal(h.summary().maxUs, 12);
  });

  it("every bucket boundary maps back inside its bucket", () => {
    const h = new LatencyHistogram(0);
    for (let e = 5; e <= 30; e++) {
      for (const v of [2 ** e, 2 ** e + 1, 2 ** (e + 1) - 1]) {
        if (v > MAX_TRACKABLE_US) continue;
        h.reset();
        h.record(v);
        h.record(MAX_TRACKABLE_US); // so the max does not clamp the percentile
        const got = h.percentile(50);
        assert.ok(got >= v && got <= v * (1 + 1 / 32), `v=${v} got=${got}`);
      }
    }
  });
});
