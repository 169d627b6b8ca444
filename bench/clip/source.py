"""The benchmark source: 60 minutes of 720p (testsrc2 + tone), cached like the test media."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from tests.plugins.media import cache_root


@dataclass(frozen=True)
class BenchSource:
    """Recipe of the source; its hash names the cache directory."""

    seconds: int = 3600
    width: int = 1280
    height: int = 720
    fps: int = 25
    gop_seconds: int = 2
    bframes: int = 2
    crf: int = 30
    preset: str = "ultrafast"
    recipe: int = 1

    def digest(self) -> str:
        text = json.dumps(asdict(self), sort_keys=True)
        return "bench-" + hashlib.sha256(text.encode()).hexdigest()[:16]


def ensure_source(spec: BenchSource | None = None) -> Path:
    """Generate (once, ~10 min on 2 cores) and return the directory holding source.mp4."""
    spec = spec or BenchSource()
    final = cache_root() / spec.digest()
    if (final / ".complete").exists():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".gen-", dir=final.parent))
    tmp.chmod(0o755)
    try:
        gop = spec.fps * spec.gop_seconds
        cmd = [
            "ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
            "-f", "lavfi", "-i", f"testsrc2=size={spec.width}x{spec.height}:rate={spec.fps}",
            "-f", "lavfi", "-i", "sine=frequency=440:beep_factor=4:sample_rate=48000",
            "-t", str(spec.seconds), "-map", "0:v", "-map", "1:a",
            "-c:v", "libx264", "-preset", spec.preset, "-bf", str(spec.bframes),
            "-crf", str(spec.crf), "-pix_fmt", "yuv420p", "-g", str(gop),
            "-keyint_min", str(gop), "-sc_threshold", "0",
            "-c:a", "aac", "-b:a", "96k", "-movflags", "+faststart", str(tmp / "source.mp4"),
        ]  # fmt: skip
        subprocess.run(cmd, check=True, timeout=3600)
        (tmp / "spec.json").write_text(json.dumps(asdict(spec), indent=1))
        (tmp / ".complete").write_text("ok\n")
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


if __name__ == "__main__":
    print(ensure_source())
