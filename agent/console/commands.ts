// Installer commands, shared by the CLI (through the control socket or, with no agent
// running, directly on the store) and later the serial console. Each command validates its
// arguments and either changes nothing or changes exactly what it says.
import { randomBytes } from "node:crypto";
import type { Store } from "../store/store.ts";
import type { DeviceRecord } from "../store/schema.ts";
import { CommandError, argString, type CommandTable } from "./control.ts";
import type { SiteService } from "../site/site.ts";
import { siteCommands } from "./site-commands.ts";
import { phoneCommands } from "../../provisioning/installer.ts";
import type { ProvisioningHooks } from "../../provisioning/service.ts";
import type { WhyLog } from "../routing/why.ts";
import { whyCommands } from "./why-commands.ts";

/** What a running agent exposes to commands; offline commands get only the store. */
export interface AgentView {
  store: Store;
  status?: () => unknown;
  presence?: () => Array<{ deviceId: string; online: boolean; registered: boolean; lastSeen: number | undefined; reason: string }>;
  bindings?: () => Array<{ deviceId: string; contact: string; expiresAt: number; flow: { transport: string; remoteAddress: string; remotePort: number }; userAgent: string | undefined }>;
  /** Tell the running agent its device table changed (credential lookup, bindings of a removed device). */
  devicesChanged?: (removedId?: string) => void;
  /** The running agent's site service (offline, site commands build one over the store). */
  site?: SiteService;
  /** Phone provisioning of the running agent (re-sync, firmware report, URLs). */
  provisioning?: ProvisioningHooks;
  /** The routing engine's recent call traces ("ringedge why"). */
  why?: WhyLog;
}

export const USERNAME_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$/;

export function generatePassword(): string {
  // 144 bits, URL-safe: typed into nothing, copied by provisioning.
  return randomBytes(18).toString("base64url");
}


export interface DeviceView {
  id: string;
  username: string;
  kind: "physical" | "soft";
  displayName?: string;
  owner?: string;
  mac?: string;
  model?: string;
  createdAt: string;
  registered?: boolean;
  online?: boolean;
  lastSeen?: string;
  contacts?: Array<{ contact: string; via: string; expiresInS: number; userAgent?: string }>;
  password?: string;
}

function viewDevice(view: AgentView, d: Readonly<DeviceRecord>, showPassword: boolean): DeviceView {
  const out: DeviceView = { id: d.id, username: d.username, kind: d.kind, createdAt: d.createdAt };
  if (d.displayName) out.displayName = d.displayName;
  if (d.owner) out.owner = d.owner;
  if (d.mac) out.mac = d.mac;
  if (d.model) out.model = d.model;
  const p = view.presence?.().find((x) => x.deviceId === d.id);
  if (view.presence) {
    out.registered = p?.registered ?? false;
    out.online = p?.online ?? false;
    if (p?.lastSeen) out.lastSeen = new Date(p.lastSeen).toISOString();
  }
  if (view.bindings) {
    const now = Date.now();
    out.contacts = view
      .bindings()
      .filter((b) => b.deviceId === d.id)
      .map((b) => ({
        contact: b.contact,
        via: `${b.flow.transport}:${b.flow.remoteAddress}:${b.flow.remotePort}`,
        expiresInS: Math.max(0, Math.round((b.expiresAt - now) / 1000)),
        ...(b.userAgent ? { userAgent: b.userAgent } : {}),
      }));
  }
  if (showPassword) out.password = d.password;
  return out;
}

export function agentCommands(view: AgentView): CommandTable {
  const findDevice = (ref: string): Readonly<DeviceRecord> => {
    const d = view.store.listDevices().find((x) => x.id === ref || x.username === ref);
    if (!d) throw new CommandError(`no device '${ref}'`);
    return d;
  };
  return {
    ...siteCommands(view),
    ...phoneCommands(view),
    ...whyCommands(view),
    status: () => {
      if (!view.status) throw new CommandError("the agent is not running");
      return view.status();
    },
    "device.list": () => view.store.listDevices().map((d) => viewDevice(view, d, false)),
    "device.show": (args) => viewDevice(view, findDevice(argString(args, "ref", true)), args.showPassword === true),
    "device.add": async (args) => {
      const username = argString(args, "username", true);
      if (!USERNAME_RE.test(username)) throw new CommandError(`username '${username}' is not valid: 1-32 of letters, digits, '.', '_', '-', starting with a letter or digit`);
      const kind = argString(args, "kind") ?? "physical";
      if (kind !== "physical" && kind !== "soft") throw new CommandError(`kind must be 'physical' or 'soft', not '${kind}'`);
      let password = argString(args, "password");
      const generated = password === undefined;
      if (password !== undefined && (password.length < 8 || password.length > 128 || /[\x00-\x1f\x7f"\\]/.test(password))) {
        throw new CommandError("password must be 8-128 printable characters without quotes or backslashes");
      }
      password ??= generatePassword();
      const displayName = argString(args, "displayName");
      if (displayName !== undefined && (displayName.length > 64 || /[\x00-\x1f\x7f]/.test(displayName))) throw new CommandError("display name must be at most 64 printable characters");
      const owner = argString(args, "owner");
      if (view.store.listDevices().some((d) => d.username === username)) throw new CommandError(`a device with username '${username}' already exists`);
      const added = view.store.addDevice({
        username,
        password,
        kind,
        ...(displayName !== undefined ? { displayName } : {}),
        ...(owner !== undefined ? { owner } : {}),
      });
      if (!added.ok) throw new CommandError(added.error.message);
      await view.store.flush();
      view.devicesChanged?.();
      return viewDevice(view, added.value, generated ? args.showPassword === true : false);
    },
    // The call log: answered and missed calls, newest first (calls.jsonl, bounded).
    "calls.list": (args) => {
      const limit = args.limit === undefined ? 20 : args.limit;
      if (typeof limit !== "number" || !Number.isInteger(limit) || limit < 1 || limit > 5000) throw new CommandError("limit must be a whole number from 1 to 5000");
      const groupId = argString(args, "groupId");
      return view.store.listCalls({ limit, ...(groupId !== undefined ? { groupId } : {}) });
    },
    "device.remove": async (args) => {
      const d = findDevice(argString(args, "ref", true));
      view.store.removeDevice(d.id);
      view.store.removeBindingsOfDevice(d.id);
      await view.store.flush();
      view.devicesChanged?.(d.id);
      return { removed: d.username, id: d.id };
    },
  };
}
