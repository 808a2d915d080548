// Drift-free pacing of fixed-length frames. Frame n of a stream is due at start + n × frameMs,
// always computed from the stream's start time, never from when the previous frame went out, so
// timer lateness does not accumulate (a chain of setTimeout(20) drifts by every wake-up's
// lateness). Pure: the clock is passed in, so tests drive it with fake times.

export interface PaceState {
  /** Clock time of frame 0, ms. */
  readonly startMs: number;
  /** Frames accounted for so far (sent or skipped). */
  frames: number;
}

export interface PaceDecision {
  /** Frames to send now, in order. */
  send: number;
  /** Frames to drop: so late that sending them would only burst (their timestamps still advance). */
  skip: number;
}

/**
 * What is due at `nowMs`. Frames up to `maxBurst` late are sent at once (catch-up after a
 * slightly late wake-up); when more are late (the thread stalled), the oldest are skipped so
 * the stream plays on in real time instead of bursting — the receiver's jitter buffer would
 * drop them anyway. Mutates `state.frames`.
 */
export function framesDue(state: PaceState, nowMs: number, frameMs: number, maxBurst = 3): PaceDecision {
  if (nowMs < state.startMs) return { send: 0, skip: 0 };
  const due = Math.floor((nowMs - state.startMs) / frameMs) + 1 - state.frames;
  if (due <= 0) return { send: 0, skip: 0 };
  const send = Math.min(due, maxBurst);
  const skip = due - send;
  state.frames += due;
  return { send, skip };
}

/** Clock time at which the next frame is due. */
export function nextDueMs(state: PaceState, frameMs: number): number {
  return state.startMs + state.frames * frameMs;
}
