#!/usr/bin/env bash
# One node per machine (kubelet ports, the Pod bridge): before the e2e tier starts its own
# node, stop a demo left running, and say so. `make demo` brings it back.
source "$(dirname "$0")/lib.sh"
DEMO_DIR="$REPO_ROOT/.cluster"
if [ -f "$DEMO_DIR/node/kubelet.pid" ] && kill -0 "$(cat "$DEMO_DIR/node/kubelet.pid")" 2>/dev/null; then
  log "the demo's node is running and a machine holds one node: stopping the demo (make demo-down); make demo starts it again"
  CLUSTER_DIR="$DEMO_DIR" "$HACK_DIR/demo" down
fi
