"""`make deps` (hack/deps.sh): system packages are their own step, installed only when missing.

The script runs with a PATH of stand-ins: the tools a machine has are stubs that succeed,
apt-get and sudo record how they were called instead of installing.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEPS = REPO / "hack" / "deps.sh"
ALL_TOOLS = (
    "ffmpeg",
    "tesseract",
    "promtool",
    "curl",
    "openssl",
    "python3",
    "debootstrap",
    "dockerd",
)


def machine(tmp_path: Path, have: tuple[str, ...], apt: bool = True) -> Path:
    """A bin directory with `have` as working stubs, plus recording apt-get."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("env", "id"):
        real = shutil.which(tool)
        assert real, tool
        (bin_dir / tool).symlink_to(real)
    for tool in have:
        stub = bin_dir / tool
        stub.write_text("#!/bin/sh\nexit 0\n")
        stub.chmod(0o755)
    for font in ("dejavu/DejaVuSans-Bold.ttf", "droid/DroidSansFallbackFull.ttf"):
        (tmp_path / "fonts" / font).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "fonts" / font).write_bytes(b"")  # the caption fonts are present
    if apt:
        rec = bin_dir / "apt-get"
        rec.write_text(f'#!/bin/sh\necho "$DEBIAN_FRONTEND apt-get $*" >>{tmp_path}/apt.log\n')
        rec.chmod(0o755)
    return bin_dir


def deps(bin_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    bash = shutil.which("bash")
    assert bash
    return subprocess.run(
        [bash, str(DEPS), *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={"PATH": str(bin_dir), "CLIP_FONT_DIR": str(bin_dir.parent / "fonts")},
        check=False,
    )


def apt_calls(tmp_path: Path) -> list[str]:
    log = tmp_path / "apt.log"
    return log.read_text().splitlines() if log.exists() else []


def test_nothing_missing_installs_nothing_and_prints_nothing(tmp_path: Path) -> None:
    bin_dir = machine(tmp_path, ALL_TOOLS)
    proc = deps(bin_dir, "--images")
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "")
    assert apt_calls(tmp_path) == []
    assert deps(bin_dir, "--missing", "--images").stdout == "\n"


def test_only_the_missing_packages_are_installed_with_one_line_saying_which(
    tmp_path: Path,
) -> None:
    have = tuple(t for t in ALL_TOOLS if t not in ("ffmpeg", "dockerd"))
    bin_dir = machine(tmp_path, have)
    assert deps(bin_dir, "--missing", "--images").stdout == "ffmpeg docker.io\n"
    assert apt_calls(tmp_path) == [], "--missing must not install"

    proc = deps(bin_dir, "--images")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("[deps] installing Debian packages: ffmpeg (")
    assert "docker.io (dockerd for the images)" in lines[0]
    calls = apt_calls(tmp_path)
    assert calls[0].endswith("apt-get update -qq")
    assert calls[1].startswith("noninteractive apt-get install -y")
    assert calls[1].split()[-2:] == ["ffmpeg", "docker.io"]


def test_image_tools_count_only_with_images(tmp_path: Path) -> None:
    bin_dir = machine(tmp_path, ("ffmpeg", "tesseract", "promtool", "curl", "openssl", "python3"))
    assert deps(bin_dir, "--missing").stdout == "\n"
    assert deps(bin_dir, "--missing", "--images").stdout == "debootstrap docker.io\n"


def test_a_python_without_venv_needs_python3_venv(tmp_path: Path) -> None:
    bin_dir = machine(tmp_path, ("ffmpeg", "tesseract", "promtool", "curl", "openssl"))
    fails = bin_dir / "python3"
    fails.write_text("#!/bin/sh\nexit 1\n")  # `import ensurepip, venv` fails
    fails.chmod(0o755)
    assert deps(bin_dir, "--missing").stdout == "python3-venv\n"


def test_without_apt_get_it_says_what_to_install(tmp_path: Path) -> None:
    bin_dir = machine(tmp_path, ("promtool", "curl", "openssl", "python3"), apt=False)
    proc = deps(bin_dir)
    assert proc.returncode == 1
    assert "missing ffmpeg (the worker and its tests)" in proc.stderr
    assert "no apt-get" in proc.stderr


def test_make_deps_and_setup_call_it() -> None:
    makefile = (REPO / "Makefile").read_text()
    assert "\ndeps: ## " in makefile and "\thack/deps.sh --images\n" in makefile
    setup = (REPO / "hack" / "setup.sh").read_text()
    assert '"$HACK_DIR/deps.sh" --missing' in setup
    assert "apt-get" not in setup, "system packages belong to hack/deps.sh (make deps)"
