#!/usr/bin/env bash
# Runs node:test over the given files or folders (default: all of test/), inside a network
# namespace that holds only loopback when unshare is permitted (root in CI), so SIP
# messages naming foreign hosts (RFC 4475 files) can never leave this machine.
#
# Every file found must contribute tests: a file that fails to load already counts as a
# failed test in node:test, and test/every-file-reporter.mjs fails the run for a file that
# loaded but registered no test (its cases would otherwise vanish from the totals). A file
# still running after FILE_TIMEOUT_MS (a hung test, or a handle that keeps its process alive)
# is stopped and fails: a run always ends.
set -euo pipefail
cd "$(dirname "$0")/.."
dirs=("$@"); [ ${#dirs[@]} -gt 0 ] || dirs=(test/unit test/e2e)
for d in "${dirs[@]}"; do [ -e "$d" ] || { echo "no such test file or folder: $d" >&2; exit 1; }; done
mapfile -t files < <(find "${dirs[@]}" -name '*.test.ts' 2>/dev/null | sort)
[ ${#files[@]} -gt 0 ] || { echo "no test files under ${dirs[*]}" >&2; exit 1; }
export RINGEDGE_TEST_FILES; RINGEDGE_TEST_FILES=$(printf '%s\n' "${files[@]}")
FILE_TIMEOUT_MS=${RINGEDGE_TEST_FILE_TIMEOUT_MS:-1200000}
# tsx's synchronous transforms wait on an esbuild worker thread with Atomics.wait, which can
# hang a process for good on a loaded machine (a CLI child that never prints or exits);
# "0" selects esbuild's per-call synchronous path. Inherited by every agent and CLI child.
export ESBUILD_WORKER_THREADS=0
cmd=(node --import tsx --test --test-concurrency=2 --test-timeout="$FILE_TIMEOUT_MS"
  --test-reporter=spec --test-reporter-destination=stdout
  --test-reporter=./test/every-file-reporter.mjs --test-reporter-destination=stderr
  "${files[@]}")
if [ -z "${RINGEDGE_NO_NETNS:-}" ] && unshare -n true 2>/dev/null; then
  echo "running ${#files[@]} test files in a loopback-only network namespace"
  exec unshare -n bash -c 'ip link set lo up && exec "$@"' _ "${cmd[@]}"
fi
echo "running ${#files[@]} test files (no network namespace available: loopback-only by construction)"
exec "${cmd[@]}"
