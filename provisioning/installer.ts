// Installer commands for phones: the agent-side command table (run through the control socket,
// or on the store directly when no agent runs; the serial console reuses it) and the CLI side
// (argument handling, row-by-row reports, progress bars on a terminal). Every command checks all
// of its input first and then changes exactly what it says, or nothing. Secrets (SIP password,
// provisioning password, URL token) are generated strong and random and never printed unless
// asked with --show-secrets.

import { randomBytes } from "node:crypto";
import fs from "node:fs";
import net from "node:net";
import { advertisedHost, isWildcard } from "../agent/sip/advertise.ts";
import type { AgentView } from "../agent/console/commands.ts";
import { CommandError, argString, type CommandTable } from "../agent/console/control.ts";
import type { Settings } from "../agent/config.ts";
import { tryParseHostPort } from "../agent/config.ts";
import type { DeviceRecord, SeenPhone } from "../agent/store/schema.ts";
import { EXTENSION_RE, MAX_CSV_BYTES, parsePhoneCsv, phonesToCsv, type PhoneRow, type RowError } from "./csv.ts";
import { FirmwareStore, firmwareReport } from "./firmware.ts";
import { findModel, modelRef, resolveModel, shownModel, type Profile } from "./profiles.ts";
import { normaliseMac } from "./render.ts";
import type { ResyncResult } from "./resync.ts";
import { defaultProfiles } from "./service.ts";
import { phoneRecord } from "./store-directory.ts";

/** 144 bits, URL-safe: typed into nothing, carried by provisioning. */
function strongPassword(): string {
  return randomBytes(18).toString("base64url");
}

export interface PhoneView {
  id: string;
  mac: string;
  model?: string;
  vendor?: string;
  extension: string;
  name?: string;
  owner?: string;
  origin: "site" | "local";
  registered?: boolean;
  online?: boolean;
  firmware?: string;
  lastFetch?: string;
  ip?: string;
  provisioningUser?: string;
  /** First-boot trust: who took the bootstrap, and a second client that tried (credentials rotated). */
  claimedBy?: string;
  conflict?: string;
  /** Only with showSecrets. */
  secrets?: { sipPassword: string; provisioningPassword: string; token: string };
}

export interface ImportRowResult {
  line: number;
  mac?: string;
  extension?: string;
  model?: string;
  ok: boolean;
  applied: boolean;
  error?: string;
}


function profilesOf(view: AgentView & { provisioning?: { profiles: ReadonlyMap<string, Profile> } }): ReadonlyMap<string, Profile> {
  return view.provisioning?.profiles ?? defaultProfiles();
}

/** Check a new phone against the store; returns the error or undefined. */
function phoneProblem(view: AgentView, p: { mac: string; extension: string }, reserved?: { macs: Set<string>; exts: Set<string> }): string | undefined {
  const byMac = view.store.findDeviceByMac(p.mac);
  if (byMac) return `MAC ${p.mac} is already phone '${byMac.username}' (${byMac.id})`;
  if (view.store.findDeviceByUsername(p.extension)) return `extension ${p.extension} is already in use`;
  if (view.store.getDevice(`dev-${p.extension}`)) return `device id dev-${p.extension} is already in use`;
  if (reserved?.macs.has(p.mac)) return `MAC ${p.mac} is listed twice`;
  if (reserved?.exts.has(p.extension)) return `extension ${p.extension} is listed twice`;
  // A group's number dials the group: a phone with that extension could never be called.
  const group = view.store.site?.groups.find((g) => g.number === p.extension);
  if (group) return `extension ${p.extension} is the number of group '${group.id}'`;
  return undefined;
}

function addPhone(view: AgentView, p: { mac: string; model: string; extension: string; name?: string; owner?: string }): Readonly<DeviceRecord> {
  const added = view.store.addDevice({
    id: `dev-${p.extension}`,
    username: p.extension,
    password: strongPassword(),
    kind: "physical",
    mac: p.mac,
    model: p.model,
    origin: "local",
    ...(p.name ? { displayName: p.name } : {}),
    ...(p.owner ? { owner: p.owner } : {}),
  });
  if (!added.ok) throw new CommandError(added.error.message);
  return added.value;
}

function viewPhone(view: AgentView, d: Readonly<DeviceRecord>, seen: ReadonlyMap<string, Readonly<SeenPhone>>, showSecrets: boolean): PhoneView {
  const found = d.model ? findModel(profilesOf(view), d.model) : undefined;
  const out: PhoneView = { id: d.id, mac: d.mac!, extension: d.username, origin: d.origin ?? "local" };
  if (d.model) out.model = shownModel(profilesOf(view), d.model);
  if (found) out.vendor = found.profile.vendor;
  if (d.displayName) out.name = d.displayName;
  if (d.owner) out.owner = d.owner;
  if (view.presence) {
    const p = view.presence().find((x) => x.deviceId === d.id);
    out.registered = p?.registered ?? false;
    out.online = p?.online ?? false;
  }
  const s = seen.get(d.mac!);
  if (s?.firmware) out.firmware = s.firmware;
  if (s) {
    out.lastFetch = s.lastSeen;
    out.ip = s.ip;
  }
  if (d.provisioning) out.provisioningUser = d.provisioning.user;
  const claim = d.provisioning?.claimedBy;
  if (claim) out.claimedBy = `${claim.ip}${claim.cert ? " (device certificate)" : ""} at ${claim.at}`;
  const c = d.provisioning?.conflict;
  if (c) out.conflict = `${c.at}: ${c.ip} asked for the ${c.stage === "full" ? "full config" : "bootstrap"} after ${c.claimedIp} had claimed the phone; credentials rotated, run 'ringedge phone rebootstrap ${d.mac}'`;
  if (showSecrets && d.provisioning) out.secrets = { sipPassword: d.password, provisioningPassword: d.provisioning.password, token: d.provisioning.token };
  return out;
}

function findPhone(view: AgentView, ref: string): Readonly<DeviceRecord> {
  const mac = normaliseMac(ref);
  const d = (mac ? view.store.findDeviceByMac(mac) : undefined) ?? view.store.findDeviceByUsername(ref) ?? view.store.getDevice(ref);
  if (!d || d.mac === undefined) throw new CommandError(`no phone '${ref}' (give its MAC, extension or id)`);
  return d;
}

function checkedModel(view: AgentView, model: string | undefined): { id: string; vendor: string } {
  if (!model) throw new CommandError("--model is required (e.g. yealink/T46U, poly/VVX411, snom/D785, grandstream/GXP2170, cisco/CP-7841-3PCC, fanvil/X4U)");
  const found = resolveModel(profilesOf(view), model);
  if (!found.ok) throw new CommandError(found.message);
  return { id: found.ref, vendor: found.profile.vendor };
}

function checkedExtension(ext: string | undefined): string {
  if (!ext) throw new CommandError("--extension is required");
  if (!EXTENSION_RE.test(ext)) throw new CommandError(`extension '${ext}' is not valid: 1-32 of letters, digits, '.', '_', '-'`);
  return ext;
}

function checkedName(name: string | undefined): string | undefined {
  if (name !== undefined && (name.length > 64 || /[\x00-\x1f\x7f]/.test(name))) throw new CommandError("name must be at most 64 printable characters");
  return name;
}

/** The phone commands, merged into the agent's command table (agent/console/commands.ts). */
export function phoneCommands(view: AgentView & { provisioning?: import("./service.ts").ProvisioningHooks }): CommandTable {
  const seenMap = (): Map<string, Readonly<SeenPhone>> => new Map(view.store.listSeenPhones().map((s) => [s.mac, s]));
  /** The phone's MAC from the arguments, normalised; any other text is the user's error. */
  const macArg = (args: Record<string, unknown>): string => {
    const macText = argString(args, "mac", true);
    const mac = normaliseMac(macText);
    if (!mac) throw new CommandError(`'${macText}' is not a phone's MAC address (12 hex digits, unicast)`);
    return mac;
  };
  /** Add (or adopt) a phone after checking every argument; nothing is stored when one is bad. */
  const addChecked = async (args: Record<string, unknown>, mac: string, modelRef: string | undefined): Promise<unknown> => {
    const model = checkedModel(view, modelRef);
    const extension = checkedExtension(argString(args, "extension"));
    const name = checkedName(argString(args, "name"));
    const owner = argString(args, "owner");
    const problem = phoneProblem(view, { mac, extension });
    if (problem) throw new CommandError(problem);
    const d = addPhone(view, { mac, model: model.id, extension, ...(name ? { name } : {}), ...(owner ? { owner } : {}) });
    await flush();
    return viewPhone(view, d, seenMap(), args.showSecrets === true);
  };
  const phones = (): Readonly<DeviceRecord>[] => view.store.listDevices().filter((d) => d.mac !== undefined);
  const flush = async (): Promise<void> => {
    await view.store.flush();
    view.devicesChanged?.();
  };
  return {
    "phone.list": () => {
      const seen = seenMap();
      return phones().map((d) => viewPhone(view, d, seen, false));
    },
    "phone.show": (args) => {
      const d = findPhone(view, argString(args, "ref", true));
      const v = viewPhone(view, d, seenMap(), args.showSecrets === true) as PhoneView & { urls?: string[] };
      const urls = view.provisioning?.urls();
      if (urls && args.showSecrets === true && d.provisioning) v.urls = urls.map((u) => `${u}p/${d.provisioning!.token}/`);
      return v;
    },
    "phone.add": async (args) => addChecked(args, macArg(args), argString(args, "model")),
    "phone.adopt": async (args) => {
      const mac = macArg(args);
      const seen = seenMap().get(mac);
      if (!seen) throw new CommandError(`no phone with MAC ${mac} has asked for its configuration (see: ringedge phone seen)`);
      if (view.store.findDeviceByMac(mac)) throw new CommandError(`MAC ${mac} is already adopted`);
      // The model the phone announced when the installer names none.
      const announced = seen.model !== undefined ? findModel(profilesOf(view), seen.model, seen.vendor) : undefined;
      return addChecked(args, mac, argString(args, "model") ?? (announced ? modelRef(announced.profile, announced.model) : undefined));
    },
    "phone.remove": async (args) => {
      const d = findPhone(view, argString(args, "ref", true));
      view.store.removeDevice(d.id);
      await flush();
      view.devicesChanged?.(d.id);
      return { removed: d.mac, extension: d.username, id: d.id };
    },
    "phone.rebootstrap": async (args) => {
      const d = findPhone(view, argString(args, "ref", true));
      // New SIP and provisioning credentials, a fresh window: whatever any client took before is
      // worthless, and the phone's registrations made with the old password are dropped.
      const r = view.store.rotateCredentials(d.id, { bootstrapOpenedAt: new Date().toISOString() });
      if (!r.ok) throw new CommandError(r.error.message);
      await view.store.flush();
      view.devicesChanged?.(d.id);
      return { mac: d.mac, id: d.id, rotated: true };
    },
    "phone.seen": () => view.store.listSeenPhones().filter((s) => view.store.findDeviceByMac(s.mac) === undefined),
    "phone.import": async (args) => {
      const rows = args.rows;
      if (!Array.isArray(rows) || rows.length > 5000) throw new CommandError("rows must be a list of at most 5000 phones");
      const dryRun = args.dryRun === true;
      const allowPartial = args.allowPartial === true;
      const reserved = { macs: new Set<string>(), exts: new Set<string>() };
      const results: ImportRowResult[] = [];
      const good: PhoneRow[] = [];
      for (const item of rows as unknown[]) {
        const raw = (typeof item === "object" && item !== null ? item : {}) as Record<string, unknown>;
        const line = typeof raw?.line === "number" ? raw.line : 0;
        const mac = typeof raw?.mac === "string" ? normaliseMac(raw.mac) : undefined;
        const extension = typeof raw?.extension === "string" ? raw.extension : "";
        const modelText = typeof raw?.model === "string" ? raw.model : "";
        const found = resolveModel(profilesOf(view), modelText);
        const r: ImportRowResult = { line, ok: false, applied: false, ...(mac ? { mac } : {}), ...(extension ? { extension } : {}), ...(found.ok ? { model: found.ref } : {}) };
        if (!mac) r.error = "bad MAC";
        else if (!found.ok) r.error = found.message;
        else if (!EXTENSION_RE.test(extension)) r.error = "bad extension";
        else r.error = phoneProblem(view, { mac, extension }, reserved);
        const name = typeof raw.name === "string" ? raw.name : undefined;
        const owner = typeof raw.owner === "string" ? raw.owner : undefined;
        if (r.error === undefined && name !== undefined && checkedNameSafe(name)) r.error = "bad name";
        if (r.error === undefined && mac && found.ok) {
          r.ok = true;
          delete r.error;
          reserved.macs.add(mac);
          reserved.exts.add(extension);
          good.push({ line, mac, model: found.ref, vendor: found.profile.vendor, extension, ...(name ? { name } : {}), ...(owner ? { owner } : {}) });
        }
        results.push(r);
      }
      const bad = results.filter((r) => !r.ok).length;
      if (!dryRun && (bad === 0 || allowPartial)) {
        for (const p of good) {
          const r = results.find((x) => x.line === p.line && x.mac === p.mac)!;
          try {
            addPhone(view, p);
            r.applied = true;
          } catch (e) {
            r.ok = false;
            r.error = (e as Error).message;
          }
        }
        await flush();
      }
      return { results, applied: results.filter((r) => r.applied).length, failed: results.filter((r) => !r.ok).length, dryRun };
    },
    "phone.targets": (args) => {
      if (args.all === true) return phones().map((d) => d.id);
      const group = argString(args, "group");
      if (group !== undefined) {
        const g = view.store.site?.groups.find((x) => x.id === group || x.number === group);
        if (!g) throw new CommandError(`no group '${group}' in the applied site`);
        const members = new Set(g.members);
        return phones().filter((d) => d.owner !== undefined && members.has(d.owner)).map((d) => d.id);
      }
      return [findPhone(view, argString(args, "ref", true)).id];
    },
    "phone.resync": async (args): Promise<ResyncResult[]> => {
      if (!view.provisioning) throw new CommandError("re-sync needs the running agent (phones are reached over their SIP registrations)");
      const ids = args.deviceIds;
      if (!Array.isArray(ids) || ids.length > 1000 || !ids.every((x) => typeof x === "string")) throw new CommandError("deviceIds must be a list of device ids");
      return view.provisioning.resync(ids as string[], args.reboot === true);
    },
    "phone.export": () => phones().map((d) => ({ mac: d.mac!, extension: d.username, ...(d.model ? { model: shownModel(profilesOf(view), d.model) } : {}), ...(d.displayName ? { name: d.displayName } : {}), ...(d.owner ? { owner: d.owner } : {}) })),
    "phone.firmware": () => view.provisioning?.firmwareReport() ?? firmwareReport(phones().flatMap((d) => phoneRecord(d) ?? []), view.store.listSeenPhones(), profilesOf(view), new FirmwareStore({ dir: undefined }), findModel),
    "provision.urls": () => view.provisioning?.urls() ?? [],
  };
}

function checkedNameSafe(name: string): boolean {
  return name.length > 64 || /[\x00-\x1f\x7f]/.test(name);
}

// =============================================================================================
// CLI side

export interface CliContext {
  sub: string | undefined;
  rest: string[];
  flags: Map<string, string | true>;
  json: boolean;
  out: (s: string) => void;
  err: (s: string) => void;
  /** Runs a command on the agent (or on the store when none runs). */
  execute: (cmd: string, args: Record<string, unknown>) => Promise<unknown>;
  settings: Settings;
  /** Where progress bars go (stderr); drawn only when it is a TTY. */
  progress?: { isTTY?: boolean; write(s: string): unknown };
}

export const PHONE_HELP = `usage:
  ringedge phone add <mac> --model <vendor/model> --extension <ext> [--name <n>] [--owner <user>] [--show-secrets] [--json]
  ringedge phone adopt <mac> --extension <ext> [--model <vendor/model>] [--name <n>] [--owner <user>]
  ringedge phone remove <mac|extension>
  ringedge phone list [--json]
  ringedge phone show <mac|extension> [--show-secrets] [--json]
  ringedge phone seen [--json]                  phones that asked for a config, waiting for adoption
  ringedge phone import <file.csv> [--dry-run] [--allow-partial] [--json]
  ringedge phone resync <mac|extension> | --group <id> | --all [--reboot] [--json]
  ringedge phone export [--csv]
  ringedge phone firmware [--json]             which phone runs which firmware, against the pins
  ringedge phone rebootstrap <mac|extension>   new credentials; a replaced or reset phone may fetch its bootstrap once more

CSV columns (header line required): mac,model,extension[,name,owner]; model as <vendor>/<model>
(e.g. yealink/T46U; a bare model name only one vendor has is accepted). Nothing is imported
when a row is bad unless --allow-partial. SIP and provisioning credentials are generated; they
are printed only with --show-secrets.`;

export const PROVISION_HELP = `usage: ringedge provision dhcp-hints [--host <ip>]

Prints the DHCP options that point the site's phones at this appliance (option 66 for every
vendor; 43 Yealink/Fanvil; 150, 159 and 160 Cisco; 160 Poly; 114 Gigaset) and ready-made
dnsmasq / ISC dhcpd lines.`;

/** A one-line progress bar redrawn in place; silent when the stream is not a terminal. */
export function progressBar(stream: CliContext["progress"], total: number, label: string): { update(done: number): void; end(): void } {
  const draw = stream?.isTTY === true && total > 0;
  let last = -1;
  return {
    update(done: number) {
      if (!draw) return;
      const width = 30;
      const filled = Math.round((done / total) * width);
      if (filled === last && done !== total) return;
      last = filled;
      stream!.write(`\r${label} [${"#".repeat(filled)}${" ".repeat(width - filled)}] ${done}/${total}`);
    },
    end() {
      if (draw) stream!.write("\n");
    },
  };
}

const table = (header: string[], rows: string[][]): string => {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  return [header, ...rows].map((r) => r.map((c, i) => (c ?? "").padEnd(widths[i]!)).join("  ").trimEnd()).join("\n") + "\n";
};

function flagStr(flags: Map<string, string | true>, name: string): string | undefined {
  const v = flags.get(name);
  if (v === true) throw new CommandError(`--${name} needs a value`);
  return v;
}

function chunks<T>(xs: readonly T[], n: number): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < xs.length; i += n) out.push(xs.slice(i, i + n));
  return out;
}

export async function phoneCli(c: CliContext): Promise<number> {
  const { sub, rest, flags, json, out, err } = c;
  const print = (v: unknown, text: string): void => out(json ? JSON.stringify(v, null, 2) + "\n" : text);
  const showSecrets = flags.has("show-secrets");
  const details = (p: PhoneView & { urls?: string[] }): string =>
    Object.entries(p)
      .map(([k, v]) => `${k.padEnd(16)} ${typeof v === "object" ? JSON.stringify(v) : String(v)}`)
      .join("\n") + "\n";
  switch (sub) {
    case "add":
    case "adopt": {
      const mac = rest[0];
      if (!mac) return err(`ringedge: phone ${sub} needs a MAC address\n${PHONE_HELP}\n`), 2;
      const args: Record<string, unknown> = { mac, showSecrets };
      for (const [flag, key] of [["model", "model"], ["extension", "extension"], ["name", "name"], ["owner", "owner"]] as const) {
        const v = flagStr(flags, flag);
        if (v !== undefined) args[key] = v;
      }
      const p = (await c.execute(`phone.${sub}`, args)) as PhoneView;
      print(p, `${sub === "add" ? "added" : "adopted"} phone ${p.mac} (${p.model}) extension ${p.extension}\n${showSecrets && p.secrets ? details(p) : "credentials generated (show them with --show-secrets)\n"}`);
      return 0;
    }
    case "remove": {
      if (!rest[0]) return err(`ringedge: phone remove needs a MAC or extension\n`), 2;
      const r = (await c.execute("phone.remove", { ref: rest[0] })) as { removed: string; extension: string };
      print(r, `removed phone ${r.removed} (extension ${r.extension})\n`);
      return 0;
    }
    case "rebootstrap": {
      if (!rest[0]) return err(`ringedge: phone rebootstrap needs a MAC or extension\n`), 2;
      const r = (await c.execute("phone.rebootstrap", { ref: rest[0] })) as { mac: string };
      print(r, `phone ${r.mac}: new SIP and provisioning credentials; it may fetch its bootstrap once within ${Math.round(c.settings.provisioningBootstrapWindowS / 60)} min (factory-reset it so it asks)\n`);
      return 0;
    }
    case "list": {
      const list = (await c.execute("phone.list", {})) as PhoneView[];
      print(list, table(["MAC", "MODEL", "EXT", "STATE", "FIRMWARE", "NAME"], list.map((p) => [p.mac, p.model ?? "-", p.extension, p.conflict ? "CONFLICT" : p.online === undefined ? "-" : p.online ? "online" : p.registered ? "no-answer" : "offline", p.firmware ?? "-", p.name ?? ""])));
      const conflicts = list.filter((p) => p.conflict);
      if (!json && conflicts.length > 0) err(conflicts.map((p) => `warning: phone ${p.mac}: ${p.conflict}\n`).join(""));
      return 0;
    }
    case "show": {
      if (!rest[0]) return err(`ringedge: phone show needs a MAC or extension\n`), 2;
      const p = (await c.execute("phone.show", { ref: rest[0], showSecrets })) as PhoneView;
      print(p, details(p));
      return 0;
    }
    case "seen": {
      const list = (await c.execute("phone.seen", {})) as SeenPhone[];
      print(list, list.length === 0 ? "no phones waiting for adoption\n" : table(["MAC", "VENDOR", "MODEL", "FIRMWARE", "IP", "FIRST SEEN", "LAST SEEN", "REQUESTS"], list.map((s) => [s.mac, s.vendor ?? "-", s.model ?? "-", s.firmware ?? "-", s.ip, s.firstSeen, s.lastSeen, String(s.requests)])));
      return 0;
    }
    case "export": {
      const list = (await c.execute("phone.export", {})) as Array<{ mac: string; model?: string; extension: string; name?: string; owner?: string }>;
      out(flags.has("csv") ? phonesToCsv(list) : JSON.stringify(list, null, 2) + "\n");
      return 0;
    }
    case "firmware": {
      const rows = (await c.execute("phone.firmware", {})) as ReturnType<typeof firmwareReport>;
      print(rows, table(["MAC", "MODEL", "EXT", "RUNNING", "PINNED", "STATUS", "IMAGE"], rows.map((r) => [r.mac, r.model ?? "-", r.extension ?? "-", r.running ?? "-", r.pinned ?? "-", r.status, r.installed ? "installed" : "missing"])));
      return 0;
    }
    case "import":
      return importCli(c);
    case "resync":
      return resyncCli(c);
    default:
      err(PHONE_HELP + "\n");
      return 2;
  }
}

async function importCli(c: CliContext): Promise<number> {
  const { rest, flags, json, out, err } = c;
  const file = rest[0];
  if (!file) return err("ringedge: phone import needs a CSV file\n"), 2;
  let buf: Buffer;
  try {
    const st = fs.statSync(file);
    if (!st.isFile()) throw new Error("not a regular file");
    if (st.size > MAX_CSV_BYTES) throw new Error(`larger than ${MAX_CSV_BYTES} bytes`);
    buf = fs.readFileSync(file);
  } catch (e) {
    err(`ringedge: cannot read ${file}: ${(e as Error).message}\n`);
    return 1;
  }
  const dryRun = flags.has("dry-run");
  const allowPartial = flags.has("allow-partial");
  const parsed = parsePhoneCsv(buf, defaultProfiles());
  // Store-side checks (MAC or extension already taken) by a dry run on the agent, in chunks small
  // enough for one control-socket line.
  const results: ImportRowResult[] = [];
  for (const part of chunks(parsed.rows, 500)) {
    const r = (await c.execute("phone.import", { rows: part, dryRun: true })) as { results: ImportRowResult[] };
    results.push(...r.results);
  }
  const errors: RowError[] = [...parsed.errors, ...results.filter((r) => !r.ok).map((r) => ({ line: r.line, message: r.error ?? "rejected" }))].sort((a, b) => a.line - b.line);
  const goodLines = new Set(results.filter((r) => r.ok).map((r) => r.line));
  const good = parsed.rows.filter((r) => goodLines.has(r.line));
  let applied = 0;
  const applyErrors: RowError[] = [];
  const willApply = !dryRun && good.length > 0 && (errors.length === 0 || allowPartial);
  if (willApply) {
    const bar = progressBar(c.progress, good.length, "importing");
    let done = 0;
    for (const part of chunks(good, 100)) {
      const r = (await c.execute("phone.import", { rows: part, dryRun: false, allowPartial })) as { results: ImportRowResult[] };
      applied += r.results.filter((x) => x.applied).length;
      applyErrors.push(...r.results.filter((x) => !x.ok).map((x) => ({ line: x.line, message: x.error ?? "rejected" })));
      done += part.length;
      bar.update(done);
    }
    bar.end();
  }
  const allErrors = [...errors, ...applyErrors].sort((a, b) => a.line - b.line);
  const report = { file, rows: parsed.total, valid: good.length, applied, dryRun, errors: allErrors };
  if (json) out(JSON.stringify(report, null, 2) + "\n");
  else {
    const lines: string[] = [];
    const errByLine = new Map<number, RowError[]>();
    for (const e of allErrors) errByLine.set(e.line, [...(errByLine.get(e.line) ?? []), e]);
    for (const e of allErrors.filter((x) => !parsed.rows.some((r) => r.line === x.line) && !results.some((r) => r.line === x.line))) lines.push(`line ${e.line}: error${e.column ? ` (${e.column})` : ""}: ${e.message}`);
    for (const r of parsed.rows) {
      const es = errByLine.get(r.line);
      lines.push(es ? `line ${r.line}: error: ${es.map((e) => e.message).join("; ")}` : `line ${r.line}: ok   ${r.mac} ${r.model} ext ${r.extension}`);
    }
    const uniq = [...new Set(lines)].sort((a, b) => Number(/line (\d+)/.exec(a)?.[1]) - Number(/line (\d+)/.exec(b)?.[1]));
    uniq.push(
      dryRun
        ? `dry run: ${good.length} of ${parsed.total} rows valid, ${allErrors.length} problem(s); nothing applied`
        : willApply
          ? `imported ${applied} phone(s)${allErrors.length ? `; ${allErrors.length} problem(s), those rows skipped` : ""}`
          : `nothing imported: ${allErrors.length} problem(s)${allErrors.length ? " (fix them, or use --allow-partial)" : ""}`,
    );
    out(uniq.join("\n") + "\n");
  }
  return allErrors.length === 0 ? 0 : 1;
}

async function resyncCli(c: CliContext): Promise<number> {
  const { rest, flags, json, out, err } = c;
  const group = flagStr(flags, "group");
  const all = flags.has("all");
  if (!rest[0] && group === undefined && !all) return err("ringedge: phone resync needs a MAC/extension, --group <id> or --all\n"), 2;
  const ids = (await c.execute("phone.targets", all ? { all: true } : group !== undefined ? { group } : { ref: rest[0] })) as string[];
  const reboot = flags.has("reboot");
  const results: ResyncResult[] = [];
  const bar = progressBar(c.progress, ids.length, reboot ? "rebooting" : "re-syncing");
  bar.update(0);
  for (const part of chunks(ids, 20)) {
    results.push(...((await c.execute("phone.resync", { deviceIds: part, reboot })) as ResyncResult[]));
    bar.update(results.length);
  }
  bar.end();
  const failed = results.filter((r) => !r.ok).length;
  if (json) out(JSON.stringify({ results, ok: results.length - failed, failed }, null, 2) + "\n");
  else {
    out(results.map((r) => `${(r.mac ?? r.deviceId).padEnd(14)} ${r.username.padEnd(10)} ${r.ok ? "ok" : `failed: ${r.error}`}${r.rebootUnsupported ? " (no reboot event for this vendor: re-sync sent)" : ""}`).join("\n") + (results.length ? "\n" : ""));
    out(`${results.length - failed} of ${results.length} phone(s) re-synced\n`);
  }
  return failed === 0 ? 0 : 1;
}

// --- DHCP hints ------------------------------------------------------------------------------

export interface DhcpHint {
  option: number;
  vendors: string;
  value: string;
  note: string;
}

/** The DHCP options that send each vendor's phones to `url` (provisioning.md §1). */
export function dhcpHints(url: string, host: string): DhcpHint[] {
  const u = url.endsWith("/") ? url : `${url}/`;
  return [
    { option: 66, vendors: "all (Yealink, Poly, Snom, Grandstream, Cisco, Fanvil)", value: u, note: "tftp-server-name; every vendor accepts a full http(s) URL here" },
    { option: 43, vendors: "Yealink, Fanvil", value: u, note: "vendor-specific information, tried after option 66 (Yealink: custom option, 66, 43)" },
    { option: 150, vendors: "Cisco", value: host, note: "TFTP server address (an IP, not a URL): older Cisco firmware" },
    { option: 159, vendors: "Cisco MPP", value: `${u}$PSN.xml`, note: "configuration URL; Cisco expands $PSN to the model number" },
    { option: 160, vendors: "Poly, Cisco MPP", value: u, note: "Poly reads 160 before 66; Cisco MPP and Panasonic try 160 too" },
    { option: 114, vendors: "Gigaset", value: u, note: "default-url" },
  ];
}

function guessHost(settings: Settings, override: string | undefined): string {
  if (override) {
    if (!net.isIP(override)) throw new CommandError("--host must be an IP address (phones are not told names that need DNS)");
    return override;
  }
  const hp = tryParseHostPort(settings.httpListen, { allowPortZero: true });
  // On a wildcard: the advertised address (sipAdvertise), else this host's first non-loopback
  // one; with none, a placeholder: loopback is no address to give phones.
  const host = advertisedHost(hp.ok ? hp.value.host : "0.0.0.0", settings.sipAdvertise);
  return hp.ok && !isWildcard(hp.value.host) ? host : host === "127.0.0.1" || host === "::1" ? "<appliance-ip>" : host;
}

export async function provisionCli(c: CliContext): Promise<number> {
  if (c.sub !== "dhcp-hints") return c.err(PROVISION_HELP + "\n"), 2;
  const host = guessHost(c.settings, flagStr(c.flags, "host"));
  const hp = tryParseHostPort(c.settings.httpListen, { allowPortZero: true });
  let port = hp.ok ? hp.value.port : 8080;
  if (port === 0) {
    const urls = (await c.execute("provision.urls", {}).catch(() => [])) as string[];
    const m = urls.map((u) => /^http:\/\/[^/]*:(\d+)\//.exec(u)).find(Boolean);
    port = m ? Number(m[1]) : 8080;
  }
  const url = `http://${net.isIPv6(host) ? `[${host}]` : host}${port === 80 ? "" : `:${port}`}/`;
  const hints = dhcpHints(url, host);
  if (c.json) return c.out(JSON.stringify({ url, hints }, null, 2) + "\n"), 0;
  const lines = [
    `Provisioning URL: ${url}`,
    "",
    ...hints.map((h) => `option ${String(h.option).padEnd(4)} ${h.value.padEnd(url.length + 9)} ${h.vendors} — ${h.note}`),
    "",
    "dnsmasq:",
    `  dhcp-option=66,"${url}"`,
    `  dhcp-option=150,${host}`,
    `  dhcp-option=159,"${url}$PSN.xml"`,
    `  dhcp-option=160,"${url}"`,
    `  dhcp-option=114,"${url}"`,
    "",
    "ISC dhcpd:",
    `  option tftp-server-name "${url}";`,
    `  option cisco-tftp code 150 = ip-address;  option cisco-tftp ${host};`,
    `  option mpp-config code 159 = text;        option mpp-config "${url}$PSN.xml";`,
    `  option poly-boot code 160 = text;         option poly-boot "${url}";`,
    "",
    "Phones that ignore DHCP find the server by SIP PnP (setting pnpEnabled) or by typing the URL.",
  ];
  c.out(lines.join("\n") + "\n");
  return 0;
}
