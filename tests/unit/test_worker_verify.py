"""The worker's output check and message scrubbing, without FFmpeg (issue 13)."""

from __future__ import annotations

import pytest

from clip_worker import probe, verify
from clip_worker.result import scrub


def _made(frames: int, duration: float | None, video: str | None = "h264",
          audio: str | None = "aac", errors: str = "") -> probe.Made:  # fmt: skip
    info = probe.StreamInfo(video, audio, 640, 360, "yuv420p", "High", 25.0, duration)
    return probe.Made(info, frames, 100 if audio else 0, errors)


MP4 = verify.Expect("mp4", 5.0, 1 / 25, frames=125, audio=True)


def test_the_requested_clip_passes() -> None:
    verify.compare(_made(125, 5.0), MP4)
    verify.compare(_made(124, 5.03), MP4)  # within one frame


@pytest.mark.parametrize(
    ("made", "words"),
    [
        (_made(19, 0.77), "19 video frames instead of 125"),  # a truncated download
        (_made(0, 0.023, video=None), "no video frames"),  # an "mp4" holding one AAC frame
        (_made(125, 5.0, audio=None), "no audio"),
        (_made(125, 5.2), "lasts 5.200 s instead of 5.000 s"),
        (_made(125, 5.0, errors="Invalid NAL unit size"), "does not decode cleanly"),
        (_made(125, None), "duration is unknown"),
    ],
)
def test_a_wrong_clip_is_refused_with_what_is_wrong(made: probe.Made, words: str) -> None:
    with pytest.raises(verify.CheckFailed, match=words):
        verify.compare(made, MP4)


def test_copy_allows_the_documented_lead_in_and_b_frame_tail() -> None:
    webm = verify.Expect("webm", 2.0, 1 / 25, frames=50, lead_in=1.2, lead_in_frames=30,
                         tail_frames=verify.COPY_TAIL_FRAMES)  # fmt: skip
    verify.compare(_made(82, 3.28), webm)
    with pytest.raises(verify.CheckFailed):
        verify.compare(_made(50, 2.0), webm)  # the lead-in must be there


def test_mp3_tolerates_one_frame_of_encoder_padding_only() -> None:
    mp3 = verify.Expect("mp3", 2.0, None, audio=True)
    verify.compare(_made(0, 2.04, video=None, audio="mp3"), mp3)
    with pytest.raises(verify.CheckFailed):
        verify.compare(_made(0, 2.1, video=None, audio="mp3"), mp3)


def test_messages_never_name_scratch_files() -> None:
    work = "/scratch/clip-k2j4_x"
    text = scrub(f"ffprobe failed: {work}/segment.mkv: End of file; {work}/part1.ts", work)
    assert "segment.mkv" not in text and "part1.ts" not in text and "/scratch" not in text
    assert "the downloaded part of the source" in text
    assert scrub("joining clip.mp4 failed", None) == "joining the clip failed"
