#!/usr/bin/env bash
# dashcheck (hack/dashcheck/main.go), built once per source change into the hack/ cache.
#
#   hack/dashcheck/build.sh         build (or reuse) dashcheck; prints its path on stdout
#   hack/dashcheck/build.sh check   build, then check dashboards/*.json
#
# The cache entry is keyed by a hash of go.mod, go.sum and main.go, so an edit or a bumped
# dependency (github.com/grafana/grafana-foundation-sdk/go, github.com/prometheus/prometheus,
# both from the Go module proxy, pinned in go.mod/go.sum) builds a new binary; otherwise the
# build is skipped. A cold build takes about 2 minutes (the Prometheus module is large).
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

SRC="$HACK_DIR/dashcheck"
KEY="$(cat "$SRC/go.mod" "$SRC/go.sum" "$SRC/main.go" | sha256sum | cut -c1-12)"
BIN="$CLIP_CACHE/dashcheck-$KEY/dashcheck"

build() {
  if [[ -x "$BIN" ]]; then
    log "dashcheck: cached at $BIN"
    printf '%s\n' "$BIN"
    return
  fi
  command -v go >/dev/null || die "go is not installed; dashcheck is built from the Go module proxy"
  mkdir -p "$(dirname "$BIN")"
  log "dashcheck: building $BIN (go build -trimpath -mod=readonly; ~2 min cold)"
  (cd "$SRC" && go build -trimpath -mod=readonly -o "$BIN.tmp.$$" .) || die "building dashcheck failed"
  mv "$BIN.tmp.$$" "$BIN"  # atomic: a concurrent build of the same key is harmless
  printf '%s\n' "$BIN"
}

case "${1:-build}" in
  build) build ;;
  check) "$(build)" "$REPO_ROOT"/dashboards/*.json ;;
  *) die "usage: hack/dashcheck/build.sh [build|check]" ;;
esac
