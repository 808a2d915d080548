// Queue figures per group (agent/routing/queue-stats.ts): counts by how calls left, the median
// and longest wait of answered calls, the length now, bounded samples, reset.
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { MAX_WAIT_SAMPLES, median, QueueStatistics } from "../../agent/routing/queue-stats.ts";

describe("queue statistics", () => {
  it("counts joins and each way of leaving; median and longest wait of the answered ones", () => {
    const q = new QueueStatistics();
    assert.equal(q.isEmpty(), true);
    for (let i = 0; i < 5; i++) q.joined("g1");
    q.left("g1", "answered", 4000);
    q.left("g1", "answered", 1000);
    q.left("g1", "answered", 12_000.4);
    q.left("g1", "abandoned", 30_000); // not a wait time of an answered call
    q.left("g1", "max-wait", 60_000);
    q.joined("g2");
    q.left("g2", "ended", 10);
    assert.deepEqual(q.report(new Map([["g1", 2], ["g3", 1], ["g4", 0]])), [
      { groupId: "g1", waiting: 2, joined: 5, answered: 3, abandoned: 1, timedOut: 1, waitMedianMs: 4000, waitMaxMs: 12_000 },
      { groupId: "g2", waiting: 0, joined: 1, answered: 0, abandoned: 0, timedOut: 0, waitMedianMs: null, waitMaxMs: null },
      { groupId: "g3", waiting: 1, joined: 0, answered: 0, abandoned: 0, timedOut: 0, waitMedianMs: null, waitMaxMs: null },
    ]);
    q.reset();
    assert.equal(q.isEmpty(), true);
    assert.deepEqual(q.report(new Map()), []);
  });

  it("median of an even count is the mean of the middle two; negative waits count as 0", () => {
    assert.equal(median([5]), 5);
    assert.equal(median([4, 1, 3, 2]), 3);
    assert.equal(median([10, 1]), 6);
    const q = new QueueStatistics();
    q.left("g", "answered", -50);
    assert.equal(q.report(new Map())[0]!.waitMaxMs, 0);
  });

  it("keeps a bounded sample of waits; the longest wait is over all of them", () => {
    const q = new QueueStatistics();
    q.left("g", "answered", 1_000_000);
    for (let i = 0; i < MAX_WAIT_SAMPLES + 100; i++) q.left("g", "answered", 10);
    const r = q.report(new Map())[0]!;
    assert.equal(r.answered, MAX_WAIT_SAMPLES + 101);
    assert.equal(r.waitMedianMs, 10);
    assert.equal(r.waitMaxMs, 1_000_000);
    const samples = (q as unknown as { groups: Map<string, { waits: number[] }> }).groups.get("g")!.waits;
    assert.equal(samples.length, MAX_WAIT_SAMPLES);
  });
});
