// Working hours: a weekly schedule in the site's time zone with exceptions by date (holidays
// closed, short days with other hours). Pure: "is the group open at this instant, and until
// when" is a function of (schedule, time zone, instant). Zone offsets come from Node's Intl with
// full ICU (the IANA time zone database it ships); no clock is read here.
//
// Decisions:
// - A range is [from, to) in local wall-clock time of one local date; "24:00" as `to` is the
//   start of the next date. Ranges do not cross midnight (write two ranges).
// - A date with an exception uses the exception's ranges instead of its weekday's; an exception
//   with no ranges is a day closed all day (a holiday).
// - Each boundary is turned into an instant the way RFC 5545 §3.3.5 resolves local DATE-TIME
//   values: a local time that occurs twice (autumn, clocks go back) is its FIRST occurrence; a
//   local time that does not exist (spring, clocks go forward) is read with the UTC offset in
//   force before the gap. So in Europe/Berlin on the spring-forward day a range from 02:30
//   opens at 03:30 CEST (= 02:30 CET), and on the autumn day a range to 02:30 closes at the
//   first 02:30 (CEST): the repeated half hour stays closed. Ranges away from the change are
//   unaffected; a day simply has 23 or 25 hours.
// - `until` is the next instant the answer changes: while open, the end of the open stretch
//   (ranges that touch, e.g. 24:00 and 00:00 of the next day, are one stretch); while closed,
//   the next opening. Undefined when it does not change within SEARCH_DAYS (a schedule with no
//   hours at all, or an open stretch longer than that).

/** Weekday names, Monday first (ISO 8601 order). */
export const WEEKDAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"] as const;
export type Weekday = (typeof WEEKDAYS)[number];

/** A local time "HH:MM" (00:00 to 23:59), or "24:00" as the end of a day. */
export const TIME_RE = /^(?:[01][0-9]|2[0-3]):[0-5][0-9]$|^24:00$/;
/** A calendar date "YYYY-MM-DD" (checked further by isRealDate). */
export const DATE_RE = /^[0-9]{4}-[0-9]{2}-[0-9]{2}$/;
/** Bounds on a schedule (hostile input): rules, ranges per rule, exceptions. */
export const MAX_WEEKLY_RULES = 50;
export const MAX_RANGES_PER_DAY = 10;
export const MAX_EXCEPTIONS = 1000;
/** How far ahead `until` is searched (a long holiday season fits). */
export const SEARCH_DAYS = 400;

export interface TimeRange {
  /** "HH:MM", local. */
  from: string;
  /** "HH:MM" or "24:00", local; after `from`. */
  to: string;
}

export interface WeeklyRule extends TimeRange {
  days: Weekday[];
}

export interface HoursException {
  /** "YYYY-MM-DD", a local date in the site's zone. */
  date: string;
  /** Open ranges that day; empty = closed all day. */
  ranges: TimeRange[];
}

export interface Schedule {
  weekly: WeeklyRule[];
  exceptions?: HoursException[];
}

export interface OpenState {
  open: boolean;
  /** Epoch ms when `open` changes next; undefined: not within SEARCH_DAYS. */
  until: number | undefined;
}

/** Minutes since local midnight of "HH:MM" / "24:00"; NaN when malformed. */
export function minutesOf(time: string): number {
  if (!TIME_RE.test(time)) return NaN;
  return Number(time.slice(0, 2)) * 60 + Number(time.slice(3, 5));
}

/** Whether "YYYY-MM-DD" names a day of the proleptic Gregorian calendar (no 2026-02-30). */
export function isRealDate(date: string): boolean {
  if (!DATE_RE.test(date)) return false;
  const y = Number(date.slice(0, 4));
  const m = Number(date.slice(5, 7));
  const d = Number(date.slice(8, 10));
  if (m < 1 || m > 12 || d < 1) return false;
  const leap = (y % 4 === 0 && y % 100 !== 0) || y % 400 === 0;
  const dim = m === 2 ? (leap ? 29 : 28) : [4, 6, 9, 11].includes(m) ? 30 : 31;
  return d <= dim;
}

// --- time zones ------------------------------------------------------------------------------

/** Keyed by zone name: a formatter for wall-clock fields (building one costs far more than using it). */
const formatters = new Map<string, Intl.DateTimeFormat>();
const MAX_FORMATTERS = 64;

function formatter(zone: string): Intl.DateTimeFormat {
  let f = formatters.get(zone);
  if (f === undefined) {
    f = new Intl.DateTimeFormat("en-US", { timeZone: zone, hourCycle: "h23", year: "numeric", month: "numeric", day: "numeric", hour: "numeric", minute: "numeric", second: "numeric" });
    if (formatters.size >= MAX_FORMATTERS) formatters.clear();
    formatters.set(zone, f);
  }
  return f;
}

/**
 * Why `zone` cannot be the site's time zone, or undefined when it can: a name of the IANA time
 * zone database that Intl (full ICU) knows — "Europe/Berlin", "America/New_York", "UTC", or a
 * link such as "US/Eastern" or "Asia/Kolkata" (ICU and IANA disagree on which spelling of a few
 * zones is canonical, so links are accepted). Offsets ("+01:00") have no daylight-saving rules
 * and are refused; so is a name in the wrong case ("europe/berlin"), with the right spelling.
 */
export function timeZoneProblem(zone: unknown): string | undefined {
  const want = "an IANA time zone name such as \"Europe/Berlin\"";
  if (typeof zone !== "string" || zone.length === 0 || zone.length > 64 || !/^[A-Za-z][A-Za-z0-9_+/-]*$/.test(zone)) return `must be ${want}`;
  let resolved: string;
  try {
    resolved = formatter(zone).resolvedOptions().timeZone;
  } catch {
    return `"${zone}" is not a time zone this system knows; must be ${want}`;
  }
  if (resolved !== zone && resolved.toLowerCase() === zone.toLowerCase()) return `write "${resolved}" (time zone names are case-sensitive)`;
  return undefined;
}

/** UTC offset of `zone` at the instant, in ms (local = utc + offset). */
export function offsetAt(zone: string, instant: number): number {
  const f = wallFields(zone, instant);
  const wall = Date.UTC(f.year, f.month - 1, f.day, f.hour, f.minute, f.second);
  return wall - Math.floor(instant / 1000) * 1000;
}

interface WallFields {
  year: number;
  month: number;
  day: number;
  hour: number;
  minute: number;
  second: number;
}

function wallFields(zone: string, instant: number): WallFields {
  const out: WallFields = { year: 0, month: 0, day: 0, hour: 0, minute: 0, second: 0 };
  for (const p of formatter(zone).formatToParts(instant)) {
    switch (p.type) {
      case "year":
        out.year = Number(p.value);
        break;
      case "month":
        out.month = Number(p.value);
        break;
      case "day":
        out.day = Number(p.value);
        break;
      case "hour":
        out.hour = Number(p.value) % 24;
        break;
      case "minute":
        out.minute = Number(p.value);
        break;
      case "second":
        out.second = Number(p.value);
        break;
    }
  }
  return out;
}

const DAY_MS = 86_400_000;
const MINUTE_MS = 60_000;

/**
 * The instant of a local wall-clock time in `zone` (RFC 5545 §3.3.5): `wall` is the local time
 * written as if it were UTC (Date.UTC of its fields). Twice-occurring times give the first
 * occurrence; non-existent ones use the offset in force before the gap.
 */
export function instantOf(zone: string, wall: number): number {
  const before = offsetAt(zone, wall - DAY_MS);
  const after = offsetAt(zone, wall + DAY_MS);
  let best: number | undefined;
  for (const o of before === after ? [before] : [before, after]) {
    const t = wall - o;
    if (offsetAt(zone, t) === o && (best === undefined || t < best)) best = t;
  }
  if (best !== undefined) return best;
  // In the gap (or an offset change between the neighbour days that neither candidate fits).
  return wall - before;
}

// --- the schedule ----------------------------------------------------------------------------

/** Ranges of one local date (epoch-day number of its wall midnight), as minutes [from, to). */
function rangesOn(schedule: Schedule, wallMidnight: number, dateText: string): Array<[number, number]> {
  const ex = schedule.exceptions;
  if (ex !== undefined) {
    for (let i = 0; i < ex.length; i++) {
      const e = ex[i] as HoursException;
      if (e.date === dateText) return e.ranges.map((r) => [minutesOf(r.from), minutesOf(r.to)]);
    }
  }
  // 1970-01-01 was a Thursday; WEEKDAYS starts on Monday.
  const weekday = WEEKDAYS[(Math.floor(wallMidnight / DAY_MS) + 3) % 7] as Weekday;
  const out: Array<[number, number]> = [];
  for (const rule of schedule.weekly) if (rule.days.includes(weekday)) out.push([minutesOf(rule.from), minutesOf(rule.to)]);
  return out;
}

function dateText(wallMidnight: number): string {
  return new Date(wallMidnight).toISOString().slice(0, 10);
}

/** Open intervals of the local date starting at wall midnight `day`, as instants, sorted. */
function intervalsOn(schedule: Schedule, zone: string, day: number): Array<[number, number]> {
  const ranges = rangesOn(schedule, day, dateText(day));
  const out: Array<[number, number]> = [];
  for (const [from, to] of ranges) {
    if (!(from < to)) continue;
    const a = instantOf(zone, day + from * MINUTE_MS);
    const b = instantOf(zone, day + to * MINUTE_MS);
    if (a < b) out.push([a, b]);
  }
  out.sort((x, y) => x[0] - y[0]);
  return out;
}

/**
 * Whether the schedule is open at `instant` (epoch ms) in `zone`, and until when (see the
 * header). The zone must be valid (timeZoneProblem); the schedule must have passed validation.
 */
export function isOpen(schedule: Schedule, zone: string, instant: number): OpenState {
  const f = wallFields(zone, instant);
  const today = Date.UTC(f.year, f.month - 1, f.day);
  // Intervals of yesterday can reach into today (24:00), and a boundary resolved across a gap
  // can move by an hour: look at yesterday and today to decide, then walk forward for `until`.
  let open = false;
  let end = 0;
  for (const day of [today - DAY_MS, today]) {
    for (const [a, b] of intervalsOn(schedule, zone, day)) {
      if (a <= instant && instant < b && b > end) {
        open = true;
        end = b;
      }
    }
  }
  if (open) {
    // Extend over intervals that start at or before the current end (touching or overlapping).
    for (let d = 0; d <= SEARCH_DAYS; d++) {
      let grew = false;
      for (const [a, b] of intervalsOn(schedule, zone, today + d * DAY_MS)) {
        if (a <= end && b > end) {
          end = b;
          grew = true;
        }
      }
      // A day that starts after the stretch ended cannot extend it.
      if (!grew && instantOf(zone, today + (d + 1) * DAY_MS) > end) return { open: true, until: end };
    }
    return { open: true, until: undefined };
  }
  for (let d = 0; d <= SEARCH_DAYS; d++) {
    for (const [a] of intervalsOn(schedule, zone, today + d * DAY_MS)) if (a > instant) return { open: false, until: a };
  }
  return { open: false, until: undefined };
}

/** "2026-12-24 13:00 CET"-style text of an instant in the zone, for people. */
export function formatLocal(zone: string, instant: number): string {
  const f = wallFields(zone, instant);
  const p2 = (n: number): string => String(n).padStart(2, "0");
  const offset = offsetAt(zone, instant) / MINUTE_MS;
  const sign = offset < 0 ? "-" : "+";
  const abs = Math.abs(offset);
  return `${f.year}-${p2(f.month)}-${p2(f.day)} ${p2(f.hour)}:${p2(f.minute)} (UTC${sign}${p2(Math.floor(abs / 60))}:${p2(abs % 60)})`;
}
