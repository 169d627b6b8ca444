#!/usr/bin/env python3
"""Make a one-layer container image as a `docker save`-style tarball, without a registry.

    mkimage.py --ref clip.local/pause:3.10 --out pause.tar \
        --file /path/to/pause:/pause --entrypoint '["/pause"]' [--user 65535:65535]
        [--symlink /bin/sh:busybox] [--dir /tmp:1777] [--cmd '[...]'] [--env K=V]

`ctr -n k8s.io images import pause.tar` loads it. The layer is reproducible (sorted
entries, mtime 0, uid/gid 0), so the same inputs give the same image ID.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import tarfile
from pathlib import Path, PurePosixPath


def _parents(path: str) -> list[str]:
    parts = PurePosixPath(path.lstrip("/")).parts[:-1]
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


def build_layer(files: list[str], symlinks: list[str], dirs: list[str]) -> bytes:
    entries: dict[str, tarfile.TarInfo] = {}
    payload: dict[str, bytes] = {}

    def add_dir(name: str, mode: int = 0o755) -> None:
        info = tarfile.TarInfo(name)
        info.type, info.mode = tarfile.DIRTYPE, mode
        entries.setdefault(name, info)

    for spec in dirs:
        dest, _, mode = spec.partition(":")
        for parent in _parents(dest):
            add_dir(parent)
        name = dest.strip("/")
        entries.pop(name, None)
        add_dir(name, int(mode or "755", 8))
    for spec in files:
        src, dest = spec.split(":", 1)
        dest, _, mode = dest.partition(":")
        for parent in _parents(dest):
            add_dir(parent)
        data = Path(src).read_bytes()
        info = tarfile.TarInfo(dest.strip("/"))
        info.size = len(data)
        info.mode = int(mode, 8) if mode else (os.stat(src).st_mode & 0o777)
        entries[info.name], payload[info.name] = info, data
    for spec in symlinks:
        dest, target = spec.split(":", 1)
        for parent in _parents(dest):
            add_dir(parent)
        info = tarfile.TarInfo(dest.strip("/"))
        info.type, info.linkname, info.mode = tarfile.SYMTYPE, target, 0o777
        entries[info.name] = info
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(entries):
            info = entries[name]
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
            data = payload.get(name)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ref", required=True, help="image reference, e.g. clip.local/pause:3.10")
    p.add_argument("--out", required=True)
    p.add_argument("--file", action="append", default=[], help="SRC:DEST[:octal mode]")
    p.add_argument("--symlink", action="append", default=[], help="DEST:TARGET")
    p.add_argument("--dir", action="append", default=[], help="DEST[:octal mode]")
    p.add_argument("--entrypoint", default="null", help="JSON list")
    p.add_argument("--cmd", default="null", help="JSON list")
    p.add_argument("--user", default="")
    p.add_argument("--env", action="append", default=[])
    a = p.parse_args()

    layer = build_layer(a.file, a.symlink, a.dir)
    diff_id = "sha256:" + hashlib.sha256(layer).hexdigest()
    config = {
        "architecture": "amd64",
        "os": "linux",
        "created": "1970-01-01T00:00:00Z",
        "config": {
            "Entrypoint": json.loads(a.entrypoint),
            "Cmd": json.loads(a.cmd),
            "User": a.user,
            "Env": a.env or ["PATH=/bin:/usr/bin:/sbin:/usr/sbin"],
            "WorkingDir": "/",
        },
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "hack/node.d/mkimage.py"}],
    }
    config_bytes = json.dumps(config, sort_keys=True, separators=(",", ":")).encode()
    config_id = hashlib.sha256(config_bytes).hexdigest()
    layer_dir = diff_id.split(":", 1)[1]
    manifest = [
        {
            "Config": f"{config_id}.json",
            "RepoTags": [a.ref],
            "Layers": [f"{layer_dir}/layer.tar"],
        }
    ]
    tmp = a.out + ".tmp"
    with tarfile.open(tmp, mode="w", format=tarfile.PAX_FORMAT) as out:
        for name, data in (
            (f"{layer_dir}/layer.tar", layer),
            (f"{config_id}.json", config_bytes),
            ("manifest.json", json.dumps(manifest).encode()),
        ):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            out.addfile(info, io.BytesIO(data))
    os.replace(tmp, a.out)
    print(f"{a.ref} sha256:{config_id} -> {a.out}")


if __name__ == "__main__":
    main()
