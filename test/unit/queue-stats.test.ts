// Queue figures per group (agent/routing/queue-stats.ts): counts by how calls left, the median
// and longest wait of answered calls, the length now, bounded samples, reset.
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { EventBus } from "../../agent/bus.ts";
import { queueLine } from "../../agent/cli.ts";
import { validatePayload } from "../../agent/contract.ts";
import { AgentMetrics } from "../../agent/observe/metrics.ts";
import { MAX_WAIT_SAMPLES, median, QueueStatistics } from "../../agent/routing/queue-stats.ts";
import { CallStatistics } from "../../agent/sync/stats.ts";

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

describe("queue figures in the MQTT statistics, the metrics and ringedge status", () => {
  it("the interval's statistics carry a queues list the contract accepts, with the lengths at its end", () => {
    const s = new CallStatistics(1000);
    s.queueJoined({ callId: "a", groupId: "g1", position: 1, at: 1000 });
    s.queueJoined({ callId: "b", groupId: "g1", position: 2, at: 1000 });
    assert.equal(s.isEmpty(), false, "a queue event alone is worth a report");
    s.queueLeft({ callId: "a", groupId: "g1", reason: "answered", waitedMs: 2500, at: 3500 });
    s.queueLeft({ callId: "b", groupId: "g1", reason: "abandoned", waitedMs: 4000, at: 5000 });
    const r = s.report(6000, new Map([["g1", 1]]));
    assert.deepEqual(r.queues, [{ groupId: "g1", waiting: 1, joined: 2, answered: 1, abandoned: 1, timedOut: 0, waitMedianMs: 2500, waitMaxMs: 2500 }]);
    const payload = { bootId: "0123456789abcdef", intervalS: 60, ...r };
    const v = validatePayload("statistics", payload);
    assert.ok(v.ok, JSON.stringify(v));
    // The contract refuses nonsense figures.
    for (const bad of [{ waiting: -1 }, { waitMedianMs: "fast" }, { timedOut: 1.5 }, { extra: 1 }]) {
      const q: Record<string, unknown> = { ...r.queues[0]!, ...bad };
      assert.equal(validatePayload("statistics", { ...payload, queues: [q] }).ok, false, JSON.stringify(bad));
    }
    s.reset(6000);
    assert.equal(s.isEmpty(), true);
    assert.deepEqual(s.report(7000).queues, []);
  });

  it("metrics: callers waiting per group, calls leaving by reason, answered waits", async () => {
    const bus = new EventBus();
    let lengths = new Map([["g1", 2], ["g2", 0]]);
    const m = new AgentMetrics(bus, { calls: () => ({ active: 0, queued: 2 }), queueLengths: () => lengths, registrations: () => 0, devices: () => [] });
    m.start();
    try {
      bus.emit("queue.left", { callId: "a", groupId: "g1", reason: "answered", waitedMs: 7000, at: 1 });
      bus.emit("queue.left", { callId: "b", groupId: "g1", reason: "max-wait", waitedMs: 60_000, at: 1 });
      const text = await m.text();
      assert.match(text, /^ringedge_queue_waiting\{group="g1"\} 2$/m);
      assert.match(text, /^ringedge_queue_left_total\{group="g1",reason="answered"\} 1$/m);
      assert.match(text, /^ringedge_queue_left_total\{group="g1",reason="max-wait"\} 1$/m);
      assert.match(text, /^ringedge_queue_wait_seconds_sum\{group="g1"\} 7$/m);
      assert.match(text, /^ringedge_queue_wait_seconds_count\{group="g1"\} 1$/m);
      assert.match(text, /^ringedge_queue_waiting\{group="g2"\} 0$/m);
      // The queue empties: its series reads 0.
      lengths = new Map([["g1", 0], ["g2", 0]]);
      assert.match(await m.text(), /^ringedge_queue_waiting\{group="g1"\} 0$/m);
    } finally {
      m.stop();
    }
  });

  it("ringedge status prints one line per queue", () => {
    assert.equal(
      queueLine({ groupId: "hotline", waiting: 2, joined: 9, answered: 5, abandoned: 3, timedOut: 1, waitMedianMs: 12_340, waitMaxMs: 61_000 }),
      "queue    hotline  waiting 2  joined 9  answered 5 (wait median 12.3s max 61.0s)  abandoned 3  max wait 1",
    );
    assert.match(queueLine({ groupId: "g", waiting: 0, joined: 0, answered: 0, abandoned: 0, timedOut: 0, waitMedianMs: null, waitMaxMs: null }), /wait median - max -/);
  });
});
