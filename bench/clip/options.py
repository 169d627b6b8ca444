"""Benchmark: what each media option of issue 16 costs against the plain clip.

    CLIP_S3_PORT=57070 CLIP_S3_STATE=/tmp/bench-s3 hack/s3.sh start
    eval "$(CLIP_S3_PORT=57070 CLIP_S3_STATE=/tmp/bench-s3 hack/s3.sh env)"
    python -m bench.clip.options

The same 6 s window (10.3-16.3 s, inside GOPs: the plain clip is a smart cut) of one
30 s 1280x720 25 fps H.264 + AAC source (testsrc2 and a quiet tone, keyframe every 2 s)
served by tests/mediaserver.py, clipped by the real worker (upload to the S3 server
given) once per option per round, the options interleaved within each round. Reports
the median wall time of the worker process, its ratio to the plain clip, the cut path
and the encode phase, then rewrites the "## clip: media options" section of RESULTS.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.clip.run import children_cpu, write_section
from tests.mediaserver import MediaHTTPServer
from tests.plugins.media import cache_root

RESULTS = Path(__file__).resolve().parents[1] / "RESULTS.md"
SECTION = "## clip: media options"
START, END = 10.3, 16.3
CAPTIONS = {"CLIP_CAPTION_TOP": "when the build passes", "CLIP_CAPTION_BOTTOM": "on the first try",
            "CLIP_CAPTION_UPPERCASE": "true"}  # fmt: skip
OPTIONS: list[tuple[str, dict[str, str]]] = [
    ("plain (smart cut)", {}),
    ("captions", CAPTIONS),
    ("crop 9:16", {"CLIP_CROP_ASPECT": "9:16"}),
    ("loudness -14 LUFS", {"CLIP_LOUDNESS_TARGET": "-14"}),
    (
        "meme: captions + crop 9:16 + loudness",
        {**CAPTIONS, "CLIP_CROP_ASPECT": "9:16", "CLIP_LOUDNESS_TARGET": "-14"},
    ),
    ("watermark 20 % bottom-right", {"CLIP_WATERMARK_URL": "{server}/logo.png"}),
    ("subtitles (3 cues)", {"CLIP_SUBTITLES_URL": "{server}/subs.vtt"}),
    ("thumbnail jpeg at 2 s", {"CLIP_THUMBNAIL_FORMAT": "jpeg", "CLIP_THUMBNAIL_AT": "2"}),
    ("gif 480 px", {"CLIP_OUTPUT_FORMAT": "gif"}),
    ("gif 480 px + captions", {"CLIP_OUTPUT_FORMAT": "gif", **CAPTIONS}),
]


def source() -> Path:
    """The 30 s 720p source, generated once into the media cache."""
    root = cache_root() / "bench-options-1"
    if not (root / ".complete").exists():
        root.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
             "-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=25:duration=30",
             "-f", "lavfi", "-i", "sine=frequency=440:beep_factor=4:sample_rate=48000:duration=30",
             "-map", "0:v", "-map", "1:a", "-af", "volume=0.1",
             "-c:v", "libx264", "-preset", "veryfast", "-crf", "23", "-pix_fmt", "yuv420p",
             "-g", "50", "-keyint_min", "50", "-sc_threshold", "0", "-bf", "2",
             "-c:a", "aac", "-b:a", "96k", "-movflags", "+faststart",
             str(root / "source.mp4")], check=True, timeout=1200,
        )  # fmt: skip
        (root / ".complete").write_text("ok\n")
    (root / "subs.vtt").write_text(
        "WEBVTT\n\n00:10.500 --> 00:12.000\nwhen the build passes\n\n"
        "00:12.500 --> 00:14.000\non the first try\n\n00:14.500 --> 00:16.000\nship it\n"
    )
    if not (root / "logo.png").exists():
        subprocess.run(
            ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi",
             "-i", "testsrc2=size=256x128", "-frames:v", "1", str(root / "logo.png")],
            check=True, timeout=60,
        )  # fmt: skip
    return root


def run_worker(
    url: str, port: int, extra: dict[str, str], work: Path
) -> tuple[float, float, dict[str, Any]]:
    """One worker run: its wall time, CPU time (with its FFmpeg children) and result JSON."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLIP_") or "_S3_" in k}
    env.update({
        "CLIP_SOURCE_URL": url, "CLIP_START": f"{START}", "CLIP_END": f"{END}",
        "CLIP_OUTPUT_FORMAT": "mp4", "CLIP_MODE": "accurate",
        "CLIP_ALLOW_PRIVATE_NETWORKS": "127.0.0.0/8", "CLIP_ALLOW_PORTS": str(port),
        "CLIP_S3_BUCKET": "bench-options", "CLIP_S3_KEY": f"options/{time.monotonic_ns()}",
        "CLIP_WORK_DIR": str(work), "CLIP_TERMINATION_LOG": str(work / "result.json"), **extra,
    })  # fmt: skip
    began, cpu = time.monotonic(), children_cpu()
    done = subprocess.run([sys.executable, "-m", "clip_worker"], env=env, capture_output=True,
                          text=True, timeout=900)  # fmt: skip
    wall, cpu = time.monotonic() - began, children_cpu() - cpu
    if done.returncode != 0:
        raise RuntimeError(f"worker failed ({extra}): {done.stderr[-1500:]}")
    return wall, cpu, json.loads((work / "result.json").read_text())


def measure(rounds: int) -> dict[str, Any]:
    root = source()
    server = MediaHTTPServer(root, "127.0.0.1", 0)
    server.start()
    walls: dict[str, list[float]] = {name: [] for name, _ in OPTIONS}
    cpus: dict[str, list[float]] = {name: [] for name, _ in OPTIONS}
    encodes: dict[str, list[float]] = {name: [] for name, _ in OPTIONS}
    last: dict[str, dict[str, Any]] = {}
    try:
        import boto3

        s3 = boto3.client("s3", endpoint_url=os.environ["CLIP_S3_ENDPOINT"])
        with contextlib.suppress(s3.exceptions.ClientError):
            s3.create_bucket(Bucket="bench-options")
        with tempfile.TemporaryDirectory() as tmp:
            for _ in range(rounds):
                for name, extra in OPTIONS:
                    url = f"{server.url}/source.mp4"
                    port = server.server_address[1]
                    given = {k: v.replace("{server}", server.url) for k, v in extra.items()}
                    wall, cpu, result = run_worker(url, port, given, Path(tmp))
                    walls[name].append(round(wall, 2))
                    cpus[name].append(round(cpu, 2))
                    encodes[name].append(result["timings"]["encodeSeconds"])
                    last[name] = result
    finally:
        server.shutdown()
        server.server_close()
    return {"walls": walls, "cpus": cpus, "encodes": encodes, "results": last, "rounds": rounds}


def render(data: dict[str, Any]) -> str:
    walls, cpus, results = data["walls"], data["cpus"], data["results"]
    med = statistics.median
    rows = []
    for name, _ in OPTIONS:
        ref = "gif 480 px" if name.startswith("gif") else OPTIONS[0][0]
        wall, cpu = med(walls[name]), med(cpus[name])
        r = results[name]
        loud = r.get("loudness", {}).get("integratedLufs")
        rows.append(
            f"| {name} | {wall:.2f} | {wall / med(walls[ref]):.2f}x | {cpu:.2f} | "
            f"{cpu / med(cpus[ref]):.2f}x | {r['cutPath']} | {med(data['encodes'][name]):.2f} | "
            f"{r.get('width')}x{r.get('height')} | {'' if loud is None else loud} |"
        )
    lines = [
        SECTION, "",
        f"The worker on the same 6 s window ({START}-{END} s) of a 30 s 1280x720 25 fps H.264 + "
        "AAC source (keyframe every 2 s, so the plain clip is a smart cut), accurate MP4 "
        f"unless named, medians of {data['rounds']} interleaved rounds on 2 cores shared with "
        "other work (wall times are noisy; CPU s, the worker and its FFmpeg children, less "
        "so). Ratios are against the plain clip (GIF rows: against the plain GIF); "
        "LUFS is the integrated loudness measured on the output.", "",
        "| option | wall s | vs plain | CPU s | vs plain | cutPath | encode s | output | LUFS |",
        "| --- | ---: | ---: | ---: | ---: | --- | ---: | --- | ---: |",
        *rows, "",
        "Each round's wall seconds: "
        + "; ".join(f"{name}: {', '.join(f'{w:.2f}' for w in ws)}" for name, ws in walls.items())
        + ".", "",
        "Captions, crop, watermark and subtitles re-encode every frame (the plain clip "
        "re-encodes only the partial GOPs at both ends and copies the rest); loudness adds a "
        "measuring pass over the clip's audio and an audio-only encode, and keeps the smart "
        "cut, as does the thumbnail (one still of the made clip). "
        "`python -m bench.clip.options` (see its docstring for the S3 server).", "",
    ]  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    if "CLIP_S3_ENDPOINT" not in os.environ:
        parser.error('needs an S3 server: hack/s3.sh start && eval "$(hack/s3.sh env)"')
    data = measure(args.rounds)
    text = render(data)
    print(text)
    if not args.no_write:
        write_section(RESULTS, text, SECTION)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
