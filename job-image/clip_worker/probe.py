"""ffprobe of local files: the downloaded segment (streams, packet times, keyframes, where
its data ends) and the made clip (decoded frame counts, decoder errors)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from clip_worker.process import Completed, run
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


_STREAM_FIELDS = (
    "stream=index,codec_type,codec_name,width,height,pix_fmt,profile,avg_frame_rate,"
    "r_frame_rate,nb_read_frames,extradata_size,disposition"
)


def _first_streams(data: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    video: dict[str, Any] = {}
    audio: dict[str, Any] = {}
    for stream in data.get("streams", []):
        attached = (stream.get("disposition") or {}).get("attached_pic") == 1
        if stream.get("codec_type") == "video" and not video and not attached:
            video = stream
        elif stream.get("codec_type") == "audio" and not audio:
            audio = stream
    return video, audio


def _info(data: dict[str, Any]) -> StreamInfo:
    video, audio = _first_streams(data)
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


def _times(packets: list[dict[str, Any]]) -> tuple[list[float], list[float], float | None]:
    """(sorted pts, sorted keyframe pts, end of the last packet) of one stream's packets."""
    times: list[float] = []
    keys: list[float] = []
    end: float | None = None
    for packet in packets:
        pts = packet.get("pts_time")
        if pts in (None, "N/A"):
            continue
        value = float(pts)
        times.append(value)
        if "K" in str(packet.get("flags", "")):
            keys.append(value)
        length = packet.get("duration_time")
        stop = value + (float(length) if length not in (None, "N/A") else 0.0)
        end = stop if end is None else max(end, stop)
    return sorted(times), sorted(keys), end


@dataclass(frozen=True)
class Segment:
    """The downloaded segment: its streams, video packet times and where its data ends."""

    info: StreamInfo
    video: VideoPackets | None
    video_end: float | None  # end of the last video frame (None: no video packets)
    audio_end: float | None  # end of the last audio packet (None: no audio packets)

    @property
    def data_end(self) -> float | None:
        ends = [t for t in (self.video_end, self.audio_end) if t is not None]
        return max(ends) if ends else None


def segment(path: str, timeout: float) -> Segment:
    """Streams and packet times of the downloaded segment, in one ffprobe (headers only)."""
    data = _json(
        ["ffprobe", "-v", "error", "-of", "json", "-show_entries",
         f"{_STREAM_FIELDS}:packet=stream_index,pts_time,duration_time,flags:format=duration",
         path],
        timeout,
        "ffprobe of the downloaded segment",
    )  # fmt: skip
    info = _info(data)
    video, audio = _first_streams(data)
    by_stream: dict[int, list[dict[str, Any]]] = {}
    for packet in data.get("packets", []):
        by_stream.setdefault(int(packet.get("stream_index", -1)), []).append(packet)
    packets = None
    video_end = audio_end = None
    if video:
        times, keys, video_end = _times(by_stream.get(int(video["index"]), []))
        packets = VideoPackets(tuple(times), tuple(keys))
        if times and info.frame_rate and (video_end is None or video_end <= times[-1]):
            video_end = times[-1] + 1 / info.frame_rate
    if audio:
        audio_end = _times(by_stream.get(int(audio["index"]), []))[2]
    return Segment(info, packets, video_end, audio_end)


@dataclass(frozen=True)
class Made:
    """What the output check learns about a made clip: one decode of every stream."""

    info: StreamInfo
    video_frames: int
    audio_frames: int
    errors: str  # decoder complaints; empty when the file decodes cleanly


def made(path: str, timeout: float) -> Made:
    """Decode the clip (all streams) and count its frames; never raises for bad files."""
    # ffprobe decodes on one thread unless told (its codec default is 1, unlike ffmpeg's
    # "auto"): frame threads halve the check's wall time on two cores, at the same CPU.
    # The deblocking filter only smooths pixels nobody looks at here (the check counts
    # frames and decoder errors): skipping it saves ~17 % of the decode.
    done = run(
        ["ffprobe", "-v", "error", "-threads", "0", "-skip_loop_filter", "all",
         "-of", "json", "-count_frames",
         "-show_entries", f"{_STREAM_FIELDS}:format=duration", path],
        timeout,
        "checking the clip",
    )  # fmt: skip
    data, errors = _ffprobe_json(done)
    video, audio = _first_streams(data)
    return Made(
        info=_info(data),
        video_frames=int(video.get("nb_read_frames") or 0),
        audio_frames=int(audio.get("nb_read_frames") or 0),
        errors=errors,
    )


def parsed(path: str, timeout: float) -> Made:
    """The check of a stream copy or of a clip encoded whole, one ffprobe run: every packet
    read through its codec's parser (for H.264/HEVC that checks every NAL unit's length:
    noise fails) and counted (one packet, one frame), and only the keyframes and the audio
    decoded (the codec set-up the container carries works). A copy cannot change a packet,
    only where the clip starts (on a keyframe) and ends (in decode order, so every
    reference rides along); an encode's frames are the encoder's. A clip whose only
    keyframe is the lead-in its edit list hides is decoded whole (it is one GOP).
    job-image/README.md, "The output check". Never raises for bad files."""
    done = run(
        ["ffprobe", "-v", "error", "-threads", "0", "-skip_frame", "nokey",
         "-skip_loop_filter", "all", "-of", "json", "-count_frames", "-show_entries",
         f"{_STREAM_FIELDS}:format=duration:packet=stream_index,flags", path],
        timeout,
        "checking the clip's packets",
    )  # fmt: skip
    data, errors = _ffprobe_json(done)
    video, audio = _first_streams(data)
    counts: dict[int, int] = {}
    for packet in data.get("packets", []):
        # Not a lead-in packet the edit list discards: a frame shown.
        if "D" not in (packet.get("flags") or ""):
            index = packet.get("stream_index")
            counts[index] = counts.get(index, 0) + 1
    shown = counts.get(video.get("index", -1), 0)
    keyframes = int(video.get("nb_read_frames") or 0)
    if shown and not keyframes and not errors:
        return made(path, timeout)
    audio_decoded = int(audio.get("nb_read_frames") or 0)
    return Made(
        info=_info(data),
        video_frames=shown if keyframes else 0,
        audio_frames=counts.get(audio.get("index", -1), 0) if audio_decoded else 0,
        errors=errors,
    )


def _ffprobe_json(done: Completed) -> tuple[dict[str, Any], str]:
    """ffprobe's JSON (empty when there is none) and its complaints."""
    try:
        data = json.loads(done.stdout or "{}")
    except ValueError:
        data = {}
    errors = done.tail() if (done.returncode != 0 or done.stderr.strip()) else ""
    return (data if isinstance(data, dict) else {}), errors
