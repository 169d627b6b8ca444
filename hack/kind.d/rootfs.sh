#!/usr/bin/env bash
# The kind node's Debian rootfs: debootstrap bookworm with systemd and the packages kind's
# base image installs (images/base/Dockerfile, minus nfs-common/open-iscsi), cached as
# $CLIP_CACHE/kind-node/rootfs-bookworm-r$NODE_ROOTFS_RECIPE.tar.gz. Prints its path.
source "$(dirname "$0")/../lib.sh"
NODE_ROOTFS_RECIPE=1   # bump when the package list changes
PACKAGES=systemd,systemd-sysv,dbus,conntrack,iptables,nftables,iproute2,ethtool,util-linux,mount,kmod,libseccomp2,pigz,fuse-overlayfs,bash,ca-certificates,curl,jq,procps,socat
TAR="$CLIP_CACHE/kind-node/rootfs-bookworm-r$NODE_ROOTFS_RECIPE.tar.gz"
if [[ -s "$TAR" ]]; then echo "$TAR"; exit 0; fi
command -v debootstrap >/dev/null || {
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
}
mirror="${CLIP_DEBIAN_MIRROR:-$("$HACK_DIR/apt-mirror.sh" bookworm /etc/apt || echo http://deb.debian.org/debian)}"
work="$(mktemp -d "${TMPDIR:-/tmp}/clip-kind-rootfs.XXXXXX")"
trap 'rm -rf "$work"' EXIT
t0=$SECONDS
log "kind node rootfs: debootstrap --variant=minbase --include=$PACKAGES bookworm ($mirror)"
nice -n 15 debootstrap --variant=minbase --include="$PACKAGES" bookworm "$work/rootfs" "$mirror" \
  >"$work/debootstrap.log" 2>&1 || { tail -n 30 "$work/debootstrap.log" >&2; die "debootstrap failed"; }
r="$work/rootfs"
# What kind's base Dockerfile does after installing its packages.
find "$r/lib/systemd/system/sysinit.target.wants/" -name systemd-tmpfiles-setup.service -delete
rm -f "$r"/lib/systemd/system/multi-user.target.wants/* "$r"/etc/systemd/system/*.wants/* \
  "$r"/lib/systemd/system/local-fs.target.wants/* "$r"/lib/systemd/system/sockets.target.wants/*udev* \
  "$r"/lib/systemd/system/sockets.target.wants/*initctl* "$r"/lib/systemd/system/basic.target.wants/*
echo "ReadKMsg=no" >>"$r/etc/systemd/journald.conf"
rm -rf "$r/usr/share/doc/"* "$r/usr/share/man/"* "$r/usr/share/locale/"* "$r/var/lib/apt/lists/"* \
  "$r/var/cache/apt/"*.bin "$r/var/cache/apt/archives/"*.deb "$r/var/log/"*
mkdir -p "$(dirname "$TAR")"
tar --numeric-owner -C "$r" -czf "$TAR.tmp" .
mv "$TAR.tmp" "$TAR"
log "kind node rootfs: $TAR ($(du -h "$TAR" | cut -f1)) in $((SECONDS - t0)) s"
echo "$TAR"
