#!/usr/bin/env bash
# Install everything the tests and the demo need, from nothing; fast when already done.
#   Debian packages: hack/deps.sh (`make deps`), called only when one is missing: ffmpeg,
#   prometheus, curl, openssl, python3-venv; debootstrap + docker.io with --images.
#   Python: this project with its dev extras (pip install -e ".[dev]") in the project
#   virtualenv .venv (CLIP_VENV), never the global interpreter.
#   Go-built binaries (cached in $CLIP_CACHE): etcd, kube-apiserver, kube-controller-manager,
#   kubectl, versitygw, helm; the prometheus-operator CRDs (Go module cache).
# Usage: hack/setup.sh [--no-build] [--images]
source "$(dirname "$0")/lib.sh"

want_build=1; want_images=0
for arg in "$@"; do
  case "$arg" in
    --no-build) want_build=0 ;;
    --images) want_images=1 ;;
    *) die "unknown option $arg" ;;
  esac
done

# System packages: a separate step (`make deps`, hack/deps.sh), run here only when one is
# missing; it prints one line naming what it installs.
deps_args=()
(( want_images )) && deps_args+=(--images)
if [[ -n "$("$HACK_DIR/deps.sh" --missing "${deps_args[@]}")" ]]; then
  "$HACK_DIR/deps.sh" "${deps_args[@]}"
else
  log "Debian packages: present (make deps)"
fi

if [ ! -x "$VENV/bin/python3" ]; then
  log "creating the project virtualenv $VENV (python3 -m venv)"
  python3 -m venv "$VENV" >&2 || die "python3 -m venv failed: make deps installs python3-venv"
fi
use_venv
stamp="$CLIP_CACHE/pip-$(sha256sum "$REPO_ROOT/pyproject.toml" | cut -c1-12)-$(python3 -c 'import sys;print(sys.prefix.replace("/","_"))')"
# Installed, and from this checkout (an editable install of another clone does not count).
if [ -f "$stamp" ] && python3 -c "
import sys, clip_operator, clip_worker
sys.exit(0 if clip_operator.__file__.startswith('$REPO_ROOT/') else 1)" 2>/dev/null; then
  log "Python packages: present in $VENV"
else
  log "installing Python packages into $VENV: pip install -e .[dev]"
  python3 -m pip install -q --disable-pip-version-check -e "$REPO_ROOT[dev]" >&2
  mkdir -p "$CLIP_CACHE" && touch "$stamp"
fi

if (( want_build )); then
  command -v go >/dev/null || die "Go is needed to build Kubernetes and versitygw from the module proxy"
  "$HACK_DIR/build-k8s.sh" etcd kube-apiserver kube-controller-manager kubectl
  "$HACK_DIR/s3.sh" build >/dev/null
  "$HACK_DIR/helm.sh" >/dev/null
  "$HACK_DIR/prom-crds.sh" path >/dev/null   # prometheus-operator CRDs into the Go module cache
fi
if (( want_images )); then
  "$HACK_DIR/images.sh"
fi
log "setup done"
