// Writes to the JSON settings file (console-password --write, settings unset, the serial
// console's first-login password): atomic, and keeping the file's owner and mode.
import fs from "node:fs";
import path from "node:path";
import { keepOwnerSync } from "../store/ownership.ts";

/**
 * Sets (or, with undefined, removes) keys of a JSON settings file atomically (temp, fsync,
 * rename), keeping the others. The new file keeps the old one's owner and mode, so an agent
 * running unprivileged still reads it after a root tool wrote it; a new file gets the owner of
 * `ownerIfNew` (the data directory) and mode 0600.
 */
export function writeSettings(file: string, changes: Readonly<Record<string, unknown>>, ownerIfNew?: string): void {
  let obj: Record<string, unknown> = {};
  let old: fs.Stats | undefined;
  if (fs.existsSync(file)) {
    old = fs.statSync(file);
    let parsed: unknown;
    try {
      parsed = JSON.parse(fs.readFileSync(file, "utf8"));
    } catch (e) {
      throw new Error(`${file} is not valid JSON (${(e as Error).message}); not changed`);
    }
    if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) throw new Error(`${file} is not a JSON object of settings; not changed`);
    obj = parsed as Record<string, unknown>;
  }
  for (const [key, value] of Object.entries(changes)) {
    if (value === undefined) delete obj[key];
    else obj[key] = value;
  }
  fs.mkdirSync(path.dirname(file), { recursive: true });
  const tmp = `${file}.tmp-${process.pid}`;
  const fd = fs.openSync(tmp, "w", 0o600);
  try {
    if (old) {
      fs.fchmodSync(fd, old.mode & 0o777);
      keepOwnerSync(fd, file);
    } else if (ownerIfNew !== undefined) keepOwnerSync(fd, ownerIfNew);
    fs.writeSync(fd, JSON.stringify(obj, null, 2) + "\n");
    fs.fsyncSync(fd);
  } catch (e) {
    fs.closeSync(fd);
    fs.rmSync(tmp, { force: true });
    throw e;
  }
  fs.closeSync(fd);
  fs.renameSync(tmp, file);
}

/** Sets one key of a JSON settings file (see writeSettings). */
export function writeSetting(file: string, key: string, value: unknown, ownerIfNew?: string): void {
  writeSettings(file, { [key]: value }, ownerIfNew);
}
