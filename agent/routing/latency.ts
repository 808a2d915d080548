// INVITE-received → first-fork latency per call (issue 3 "Latency budget"): a fixed-bucket,
// log-linear histogram in the manner of HdrHistogram. Every power of two is split into
// SUB_BUCKETS linear sub-buckets, so a reported value is within 1/SUB_BUCKETS (≈3 %) of the
// true one, from 1 µs up to ~35 minutes. All memory is allocated once: record() is a few
// integer operations and one array increment, fit for the hot path (DESIGN principle 3).

/** log2 of the sub-buckets per power of two; 5 → 32 sub-buckets, ≤ 3.1 % relative error. */
const SUB_BITS = 5;
const SUB_BUCKETS = 1 << SUB_BITS;
/** Samples are clamped here (2^31 - 1 µs ≈ 35.8 min): a longer "latency" is a bug, not data. */
export const MAX_TRACKABLE_US = 0x7fffffff;
const HIGHEST_EXPONENT = 30; // 31 - clz32(MAX_TRACKABLE_US)
const BUCKETS = SUB_BUCKETS + (HIGHEST_EXPONENT - SUB_BITS + 1) * SUB_BUCKETS;

export interface LatencySummary {
  /** Samples recorded. */
  count: number;
  /** Median, 99th percentile and maximum, µs (0 when empty). */
  p50Us: number;
  p99Us: number;
  maxUs: number;
  /** Samples strictly above the budget. */
  overBudget: number;
  budgetUs: number;
}

/** Index of the bucket holding v (an integer in [0, MAX_TRACKABLE_US]). */
function bucketOf(v: number): number {
  if (v < SUB_BUCKETS) return v;
  const e = 31 - Math.clz32(v); // position of the leading one, ≥ SUB_BITS here
  const sub = (v >>> (e - SUB_BITS)) & (SUB_BUCKETS - 1);
  return SUB_BUCKETS + (e - SUB_BITS) * SUB_BUCKETS + sub;
}

/** Highest value that falls in bucket i (HdrHistogram's "highest equivalent value"). */
function bucketTop(i: number): number {
  if (i < SUB_BUCKETS) return i;
  const k = i - SUB_BUCKETS;
  const shift = Math.floor(k / SUB_BUCKETS);
  const sub = k % SUB_BUCKETS;
  return (SUB_BUCKETS + sub + 1) * 2 ** shift - 1;
}

export class LatencyHistogram {
  /** Sample counts per bucket; Float64 so counts stay exact past 2^32 (2^53). */
  private readonly counts = new Float64Array(BUCKETS);
  private total = 0;
  private max = 0;
  private over = 0;
  private readonly budgetUs: number;

  constructor(budgetUs: number) {
    this.budgetUs = Number.isFinite(budgetUs) && budgetUs >= 0 ? budgetUs : 0;
  }

  /** Adds one sample in µs. Negative or non-finite values (a clock bug) are ignored. */
  record(us: number): void {
    if (!Number.isFinite(us) || us < 0) return;
    const v = us >= MAX_TRACKABLE_US ? MAX_TRACKABLE_US : Math.round(us);
    this.counts[bucketOf(v)]! += 1;
    this.total++;
    if (v > this.max) this.max = v;
    if (v > this.budgetUs) this.over++;
  }

  /**
   * The value at percentile p (0–100]: the top of the bucket holding the ceil(p% × count)-th
   * smallest sample, never above the exact maximum. 0 when empty.
   */
  percentile(p: number): number {
    if (this.total === 0) return 0;
    const q = Number.isFinite(p) ? Math.min(100, Math.max(0, p)) : 100;
    const rank = Math.max(1, Math.ceil((q / 100) * this.total));
    let seen = 0;
    for (let i = 0; i < BUCKETS; i++) {
      seen += this.counts[i]!;
      if (seen >= rank) return Math.min(bucketTop(i), this.max);
    }
    return this.max;
  }

  summary(): LatencySummary {
    return { count: this.total, p50Us: this.percentile(50), p99Us: this.percentile(99), maxUs: this.max, overBudget: this.over, budgetUs: this.budgetUs };
  }

  reset(): void {
    this.counts.fill(0);
    this.total = 0;
    this.max = 0;
    this.over = 0;
  }
}
