#!/usr/bin/env bash
# Go binaries of the offline kind node, from the Go module proxy, cached by version under
# $CLIP_CACHE: kind, containerd v2 (+ctr, shim), runc (cgo, seccomp), CNI plugins, CoreDNS,
# pause; Kubernetes and etcd through hack/build-k8s.sh. Usage: hack/kind.d/build-bins.sh [name...]
source "$(dirname "$0")/../lib.sh"
source "$HACK_DIR/kind.d/versions.env"

# go_install <cache-dir> <cgo 0|1> <tags> <module@version> <package...>: built in a wrapper
# module ($CLIP_CACHE/src/...), since `go install pkg@v` refuses modules whose go.mod has
# replace or exclude directives (containerd's has).
go_install() {
  local dir="$1" cgo="$2" tags="$3" mod="$4"
  shift 4
  local pkg missing=()
  for pkg in "$@"; do [[ -x "$dir/bin/$(basename "$pkg")" ]] || missing+=("$pkg"); done
  if ((${#missing[@]} == 0)); then log "cached: $dir/bin ($*)"; return 0; fi
  local src="$CLIP_CACHE/src/$(basename "$dir")" t0=$SECONDS
  mkdir -p "$dir/bin" "$src"
  if [[ ! -f "$src/.ready" ]]; then
    log "$mod: wrapper module in $src"
    rm -f "$src/go.mod" "$src/go.sum"
    {
      echo '//go:build tools'
      echo
      echo '// Package tools keeps the commands in the module graph.'
      echo 'package tools'
      echo
      echo 'import ('
      for pkg in "$@"; do echo "	_ \"$pkg\""; done
      echo ')'
    } >"$src/tools.go"
    (cd "$src" && go mod init "clip-operator.local/$(basename "$dir")" >/dev/null 2>&1 \
      && go get "$mod" && go mod tidy)
    touch "$src/.ready"
  fi
  log "compiling ${missing[*]} (${mod}, CGO_ENABLED=$cgo tags '$tags')"
  for pkg in "${missing[@]}"; do
    (cd "$src" && CGO_ENABLED="$cgo" nice -n 15 go build -trimpath -tags "$tags" -ldflags "-s -w" \
      -o "$dir/bin/$(basename "$pkg").tmp.$$" "$pkg")
    mv "$dir/bin/$(basename "$pkg").tmp.$$" "$dir/bin/$(basename "$pkg")"
  done
  log "built ${missing[*]} in $((SECONDS - t0)) s"
}

build_kind() {
  go_install "$CLIP_CACHE/kind-$KIND_VERSION" 0 "" "sigs.k8s.io/kind@$KIND_VERSION" sigs.k8s.io/kind
}
build_containerd() {
  local m=github.com/containerd/containerd/v2
  go_install "$CLIP_CACHE/containerd-$CONTAINERD_VERSION" 0 "no_aufs no_zfs no_btrfs no_devmapper" \
    "$m@$CONTAINERD_VERSION" "$m/cmd/containerd" "$m/cmd/ctr" "$m/cmd/containerd-shim-runc-v2"
}
build_runc() {
  # runc needs cgo and libseccomp (Pod Security `restricted` asks for RuntimeDefault seccomp).
  if [[ ! -x "$CLIP_CACHE/runc-$RUNC_VERSION/bin/runc" ]] && ! dpkg -s libseccomp-dev >/dev/null 2>&1; then
    log "libseccomp-dev missing: apt-get install -y libseccomp-dev"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libseccomp-dev >/dev/null
  fi
  go_install "$CLIP_CACHE/runc-$RUNC_VERSION" 1 "seccomp" "github.com/opencontainers/runc@$RUNC_VERSION" \
    github.com/opencontainers/runc
}
build_cni() {
  local m=github.com/containernetworking/plugins
  go_install "$CLIP_CACHE/cni-plugins-$CNI_PLUGINS_VERSION" 0 "" "$m@$CNI_PLUGINS_VERSION" \
    "$m/plugins/ipam/host-local" "$m/plugins/main/loopback" "$m/plugins/main/bridge" \
    "$m/plugins/main/ptp" "$m/plugins/meta/portmap"
}
build_coredns() {
  go_install "$CLIP_CACHE/coredns-$COREDNS_VERSION" 0 "" "github.com/coredns/coredns@$COREDNS_VERSION" \
    github.com/coredns/coredns
}
build_k8s() { "$HACK_DIR/build-k8s.sh" etcd kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kubeadm kube-proxy; }

all=(kind containerd runc cni coredns k8s)
for what in "${@:-${all[@]}}"; do
  case "$what" in
    kind | containerd | runc | cni | coredns | k8s) "build_$what" ;;
    *) die "unknown '$what' (${all[*]})" ;;
  esac
done
