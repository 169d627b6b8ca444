"""ffprobe of local files: streams, video packet times and keyframes."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from clip_worker.process import run
from clip_worker.result import Reason, WorkerError


@dataclass(frozen=True)
class StreamInfo:
    """The first video and audio stream of a local file."""

    video_codec: str | None
    audio_codec: str | None
    width: int | None
    height: int | None
    pix_fmt: str | None
    profile: str | None
    frame_rate: float | None
    duration: float | None
    frames: int | None = None  # decoded video frames, with count_frames


def _rate(text: str | None) -> float | None:
    if not text or "/" not in text:
        return None
    num, den = text.split("/", 1)
    try:
        return float(num) / float(den) if float(den) else None
    except ValueError:
        return None


def _json(args: list[str], timeout: float, what: str) -> dict[str, Any]:
    done = run(args, timeout, what)
    if done.returncode != 0:
        raise WorkerError(Reason.INTERNAL_ERROR, f"{what} failed: {done.tail()}")
    try:
        data = json.loads(done.stdout or "{}")
    except ValueError:
        raise WorkerError(Reason.INTERNAL_ERROR, f"{what} printed no JSON") from None
    return data if isinstance(data, dict) else {}


def streams(path: str, timeout: float, count_frames: bool = False) -> StreamInfo:
    """Codecs, size and duration of a local file (`count_frames`: also decode the video and
    count its frames; a join that does not decode yields fewer)."""
    count = ["-count_frames"] if count_frames else []
    data = _json(
        [
            "ffprobe", "-v", "error", "-of", "json", *count,
            "-show_entries",
            "stream=codec_type,codec_name,width,height,pix_fmt,profile,avg_frame_rate,"
            "r_frame_rate,nb_read_frames,disposition:format=duration",
            path,
        ],
        timeout,
        "ffprobe of the clip",
    )  # fmt: skip
    video: dict[str, Any] = {}
    audio: dict[str, Any] = {}
    for stream in data.get("streams", []):
        attached = (stream.get("disposition") or {}).get("attached_pic") == 1
        if stream.get("codec_type") == "video" and not video and not attached:
            video = stream
        elif stream.get("codec_type") == "audio" and not audio:
            audio = stream
    duration = (data.get("format") or {}).get("duration")
    return StreamInfo(
        video_codec=video.get("codec_name"),
        audio_codec=audio.get("codec_name"),
        width=video.get("width"),
        height=video.get("height"),
        pix_fmt=video.get("pix_fmt"),
        profile=video.get("profile"),
        frame_rate=_rate(video.get("avg_frame_rate")) or _rate(video.get("r_frame_rate")),
        duration=float(duration) if duration not in (None, "N/A") else None,
        frames=int(video["nb_read_frames"]) if video.get("nb_read_frames") else None,
    )


@dataclass(frozen=True)
class VideoPackets:
    """Presentation times (seconds, sorted) of all video frames and of the keyframes."""

    times: tuple[float, ...]
    keyframes: tuple[float, ...]

    def frames_in(self, start: float, end: float) -> int:
        """How many frames are shown in [start, end)."""
        return sum(1 for t in self.times if start <= t < end)

    def first_keyframe_in(self, start: float, end: float) -> float | None:
        """The first keyframe at or after start and before end."""
        return next((k for k in self.keyframes if start <= k < end), None)


def video_packets(path: str, timeout: float) -> VideoPackets:
    """Packet pts of the first video stream (reads the local file's packet headers only)."""
    data = _json(
        [
            "ffprobe", "-v", "error", "-of", "json", "-select_streams", "v:0",
            "-show_entries", "packet=pts_time,flags", path,
        ],
        timeout,
        "ffprobe of the downloaded segment",
    )  # fmt: skip
    times: list[float] = []
    keys: list[float] = []
    for packet in data.get("packets", []):
        pts = packet.get("pts_time")
        if pts in (None, "N/A"):
            continue
        value = float(pts)
        times.append(value)
        if "K" in str(packet.get("flags", "")):
            keys.append(value)
    return VideoPackets(tuple(sorted(times)), tuple(sorted(keys)))
