"""The output check: before anything is uploaded, the worker decodes what it made.

A clip passes when it decodes without errors, carries the tracks its format needs, has
the expected number of video frames (within one) and lasts the expected time (within one
frame, or 25 ms plus one codec frame for audio-only output). The expectation comes from
the downloaded segment's packets, so a source that ends before `end` (a short video, a
truncated file) is expected to give a shorter clip, and the result says `truncated`.
"""

from __future__ import annotations

from dataclasses import dataclass

from clip_worker import probe

AUDIO_TOLERANCE = 0.025
# MP3 output is whole 1152-sample frames with encoder delay: its container duration runs
# up to one frame (24 ms at 48 kHz, 26 ms at 44.1 kHz) past the samples it carries.
MP3_FRAME = 1152 / 44100
# Container time bases (1 ms in Matroska/WebM) and codec frame edges.
_ROUNDING = 0.01
# A stream copy cuts video packets in decode order: with B-frames, up to this many frames
# shown after `end` ride along (their decode time is before `end`).
COPY_TAIL_FRAMES = 3


@dataclass(frozen=True)
class Expect:
    """What a correct clip looks like."""

    fmt: str
    duration: float  # seconds the clip must last
    frame_time: float | None  # one video frame (None: no video in the output)
    frames: int | None = None  # video frames to show, when known
    audio: bool = False  # the output must carry audio
    lead_in: float = 0.0  # copy into WebM: the keyframe-aligned lead-in is shown
    lead_in_frames: int = 0
    tail_frames: int = 0  # stream copy: frames past `end` that may ride along (B-frames)


class CheckFailed(Exception):
    """The made clip is not the requested one; `undecodable` when it does not decode."""

    def __init__(self, message: str, undecodable: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.undecodable = undecodable


def tolerance(expect: Expect) -> float:
    """How far the clip's duration may be from the expected one."""
    if expect.fmt == "mp3":
        return AUDIO_TOLERANCE + MP3_FRAME + _ROUNDING
    return max(expect.frame_time or 0.0, AUDIO_TOLERANCE) + _ROUNDING


def check(path: str, expect: Expect, timeout: float, decode_all: bool = True) -> probe.Made:
    """Decode `path` (all of it, or with `decode_all` False only its keyframes, every
    packet parsed: probe.parsed) and compare it with `expect`; raises CheckFailed saying
    what is off."""
    made = probe.made(path, timeout) if decode_all else probe.parsed(path, timeout)
    compare(made, expect)
    return made


def compare(made: probe.Made, expect: Expect) -> None:
    """Raise CheckFailed when the decoded clip `made` is not what `expect` describes."""
    info = made.info
    if made.errors or not (info.video_codec or info.audio_codec):
        raise CheckFailed(f"it does not decode cleanly ({made.errors or 'no streams'})", True)
    if expect.frame_time is not None:
        if not info.video_codec or made.video_frames == 0:
            raise CheckFailed(f"it has no video frames, and {expect.fmt} needs video")
        if expect.frames is not None:
            want = expect.frames + expect.lead_in_frames
            if not want - 1 <= made.video_frames <= want + 1 + expect.tail_frames:
                raise CheckFailed(f"it has {made.video_frames} video frames instead of {want}")
    if expect.audio and (not info.audio_codec or made.audio_frames == 0):
        raise CheckFailed("it has no audio although the source has audio there")
    if info.duration is None:
        raise CheckFailed("its duration is unknown")
    slack = tolerance(expect)
    # A copy's timeline also keeps the B-frame reorder delay at its start (about as long).
    tail = 2 * expect.tail_frames * (expect.frame_time or 0.0)
    low, high = expect.duration - slack, expect.duration + expect.lead_in + tail + slack
    if not low <= info.duration <= high:
        raise CheckFailed(
            f"it lasts {info.duration:.3f} s instead of {expect.duration:.3f} s"
            + (f" (+{expect.lead_in:.3f} s keyframe lead-in)" if expect.lead_in else "")
        )
