// Anti-brute-force and anti-flood guard for SIP authentication: failure counters per source
// address and per account name leading to silent temporary bans, plus a pike-like request
// rate limit. Pure bookkeeping with an injected clock; the caller decides what to count and
// drops a banned source's packets without answering (as Kamailio's stock
// config uses pike at 16 requests per 2 s and an ipban table expiring after 300 s).
//
// Rules, in the order a caller applies them to one request:
//   1. isBanned(source)          → drop silently, no response at all.
//   2. noteRequest(source)       → "ban" when the source exceeds the request rate: drop.
//   3. isLockedOut(source, user) → the account is under attack and this source has not
//      authenticated as that user recently: refuse exactly like a wrong password, without
//      checking the digest, and noteFailure() it as usual.
//   4. after digest verification: noteFailure(source, user) on "failed", noteSuccess on "ok".
//
// Every method, not only REGISTER, passes admitRequest(source, inFlight) before a server
// transaction is created for it: a token bucket of new requests per second (with a burst) and
// a cap on the source's live server transactions. Over quota the request is dropped silently
// ("throttle"); a source that keeps sending while throttled is banned for quota.banMs. One
// flooding address thus costs a Map lookup per datagram and a bounded number of transactions,
// and every other address keeps its service. Retransmissions absorbed by an existing
// transaction never reach admitRequest, so a phone on a lossy link is not counted twice.
//
// Account counters count every name, known or not, so they tell an enumerator nothing. An
// account lock never applies to a source that authenticated as that account within
// knownGoodMs, so an attacker cannot lock a phone out of its own registration. The caller
// persists those successes (agent/store, authSources) and hands them back through
// restoreKnownGood() at start, so the exemption survives a restart.
//
// Registered addresses (option registeredFrom): an account's lock never applies to an address
// the account holds a live registration from. Bans stay per address, but the caller never
// applies one to a live registered flow (transport, address and port of a binding: agent.ts
// acceptSource, engine isDeviceFlow), so:
//   Prevented: an attacker forging UDP packets with a phone's source address (or sitting behind
//   the same NAT) sends wrong passwords in the phone's name to get that address banned — the
//   phone, and every other registered phone behind that address, keeps working; so does a
//   phone whose own REGISTERs are refused (stale password) on its registered flow.
//   Still allowed: guesses sent from a live registered flow itself are not stopped by the ban.
//   Only the host owning that address and port sees the answers (a forger is blind: 403s,
//   calls and keep-alives go to the real phone), and every other port of the address, which a
//   guesser on the same host or NAT would use, is banned as usual.
//
// Memory is bounded: each table keeps at most maxTracked entries and evicts the least
// recently touched one. Under a flood of spoofed sources this may forget an older ban; the
// bound is what keeps the process alive, which matters more.

export interface GuardLimits {
  /** Failures within windowMs that trigger the ban (source) or lock (account). */
  maxFailures: number;
  windowMs: number;
  /** How long the ban or lock lasts. */
  banMs: number;
}

export interface RequestRateLimit {
  /** Requests allowed within windowMs; one more bans the source (Kamailio pike: 16 per 2 s). */
  max: number;
  windowMs: number;
  /** Ban length after a rate violation; defaults to perSource.banMs. */
  banMs?: number;
}

export interface SourceQuota {
  /** New requests (transactions) per second one source may start, sustained. */
  ratePerS: number;
  /** Requests one source may start at once above the sustained rate (bucket size). */
  burst: number;
  /** Server transactions one source may hold alive at once. */
  maxInFlight: number;
  /**
   * Ban length once a throttled source keeps sending (its refused requests, decaying at
   * ratePerS, reach burst); 0: never ban, only throttle.
   */
  banMs: number;
}

export interface AuthGuardOptions {
  perSource: GuardLimits;
  perAccount: GuardLimits;
  /** Optional request-rate limit per source, checked before any authentication. */
  perSourceRequestRate?: RequestRateLimit;
  /** Optional per-source quota on every new request (admitRequest); kept by reference, so it can change live. */
  perSourceQuota?: SourceQuota;
  /** Upper bound on entries in each table (sources, accounts, bans, locks, known-good pairs). */
  maxTracked: number;
  /** How long a successful (source, account) pair stays exempt from account locks; default 24 h. */
  knownGoodMs?: number;
  /**
   * Whether the account holds a live registration from this source address (the location
   * service's bindings). See "Registered addresses" above. Default: never.
   */
  registeredFrom?: (source: string, account: string) => boolean;
  /** Sources never banned or rate-limited (e.g. the SIP trunk provider, a local SBC). */
  allowlist?: Iterable<string>;
  now?: () => number;
}

export type BanReason = "failures" | "rate";

export interface GuardStats {
  bannedSources: number;
  /** Soonest expiry first, at most `limit` entries. */
  banned: Array<{ source: string; until: number; reason: BanReason }>;
  lockedAccounts: number;
  locked: Array<{ account: string; until: number }>;
  trackedSources: number;
  trackedAccounts: number;
}

/** One counted failure: when, and the other side of the pair (account for a source, source for an account). */
interface Failure {
  t: number;
  other: string;
}

/** Account names longer than this are cut, so hostile names cannot bloat the tables. */
const MAX_KEY_LENGTH = 128;
const DAY_MS = 86_400_000;

export class AuthGuard {
  /** Called when a source gets banned (for logs and the event bus). */
  onBan: ((source: string, until: number, reason: BanReason) => void) | undefined;
  /** Called when an account gets locked. */
  onLock: ((account: string, until: number) => void) | undefined;

  private readonly o: Required<Omit<AuthGuardOptions, "perSourceRequestRate" | "perSourceQuota" | "allowlist" | "registeredFrom">> & {
    perSourceRequestRate: RequestRateLimit | undefined;
  };
  private readonly registeredFrom: (source: string, account: string) => boolean;
  /** Per-source quota on new requests (admitRequest), by reference. */
  private readonly quota: SourceQuota | undefined;
  /** source → its token bucket for admitRequest. */
  private readonly buckets: LruMap<QuotaBucket>;
  private readonly allow: ReadonlySet<string>;
  /** source → active ban. */
  private readonly bans: LruMap<{ until: number; reason: BanReason }>;
  /** account → end of its lock-out. */
  private readonly locks: LruMap<number>;
  /** source → its recent failures (oldest first, at most perSource.maxFailures). */
  private readonly sourceFailures: LruMap<Failure[]>;
  /** account → its recent failures (oldest first, at most perAccount.maxFailures). */
  private readonly accountFailures: LruMap<Failure[]>;
  /** source → timestamps of its recent requests (oldest first, at most rate.max). */
  private readonly requests: LruMap<number[]>;
  /** "account\nsource" → time of the last successful authentication. */
  private readonly knownGood: LruMap<number>;

  constructor(opts: AuthGuardOptions) {
    for (const [name, l] of [["perSource", opts.perSource], ["perAccount", opts.perAccount]] as const) {
      if (!(l.maxFailures >= 1 && l.windowMs > 0 && l.banMs >= 0)) throw new Error(`bad ${name} limits`);
    }
    const r = opts.perSourceRequestRate;
    if (r !== undefined && !(r.max >= 1 && r.windowMs > 0)) throw new Error("bad perSourceRequestRate");
    const q = opts.perSourceQuota;
    if (q !== undefined && !validQuota(q)) throw new Error("bad perSourceQuota");
    if (!(opts.maxTracked >= 1)) throw new Error("maxTracked must be at least 1");
    this.o = {
      perSource: opts.perSource,
      perAccount: opts.perAccount,
      perSourceRequestRate: r,
      maxTracked: Math.floor(opts.maxTracked),
      knownGoodMs: opts.knownGoodMs ?? DAY_MS,
      now: opts.now ?? Date.now,
    };
    this.allow = new Set(opts.allowlist ?? []);
    this.quota = q;
    this.registeredFrom = opts.registeredFrom ?? (() => false);
    const max = this.o.maxTracked;
    this.buckets = new LruMap(max);
    this.bans = new LruMap(max);
    this.locks = new LruMap(max);
    this.sourceFailures = new LruMap(max);
    this.accountFailures = new LruMap(max);
    this.requests = new LruMap(max);
    this.knownGood = new LruMap(max);
  }

  /** Whether the source's requests are to be dropped without a response. */
  isBanned(source: string): boolean {
    if (this.allow.has(source)) return false;
    const ban = this.bans.get(source);
    if (ban === undefined) return false;
    if (ban.until <= this.o.now()) {
      this.bans.delete(source);
      return false;
    }
    return true;
  }

  /**
   * Counts one request from the source (sliding window). "ban" means drop it: the source is
   * banned already or has just exceeded perSourceRequestRate.
   */
  noteRequest(source: string): "ok" | "ban" {
    if (this.allow.has(source)) return "ok";
    if (this.isBanned(source)) return "ban";
    const rate = this.o.perSourceRequestRate;
    if (rate === undefined) return "ok";
    const now = this.o.now();
    const times = this.requests.touch(source, () => []);
    while (times.length > 0 && now - (times[0] ?? now) >= rate.windowMs) times.shift();
    if (times.length >= rate.max) {
      this.ban(source, now + (rate.banMs ?? this.o.perSource.banMs), "rate");
      return "ban";
    }
    times.push(now);
    return "ok";
  }

  /**
   * Admission of one new request from the source, before any transaction state exists for it.
   * inFlight: the source's live server transactions. "ok": go on; "throttle": drop it
   * silently; "ban": drop it, the source is banned (already, or now for quota.banMs).
   * O(1): one Map lookup and a little arithmetic (a token bucket, refilled lazily).
   */
  admitRequest(source: string, inFlight: number, registeredFlow = false): "ok" | "throttle" | "ban" {
    if (this.allow.has(source)) return "ok";
    // A live registered flow (the caller knows it: a binding's transport, address and port) is
    // held to the rate but never to a ban of its address, and never banned for its rate either:
    // bans must not be turned against phones (header comment).
    if (!registeredFlow && this.isBanned(source)) return "ban";
    const q = this.quota;
    // A quota changed live to nonsense (it is validated on load) must not stop all traffic.
    if (q === undefined || !validQuota(q)) return "ok";
    const now = this.o.now();
    let b = this.buckets.get(source);
    if (b === undefined) {
      b = { tokens: q.burst, over: 0, t: now };
      this.buckets.set(source, b);
    } else {
      const refill = (Math.max(0, now - b.t) * q.ratePerS) / 1000;
      b.tokens = Math.min(q.burst, b.tokens + refill);
      b.over = Math.max(0, b.over - refill);
      b.t = now;
      this.buckets.set(source, b);
    }
    if (inFlight < q.maxInFlight && b.tokens >= 1) {
      b.tokens -= 1;
      return "ok";
    }
    b.over += 1;
    if (!registeredFlow && q.banMs > 0 && b.over >= q.burst) {
      this.buckets.delete(source);
      this.ban(source, now + q.banMs, "rate");
      return "ban";
    }
    return "throttle";
  }

  /**
   * Counts one authentication failure against the source and, when a name was given, the
   * account (known or unknown alike). Bans the source or locks the account at the threshold.
   */
  noteFailure(source: string, account: string | undefined): void {
    const now = this.o.now();
    const name = account === undefined ? undefined : account.slice(0, MAX_KEY_LENGTH);
    if (!this.allow.has(source)) {
      const s = this.o.perSource;
      const list = this.sourceFailures.touch(source, () => []);
      if (record(list, { t: now, other: name ?? "" }, now, s)) {
        this.ban(source, now + s.banMs, "failures");
      }
    }
    if (name !== undefined) {
      const a = this.o.perAccount;
      const list = this.accountFailures.touch(name, () => []);
      if (record(list, { t: now, other: source }, now, a)) {
        this.accountFailures.delete(name);
        // A continuing attack keeps extending the lock; known-good sources are exempt anyway.
        const until = Math.max(this.locks.get(name) ?? 0, now + a.banMs);
        this.locks.set(name, until);
        this.onLock?.(name, until);
      }
    }
  }

  /**
   * Records that the source authenticated as the account: the pair becomes known-good, and the
   * failures of that same pair are forgotten (a phone that once had a stale password). Failures
   * of this source on other accounts, and of other sources on this account, stay: otherwise an
   * attacker holding one valid account could reset its counter between guesses.
   */
  noteSuccess(source: string, account: string): void {
    const now = this.o.now();
    const name = account.slice(0, MAX_KEY_LENGTH);
    this.knownGood.set(pairKey(name, source), now);
    const sf = this.sourceFailures.get(source);
    if (sf !== undefined) {
      const kept = sf.filter((f) => f.other !== name);
      if (kept.length === 0) this.sourceFailures.delete(source);
      else this.sourceFailures.set(source, kept);
    }
    const af = this.accountFailures.get(name);
    if (af !== undefined) {
      const kept = af.filter((f) => f.other !== source);
      if (kept.length === 0) this.accountFailures.delete(name);
      else this.accountFailures.set(name, kept);
    }
  }

  /**
   * Whether an attempt on the account from the source is to be refused without checking it:
   * the account is locked and the source has not authenticated as it within knownGoodMs.
   */
  isLockedOut(source: string, account: string): boolean {
    const name = account.slice(0, MAX_KEY_LENGTH);
    const until = this.locks.get(name);
    if (until === undefined) return false;
    const now = this.o.now();
    if (until <= now) {
      this.locks.delete(name);
      return false;
    }
    const good = this.knownGood.get(pairKey(name, source));
    if (good !== undefined && now - good < this.o.knownGoodMs) return false;
    return !this.registeredFrom(source, account);
  }

  /**
   * Seeds a known-good pair remembered from before a restart (the store's authSources). A
   * later time wins; times older than knownGoodMs, or in the future, are ignored.
   */
  restoreKnownGood(source: string, account: string, at: number): void {
    const now = this.o.now();
    if (!Number.isFinite(at) || at > now || now - at >= this.o.knownGoodMs) return;
    const key = pairKey(account.slice(0, MAX_KEY_LENGTH), source);
    const prior = this.knownGood.get(key);
    if (prior === undefined || prior < at) this.knownGood.set(key, at);
  }

  /** Lifts a ban (installer command). Returns whether there was one. */
  unban(source: string): boolean {
    return this.bans.delete(source);
  }

  /** Lifts an account lock (installer command). Returns whether there was one. */
  unlock(account: string): boolean {
    return this.locks.delete(account.slice(0, MAX_KEY_LENGTH));
  }

  /** For `ringedge status`: active bans and locks, soonest expiry first. Drops expired ones. */
  stats(limit = 100): GuardStats {
    const now = this.o.now();
    for (const [k, b] of [...this.bans.entries()]) if (b.until <= now) this.bans.delete(k);
    for (const [k, until] of [...this.locks.entries()]) if (until <= now) this.locks.delete(k);
    const banned = [...this.bans.entries()]
      .map(([source, b]) => ({ source, until: b.until, reason: b.reason }))
      .sort((x, y) => x.until - y.until)
      .slice(0, Math.max(0, limit));
    const locked = [...this.locks.entries()]
      .map(([account, until]) => ({ account, until }))
      .sort((x, y) => x.until - y.until)
      .slice(0, Math.max(0, limit));
    return {
      bannedSources: this.bans.size,
      banned,
      lockedAccounts: this.locks.size,
      locked,
      trackedSources: new Set([...this.sourceFailures.keys(), ...this.requests.keys()]).size,
      trackedAccounts: this.accountFailures.size,
    };
  }

  private ban(source: string, until: number, reason: BanReason): void {
    this.bans.set(source, { until, reason });
    // A banned source's history is moot: its packets are dropped until the ban ends, and
    // afterwards it starts afresh.
    this.sourceFailures.delete(source);
    this.requests.delete(source);
    this.onBan?.(source, until, reason);
  }

}

/** A source's token bucket: tokens left, refused requests not yet decayed, last update (ms). */
interface QuotaBucket {
  tokens: number;
  over: number;
  t: number;
}

function validQuota(q: SourceQuota): boolean {
  return q.ratePerS > 0 && q.burst >= 1 && q.maxInFlight >= 1 && q.banMs >= 0;
}

/** Appends a failure to a sliding window; true when the window now holds maxFailures. */
function record(list: Failure[], f: Failure, now: number, limits: GuardLimits): boolean {
  while (list.length > 0 && now - (list[0]?.t ?? now) >= limits.windowMs) list.shift();
  list.push(f);
  while (list.length > limits.maxFailures) list.shift();
  return list.length >= limits.maxFailures;
}

/**
 * A Map bounded to `max` entries that evicts the least recently touched one. Eviction walks a
 * persistent key iterator: V8 Map iterators follow deletions and rehashes, whereas a fresh
 * keys().next() after many deletions at the front rescans the tombstones every time (measured:
 * 1M inserts into a 10k-entry map took 4 s that way, 0.13 s this way).
 */
export class LruMap<V> {
  private readonly map = new Map<string, V>();
  private cursor: Iterator<string> = this.map.keys();

  constructor(private readonly max: number) {}

  get size(): number {
    return this.map.size;
  }
  get(key: string): V | undefined {
    return this.map.get(key);
  }
  has(key: string): boolean {
    return this.map.has(key);
  }
  delete(key: string): boolean {
    return this.map.delete(key);
  }
  /** Sets the value and makes the key the most recently used; evicts beyond the bound. */
  set(key: string, value: V): void {
    this.map.delete(key);
    this.map.set(key, value);
    while (this.map.size > this.max) {
      let oldest = this.cursor.next();
      if (oldest.done === true) {
        // Entries behind the cursor are all gone, so a fresh iterator starts at the oldest.
        this.cursor = this.map.keys();
        oldest = this.cursor.next();
        if (oldest.done === true) return;
      }
      this.map.delete(oldest.value);
    }
  }
  /** The value for key (created if absent), made most recently used. */
  touch(key: string, create: () => V): V {
    const v = this.map.get(key) ?? create();
    this.set(key, v);
    return v;
  }
  keys(): IterableIterator<string> {
    return this.map.keys();
  }
  entries(): IterableIterator<[string, V]> {
    return this.map.entries();
  }
}

function pairKey(account: string, source: string): string {
  return `${account}\n${source}`;
}
