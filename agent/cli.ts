// The `ringedge` command line. Commands run through a running agent's control socket; with
// no agent running, installer commands work directly on the store (the pid lock keeps an
// agent from starting meanwhile).
import fs from "node:fs";
import path from "node:path";
import { loadSettingsDetailed, SettingsError, renderSettingsDoc, SETTING_NAMES, SETTINGS_DOC, type Settings } from "./config.ts";
import { Store } from "./store/store.ts";
import { callAgent, runCommand, socketAnswers } from "./console/control.ts";
import { VOICEMAIL_HELP, copyRecording, formatMessages, voicemailCommands, type VoicemailView } from "./console/voicemail-commands.ts";
import { VoicemailStore } from "./voicemail/store.ts";
import { createHash } from "node:crypto";
import { mailboxOf } from "./routing/model.ts";
import { agentCommands, type DeviceView } from "./console/commands.ts";
import { SITE_HELP, siteCli } from "./console/site-cli.ts";
import { WHY_HELP, type WhyView } from "./console/why-commands.ts";
import { CONSOLE_HELP, CONSOLE_VALUE_FLAGS, consoleCommand } from "./sync/console-cli.ts";
import { PHONE_HELP, PROVISION_HELP, phoneCli, provisionCli } from "../provisioning/installer.ts";
import { APPLIANCE_HELP, applianceCli, settingsFileFor } from "./appliance/cli.ts";
import { writeSettings } from "./appliance/settings-file.ts";
import { runAgentProcess } from "./appliance/run.ts";
import { VERSION } from "./version.ts";

interface Parsed {
  positional: string[];
  flags: Map<string, string | true>;
}

/** --name value, --name=value, --flag; "--" ends options. Value-taking flags are declared. */
export function parseArgs(argv: string[], valueFlags: ReadonlySet<string>): Parsed {
  const positional: string[] = [];
  const flags = new Map<string, string | true>();
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === "--") {
      positional.push(...argv.slice(i + 1));
      break;
    }
    if (a.startsWith("--")) {
      const eq = a.indexOf("=");
      const name = eq > 0 ? a.slice(2, eq) : a.slice(2);
      if (eq > 0) flags.set(name, a.slice(eq + 1));
      else if (valueFlags.has(name)) {
        const v = argv[i + 1];
        if (v === undefined) throw new UsageError(`--${name} needs a value`);
        flags.set(name, v);
        i++;
      } else flags.set(name, true);
    } else if (a === "-h") flags.set("help", true);
    else if (a.startsWith("-") && a.length > 1) throw new UsageError(`unknown option '${a}' (options are spelt --name; see ringedge --help)`);
    else positional.push(a);
  }
  return { positional, flags };
}

class UsageError extends Error {}

const HELP: Record<string, string> = {
  main: `ringedge — edge call-routing agent

usage: ringedge <command> [options]

commands:
  run                      start the agent (foreground)
  status [--json]          what a running agent is doing
  device add|list|show|remove   manage SIP devices (credentials, owner, physical or soft)
  store check|recover      check the store file, or promote its last good copy
  drain [--timeout S]      stop taking calls, let current ones finish, flush (pre-upgrade)
  resume                   take calls again after a drain
  health [--json]          watchdog check: exit 0 healthy, 1 not, with a one-line reason
  console-password [--write]   set the serial console's installer password (stored as a hash)
  settings [--json]        list every setting, its environment variable and default
  settings unset <name>... remove settings from the settings file (back to their defaults)
  console push|watch|status|resync|republish <site>   reference central console over MQTT
  phone add|adopt|remove|list|show|seen|import|resync|export|firmware   desk phones (provisioning)
  provision dhcp-hints     DHCP options that point phones at this appliance
  site apply|show          apply a site file (users, devices, groups; --dry-run checks only)
  group list|show          call groups of the applied site, members and who is online
  user list                operators of the applied site and their state now
  calls [--limit N] [--group <id>] [--json]   the call log: answered and missed calls
  why <call-id> | --last --user <id>   why each operator was or was not offered a call
  voicemail list|play|delete   messages left in mailboxes on the appliance

common options:
  --config <file>          settings file (JSON; default /etc/ringedge/ringedge.conf.json if present,
                           or RINGEDGE_CONFIG)
  --help                   help for a command
  --version                the version of ringedge

Unknown options and sub-commands are refused (exit 2) before anything is done.`,
  run: `usage: ringedge run [--config <file>]

Starts the agent in the foreground on the configured settings (see 'ringedge settings').
SIGTERM drains first (new calls 503, current calls finish up to drainTimeoutS), then stops;
SIGINT or a second SIGTERM stops at once; SIGHUP reloads the settings that can change live.`,
  ...APPLIANCE_HELP,
  status: `usage: ringedge status [--json]

Shows the running agent's version, SIP addresses, provisioning URL, whether it is draining (and
for how long), the console (MQTT) link, devices online, bindings, transactions, bans, overload
(whether new requests are being refused with 503, why, how many were), and the first-fork
latency against its budget (a warning when over it).`,
  device: `usage:
  ringedge device add <username> [--password <p>] [--kind physical|soft] [--name <display name>]
                      [--owner <user id>] [--show-password] [--json]
  ringedge device list [--json]
  ringedge device show <username|id> [--show-password] [--json]
  ringedge device remove <username|id> [--json]

A device is one set of SIP credentials: a desk phone (physical; counts against the ring cap)
or a soft client (soft). Without --password a strong random one is generated; it is printed
only with --show-password.`,
  store: `usage:
  ringedge store check      verify the store file (envelope, checksum, schema version)
  ringedge store recover    keep the corrupt file aside and promote the last good copy (.bak)`,
  ...SITE_HELP,
  ...WHY_HELP,
  ...VOICEMAIL_HELP,
  phone: PHONE_HELP,
  provision: PROVISION_HELP,
  console: CONSOLE_HELP,
  calls: `usage: ringedge calls [--limit N] [--group <group id>] [--json]

The call log, newest first: who called, which group or number, the outcome (answered, missed,
busy, voicemail, forwarded, overflow, ...), who was offered, who answered and after how long.
The store keeps the last 5,000 calls.`,
  settings: `usage: ringedge settings [--json]
       ringedge settings unset <name>...

Lists every setting with its environment variable, default and meaning, then the effective values
(secrets shown only as set); --json gives both as one object. unset removes settings from the
settings file (--config, RINGEDGE_CONFIG or the default path), keeping its owner and mode.`,
};

/** Sub-commands of the commands that have them; any other word there is refused. */
const SUBCOMMANDS: Readonly<Record<string, readonly string[]>> = {
  device: ["add", "list", "show", "remove"],
  store: ["check", "recover"],
  site: ["apply", "show"],
  group: ["list", "show"],
  user: ["list"],
  phone: ["add", "adopt", "remove", "list", "show", "seen", "import", "resync", "export", "firmware", "rebootstrap"],
  provision: ["dhcp-hints"],
  console: ["push", "watch", "status", "resync", "republish", "voicemail-fetch"],
  settings: ["unset"],
  voicemail: ["list", "play", "delete"],
};
/** Commands whose first word after the command is a free argument (no sub-commands). */
const FREE_ARGUMENT: ReadonlySet<string> = new Set(["why"]);
/** Accepted with every command. */
const GLOBAL_FLAGS: ReadonlySet<string> = new Set(["config", "help", "version"]);

/** The options a command takes are the ones its help lists: help and parser cannot disagree. */
export function commandFlags(command: string): ReadonlySet<string> {
  const help = HELP[command] ?? "";
  return new Set([...GLOBAL_FLAGS, ...Array.from(help.matchAll(/--([a-z][a-z0-9-]*)/g), (m) => m[1]!)]);
}

/** Edit distance (insertions, deletions, substitutions, adjacent swaps), for "did you mean". */
function distance(a: string, b: string): number {
  const d: number[][] = Array.from({ length: a.length + 1 }, (_, i) => Array.from({ length: b.length + 1 }, (_, j) => (i === 0 ? j : j === 0 ? i : 0)));
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      let v = Math.min(d[i - 1]![j]! + 1, d[i]![j - 1]! + 1, d[i - 1]![j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) v = Math.min(v, d[i - 2]![j - 2]! + 1);
      d[i]![j] = v;
    }
  }
  return d[a.length]![b.length]!;
}

function didYouMean(word: string, candidates: Iterable<string>, prefix = ""): string {
  let best: string | undefined;
  let bestD = Infinity;
  for (const c of candidates) {
    const d = distance(word, c);
    if (d < bestD) [best, bestD] = [c, d];
  }
  return best !== undefined && bestD <= Math.max(1, Math.floor(word.length / 3)) ? ` (did you mean '${prefix}${best}'?)` : "";
}

/**
 * Why this command line is refused before anything runs, or null. A mistyped option must never
 * be ignored: `site apply --dryrun` would otherwise apply the site live.
 */
export function checkUsage(parsed: Parsed, valueFlags: ReadonlySet<string> = VALUE_FLAGS): { message: string; help?: string } | null {
  const why = usageProblem(parsed, valueFlags);
  if (why === null) return null;
  const command = parsed.positional[0];
  const subs = command === undefined ? undefined : SUBCOMMANDS[command];
  // A wrong sub-command comes with the command's usage, which lists the right ones.
  return why.startsWith(`unknown ${command} command`) && subs ? { message: why, help: HELP[command!]! } : { message: why };
}

function usageProblem(parsed: Parsed, valueFlags: ReadonlySet<string>): string | null {
  const [command, sub] = parsed.positional;
  if (command === undefined) {
    const extra = [...parsed.flags.keys()].find((f) => !GLOBAL_FLAGS.has(f));
    return extra === undefined ? null : `unknown option '--${extra}'${didYouMean(extra, GLOBAL_FLAGS, "--")}`;
  }
  const commands = Object.keys(HELP).filter((k) => k !== "main");
  if (!commands.includes(command)) return `unknown command '${command}'${didYouMean(command, commands)} (see ringedge --help)`;
  const allowed = commandFlags(command);
  for (const [name, value] of parsed.flags) {
    if (!allowed.has(name)) return `unknown option '--${name}' for '${command}'${didYouMean(name, allowed, "--")} (see ringedge ${command} --help)`;
    if (typeof value === "string" && !valueFlags.has(name) && !GLOBAL_FLAGS.has(name)) return `option '--${name}' takes no value (got '${value}')`;
  }
  const subs = SUBCOMMANDS[command];
  if (sub !== undefined && !parsed.flags.has("help")) {
    if (subs === undefined && !FREE_ARGUMENT.has(command)) return `'${command}' takes no argument '${sub}' (see ringedge ${command} --help)`;
    if (subs === undefined) return parsed.positional.length > 2 ? `'${command}' takes one argument (see ringedge ${command} --help)` : null;
    if (!subs.includes(sub)) return `unknown ${command} command '${sub}'${didYouMean(sub, subs)}; one of: ${subs.join(", ")}`;
  }
  return null;
}

const VALUE_FLAGS = new Set(["config", "limit", "timeout", "password", "kind", "name", "owner", "model", "extension", "group", "host", "user", "mailbox", "out", ...CONSOLE_VALUE_FLAGS]);

export async function main(argv: string[], out: (s: string) => void = (s) => process.stdout.write(s), err: (s: string) => void = (s) => process.stderr.write(s)): Promise<number> {
  let parsed: Parsed;
  try {
    parsed = parseArgs(argv, VALUE_FLAGS);
  } catch (e) {
    err(`ringedge: ${(e as Error).message}\n`);
    return 2;
  }
  const [command, sub, ...rest] = parsed.positional;
  const flags = parsed.flags;
  if (flags.has("version")) {
    out(`ringedge ${VERSION}\n`);
    return 0;
  }
  const refused = checkUsage(parsed);
  if (refused !== null) {
    err(`ringedge: ${refused.message}\n${refused.help !== undefined ? refused.help + "\n" : ""}`);
    return 2;
  }
  if (!command) {
    out(HELP.main + "\n");
    return flags.has("help") ? 0 : 2;
  }
  if (flags.has("help")) {
    const h = HELP[command];
    if (!h) {
      err(`ringedge: unknown command '${command}'\n`);
      return 2;
    }
    out(h + "\n");
    return 0;
  }
  let settings: Settings;
  try {
    const configFlag = flags.get("config");
    const loaded = loadSettingsDetailed({ env: process.env, ...(typeof configFlag === "string" ? { configPath: configFlag } : {}) });
    settings = loaded.settings;
    // Ignored keys (a retired setting in the file, a misspelt RINGEDGE_ variable) are said, not fatal.
    for (const w of loaded.warnings) err(`ringedge: warning: ${w}\n`);
  } catch (e) {
    if (e instanceof SettingsError) {
      err(`ringedge: invalid setting: ${e.message}\n`);
      return 78; // EX_CONFIG
    }
    throw e;
  }
  const json = flags.has("json");
  try {
    switch (command) {
      case "run": {
        const configFlag = flags.get("config");
        return await runAgentProcess(settings, { env: process.env, ...(typeof configFlag === "string" ? { configPath: configFlag } : {}), err });
      }
      case "drain":
      case "resume":
      case "health":
      case "console-password":
        return await applianceCli(command, { settings, flags, json, out, err, configPath: settingsFileFor(flags.get("config"), process.env) });
      case "status":
        return await statusCommand(settings, json, out, err);
      case "device":
        return await deviceCommand(settings, sub, rest, flags, json, out, err);
      case "store":
        return await storeCommand(settings, sub, out, err);
      case "site":
      case "group":
      case "user": {
        const code = await siteCli(command, sub, rest, flags, { exec: (cmd, args) => execute(settings, cmd, args), json, out, err });
        if (code !== null) return code;
        err(SITE_HELP[command] + "\n");
        return 2;
      }
      case "phone":
      case "provision": {
        const ctx = { sub, rest, flags, json, out, err, settings, execute: (cmd: string, args: Record<string, unknown>) => execute(settings, cmd, args), progress: process.stderr };
        return await (command === "phone" ? phoneCli(ctx) : provisionCli(ctx));
      }
      case "console":
        return await consoleCommand(sub, rest, flags, settings, out, err);
      case "settings":
        if (sub === "unset") return settingsUnset(settings, rest, settingsFileFor(flags.get("config"), process.env), out);
        if (json) out(JSON.stringify({ settings: SETTINGS_DOC, effective: redactSecrets(settings) }, null, 2) + "\n");
        else out(renderSettingsDoc() + "\n\neffective:\n" + JSON.stringify(redactSecrets(settings), null, 2) + "\n");
        return 0;
      case "calls":
        return await callsCommand(settings, flags, json, out);
      case "voicemail":
        return await voicemailCli(settings, sub, rest, flags, json, out);
      case "why": {
        const user = flags.get("user");
        const args: Record<string, unknown> = { last: flags.has("last") };
        if (sub !== undefined) args.callId = sub;
        if (typeof user === "string") args.user = user;
        const v = (await execute(settings, "call.why", args)) as WhyView;
        out(json ? JSON.stringify(v, null, 2) + "\n" : [...v.lines, v.from === "call log" ? "(from the call log: at most 100 entries per call are kept there)" : ""].filter((l) => l !== "").join("\n") + "\n");
        return 0;
      }
      default:
        err(`ringedge: unknown command '${command}' (see ringedge --help)\n`);
        return 2;
    }
  } catch (e) {
    if (e instanceof UsageError) {
      err(`ringedge: ${e.message}\n`);
      return 2;
    }
    err(`ringedge: ${(e as Error).message}\n`);
    return 1;
  }
}

function controlPath(settings: Settings): string {
  return path.join(settings.dataDir, "control.sock");
}

/** Run a command on the live agent, or on the store directly when none runs. */
async function execute(settings: Settings, cmd: string, args: Record<string, unknown>): Promise<unknown> {
  const sock = controlPath(settings);
  if (await socketAnswers(sock)) {
    const reply = await callAgent(sock, cmd, args);
    if (!reply.ok) throw new Error(reply.error);
    return reply.result;
  }
  if (cmd === "status") throw new Error(`no agent is running on data directory ${settings.dataDir}`);
  // No agent: work on the store directly; its lock keeps an agent from starting meanwhile.
  const store = await Store.open(settings.dataDir, { siteId: settings.siteId });
  for (const note of store.migrationNotes) process.stderr.write(`ringedge: store migrated from schema ${store.openedFromVersion}: ${note}\n`);
  try {
    const reply = await runCommand(agentCommands({ store }), JSON.stringify({ cmd, args }));
    if (!reply.ok) throw new Error(reply.error);
    return reply.result;
  } finally {
    await store.close();
  }
}

/** One group's queue in `ringedge status` (figures since the agent started; routing/queue-stats.ts). */
export function queueLine(g: { groupId: string; waiting: number; joined: number; answered: number; abandoned: number; timedOut: number; waitMedianMs: number | null; waitMaxMs: number | null }): string {
  const s = (ms: number | null): string => (ms === null ? "-" : `${(ms / 1000).toFixed(1)}s`);
  return `queue    ${g.groupId}  waiting ${g.waiting}  joined ${g.joined}  answered ${g.answered} (wait median ${s(g.waitMedianMs)} max ${s(g.waitMaxMs)})  abandoned ${g.abandoned}  max wait ${g.timedOut}`;
}

/** voicemail list|play|delete (console/voicemail-commands.ts), on the live agent or the mailbox folders. */
async function voicemailCli(settings: Settings, sub: string | undefined, rest: string[], flags: Map<string, string | true>, json: boolean, out: (s: string) => void): Promise<number> {
  const flag = (name: string): string | undefined => {
    const v = flags.get(name);
    if (v === true) throw new UsageError(`--${name} needs a value`);
    return v;
  };
  const run = async (cmd: string, args: Record<string, unknown>): Promise<unknown> => {
    const sock = controlPath(settings);
    if (await socketAnswers(sock)) {
      const reply = await callAgent(sock, cmd, args);
      if (!reply.ok) throw new Error(reply.error);
      return reply.result;
    }
    // No agent: the mailbox folders directly, under the store's lock (the site says retention).
    const store = await Store.open(settings.dataDir, { siteId: settings.siteId });
    const site = store.site;
    const index = { usersById: new Map((site?.users ?? []).map((u) => [u.id, u])), groupsById: new Map((site?.groups ?? []).map((g) => [g.id, g])) };
    const vm = new VoicemailStore({ dataDir: settings.dataDir, mailbox: (o) => mailboxOf(index, o) });
    try {
      vm.start();
      const reply = await runCommand(voicemailCommands(vm), JSON.stringify({ cmd, args }));
      if (!reply.ok) throw new Error(reply.error);
      return reply.result;
    } finally {
      vm.stop();
      await store.close();
    }
  };
  if (sub === undefined) throw new UsageError("voicemail needs list, play or delete (see ringedge voicemail --help)");
  if (sub === "list") {
    if (rest.length > 0) throw new UsageError("voicemail list takes no argument (use --mailbox user/<id>|group/<id>)");
    const mailbox = flag("mailbox");
    const list = (await run("voicemail.list", mailbox !== undefined ? { mailbox } : {})) as VoicemailView[];
    out(json ? JSON.stringify(list, null, 2) + "\n" : formatMessages(list) + "\n");
    return 0;
  }
  const id = rest[0];
  if (id === undefined || rest.length > 1) throw new UsageError(`voicemail ${sub} takes one message id (see ringedge voicemail list)`);
  if (sub === "delete") {
    let r: unknown;
    try {
      r = await run("voicemail.delete", { id });
    } catch (e) {
      // --json: the refusal as JSON too (a script reads one format), exit 1 as without.
      if (!json) throw e;
      out(JSON.stringify({ deleted: false, id, error: (e as Error).message }, null, 2) + "\n");
      return 1;
    }
    out(json ? JSON.stringify(r, null, 2) + "\n" : `deleted ${id}\n`);
    return 0;
  }
  const file = flag("out");
  if (file === undefined) throw new UsageError("voicemail play needs --out <file.wav>");
  const m = (await run("voicemail.get", { id })) as VoicemailView;
  const copied = copyRecording(m, file, (b) => createHash("sha256").update(b).digest("hex"));
  if (!copied.ok) throw new Error(copied.error);
  out(`${file}: ${copied.bytes} bytes, ${(m.durationMs / 1000).toFixed(1)} s from ${m.caller}, SHA-256 ${m.sha256} verified\n`);
  return 0;
}

async function statusCommand(settings: Settings, json: boolean, out: (s: string) => void, err: (s: string) => void): Promise<number> {
  let status: Record<string, any>;
  try {
    status = (await execute(settings, "status", {})) as Record<string, any>;
  } catch (e) {
    err(`ringedge: ${(e as Error).message}\n`);
    return 3;
  }
  if (json) {
    out(JSON.stringify(status, null, 2) + "\n");
    return 0;
  }
  const d = status.devices;
  const dr = status.drain;
  const mq = status.mqtt;
  const lines = [
    `site ${status.siteId}  pid ${status.pid}  up ${status.uptimeS}s`,
    `version  ${status.version ?? "?"}`,
    `calls    ${!dr?.draining ? "taking calls" : `DRAINING for ${dr.forS}s (timeout ${dr.timeoutS}s${dr.overdue ? ", OVERDUE: 'ringedge resume' takes calls again" : ""})`}`,
    `console  ${mq === null || mq === undefined ? "not configured (mqttUrl unset)" : `mqtt ${mq.connected ? "connected" : "disconnected"}${mq.outboxPending > 0 ? `, ${mq.outboxPending} events queued` : ""}`}`,
    `provisioning ${((status.provisioningUrls ?? []) as string[]).join("  ") || "not listening"}`,
    `sip      ${(status.sip as Array<{ transport: string; address: string; port: number }>).map((a) => `${a.transport}:${a.address}:${a.port}`).join("  ")}`,
    `devices  ${d.total} (${d.physical} physical, ${d.soft} soft)  registered ${d.registered}  online ${d.online}  bindings ${status.bindings}`,
    `sip tx   server ${status.transactions.server}  client ${status.transactions.client}  in ${status.transport.received}  out ${status.transport.sent}  parse errors ${status.transport.parseErrors}  tcp ${status.transport.tcpConnections} open, ${status.transport.tcpRefused ?? 0} refused, ${status.transport.tcpMessageTimeouts ?? 0} timed out`,
    `guard    banned sources ${status.guard.bannedSources ?? status.guard.banned?.length ?? 0}`,
    ...(status.overload ? [`overload ${status.overload.active ? `REFUSING new requests with 503 since ${status.overload.since} (${status.overload.cause}${status.overload.shedFraction > 0 ? `, ${Math.round(status.overload.shedFraction * 100)} % on load` : ""})` : "no"}  shed ${status.overload.shed}  queue ${status.overload.signals.queueDelayMs === undefined ? "n/a" : `${Math.round(status.overload.signals.queueDelayMs)} ms`}  loop busy ${Math.round(status.overload.signals.loopBusyPct)} %  calls setting up ${status.overload.signals.callsSetup}`] : []),
    `store    ${status.store.file}${status.store.pendingWrites ? " (write pending)" : ""}`,
    `site     ${status.site ? `version ${status.site.version} from ${status.site.source} (${status.site.users} users, ${status.site.groups} groups)` : "none applied"}`,
  ];
  const r = status.routing;
  if (r !== undefined && r !== null) {
    // INVITE received → first fork (issue 3 latency budget), from the engine's histogram.
    const l = r.latency;
    lines.push(`routing  calls ${r.activeCalls}  queued ${r.queued}  first fork p50 ${l.p50Us}µs p99 ${l.p99Us}µs max ${l.maxUs}µs  over ${l.budgetUs / 1000}ms budget ${l.overBudget} of ${l.count}`);
    for (const g of (r.queues ?? []) as Array<Parameters<typeof queueLine>[0]>) lines.push(queueLine(g));
  }
  // Pending callbacks in queue order (routing/callback.ts).
  const cbs = (status.callbacks ?? []) as Array<{ id: string; groupId: string; number: string; place: string; attempts: number; calling: string | null; notBefore: string | null }>;
  lines.push(`callbacks ${cbs.length === 0 ? "none pending" : `${cbs.length} pending`}`);
  for (const c of cbs.slice(0, 20)) lines.push(`  ${c.number.padEnd(16)} group ${c.groupId}  in queue since ${c.place}  attempts ${c.attempts}${c.calling !== null ? `  calling operator ${c.calling}` : ""}${c.notBefore !== null ? `  not before ${c.notBefore}` : ""}`);
  if (cbs.length > 20) lines.push(`  … and ${cbs.length - 20} more (ringedge status --json)`);
  const sch = status.scheduling;
  const q = status.cpuLatency;
  const cpu = [
    ...(sch !== undefined && sch !== null ? [`scheduling ${sch.policy}${sch.policy === "fifo" || sch.policy === "rr" ? ` priority ${sch.priority}` : ""} nice ${sch.nice}`] : []),
    ...(q !== undefined && q !== null ? [`wake-up latency ${q.requestedUs}µs ${q.held ? `held on ${q.device}` : `not in force: ${q.reason}`}`] : []),
  ];
  if (cpu.length > 0) lines.push(`cpu      ${cpu.join("  ")}`);
  for (const w of (status.warnings ?? []) as string[]) lines.push(`WARNING  ${w}`);
  out(lines.join("\n") + "\n");
  return 0;
}

async function deviceCommand(
  settings: Settings,
  sub: string | undefined,
  rest: string[],
  flags: Map<string, string | true>,
  json: boolean,
  out: (s: string) => void,
  err: (s: string) => void,
): Promise<number> {
  const flagStr = (name: string): string | undefined => {
    const v = flags.get(name);
    if (v === true) throw new UsageError(`--${name} needs a value`);
    return v;
  };
  const print = (v: unknown, text: string): void => out(json ? JSON.stringify(v, null, 2) + "\n" : text + "\n");
  switch (sub) {
    case "add": {
      const username = rest[0];
      if (!username) throw new UsageError("device add needs a username (see ringedge device --help)");
      const args: Record<string, unknown> = { username, showPassword: flags.has("show-password") };
      for (const [flag, key] of [["password", "password"], ["kind", "kind"], ["name", "displayName"], ["owner", "owner"]] as const) {
        const v = flagStr(flag);
        if (v !== undefined) args[key] = v;
      }
      const d = (await execute(settings, "device.add", args)) as DeviceView;
      print(d, `added device ${d.username} (${d.kind}) id ${d.id}${d.password ? `\npassword: ${d.password}` : ""}`);
      return 0;
    }
    case "list": {
      const list = (await execute(settings, "device.list", {})) as DeviceView[];
      if (json) return print(list, ""), 0;
      const rows = list.map((d) => `${d.username.padEnd(12)} ${d.kind.padEnd(8)} ${(d.online === undefined ? "-" : d.online ? "online" : d.registered ? "no-answer" : "offline").padEnd(9)} ${(d.displayName ?? "").slice(0, 24).padEnd(24)} ${d.id}`);
      out(["USERNAME     KIND     STATE     NAME                     ID", ...rows].join("\n") + "\n");
      return 0;
    }
    case "show": {
      const ref = rest[0];
      if (!ref) throw new UsageError("device show needs a username or id");
      const d = (await execute(settings, "device.show", { ref, showPassword: flags.has("show-password") })) as DeviceView;
      print(d, Object.entries(d).map(([k, v]) => `${k.padEnd(12)} ${typeof v === "object" ? JSON.stringify(v) : String(v)}`).join("\n"));
      return 0;
    }
    case "remove": {
      const ref = rest[0];
      if (!ref) throw new UsageError("device remove needs a username or id");
      const r = (await execute(settings, "device.remove", { ref })) as { removed: string; id: string };
      print(r, `removed device ${r.removed}`);
      return 0;
    }
    default:
      err(HELP.device + "\n");
      return 2;
  }
}

async function storeCommand(settings: Settings, sub: string | undefined, out: (s: string) => void, err: (s: string) => void): Promise<number> {
  switch (sub) {
    case "check": {
      const r = await Store.inspect(settings.dataDir);
      out(JSON.stringify(r, null, 2) + "\n");
      return r.ok ? 0 : 1;
    }
    case "recover": {
      if (await socketAnswers(controlPath(settings))) throw new Error("stop the agent before recovering its store");
      const r = await Store.recover(settings.dataDir);
      out(`${typeof r === "string" ? r : JSON.stringify(r)}\n`);
      return 0;
    }
    default:
      err(HELP.store + "\n");
      return 2;
  }
}

/** `settings unset <name>...`: removes keys from the settings file (owner and mode kept). */
function settingsUnset(settings: Settings, names: string[], file: string, out: (s: string) => void): number {
  if (names.length === 0) throw new UsageError("settings unset needs at least one setting name");
  for (const n of names) if (!(SETTING_NAMES as readonly string[]).includes(n)) throw new UsageError(`unknown setting '${n}'${didYouMean(n, SETTING_NAMES)}`);
  if (!fs.existsSync(file)) {
    out(`${file} does not exist: nothing to unset\n`);
    return 0;
  }
  writeSettings(file, Object.fromEntries(names.map((n) => [n, undefined])), settings.dataDir);
  out(`${names.join(", ")} removed from ${file}\n`);
  return 0;
}

/** Settings as printed: secrets shown only as set or not. */
export function redactSecrets(settings: Settings): Record<string, unknown> {
  const out: Record<string, unknown> = { ...settings };
  for (const k of Object.keys(out)) {
    if (/password/i.test(k) && typeof out[k] === "string" && out[k] !== "") out[k] = "(set, not shown)";
  }
  return out;
}

async function callsCommand(settings: Settings, flags: Map<string, string | true>, json: boolean, out: (s: string) => void): Promise<number> {
  const args: Record<string, unknown> = {};
  const limit = flags.get("limit");
  if (limit !== undefined) {
    if (limit === true || !/^\d{1,4}$/.test(limit)) throw new UsageError("--limit needs a whole number");
    args.limit = Number(limit);
  }
  const group = flags.get("group");
  if (group !== undefined) {
    if (group === true) throw new UsageError("--group needs a group id");
    args.groupId = group;
  }
  const calls = (await execute(settings, "calls.list", args)) as Array<{ at: number; caller: string; target: string; groupId?: string; outcome: string; offered: string[]; answeredBy?: string; answerAfterMs?: number }>;
  if (json) {
    out(JSON.stringify(calls, null, 2) + "\n");
    return 0;
  }
  const rows = calls.map((c) => {
    const when = new Date(c.at).toISOString().replace("T", " ").slice(0, 19);
    const who = c.answeredBy ? `${c.answeredBy} after ${((c.answerAfterMs ?? 0) / 1000).toFixed(1)}s` : `offered: ${c.offered.join(", ") || "nobody"}`;
    return `${when}  ${c.caller.slice(0, 16).padEnd(16)} -> ${(c.groupId ?? c.target).slice(0, 12).padEnd(12)} ${c.outcome.padEnd(10)} ${who}`.slice(0, 120);
  });
  out((rows.length ? rows : ["no calls recorded"]).join("\n") + "\n");
  return 0;
}
