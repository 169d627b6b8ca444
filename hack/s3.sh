#!/usr/bin/env bash
# Local S3: versitygw (Apache-2.0) built from the Go module proxy, serving a posix directory.
# It checks SigV4 signatures and presigned-URL expiry, which is what our tests need.
#
#   hack/s3.sh build   build (or reuse) the binary; prints its path on stdout
#   hack/s3.sh start   start on 127.0.0.1:${CLIP_S3_PORT:-7070} (idempotent), wait until it answers
#   hack/s3.sh stop    stop the server that `start` started (by its PID file)
#   hack/s3.sh status  say whether it runs
#   hack/s3.sh env     print export lines for the endpoint, keys and region: eval "$(hack/s3.sh env)"
#
# Settings: CLIP_S3_PORT, CLIP_S3_STATE (default .cluster/s3), CLIP_S3_ACCESS_KEY,
# CLIP_S3_SECRET_KEY, CLIP_S3_REGION, CLIP_CACHE.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

VGW_DIR="$CLIP_CACHE/versitygw-$VERSITYGW_VERSION"
VGW_BIN="$VGW_DIR/bin/versitygw"
S3_PORT="${CLIP_S3_PORT:-7070}"
S3_STATE="${CLIP_S3_STATE:-$REPO_ROOT/.cluster/s3}"
S3_ACCESS_KEY="${CLIP_S3_ACCESS_KEY:-clipadmin}"
S3_SECRET_KEY="${CLIP_S3_SECRET_KEY:-clipadmin-secret}"
S3_REGION="${CLIP_S3_REGION:-us-east-1}"
S3_ENDPOINT="http://127.0.0.1:$S3_PORT"
PID_FILE="$S3_STATE/versitygw.pid"
LOG_FILE="$S3_STATE/versitygw.log"
HEALTH_PATH=/health

build() {
  if [[ -x "$VGW_BIN" ]]; then
    log "versitygw $VERSITYGW_VERSION: cached at $VGW_BIN"
  else
    command -v go >/dev/null || die "go is not installed; versitygw is built from the Go module proxy"
    log "versitygw $VERSITYGW_VERSION: building (a few minutes cold):"
    log "  GOBIN=$VGW_DIR/bin go install -trimpath -ldflags='-s -w -X main.Version=$VERSITYGW_VERSION' github.com/versity/versitygw/cmd/versitygw@$VERSITYGW_VERSION"
    mkdir -p "$VGW_DIR/bin"
    # Build from a neutral directory so no go.mod/go.work around us takes part.
    (cd "$VGW_DIR" && GOBIN="$VGW_DIR/bin" go install -trimpath -ldflags="-s -w -X main.Version=$VERSITYGW_VERSION" \
      "github.com/versity/versitygw/cmd/versitygw@$VERSITYGW_VERSION") \
      || die "building versitygw failed (is $VERSITYGW_VERSION on the Go module proxy? go list -m -versions github.com/versity/versitygw)"
    log "versitygw $VERSITYGW_VERSION: built $VGW_BIN"
  fi
  printf '%s\n' "$VGW_BIN"
}

# PID from the PID file if that process is alive and really is versitygw, else nothing.
running_pid() {
  [[ -f "$PID_FILE" ]] || return 0
  local pid
  pid="$(cat "$PID_FILE")"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 0
  if kill -0 "$pid" 2>/dev/null && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q versitygw; then
    printf '%s\n' "$pid"
  fi
}

answers() {
  curl -fsS -o /dev/null --max-time 2 "$S3_ENDPOINT$HEALTH_PATH" 2>/dev/null
}

start() {
  local pid
  pid="$(running_pid)"
  if [[ -n "$pid" ]]; then
    answers || die "versitygw (PID $pid) runs but does not answer on $S3_ENDPOINT; see $LOG_FILE"
    log "versitygw already running (PID $pid) on $S3_ENDPOINT"
    return 0
  fi
  command -v curl >/dev/null || die "curl is needed to check the server (apt-get install -y curl)"
  if answers || (exec 3<>"/dev/tcp/127.0.0.1/$S3_PORT") 2>/dev/null; then
    die "port $S3_PORT is taken by another process; set CLIP_S3_PORT or stop it"
  fi
  build >/dev/null
  mkdir -p "$S3_STATE/data" "$S3_STATE/sidecar"
  log "starting versitygw on $S3_ENDPOINT, data in $S3_STATE/data, log $LOG_FILE"
  # Object metadata goes to a sidecar directory so the data directory needs no xattr support.
  ROOT_ACCESS_KEY="$S3_ACCESS_KEY" ROOT_SECRET_KEY="$S3_SECRET_KEY" \
    setsid "$VGW_BIN" --port "127.0.0.1:$S3_PORT" --region "$S3_REGION" --health "$HEALTH_PATH" \
    posix --sidecar "$S3_STATE/sidecar" "$S3_STATE/data" >"$LOG_FILE" 2>&1 </dev/null &
  pid=$!
  echo "$pid" >"$PID_FILE"
  wait_started versitygw "$pid" "$PID_FILE" "$LOG_FILE" "$S3_ENDPOINT" 30 answers
  log "versitygw running (PID $pid) on $S3_ENDPOINT"
}

stop() {
  stop_pid versitygw "$(running_pid)" "$PID_FILE" 10
}

status() {
  local pid
  pid="$(running_pid)"
  if [[ -n "$pid" ]]; then
    echo "versitygw running (PID $pid) on $S3_ENDPOINT"
  else
    echo "versitygw not running"
    return 1
  fi
}

env_lines() {
  cat <<EOF
export CLIP_S3_ENDPOINT=$S3_ENDPOINT
export CLIP_S3_REGION=$S3_REGION
export AWS_ACCESS_KEY_ID=$S3_ACCESS_KEY
export AWS_SECRET_ACCESS_KEY=$S3_SECRET_KEY
export AWS_DEFAULT_REGION=$S3_REGION
export CLIP_TEST_S3_ENDPOINT=$S3_ENDPOINT
export CLIP_TEST_S3_ACCESS_KEY=$S3_ACCESS_KEY
export CLIP_TEST_S3_SECRET_KEY=$S3_SECRET_KEY
export CLIP_TEST_S3_REGION=$S3_REGION
EOF
}

case "${1:-}" in
  build) build ;;
  start) start ;;
  stop) stop ;;
  status) status ;;
  env) env_lines ;;
  *) die "usage: hack/s3.sh build|start|stop|status|env" ;;
esac
