"""What the downloaded segment holds of [start, end), and what a correct clip made from it
looks like (the expectation the output check compares with, verify.py)."""

from __future__ import annotations

from dataclasses import dataclass

from clip_worker import probe, verify
from clip_worker.config import Config
from clip_worker.filters import GIF_MAX_FPS
from clip_worker.result import Reason, WorkerError

# A keyframe this close to `start` counts as on it (timestamps are rounded to 1 ms).
EPS = 0.0005


@dataclass(frozen=True)
class Window:
    """The part of the segment the clip shows: [start, end), `end` clamped to the data."""

    start: float
    end: float
    truncated: bool
    frames: int | None  # video frames in the window
    keyframe: float | None  # the keyframe at or before start (where a copy starts)
    lead_in_frames: int
    audio: bool


def window(cfg: Config, seg: probe.Segment) -> Window:
    """What the segment holds of [start, end); names the failure when it holds nothing usable."""
    start, fmt = cfg.start, cfg.output_format
    data_end = seg.data_end
    if data_end is None or data_end <= start + EPS:
        where = f" (the data ends at {data_end:.3f} s)" if data_end else ""
        raise WorkerError(
            Reason.START_BEYOND_END,
            f"start {start:g} s is after the end of the source's media data{where}; the "
            "video is shorter than that or the file is truncated: pick an earlier start",
        )
    end = min(cfg.end, data_end)
    truncated = data_end < cfg.end - EPS
    packets = seg.video
    frames = packets.frames_in(start - EPS, cfg.end - EPS) if packets else None
    if fmt != "mp3" and not frames:
        if seg.video_end is not None and seg.video_end <= start + EPS:
            raise WorkerError(
                Reason.START_BEYOND_END,
                f"the video track ends at {seg.video_end:.3f} s, before the clip's start "
                f"({start:g} s); only audio is left there: pick an earlier start or use mp3",
            )
        raise WorkerError(
            Reason.UNSUPPORTED_SOURCE, f"the source has no readable video frames between "
            f"{start:g} s and {cfg.end:g} s: its data there is missing or damaged"
        )  # fmt: skip
    keyframe = None
    lead_in_frames = 0
    if packets and packets.times:
        keyframe = max((k for k in packets.keyframes if k <= start + EPS),
                       default=packets.times[0])  # fmt: skip
        lead_in_frames = packets.frames_in(keyframe - EPS, start - EPS)
    audio = bool(seg.info.audio_codec and seg.audio_end and seg.audio_end > start + 0.03)
    return Window(start, end, truncated, frames, keyframe, lead_in_frames, audio)


def expectation(cfg: Config, info: probe.StreamInfo, win: Window, how: str) -> verify.Expect:
    """What a correct clip made by `how` looks like."""
    fmt = cfg.output_format
    duration = win.end - win.start
    if fmt == "mp3":
        return verify.Expect(fmt, duration, None, audio=True)
    if fmt == "gif":
        fps = min(GIF_MAX_FPS, round(info.frame_rate or GIF_MAX_FPS))
        return verify.Expect(fmt, duration, 1 / fps)
    frame = 1 / (info.frame_rate or 25.0)
    if how != "copy":
        return verify.Expect(fmt, duration, frame, win.frames, win.audio)
    tail = verify.COPY_TAIL_FRAMES
    if fmt == "webm" and win.keyframe is not None:
        # WebM cannot hide the lead-in from the keyframe before start (documented).
        return verify.Expect(fmt, duration, frame, win.frames, win.audio,
                             max(0.0, win.start - win.keyframe), win.lead_in_frames,
                             tail)  # fmt: skip
    return verify.Expect(fmt, duration, frame, win.frames, win.audio, tail_frames=tail)
