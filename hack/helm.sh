#!/usr/bin/env bash
# helm, built from the Go module proxy into the hack/ cache (no prebuilt binary download).
#
#   hack/helm.sh            build (or reuse) helm $HELM_VERSION; prints its path on stdout
#   hack/helm.sh path       print the path it would have (built or not); exit 1 if not built
#   hack/helm.sh env        print an export line putting it on PATH: eval "$(hack/helm.sh env)"
#   hack/helm.sh sync       copy crds/clipjob.yaml, dashboards/*.json and dashboards/alerts.yaml
#                           into charts/clip-operator/files/ (Helm's .Files cannot read outside
#                           the chart; tests/unit/test_chart.py fails when the copies drift)
#
# The same ldflags as helm's own Makefile: the version, and the Kubernetes minor of the
# client-go it is built with, which `helm template`/`helm lint` report as
# .Capabilities.KubeVersion (otherwise v1.20, and a chart's kubeVersion check fails).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

HELM_DIR="$CLIP_CACHE/helm-$HELM_VERSION"
HELM_BIN="$HELM_DIR/bin/helm"

build() {
  if [[ -x "$HELM_BIN" ]]; then
    log "helm $HELM_VERSION: cached at $HELM_BIN"
    printf '%s\n' "$HELM_BIN"
    return
  fi
  command -v go >/dev/null || die "go is not installed; helm is built from the Go module proxy"
  mkdir -p "$HELM_DIR/bin"
  local mod_dir client_go major minor pkg ldflags
  # Build from a neutral directory so no go.mod/go.work around us takes part.
  cd "$HELM_DIR"
  log "helm $HELM_VERSION: go mod download helm.sh/helm/v3@$HELM_VERSION"
  mod_dir="$(go mod download -json "helm.sh/helm/v3@$HELM_VERSION" \
    | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
  [[ -n "$mod_dir" && -f "$mod_dir/go.mod" ]] \
    || die "helm $HELM_VERSION is not on the Go module proxy (go list -m -versions helm.sh/helm/v3)"
  client_go="$(awk '$1 == "k8s.io/client-go" {print $2; exit}' "$mod_dir/go.mod")"
  [[ "$client_go" =~ ^v0\.([0-9]+)\. ]] || die "cannot read k8s.io/client-go's version from $mod_dir/go.mod"
  major=1 minor="${BASH_REMATCH[1]}"
  pkg=helm.sh/helm/v3
  ldflags="-s -w -X $pkg/internal/version.version=$HELM_VERSION -X $pkg/internal/version.gitTreeState=clean"
  ldflags+=" -X $pkg/pkg/chartutil.k8sVersionMajor=$major -X $pkg/pkg/chartutil.k8sVersionMinor=$minor"
  ldflags+=" -X $pkg/pkg/lint/rules.k8sVersionMajor=$major -X $pkg/pkg/lint/rules.k8sVersionMinor=$minor"
  log "helm $HELM_VERSION: building (a few minutes cold; Kubernetes $major.$minor capabilities):"
  log "  GOBIN=$HELM_DIR/bin go install -trimpath -ldflags='$ldflags' $pkg/cmd/helm@$HELM_VERSION"
  GOBIN="$HELM_DIR/bin" go install -trimpath -ldflags="$ldflags" "$pkg/cmd/helm@$HELM_VERSION" \
    || die "building helm $HELM_VERSION failed"
  log "helm $HELM_VERSION: built $HELM_BIN ($("$HELM_BIN" version --short))"
  printf '%s\n' "$HELM_BIN"
}

sync() {
  local files="$REPO_ROOT/charts/clip-operator/files"
  mkdir -p "$files/crds" "$files/dashboards"
  rm -f "$files"/dashboards/*.json
  cp "$REPO_ROOT/crds/clipjob.yaml" "$files/crds/clipjob.yaml"
  cp "$REPO_ROOT"/dashboards/*.json "$files/dashboards/"
  cp "$REPO_ROOT/dashboards/alerts.yaml" "$files/alerts.yaml"
  log "synced crds/clipjob.yaml, dashboards/*.json and dashboards/alerts.yaml into ${files#"$REPO_ROOT/"}"
}

case "${1:-build}" in
  build) build ;;
  path)
    printf '%s\n' "$HELM_BIN"
    [[ -x "$HELM_BIN" ]]
    ;;
  sync) sync ;;
  env) printf 'export PATH=%s:"$PATH"\n' "$HELM_DIR/bin" ;;
  *) die "usage: hack/helm.sh [build|path|env|sync]" ;;
esac
