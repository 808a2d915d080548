// Factory device certificates: Yealink, Poly and Cisco MPP phones carry a certificate unique to
// the phone (per MAC, issued by the vendor's CA) and present it when an HTTPS server asks for one
// (TLS client authentication, RFC 8446 §4.3.2 / RFC 5246 §7.4.4). With the vendor's CA
// certificates supplied by the installer, requiring it turns "knows the MAC" into "holds the
// phone's private key".
//
// What is checked (checkDeviceCertificate), for a vendor whose phones must present one:
//  1. the TLS layer verified the presented chain against the configured CAs (signatures,
//     validity dates, CA flags; node:tls `authorized`);
//  2. the chain leads to one of *this vendor's* CA certificates (another vendor's CA does not
//     count): a chain member is one of them, or is issued and signed by one of them;
//  3. for the per-MAC files, the leaf certificate names the phone's MAC where the vendor's
//     profile says it puts it (`deviceCertificate.macIn`: subject CN, subjectAltName), in any
//     usual spelling (001565aabbcc, 00:15:65:AA:BB:CC, 00-15-65-..., 0015.65aa.bbcc, with a
//     prefix such as SEP).

import { X509Certificate } from "node:crypto";
import fs from "node:fs";
import path from "node:path";

/** What the TLS layer reports about the client's certificate (server.ts fills it from the socket). */
export interface PeerCertificate {
  /** node:tls verified the chain against the configured CAs. */
  authorized: boolean;
  authorizationError?: string;
  /** DER certificates, leaf first, as the handshake delivered them (up to the known root). */
  chain: Buffer[];
}

export type MacLocation = "subject-cn" | "subject-alt-name";

export type DeviceCertCheck = { ok: true; fingerprint: string } | { ok: false; reason: string };

/** The usual spellings of a MAC (12 lower-case hex digits in): bare, colon, dash, Cisco dotted. */
function macSpellings(mac: string): string[] {
  const pairs = mac.match(/../g) ?? [];
  const quads = mac.match(/..../g) ?? [];
  return [mac, pairs.join(":"), pairs.join("-"), quads.join(".")];
}

/** Whether a text names the MAC in one of its usual spellings, not as part of a longer hex run. */
export function namesMac(text: string, mac: string): boolean {
  const t = text.toLowerCase();
  for (const spelling of macSpellings(mac)) {
    for (let i = t.indexOf(spelling); i >= 0; i = t.indexOf(spelling, i + 1)) {
      const before = t[i - 1];
      const after = t[i + spelling.length];
      if ((before === undefined || !/[0-9a-f]/.test(before)) && (after === undefined || !/[0-9a-f]/.test(after))) return true;
    }
  }
  return false;
}

/** The texts of a certificate where the vendor may name the phone's MAC. */
export function macFields(cert: X509Certificate, where: readonly MacLocation[]): string[] {
  const out: string[] = [];
  if (where.includes("subject-cn")) {
    // X509Certificate.subject: one "KEY=value" per line.
    for (const line of cert.subject.split("\n")) if (line.startsWith("CN=")) out.push(line.slice(3));
  }
  if (where.includes("subject-alt-name") && cert.subjectAltName !== undefined) out.push(cert.subjectAltName);
  return out;
}

/**
 * Check a presented device certificate for a phone of the vendor whose CAs are `cas`. `mac`:
 * the phone's MAC when the request is for one of its per-MAC files. Never throws.
 */
export function checkDeviceCertificate(peer: PeerCertificate | undefined, cas: readonly X509Certificate[], mac: string | undefined, macIn: readonly MacLocation[]): DeviceCertCheck {
  if (!peer || peer.chain.length === 0) return { ok: false, reason: "no device certificate presented" };
  if (!peer.authorized) return { ok: false, reason: `device certificate not verified (${peer.authorizationError ?? "unknown CA"})` };
  let chain: X509Certificate[];
  try {
    chain = peer.chain.map((der) => new X509Certificate(der));
  } catch (e) {
    return { ok: false, reason: `device certificate unreadable: ${(e as Error).message}` };
  }
  const anchored = chain.some((c) => cas.some((ca) => ca.fingerprint256 === c.fingerprint256 || (c.checkIssued(ca) && c.verify(ca.publicKey))));
  if (!anchored) return { ok: false, reason: "device certificate is not from this vendor's CA" };
  const leaf = chain[0]!;
  if (mac !== undefined) {
    if (!macFields(leaf, macIn).some((f) => namesMac(f, mac))) return { ok: false, reason: `device certificate does not name MAC ${mac}` };
  }
  return { ok: true, fingerprint: leaf.fingerprint256 };
}

/** The CA certificates in a PEM text (bundles allowed); throws on a block that is not one. */
export function parsePemCertificates(pem: string, source: string): X509Certificate[] {
  const blocks = pem.match(/-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g) ?? [];
  return blocks.map((b, i) => {
    let c: X509Certificate;
    try {
      c = new X509Certificate(b);
    } catch (e) {
      throw new Error(`${source}: certificate ${i + 1} is not readable: ${(e as Error).message}`);
    }
    if (!c.ca) throw new Error(`${source}: certificate ${i + 1} (${c.subject.replace(/\n/g, ", ")}) is not a CA certificate`);
    return c;
  });
}

/**
 * Each vendor's device CAs from `dir`: `<dir>/<vendor>.pem`, and every `*.pem` / `*.crt` file in
 * `<dir>/<vendor>/`. Throws with a clear message when a vendor has none or a file is bad.
 */
export function loadDeviceCas(dir: string, vendors: readonly string[]): Map<string, X509Certificate[]> {
  const out = new Map<string, X509Certificate[]>();
  for (const vendor of vendors) {
    const files: string[] = [];
    const single = path.join(dir, `${vendor}.pem`);
    if (fs.existsSync(single)) files.push(single);
    const sub = path.join(dir, vendor);
    if (fs.existsSync(sub) && fs.statSync(sub).isDirectory()) {
      for (const f of fs.readdirSync(sub).sort()) if (/\.(pem|crt)$/i.test(f)) files.push(path.join(sub, f));
    }
    const cas = files.flatMap((f) => parsePemCertificates(fs.readFileSync(f, "utf8"), f));
    if (cas.length === 0) throw new Error(`no device CA certificate for ${vendor} in ${dir} (expected ${vendor}.pem or PEM files in ${vendor}/)`);
    out.set(vendor, cas);
  }
  return out;
}
