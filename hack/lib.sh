# Shared helpers for hack/ scripts. Source it; do not run it.
set -euo pipefail
HACK_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$HACK_DIR/.." && pwd)"
# shellcheck source=versions.env
source "$HACK_DIR/versions.env"
# Built binaries live outside the repository, keyed by version, so clean clones reuse them.
CLIP_CACHE="${CLIP_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/clip-operator}"
export GOFLAGS="${GOFLAGS:--buildvcs=false}"
export CGO_ENABLED="${CGO_ENABLED:-0}"

log() { printf '[hack %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
