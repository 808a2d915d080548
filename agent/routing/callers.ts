// Known callers: the caller's number as the directory keys it (E.164), and the local memory of
// "who answered this caller last". Policy data only; nothing here knows about SIP.
//
// Decisions:
// - The number comes from the trunk's P-Asserted-Identity when present (RFC 3325 §9.1: the
//   trunk is a trusted peer for the site), else From. Calls from the site's own phones have no
//   responsible operator.
// - Normalising: RFC 3966 §5.1.1 visual separators ( - . ( ) and space) are dropped; "+digits"
//   is kept; "00digits" (the international prefix used across most of the world, ITU-T E.164
//   Annex A) becomes "+digits"; with a site country code, a national "0digits" becomes
//   "+<code>digits". Anything else is not a number the directory can name.
// - The directory (console) wins over the memory: the memory answers only for callers the
//   directory does not list.
// - The memory keeps the number, the user id and when (to expire it); nothing else. It is
//   bounded (MAX_REMEMBERED, oldest forgotten first) and lives in memory only: a restart forgets.
import { E164_RE } from "./model.ts";

/** Callers the memory holds at most. */
export const MAX_REMEMBERED = 10000;

/** The caller's number as E.164 ("+4930123456"), or undefined when it is not one. */
export function normalizeCallerNumber(text: string, countryCode?: string): string | undefined {
  if (text.length === 0 || text.length > 64) return undefined;
  const bare = text.replace(/[-.() ]/g, "");
  let e164: string;
  if (bare.startsWith("+")) e164 = bare;
  else if (bare.startsWith("00")) e164 = `+${bare.slice(2)}`;
  else if (countryCode !== undefined && /^0[1-9]/.test(bare)) e164 = `+${countryCode}${bare.slice(1)}`;
  else return undefined;
  return E164_RE.test(e164) ? e164 : undefined;
}

/** The user part of a sip:/sips:/tel: URI text (no parsing beyond that; the result is normalised after). */
export function numberOfUri(uri: string): string | undefined {
  const m = /^(?:sips?:([^@;?>]+)@|tel:([^;?>]+))/i.exec(uri.trim().replace(/^<|>$/g, ""));
  const user = m?.[1] ?? m?.[2];
  if (user === undefined) return undefined;
  try {
    return decodeURIComponent(user);
  } catch {
    return undefined;
  }
}

/** "Who answered this caller last", for a configured time. */
export class LastAnswered {
  /** Keyed by E.164 number: the user who answered and when (epoch ms); Map order = oldest first. */
  private readonly byNumber = new Map<string, { userId: string; at: number }>();

  constructor(private readonly max: number = MAX_REMEMBERED) {}

  remember(number: string, userId: string, at: number): void {
    this.byNumber.delete(number);
    this.byNumber.set(number, { userId, at });
    if (this.byNumber.size > this.max) this.byNumber.delete(this.byNumber.keys().next().value as string);
  }

  /** The user who answered `number` within the last `forMs`, if any. */
  lookup(number: string, now: number, forMs: number): string | undefined {
    const e = this.byNumber.get(number);
    if (e === undefined) return undefined;
    if (now - e.at >= forMs) {
      this.byNumber.delete(number);
      return undefined;
    }
    return e.userId;
  }

  /** Forget a user (removed from the site) or everything. */
  forget(userId?: string): void {
    if (userId === undefined) this.byNumber.clear();
    else for (const [n, e] of this.byNumber) if (e.userId === userId) this.byNumber.delete(n);
  }

  get size(): number {
    return this.byNumber.size;
  }
}

/** The responsible user for a caller: the directory first, then the memory. */
export function responsibleFor(
  number: string | undefined,
  directory: ReadonlyMap<string, string>,
  memory: { lookup(number: string, now: number, forMs: number): string | undefined } | undefined,
  rememberMs: number,
  now: number,
): { userId: string; source: "directory" | "memory" } | undefined {
  if (number === undefined) return undefined;
  const d = directory.get(number);
  if (d !== undefined) return { userId: d, source: "directory" };
  if (memory === undefined || rememberMs <= 0) return undefined;
  const m = memory.lookup(number, now, rememberMs);
  return m === undefined ? undefined : { userId: m, source: "memory" };
}
