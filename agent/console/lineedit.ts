// Line editing for the serial console: a pure state machine from received bytes to what to
// echo and which lines were entered. Serial terminals differ (minicom sends CR, some send LF,
// scripts CRLF; backspace is 0x08 on some and DEL 0x7f on others), and the line itself is
// untrusted: control bytes, escape sequences and bytes ≥ 0x80 are never stored or echoed raw.

export type EditEvent =
  /** Enter: the line typed (printable ASCII only); truncated when bytes past maxLength were dropped. */
  | { kind: "line"; text: string; truncated: boolean }
  /** Ctrl-C: the line was discarded. */
  | { kind: "interrupt" }
  /** Ctrl-D on an empty line: log out. */
  | { kind: "eof" };

export type EchoMode = "plain" | "mask" | "none";

export interface FeedResult {
  /** Bytes to send back to the terminal (echo, erase, bell). */
  echo: string;
  events: EditEvent[];
}

const BEL = "\x07";
const ERASE = "\b \b";

export class LineEditor {
  private line = "";
  /** The previous byte ended a line with CR: a following LF belongs to it (CRLF). */
  private afterCr = false;
  /** Inside an escape sequence (ESC, ESC [ ..., ESC O x): swallowed whole. */
  private esc: "none" | "esc" | "csi" | "ss3" = "none";
  /** The bell already rang for this line's overflow (one bell, not one per dropped byte). */
  private rang = false;
  echoMode: EchoMode = "plain";

  constructor(readonly maxLength = 512) {}

  /** The line typed so far (for redrawing after a message). */
  get pending(): string {
    return this.line;
  }

  reset(): void {
    this.line = "";
    this.afterCr = false;
    this.esc = "none";
    this.rang = false;
  }

  feed(bytes: Uint8Array): FeedResult {
    let echo = "";
    const events: EditEvent[] = [];
    for (const b of bytes) {
      const wasCr = this.afterCr;
      this.afterCr = false;
      if (this.esc !== "none") {
        // ECMA-48: CSI parameters/intermediates 0x20-0x3f, final byte 0x40-0x7e; SS3 takes one byte.
        if (this.esc === "esc") this.esc = b === 0x5b ? "csi" : b === 0x4f ? "ss3" : "none";
        else if (this.esc === "ss3") this.esc = "none";
        else if (b >= 0x40 && b <= 0x7e) this.esc = "none";
        else if (b < 0x20 || b > 0x3f) this.esc = "none"; // broken sequence: drop it and go on
        continue;
      }
      switch (b) {
        case 0x0d: // CR
        case 0x0a: // LF; the LF of a CRLF is not a second (empty) line
          if (b === 0x0a && wasCr) break;
          this.afterCr = b === 0x0d;
          events.push({ kind: "line", text: this.line, truncated: this.rang });
          echo += "\r\n";
          this.line = "";
          this.rang = false;
          break;
        case 0x08: // BS
        case 0x7f: // DEL
          if (this.line.length > 0) {
            this.line = this.line.slice(0, -1);
            if (this.echoMode !== "none") echo += ERASE;
          }
          break;
        case 0x15: // Ctrl-U: erase the whole line
          if (this.echoMode !== "none") echo += ERASE.repeat(this.line.length);
          this.line = "";
          break;
        case 0x03: // Ctrl-C
          this.line = "";
          this.rang = false;
          echo += "^C\r\n";
          events.push({ kind: "interrupt" });
          break;
        case 0x04: // Ctrl-D: log out on an empty line, else ignored
          if (this.line === "") events.push({ kind: "eof" });
          break;
        case 0x1b:
          this.esc = "esc";
          break;
        default:
          if (b < 0x20 || b > 0x7e) break; // other controls, UTF-8 and line noise: ignored
          if (this.line.length >= this.maxLength) {
            if (!this.rang) echo += BEL;
            this.rang = true;
            break;
          }
          this.line += String.fromCharCode(b);
          if (this.echoMode === "plain") echo += String.fromCharCode(b);
          else if (this.echoMode === "mask") echo += "*";
      }
    }
    return { echo, events };
  }
}
