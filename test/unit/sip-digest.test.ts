import { test } from "node:test";
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import {
  computeAuthorization,
  digestResponse,
  DigestAuthenticator,
  parseAuthorization,
  sameResource,
  SUPPORTED_ALGORITHMS,
  type Credentials,
  type DigestAlgorithm,
  type VerifyResult,
} from "../../agent/sip/digest.ts";

// ---------------------------------------------------------------- RFC test vectors

const RFC7616 = {
  username: "Mufasa",
  realm: "http-auth@example.org",
  password: "Circle of Life",
  nonce: "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
  cnonce: "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
  opaque: "FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS",
  method: "GET",
  uri: "/dir/index.html",
  nc: "00000001",
  qop: "auth" as const,
};

test("RFC 7616 §3.9.1 MD5 and SHA-256 responses", () => {
  assert.equal(digestResponse({ ...RFC7616, algorithm: "MD5" }), "8ca523f5e9506fed4657c9700eebdbec");
  assert.equal(
    digestResponse({ ...RFC7616, algorithm: "SHA-256" }),
    "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1",
  );
});

test("RFC 2617 §3.5 MD5 example", () => {
  assert.equal(
    digestResponse({
      algorithm: "MD5",
      username: "Mufasa",
      realm: "testrealm@host.com",
      password: "Circle Of Life",
      nonce: "dcd98b7102dd2f0e8b11d0f600bfb0c093",
      method: "GET",
      uri: "/dir/index.html",
      qop: "auth",
      nc: "00000001",
      cnonce: "0a4f113b",
    }),
    "6629fae49393a05397450978507c4ef1",
  );
});

test("stored HA1 gives the same response as the password", () => {
  const ha1 = createHash("md5").update("Mufasa:http-auth@example.org:Circle of Life").digest("hex");
  assert.equal(digestResponse({ ...RFC7616, algorithm: "MD5", password: undefined, ha1: ha1.toUpperCase() }), "8ca523f5e9506fed4657c9700eebdbec");
});

test("computeAuthorization answers the RFC 7616 SHA-256 challenge with the RFC's response", () => {
  const challenge =
    `Digest realm="http-auth@example.org", qop="auth, auth-int", algorithm=SHA-256, ` +
    `nonce="${RFC7616.nonce}", opaque="${RFC7616.opaque}"`;
  const auth = computeAuthorization(challenge, {
    method: "GET",
    uri: "/dir/index.html",
    username: "Mufasa",
    password: "Circle of Life",
    cnonce: RFC7616.cnonce,
  });
  assert.equal(typeof auth, "string");
  const parsed = parseAuthorization(auth as string);
  assert.ok(!("error" in parsed));
  assert.equal(parsed.scheme, "Digest");
  assert.equal(parsed.params.get("response"), "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1");
  assert.equal(parsed.params.get("qop"), "auth");
  assert.equal(parsed.params.get("nc"), "00000001");
  assert.equal(parsed.params.get("opaque"), RFC7616.opaque);
  assert.equal(parsed.params.get("algorithm"), "SHA-256");
});

test("computeAuthorization: absent algorithm means MD5; no qop gives the RFC 2069 form", () => {
  const auth = computeAuthorization('Digest realm="r", nonce="n"', { method: "REGISTER", uri: "sip:r", username: "u", password: "p" });
  assert.equal(typeof auth, "string");
  const parsed = parseAuthorization(auth as string);
  assert.ok(!("error" in parsed));
  const ha1 = createHash("md5").update("u:r:p").digest("hex");
  const ha2 = createHash("md5").update("REGISTER:sip:r").digest("hex");
  assert.equal(parsed.params.get("response"), createHash("md5").update(`${ha1}:n:${ha2}`).digest("hex"));
  assert.equal(parsed.params.has("qop"), false);
  assert.equal(parsed.params.has("nc"), false);
});

test("computeAuthorization: auth-int hashes the body; errors are returned, not thrown", () => {
  const body = Buffer.from("v=0\r\n");
  const auth = computeAuthorization('Digest realm="r", nonce="n", qop="auth-int", algorithm=SHA-256', {
    method: "NOTIFY", uri: "sip:100@10.0.0.5", username: "u", password: "p", cnonce: "c", body,
  });
  assert.equal(typeof auth, "string");
  const parsed = parseAuthorization(auth as string);
  assert.ok(!("error" in parsed));
  assert.equal(parsed.params.get("qop"), "auth-int");
  const h = (s: string | Buffer) => createHash("sha256").update(s).digest("hex");
  const ha2 = h(`NOTIFY:sip:100@10.0.0.5:${h(body)}`);
  assert.equal(parsed.params.get("response"), h(`${h("u:r:p")}:n:00000001:c:auth-int:${ha2}`));

  const opts = { method: "GET", uri: "/", username: "u", password: "p" };
  assert.ok("error" in (computeAuthorization('Basic realm="x"', opts) as object));
  assert.ok("error" in (computeAuthorization('Digest realm="x"', opts) as object));
  assert.ok("error" in (computeAuthorization('Digest realm="x", nonce="n", algorithm=SHA-1', opts) as object));
  assert.ok("error" in (computeAuthorization('Digest realm="x", nonce="n", qop="foo"', opts) as object));
  assert.ok("error" in (computeAuthorization('Digest realm="x", nonce="n"', { ...opts, nc: 0 }) as object));
  assert.ok("error" in (computeAuthorization('Digest realm="x', opts) as object));
});

test("username and realm with quotes and backslashes survive quoting", () => {
  const auth = computeAuthorization('Digest realm="a\\"b", nonce="n", qop="auth"', {
    method: "REGISTER", uri: "sip:x", username: 'we"ird\\', password: "p", cnonce: "c",
  });
  const parsed = parseAuthorization(auth as string);
  assert.ok(!("error" in parsed));
  assert.equal(parsed.params.get("username"), 'we"ird\\');
  assert.equal(parsed.params.get("realm"), 'a"b');
});

// ---------------------------------------------------------------- parser

test("parseAuthorization: quoted strings, escapes, tokens, whitespace, case", () => {
  const r = parseAuthorization(
    ' Digest  USERNAME = "bob" ,realm="ex\\"am\\\\ple", nc=00000001,,  uri=sip:bob@example.com , algorithm=md5\t',
  );
  assert.ok(!("error" in r));
  assert.equal(r.scheme, "Digest");
  assert.equal(r.params.get("username"), "bob");
  assert.equal(r.params.get("realm"), 'ex"am\\ple');
  assert.equal(r.params.get("nc"), "00000001");
  assert.equal(r.params.get("uri"), "sip:bob@example.com");
  assert.equal(r.params.get("algorithm"), "md5");
  assert.equal(r.params.size, 5);
});

test("parseAuthorization: RFC 4475 regaut01.dat unknown scheme keeps its scheme and params", () => {
  const r = parseAuthorization("NoOneKnowsThisScheme opaque-data=here");
  assert.ok(!("error" in r));
  assert.equal(r.scheme, "NoOneKnowsThisScheme");
  assert.equal(r.params.get("opaque-data"), "here");
});

test("parseAuthorization: bare scheme, token68, UTF-8 in quotes", () => {
  const bare = parseAuthorization("Digest");
  assert.ok(!("error" in bare));
  assert.equal(bare.params.size, 0);
  const bearer = parseAuthorization("Bearer abc.DEF-_~+/==");
  assert.ok(!("error" in bearer));
  assert.equal(bearer.token68, "abc.DEF-_~+/==");
  const utf = parseAuthorization('Digest username="jürgen", realm="r"');
  assert.ok(!("error" in utf));
  assert.equal(utf.params.get("username"), "jürgen");
});

test("parseAuthorization: errors for broken input", () => {
  const bad = [
    "",
    "   ",
    '"Digest" a=b',
    'Digest username="unterminated',
    'Digest username="bad escape\\',
    "Digest a=b c=d",
    "Digest a=, b=c",
    "Digest a=b, a=c",
    "Digest =b",
    'Digest a="x\u0000y"',
    'Digest,a=b',
    "Digest a b",
    "x".repeat(5000),
    "Digest " + Array.from({ length: 40 }, (_, i) => `p${i}=v`).join(","),
  ];
  for (const b of bad) {
    const r = parseAuthorization(b);
    assert.ok("error" in r, `expected error for ${JSON.stringify(b.slice(0, 60))}`);
  }
});

test("parseAuthorization never throws on random input (fuzz)", () => {
  // Deterministic PRNG so a failure reproduces.
  let seed = 0x2545f491;
  const rnd = () => {
    seed ^= seed << 13; seed >>>= 0;
    seed ^= seed >>> 17;
    seed ^= seed << 5; seed >>>= 0;
    return seed / 0x100000000;
  };
  const alphabet = ['"', "\\", ",", "=", " ", "\t", "\r", "\n", "a", "Z", "0", "-", "/", "\u0000", "é", "Digest ", "realm", "nonce=", '""', "\u007f", ";"];
  const base = 'Digest username="bob", realm="r", nonce="abc", uri="sip:r", response="00", qop=auth, nc=00000001, cnonce="x"';
  let parsedOk = 0;
  for (let k = 0; k < 5000; k++) {
    let s: string;
    if (k % 2 === 0) {
      const len = Math.floor(rnd() * 80);
      s = "";
      for (let j = 0; j < len; j++) s += alphabet[Math.floor(rnd() * alphabet.length)] ?? "";
    } else {
      // mutate a valid header: replace, insert or delete characters
      const chars = [...base];
      const edits = 1 + Math.floor(rnd() * 4);
      for (let e = 0; e < edits; e++) {
        const at = Math.floor(rnd() * chars.length);
        const c = alphabet[Math.floor(rnd() * alphabet.length)] ?? "";
        const op = Math.floor(rnd() * 3);
        if (op === 0) chars[at] = c;
        else if (op === 1) chars.splice(at, 0, c);
        else chars.splice(at, 1);
      }
      s = chars.join("");
    }
    const r = parseAuthorization(s);
    assert.ok(typeof r === "object" && r !== null);
    if (!("error" in r)) parsedOk++;
  }
  assert.ok(parsedOk > 100, "some mutated inputs still parse");
  // non-string input from a careless caller
  assert.ok("error" in parseAuthorization(undefined as unknown as string));
});

test("sameResource compares Request-URIs leniently", () => {
  assert.ok(sameResource("sip:example.com", "sip:EXAMPLE.com"));
  assert.ok(sameResource("sip:example.com", "sip:example.com:5060;transport=udp"));
  assert.ok(sameResource("sips:bob@example.com:5061", "SIPS:bob@example.com"));
  assert.ok(sameResource("<sip:example.com>", "sip:example.com"));
  assert.ok(sameResource("sip:[2001:db8::1]:5070", "sip:[2001:DB8::1]:5070;lr"));
  assert.ok(!sameResource("sip:example.com", "sip:example.org"));
  assert.ok(!sameResource("sip:bob@example.com", "sip:Bob@example.com"));
  assert.ok(!sameResource("sip:example.com:5070", "sip:example.com"));
  assert.ok(!sameResource("sip:example.com", "sips:example.com"));
  assert.ok(!sameResource("/dir/index.html", "/dir/other"));
  assert.ok(sameResource("/dir/index.html", "/dir/index.html"));
});

// ---------------------------------------------------------------- authenticator

const REALM = "site1.ringedge";
const USERS = new Map<string, Credentials>([
  ["100", { username: "100", password: "secret-100" }],
  ["101", { username: "101", ha1: { md5: createHash("md5").update(`101:${REALM}:pw101`).digest("hex") } }],
]);
const lookup = (u: string) => USERS.get(u);

function setup(over: Partial<ConstructorParameters<typeof DigestAuthenticator>[0]> = {}) {
  const clock = { t: 1_700_000_000_000 };
  const auth = new DigestAuthenticator({
    realm: REALM,
    algorithms: ["SHA-256", "MD5"],
    nonceTtlMs: 300_000,
    now: () => clock.t,
    secret: Buffer.alloc(32, 7),
    ...over,
  });
  return { clock, auth };
}

function answer(challengeValue: string, username: string, password: string, extra: { nc?: number; cnonce?: string; uri?: string; method?: string } = {}): string {
  const a = computeAuthorization(challengeValue, {
    method: extra.method ?? "REGISTER",
    uri: extra.uri ?? "sip:site1.ringedge",
    username,
    password,
    ...(extra.nc !== undefined ? { nc: extra.nc } : {}),
    ...(extra.cnonce !== undefined ? { cnonce: extra.cnonce } : {}),
  });
  assert.equal(typeof a, "string");
  return a as string;
}

function firstChallenge(auth: DigestAuthenticator, stale = false): string {
  const h = auth.challenge({ stale })[0];
  assert.ok(h);
  return h.value;
}

test("challenge: one header per algorithm in preference order, same fresh nonce, qop=auth", () => {
  const { auth } = setup({ opaque: "op" });
  const hs = auth.challenge();
  assert.equal(hs.length, 2);
  const parsed = hs.map((h) => {
    assert.equal(h.name, "www-authenticate");
    const p = parseAuthorization(h.value);
    assert.ok(!("error" in p));
    return p;
  });
  assert.equal(parsed[0]?.params.get("algorithm"), "SHA-256");
  assert.equal(parsed[1]?.params.get("algorithm"), "MD5");
  assert.equal(parsed[0]?.params.get("qop"), "auth");
  assert.equal(parsed[0]?.params.get("realm"), REALM);
  assert.equal(parsed[0]?.params.get("opaque"), "op");
  assert.equal(parsed[0]?.params.get("nonce"), parsed[1]?.params.get("nonce"));
  assert.equal(parsed[0]?.params.has("stale"), false);
  const again = parseAuthorization(auth.challenge({ stale: true })[0]?.value ?? "");
  assert.ok(!("error" in again));
  assert.notEqual(again.params.get("nonce"), parsed[0]?.params.get("nonce"));
  assert.equal(again.params.get("stale"), "true");

  const proxy = setup({ header: "proxy-authenticate" }).auth.challenge();
  assert.equal(proxy[0]?.name, "proxy-authenticate");
});

test("constructor rejects bad configuration", () => {
  assert.throws(() => new DigestAuthenticator({ realm: "", algorithms: ["MD5"] }));
  assert.throws(() => new DigestAuthenticator({ realm: "r", algorithms: [] }));
  assert.throws(() => new DigestAuthenticator({ realm: "r", algorithms: ["MD5", "MD5"] }));
  assert.throws(() => new DigestAuthenticator({ realm: "r", algorithms: ["SHA-1" as DigestAlgorithm] }));
});

test("round trip succeeds for every supported algorithm, password or stored HA1", () => {
  assert.ok(SUPPORTED_ALGORITHMS.includes("SHA-512-256"), "node:crypto offers sha512-256 here");
  for (const alg of SUPPORTED_ALGORITHMS) {
    const { auth } = setup({ algorithms: [alg] });
    const r = auth.verify({ method: "REGISTER", authorization: answer(firstChallenge(auth), "100", "secret-100"), lookup });
    assert.deepEqual(r, { kind: "ok", username: "100", algorithm: alg }, alg);
  }
  const { auth } = setup({ algorithms: ["MD5"] });
  const r = auth.verify({ method: "REGISTER", authorization: answer(firstChallenge(auth), "101", "pw101"), lookup });
  assert.equal(r.kind, "ok");
});

test("a stored HA1 for another hash does not authenticate", () => {
  const { auth } = setup({ algorithms: ["SHA-256"] });
  const r = auth.verify({ method: "REGISTER", authorization: answer(firstChallenge(auth), "101", "pw101"), lookup });
  assert.equal(r.kind, "failed");
});

test("missing credentials, other schemes and other realms ask for a challenge", () => {
  const { auth } = setup();
  assert.deepEqual(auth.verify({ method: "REGISTER", authorization: undefined, lookup }), { kind: "missing" });
  assert.deepEqual(auth.verify({ method: "REGISTER", authorization: "NoOneKnowsThisScheme opaque-data=here", lookup }), { kind: "missing" });
  // wrong realm: RFC 3261 §22.3, credentials for another realm are not ours
  const other = setup({ realm: "elsewhere" }).auth;
  const foreign = answer(firstChallenge(other), "100", "secret-100");
  assert.deepEqual(auth.verify({ method: "REGISTER", authorization: foreign, lookup }), { kind: "missing" });
  // several values: ours is found among them
  const ours = answer(firstChallenge(auth), "100", "secret-100");
  assert.equal(auth.verify({ method: "REGISTER", authorization: [foreign, ours], lookup }).kind, "ok");
});

test("wrong password and unknown user fail identically", () => {
  const { auth } = setup();
  const wrong = auth.verify({ method: "REGISTER", authorization: answer(firstChallenge(auth), "100", "guess"), lookup });
  const unknown = auth.verify({ method: "REGISTER", authorization: answer(firstChallenge(auth), "999", "guess"), lookup });
  assert.equal(wrong.kind, "failed");
  assert.equal(unknown.kind, "failed");
  assert.equal(wrong.kind === "failed" && wrong.username, "100");
  assert.equal(unknown.kind === "failed" && unknown.username, "999");
  // Only the log reason differs; the kind (what the caller answers) is the same.
  assert.deepEqual(Object.keys(wrong).sort(), Object.keys(unknown).sort());
});

test("unknown users cost a digest computation like known users (lookup still consulted)", () => {
  const { auth } = setup();
  const looked: string[] = [];
  const r = auth.verify({
    method: "REGISTER",
    authorization: answer(firstChallenge(auth), "nobody", "x"),
    lookup: (u) => { looked.push(u); return undefined; },
  });
  assert.equal(r.kind, "failed");
  assert.deepEqual(looked, ["nobody"]);
  // Rough timing parity: median of many known-wrong vs unknown verifications within 3x. The two
  // are interleaved after a warm-up, so a cold JIT or a loaded box weighs on both alike.
  const once = (user: string): number => {
    const a = answer(firstChallenge(auth), user, "wrong");
    const t0 = process.hrtime.bigint();
    auth.verify({ method: "REGISTER", authorization: a, lookup });
    return Number(process.hrtime.bigint() - t0);
  };
  for (let i = 0; i < 100; i++) (once("100"), once("nobody"));
  const knownS: number[] = [];
  const unknownS: number[] = [];
  for (let i = 0; i < 300; i++) {
    knownS.push(once("100"));
    unknownS.push(once("nobody"));
  }
  const median = (xs: number[]): number => xs.sort((x, y) => x - y)[xs.length >> 1] ?? 0;
  const known = median(knownS);
  const unknownT = median(unknownS);
  assert.ok(unknownT < known * 3 && known < unknownT * 3, `known ${known} ns vs unknown ${unknownT} ns`);
});

test("expired but authentic nonce with the right password is stale; wrong password still fails", () => {
  const { auth, clock } = setup();
  const ch = firstChallenge(auth);
  clock.t += 300_001;
  assert.deepEqual(auth.verify({ method: "REGISTER", authorization: answer(ch, "100", "secret-100"), lookup }), { kind: "stale", reason: "expired" });
  assert.equal(auth.verify({ method: "REGISTER", authorization: answer(ch, "100", "nope"), lookup }).kind, "failed");
  // within the lifetime it is fine
  const { auth: a2, clock: c2 } = setup();
  const ch2 = firstChallenge(a2);
  c2.t += 299_000;
  assert.equal(a2.verify({ method: "REGISTER", authorization: answer(ch2, "100", "secret-100"), lookup }).kind, "ok");
});

test("nonce-count: increasing nc accepted, equal or lower nc is a replay (stale)", () => {
  const { auth } = setup();
  const ch = firstChallenge(auth);
  const v = (nc: number) => auth.verify({ method: "REGISTER", authorization: answer(ch, "100", "secret-100", { nc, cnonce: "c1" }), lookup });
  assert.equal(v(1).kind, "ok");
  assert.deepEqual(v(1), { kind: "stale", reason: "replay" });
  assert.equal(v(2).kind, "ok");
  assert.equal(v(5).kind, "ok");
  assert.deepEqual(v(3), { kind: "stale", reason: "replay" });
  assert.deepEqual(v(5), { kind: "stale", reason: "replay" });
  assert.equal(v(6).kind, "ok");
  assert.equal(auth.trackedNonces(), 1);
});

test("a wrong password does not advance the nonce-count (no poisoning by guessers)", () => {
  const { auth } = setup();
  const ch = firstChallenge(auth);
  assert.equal(auth.verify({ method: "REGISTER", authorization: answer(ch, "100", "bad", { nc: 50 }), lookup }).kind, "failed");
  assert.equal(auth.verify({ method: "REGISTER", authorization: answer(ch, "100", "secret-100", { nc: 1 }), lookup }).kind, "ok");
});

test("bounded nonce tracking: evicted nonces come back stale instead of replayable", () => {
  const { auth, clock } = setup({ maxTrackedNonces: 3 });
  const challenges: string[] = [];
  for (let i = 0; i < 5; i++) {
    challenges.push(firstChallenge(auth));
    clock.t += 10;
  }
  const first = answer(challenges[0] ?? "", "100", "secret-100", { nc: 1 });
  assert.equal(auth.verify({ method: "REGISTER", authorization: first, lookup }).kind, "ok");
  for (let i = 1; i < 5; i++) {
    assert.equal(auth.verify({ method: "REGISTER", authorization: answer(challenges[i] ?? "", "100", "secret-100"), lookup }).kind, "ok");
  }
  assert.equal(auth.trackedNonces(), 3);
  // nonce 0 was evicted: replaying its request must not succeed
  assert.deepEqual(auth.verify({ method: "REGISTER", authorization: first, lookup }), { kind: "stale", reason: "unknown-nonce" });
  // nonces minted after the eviction point are tracked normally
  assert.equal(auth.verify({ method: "REGISTER", authorization: answer(firstChallenge(auth), "100", "secret-100"), lookup }).kind, "ok");
});

test("tampered or foreign nonces never authenticate", () => {
  const { auth } = setup();
  const ch = firstChallenge(auth);
  const p = parseAuthorization(ch);
  assert.ok(!("error" in p));
  const nonce = p.params.get("nonce") ?? "";
  const flipped = (nonce[0] === "A" ? "B" : "A") + nonce.slice(1);
  const tamperedCh = ch.replace(nonce, flipped);
  // right password, nonce not ours: the UA is asked to retry with a fresh nonce
  assert.deepEqual(auth.verify({ method: "REGISTER", authorization: answer(tamperedCh, "100", "secret-100"), lookup }), { kind: "stale", reason: "unknown-nonce" });
  // wrong password with a forged nonce: failed
  assert.equal(auth.verify({ method: "REGISTER", authorization: answer(tamperedCh, "100", "x"), lookup }).kind, "failed");
  // a nonce from another secret (process restart) is not ours either
  const restarted = setup({ secret: Buffer.alloc(32, 9) }).auth;
  assert.deepEqual(restarted.verify({ method: "REGISTER", authorization: answer(ch, "100", "secret-100"), lookup }), { kind: "stale", reason: "unknown-nonce" });
  // a response edited after the fact fails
  const good = answer(ch, "100", "secret-100");
  const edited = good.replace(/response="([0-9a-f])/, (_m, c: string) => `response="${c === "0" ? "1" : "0"}`);
  assert.equal(auth.verify({ method: "REGISTER", authorization: edited, lookup }).kind, "failed");
  // the same credentials for another method fail (HA2 binds the method)
  assert.equal(auth.verify({ method: "INVITE", authorization: good, lookup }).kind, "failed");
});

test("algorithm not offered, opaque mismatch fail; uppercase hex response accepted", () => {
  const { auth } = setup({ algorithms: ["SHA-256"], opaque: "op1" });
  const md5Ch = setup({ algorithms: ["MD5"], opaque: "op1" }).auth.challenge()[0]?.value ?? "";
  // Same secret and realm, so the nonce is authentic; only the algorithm is wrong.
  assert.equal(auth.verify({ method: "REGISTER", authorization: answer(md5Ch, "100", "secret-100"), lookup }).kind, "failed");
  const ch = firstChallenge(auth);
  const wrongOpaque = answer(ch.replace('opaque="op1"', 'opaque="op2"'), "100", "secret-100");
  assert.deepEqual(auth.verify({ method: "REGISTER", authorization: wrongOpaque, lookup }), { kind: "failed", reason: "opaque mismatch", username: "100" });
  const upper = answer(ch, "100", "secret-100").replace(/response="([0-9a-f]+)"/, (_m, h: string) => `response="${h.toUpperCase()}"`);
  assert.equal(auth.verify({ method: "REGISTER", authorization: upper, lookup }).kind, "ok");
});

test("malformed credentials", () => {
  const { auth } = setup();
  const ch = firstChallenge(auth);
  const good = answer(ch, "100", "secret-100", { cnonce: "cc" });
  const cases: Array<[string, string]> = [
    [good.replace(/username="100", /, ""), "no username"],
    [good.replace(/uri="[^"]*", /, ""), "missing"],
    [good.replace(/, qop=auth/, ""), "no qop"],
    [good.replace(/qop=auth/, "qop=auth-int"), "not offered"],
    [good.replace(/nc=00000001/, "nc=1"), "bad nc"],
    [good.replace(/nc=00000001/, "nc=00000000"), "nc zero"],
    [good.replace(/cnonce="cc", /, ""), "no cnonce"],
    [good.replace(/response="[0-9a-f]+"/, 'response="xyz"'), "not hex"],
    [good + ', realm="again"', "duplicate"],
    ['Digest realm="' + REALM + '", username="unterminated', "unterminated"],
  ];
  for (const [value, reason] of cases) {
    const r: VerifyResult = auth.verify({ method: "REGISTER", authorization: value, lookup });
    assert.equal(r.kind, "malformed", value);
    if (r.kind === "malformed") assert.ok(r.reason.includes(reason), `${r.reason} should mention ${reason}`);
  }
});

test("requestUri check: lenient match passes, another resource fails as a counted failure", () => {
  const { auth } = setup();
  const a = answer(firstChallenge(auth), "100", "secret-100", { uri: "sip:site1.ringedge" });
  assert.equal(auth.verify({ method: "REGISTER", authorization: a, lookup, requestUri: "sip:SITE1.ringedge;transport=tcp" }).kind, "ok");
  // RFC 7616 §3.4.6: the right password over another uri is refused, with the claimed name (the guard counts it).
  const b = answer(firstChallenge(auth), "100", "secret-100", { uri: "sip:site1.ringedge" });
  assert.deepEqual(auth.verify({ method: "REGISTER", authorization: b, lookup, requestUri: "sip:other.example" }), { kind: "failed", reason: "uri does not match Request-URI", username: "100" });
  // Another user part, another port, another scheme: each names another resource.
  for (const requestUri of ["sip:0049301234@site1.ringedge", "sip:site1.ringedge:5070", "sips:site1.ringedge", "tel:+4930123"]) {
    const c = answer(firstChallenge(auth), "100", "secret-100", { uri: "sip:site1.ringedge" });
    assert.equal(auth.verify({ method: "REGISTER", authorization: c, lookup, requestUri }).kind, "failed", requestUri);
  }
  // An INVITE (proxy auth) answered for the Request-URI it carries passes; for another number it fails.
  const inv = "sip:0049301234@site1.ringedge";
  const d = answer(firstChallenge(auth), "100", "secret-100", { uri: inv, method: "INVITE" });
  assert.equal(auth.verify({ method: "INVITE", authorization: d, lookup, requestUri: inv }).kind, "ok");
  const e = answer(firstChallenge(auth), "100", "secret-100", { uri: inv, method: "INVITE" });
  assert.equal(auth.verify({ method: "INVITE", authorization: e, lookup, requestUri: "sip:0090555123@site1.ringedge" }).kind, "failed");
  // Without a requestUri (an upstream proxy may rewrite it) the uri is not compared.
  const f = answer(firstChallenge(auth), "100", "secret-100", { uri: "sip:anything.example" });
  assert.equal(auth.verify({ method: "REGISTER", authorization: f, lookup }).kind, "ok");
});

test("verify never throws on random Authorization values (fuzz)", () => {
  const { auth } = setup();
  const good = answer(firstChallenge(auth), "100", "secret-100");
  let seed = 12345;
  const rnd = () => ((seed = (seed * 1103515245 + 12345) >>> 0) / 0x100000000);
  const pieces = ['"', "\\", ",", "=", " ", "nc=", "ffffffff", "algorithm=SHA-512-256-sess", "qop=auth", "x", "\u0000"];
  for (let k = 0; k < 3000; k++) {
    const chars = [...good];
    for (let e = 0; e < 1 + Math.floor(rnd() * 5); e++) {
      const at = Math.floor(rnd() * chars.length);
      chars.splice(at, Math.floor(rnd() * 3), pieces[Math.floor(rnd() * pieces.length)] ?? "");
    }
    const r = auth.verify({ method: "REGISTER", authorization: chars.join(""), lookup });
    assert.ok(["ok", "missing", "stale", "failed", "malformed"].includes(r.kind));
  }
  const junk = randomBytes(2000).toString("latin1");
  assert.ok(["missing", "malformed"].includes(auth.verify({ method: "REGISTER", authorization: junk, lookup }).kind));
});

test("nonce tracking is least-recently-used: a nonce in use survives eviction", () => {
  const { auth, clock } = setup({ maxTrackedNonces: 3 });
  const ch = (): string => { clock.t += 10; return firstChallenge(auth); };
  const [a, b, c, d] = [ch(), ch(), ch(), ch()];
  const v = (challenge: string, nc: number) =>
    auth.verify({ method: "REGISTER", authorization: answer(challenge, "100", "secret-100", { nc }), lookup });
  assert.equal(v(a, 1).kind, "ok");
  assert.equal(v(b, 1).kind, "ok");
  assert.equal(v(c, 1).kind, "ok");
  assert.equal(v(a, 2).kind, "ok"); // a becomes most recently used
  assert.equal(v(d, 1).kind, "ok"); // evicts b, the least recently used
  assert.equal(v(a, 3).kind, "ok");
  assert.deepEqual(v(a, 3), { kind: "stale", reason: "replay" });
  assert.deepEqual(v(b, 2), { kind: "stale", reason: "unknown-nonce" });
  assert.equal(auth.trackedNonces(), 3);
});
