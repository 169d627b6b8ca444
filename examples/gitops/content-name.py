#!/usr/bin/env python3
"""Name each ClipJob in Git after its content: `<base>-<8 hex of sha256(spec)>`.

A ClipJob's spec is immutable (the API server refuses any change), so editing one in Git
and applying it fails. With content names an edited spec is a new name: Argo CD or Flux
creates the new ClipJob and prunes the old one (its clip stays in S3 with deletionPolicy
Retain, goes with Delete). Run it after editing, or in CI with --check:

    python3 examples/gitops/content-name.py examples/gitops/clips/*.yaml          # rename
    python3 examples/gitops/content-name.py --check examples/gitops/clips/*.yaml  # verify

Only `metadata.name` lines change; comments and layout stay. Needs PyYAML.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
from pathlib import Path
from typing import Any

import yaml

HASH_LEN = 8
SUFFIX = re.compile(rf"-[0-9a-f]{{{HASH_LEN}}}$")


def content_hash(spec: dict[str, Any]) -> str:
    """sha256 of the spec as canonical JSON (sorted keys, no spaces): key order and YAML
    style do not change the name, any value does."""
    canonical = json.dumps(spec, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()[:HASH_LEN]


def content_name(name: str, spec: dict[str, Any]) -> str:
    base = SUFFIX.sub("", name)
    return f"{base[: 63 - HASH_LEN - 1]}-{content_hash(spec)}"


def rename(path: Path, check: bool) -> list[str]:
    """Problems (check) or renames done, one line each."""
    text = path.read_text()
    out: list[str] = []
    for doc in yaml.safe_load_all(text):
        if not isinstance(doc, dict) or doc.get("kind") != "ClipJob":
            continue
        old = doc["metadata"]["name"]
        new = content_name(old, doc["spec"])
        if old == new:
            continue
        if check:
            out.append(f"{path}: ClipJob {old} should be named {new} (its spec changed)")
            continue
        pattern = re.compile(rf"^(\s+name:\s*)['\"]?{re.escape(old)}['\"]?\s*$", re.M)
        text, count = pattern.subn(lambda m, new=new: m[1] + new, text, count=1)
        if count != 1:
            raise SystemExit(f"{path}: cannot find the line `name: {old}` to rewrite")
        out.append(f"{path}: {old} -> {new}")
    if out and not check:
        path.write_text(text)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="change nothing; fail if stale")
    parser.add_argument("files", nargs="+", type=Path)
    args = parser.parse_args(argv)
    lines = [line for path in args.files for line in rename(path, args.check)]
    for line in lines:
        print(line, file=sys.stderr if args.check else sys.stdout)
    return 1 if args.check and lines else 0


if __name__ == "__main__":
    sys.exit(main())
