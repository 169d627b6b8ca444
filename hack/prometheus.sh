#!/usr/bin/env bash
# Local Prometheus (Debian's /usr/bin/prometheus, `apt-get install prometheus`) scraping the
# operator's metrics port every second, with dashboards/alerts.yaml loaded, so the dashboards'
# and alerts' queries can be tried against real data.
#
#   hack/prometheus.sh start   start on 127.0.0.1:${CLIP_PROM_PORT:-19090} (idempotent), wait until ready
#   hack/prometheus.sh stop    stop the server that `start` started (by its PID file)
#   hack/prometheus.sh status  say whether it runs
#   hack/prometheus.sh env     print export lines for its URL: eval "$(hack/prometheus.sh env)"
#
# Settings: CLIP_PROM_PORT, CLIP_PROM_STATE (default .cluster/prometheus: config, data, log),
# CLIP_PROM_TARGETS (comma-separated host:port of operator metrics endpoints, default
# 127.0.0.1:8080), CLIP_PROM_JOB (scrape job name, default clip-operator), PROMETHEUS (binary),
# CLIP_PROM_SCRAPE_INTERVAL (default 1s; the chart's ServiceMonitor uses 30s: bench/traffic
# scrapes at that), CLIP_PROM_RETENTION (default 1d).
# Nothing is started by the system's prometheus service: this is a separate process with its
# own config and data directory, listening on loopback only.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PROM_BIN="${PROMETHEUS:-$(command -v prometheus || echo /usr/bin/prometheus)}"
PROM_PORT="${CLIP_PROM_PORT:-19090}"
PROM_STATE="${CLIP_PROM_STATE:-$REPO_ROOT/.cluster/prometheus}"
PROM_TARGETS="${CLIP_PROM_TARGETS:-127.0.0.1:8080}"
PROM_JOB="${CLIP_PROM_JOB:-clip-operator}"
PROM_INTERVAL="${CLIP_PROM_SCRAPE_INTERVAL:-1s}"
PROM_RETENTION="${CLIP_PROM_RETENTION:-1d}"
PROM_URL="http://127.0.0.1:$PROM_PORT"
PID_FILE="$PROM_STATE/prometheus.pid"
LOG_FILE="$PROM_STATE/prometheus.log"
CONFIG_FILE="$PROM_STATE/prometheus.yml"

running_pid() {
  [[ -f "$PID_FILE" ]] || return 0
  local pid
  pid="$(cat "$PID_FILE")"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 0
  if kill -0 "$pid" 2>/dev/null && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q prometheus; then
    printf '%s\n' "$pid"
  fi
}

ready() {
  curl -fsS -o /dev/null --max-time 2 --noproxy '*' "$PROM_URL/-/ready" 2>/dev/null
}

write_config() {
  local targets="" t
  IFS=',' read -ra list <<<"$PROM_TARGETS"
  for t in "${list[@]}"; do
    targets+="\"$t\", "
  done
  cat >"$CONFIG_FILE" <<EOF
# Written by hack/prometheus.sh; edits are lost on the next start.
global:
  scrape_interval: $PROM_INTERVAL
  scrape_timeout: $PROM_INTERVAL
  evaluation_interval: $PROM_INTERVAL
rule_files:
  - $REPO_ROOT/dashboards/alerts.yaml
scrape_configs:
  - job_name: $PROM_JOB
    static_configs:
      - targets: [${targets%, }]
EOF
}

start() {
  local pid
  pid="$(running_pid)"
  if [[ -n "$pid" ]]; then
    ready || die "prometheus (PID $pid) runs but is not ready on $PROM_URL; see $LOG_FILE"
    log "prometheus already running (PID $pid) on $PROM_URL"
    return 0
  fi
  [[ -x "$PROM_BIN" ]] || die "prometheus not found: apt-get install prometheus (or set PROMETHEUS=/path/to/prometheus)"
  command -v curl >/dev/null || die "curl is needed to check the server (apt-get install -y curl)"
  if ready || (exec 3<>"/dev/tcp/127.0.0.1/$PROM_PORT") 2>/dev/null; then
    die "port $PROM_PORT is taken by another process; set CLIP_PROM_PORT or stop it"
  fi
  mkdir -p "$PROM_STATE/data"
  write_config
  log "starting prometheus on $PROM_URL scraping $PROM_TARGETS every $PROM_INTERVAL, data in $PROM_STATE/data, log $LOG_FILE"
  setsid "$PROM_BIN" \
    --config.file="$CONFIG_FILE" \
    --storage.tsdb.path="$PROM_STATE/data" \
    --storage.tsdb.retention.time="$PROM_RETENTION" \
    --web.listen-address="127.0.0.1:$PROM_PORT" \
    --web.enable-admin-api \
    >"$LOG_FILE" 2>&1 </dev/null &
  pid=$!
  echo "$pid" >"$PID_FILE"
  wait_started prometheus "$pid" "$PID_FILE" "$LOG_FILE" "$PROM_URL" 30 ready
  log "prometheus running (PID $pid) on $PROM_URL"
}

stop() {
  stop_pid prometheus "$(running_pid)" "$PID_FILE" 15
}

status() {
  local pid
  pid="$(running_pid)"
  if [[ -n "$pid" ]]; then
    echo "prometheus running (PID $pid) on $PROM_URL"
  else
    echo "prometheus not running"
    return 1
  fi
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  env) echo "export CLIP_PROMETHEUS_URL=$PROM_URL" ;;
  *) die "usage: hack/prometheus.sh start|stop|status|env" ;;
esac
