// Files written by ringedge tools that run as root (console-password --write, offline CLI
// commands on the store, the firmware hooks' migrations and trial runs, factory-reset) must
// stay readable and replaceable by the agent, which the unit runs as an unprivileged user
// (User=ringedge). A file created by root belongs to root, and a 0600 store or settings file
// owned by root stops that agent starting or reloading. So every write path here hands the new
// file, before it is renamed into place, to the owner of what it replaces: the data directory's
// owner for files in the data directory, the old file's owner (and mode) for the settings file.
// A process that is not root creates files it owns and cannot give them away: nothing to do.
import fs from "node:fs";
import fsp, { type FileHandle } from "node:fs/promises";
import path from "node:path";

export interface Owner {
  uid: number;
  gid: number;
}

function runningAsRoot(): boolean {
  return typeof process.geteuid === "function" && process.geteuid() === 0;
}

/**
 * Owner a root process must give files it creates in/as `ref` (a directory, or a file being
 * replaced): ref's owner when that is not root. Null when not root, when ref is root's, or when
 * ref does not exist (nothing to match).
 */
export function ownerToKeep(ref: string): Owner | null {
  if (!runningAsRoot()) return null;
  try {
    const st = fs.statSync(ref);
    return st.uid === 0 && st.gid === 0 ? null : { uid: st.uid, gid: st.gid };
  } catch {
    return null;
  }
}

/** Gives the open file `fd` to the owner of `ref` (see ownerToKeep). */
export function keepOwnerSync(fd: number, ref: string): void {
  const o = ownerToKeep(ref);
  if (o) fs.fchownSync(fd, o.uid, o.gid);
}

export async function keepOwner(fh: FileHandle, ref: string): Promise<void> {
  const o = ownerToKeep(ref);
  if (o) await fh.chown(o.uid, o.gid);
}

/** Gives a path (a directory or a file made by someone else, e.g. a shell redirect) to ref's owner. */
export function keepOwnerOfPathSync(target: string, ref: string): void {
  const o = ownerToKeep(ref);
  if (o) fs.lchownSync(target, o.uid, o.gid);
}

/** The directories mkdir -p made: from `dir` up to and including `first` (what mkdir reported). */
function madeChain(dir: string, first: string): string[] {
  const chain: string[] = [];
  for (let p = path.resolve(dir); ; p = path.dirname(p)) {
    chain.push(p);
    if (p === path.resolve(first) || path.dirname(p) === p) return chain;
  }
}

/** mkdir -p, and every directory it made goes to ref's owner (see ownerToKeep). */
export function mkdirOwnedSync(dir: string, ref: string, mode = 0o750): void {
  const first = fs.mkdirSync(dir, { recursive: true, mode });
  const o = first === undefined ? null : ownerToKeep(ref);
  if (o && first !== undefined) for (const d of madeChain(dir, first)) fs.lchownSync(d, o.uid, o.gid);
}

export async function mkdirOwned(dir: string, ref: string, mode = 0o750): Promise<void> {
  const first = await fsp.mkdir(dir, { recursive: true, mode });
  const o = first === undefined ? null : ownerToKeep(ref);
  if (o && first !== undefined) for (const d of madeChain(dir, first)) await fsp.lchown(d, o.uid, o.gid);
}
