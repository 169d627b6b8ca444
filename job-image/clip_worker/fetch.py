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

from clip_worker.config import Config
from clip_worker.netguard import Refused
from clip_worker.process import Completed, run
from clip_worker.proxy import EgressProxy
from clip_worker.resolve import Source, header_args
from clip_worker.result import Reason, WorkerError

# Read a hair past `end` so the audio packet covering `end` is complete.
FETCH_MARGIN_SECONDS = 0.05
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
        args += ["-ss", f"{cfg.start:.6f}", "-i", media.url]
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
        return WorkerError(Reason.NETWORK_ERROR, proxy.log.upstream_errors[-1])
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


def download(
    cfg: Config, source: Source, proxy: EgressProxy, out_path: str, final_mp4: bool = False
) -> float | None:
    """Copy the clip's packets (from the keyframe before start) to `out_path`.

    Returns the source duration FFmpeg read from the index (None when unknown).
    """
    done = run(
        fetch_args(cfg, source, proxy.url, out_path, final_mp4),
        cfg.process_timeout,
        "downloading the segment",
        proxy.url,
    )
    mismatch = any(text in done.stderr.lower() for text in _MISMATCH)
    if final_mp4 and done.returncode != 0 and not proxy.log.refusals and mismatch:
        raise ContainerMismatch(done.tail())
    if done.returncode != 0 or proxy.log.refusals:
        raise classify_failure(done, proxy)
    if not final_mp4:
        check_scratch(cfg, out_path)
    return input_duration(done.stderr)
