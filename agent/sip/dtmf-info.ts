// DTMF keys sent in SIP INFO requests (the legacy "INFO DTMF" that phones and gateways use beside
// RFC 4733 events; RFC 6086 §2 leaves such bodies to their types). One parser for every place
// the appliance takes keys by INFO: a greeting's early dialog (media/call-menu.ts), the queue's
// callback offer (media/callback-offer.ts) and the dialogs it answers itself (sip/uas-session.ts).

/** A body larger than this is not a DTMF INFO (they are a line or two). */
export const DTMF_INFO_MAX_BYTES = 1024;

export type DtmfInfo = { ok: true; digit: string | undefined } | { ok: false; status: 400 | 415; reason: string };

/**
 * The key of a SIP INFO. application/dtmf-relay: "Signal=<key>" and optional "Duration=<ms>"
 * lines, nothing else; application/dtmf: the key alone. Keys 0-9 * # A-D; the 10 and 11 some
 * gateways send for * and # are read as those (RFC 4733 §3.2 numbering). An INFO with neither
 * body nor type carries no key (an in-dialog keep-alive): ok with `digit` undefined. Any other
 * body type: 415; a malformed body: 400 with the reason.
 */
export function parseDtmfInfo(contentType: string | undefined, body: Uint8Array): DtmfInfo {
  const type = contentType?.split(";")[0]?.trim().toLowerCase();
  if (body.length === 0 && (type === undefined || type === "")) return { ok: true, digit: undefined };
  if (type !== "application/dtmf-relay" && type !== "application/dtmf") return { ok: false, status: 415, reason: "Unsupported Media Type" };
  if (body.length === 0) return { ok: false, status: 400, reason: "empty DTMF body" };
  if (body.length > DTMF_INFO_MAX_BYTES) return { ok: false, status: 400, reason: `DTMF body larger than ${DTMF_INFO_MAX_BYTES} bytes` };
  const text = Buffer.from(body.buffer, body.byteOffset, body.byteLength).toString("latin1");
  let signal: string | undefined;
  if (type === "application/dtmf") signal = text.trim();
  else {
    for (const line of text.split(/\r?\n/)) {
      const m = /^\s*([A-Za-z-]+)\s*=\s*(.*?)\s*$/.exec(line);
      if (m === null) {
        if (line.trim().length > 0) return { ok: false, status: 400, reason: "dtmf-relay lines must be Name=value" };
        continue;
      }
      const name = m[1]!.toLowerCase();
      if (name === "signal") {
        if (signal !== undefined) return { ok: false, status: 400, reason: "more than one Signal" };
        signal = m[2]!;
      } else if (name === "duration" && !/^[0-9]{1,5}$/.test(m[2]!)) return { ok: false, status: 400, reason: "Duration must be milliseconds" };
    }
  }
  if (signal === undefined) return { ok: false, status: 400, reason: "no Signal" };
  const digit = signal === "10" ? "*" : signal === "11" ? "#" : signal.toUpperCase();
  if (!/^[0-9*#A-D]$/.test(digit)) return { ok: false, status: 400, reason: "Signal must be one of 0-9, *, #, A-D" };
  return { ok: true, digit };
}
