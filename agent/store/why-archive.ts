// The call log's memory of older calls' reasons. A call record carries its why (routing/why.ts:
// up to 100 operators, each with a reason), and the log keeps 5,000 calls in memory: for a
// 100-member group ringing 10 at a time that is ~5,000 small objects a minute of calls and
// 28 MB of heap for a full log (parsed at start-up from calls.jsonl), more than the rest of a
// 2,000-phone site together. The whys are read rarely (`ringedge why` for an older call,
// `ringedge calls --json`), so all but the newest calls' whys are kept deflated: a batch of
// consecutive calls' whys is one raw-deflate stream (similar calls compress ~10:1 together),
// compressed in libuv's thread pool, off the signalling thread. Reading one inflates its batch
// (a few hundred µs; the last batch read stays inflated for the next lookup).
//
// The archive only holds the deflated batches; which record's why sits where is the caller's
// (CallLog) bookkeeping: a ColdWhy reference per record.
import { deflateRaw, deflateRawSync, inflateRawSync } from "node:zlib";
import type { WhyRecord } from "../routing/why.ts";

/** Where a record's why is: its batch and its place in it. */
export interface ColdWhy {
  readonly batch: Buffer;
  readonly index: number;
}

/**
 * Deflates the whys of `whys` (undefined: the record has none) as one batch, in the thread pool.
 * Resolves with one reference per element (undefined where there was no why).
 */
export function freezeWhys(whys: ReadonlyArray<WhyRecord | undefined>): Promise<Array<ColdWhy | undefined>> {
  // JSON text never holds a raw newline (JSON.stringify escapes it): one line per record.
  const text = whys.map((w) => (w === undefined ? "" : JSON.stringify(w))).join("\n");
  return new Promise((resolve, reject) => {
    deflateRaw(text, { level: 6 }, (err, batch) => {
      if (err) return reject(err);
      resolve(whys.map((w, index) => (w === undefined ? undefined : { batch, index })));
    });
  });
}

/** freezeWhys at once, for whys that all exist (the log read at start-up, before any call). */
export function freezeWhysSync(whys: readonly WhyRecord[]): ColdWhy[] {
  const batch = deflateRawSync(whys.map((w) => JSON.stringify(w)).join("\n"), { level: 6 });
  return whys.map((_, index) => ({ batch, index }));
}

/** Reads references back; keeps the last batch inflated, so a run of lookups inflates each batch once. */
export class WhyThaw {
  private lastBatch: Buffer | undefined;
  private lastLines: string[] = [];

  thaw(ref: ColdWhy): WhyRecord | undefined {
    if (ref.batch !== this.lastBatch) {
      this.lastLines = inflateRawSync(ref.batch).toString("utf8").split("\n");
      this.lastBatch = ref.batch;
    }
    const line = this.lastLines[ref.index];
    return line === undefined || line === "" ? undefined : (JSON.parse(line) as WhyRecord);
  }

  /** Lets the last batch's text go. */
  release(): void {
    this.lastBatch = undefined;
    this.lastLines = [];
  }
}
