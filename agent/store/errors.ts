// Errors of the persistent store. Each message says which file, what is wrong, what the agent
// did NOT do (it never starts empty and never overwrites a damaged file by itself), and what
// the operator can run next.

/** The operator command that promotes `<file>.bak` (Store.recover). */
export const RECOVER_COMMAND = "ringedge store recover";

/** What is known about the last good copy `<file>.bak`. */
export interface BackupInfo {
  path: string;
  /** True when the copy has a valid envelope and checksum (it can be promoted). */
  usable: boolean;
  savedAt?: string;
  schemaVersion?: number;
  /** Why it is not usable ("missing", "checksum mismatch", ...). */
  reason?: string;
}

export class StoreError extends Error {
  constructor(
    message: string,
    readonly file: string,
  ) {
    super(message);
    this.name = "StoreError";
  }
}

export function describeBackup(b: BackupInfo): string {
  if (b.usable) return `Last good copy: ${b.path} (saved ${b.savedAt ?? "at an unknown time"}).`;
  return `No usable last good copy: ${b.path} is ${b.reason ?? "not usable"}.`;
}

/** The store file exists but cannot be trusted: empty, truncated, not JSON, wrong envelope,
 *  checksum mismatch, or data that does not match the schema. */
export class StoreCorruptError extends StoreError {
  constructor(
    file: string,
    readonly reason: string,
    readonly backup: BackupInfo,
    dataDir: string,
  ) {
    const next = backup.usable
      ? `To restore it (the damaged file is kept as ${file}.corrupt-<time>), run \`${RECOVER_COMMAND}\` with data dir ${dataDir}.`
      : `\`${RECOVER_COMMAND}\` cannot help without a usable copy; restore ${file} from an external backup or move it away to start a new, empty store.`;
    super(`Store file ${file} is corrupt: ${reason}. ${describeBackup(backup)} The agent refuses to start with empty data and has not modified the file. ${next}`, file);
    this.name = "StoreCorruptError";
  }
}

/** The file was written by a newer ringedge (schemaVersion above what this code knows). */
export class StoreVersionError extends StoreError {
  constructor(
    file: string,
    readonly found: number,
    readonly supported: number,
  ) {
    super(
      `Store file ${file} has schemaVersion ${found}, but this ringedge only knows versions up to ${supported}: it was written by a newer release. ` +
        `Refusing to downgrade it; run the newer release again, or restore a copy saved by this release (e.g. ${file}.v${supported}.bak if present).`,
      file,
    );
    this.name = "StoreVersionError";
  }
}

/** A migration step could not convert the data (the old file is left exactly as it was). */
export class StoreMigrationError extends StoreError {
  constructor(
    file: string,
    readonly from: number,
    readonly to: number,
    readonly reason: string,
  ) {
    super(`Store file ${file} could not be migrated from schemaVersion ${from} to ${to}: ${reason}. The file was not modified.`, file);
    this.name = "StoreMigrationError";
  }
}

/** Another live process (or another Store in this process) has the store open. */
export class StoreLockedError extends StoreError {
  constructor(
    file: string,
    readonly holderPid: number,
  ) {
    super(`Store file ${file} is in use by process ${holderPid} (lock ${file}.lock). Stop that process first, or use the running agent's console.`, file);
    this.name = "StoreLockedError";
  }
}
