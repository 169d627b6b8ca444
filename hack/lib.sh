# Shared helpers for hack/ scripts. Source it; do not run it.
set -euo pipefail
HACK_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$HACK_DIR/.." && pwd)"
# shellcheck source=versions.env
source "$HACK_DIR/versions.env"
# Built binaries live outside the repository, keyed by version, so clean clones reuse them.
CLIP_CACHE="${CLIP_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/clip-operator}"
# The project's Python packages live in a virtualenv of the checkout, never in the global
# interpreter (hack/setup.sh makes it); every script runs its python3 once it exists.
VENV="${CLIP_VENV:-$REPO_ROOT/.venv}"
use_venv() { if [ -x "$VENV/bin/python3" ]; then export PATH="$VENV/bin:$PATH"; hash -r; fi; }
use_venv
export GOFLAGS="${GOFLAGS:--buildvcs=false}"
export CGO_ENABLED="${CGO_ENABLED:-0}"

log() { printf '[hack %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# stop_pid <name> <pid-or-empty> <pid-file> <grace-seconds>: SIGTERM, then SIGKILL after the grace.
stop_pid() {
  local name="$1" pid="$2" pid_file="$3" grace="$4"
  if [[ -z "$pid" ]]; then
    log "$name is not running (no live PID in $pid_file)"
    rm -f "$pid_file"
    return 0
  fi
  log "stopping $name (PID $pid)"
  kill "$pid"
  local deadline=$((SECONDS + grace))
  while kill -0 "$pid" 2>/dev/null; do
    if ((SECONDS >= deadline)); then
      log "PID $pid ignored SIGTERM for $grace s; sending SIGKILL"
      kill -9 "$pid" 2>/dev/null || true
      break
    fi
    sleep 0.1
  done
  rm -f "$pid_file"
}

# wait_started <name> <pid> <pid-file> <log-file> <where> <seconds> <check-command...>:
# wait until the check passes; fail with the log's tail if the process dies or time runs out.
wait_started() {
  local name="$1" pid="$2" pid_file="$3" log_file="$4" where="$5" limit="$6"
  shift 6
  local deadline=$((SECONDS + limit))
  until "$@"; do
    if ! kill -0 "$pid" 2>/dev/null; then
      rm -f "$pid_file"
      tail -n 20 "$log_file" >&2 || true
      die "$name exited at start; see $log_file"
    fi
    ((SECONDS < deadline)) || die "$name (PID $pid) not ready on $where within $limit s; see $log_file"
    sleep 0.2
  done
}
