// SIP INFO DTMF bodies (agent/sip/dtmf-info.ts): the one parser behind greetings and menus, the
// callback offer and the dialogs the appliance answers itself (voicemail, listening).
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { parseDtmfInfo } from "../../agent/sip/dtmf-info.ts";

const b = (s: string): Buffer => Buffer.from(s, "latin1");

describe("SIP INFO DTMF bodies", () => {
  it("application/dtmf-relay Signal=/Duration= and application/dtmf; 10 and 11 read as * and #", () => {
    assert.deepEqual(parseDtmfInfo("application/dtmf-relay", b("Signal=5\r\nDuration=160\r\n")), { ok: true, digit: "5" });
    assert.deepEqual(parseDtmfInfo("application/dtmf-relay", b("Signal= 7\r\nDuration= 250\r\n")), { ok: true, digit: "7" });
    assert.deepEqual(parseDtmfInfo("Application/DTMF-Relay; charset=x", b("signal= #\nduration=250")), { ok: true, digit: "#" });
    assert.deepEqual(parseDtmfInfo("application/dtmf-relay", b("Signal=11\r\n")), { ok: true, digit: "#" });
    assert.deepEqual(parseDtmfInfo("application/dtmf-relay", b("Signal=10")), { ok: true, digit: "*" });
    assert.deepEqual(parseDtmfInfo("application/dtmf", b("7")), { ok: true, digit: "7" });
    assert.deepEqual(parseDtmfInfo("application/dtmf", b("a\r\n")), { ok: true, digit: "A" });
  });

  it("an INFO with neither body nor type carries no key (a keep-alive in a dialog)", () => {
    assert.deepEqual(parseDtmfInfo(undefined, b("")), { ok: true, digit: undefined });
  });

  it("garbage is refused with 400, other body types with 415", () => {
    const bad: Array<[string | undefined, string, number]> = [
      [undefined, "Signal=5", 415],
      ["text/plain", "Signal=5", 415],
      ["application/dtmf-relay", "", 400],
      ["application/dtmf-relay", "Duration=100", 400],
      ["application/dtmf-relay", "Signal=55", 400],
      ["application/dtmf-relay", "Signal=12", 400],
      ["application/dtmf-relay", "Signal=E", 400],
      ["application/dtmf-relay", "Signal=5\nSignal=6", 400],
      ["application/dtmf-relay", "Signal=5\nDuration=-1", 400],
      ["application/dtmf-relay", "\u0000\u0001\u00ff", 400],
      ["application/dtmf-relay", "Signal=" + "5".repeat(300), 400],
      ["application/dtmf-relay", "A".repeat(5000), 400],
      ["application/dtmf", "12", 400],
    ];
    for (const [ct, body, status] of bad) {
      const r = parseDtmfInfo(ct, b(body));
      assert.equal(r.ok, false, `${ct} ${JSON.stringify(body.slice(0, 20))}`);
      assert.equal((r as { status: number }).status, status, `${ct} ${JSON.stringify(body.slice(0, 20))}`);
    }
    assert.deepEqual(parseDtmfInfo(undefined, b("5")), { ok: false, status: 415, reason: "Unsupported Media Type" });
  });
});
