// The console fetches a recording over its MQTT link (cmd/voicemail-fetch, docs/voicemail.md):
// authenticated as every console command is (only the console may publish to the site's cmd/
// topics: broker credentials, TLS and ACL, docs/mqtt.md), integrity-checked twice — the store
// checks the whole file against the SHA-256 in its metadata before any byte is sent (a damaged
// recording is refused), and each chunk carries its own SHA-256 beside the whole file's, so the
// console verifies every chunk and the reassembled WAV. Chunks keep each reply well under the
// MQTT payload limit; the console asks for the next offset until `done`.
import { createHash } from "node:crypto";
import { MESSAGE_ID_RE, type VoicemailStore } from "./store.ts";

/** Raw bytes per chunk (base64 makes a reply about 350 KB). */
export const FETCH_CHUNK_BYTES = 256 * 1024;

export interface FetchChunk {
  id: string;
  mailbox: string;
  /** Size and SHA-256 (hex) of the whole WAV file. */
  bytes: number;
  sha256: string;
  offset: number;
  /** This chunk, base64. */
  data: string;
  chunkSha256: string;
  /** The last chunk: offset + its length = bytes. */
  done: boolean;
}

/**
 * One chunk of a recording; rejects with the reason on bad arguments or a damaged file. The
 * whole file is checked against its stored SHA-256 when the console starts (offset 0); the
 * console checks every chunk and, at the end, the whole file against the same SHA-256.
 */
export async function fetchRecording(store: Pick<VoicemailStore, "get" | "verifyAudio" | "readAudioRange">, args: Record<string, unknown>, chunkBytes = FETCH_CHUNK_BYTES): Promise<FetchChunk> {
  const id = args.id;
  if (typeof id !== "string" || !MESSAGE_ID_RE.test(id)) throw new Error("args.id must be a message id (voicemail.message events carry it)");
  const offset = args.offset ?? 0;
  if (typeof offset !== "number" || !Number.isInteger(offset) || offset < 0) throw new Error("args.offset must be a non-negative integer");
  let m = store.get(id);
  if (m === undefined) throw new Error(`no message ${id}`);
  if (offset === 0) {
    const v = await store.verifyAudio(id);
    if (!v.ok) throw new Error(v.error);
    m = v.message;
  }
  if (offset > m.bytes) throw new Error(`args.offset ${offset} is past the end (${m.bytes} bytes)`);
  const chunk = await store.readAudioRange(m, offset, chunkBytes);
  return {
    id,
    mailbox: m.mailbox,
    bytes: m.bytes,
    sha256: m.sha256,
    offset,
    data: chunk.toString("base64"),
    chunkSha256: createHash("sha256").update(chunk).digest("hex"),
    done: offset + chunk.length >= m.bytes,
  };
}
