"""The download step: FFmpeg input seeking copies just the clip's packets to scratch.

`-ss` before `-i` makes FFmpeg seek in the source (HTTP range requests for a file,
only the covering segments for HLS), starting at the keyframe before `start`. The
packets are copied unchanged into a local Matroska file whose timestamps are those of
the source (`-output_ts_offset start` undoes the shift `-ss` applies), so the cut step
can find `start`, `end` and the keyframes without touching the network again.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from clip_worker.config import Config
from clip_worker.netguard import Refused
from clip_worker.process import Completed, run
from clip_worker.proxy import EgressProxy
from clip_worker.resolve import Source, header_args
from clip_worker.result import Reason, WorkerError

# Read a hair past `end` so the audio packet covering `end` is complete, also when a
# negative start time (AAC priming) moves the segment a few tens of ms (Fetched.shift).
FETCH_MARGIN_SECONDS = 0.1
# Egress: FFmpeg must allow `tcp` (http runs on it), so a URL FFmpeg finds inside remote
# data could reach any host directly. Remote files are read only by demuxers that never
# open another URL (not hls, dash, concat, sdp...); HLS playlists are vetted and pinned
# by the worker first (vetting.py), and a segment may not be another playlist.
PROTOCOLS = "http,https,tls,tcp,httpproxy"
PROTOCOLS_HLS = PROTOCOLS + ",crypto"
FORMATS = "mov,matroska,mpegts,flv,mp3,aac,ac3,eac3,ogg,wav,flac,avi,asf,mpeg"
FORMATS_HLS = "hls,webvtt," + FORMATS
SEGMENT_EXTENSIONS = (
    "3gp,aac,avi,ac3,eac3,flac,mkv,m4a,m4s,m4v,mpg,mov,mp2,mp3,mp4,mpeg,mpegts,ogg,ogv,oga,"
    "ts,vob,vtt,wav,webvtt,cmfv,cmfa,ec3,fmp4,html"
)  # FFmpeg's default without m3u8
# FFmpeg's socket to the local proxy: a small buffer means little is read ahead of what
# FFmpeg consumes, so stopping at `end` (or seeking away) wastes few fetched bytes.
RECV_BUFFER = 16 * 1024
# Stream parameters come from the index (MP4) or the first packets (MPEG-TS): probing
# little keeps FFmpeg from reading the start of the video before seeking to the clip.
PROBE_BYTES = 32 * 1024
PROBE_BYTES_HLS = 256 * 1024
PROBE_US = 500_000
_DURATION = re.compile(r"Duration: (\d+):(\d\d):(\d\d(?:\.\d+)?)")
_START = re.compile(r"Duration: .*?, start: (-?\d+(?:\.\d+)?)")


def fetch_args(
    cfg: Config, source: Source, proxy_url: str, out_path: str, final_mp4: bool = False
) -> list[str]:
    """The FFmpeg argument list of the download step (`final_mp4`: write the fast clip)."""
    args = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "info", "-nostats", "-y"]
    for media in source.inputs:
        args += ["-rw_timeout", str(int(cfg.network_timeout * 1_000_000))]
        hls = media.protocol.startswith("m3u8")
        args += ["-http_proxy", proxy_url]
        args += ["-protocol_whitelist", PROTOCOLS_HLS if hls else PROTOCOLS]
        args += ["-format_whitelist", FORMATS_HLS if hls else FORMATS]
        if hls:
            args += ["-allowed_segment_extensions", SEGMENT_EXTENSIONS]
        args += ["-recv_buffer_size", str(RECV_BUFFER)]
        if media.url.lower().startswith("https:"):
            # FFmpeg does not check certificates unless asked (system trust store).
            args += ["-tls_verify", "1"]
        if media.protocol.startswith("m3u8"):
            args += ["-probesize", str(PROBE_BYTES_HLS), "-analyzeduration", str(PROBE_US)]
        else:
            # Files carry their stream parameters in the index: no need to read packets.
            args += ["-probesize", str(PROBE_BYTES), "-nofind_stream_info"]
        args += header_args(media)
        # No -ss for a clip from the very start: FFmpeg 5.1's `-ss 0` on HLS whose video
        # starts after its audio dropped every video packet. Reading from the start is
        # what -ss 0 means anyway, and the timestamps come out the same.
        seek = ["-ss", f"{cfg.start:.6f}"] if cfg.start > 0 else []
        args += [*seek, "-i", media.url]
    want_video = cfg.output_format != "mp3"
    want_audio = cfg.output_format != "gif"
    if len(source.inputs) == 1:
        maps = (["-map", "0:v:0?"] if want_video else []) + (
            ["-map", "0:a:0?"] if want_audio else []
        )
    else:
        maps = (["-map", "0:v:0?"] if want_video else []) + (
            ["-map", "1:a:0?"] if want_audio else []
        )
    args += [*maps, "-dn", "-sn", "-c", "copy"]
    if final_mp4:
        # Fast MP4: the copy is the clip (keyframe-aligned, lead-in hidden by an edit list).
        args += ["-t", f"{cfg.duration:.6f}", "-fs", str(cfg.max_output_bytes + 1)]
        return [*args, "-movflags", "+faststart", "-f", "mp4", out_path]
    args += ["-t", f"{cfg.duration + FETCH_MARGIN_SECONDS:.6f}"]
    args += ["-fs", str(cfg.max_scratch_bytes)]  # a hostile bitrate cannot fill scratch
    # The source's timestamps exactly: by default the muxer shifts every stream when one
    # starts below zero (AAC priming at -21 ms), and the cut would pick the wrong frames.
    args += ["-avoid_negative_ts", "disabled"]
    args += ["-output_ts_offset", f"{cfg.start:.6f}", "-f", "matroska", out_path]
    return args


# (A demuxer off -format_whitelist is a file the worker does not read: UnsupportedSource.)
_PROTOCOL_REFUSED = re.compile(r"Protocol '[^']+' not on whitelist")
_SERVER_STATUS = re.compile(r"Server returned (\d{3}|4XX|5XX)")


def classify_failure(done: Completed, proxy: EgressProxy) -> WorkerError:
    """Turn a failed download into a contract reason, most specific first."""
    if proxy.log.refusals:
        return WorkerError(Reason.FORBIDDEN_ADDRESS, proxy.log.refusals[0])
    text = done.stderr
    if _PROTOCOL_REFUSED.search(text):  # a protocol the egress policy leaves out
        return Refused(f"FFmpeg: {done.tail()}")
    statuses = [status for _, status in proxy.log.statuses if status >= 400]
    match = _SERVER_STATUS.search(text)
    code = match.group(1) if match else ""
    if statuses and not code.isdigit():
        code = str(statuses[-1])
    tail = done.tail()
    if code in ("404", "410"):
        return WorkerError(Reason.SOURCE_NOT_FOUND, f"the source returned HTTP {code}: {tail}")
    if code in ("401", "403", "451"):
        return WorkerError(Reason.SOURCE_FORBIDDEN, f"the source returned HTTP {code}: {tail}")
    if proxy.log.upstream_errors:
        return upstream_failure(proxy.log.upstream_errors[-1])
    lowered = text.lower()
    if "certificate" in lowered:
        return WorkerError(
            Reason.UNSUPPORTED_SOURCE, f"the source's TLS certificate did not verify: {tail}"
        )
    if "timed out" in lowered or "timeout" in lowered:
        return WorkerError(Reason.TIMEOUT, f"the source stopped answering: {tail}")
    if code.startswith("5") or "connection refused" in lowered or "connection reset" in lowered:
        return WorkerError(Reason.NETWORK_ERROR, f"network error reading the source: {tail}")
    if "invalid data found" in lowered or "does not contain any stream" in lowered:
        return WorkerError(
            Reason.UNSUPPORTED_SOURCE, f"the source is not a video FFmpeg can read: {tail}"
        )
    return WorkerError(Reason.UNSUPPORTED_SOURCE, f"downloading the segment failed: {tail}")


_SEGMENT_SKIPPED = re.compile(r"Failed to open segment|Failed to reload playlist", re.I)


def skipped_segment(done: Completed, proxy: EgressProxy) -> WorkerError | None:
    """FFmpeg's HLS demuxer skips a segment it cannot open and carries on with the next:
    the clip would silently hold later content. That is a failure, never a clip."""
    if not _SEGMENT_SKIPPED.search(done.stderr):
        return None
    codes = [status for _, status in proxy.log.statuses if status >= 400]
    code = codes[-1] if codes else None
    what = (
        f"an HLS segment could not be fetched (HTTP {code})"
        if code
        else ("an HLS segment could not be fetched")
    )
    if code in (404, 410):
        return WorkerError(Reason.SOURCE_NOT_FOUND, f"{what}; the stream has a hole")
    if code in (401, 403, 451):
        return WorkerError(Reason.SOURCE_FORBIDDEN, f"{what}; the stream has a hole")
    return WorkerError(Reason.NETWORK_ERROR, f"{what}: {done.tail()}")


def upstream_failure(message: str) -> WorkerError:
    """A stall or a broken connection the egress proxy saw: transient either way."""
    if "timed out" in message:
        return WorkerError(Reason.TIMEOUT, f"the source stopped sending: {message}")
    return WorkerError(Reason.NETWORK_ERROR, message)


def check_scratch(cfg: Config, path: str) -> None:
    """FFmpeg stops writing the segment at `-fs` and exits 0: a full segment is an error."""
    if os.path.exists(path) and os.path.getsize(path) >= cfg.max_scratch_bytes:
        raise WorkerError(
            Reason.OUTPUT_TOO_LARGE,
            f"the source data for this clip is over the scratch limit of "
            f"{cfg.max_scratch_bytes} bytes (CLIP_MAX_SCRATCH_BYTES); request a shorter clip "
            "or a lower-bitrate format",
        )


def input_duration(stderr: str) -> float | None:
    """The first input's duration as FFmpeg printed it ("Duration: 00:06:00.00")."""
    match = _DURATION.search(stderr)
    if not match:
        return None
    hours, minutes, seconds = match.groups()
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


class ContainerMismatch(Exception):
    """The source codecs cannot be copied into MP4: use the segment path instead."""


_MISMATCH = ("not currently supported in container", "could not write header")
# Matroska/WebM read with -nofind_stream_info lacks the codec parameters MP4 boxes need
# (VP9 gets an empty vpcC and FFmpeg still exits 0): such sources take the segment path.
_NOT_MP4_INPUT = re.compile(r"^Input #0, (matroska|webm)")


class _Watch:
    """Reads FFmpeg's stderr as it comes: stops the download as soon as the index shows
    that `start` is past the end (before any media data is fetched), or that a fast MP4
    cannot be written from this container."""

    def __init__(self, start: float, final_mp4: bool) -> None:
        self.start = start
        self.final_mp4 = final_mp4
        self.duration: float | None = None
        self.start_time: float | None = None

    def __call__(self, line: str) -> object:
        if self.final_mp4 and _NOT_MP4_INPUT.match(line):
            return "container"
        if self.duration is None:
            match = _START.search(line)
            if match:
                self.start_time = float(match.group(1))
            self.duration = input_duration(line)
            if self.duration is not None and self.start >= self.duration:
                return "beyond"
        return None


@dataclass(frozen=True)
class Fetched:
    """What the download learnt about the source."""

    duration: float | None  # from the index (None when unknown)
    start_time: float | None  # FFmpeg's start time of the input (its earliest timestamp)

    @property
    def shift(self) -> float:
        """How far the segment's timestamps lie after the source's presentation times.

        FFmpeg's `-ss` counts from the input's start time. An MP4 whose AAC priming starts
        at -21 ms (or any negative start) still shows its first frame at 0, so the segment
        is that much later than the source: the cut step adds this to `start` and `end`.
        MPEG-TS/HLS start times are positive and are where the timeline starts: no shift.
        """
        return -self.start_time if self.start_time and self.start_time < 0 else 0.0


def download(
    cfg: Config, source: Source, proxy: EgressProxy, out_path: str, final_mp4: bool = False
) -> Fetched:
    """Copy the clip's packets (from the keyframe before start) to `out_path`.

    Returns the source duration FFmpeg read from the index (None when unknown). When that
    duration shows `start` is past the end, FFmpeg is stopped at once and the caller
    reports StartBeyondEnd from the duration.
    """
    watch = _Watch(cfg.start, final_mp4)
    errors_before = len(proxy.log.upstream_errors)
    done = run(
        fetch_args(cfg, source, proxy.url, out_path, final_mp4),
        cfg.process_timeout,
        "downloading the segment",
        proxy.url,
        watch=watch,
    )
    if done.stopped == "beyond" and not proxy.log.refusals:
        return Fetched(watch.duration, watch.start_time)
    if done.stopped == "container":
        raise ContainerMismatch("the source is Matroska/WebM")
    mismatch = any(text in done.stderr.lower() for text in _MISMATCH)
    if final_mp4 and done.returncode != 0 and not proxy.log.refusals and mismatch:
        raise ContainerMismatch(done.tail())
    if done.returncode != 0 or proxy.log.refusals:
        raise classify_failure(done, proxy)
    hole = skipped_segment(done, proxy)
    if hole is not None:
        raise hole
    if not final_mp4:
        check_scratch(cfg, out_path)
    # FFmpeg exits 0 when a stalled or reset source looks like the end of the file.
    if len(proxy.log.upstream_errors) > errors_before:
        raise upstream_failure(proxy.log.upstream_errors[-1])
    return Fetched(watch.duration or input_duration(done.stderr), watch.start_time)
