// The audit log: one structured info line per event worth auditing, all under the scope
// "agent.audit" with an `audit=` kind so they can be filtered or shipped (logFormat=json):
//   change       installer and console changes: who (control socket, serial console, console
//                over MQTT, site file), what (the command), on what (a device id, MAC, user...)
//   call         offered to whom, answered by whom after how long, or missed and why
//   provisioning each phone's configuration or firmware fetch, and refusals
//   ban          a source banned after repeated authentication failures
// Everything comes from the event bus; this file only formats. No argument of a command is
// logged except a bounded identifier (passwords, CSV files and site files never are).
import type { EventBus } from "../bus.ts";
import type { CommandHandler, CommandTable } from "../console/control.ts";
import type { Logger } from "../log.ts";

/** Commands that change something (everything else in the installer table only reads). */
const CHANGES = /^(device|phone|user|group|site)\.(add|remove|adopt|import|rebootstrap|resync|apply|set|update|edit|rename)$|^(drain|resume|reload)$|^voicemail\.delete$/;

/** Argument names tried, in order, for the object a change was made to. */
const TARGET_KEYS = ["id", "deviceId", "username", "mac", "extension", "user", "group", "name"] as const;

/** A bounded, printable identifier from the arguments, or undefined. */
export function changeTarget(args: Record<string, unknown>): string | undefined {
  for (const k of TARGET_KEYS) {
    const v = args[k];
    if (typeof v === "string" && v !== "") return v.replace(/[^\x21-\x7e]/g, "?").slice(0, 64);
    if (Array.isArray(v) && v.length > 0 && v.every((x) => typeof x === "string")) return (v as string[]).join(",").replace(/[^\x21-\x7e]/g, "?").slice(0, 128);
  }
  return undefined;
}

/** Whether a command (with these arguments) changes something: dry runs do not. */
export function isChange(cmd: string, args: Record<string, unknown>): boolean {
  return CHANGES.test(cmd) && args.dryRun !== true && args["dry-run"] !== true;
}

/**
 * The installer command table, reporting each successful change on the bus as "audit.change"
 * with who made it (`actor`). Failed commands changed nothing and are not reported.
 */
export function auditedCommands(table: CommandTable, actor: string, bus: EventBus): CommandTable {
  const out: Record<string, CommandHandler> = {};
  for (const [cmd, handler] of Object.entries(table)) {
    out[cmd] = async (args) => {
      const result = await handler(args);
      if (isChange(cmd, args)) bus.emit("audit.change", { actor, action: cmd, target: changeTarget(args), at: Date.now() });
      return result;
    };
  }
  return out;
}

export class AuditLog {
  private readonly off: Array<() => void> = [];

  constructor(private readonly bus: EventBus, private readonly log: Logger) {}

  start(): void {
    const b = this.bus;
    const log = this.log;
    this.off.push(
      b.on("audit.change", (e) => log.info("change", { audit: "change", actor: e.actor, action: e.action, target: e.target })),
      b.on("site.applied", (e) => log.info("change", { audit: "change", actor: e.source === "console" ? "console (MQTT)" : "site file", action: "site.apply", target: `version ${e.version}` })),
      b.on("call.offered", (e) => log.info("call offered", { audit: "call", call: e.callId, group: e.groupId, to: e.memberId, devices: e.deviceIds.join(","), caller: e.caller })),
      b.on("call.answered", (e) => log.info("call answered", { audit: "call", call: e.callId, group: e.groupId, by: e.memberId ?? "(no member)", device: e.deviceId, caller: e.caller, afterMs: e.answerAfterMs })),
      b.on("call.missed", (e) =>
        log.info("call missed", { audit: "call", call: e.callId, group: e.groupId, caller: e.caller, target: e.target, why: e.abandoned ? "caller hung up" : e.outcome === "busy" ? "everyone busy" : e.offered.length === 0 ? "nobody to offer" : "no answer", outcome: e.outcome, offered: e.offered.join(",") || undefined }),
      ),
      b.on("call.busy", (e) => log.info("call passed over busy members", { audit: "call", call: e.callId, group: e.groupId, busy: e.memberIds.join(","), caller: e.caller })),
      b.on("provisioning.request", (e) => log.info("provisioning fetch", { audit: "provisioning", vendor: e.vendor, model: e.model, mac: e.mac, result: e.result, status: e.status, source: e.source })),
      b.on("auth.ban", (e) => log.info("ban", { audit: "ban", source: e.source, until: new Date(e.until).toISOString() })),
    );
  }

  stop(): void {
    for (const f of this.off.splice(0)) f();
  }
}
