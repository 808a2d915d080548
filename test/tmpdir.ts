// Temporary folders for tests, benchmarks and the demo. Every folder made here is removed when
// the process ends: after its last test, after a failure or an uncaught error, and when the
// test runner stops it with SIGINT/SIGTERM (the signal is raised again afterwards, so the
// process still ends the way the sender asked). Only SIGKILL leaves one behind.
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

const made = new Set<string>();

/** A fresh folder under the system temp dir (honours TMPDIR), removed at the latest at exit. */
export function tempDir(prefix = "ringedge-test-"): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  made.add(dir);
  return dir;
}

/** Removes a folder from tempDir() now (nothing happens for one already gone). */
export function removeTempDir(dir: string): void {
  fs.rmSync(dir, { recursive: true, force: true });
  made.delete(dir);
}

function removeAll(): void {
  for (const dir of made) {
    try {
      removeTempDir(dir);
    } catch {
      // A folder that cannot be removed must not hide the test result.
    }
  }
}

process.once("exit", removeAll);
for (const signal of ["SIGINT", "SIGTERM"] as const) {
  process.once(signal, () => {
    removeAll();
    process.kill(process.pid, signal);
  });
}
