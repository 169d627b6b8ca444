#!/usr/bin/env bash
# System (Debian) packages the tests, the demo and the images need: `make deps`.
#   hack/deps.sh [--images] [--missing]
# Installs, with apt-get, only what this machine lacks, and says so in one line first:
#   ffmpeg (the worker's tests), tesseract-ocr and the caption fonts fonts-dejavu-core and
#   fonts-droid-fallback (the media-option tests), prometheus (promtool, observability tier),
#   curl and openssl (hack/cluster), python3-venv (the project virtualenv); with --images
#   also debootstrap and docker.io (hack/images.sh).
# --missing: print the missing packages (one line, empty when none) and install nothing.
# Nothing to do when all are present; `make setup` / `make test` call this then.
set -euo pipefail

want_images=0 only_list=0
for arg in "$@"; do
  case "$arg" in
    --images) want_images=1 ;;
    --missing) only_list=1 ;;
    *) echo "hack/deps.sh: unknown option $arg (usage: hack/deps.sh [--images] [--missing])" >&2; exit 2 ;;
  esac
done

missing=()
why=()
need() {  # need PACKAGE WHY CHECK...: PACKAGE is missing when CHECK fails
  local pkg="$1" reason="$2"
  shift 2
  if ! "$@" >/dev/null 2>&1; then
    missing+=("$pkg")
    why+=("$pkg ($reason)")
  fi
}
need ffmpeg "the worker and its tests" command -v ffmpeg
need tesseract-ocr "OCR of captions in the media-option tests" command -v tesseract
fonts="${CLIP_FONT_DIR:-/usr/share/fonts/truetype}"  # (tests/unit/test_deps.py points it elsewhere)
need fonts-dejavu-core "caption font" test -f "$fonts/dejavu/DejaVuSans-Bold.ttf"
need fonts-droid-fallback "CJK caption font" test -f "$fonts/droid/DroidSansFallbackFull.ttf"
need prometheus "promtool, the observability tier" command -v promtool
need curl "hack/cluster" command -v curl
need openssl "hack/cluster certificates" command -v openssl
need python3-venv "the project virtualenv .venv" python3 -c 'import ensurepip, venv'
if ((want_images)); then
  need debootstrap "the images' Debian base" command -v debootstrap
  need docker.io "dockerd for the images" command -v dockerd
fi

if ((only_list)); then
  echo "${missing[*]}"
  exit 0
fi
if ((${#missing[@]} == 0)); then
  exit 0
fi
command -v apt-get >/dev/null \
  || { echo "hack/deps.sh: missing ${why[*]} and there is no apt-get: install them yourself" >&2; exit 1; }
SUDO=()
[[ "$(id -u)" == 0 ]] || SUDO=(sudo)
echo "[deps] installing Debian packages: ${why[*]} (apt-get install; make deps)" >&2
"${SUDO[@]}" apt-get update -qq >&2
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
  "${missing[@]}" >&2
