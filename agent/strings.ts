// Strings kept for long: copies that do not pin the text they were cut from.

/**
 * A copy of `s` that does not keep the message it came from alive. The scanner's values are
 * slices of the decoded header block, and V8 represents a slice of 13 or more characters as a
 * pointer into its parent: a To tag kept for a call's life pins the whole 180 it was read from,
 * a binding's Contact the whole REGISTER (2,000 phones and 200 calls up: 2 MB of retained
 * messages, bench/README.md). Long-lived records (bindings, lingering calls, the call log)
 * take their strings through this; the hot path keeps the slices. Concatenating flattens into
 * a new string, which the slice then points into (~0.1 µs for a tag).
 */
export function detached(s: string): string {
  return s.length < 13 ? s : (" " + s).slice(1);
}
