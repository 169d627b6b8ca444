#!/usr/bin/env bash
# Container images built locally, with nothing pulled from a registry:
#   clip-base:bookworm  Debian bookworm minbase rootfs made by debootstrap, `docker import`ed
#   clip-job:dev        job-image/Dockerfile (clip-worker: yt-dlp + FFmpeg + boto3)
#   clip-operator:dev   operator/Dockerfile (clip-operator run)
#
#   hack/images.sh [all]   docker daemon + base + both images (default; idempotent, cached)
#   hack/images.sh docker  make sure a docker daemon answers (installs docker.io, starts dockerd)
#   hack/images.sh base | job | operator   one step (the docker daemon must answer)
#   hack/images.sh sizes   print the image sizes
#   hack/images.sh save DIR   write each image as DIR/<name>.tar (for `ctr images import`)
#   hack/images.sh stop    stop the dockerd this script started (by its PID), nothing else
#   hack/images.sh mirrors print the Debian and security mirrors debootstrap would use
#
# Settings: CLIP_BASE_IMAGE (another base skips debootstrap, e.g. debian:bookworm-slim),
# CLIP_JOB_IMAGE, CLIP_OPERATOR_IMAGE, CLIP_DEBIAN_MIRROR and CLIP_DEBIAN_SECURITY_MIRROR
# (default: the bookworm and bookworm-security mirrors of this machine's apt sources, read
# by hack/apt-mirror.sh from CLIP_APT_DIR, default /etc/apt), CLIP_BUILD_CA_BUNDLE (a CA
# bundle handed to pip inside the build as a BuildKit secret, when the file exists),
# CLIP_DOCKER_STATE (dockerd's PID file and log), CLIP_CACHE.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

BASE_IMAGE="${CLIP_BASE_IMAGE:-clip-base:bookworm}"
JOB_IMAGE="${CLIP_JOB_IMAGE:-clip-job:dev}"
OPERATOR_IMAGE="${CLIP_OPERATOR_IMAGE:-clip-operator:dev}"
DEBIAN_SUITE=bookworm
# Debian's own redirector, only when neither CLIP_DEBIAN_MIRROR nor this machine's apt
# sources name a bookworm mirror (debian_mirrors says so when it uses it).
FALLBACK_MIRROR=http://deb.debian.org/debian
CA_BUNDLE="${CLIP_BUILD_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}"
DOCKER_STATE="${CLIP_DOCKER_STATE:-$REPO_ROOT/.cluster/docker}"
STARTED_PID_FILE="$DOCKER_STATE/dockerd.started-by-images.pid"
# Bump ROOTFS_RECIPE when build_rootfs changes: it names the cache file and labels the base.
ROOTFS_RECIPE=2
ROOTFS_TAR="$CLIP_CACHE/rootfs/debian-$DEBIAN_SUITE-minbase-r$ROOTFS_RECIPE.tar.gz"

# A docker CLI that can run BuildKit builds: buildx if present, else a pre-23 CLI whose
# BuildKit is built in (Debian's docker.io 20.10 ships that as /usr/bin/docker).
DOCKER=()
pick_docker() {
  ((${#DOCKER[@]})) && return 0
  local cli major
  for cli in docker /usr/bin/docker; do
    command -v "$cli" >/dev/null || continue
    if "$cli" buildx version >/dev/null 2>&1; then
      DOCKER=("$cli")
      return 0
    fi
    major="$("$cli" --version 2>/dev/null | sed -n 's/^Docker version \([0-9]*\)\..*/\1/p')"
    if [[ -n "$major" ]] && ((major < 23)); then
      export DOCKER_BUILDKIT=1
      DOCKER=("$cli")
      return 0
    fi
  done
  die "no docker CLI with BuildKit found (need buildx, or Debian's docker.io: apt-get install -y docker.io)"
}

daemon_answers() { "${DOCKER[@]}" info >/dev/null 2>&1; }

ensure_docker() {
  if ! command -v dockerd >/dev/null; then
    log "dockerd missing: apt-get install -y docker.io"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io >/dev/null
  fi
  pick_docker
  if daemon_answers; then
    log "docker daemon answers (client ${DOCKER[*]})"
    return 0
  fi
  mkdir -p "$DOCKER_STATE"
  # No bridge and no iptables: builds and test containers use --network host, and this
  # machine may not allow changing the host's netfilter rules.
  log "starting dockerd --bridge=none --iptables=false (log $DOCKER_STATE/dockerd.log)"
  setsid dockerd --bridge=none --iptables=false --ip-masq=false \
    --pidfile "$DOCKER_STATE/dockerd.pid" >"$DOCKER_STATE/dockerd.log" 2>&1 </dev/null &
  local pid=$!
  echo "$pid" >"$STARTED_PID_FILE"
  local deadline=$((SECONDS + 60))
  until daemon_answers; do
    if ! kill -0 "$pid" 2>/dev/null; then
      rm -f "$STARTED_PID_FILE"
      tail -n 20 "$DOCKER_STATE/dockerd.log" >&2 || true
      die "dockerd exited at start; see $DOCKER_STATE/dockerd.log"
    fi
    ((SECONDS < deadline)) || die "dockerd (PID $pid) did not answer within 60 s; see $DOCKER_STATE/dockerd.log"
    sleep 0.5
  done
  log "dockerd running (PID $pid)"
}

stop_docker() {
  if [[ ! -f "$STARTED_PID_FILE" ]]; then
    log "no dockerd started by hack/images.sh (no $STARTED_PID_FILE); leaving any other alone"
    return 0
  fi
  local pid
  pid="$(cat "$STARTED_PID_FILE")"
  if [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null \
    && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q dockerd; then
    log "stopping dockerd (PID $pid)"
    kill "$pid"
    local deadline=$((SECONDS + 30))
    while kill -0 "$pid" 2>/dev/null; do
      if ((SECONDS >= deadline)); then
        log "dockerd (PID $pid) still running after 30 s; sending SIGKILL"
        kill -9 "$pid" 2>/dev/null || true
        break
      fi
      sleep 0.5
    done
  else
    log "dockerd PID $pid from $STARTED_PID_FILE is not running"
  fi
  rm -f "$STARTED_PID_FILE"
}

image_exists() { "${DOCKER[@]}" image inspect "$1" >/dev/null 2>&1; }

# DEBIAN_MIRROR and SECURITY_MIRROR for debootstrap and the image's apt sources: the
# mirror this machine's apt uses (a corporate mirror too), unless CLIP_DEBIAN_MIRROR
# (and CLIP_DEBIAN_SECURITY_MIRROR) say otherwise.
debian_mirrors() {
  if [[ -n "${CLIP_DEBIAN_MIRROR:-}" ]]; then
    DEBIAN_MIRROR="${CLIP_DEBIAN_MIRROR%/}"
    log "Debian mirror: $DEBIAN_MIRROR (CLIP_DEBIAN_MIRROR)"
  elif DEBIAN_MIRROR="$("$HACK_DIR/apt-mirror.sh" "$DEBIAN_SUITE" "${CLIP_APT_DIR:-/etc/apt}")"; then
    log "Debian mirror: $DEBIAN_MIRROR (from this machine's apt sources; CLIP_DEBIAN_MIRROR overrides)"
  else
    DEBIAN_MIRROR="$FALLBACK_MIRROR"
    log "Debian mirror: no $DEBIAN_SUITE source in ${CLIP_APT_DIR:-/etc/apt}/sources.list{,.d}; using $DEBIAN_MIRROR (set CLIP_DEBIAN_MIRROR to use another)"
  fi
  if [[ -n "${CLIP_DEBIAN_SECURITY_MIRROR:-}" ]]; then
    SECURITY_MIRROR="${CLIP_DEBIAN_SECURITY_MIRROR%/}"
  elif [[ -n "${CLIP_DEBIAN_MIRROR:-}" ]] \
    || ! SECURITY_MIRROR="$("$HACK_DIR/apt-mirror.sh" "$DEBIAN_SUITE-security" "${CLIP_APT_DIR:-/etc/apt}")"; then
    SECURITY_MIRROR="${DEBIAN_MIRROR%/debian}/debian-security"
  fi
}

build_rootfs() {
  if [[ -s "$ROOTFS_TAR" ]]; then
    log "rootfs: cached at $ROOTFS_TAR"
    return 0
  fi
  command -v debootstrap >/dev/null || {
    log "debootstrap missing: apt-get install -y debootstrap"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
  }
  debian_mirrors
  local work
  work="$(mktemp -d "${TMPDIR:-/tmp}/clip-rootfs.XXXXXX")"
  log "rootfs: debootstrap --variant=minbase $DEBIAN_SUITE $work/rootfs $DEBIAN_MIRROR (a few minutes cold)"
  debootstrap --variant=minbase "$DEBIAN_SUITE" "$work/rootfs" "$DEBIAN_MIRROR" \
    >"$work/debootstrap.log" 2>&1 || {
    tail -n 30 "$work/debootstrap.log" >&2
    die "debootstrap failed (log above; is $DEBIAN_MIRROR reachable?)"
  }
  # Same sources as Debian's own images: the release, its updates and security updates.
  rm -f "$work/rootfs/etc/apt/sources.list"
  cat >"$work/rootfs/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $DEBIAN_MIRROR
Suites: $DEBIAN_SUITE $DEBIAN_SUITE-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $SECURITY_MIRROR
Suites: $DEBIAN_SUITE-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  # Keep images small the way Debian's docker images do: no docs, no caches left behind.
  cat >"$work/rootfs/etc/dpkg/dpkg.cfg.d/docker-slim" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/lintian/*
EOF
  printf 'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\n' \
    >"$work/rootfs/etc/apt/apt.conf.d/docker-no-recommends"
  # A mirror that serves a dated snapshot has Release files past their Valid-Until.
  if [[ -f /etc/apt/apt.conf.d/99artifact-registry ]]; then
    cp /etc/apt/apt.conf.d/99artifact-registry "$work/rootfs/etc/apt/apt.conf.d/"
  fi
  # What the dpkg excludes above would have kept out of the packages debootstrap installed.
  find "$work/rootfs/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
  find "$work/rootfs/usr/share/doc" -mindepth 1 -type d -empty -delete
  rm -rf "$work/rootfs/usr/share/man/"* "$work/rootfs/usr/share/info/"* \
    "$work/rootfs/usr/share/locale/"* "$work/rootfs/usr/share/lintian/"* \
    "$work/rootfs/var/lib/apt/lists/"* "$work/rootfs/var/cache/apt/"*.bin \
    "$work/rootfs/var/cache/apt/archives/"*.deb "$work/rootfs/var/cache/debconf/"*-old \
    "$work/rootfs/var/log/"*
  mkdir -p "$(dirname "$ROOTFS_TAR")"
  tar --numeric-owner -C "$work/rootfs" -czf "$ROOTFS_TAR.tmp" .
  mv "$ROOTFS_TAR.tmp" "$ROOTFS_TAR"
  rm -rf "$work"
  log "rootfs: $ROOTFS_TAR ($(du -h "$ROOTFS_TAR" | cut -f1))"
}

build_base() {
  if [[ "$BASE_IMAGE" != clip-base:* ]]; then
    log "base: using $BASE_IMAGE as given (CLIP_BASE_IMAGE)"
    return 0
  fi
  if [[ "$("${DOCKER[@]}" image inspect --format '{{index .Config.Labels "org.clip.rootfs-recipe"}}' \
    "$BASE_IMAGE" 2>/dev/null)" == "$ROOTFS_RECIPE" ]]; then
    log "base: $BASE_IMAGE already present (rootfs recipe $ROOTFS_RECIPE)"
    return 0
  fi
  build_rootfs
  log "base: docker import $ROOTFS_TAR $BASE_IMAGE"
  "${DOCKER[@]}" import \
    -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    -c 'CMD ["/bin/bash"]' \
    -c "LABEL org.clip.rootfs-recipe=$ROOTFS_RECIPE" \
    "$ROOTFS_TAR" "$BASE_IMAGE" >/dev/null
}

build_image() {
  local tag="$1" dockerfile="$2"
  local args=(build --network host -f "$REPO_ROOT/$dockerfile" -t "$tag" --build-arg "BASE_IMAGE=$BASE_IMAGE")
  if [[ -r "$CA_BUNDLE" ]]; then
    # Only for this machine's TLS to PyPI; the Dockerfile builds without it too.
    args+=(--secret "id=cacert,src=$CA_BUNDLE")
  fi
  log "image: ${DOCKER[*]} ${args[*]} $REPO_ROOT"
  local started=$SECONDS
  "${DOCKER[@]}" "${args[@]}" --progress=plain "$REPO_ROOT" >"$DOCKER_STATE/build-${tag%%:*}.log" 2>&1 || {
    tail -n 40 "$DOCKER_STATE/build-${tag%%:*}.log" >&2
    die "building $tag failed; full log $DOCKER_STATE/build-${tag%%:*}.log"
  }
  log "image: $tag built in $((SECONDS - started)) s ($(size_of "$tag"))"
}

size_of() {
  local bytes
  bytes="$("${DOCKER[@]}" image inspect --format '{{.Size}}' "$1")"
  echo "$((bytes / 1000000)) MB"
}

sizes() {
  local tag
  for tag in "$BASE_IMAGE" "$JOB_IMAGE" "$OPERATOR_IMAGE"; do
    if image_exists "$tag"; then
      printf '%-24s %s\n' "$tag" "$(size_of "$tag")"
    else
      printf '%-24s %s\n' "$tag" "(not built)"
    fi
  done
}

save() {
  local dir="${1:?usage: hack/images.sh save DIR}" tag
  mkdir -p "$dir"
  for tag in "$JOB_IMAGE" "$OPERATOR_IMAGE"; do
    log "save: $tag -> $dir/${tag%%:*}.tar"
    "${DOCKER[@]}" save -o "$dir/${tag%%:*}.tar" "$tag"
  done
}

need_daemon() {
  pick_docker
  daemon_answers || die "no docker daemon answers: run hack/images.sh docker"
  mkdir -p "$DOCKER_STATE"
}

case "${1:-all}" in
  all)
    ensure_docker
    mkdir -p "$DOCKER_STATE"
    build_base
    build_image "$JOB_IMAGE" job-image/Dockerfile
    build_image "$OPERATOR_IMAGE" operator/Dockerfile
    sizes
    ;;
  docker) ensure_docker ;;
  base) need_daemon && build_base ;;
  job) need_daemon && build_image "$JOB_IMAGE" job-image/Dockerfile ;;
  operator) need_daemon && build_image "$OPERATOR_IMAGE" operator/Dockerfile ;;
  sizes) need_daemon && sizes ;;
  save) need_daemon && save "${2:-}" ;;
  stop) stop_docker ;;
  mirrors) debian_mirrors && printf '%s\n%s\n' "$DEBIAN_MIRROR" "$SECURITY_MIRROR" ;;
  *) die "usage: hack/images.sh [all|docker|base|job|operator|sizes|save DIR|stop|mirrors]" ;;
esac
