// `ringedge why <call-id>` and `ringedge why --last --user <id>`: why each operator was or was
// not offered a call, in plain words (agent/routing/why.ts). Recent calls come from the running
// agent's memory (full detail); older ones, or with no agent running, from the call log's
// bounded `why`.
import { involves, renderWhy, type WhyRecord } from "../routing/why.ts";
import type { AgentView } from "./commands.ts";
import { CommandError, argString, type CommandTable } from "./control.ts";
import { SiteService } from "../site/site.ts";

export const WHY_HELP: Record<string, string> = {
  why: `usage:
  ringedge why <call-id> [--user <user id>] [--json]
  ringedge why --last --user <user id> [--json]

Why each operator was or was not offered a call, as the routing core decided it, step by step:
who rang and on which devices, who was skipped and why (offline, busy at the call limit, away,
do not disturb, wrap-up, beyond the 10-phone cap, waiting while the responsible operator rang
first), whether the group was out of hours, and what the call got in the end. <call-id> is the
SIP Call-ID as 'ringedge calls --json' shows it. --user keeps what concerns that operator;
--last picks the most recent call that operator could have been offered.`,
};

export interface WhyView {
  callId: string;
  at: number;
  caller?: string;
  target?: string;
  outcome?: string;
  why: WhyRecord;
  /** The record came from the agent's memory (full) or from the call log (bounded). */
  from: "memory" | "call log";
  lines: string[];
}

export function whyCommands(view: AgentView): CommandTable {
  return {
    /** args: { callId?: string, last?: boolean, user?: string } */
    "call.why": (args): WhyView => {
      const callId = argString(args, "callId");
      const user = argString(args, "user");
      const last = args.last === true;
      if (callId === undefined && !last) throw new CommandError("name a call (its Call-ID) or use --last --user <id>");
      if (callId !== undefined && last) throw new CommandError("give a Call-ID or --last, not both");
      if (last && user === undefined) throw new CommandError("--last needs --user <user id>");
      const site = (view.site ?? new SiteService({ store: view.store })).current();
      if (user !== undefined && !site.index.usersById.has(user)) throw new CommandError(`no user '${user}' (see ringedge user list)`);
      const membersOf = (groupId: string): readonly string[] | undefined => site.index.groupsById.get(groupId)?.members;

      const found = callId !== undefined ? byId(view, callId) : lastFor(view, user as string, membersOf);
      if (found === undefined) {
        throw new CommandError(callId !== undefined ? `no call '${callId}' with reasons recorded (recent group calls only; see ringedge calls --json)` : `no recent group call that ${user} could have been offered`);
      }
      const lines = renderWhy(found, found.why, { ...(user !== undefined ? { userId: user } : {}), membersOf });
      return { ...found, lines };
    },
  };
}

type Found = Omit<WhyView, "lines">;

function byId(view: AgentView, callId: string): Found | undefined {
  const m = view.why?.get(callId);
  if (m?.record !== undefined) return fromMemory(callId, m.trace.startedAt, m.record, m);
  if (m !== undefined) return undefined;
  const r = view.store.listCalls({ limit: 5000 }).find((c) => c.id === callId);
  return r?.why === undefined ? undefined : { callId: r.id, at: r.at, caller: r.caller, target: r.target, outcome: r.outcome, why: r.why, from: "call log" };
}

function lastFor(view: AgentView, userId: string, membersOf: (g: string) => readonly string[] | undefined): Found | undefined {
  for (const e of view.why?.recent() ?? []) {
    if (e.record !== undefined && involves(e.record, userId, membersOf)) return fromMemory(e.trace.callId, e.trace.startedAt, e.record, e);
  }
  for (const r of view.store.listCalls({ limit: 5000 })) {
    if (r.why !== undefined && involves(r.why, userId, membersOf)) return { callId: r.id, at: r.at, caller: r.caller, target: r.target, outcome: r.outcome, why: r.why, from: "call log" };
  }
  return undefined;
}

function fromMemory(callId: string, at: number, why: WhyRecord, labels: { caller?: string; target?: string; outcome?: string }): Found {
  const out: Found = { callId, at, why, from: "memory" };
  if (labels.caller !== undefined) out.caller = labels.caller;
  if (labels.target !== undefined) out.target = labels.target;
  if (labels.outcome !== undefined) out.outcome = labels.outcome;
  return out;
}
