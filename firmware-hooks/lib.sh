# Shared by the hooks (sourced, not run): how to call the ringedge CLI and read its settings.
# Environment: RINGEDGE_BIN (command, may include arguments, e.g. "/opt/ringedge/bin/ringedge";
# default: ringedge on PATH, else bin/ringedge when dist/ is built, else node bin/ringedge.js),
# RINGEDGE_CONFIG (settings file), RINGEDGE_DATA_DIR and every other RINGEDGE_* setting.

HOOK_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

if [[ -n "${RINGEDGE_BIN:-}" ]]; then
  read -r -a BIN <<<"$RINGEDGE_BIN"
elif command -v ringedge >/dev/null 2>&1; then
  BIN=(ringedge)
elif [[ -f "$HOOK_DIR/../dist/ringedge.mjs" ]]; then
  # The shipped bundle through its launcher (the node flags live there).
  BIN=("$HOOK_DIR/../bin/ringedge")
else
  BIN=(node "$HOOK_DIR/../bin/ringedge.js")
fi

hook_name="$(basename "$0")"
say() { printf '%s: %s\n' "$hook_name" "$*"; }
warn() { printf '%s: %s\n' "$hook_name" "$*" >&2; }

ringedge() { "${BIN[@]}" "$@"; }

# own_like <ref> <path>...: run as root, gives the paths (recursively) to ref's owner unless that
# is root. Hooks run as root; the agent runs as the unit's User= and must still write what they
# created in its data directory (the ringedge CLI does the same for the files it writes).
own_like() {
  local ref=$1 owner
  shift
  ((EUID == 0)) || return 0
  owner=$(stat -c %u:%g -- "$ref" 2>/dev/null) || return 0
  [[ "$owner" == 0:0 ]] && return 0
  chown -R -- "$owner" "$@"
}

# One effective setting (after file and environment), e.g. setting dataDir.
setting() {
  ringedge settings | sed -n '/^effective:$/,$p' | tail -n +2 |
    node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>{const v=JSON.parse(s)[process.argv[1]];process.stdout.write(typeof v==="object"?JSON.stringify(v):String(v))})' "$1"
}

# The running agent's pid (from its status), empty when none answers.
agent_pid() {
  { ringedge status --json 2>/dev/null || true; } | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>{try{process.stdout.write(String(JSON.parse(s).pid))}catch{}})'
}

# Waits up to $2 seconds for pid $1 to exit; 0 if it did.
wait_exit() {
  local pid=$1 deadline=$((SECONDS + $2))
  while kill -0 "$pid" 2>/dev/null; do
    ((SECONDS >= deadline)) && return 1
    sleep 0.1
  done
  return 0
}

# Waits up to $1 seconds for `ringedge health` to pass; $2 = pid that must stay alive (optional).
wait_healthy() {
  local deadline=$((SECONDS + $1)) pid=${2:-} line
  while :; do
    if line=$(ringedge health 2>/dev/null); then
      say "$line"
      return 0
    fi
    if [[ -n "$pid" ]] && ! kill -0 "$pid" 2>/dev/null; then
      warn "the agent exited while starting"
      return 2
    fi
    if ((SECONDS >= deadline)); then
      warn "not healthy after $1 s: $line"
      return 1
    fi
    sleep 0.2
  done
}
