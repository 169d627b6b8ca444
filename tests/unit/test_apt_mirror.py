"""hack/apt-mirror.sh: debootstrap takes the Debian mirror this machine's apt already uses.

Sample apt directories in both formats (one-line sources.list and deb822 .sources), the
way a corporate mirror or a cloud image writes them; hack/images.sh's `mirrors` step
shows the override and the fallback a user sees.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "hack" / "apt-mirror.sh"


def apt_dir(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "apt"
    (root / "sources.list.d").mkdir(parents=True)
    for name, text in files.items():
        (root / name).write_text(text)
    return root


def mirror(root: Path, suite: str = "bookworm") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPT), suite, str(root)], capture_output=True, text=True, timeout=30, check=False
    )


DEB822 = """\
Types: deb
# http://snapshot.debian.org/archive/debian/20250520T000000Z
URIs: https://artifacts.corp.example/debian-remote/
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: https://artifacts.corp.example/debian-security-remote
Suites: bookworm-security
Components: main
"""


def test_deb822_sources_give_the_mirror_and_the_security_mirror(tmp_path: Path) -> None:
    root = apt_dir(tmp_path, {"sources.list.d/debian.sources": DEB822})
    proc = mirror(root)
    assert (proc.returncode, proc.stdout) == (0, "https://artifacts.corp.example/debian-remote\n")
    proc = mirror(root, "bookworm-security")
    assert proc.stdout == "https://artifacts.corp.example/debian-security-remote\n"


def test_one_line_sources_with_options_comments_and_deb_src(tmp_path: Path) -> None:
    text = """\
# deb http://commented.example/debian bookworm main
deb-src http://src-only.example/debian bookworm main
deb [arch=amd64 signed-by=/etc/k.gpg] http://mirror.corp.example/debian bookworm main contrib
deb [ arch=amd64 ] http://mirror.corp.example/debian-security bookworm-security main
"""
    root = apt_dir(tmp_path, {"sources.list": text})
    assert mirror(root).stdout == "http://mirror.corp.example/debian\n"
    assert (
        mirror(root, "bookworm-security").stdout == "http://mirror.corp.example/debian-security\n"
    )


def test_suite_matches_exactly_and_disabled_entries_do_not_count(tmp_path: Path) -> None:
    sources = """\
Enabled: no
Types: deb
URIs: http://disabled.example/debian
Suites: bookworm

Types: deb-src
URIs: http://src.example/debian
Suites: bookworm

Types: deb
URIs: cdrom:[Debian]/ http://second-uri.example/debian
Suites: bookworm
"""
    root = apt_dir(
        tmp_path,
        {
            # A suite that only starts with the name, and a file apt itself ignores.
            "sources.list.d/a-updates.list": "deb http://up.example/d bookworm-updates main\n",
            "sources.list.d/b.list.disabled-by-farm": "deb http://off.example/d bookworm main\n",
            "sources.list.d/c.sources": sources,
        },
    )
    assert mirror(root).stdout == "http://second-uri.example/debian\n"


def test_sources_list_first_then_the_directory_in_name_order(tmp_path: Path) -> None:
    root = apt_dir(
        tmp_path,
        {
            "sources.list.d/20-b.list": "deb http://b.example/debian bookworm main\n",
            "sources.list.d/10-a.sources": "Types: deb\nURIs: http://a.example/d\nSuites: bookworm",
        },
    )
    assert mirror(root).stdout == "http://a.example/d\n"
    (root / "sources.list").write_text("deb http://main.example/debian bookworm main\n")
    assert mirror(root).stdout == "http://main.example/debian\n"


def test_no_source_for_the_suite_fails_with_nothing_printed(tmp_path: Path) -> None:
    ubuntu = "deb http://archive.ubuntu.com/ubuntu jammy main\n"
    proc = mirror(apt_dir(tmp_path, {"sources.list": ubuntu}))
    assert (proc.returncode, proc.stdout) == (1, "")
    proc = mirror(tmp_path / "no-such-dir")
    assert (proc.returncode, proc.stdout) == (1, "")


def images_mirrors(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("CLIP_DEBIAN")}
    return subprocess.run(
        [str(REPO / "hack" / "images.sh"), "mirrors"],
        capture_output=True,
        text=True,
        timeout=30,
        env={**base, **env},
        check=False,
    )


def test_images_sh_uses_the_machine_sources_unless_overridden(tmp_path: Path) -> None:
    root = apt_dir(tmp_path, {"sources.list.d/debian.sources": DEB822})
    proc = images_mirrors({"CLIP_APT_DIR": str(root)})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [
        "https://artifacts.corp.example/debian-remote",
        "https://artifacts.corp.example/debian-security-remote",
    ]
    assert "from this machine's apt sources" in proc.stderr

    proc = images_mirrors(
        {"CLIP_APT_DIR": str(root), "CLIP_DEBIAN_MIRROR": "http://m.example/debian/"}
    )
    assert proc.stdout.split() == ["http://m.example/debian", "http://m.example/debian-security"]
    assert "(CLIP_DEBIAN_MIRROR)" in proc.stderr


@pytest.mark.parametrize("apt", ["empty", "missing"])
def test_images_sh_falls_back_to_debian_and_says_how_to_choose(tmp_path: Path, apt: str) -> None:
    root = apt_dir(tmp_path, {}) if apt == "empty" else tmp_path / "missing"
    proc = images_mirrors({"CLIP_APT_DIR": str(root)})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [
        "http://deb.debian.org/debian",
        "http://deb.debian.org/debian-security",
    ]
    assert "no bookworm source" in proc.stderr and "set CLIP_DEBIAN_MIRROR" in proc.stderr
