#!/usr/bin/env bash
# Runs node:test over the given folders (default: all of test/), inside a network
# namespace that holds only loopback when unshare is permitted (root in CI), so SIP
# messages naming foreign hosts (RFC 4475 files) can never leave this machine.
set -euo pipefail
cd "$(dirname "$0")/.."
dirs=("$@"); [ ${#dirs[@]} -gt 0 ] || dirs=(test/unit test/e2e)
mapfile -t files < <(find "${dirs[@]}" -name '*.test.ts' 2>/dev/null | sort)
[ ${#files[@]} -gt 0 ] || { echo "no test files under ${dirs[*]}" >&2; exit 1; }
cmd=(node --import tsx --test --test-concurrency=2 "${files[@]}")
if [ -z "${RINGEDGE_NO_NETNS:-}" ] && unshare -n true 2>/dev/null; then
  echo "running ${#files[@]} test files in a loopback-only network namespace"
  exec unshare -n bash -c 'ip link set lo up && exec "$@"' _ "${cmd[@]}"
fi
echo "running ${#files[@]} test files (no network namespace available: loopback-only by construction)"
exec "${cmd[@]}"
