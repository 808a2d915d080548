// `ringedge site|group|user ...`: argument handling and text output of the site commands. The
// work happens in site-commands.ts, inside the running agent (control socket) or on the store.
import type { ApplyResult } from "../site/site.ts";
import { formatSiteErrors, readSiteFile } from "../site/site.ts";
import type { GroupSummary, GroupView, MemberView, SiteView } from "./site-commands.ts";

export const SITE_HELP: Record<string, string> = {
  site: `usage:
  ringedge site apply <file> [--dry-run] [--json]
  ringedge site show [--json]

apply: checks a site file (users, devices, groups, settings; docs/contract.md) as a whole and
applies it: all of it or nothing. Every problem is printed as 'path: message' (exit 1). With
--dry-run nothing is applied. A file whose "version" is not newer than the applied one changes
nothing. With a running agent the file goes through its control socket and the agent switches
to it at once; otherwise the store is changed directly.
show: the applied site's version, origin, settings and counts.`,
  group: `usage:
  ringedge group list [--json]
  ringedge group show <id|number> [--json]

Call groups of the applied site. show lists the members in ring order with their extension,
availability and devices (and, with a running agent, whether each device is online).`,
  user: `usage:
  ringedge user list [--json]

Operators of the applied site, with their extension, state now (available, away or dnd, as the
site or their phone's feature code set it; the groups they logged out of; who changed it last)
and devices.`,
};

export type Exec = (cmd: string, args: Record<string, unknown>) => Promise<unknown>;

export interface SiteCliIo {
  exec: Exec;
  json: boolean;
  out: (s: string) => void;
  err: (s: string) => void;
}

/** Runs one site/group/user command; returns the exit code, or null for an unknown sub-command. */
export async function siteCli(command: string, sub: string | undefined, rest: string[], flags: ReadonlyMap<string, string | true>, io: SiteCliIo): Promise<number | null> {
  const { exec, json, out, err } = io;
  const print = (v: unknown, text: string): void => out(json ? JSON.stringify(v, null, 2) + "\n" : text + "\n");
  switch (`${command} ${sub ?? ""}`) {
    case "site apply": {
      const file = rest[0];
      if (!file) {
        err("ringedge: site apply needs a file (see ringedge site --help)\n");
        return 2;
      }
      const dryRun = flags.has("dry-run");
      const read = readSiteFile(file);
      const r: ApplyResult & { dryRun?: boolean } = read.ok ? ((await exec("site.apply", { config: read.value, dryRun })) as ApplyResult) : read;
      if (!r.ok) {
        if (json) out(JSON.stringify({ ok: false, errors: r.errors }, null, 2) + "\n");
        else err(`${formatSiteErrors(r.errors)}\nringedge: ${file}: ${r.errors.length} error${r.errors.length === 1 ? "" : "s"}; nothing was applied\n`);
        return 1;
      }
      let text: string;
      if (dryRun) text = r.changed ? `${file}: valid; version ${r.version} would be applied (dry run, nothing changed)` : `${file}: valid; ${r.note ?? "not newer"}: nothing would change (dry run)`;
      else if (!r.changed) text = `${file}: ${r.note ?? "not newer than the applied site"}; nothing changed`;
      else {
        const d = r.devices;
        text = `applied site version ${r.version}` + (d ? ` (devices: ${d.added.length} added, ${d.updated.length} updated, ${d.removed.length} removed, ${d.unchanged.length} unchanged)` : "");
      }
      print({ ...r, dryRun }, text);
      return 0;
    }
    case "site show": {
      const s = (await exec("site.show", {})) as SiteView | null;
      if (s === null) {
        print(null, "no site applied yet (ringedge site apply <file>)");
        return 0;
      }
      print(s, [
        `version   ${s.version} (from ${s.source}, applied ${s.appliedAt})`,
        `hash      ${s.hash}`,
        `users     ${s.users}   groups ${s.groups}   devices ${s.devices.site} from the site, ${s.devices.local} local   known callers ${s.knownCallers}`,
        `settings  ${JSON.stringify(s.settings)}`,
      ].join("\n"));
      return 0;
    }
    case "group list": {
      const list = (await exec("group.list", {})) as GroupSummary[];
      if (json) return print(list, ""), 0;
      const rows = list.map((g) => `${g.number.padEnd(6)} ${g.id.slice(0, 16).padEnd(16)} ${g.strategy.padEnd(12)} ${String(g.members).padStart(3)}${g.online === undefined ? "" : ` ${String(g.online).padStart(3)} online`}  ${g.pickup ? "pickup  " : "        "}${g.noAnswer}`);
      out(["NUMBER ID               STRATEGY     MEMBERS  NO ANSWER", ...rows].join("\n") + "\n");
      return 0;
    }
    case "group show": {
      const ref = rest[0];
      if (!ref) {
        err("ringedge: group show needs a group id or number\n");
        return 2;
      }
      const g = (await exec("group.show", { ref })) as GroupView;
      const members = g.members.map((m, i) => `  ${String(i + 1).padStart(2)}. ${m.extension.padEnd(6)} ${m.name.slice(0, 24).padEnd(24)} ${m.availability.padEnd(9)} ${memberDevices(m)}${m.loggedOutOf.includes(g.id) ? "; logged out of this group" : ""}`);
      print(g, [
        `group     ${g.number} ${g.name} (${g.id})`,
        `strategy  ${g.strategy}, ${g.ringCount} ring${g.ringCount === 1 ? "" : "s"} per step${g.checkAvailability ? ", skips away" : ""}${g.pickup ? ", pickup on" : ""}`,
        `no answer ${g.noAnswer}`,
        ...(g.hours === undefined ? [] : [`hours     ${openText(g.hours)}`, `closed    ${g.hours.outOfHours}`]),
        ...(g.wrapUpS === undefined ? [] : [`wrap-up   ${g.wrapUpS}s after each answered call`]),
        ...(g.responsibleFirstRings === undefined ? [] : [`known     a known caller's responsible operator rings alone first for ${g.responsibleFirstRings} ring${g.responsibleFirstRings === 1 ? "" : "s"}`]),
        `members   ${g.members.length}${g.online === undefined ? "" : `, ${g.online} online`}`,
        ...members,
      ].join("\n"));
      return 0;
    }
    case "user list": {
      const list = (await exec("user.list", {})) as MemberView[];
      if (json) return print(list, ""), 0;
      const rows = list.map((u) => `${u.extension.padEnd(6)} ${u.id.slice(0, 16).padEnd(16)} ${u.name.slice(0, 24).padEnd(24)} ${u.availability.padEnd(9)} ${memberDevices(u)}${stateNote(u)}`);
      out(["EXT    ID               NAME                     STATE     DEVICES", ...rows].join("\n") + "\n");
      return 0;
    }
    default:
      return null;
  }
}

/** "; logged out of: sales; set by phone dev-anna at <time>" — the parts that apply. */
function stateNote(m: MemberView): string {
  const parts: string[] = [];
  if (m.loggedOutOf.length > 0) parts.push(`logged out of: ${m.loggedOutOf.join(", ")}`);
  if (m.stateSource !== undefined && m.stateChangedAt !== undefined) parts.push(`set by ${m.stateSource}${m.stateDevice !== undefined ? ` ${m.stateDevice}` : ""} at ${m.stateChangedAt}`);
  return parts.length === 0 ? "" : `; ${parts.join("; ")}`;
}

/** "OPEN now until 2026-12-03 18:00 (UTC+01:00), Europe/Berlin" */
function openText(h: NonNullable<GroupView["hours"]>): string {
  const state = h.open ? "OPEN now" : "CLOSED now";
  const until = h.untilLocal === undefined ? (h.open ? ", no closing time in the schedule's reach" : ", no opening in the schedule's reach") : h.open ? ` until ${h.untilLocal}` : `, opens ${h.untilLocal}`;
  return `${state}${until}, ${h.timeZone}`;
}

function memberDevices(m: MemberView): string {
  if (m.devices.length === 0) return "(no devices)";
  return m.devices.map((d) => `${d.username}/${d.kind}${d.online === undefined ? "" : d.online ? " online" : " offline"}`).join(", ");
}
