#!/usr/bin/env bash
# Build etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kubectl from the
# Go module proxy into $CLIP_CACHE/k8s-$KUBE_VERSION/bin (and etcd-$ETCD_VERSION/bin);
# kubelet, kubeadm and kube-proxy on request (hack/node, hack/kind).
# Usage: hack/build-k8s.sh [component...]   (default: all of the above)
# A second run with the cache is instant: each binary is rebuilt only if missing.
source "$(dirname "$0")/lib.sh"

K8S_BIN="$CLIP_CACHE/k8s-$KUBE_VERSION/bin"
ETCD_BIN="$CLIP_CACHE/etcd-$ETCD_VERSION/bin"
STAGING="api apiextensions-apiserver apimachinery apiserver cli-runtime client-go cloud-provider
cluster-bootstrap code-generator component-base component-helpers controller-manager cri-api
cri-client csi-translation-lib dynamic-resource-allocation endpointslice externaljwt kms
kube-aggregator kube-controller-manager kube-proxy kube-scheduler kubectl kubelet metrics
mount-utils pod-security-admission sample-apiserver"
components=("$@")
missing=0
for c in "${components[@]}"; do
  case "$c" in
    etcd) [ -x "$ETCD_BIN/etcd" ] || missing=1 ;;
    *) [ -x "$K8S_BIN/$c" ] || missing=1 ;;
  esac
done
if (( ! missing )); then log "cached: ${components[*]} ($KUBE_VERSION, etcd $ETCD_VERSION)"; exit 0; fi
# Serialise concurrent builds (tests, hack/cluster and developers may start one at once).
mkdir -p "$CLIP_CACHE"
exec 9>"$CLIP_CACHE/.build.lock"
if ! flock -n 9; then log "another build is running; waiting for it"; flock 9; fi
[ ${#components[@]} -gt 0 ] || components=(etcd kube-apiserver kube-controller-manager kube-scheduler kubectl)

build_etcd() {
  if [ -x "$ETCD_BIN/etcd" ]; then log "etcd $ETCD_VERSION: cached at $ETCD_BIN/etcd"; return; fi
  local mod="$CLIP_CACHE/src/etcd-$ETCD_VERSION"
  log "etcd $ETCD_VERSION: preparing wrapper module in $mod"
  mkdir -p "$mod" "$ETCD_BIN"
  cat >"$mod/main.go" <<'GO'
// Command etcd is etcd's own main, built from the Go module proxy.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
  (cd "$mod" && [ -f go.mod ] || (cd "$mod" && go mod init clip-operator.local/etcd >/dev/null 2>&1))
  (cd "$mod" && go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" && go mod tidy)
  log "etcd $ETCD_VERSION: compiling"
  (cd "$mod" && go build -trimpath -ldflags "-s -w" -o "$ETCD_BIN/etcd.tmp.$$" .)
  mv "$ETCD_BIN/etcd.tmp.$$" "$ETCD_BIN/etcd"
  log "etcd $ETCD_VERSION: built $ETCD_BIN/etcd"
}

prepare_k8s_module() {
  local mod="$CLIP_CACHE/src/k8s-$KUBE_VERSION"
  K8S_MOD="$mod"
  # The marker names the commands tools.go keeps in the graph: adding one re-tidies.
  local want="tools: apiserver kcm scheduler kubelet kubectl kubeadm kube-proxy"
  [ -f "$mod/.ready" ] && [ "$(cat "$mod/.ready")" = "$want" ] && return
  local minor="${KUBE_VERSION#v1.}"   # 34.4
  log "kubernetes $KUBE_VERSION: preparing wrapper module in $mod (staging modules at v0.$minor)"
  mkdir -p "$mod"
  {
    echo "module clip-operator.local/k8s"
    echo
    echo "go 1.24.0"
    echo
    echo "require k8s.io/kubernetes $KUBE_VERSION"
    echo
    for s in $STAGING; do echo "replace k8s.io/$s => k8s.io/$s v0.$minor"; done
  } >"$mod/go.mod"
  cat >"$mod/tools.go" <<'GO'
//go:build tools

// Package tools keeps the Kubernetes commands in the module graph.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubelet"
	_ "k8s.io/kubernetes/cmd/kubectl"
	_ "k8s.io/kubernetes/cmd/kubeadm"
	_ "k8s.io/kubernetes/cmd/kube-proxy"
)
GO
  log "kubernetes $KUBE_VERSION: resolving modules (go mod tidy; first time downloads ~1 GB)"
  (cd "$mod" && go mod tidy)
  echo "$want" >"$mod/.ready"
}

build_k8s() {
  local name="$1"
  if [ -x "$K8S_BIN/$name" ]; then log "$name $KUBE_VERSION: cached at $K8S_BIN/$name"; return; fi
  prepare_k8s_module
  mkdir -p "$K8S_BIN"
  local minor="${KUBE_VERSION#v1.}"; minor="${minor%%.*}"
  local ld="-s -w"
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld="$ld -X $p.gitVersion=$KUBE_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor"
    ld="$ld -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
  done
  log "$name $KUBE_VERSION: compiling (cold: many minutes on 2 cores; the Go build cache makes it fast next time)"
  local t0=$SECONDS
  (cd "$K8S_MOD" && go build -trimpath -tags selinux,notest -ldflags "$ld" \
      -o "$K8S_BIN/$name.tmp.$$" "k8s.io/kubernetes/cmd/$name")
  mv "$K8S_BIN/$name.tmp.$$" "$K8S_BIN/$name"
  log "$name $KUBE_VERSION: built $K8S_BIN/$name in $((SECONDS - t0))s"
}

for c in "${components[@]}"; do
  case "$c" in
    etcd) build_etcd ;;
    kube-apiserver|kube-controller-manager|kube-scheduler|kubectl|kubelet|kubeadm|kube-proxy) build_k8s "$c" ;;
    *) die "unknown component '$c' (etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubectl, kubelet, kubeadm, kube-proxy)" ;;
  esac
done
