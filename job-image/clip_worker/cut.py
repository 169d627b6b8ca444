"""The cut step, local only: stream copy, smart cut, or full re-encode into the output format.

Input is the downloaded segment (fetch.py), whose timestamps are the source's. `accurate`
mode must show the frame at `start` first and last exactly `end - start` seconds:

- smart (MP4 from H.264): re-encode the frames from `start` to the first keyframe in the
  clip and from the last keyframe in the clip to `end`; copy the whole GOPs in between;
  concatenate.
- reencode: decode from the keyframe before `start`, drop frames before it, encode.

`fast` mode stream-copies from the keyframe before `start` when the codecs fit the
container (MP4 hides the lead-in with an edit list); otherwise it re-encodes.

Every clip passes the output check (verify.py) before it is returned; a clip that fails
it falls back once to the next path (copy or smart -> reencode), and a failing reencode
is a named failure, never an upload.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from clip_worker import filters, loudness, probe, verify
from clip_worker.config import Config
from clip_worker.presigned import EarlyUpload, HeldPut, checked
from clip_worker.process import Completed, run
from clip_worker.result import Reason, WorkerError
from clip_worker.watermark import Image
from clip_worker.window import EPS as _EPS
from clip_worker.window import expectation, window

log = logging.getLogger("clip_worker")

CONTENT_TYPES = {"mp4": "video/mp4", "webm": "video/webm", "gif": "image/gif", "mp3": "audio/mpeg"}
_COPYABLE = {
    "mp4": ({"h264", "hevc", "av1", "vp9", "mpeg4"}, {"aac", "mp3", "opus", "ac3", "eac3"}),
    "webm": ({"vp8", "vp9", "av1"}, {"opus", "vorbis"}),
    "mp3": (set(), {"mp3"}),
}
GIF_MAX_WIDTH = filters.GIF_MAX_WIDTH
GIF_MAX_FPS = filters.GIF_MAX_FPS
_PARALLEL = ThreadPoolExecutor(max_workers=2, thread_name_prefix="cut")


@dataclass(frozen=True)
class CutResult:
    """The clip file, how it was made, and what the output check found in it."""

    path: str
    cut_path: str  # copy | smart | reencode
    made: probe.Made
    truncated: bool = False  # the source ended before `end`: the clip ends there
    loudness: dict[str, float] | None = None  # EBU R128 figures of the output (ebur128)
    held: HeldPut | None = None  # its upload, begun during the output check


def _base(cfg: Config) -> list[str]:
    return ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y"]


def _seek_input(path: str, at: float) -> list[str]:
    # The segment's timestamps are the source's: seek by timestamp, not from its start.
    return ["-seek_timestamp", "1", "-ss", f"{at:.6f}", "-i", path]


def _scale_height(cfg: Config, info: probe.StreamInfo) -> int | None:
    if cfg.max_height and info.height and info.height > cfg.max_height:
        return cfg.max_height - cfg.max_height % 2
    return None


# A clip encoded whole: libx264 superfast at CRF 26.7 matches FFmpeg's default (medium, CRF
# 23) on the long-GOP benchmark (PSNR 44.54 vs 44.40 dB, SSIM 0.9953 vs 0.9951) in a third
# of its encode CPU; veryfast at CRF 21 (44.46 dB) took 42 % more CPU for a clip 9 % smaller
# (bench/RESULTS.md, "## clip: long GOP"). superfast leaves out x264's macroblock tree,
# so the same CRF means more bits: its CRF is higher for the same quality.
REENCODE_PRESET = "superfast"
REENCODE_CRF = 26.7
# The smart cut's re-encoded head and tail (at most a GOP each, a few per cent of a clip's
# bytes): ultrafast spends a quarter of veryfast's encode CPU per frame, and at CRF 26 it
# is closer to the source frames than veryfast at CRF 18 was (PSNR 49.4 vs 48.5 dB on the
# bench source's head), for about 1.6x the head's bytes (bench/RESULTS.md "## clip").
PART_PRESET = "ultrafast"
PART_CRF = 26


def _video_codec_args(
    cfg: Config, crf: float = REENCODE_CRF, preset: str = REENCODE_PRESET
) -> list[str]:
    if cfg.output_format == "webm":
        return ["-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8",
                "-row-mt", "1", "-b:v", "0", "-crf", "33", "-pix_fmt", "yuv420p"]  # fmt: skip
    return ["-c:v", "libx264", "-preset", preset, "-crf", f"{crf:g}", "-pix_fmt", "yuv420p"]


def _audio_codec_args(cfg: Config) -> list[str]:
    if cfg.output_format == "webm":
        return ["-c:a", "libopus", "-b:a", "96k"]
    if cfg.output_format == "mp3":
        return ["-c:a", "libmp3lame", "-q:a", "2"]
    return ["-c:a", "aac", "-b:a", "128k"]


def _container_args(cfg: Config) -> list[str]:
    limit = ["-fs", str(cfg.max_output_bytes + 1)]
    if cfg.output_format == "mp4":
        return [*limit, "-movflags", "+faststart", "-f", "mp4"]
    if cfg.output_format == "webm":
        return [*limit, "-f", "webm"]
    if cfg.output_format == "gif":
        return [*limit, "-loop", "0", "-f", "gif"]
    return [*limit, "-f", "mp3"]


_UNDECODABLE = ("invalid data found", "corrupt", "error while decoding", "invalid nal",
                 "non-existing pps", "no frame!", "error splitting the input")  # fmt: skip


def _undecodable(done: Completed) -> bool:
    """FFmpeg said the source data does not decode."""
    lowered = done.stderr.lower()
    return any(text in lowered for text in _UNDECODABLE)


def _failed(done: Completed, what: str) -> WorkerError:
    """A failed FFmpeg run: source data it cannot decode is permanent, the rest transient."""
    if _undecodable(done):
        return WorkerError(
            Reason.UNSUPPORTED_SOURCE, f"{what} failed: the source data does not decode: "
            f"{done.tail()}"
        )  # fmt: skip
    return WorkerError(Reason.INTERNAL_ERROR, f"{what} failed: {done.tail()}")


def _check(done: Completed, what: str) -> None:
    if done.returncode != 0:
        raise _failed(done, what)


def reencode(
    cfg: Config,
    info: probe.StreamInfo,
    segment: str,
    out: str,
    frames: int | None = None,
    audio_filter: str | None = None,
    image: Image | None = None,
    cues: filters.Cues = (),
) -> str:
    """Frame-exact: decode from the keyframe before start, encode [start, end), through
    the per-frame filters (crop, scale, captions, the watermark `image`) and the audio
    filter (loudness). Returns the decoder's complaints about the source ("" for none):
    FFmpeg conceals data it cannot decode and exits 0, with frames missing."""
    work = os.path.dirname(out)
    args = _base(cfg) + _seek_input(segment, cfg.start)
    mark = None
    if image is not None and cfg.output_format != "mp3":
        args += image.input_args()
        mark = 1
    fmt = cfg.output_format
    if fmt in ("gif", "mp3"):
        args += ["-t", f"{cfg.duration:.6f}"]
    if fmt == "gif":
        args += ["-an", "-filter_complex", filters.gif_graph(cfg, info, work, mark, cues)]
    elif fmt == "mp3":
        args += ["-vn", *(["-af", audio_filter] if audio_filter else []), *_audio_codec_args(cfg)]
    else:
        audio = ["-map", "0:a:0?", *_audio_codec_args(cfg)]
        if audio_filter:
            # loudnorm holds 3 s of audio back; muxed in the same run, the frame limit
            # ended the clip before that audio came out: the audio is made first.
            normalised = os.path.join(work, "audio.mka")
            _check(_encode_audio(cfg, segment, normalised, audio_filter), "encoding the audio")
            args += ["-i", normalised]
            audio = ["-map", f"{2 if mark else 1}:a:0", "-c:a", "copy"]
        # The demuxer's time base, not 1/fps: rounding an off-grid timestamp onto the
        # 1/fps grid can put the last frame on `-t` and drop it.
        args += ["-t", f"{cfg.duration:.6f}"]
        height = _scale_height(cfg, info)
        if cfg.filtered:
            args += [
                "-filter_complex",
                filters.video_graph(cfg, info, work, mark, cues),
                "-map",
                "[v]",
            ]
        else:
            args += ["-map", "0:v:0", *(["-vf", f"scale=-2:{height}"] if height else [])]
        args += [*audio, "-fps_mode", "passthrough", "-enc_time_base", "-1"]
        if frames:
            args += ["-frames:v", str(frames)]
        args += _video_codec_args(cfg)
    done = run([*args, *_container_args(cfg), out], cfg.process_timeout, "encoding the clip")
    _check(done, "encoding the clip")
    return done.tail() if _undecodable(done) else ""


def _encode_audio(cfg: Config, segment: str, out: str, audio_filter: str | None) -> Completed:
    """The clip's audio alone, exactly [start, end), in the output's audio codec."""
    enc = [*_base(cfg), *_seek_input(segment, cfg.start), "-t", f"{cfg.duration:.6f}", "-vn"]
    enc += ["-map", "0:a:0", *(["-af", audio_filter] if audio_filter else [])]
    enc += [*_audio_codec_args(cfg), "-fs", str(cfg.max_scratch_bytes), out]
    return run(enc, cfg.process_timeout, "audio encode")


def can_copy(cfg: Config, info: probe.StreamInfo) -> bool:
    """Whether the segment's codecs fit the output container unchanged."""
    if cfg.output_format not in _COPYABLE or _scale_height(cfg, info):
        return False
    if cfg.filtered or cfg.loudness:
        return False  # every frame (or the audio) changes: nothing can be copied
    videos, audios = _COPYABLE[cfg.output_format]
    if cfg.output_format == "mp3":
        return info.audio_codec in audios
    video_ok = info.video_codec in videos
    audio_ok = info.audio_codec is None or info.audio_codec in audios
    return video_ok and audio_ok


def stream_copy(cfg: Config, segment: str, out: str) -> None:
    """Keyframe-aligned copy of [start, end)."""
    args = _base(cfg) + _seek_input(segment, cfg.start) + ["-t", f"{cfg.duration:.6f}"]
    if cfg.output_format == "mp3":
        args += ["-vn", "-map", "0:a:0"]
    else:
        args += ["-map", "0:v:0", "-map", "0:a:0?"]
    done = run([*args, "-c", "copy", *_container_args(cfg), out], cfg.process_timeout, "copy")
    _check(done, "copying the clip")


def _h264_profile(info: probe.StreamInfo) -> list[str]:
    profile = (info.profile or "").lower()
    for name in ("baseline", "main", "high"):
        if name in profile and "10" not in profile and "4:4" not in profile:
            return ["-profile:v", name]
    return []


def smart_cut(
    cfg: Config,
    info: probe.StreamInfo,
    packets: probe.VideoPackets,
    segment: str,
    out: str,
    audio_filter: str | None = None,
) -> bool:
    """Re-encode only the partial GOPs at both ends; False when the clip has no whole GOP."""
    first = packets.first_keyframe_in(cfg.start - _EPS, cfg.end)
    last = max((k for k in packets.keyframes if first is not None and first <= k < cfg.end),
               default=None)  # fmt: skip
    if first is not None and any(abs(k - cfg.end) <= _EPS for k in packets.keyframes):
        last = cfg.end  # a keyframe at the end closes the last GOP: copied whole, no tail
    if first is None or last is None or last <= first:
        return False
    work = os.path.dirname(out)
    # Head, middle, tail and audio are independent: two at a time, the audio (the longest
    # job: every sample of the clip is encoded) first, then the head, tail and middle.
    audio = os.path.join(work, "audio.m4a")
    audio_job: Future[Completed] | None = None
    if info.audio_codec:
        # The audio is re-encoded exactly for the clip, beside the video parts.
        audio_job = _PARALLEL.submit(_encode_audio, cfg, segment, audio, audio_filter)
    jobs: list[tuple[int, str, float, Future[Completed]]] = []
    plan = [(cfg.start, first, "enc"), (first, last, "copy"), (last, cfg.end, "enc")]
    for index in (0, 2, 1):
        t0, t1, how = plan[index]
        frames = packets.frames_in(t0 - _EPS, t1 - _EPS)
        if frames == 0:
            continue
        part = os.path.join(work, f"part{index}.ts")
        args = [*_base(cfg), *_seek_input(segment, t0), "-map", "0:v:0", "-an"]
        args += ["-frames:v", str(frames)]
        if how == "copy":
            args += ["-c:v", "copy"]
        else:
            args += _video_codec_args(cfg, PART_CRF, PART_PRESET) + _h264_profile(info)
            args += ["-fps_mode", "passthrough", "-x264-params", "keyint=9999"]
        what = f"smart cut part {index}"
        # Scratch bound (a part that hits it fails the frame check: the re-encode follows).
        args += ["-fs", str(cfg.max_scratch_bytes)]
        job = _PARALLEL.submit(run, [*args, "-f", "mpegts", part], cfg.process_timeout, what)
        jobs.append((index, part, t1 - t0, job))
    parts: list[tuple[str, float]] = []
    for index, part, length, job in sorted(jobs, key=lambda item: item[0]):
        done = job.result()
        _check(done, f"smart cut part {index}")
        parts.append((part, length))
    listing = os.path.join(work, "parts.ffconcat")
    with open(listing, "w", encoding="utf-8") as handle:
        handle.write("ffconcat version 1.0\n")
        for part, length in parts:
            handle.write(f"file '{os.path.basename(part)}'\nduration {length:.6f}\n")
    args = [*_base(cfg), "-f", "concat", "-safe", "0", "-i", listing]
    inputs = ["-map", "0:v:0"]
    if audio_job is not None:
        done = audio_job.result()
        _check(done, "encoding the audio")
        args += ["-i", audio]
        inputs += ["-map", "1:a:0"]
    done = run([*args, *inputs, "-c", "copy", *_container_args(cfg), out],
               cfg.process_timeout, "smart cut concat")  # fmt: skip
    _check(done, "joining the smart cut")
    return True


def _paths(cfg: Config, info: probe.StreamInfo) -> list[str]:
    if cfg.mode == "fast" and can_copy(cfg, info):
        return ["copy", "reencode"]
    smart_ok = (
        cfg.mode == "accurate"
        and cfg.output_format == "mp4"
        and info.video_codec == "h264"
        and info.pix_fmt == "yuv420p"
        and not _scale_height(cfg, info)
        and not cfg.filtered
    )
    return ["smart", "reencode"] if smart_ok else ["reencode"]


def cut(
    cfg: Config,
    seg: probe.Segment,
    segment: str,
    work_dir: str,
    image: Image | None = None,
    cues: filters.Cues = (),
    early: EarlyUpload = None,
) -> CutResult:
    """Make the clip file from the downloaded segment and check it; the first path whose
    clip passes the output check wins (`early`: its upload begins during the check)."""
    info = seg.info
    fmt = cfg.output_format
    if fmt == "mp3" and not info.audio_codec:
        raise WorkerError(Reason.UNSUPPORTED_SOURCE, "the source has no audio track for mp3")
    if fmt != "mp3" and not info.video_codec:
        raise WorkerError(
            Reason.UNSUPPORTED_SOURCE,
            f"the source has no video track for {fmt}; use output format mp3",
        )
    win = window(cfg, seg)
    out = os.path.join(work_dir, f"clip.{fmt}")
    paths = _paths(cfg, info)
    audio_filter = None
    if cfg.loudness and win.audio:
        measured = loudness.measure(
            _seek_input(segment, cfg.start), cfg.duration, cfg.loudness, cfg.process_timeout
        )
        audio_filter = loudness.audio_filter(cfg.loudness, measured)
    problem = damaged = ""
    for how in paths:
        try:
            if how == "copy":
                stream_copy(cfg, segment, out)
            elif how == "smart":
                if seg.video is None or not smart_cut(
                    cfg, info, seg.video, segment, out, audio_filter
                ):
                    continue  # no whole GOP inside the clip: nothing to copy
            else:
                frames = win.frames if fmt != "gif" else None
                complaints = reencode(cfg, info, segment, out, frames, audio_filter, image, cues)
                damaged = damaged or complaints
            if os.path.getsize(out) > cfg.max_output_bytes:
                raise WorkerError(
                    Reason.OUTPUT_TOO_LARGE,
                    f"the clip is larger than the limit of {cfg.max_output_bytes} bytes "
                    "(CLIP_MAX_OUTPUT_BYTES); use a shorter clip, a lower maxHeight or mp4",
                )
            expect = expectation(cfg, info, win, how)

            def check(how: str = how, expect: verify.Expect = expect) -> probe.Made:
                # A smart cut's joins (head encode | copied GOPs | tail encode) are where
                # it breaks: decoded whole. A copy or a whole encode: probe.parsed.
                made = verify.check(out, expect, cfg.process_timeout, how == "smart")
                if how == "smart" and made.video_frames != win.frames:
                    raise verify.CheckFailed(f"it has {made.video_frames} frames, not {win.frames}")
                return made

            made, held = checked(out, early, check)
            figures = None
            if audio_filter and cfg.loudness:
                try:
                    figures = loudness.report(out, cfg.loudness, cfg.process_timeout)
                except BaseException:
                    if held is not None:
                        held.abort()
                    raise
            return CutResult(out, how, made, win.truncated, figures, held)
        except WorkerError as exc:
            final = (Reason.TIMEOUT, Reason.TERMINATED, Reason.OUTPUT_TOO_LARGE)
            if exc.reason in final or how == paths[-1]:
                raise
            problem = exc.message
            if exc.reason is Reason.UNSUPPORTED_SOURCE:  # FFmpeg: the data does not decode
                damaged = damaged or problem
        except verify.CheckFailed as exc:
            problem = f"the {how} clip failed its output check: {exc.message}"
            if exc.undecodable:
                damaged = damaged or problem
            if how == paths[-1]:
                if damaged and not exc.undecodable:
                    # A re-encode conceals what it cannot decode (fewer frames, no error):
                    # an earlier path, or its decoder, named the cause.
                    problem = f"the source's data is damaged: {damaged}; then {problem}"
                reason = Reason.UNSUPPORTED_SOURCE if damaged else Reason.INTERNAL_ERROR
                raise WorkerError(reason, f"{problem}; nothing was uploaded") from None
        log.warning("%s; trying the next path", problem)
    raise WorkerError(Reason.INTERNAL_ERROR, f"no path made the clip ({problem})")
