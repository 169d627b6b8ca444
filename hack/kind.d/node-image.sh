#!/usr/bin/env bash
# Assemble the kind node image offline, replaying `kind build node-image` (kind's
# pkg/build/nodeimage) on a debootstrap rootfs instead of kind's base image:
#   rootfs (hack/kind.d/rootfs.sh) + kind's images/base/files (from the module zip) +
#   containerd v2, runc, crictl, CNI plugins + kubelet/kubeadm/kubectl in /usr/bin +
#   control-plane, etcd, CoreDNS and pause images imported into the node's containerd
#   and pinned + a static single-node CNI config instead of kindnetd.
# Prints the image name. Cached: rebuilt only when an input changes (a recipe hash label).
source "$(dirname "$0")/../lib.sh"
source "$HACK_DIR/kind.d/versions.env"
D="$HACK_DIR/kind.d"
"$D/build-bins.sh" >&2
K8S_BIN="$CLIP_CACHE/k8s-$KUBE_VERSION/bin"
ETCD_BIN="$CLIP_CACHE/etcd-$ETCD_VERSION/bin"
CTRD_BIN="$CLIP_CACHE/containerd-$CONTAINERD_VERSION/bin"
RUNC_BIN="$CLIP_CACHE/runc-$RUNC_VERSION/bin"
CNI_BIN="$CLIP_CACHE/cni-plugins-$CNI_PLUGINS_VERSION/bin"
COREDNS_BIN="$CLIP_CACHE/coredns-$COREDNS_VERSION/bin"
CRICTL="$CLIP_CACHE/crictl-v1.34.0/bin/crictl"
[[ -x "$CRICTL" ]] || die "crictl missing: hack/node builds it (hack/node up once), $CRICTL"
KIND_SRC="$(go env GOMODCACHE)/sigs.k8s.io/kind@$KIND_VERSION"
[[ -d "$KIND_SRC/images/base/files" ]] || (cd /tmp && go mod download "sigs.k8s.io/kind@$KIND_VERSION")
ROOTFS="$("$D/rootfs.sh")"
REG=registry.k8s.io
IMAGE="clip.local/kind-node:$KUBE_VERSION"

# The recipe: this script, its helpers, the versions, and every binary's size and mtime.
recipe() {
  cat "$0" "$D/versions.env" "$D/node/"* "$HACK_DIR/versions.env" "$HACK_DIR/node.d/pause/main.go"
  stat -c '%n %s %Y' "$ROOTFS" "$K8S_BIN"/{kubelet,kubeadm,kubectl,kube-apiserver,kube-controller-manager,kube-scheduler,kube-proxy} \
    "$ETCD_BIN/etcd" "$CTRD_BIN"/* "$RUNC_BIN/runc" "$CNI_BIN"/* "$COREDNS_BIN/coredns" "$CRICTL"
}
RECIPE="$(recipe | sha256sum | cut -c1-16)"
if [[ "$(docker image inspect -f '{{index .Config.Labels "org.clip.kind-node-recipe"}}' "$IMAGE" 2>/dev/null)" == "$RECIPE" ]]; then
  log "node image: $IMAGE cached (recipe $RECIPE)"
  echo "$IMAGE"
  exit 0
fi
t0=$SECONDS
work="$(mktemp -d "${TMPDIR:-/tmp}/clip-kind-node.XXXXXX")"
build=""
cleanup() { [[ -z "$build" ]] || docker rm -f -v "$build" >/dev/null 2>&1 || true; rm -rf "$work"; }
trap cleanup EXIT

# Images kubeadm runs, each a one-layer image of the binary built from the same sources.
mkimage() { python3 "$HACK_DIR/node.d/mkimage.py" "$@" >&2; }
mkdir -p "$work/images"
for c in kube-apiserver kube-controller-manager kube-scheduler; do
  mkimage --ref "$REG/$c:$KUBE_VERSION" --out "$work/images/$c.tar" \
    --file "$K8S_BIN/$c:/usr/local/bin/$c:755" --env PATH=/usr/local/bin:/usr/bin:/bin --dir /tmp:1777
done
mkimage --ref "$REG/etcd:$ETCD_IMAGE_TAG" --out "$work/images/etcd.tar" \
  --file "$ETCD_BIN/etcd:/usr/local/bin/etcd:755" --env PATH=/usr/local/bin:/usr/bin:/bin --dir /tmp:1777 --dir /var/lib/etcd:700
mkimage --ref "$REG/coredns/coredns:$COREDNS_VERSION" --out "$work/images/coredns.tar" \
  --file "$COREDNS_BIN/coredns:/coredns:755" --entrypoint '["/coredns"]' --user 65532:65532
(cd "$HACK_DIR/node.d/pause" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$work/pause" .)
mkimage --ref "$REG/pause:$PAUSE_TAG" --out "$work/images/pause.tar" \
  --file "$work/pause:/pause:755" --entrypoint '["/pause"]' --user 65535:65535

# kube-proxy programs iptables: its image is the node rootfs (iptables, conntrack) + the binary.
base="clip.local/kind-node-rootfs:$(basename "$ROOTFS" .tar.gz)"
docker image inspect "$base" >/dev/null 2>&1 || docker import -c 'ENV container=docker' "$ROOTFS" "$base" >/dev/null
kp="$(docker create "$base" /bin/true)"
docker cp "$K8S_BIN/kube-proxy" "$kp:/usr/local/bin/kube-proxy"
docker commit -c 'ENTRYPOINT []' -c 'CMD ["/usr/local/bin/kube-proxy"]' "$kp" "$REG/kube-proxy:$KUBE_VERSION" >/dev/null
docker rm "$kp" >/dev/null
docker save -o "$work/images/kube-proxy.tar" "$REG/kube-proxy:$KUBE_VERSION"
docker rmi "$REG/kube-proxy:$KUBE_VERSION" >/dev/null

# The build container: the rootfs, run the way kind runs nodes (minus systemd: sleep).
build="$("$D/bin/docker" run -d --privileged --entrypoint sleep "$base" infinity)"
cp_in() { docker cp "$1" "$build:$2"; }
F="$KIND_SRC/images/base/files"
# kind's base Dockerfile: COPY files/..., chmod, then its RUN steps.
tar -C "$F" --exclude LICENSES -cf - . | docker exec -i "$build" tar -C / --no-same-owner -xf -
docker exec "$build" sh -euc 'chmod 755 /kind/bin /kind/bin/* /usr/local/bin/*; mv /usr/local/bin/entrypoint /usr/local/bin/entrypoint.kind'
cp_in "$D/node/entrypoint" /usr/local/bin/entrypoint
for b in containerd ctr containerd-shim-runc-v2; do cp_in "$CTRD_BIN/$b" "/usr/local/bin/$b"; done
cp_in "$RUNC_BIN/runc" /usr/local/sbin/runc
cp_in "$CRICTL" /usr/local/bin/crictl
docker exec "$build" mkdir -p /opt/cni/bin /etc/cni/net.d /kind/manifests /etc/kubernetes/manifests
for b in "$CNI_BIN"/*; do cp_in "$b" "/opt/cni/bin/$(basename "$b")"; done
for b in kubelet kubeadm kubectl; do cp_in "$K8S_BIN/$b" "/usr/bin/$b"; done
cp_in "$D/node/10-clip-static.conflist" /etc/cni/net.d/10-clip-static.conflist
cp_in "$D/node/default-storage.yaml" /kind/manifests/default-storage.yaml
docker exec -i "$build" bash -euc '
  chmod 755 /usr/local/bin/* /usr/local/sbin/runc /opt/cni/bin/* /usr/bin/kube*
  chown root:root /usr/local/bin/* /usr/local/sbin/runc /opt/cni/bin/* /usr/bin/kube*
  ctr oci spec | jq ".hooks.createContainer[.hooks.createContainer| length] |= . + {\"path\": \"/kind/bin/mount-product-files.sh\"}" \
    | jq "del(.process.rlimits)" >/etc/containerd/cri-base.json
  # kubeadm v1.34 pause, and no fuse-overlayfs snapshotter (rootless only; not built)
  sed -i "s#sandbox_image = .*#sandbox_image = \"'"$REG/pause:$PAUSE_TAG"'\"#" /etc/containerd/config.toml
  systemctl enable kubelet.service containerd.service undo-mount-hacks.service
  systemctl mask systemd-binfmt.service
  echo '"$KUBE_VERSION"' >/kind/version
  containerd --version; runc --version | head -1; kubelet --version
' >&2

# Import the images into the node containerd's store and pin them (kind's containerdImporter).
docker exec -d "$build" sh -c 'containerd >/tmp/containerd.log 2>&1'
for _ in $(seq 100); do docker exec "$build" ctr version >/dev/null 2>&1 && break; sleep 0.2; done
for t in "$work/images"/*.tar; do
  docker exec -i "$build" ctr -n k8s.io images import --label=io.cri-containerd.pinned=pinned \
    --all-platforms --no-unpack --digests - <"$t" >&2
done
docker exec "$build" ctr -n k8s.io images list -q >&2
docker exec "$build" sh -c 'pkill containerd; while pgrep -x containerd >/dev/null; do sleep 0.1; done; rm -f /tmp/containerd.log'
docker commit \
  -c 'ENTRYPOINT ["/usr/local/bin/entrypoint", "/sbin/init"]' -c 'CMD []' \
  -c 'ENV container=docker' -c "LABEL org.clip.kind-node-recipe=$RECIPE" \
  "$build" "$IMAGE" >/dev/null
log "node image: $IMAGE built in $((SECONDS - t0)) s (recipe $RECIPE)"
echo "$IMAGE"
