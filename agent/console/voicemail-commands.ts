// `ringedge voicemail list|play|delete`: the installer's view of the mailboxes on the appliance
// (voicemail/store.ts). Through the running agent's control socket like every command; with no
// agent running, on the mailbox folders directly (the store's lock keeps an agent from starting
// meanwhile). `play` copies a recording out after checking its SHA-256 against the metadata.
import fs from "node:fs";
import path from "node:path";
import { CommandError, type CommandTable } from "./control.ts";
import { MESSAGE_ID_RE, parseOwnerRef, type VoicemailMessage, type VoicemailStore } from "../voicemail/store.ts";

export const VOICEMAIL_HELP = {
  voicemail: `usage:
  ringedge voicemail list [--mailbox user/<id>|group/<id>] [--json]
  ringedge voicemail play <message id> --out <file.wav>
  ringedge voicemail delete <message id> [--json]

Messages callers left in mailboxes on the appliance (docs/voicemail.md), oldest first: id,
mailbox, caller, when, length, new/heard/saved. play copies the recording (8 kHz mono 16-bit
WAV) to a file after checking its SHA-256; it never overwrites an existing file. delete removes
a message (the owner's message lamp follows).`,
};

export interface VoicemailView extends VoicemailMessage {
  /** Where the recording is (play reads it from there). */
  file: string;
}

function argString(args: Record<string, unknown>, name: string): string | undefined {
  const v = args[name];
  return typeof v === "string" ? v : undefined;
}

/** The control-socket commands over a mailbox store. */
export function voicemailCommands(store: VoicemailStore): CommandTable {
  const view = (m: VoicemailMessage): VoicemailView => ({ ...m, file: store.audioPath(m) });
  const message = (args: Record<string, unknown>): VoicemailMessage => {
    const id = argString(args, "id") ?? "";
    if (!MESSAGE_ID_RE.test(id)) throw new CommandError(`"${id.slice(0, 40).replace(/[^\x20-\x7e]/g, "?")}" is not a message id (they look like 20261203T154233Z-1a2b3c4d; see ringedge voicemail list)`);
    const m = store.get(id);
    if (m === undefined) throw new CommandError(`no message ${id}`);
    return m;
  };
  return {
    "voicemail.list": (args) => {
      const ref = argString(args, "mailbox");
      if (ref === undefined) return store.list().map(view);
      const owner = parseOwnerRef(ref);
      if (owner === undefined) throw new CommandError(`--mailbox must be user/<id> or group/<id>, not "${ref.slice(0, 70).replace(/[^\x20-\x7e]/g, "?")}"`);
      return store.list(owner).map(view);
    },
    "voicemail.get": (args) => view(message(args)),
    "voicemail.delete": async (args) => {
      const m = message(args);
      if (!(await store.delete(m.id))) throw new CommandError(`no message ${m.id}`);
      return { deleted: m.id, mailbox: m.mailbox };
    },
  };
}

/** One line per message for people. */
export function formatMessages(list: readonly VoicemailMessage[]): string {
  if (list.length === 0) return "no messages";
  return list
    .map((m) => `${m.id}  ${m.mailbox.padEnd(16)} ${m.status.padEnd(5)} ${new Date(m.receivedAt).toISOString().replace(/\.\d+Z$/, "Z")}  ${(m.durationMs / 1000).toFixed(1).padStart(6)} s  from ${m.caller}`)
    .join("\n");
}

/**
 * play: the recording copied to `out` if its SHA-256 matches the metadata (the message as the
 * agent or the store reported it). Written to a temporary file beside `out`, then linked to
 * `out` so an existing file is never replaced.
 */
export function copyRecording(m: VoicemailView, out: string, sha256: (b: Buffer) => string): { ok: true; bytes: number } | { ok: false; error: string } {
  let bytes: Buffer;
  try {
    bytes = fs.readFileSync(m.file);
  } catch (err) {
    return { ok: false, error: `cannot read ${m.file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}` };
  }
  const got = sha256(bytes);
  if (got !== m.sha256) return { ok: false, error: `the recording of ${m.id} is damaged: SHA-256 ${got}, expected ${m.sha256}; nothing written` };
  const tmp = path.join(path.dirname(path.resolve(out)), `.${path.basename(out)}.tmp-${process.pid}`);
  try {
    fs.writeFileSync(tmp, bytes, { flag: "wx", mode: 0o640 });
    fs.linkSync(tmp, out);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    return { ok: false, error: code === "EEXIST" ? `${out} exists; not overwritten` : `cannot write ${out}: ${code ?? (err as Error).message}` };
  } finally {
    fs.rmSync(tmp, { force: true });
  }
  return { ok: true, bytes: bytes.length };
}
