// The serial console's installer password is kept only as a scrypt hash (RFC 7914) in the
// settings: "scrypt$N$r$p$<salt b64>$<hash b64>". Hashing and checking run in libuv's thread
// pool (crypto.scrypt, never scryptSync) so a login never stalls the SIP hot path.
import { randomBytes, scrypt, timingSafeEqual } from "node:crypto";

/** N=2^14, r=8, p=1: ~16 MB and tens of ms per check on a small appliance CPU. */
const DEFAULT = { N: 16_384, r: 8, p: 1 } as const;
const KEY_LEN = 32;
const HASH_RE = /^scrypt\$(\d+)\$(\d+)\$(\d+)\$([A-Za-z0-9+/=]+)\$([A-Za-z0-9+/=]+)$/;

export const PASSWORD_MIN = 8;
export const PASSWORD_MAX = 128;

/** Why a candidate installer password is refused, or null when acceptable. */
export function checkInstallerPassword(pw: string): string | null {
  if (pw.length < PASSWORD_MIN || pw.length > PASSWORD_MAX) return `the password must be ${PASSWORD_MIN}-${PASSWORD_MAX} characters`;
  // It is typed on a serial terminal: printable ASCII only, so every terminal can enter it.
  if (!/^[\x20-\x7e]+$/.test(pw)) return "the password must be printable ASCII (no control characters or accents)";
  return null;
}

function derive(pw: string, salt: Buffer, N: number, r: number, p: number, len: number): Promise<Buffer | null> {
  return new Promise((resolve) => {
    try {
      scrypt(pw, salt, len, { N, r, p, maxmem: 256 * N * r + 1024 * 1024 }, (err, key) => resolve(err ? null : key));
    } catch {
      resolve(null); // bad parameters in a hand-edited hash
    }
  });
}

export async function hashInstallerPassword(pw: string): Promise<string> {
  const salt = randomBytes(16);
  const key = await derive(pw, salt, DEFAULT.N, DEFAULT.r, DEFAULT.p, KEY_LEN);
  if (key === null) throw new Error("scrypt failed");
  return `scrypt$${DEFAULT.N}$${DEFAULT.r}$${DEFAULT.p}$${salt.toString("base64")}$${key.toString("base64")}`;
}

/** True when pw matches the hash. A malformed hash or absurd parameters give false, never a throw. */
export async function verifyInstallerPassword(pw: string, hash: string): Promise<boolean> {
  const m = HASH_RE.exec(hash);
  if (!m) return false;
  const [N, r, p] = [Number(m[1]), Number(m[2]), Number(m[3])];
  // Bounds keep a tampered settings file from making every login allocate gigabytes.
  if (!(N >= 2 && N <= 1 << 20 && (N & (N - 1)) === 0 && r >= 1 && r <= 32 && p >= 1 && p <= 16)) return false;
  const salt = Buffer.from(m[4]!, "base64");
  const expected = Buffer.from(m[5]!, "base64");
  if (expected.length < 16 || expected.length > 64) return false;
  const key = await derive(pw, salt, N, r, p, expected.length);
  return key !== null && timingSafeEqual(key, expected);
}
