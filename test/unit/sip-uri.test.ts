import { test } from "node:test";
import assert from "node:assert/strict";
import { parseUri, sameAor, unescapeUser, uriHostPort, type SipUri } from "../../agent/sip/uri.ts";

function uri(text: string): SipUri {
  const u = parseUri(text);
  assert.ok(u, `should parse: ${text}`);
  return u;
}

test("sip and sips: user, password, host, port, params, headers; raw kept", () => {
  const u = uri("sips:alice:secret@Atlanta.Example.com:5061;transport=TCP;lr;maddr=239.255.255.1?subject=project%20x&priority=urgent");
  assert.equal(u.scheme, "sips");
  assert.equal(u.user, "alice");
  assert.equal(u.password, "secret");
  assert.equal(u.host, "Atlanta.Example.com");
  assert.equal(u.port, 5061);
  assert.deepEqual([...u.params], [["transport", "TCP"], ["lr", null], ["maddr", "239.255.255.1"]]);
  assert.equal(u.headers, "subject=project%20x&priority=urgent");
  assert.equal(u.raw, "sips:alice:secret@Atlanta.Example.com:5061;transport=TCP;lr;maddr=239.255.255.1?subject=project%20x&priority=urgent");
  const bare = uri("SIP:127.0.0.1:5080");
  assert.equal(bare.scheme, "sip");
  assert.equal(bare.user, undefined);
  assert.equal(bare.password, undefined);
  assert.equal(bare.port, 5080);
  const v6 = uri("sip:bob@[2001:db8::10]:5070;transport=udp");
  assert.equal(v6.host, "[2001:db8::10]");
  assert.equal(v6.port, 5070);
});

test("RFC 4475 URIs: escapes, semicolons and odd characters in the user part", () => {
  assert.equal(uri("sip:sips%3Auser%40example.com@example.net").user, "sips%3Auser%40example.com"); // esc01
  const semi = uri("sip:user;par=u%40example.net@example.com"); // semiuri
  assert.equal(semi.user, "user;par=u%40example.net");
  assert.equal(semi.host, "example.com");
  assert.equal(semi.params.size, 0);
  const crazy = uri("sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*:&it+has=1,weird!*pas$wo~d_too.(doesn't-it)@example.com"); // intmeth
  assert.equal(crazy.user, "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*");
  assert.equal(crazy.password, "&it+has=1,weird!*pas$wo~d_too.(doesn't-it)");
  assert.equal(crazy.headers, undefined);
  const esc = uri("sip:cal%6Cer@host5.example.net;%6C%72;n%61me=v%61lue%25%34%31"); // esc01 Contact
  assert.equal(esc.params.get("lr"), null);
  assert.equal(esc.params.get("name"), "v%61lue%25%34%31");
  assert.equal(unescapeUser(esc.params.get("name")!), "value%41"); // once only
  assert.equal(uri("sip:user@example.com?Route=%3Csip:example.com%3E").headers, "Route=%3Csip:example.com%3E"); // escruri
  assert.equal(uri("sip:+19725552222@gw1.example.net;unknownparam").params.get("unknownparam"), null); // cparam02
});

test("tel and unknown schemes", () => {
  const t = uri("tel:+1-201-555-0123;phone-context=example.com");
  assert.equal(t.scheme, "tel");
  assert.equal(t.user, "+1-201-555-0123");
  assert.equal(t.host, "");
  assert.equal(t.params.get("phone-context"), "example.com");
  for (const text of ["nobodyKnowsThisScheme:totallyopaquecontent", "soap.beep://192.0.2.103:3002", "isbn:2983792873", "http://www.example.com", "name:John_Smith"]) {
    const u = uri(text);
    assert.equal(u.host, "");
    assert.equal(u.user, undefined);
    assert.equal(u.raw, text);
    assert.equal(u.scheme, text.slice(0, text.indexOf(":")).toLowerCase());
  }
});

test("malformed URIs are undefined", () => {
  for (const bad of [
    "", "sip:", "sip", ":x", "1sip:a@b", "sip:@host", "sip:user@", "sip:host:", "sip:host:65536", "sip:host:5x",
    "sip:user@example.com; lr", "<sip:user@example.com>", "sip:us er@h", "sip:a@[::1", "sip:a@[zz]", "sip:a@h;;",
    "sip:a@h;=v", "sip:a@h;x=", "sip:a@h?", "sip:a%zz@h", "sip:a%4@h", "sip:a@ex%41mple.com", "sip:a@h\u00e9", "tel:", "tel:12 34",
    "sip:a@h;p=\"q\"",
  ]) {
    assert.equal(parseUri(bad), undefined, JSON.stringify(bad));
  }
});

test("unescapeUser decodes once, keeps NULs and invalid escapes", () => {
  assert.equal(unescapeUser("null-%00-null"), "null-\u0000-null");
  assert.equal(unescapeUser("%00%00").length, 2);
  assert.equal(unescapeUser("%75se%72"), "user");
  assert.equal(unescapeUser("v%61lue%25%34%31"), "value%41");
  assert.equal(unescapeUser("%C3%A9t%C3%A9"), "été");
  assert.equal(unescapeUser("%FF"), "\u00ff"); // not UTF-8: byte per char
  assert.equal(unescapeUser("%Z%45"), "%ZE");
  assert.equal(unescapeUser("100%"), "100%");
  assert.equal(unescapeUser("plain"), "plain");
});

test("sameAor follows RFC 3261 §19.1.4", () => {
  const same = (a: string, b: string) => sameAor(uri(a), uri(b));
  assert.ok(same("sip:%61lice@atlanta.com;transport=TCP", "sip:alice@AtLanTa.CoM;Transport=tcp"));
  assert.ok(same("sip:alice@atlanta.com", "sip:alice@atlanta.com;user=phone"));
  assert.ok(!same("sip:alice@atlanta.com", "sip:ALICE@atlanta.com")); // user is case-sensitive
  assert.ok(!same("sip:alice@atlanta.com", "sips:alice@atlanta.com"));
  assert.ok(!same("sip:bob@biloxi.com", "sip:bob@biloxi.com:5060")); // absent port differs from 5060
  assert.ok(!same("sip:bob:pw@biloxi.com", "sip:bob@biloxi.com"));
  assert.ok(same("sip:null-%00-null@example.com", "sip:null-%00-null@example.com"));
  assert.ok(!same("sip:%00@host5.example.com", "sip:%00%00@host5.example.com")); // escnull: two contacts
  assert.ok(same("tel:+15551234", "tel:+15551234;phone-context=x"));
  assert.ok(!same("tel:+15551234", "sip:+15551234@h"));
});

test("uriHostPort: brackets stripped, default ports by scheme", () => {
  assert.deepEqual(uriHostPort(uri("sip:a@h.example.com")), { host: "h.example.com", port: 5060 });
  assert.deepEqual(uriHostPort(uri("sips:a@h.example.com")), { host: "h.example.com", port: 5061 });
  assert.deepEqual(uriHostPort(uri("sip:[2001:db8::1]:5080")), { host: "2001:db8::1", port: 5080 });
});
