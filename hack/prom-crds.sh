#!/usr/bin/env bash
# prometheus-operator's CRDs (ServiceMonitor, PodMonitor, PrometheusRule), taken from the
# prometheus-operator Go module on the module proxy (its example/prometheus-operator-crd/),
# so the chart's monitoring objects can be checked by a real API server.
#
#   hack/prom-crds.sh path       download the module (cached by Go) and print the CRD folder
#   hack/prom-crds.sh install    kubectl apply --server-side the three CRDs into $KUBECONFIG's
#                                cluster and wait until they are Established
#
# PROM_OPERATOR_VERSION overrides the pinned version (go list -m -versions
# github.com/prometheus-operator/prometheus-operator lists what the proxy has).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PROM_OPERATOR_VERSION="${PROM_OPERATOR_VERSION:-v0.85.0}"
MODULE=github.com/prometheus-operator/prometheus-operator
CRDS=(servicemonitors podmonitors prometheusrules)

crd_dir() {
  command -v go >/dev/null || die "go is not installed; the CRDs come from the Go module proxy"
  local dir
  mkdir -p "$CLIP_CACHE"
  # From a neutral directory: no go.mod/go.work around us takes part.
  dir="$(cd "$CLIP_CACHE" && go mod download -json "$MODULE@$PROM_OPERATOR_VERSION" \
    | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
  [[ -n "$dir" && -d "$dir/example/prometheus-operator-crd" ]] \
    || die "$MODULE@$PROM_OPERATOR_VERSION has no example/prometheus-operator-crd (go list -m -versions $MODULE)"
  printf '%s\n' "$dir/example/prometheus-operator-crd"
}

install() {
  local dir kubectl_bin files=() names=()
  dir="$(crd_dir)"
  kubectl_bin="${KUBECTL:-kubectl}"
  command -v "$kubectl_bin" >/dev/null || die "no kubectl: eval \"\$(hack/cluster env)\" first"
  for crd in "${CRDS[@]}"; do
    files+=(-f "$dir/monitoring.coreos.com_$crd.yaml")
    names+=("crd/$crd.monitoring.coreos.com")
  done
  log "prometheus-operator $PROM_OPERATOR_VERSION CRDs: ${CRDS[*]}"
  "$kubectl_bin" apply --server-side --force-conflicts "${files[@]}" >&2
  "$kubectl_bin" wait --for=condition=Established --timeout=60s "${names[@]}" >&2
}

case "${1:-path}" in
  path) crd_dir ;;
  install) install ;;
  *) die "usage: hack/prom-crds.sh [path|install]" ;;
esac
