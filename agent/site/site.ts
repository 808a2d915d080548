// The site configuration feature: checks a site snapshot (the local site file, or later a console
// push, both the contract's siteConfig payload), applies it to the store all or nothing, and
// keeps the routing lookups (SiteIndex) the call path reads. One class with start()/stop(); the
// call hot path only ever reads `current()`, a single reference swapped after each apply.
//
// A snapshot is checked in three layers, each error named by its JSON path:
//   1. shape: the contract's JSON Schema ($defs/siteConfig, agent/contract.ts);
//   2. meaning: the routing model (unique numbers, members exist, overflow chains do not loop…);
//   3. store: SIP usernames and MACs unique among all devices, local ones included, and no file
//      device taking the id of a local device; a device's model known to the device profiles
//      (stored canonical, `<vendor>/<model id>`).
import * as fs from "node:fs";
import type { EventBus } from "../bus.ts";
import { validatePayload, type PayloadResult } from "../contract.ts";
import type { Logger } from "../log.ts";
import { defaultProfiles, resolveModel, type Profile } from "../../provisioning/profiles.ts";
import { indexSite, parseSite, type DeviceRef, type Site, type SiteIndex, type ValidationCode } from "../routing/model.ts";
import { canonicalJson, sha256Hex } from "../store/atomic-file.ts";
import { checkFeatureCodes, type FeatureCodes } from "../routing/operator-state.ts";
import { normalizeMac } from "../store/schema.ts";
import { checkWav } from "../media/setup.ts";
import type { DeviceRecord, SiteDeviceChanges, SiteDeviceInput, Store } from "../store/store.ts";
import { DEFAULT_PICKUP_CODE, type SiteConfig, type SiteDeviceConfig, type SiteError, type SiteRecord, type SiteSettings } from "./types.ts";

export type SiteSource = SiteRecord["source"];

/** A snapshot that passed every check, ready for the store. */
export interface CheckedSite {
  version: number;
  hash: string;
  settings: SiteSettings;
  site: Site;
  devices: SiteDeviceInput[];
}

export type CheckResult = { ok: true; value: CheckedSite } | { ok: false; errors: SiteError[] };

export type ApplyResult =
  | {
      ok: true;
      version: number;
      /** False when the snapshot was not newer than the applied one (nothing was done). */
      changed: boolean;
      /** Why nothing changed, for people (e.g. "version 3 is already applied"). */
      note?: string;
      devices?: SiteDeviceChanges;
    }
  | { ok: false; errors: SiteError[] };

/**
 * How a snapshot stands against the applied one (hashes in the same form on both sides):
 * "newer" is applied; "same" (same version, same content) and "older" change nothing;
 * "conflict" is the same version with other content — two different sites claiming one version,
 * which no caller may report as done (the console push rejects it, docs/mqtt.md).
 */
export type VersionStanding = "newer" | "same" | "conflict" | "older";

export function versionStanding(applied: { version: number; hash: string | null } | null | undefined, incoming: { version: number; hash: string }): VersionStanding {
  if (!applied || incoming.version > applied.version) return "newer";
  if (incoming.version < applied.version) return "older";
  return incoming.hash === applied.hash ? "same" : "conflict";
}

/** Codes of the routing model that compare records with each other; the rest repeat shape
 *  checks the JSON Schema already made, so they are dropped when the schema failed. */
const CROSS_REFERENCE_CODES: ReadonlySet<ValidationCode> = new Set([
  "duplicate-id",
  "duplicate-extension",
  "duplicate-number",
  "unknown-owner",
  "unknown-member",
  "duplicate-member",
  "mobile-member-not-in-group",
  "mobile-member-has-no-mobile",
  "unknown-overflow-target",
  "overflow-loop",
  "logged-out-not-member",
  "too-many-errors",
  // Mailboxes named by voicemail actions (voicemail/).
  "unknown-mailbox",
  "mailbox-disabled",
  // Meaning the schema cannot see: overlaps, real dates, the zone, the directory's references.
  "empty-range",
  "overlapping-hours",
  "invalid-date",
  "duplicate-date",
  "unknown-time-zone",
  "missing-time-zone",
  "missing-out-of-hours",
  "out-of-hours-without-hours",
  "invalid-out-of-hours",
  "duplicate-caller",
  "unknown-responsible",
  "duplicate-inbound-number",
  "duplicate-default-route",
  "duplicate-menu-digit",
  "unknown-menu-target",
  "menu-loop",
]);

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

const hashes = new WeakMap<object, string>();
/**
 * sha256 (hex) of a snapshot's canonical JSON. A console push is hashed by the sync (to compare
 * with the applied version) and then by the check here: the parsed snapshot is the same object and
 * is never modified after parsing, so the second call costs a lookup, not another pass over
 * ~160 KB.
 */
export function snapshotHash(input: object): string {
  let h = hashes.get(input);
  if (h === undefined) {
    h = sha256Hex(canonicalJson(input));
    hashes.set(input, h);
  }
  return h;
}

const shapeChecked = new WeakSet<object>();
/**
 * Notes that `config` passed the contract's `$defs/siteConfig` as part of a larger payload (the
 * console's `desired` envelope, whose `config` is that definition): checkSiteConfig then does
 * not validate the same ~160 KB again. Same terms as snapshotHash: the parsed snapshot is
 * never modified after that validation.
 */
export function noteSiteConfigValid(config: object): void {
  shapeChecked.add(config);
}

/**
 * Checks a snapshot as a whole against the contract, the routing model and the devices already in
 * the store (`existing`; site-origin ones are the snapshot's own previous devices and may be
 * replaced). Pure; never throws; lists every problem found.
 */
export function checkSiteConfig(input: unknown, existing: readonly Readonly<DeviceRecord>[], profiles: ReadonlyMap<string, Profile> = defaultProfiles(), agentCodes: ReadonlyArray<{ label: string; code: string }> = []): CheckResult {
  const errors: SiteError[] = [];
  const shape: PayloadResult = isRecord(input) && shapeChecked.has(input) ? { ok: true } : validatePayload("siteConfig", input);
  if (!shape.ok) errors.push(...shape.errors);
  if (!isRecord(input)) return { ok: false, errors };

  // The model names a device's owner "ownerId"; the file says "owner".
  const rawDevices = input.devices;
  const modelInput = {
    users: input.users,
    devices: Array.isArray(rawDevices) ? rawDevices.map((d: unknown) => (isRecord(d) ? { id: d.id, ownerId: d.owner, kind: d.kind } : d)) : rawDevices,
    groups: input.groups,
    settings: input.settings,
    knownCallers: input.knownCallers,
    inbound: input.inbound,
    menus: input.menus,
  };
  const meaning = parseSite(modelInput);
  if (!meaning.ok) {
    for (const e of meaning.errors) {
      if (!shape.ok && !CROSS_REFERENCE_CODES.has(e.code)) continue;
      const path = e.path.replace(/^(devices\[\d+\])\.ownerId$/, "$1.owner");
      // Both layers may see the same fault (e.g. a device whose owner is missing): say it once.
      if (errors.some((x) => x.path === path)) continue;
      errors.push({ ...e, path });
    }
  }

  // Feature codes (pickup, operator state) against each other and the numbering plan.
  if (isRecord(input.settings)) {
    const pickup = typeof input.settings.pickupCode === "string" ? input.settings.pickupCode : DEFAULT_PICKUP_CODE;
    const fc = isRecord(input.settings.featureCodes) ? (input.settings.featureCodes as Partial<FeatureCodes>) : undefined;
    const numbers = (list: unknown, key: string): string[] => (Array.isArray(list) ? list.flatMap((x: unknown) => (isRecord(x) && typeof x[key] === "string" ? [x[key] as string] : [])) : []);
    for (const p of checkFeatureCodes(fc, pickup, { extensions: numbers(input.users, "extension"), groupNumbers: numbers(input.groups, "number") }, agentCodes)) {
      if (!errors.some((x) => x.path === p.path)) errors.push({ code: "feature-code-clash", path: p.path, message: p.message });
    }
  }

  // Prompt files are read now, at apply time: a file that cannot be played is refused here,
  // where the installer or the console sees it, not found out by a caller.
  if (meaning.ok) for (const p of promptFiles(meaning.site)) {
    const why = checkWav(p.file);
    if (why !== undefined) errors.push({ code: "unplayable-prompt", path: p.path, message: why });
  }

  const devices = checkDevices(input, existing, errors, profiles);
  if (errors.length > 0 || !meaning.ok || devices === null) return { ok: false, errors };
  const config = input as unknown as SiteConfig;
  const settings: SiteSettings = { ...structuredClone(config.settings), pickupCode: config.settings.pickupCode ?? DEFAULT_PICKUP_CODE };
  return {
    ok: true,
    value: { version: config.version, hash: snapshotHash(input), settings, site: meaning.site, devices },
  };
}

/** Every prompt file a site names, with its JSON path. */
function promptFiles(site: Site): Array<{ file: string; path: string }> {
  const out: Array<{ file: string; path: string }> = [];
  site.inbound?.forEach((r, i) => {
    if (r.greeting.prompt !== undefined) out.push({ file: r.greeting.prompt, path: `inbound[${i}].greeting.prompt` });
  });
  site.menus?.forEach((m, i) => {
    if (m.prompt !== undefined) out.push({ file: m.prompt, path: `menus[${i}].prompt` });
    if (m.invalidPrompt !== undefined) out.push({ file: m.invalidPrompt, path: `menus[${i}].invalidPrompt` });
  });
  return out;
}

/** Store-level checks of the snapshot's devices; returns the devices for the store, or null when
 *  the list could not be read (the schema reported why). */
function checkDevices(input: Record<string, unknown>, existing: readonly Readonly<DeviceRecord>[], errors: SiteError[], profiles: ReadonlyMap<string, Profile>): SiteDeviceInput[] | null {
  if (!Array.isArray(input.devices)) return null;
  const extensionOf = new Map<string, string>();
  if (Array.isArray(input.users)) {
    for (const u of input.users) if (isRecord(u) && typeof u.id === "string" && typeof u.extension === "string" && !extensionOf.has(u.id)) extensionOf.set(u.id, u.extension);
  }
  const local = existing.filter((d) => d.origin !== "site");
  const localIds = new Set(local.map((d) => d.id));
  // A group's number dials the group: a device with that SIP username could never be called.
  const groupAt = new Map<string, string>();
  if (Array.isArray(input.groups)) input.groups.forEach((g: unknown, i: number) => {
    if (isRecord(g) && typeof g.number === "string" && !groupAt.has(g.number)) groupAt.set(g.number, `groups[${i}].number`);
  });
  for (const d of local) {
    const at = groupAt.get(d.username);
    if (at !== undefined) errors.push({ code: "duplicate-number", path: at, message: `group number ${d.username} is the SIP username of local device "${d.id}"` });
  }
  // Keyed by username / MAC: who holds it (a path in the file, or a local device).
  const usernames = new Map<string, string>(local.map((d) => [d.username, `local device "${d.id}"`]));
  const macs = new Map<string, string>(local.flatMap((d) => (d.mac ? [[d.mac, `local device "${d.id}"`] as [string, string]] : [])));
  /** Owners whose first device took the extension as username. */
  const ownersWithDevice = new Set<string>();
  const out: SiteDeviceInput[] = [];
  let readable = true;
  input.devices.forEach((raw: unknown, i: number) => {
    const at = `devices[${i}]`;
    if (!isRecord(raw) || typeof raw.id !== "string" || typeof raw.owner !== "string" || (raw.kind !== "physical" && raw.kind !== "soft")) {
      readable = false;
      return;
    }
    const d = raw as unknown as SiteDeviceConfig;
    if (localIds.has(d.id)) errors.push({ code: "local-device-id", path: `${at}.id`, message: `"${d.id}" is the id of a device added locally (ringedge device add); remove that device or choose another id` });
    let username = typeof d.username === "string" ? d.username : undefined;
    let how = "";
    if (username === undefined) {
      const ext = extensionOf.get(d.owner);
      if (ext !== undefined && !ownersWithDevice.has(d.owner)) {
        username = ext;
        how = ` (the default: extension of user "${d.owner}")`;
      } else {
        username = d.id;
        how = " (the default: the device id)";
      }
    }
    ownersWithDevice.add(d.owner);
    const group = groupAt.get(username);
    if (group !== undefined && !errors.some((e) => e.path === group)) errors.push({ code: "duplicate-number", path: `${at}.username`, message: `SIP username "${username}"${how} is the number of ${group.replace(/\.number$/, "")}` });
    const holder = usernames.get(username);
    if (holder !== undefined) errors.push({ code: "duplicate-username", path: `${at}.username`, message: `SIP username "${username}"${how} is already used by ${holder}` });
    else usernames.set(username, at);
    if (typeof d.mac === "string") {
      const mac = normalizeMac(d.mac);
      if (mac !== null) {
        const macHolder = macs.get(mac);
        if (macHolder !== undefined) errors.push({ code: "duplicate-mac", path: `${at}.mac`, message: `MAC ${mac} is already used by ${macHolder}` });
        else macs.set(mac, at);
      }
    }
    const dev: SiteDeviceInput = { id: d.id, username, kind: d.kind, owner: d.owner };
    for (const k of ["password", "displayName", "mac"] as const) if (typeof d[k] === "string") dev[k] = d[k];
    // A phone whose model no profile knows could never fetch a configuration: refuse it here.
    if (typeof d.model === "string" && !errors.some((e) => e.path === `${at}.model`)) {
      const m = resolveModel(profiles, d.model);
      if (m.ok) dev.model = m.ref;
      else errors.push({ code: m.reason === "ambiguous" ? "ambiguous-model" : "unknown-model", path: `${at}.model`, message: m.message });
    }
    out.push(dev);
  });
  return readable ? out : null;
}

/** Reads and parses a site file; a problem is a SiteError at "$" (never throws). */
export function readSiteFile(file: string): { ok: true; value: unknown } | { ok: false; errors: SiteError[] } {
  let text: string;
  try {
    text = fs.readFileSync(file, "utf8");
  } catch (e) {
    return { ok: false, errors: [{ code: "unreadable", path: "$", message: `cannot read ${file}: ${(e as Error).message}` }] };
  }
  try {
    return { ok: true, value: JSON.parse(text) as unknown };
  } catch (e) {
    return { ok: false, errors: [{ code: "unreadable", path: "$", message: `${file} is not valid JSON: ${(e as Error).message}` }] };
  }
}

/** Errors as a person reads them: one "path: message" per line. */
export function formatSiteErrors(errors: readonly SiteError[]): string {
  return errors.map((e) => `${e.path}: ${e.message}`).join("\n");
}

export interface SiteServiceOptions {
  store: Store;
  bus?: EventBus;
  log?: Logger;
  now?: () => Date;
  /** Device profiles that device models are checked against (default: the shipped ones). */
  profiles?: ReadonlyMap<string, Profile>;
  /** Called after an apply removed devices or changed their SIP username (their registrations
   *  are void), and after any device change, so the registrar's lookups follow. */
  onDevicesChanged?: (voided: readonly string[]) => void;
  /**
   * Asynchronous checks of a snapshot that passed every other one, run before anything changes
   * (e.g. fetching and verifying the sounds it names, media/site-sounds.ts): errors refuse it.
   */
  prepare?: (c: CheckedSite) => Promise<SiteError[]>;
  /** The agent's own feature codes (its settings: the voicemail code), read at each check: a site's code must not clash with them. */
  agentCodes?: () => ReadonlyArray<{ label: string; code: string }>;
}

/** What the call path reads: swapped as one reference after each apply. */
export interface SiteState {
  record: Readonly<SiteRecord> | null;
  index: SiteIndex;
}

export class SiteService {
  private readonly store: Store;
  private readonly bus: EventBus | undefined;
  private readonly log: Logger | undefined;
  private readonly now: () => Date;
  private readonly profiles: ReadonlyMap<string, Profile> | undefined;
  private readonly onDevicesChanged: ((voided: readonly string[]) => void) | undefined;
  private readonly prepare: ((c: CheckedSite) => Promise<SiteError[]>) | undefined;
  private readonly agentCodes: () => ReadonlyArray<{ label: string; code: string }>;
  private state: SiteState;
  /** Applies run one after another (a console push and a CLI apply may race). */
  private queue: Promise<unknown> = Promise.resolve();

  constructor(opts: SiteServiceOptions) {
    this.store = opts.store;
    this.bus = opts.bus;
    this.log = opts.log;
    this.now = opts.now ?? (() => new Date());
    this.profiles = opts.profiles;
    this.onDevicesChanged = opts.onDevicesChanged;
    this.prepare = opts.prepare;
    this.agentCodes = opts.agentCodes ?? (() => []);
    this.state = this.build();
  }

  /** Loads the applied site from the store. */
  start(): void {
    this.state = this.build();
  }

  stop(): void {
    // Nothing runs in the background; an apply in progress finishes on its own.
  }

  /** The applied site and its routing lookups. Cheap: returns the current reference. */
  current(): SiteState {
    return this.state;
  }

  /** Rebuilds the lookups after a local device change (ringedge device add/remove). */
  refresh(): void {
    this.state = this.build();
  }

  /** Checks a snapshot against everything apply() would, without changing anything. */
  check(input: unknown): ApplyResult {
    const r = checkSiteConfig(input, this.store.listDevices(), this.profiles, this.agentCodes());
    if (!r.ok) return r;
    return this.staleness(r.value) ?? { ok: true, version: r.value.version, changed: true };
  }

  /**
   * Applies a snapshot as a whole: every check passes and the store has it on disk before this
   * resolves ok, or nothing changes. A version not newer than the applied one changes nothing
   * (`changed: false`). Never rejects.
   */
  apply(input: unknown, source: SiteSource): Promise<ApplyResult> {
    const run = this.queue.then(() => this.applyNow(input, source));
    this.queue = run.catch(() => undefined);
    return run.catch((e: unknown) => ({ ok: false, errors: [{ code: "persist-failed", path: "$", message: `internal error: ${(e as Error).message}` }] }) as ApplyResult);
  }

  private staleness(c: CheckedSite): ApplyResult | null {
    const cur = this.store.site;
    const standing = versionStanding(cur, c);
    if (cur === null || standing === "newer") return null;
    const note =
      standing === "same"
        ? `version ${c.version} is already applied`
        : standing === "conflict"
          ? `version ${c.version} is already applied with different content; raise "version" to apply this one`
          : `version ${c.version} is older than the applied version ${cur.version}`;
    return { ok: true, version: cur.version, changed: false, note };
  }

  private async applyNow(input: unknown, source: SiteSource): Promise<ApplyResult> {
    const checked = checkSiteConfig(input, this.store.listDevices(), this.profiles, this.agentCodes());
    if (!checked.ok) return checked;
    const c = checked.value;
    const stale = this.staleness(c);
    if (stale) return stale;
    const prepared = this.prepare === undefined ? [] : await this.prepare(c);
    if (prepared.length > 0) return { ok: false, errors: prepared };

    const record: SiteRecord = { version: c.version, hash: c.hash, appliedAt: this.now().toISOString(), source, settings: c.settings, users: c.site.users, groups: c.site.groups };
    if (c.site.knownCallers !== undefined) record.knownCallers = c.site.knownCallers;
    if (c.site.inbound !== undefined) record.inbound = c.site.inbound;
    if (c.site.menus !== undefined) record.menus = c.site.menus;
    // What to put back if the disk refuses the new snapshot.
    const prevRecord = this.store.site;
    const prevDevices = this.store.listDevices().filter((d) => d.origin === "site");
    const prevUsernames = new Map(prevDevices.map((d) => [d.id, d.username]));
    const applied = this.store.applySite(record, c.devices);
    if (!applied.ok) return { ok: false, errors: [{ code: "schema", path: applied.error.field ? `devices.${applied.error.field}` : "$", message: applied.error.message }] };
    try {
      await this.store.flush();
    } catch (e) {
      const undo = this.store.applySite(prevRecord === null ? null : structuredClone(prevRecord) as SiteRecord, prevRecord === null ? [] : prevDevices.map(toInput));
      if (!undo.ok) this.log?.error("could not restore the previous site after a failed write", { err: undo.error.message });
      this.log?.error("site not applied: the store could not save it", { version: c.version, err: (e as Error).message });
      return { ok: false, errors: [{ code: "persist-failed", path: "$", message: `the store could not save the site: ${(e as Error).message}; nothing was applied` }] };
    }
    this.state = this.build();
    const voided = [
      ...applied.value.removed,
      ...applied.value.updated.filter((id) => prevUsernames.get(id) !== this.store.getDevice(id)?.username),
    ];
    this.onDevicesChanged?.(voided);
    this.log?.info("site applied", { version: c.version, source, users: record.users.length, groups: record.groups.length, added: applied.value.added.length, updated: applied.value.updated.length, removed: applied.value.removed.length });
    this.bus?.emit("site.applied", { version: c.version, source });
    return { ok: true, version: c.version, changed: true, devices: applied.value };
  }

  private build(): SiteState {
    const record = this.store.site;
    if (record === null) return { record: null, index: indexSite({ users: [], devices: [], groups: [] }) };
    const users = new Set(record.users.map((u) => u.id));
    // Local devices with a site user as owner ring for that user too.
    const devices: DeviceRef[] = this.store
      .listDevices()
      .filter((d) => d.owner !== undefined && users.has(d.owner))
      .map((d) => ({ id: d.id, ownerId: d.owner as string, kind: d.kind }));
    const site: Site = { users: record.users, devices, groups: record.groups };
    if (record.settings.timeZone !== undefined) site.timeZone = record.settings.timeZone;
    if (record.knownCallers !== undefined) site.knownCallers = record.knownCallers;
    if (record.inbound !== undefined) site.inbound = record.inbound;
    if (record.menus !== undefined) site.menus = record.menus;
    return { record, index: indexSite(site) };
  }
}

function toInput(d: Readonly<DeviceRecord>): SiteDeviceInput {
  const out: SiteDeviceInput = { id: d.id, username: d.username, password: d.password, kind: d.kind };
  if (d.owner !== undefined) out.owner = d.owner;
  if (d.displayName !== undefined) out.displayName = d.displayName;
  if (d.mac !== undefined) out.mac = d.mac;
  if (d.model !== undefined) out.model = d.model;
  if (d.provisioning !== undefined) out.provisioning = { ...d.provisioning };
  return out;
}
