// Installer commands for the site configuration: apply a site file (or check it), and look at
// the applied users and groups. Shared by the CLI (through the control socket, so a running
// agent swaps its configuration live, or directly on the store) and later the serial console.
import type { Group, NoAnswerAction, User } from "../routing/model.ts";
import { formatLocal, isOpen } from "../routing/hours.ts";
import { SiteService, type ApplyResult } from "../site/site.ts";
import type { DeviceRecord } from "../store/schema.ts";
import type { AgentView } from "./commands.ts";
import { CommandError, type CommandTable } from "./control.ts";

export interface MemberDeviceView {
  id: string;
  username: string;
  kind: "physical" | "soft";
  origin: "site" | "local";
  /** Present only while the agent runs. */
  online?: boolean;
  registered?: boolean;
}

export interface MemberView {
  id: string;
  name: string;
  extension: string;
  /** Now: the site's value, or what the operator's phone (or a later push) set (operator-state.ts). */
  availability: User["availability"];
  /** Ids of the groups the operator is logged out of now. */
  loggedOutOf: string[];
  /** Who made the last state change (phone, console, file) and when (ISO); absent before the agent first ran with this site. */
  stateSource?: string;
  stateChangedAt?: string;
  /** The phone (device id) that made the last change, when a phone did. */
  stateDevice?: string;
  callLimit: number;
  mobile?: string;
  devices: MemberDeviceView[];
  /** Some device is online (only while the agent runs). */
  online?: boolean;
}

export interface GroupSummary {
  id: string;
  number: string;
  name: string;
  strategy: Group["strategy"];
  members: number;
  ringCount: number;
  checkAvailability: boolean;
  pickup: boolean;
  noAnswer: string;
  /** Members with a device online (only while the agent runs). */
  online?: number;
}

export interface GroupView extends Omit<GroupSummary, "members" | "online"> {
  members: MemberView[];
  noAnswerAction: NoAnswerAction;
  online?: number;
  /** Working hours now (groups with hours): open or not, and until when (ISO 8601 and local). */
  hours?: { open: boolean; timeZone: string; until?: string; untilLocal?: string; outOfHours: string };
  wrapUpS?: number;
  responsibleFirstRings?: number;
}

export interface SiteView {
  version: number;
  source: "file" | "console";
  appliedAt: string;
  hash: string;
  settings: unknown;
  users: number;
  groups: number;
  devices: { site: number; local: number };
  /** Entries in the console's directory of known callers. */
  knownCallers: number;
}

/** "wait 60s, then overflow to sales" — the no-answer action in a few words. */
export function describeNoAnswer(a: NoAnswerAction): string {
  switch (a.kind) {
    case "voicemail":
      return `voicemail ${a.uri}`;
    case "forward-mobile":
      return a.memberId ? `forward to ${a.memberId}'s mobile` : "forward to a member's mobile";
    case "forward-number":
      return `forward to ${a.number}`;
    case "overflow-group":
      return `overflow to ${a.groupId}`;
    case "hangup":
      return `hang up (${a.status ?? 480})`;
    case "wait-for-operator":
      return `wait ${a.maxWaitS}s, then ${describeNoAnswer(a.then)}`;
  }
}

export function siteCommands(view: AgentView): CommandTable {
  // Offline (no agent): a service over the store the CLI opened.
  const service = (): SiteService => view.site ?? new SiteService({ store: view.store });
  const record = () => service().current().record;
  const presenceOf = (): Map<string, { online: boolean; registered: boolean }> | undefined => {
    if (!view.presence) return undefined;
    return new Map(view.presence().map((p) => [p.deviceId, { online: p.online, registered: p.registered }]));
  };
  const devicesOf = (userId: string, presence: ReturnType<typeof presenceOf>): MemberDeviceView[] =>
    view.store
      .listDevices()
      .filter((d: Readonly<DeviceRecord>) => d.owner === userId)
      .map((d) => {
        const out: MemberDeviceView = { id: d.id, username: d.username, kind: d.kind, origin: d.origin ?? "local" };
        if (presence) {
          out.online = presence.get(d.id)?.online ?? false;
          out.registered = presence.get(d.id)?.registered ?? false;
        }
        return out;
      });
  const states = () => new Map(view.store.listOperatorStates().map((o) => [o.userId, o]));
  const member = (u: User, presence: ReturnType<typeof presenceOf>, opState = states()): MemberView => {
    const devices = devicesOf(u.id, presence);
    const st = opState.get(u.id);
    const out: MemberView = { id: u.id, name: u.name, extension: u.extension, availability: st?.availability ?? u.availability, loggedOutOf: [...(st?.loggedOutOf ?? u.loggedOutOf ?? [])], callLimit: u.callLimit, devices };
    if (st !== undefined) {
      out.stateSource = st.source;
      out.stateChangedAt = new Date(st.changedAt).toISOString();
      if (st.deviceId !== undefined && st.source === "phone") out.stateDevice = st.deviceId;
    }
    if (u.mobile) out.mobile = u.mobile;
    if (presence) out.online = devices.some((d) => d.online === true);
    return out;
  };
  const summary = (g: Group, presence: ReturnType<typeof presenceOf>, users: ReadonlyMap<string, User>): GroupSummary => {
    const out: GroupSummary = {
      id: g.id,
      number: g.number,
      name: g.name,
      strategy: g.strategy,
      members: g.members.length,
      ringCount: g.ringCount,
      checkAvailability: g.checkAvailability,
      pickup: g.pickup?.enabled === true,
      noAnswer: describeNoAnswer(g.noAnswer),
    };
    if (presence) out.online = g.members.filter((m) => users.has(m) && devicesOf(m, presence).some((d) => d.online)).length;
    return out;
  };

  return {
    /** args: { config: <site snapshot>, dryRun?: boolean }. Errors are a result, not a failure:
     *  the CLI lists each by path. */
    "site.apply": async (args): Promise<ApplyResult & { dryRun: boolean }> => {
      if (!("config" in args)) throw new CommandError("missing config");
      const dryRun = args.dryRun === true;
      const svc = service();
      const r = dryRun ? svc.check(args.config) : await svc.apply(args.config, "file");
      if (r.ok && r.changed && !dryRun && !view.site) view.devicesChanged?.();
      return { ...r, dryRun };
    },
    "site.show": (): SiteView | null => {
      const r = record();
      if (!r) return null;
      const devices = view.store.listDevices();
      const site = devices.filter((d) => d.origin === "site").length;
      return {
        version: r.version,
        source: r.source,
        appliedAt: r.appliedAt,
        hash: r.hash,
        settings: r.settings,
        users: r.users.length,
        groups: r.groups.length,
        devices: { site, local: devices.length - site },
        knownCallers: r.knownCallers?.length ?? 0,
      };
    },
    "group.list": (): GroupSummary[] => {
      const cur = service().current();
      const presence = presenceOf();
      return (cur.record?.groups ?? []).map((g) => summary(g, presence, cur.index.usersById));
    },
    "group.show": (args): GroupView => {
      const ref = args.ref;
      if (typeof ref !== "string" || ref === "") throw new CommandError("missing group id or number");
      const cur = service().current();
      const g = cur.index.groupsById.get(ref) ?? cur.index.groupsByNumber.get(ref);
      if (!g) throw new CommandError(`no group '${ref}' (see ringedge group list)`);
      const presence = presenceOf();
      const opState = states();
      const members = g.members.flatMap((id) => {
        const u = cur.index.usersById.get(id);
        return u ? [member(u, presence, opState)] : [];
      });
      const { members: _count, online: _online, ...rest } = summary(g, presence, cur.index.usersById);
      const out: GroupView = { ...rest, members, noAnswerAction: g.noAnswer };
      if (presence) out.online = members.filter((m) => m.online).length;
      const zone = cur.index.timeZone;
      if (g.hours !== undefined && g.outOfHours !== undefined && zone !== undefined) {
        const st = isOpen(g.hours, zone, Date.now());
        out.hours = { open: st.open, timeZone: zone, outOfHours: describeNoAnswer(g.outOfHours) };
        if (st.until !== undefined) {
          out.hours.until = new Date(st.until).toISOString();
          out.hours.untilLocal = formatLocal(zone, st.until);
        }
      }
      if (g.wrapUpS !== undefined && g.wrapUpS > 0) out.wrapUpS = g.wrapUpS;
      if (g.responsibleFirst !== undefined) out.responsibleFirstRings = g.responsibleFirst.ringCount;
      return out;
    },
    "user.list": (): MemberView[] => {
      const presence = presenceOf();
      const opState = states();
      return (record()?.users ?? []).map((u) => member(u, presence, opState));
    },
  };
}
