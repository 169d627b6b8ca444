"""Entry point: resolve, download the segment, cut, upload, report (job-image/README.md)."""

from __future__ import annotations

import logging
import os
import posixpath
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

from clip_worker import config, probe, process, subtitles, thumbnail, verify, watermark
from clip_worker.cut import CONTENT_TYPES, CutResult, cut
from clip_worker.fetch import ContainerMismatch, download, upstream_failure
from clip_worker.options import Subtitles
from clip_worker.presigned import EarlyUpload, HeldPut, checked
from clip_worker.progress import Reporter
from clip_worker.proxy import EgressProxy
from clip_worker.resolve import Source, resolve
from clip_worker.result import (
    Reason,
    WorkerError,
    failure_json,
    scrub,
    success_json,
    write_termination_log,
)
from clip_worker.upload import content_disposition, make_client, put_result, upload

log = logging.getLogger("clip_worker")
# Imports boto3 and builds the S3 client while FFmpeg downloads.
_BACKGROUND = ThreadPoolExecutor(max_workers=1, thread_name_prefix="s3-client")


class _Clock:
    """Per-phase wall time."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.mark = self.started
        self.phases: dict[str, float] = {}

    def lap(self, name: str) -> float:
        now = time.monotonic()
        self.phases[name] = round(now - self.mark, 3)
        self.mark = now
        return self.phases[name]

    def total(self) -> float:
        return round(time.monotonic() - self.started, 3)


def _refused(proxy: EgressProxy) -> None:
    if proxy.log.refusals:
        raise WorkerError(Reason.FORBIDDEN_ADDRESS, proxy.log.refusals[0])


def _check_start(cfg: config.Config, duration: float | None) -> None:
    if duration is not None and cfg.start >= duration:
        raise WorkerError(
            Reason.START_BEYOND_END,
            f"start {cfg.start:g} s is at or after the end of the video ({duration:.3f} s); "
            "pick a start inside the video",
        )


def _filename(cfg: config.Config) -> str:
    name = cfg.output_filename or posixpath.basename(cfg.s3_key) or "clip"
    if not name.lower().endswith("." + cfg.output_format):
        name += "." + cfg.output_format
    return name


def _check_size(cfg: config.Config, path: str) -> int:
    size = os.path.getsize(path)
    if size > cfg.max_output_bytes:
        raise WorkerError(
            Reason.OUTPUT_TOO_LARGE,
            f"the clip is larger than the limit of {cfg.max_output_bytes} bytes "
            "(CLIP_MAX_OUTPUT_BYTES); use a shorter clip, a lower maxHeight or mp4",
        )
    return size


def _early_upload(cfg: config.Config) -> EarlyUpload:
    """Presigned uploads begin while the clip is checked (presigned.HeldPut)."""
    if not cfg.presigned:
        return None
    content_type = CONTENT_TYPES[cfg.output_format]
    disposition = content_disposition(_filename(cfg))
    return lambda path: HeldPut(cfg, path, content_type, disposition)


def _fast_mp4(
    cfg: config.Config, source: Source, proxy: EgressProxy, work: str
) -> tuple[CutResult | None, float | None]:
    """Fast MP4 needs no second pass: the stream copy FFmpeg makes while downloading is the
    clip, when it passes the output check. Returns (clip or None, source duration)."""
    clip = os.path.join(work, "clip.mp4")
    try:
        duration = download(cfg, source, proxy, clip, final_mp4=True).duration
    except ContainerMismatch as exc:
        log.info("the source codecs do not fit MP4 as they are (%s); using the segment", exc)
        return None, None
    if duration is not None and cfg.start >= duration:
        return None, duration
    _check_size(cfg, clip)
    end = min(cfg.end, duration) if duration else cfg.end

    def check() -> probe.Made:
        made = probe.parsed(clip, cfg.process_timeout)
        frame = 1 / (made.info.frame_rate or 25.0)
        tail = verify.COPY_TAIL_FRAMES
        verify.compare(made, verify.Expect("mp4", end - cfg.start, frame, tail_frames=tail))
        return made

    try:
        made, held = checked(clip, _early_upload(cfg), check)
    except verify.CheckFailed as exc:
        log.warning("the fast copy failed its output check (%s); using the segment", exc)
        os.unlink(clip)
        return None, duration
    return CutResult(clip, "copy", made, end < cfg.end, held=held), duration


def _segment(cfg: config.Config, path: str, duration: float | None) -> probe.Segment:
    """Probe the downloaded segment; a segment without data means the file ends early."""
    try:
        return probe.segment(path, cfg.process_timeout)
    except WorkerError:
        index = f" although its index says it lasts {duration:.3f} s" if duration else ""
        raise WorkerError(
            Reason.START_BEYOND_END,
            f"the source has no media data at {cfg.start:g} s{index}; the file ends earlier "
            "(truncated?): pick an earlier start",
        ) from None


def _subtitle_url(wanted: Subtitles, source: Source) -> str:
    """The subtitle file: the URL given, or the source's own track in the language."""
    if wanted.url:
        return wanted.url
    tracks = source.subtitles
    language = wanted.language or ""
    match = tracks.get(language) or next(
        (url for lang, url in tracks.items() if lang.lower().split("-")[0] == language.lower()),
        None,
    )
    if not match:
        have = ", ".join(sorted(tracks)[:20]) or "none"
        raise WorkerError(
            Reason.INVALID_INPUT,
            f"the source has no subtitles in {language!r} (it has: {have}); pick one of "
            "those or give a WebVTT/SRT URL",
        )
    return match


def run_clip(cfg: config.Config, work: str, progress: Reporter | None = None) -> dict[str, Any]:
    """Do the whole job in `work`; return the success result object."""
    progress = progress or Reporter(None)
    progress.phase("Resolving")
    clock = _Clock()
    with EgressProxy(cfg.allow_private_networks, cfg.network_timeout, cfg.allow_ports) as proxy:
        try:
            source = resolve(cfg, proxy.url, proxy.pin)
        except WorkerError as exc:
            _refused(proxy)
            if exc.reason is Reason.UNSUPPORTED_SOURCE and proxy.log.upstream_errors:
                # yt-dlp saw a stalled or reset source as unreadable: it is transient.
                raise upstream_failure(proxy.log.upstream_errors[-1]) from None
            raise
        _refused(proxy)
        log.info(
            "resolved %s via %s: %d input(s), duration %s (%.2f s)",
            cfg.source_url, source.extractor, len(source.inputs),
            f"{source.duration:.3f} s" if source.duration else "unknown", clock.lap("resolve"),
        )  # fmt: skip
        _check_start(cfg, source.duration)
        progress.phase("Downloading")
        image = None
        if cfg.watermark:  # through the same egress guard as the source, before the download
            try:
                image = watermark.fetch(cfg.watermark, proxy.url, cfg.network_timeout, work)
            finally:
                _refused(proxy)
        cues: list[subtitles.Cue] = []
        if cfg.subtitles:
            try:
                track = _subtitle_url(cfg.subtitles, source)
                cues = subtitles.fetch(track, proxy.url, cfg.network_timeout)
            finally:
                _refused(proxy)
            cues = subtitles.in_clip(cues, cfg.start, cfg.end)
        # Not earlier: importing boto3 would compete with yt-dlp for the GIL.
        s3_client = _BACKGROUND.submit(make_client, cfg)
        made: CutResult | None = None
        duration: float | None = None
        plain = not (cfg.max_height or cfg.filtered or cfg.loudness)
        if cfg.mode == "fast" and cfg.output_format == "mp4" and plain:
            made, duration = _fast_mp4(cfg, source, proxy, work)
            _check_start(cfg, duration or source.duration)
        path = os.path.join(work, "segment.mkv")
        shift = 0.0
        if made is None:
            fetched_info = download(cfg, source, proxy, path)
            duration = fetched_info.duration or duration or source.duration
            shift = fetched_info.shift
            _check_start(cfg, duration)
        fetched = proxy.bytes_received()
        log.info("downloaded: %d bytes fetched (%.2f s)", fetched, clock.lap("download"))
    progress.phase("Encoding")
    if made is None:
        # The segment's own timeline (see fetch.Fetched.shift).
        on_segment = replace(cfg, start=cfg.start + shift, end=cfg.end + shift)
        segment = _segment(cfg, path, duration)
        made = cut(on_segment, segment, path, work, image, cues, _early_upload(cfg))
    try:
        return _finish(cfg, made, work, clock, progress, s3_client, fetched)
    finally:
        if made.held is not None:
            made.held.abort()  # a no-op once finished: a failure after the check stores nothing


def _finish(
    cfg: config.Config,
    made: CutResult,
    work: str,
    clock: _Clock,
    progress: Reporter,
    s3_client: Any,
    fetched: int,
) -> dict[str, Any]:
    """Thumbnail, upload (completing the one begun during the check) and the result."""
    size = _check_size(cfg, made.path)
    out = made.made.info
    log.info("cut %s: %d bytes, %s, %.3f s%s (%.2f s)", made.cut_path, size, cfg.output_format,
             out.duration or 0, ", truncated" if made.truncated else "",
             clock.lap("encode"))  # fmt: skip
    still = None
    if cfg.thumbnail:
        still = thumbnail.make(cfg, cfg.thumbnail, made.path, work)
        clock.phases["encode"] += clock.lap("thumbnail")
    content_type = CONTENT_TYPES[cfg.output_format]
    progress.phase("Uploading")
    try:
        client = s3_client.result()
    except Exception:
        client = None  # upload() makes it again and reports the error with its reason
    upload(cfg, made.path, content_type, _filename(cfg), client, made.held)
    if cfg.thumbnail and still:
        thumbnail.upload(cfg, cfg.thumbnail, still[0], client)
    log.info("uploaded s3://%s/%s (%.2f s)", cfg.s3_bucket, cfg.s3_key, clock.lap("upload"))
    result: dict[str, Any] = {
        "bucket": cfg.s3_bucket,
        "key": cfg.s3_key,
        "sizeBytes": size,
        "durationSeconds": round(out.duration or cfg.duration, 3),
    }
    if made.truncated:
        # The source ended before `end`: the clip ends there, durationSeconds says where.
        result["truncated"] = True
    if made.loudness:
        result["loudness"] = made.loudness
    if cfg.thumbnail and still:
        path, width, height = still
        result["thumbnail"] = thumbnail.result(cfg.thumbnail, width, height, os.path.getsize(path))
    if cfg.output_format != "mp3" and out.width and out.height:
        result["width"] = out.width
        result["height"] = out.height
    result.update(
        contentType=content_type,
        cutPath=made.cut_path,
        bytesFetched=fetched,
        timings={
            "resolveSeconds": clock.phases["resolve"],
            "downloadSeconds": clock.phases["download"],
            "encodeSeconds": clock.phases["encode"],
            "uploadSeconds": clock.phases["upload"],
            "totalSeconds": clock.total(),
        },
    )
    return result


def _work_dir(cfg: config.Config) -> str:
    try:
        os.makedirs(cfg.work_dir, exist_ok=True)
        return tempfile.mkdtemp(prefix="clip-", dir=cfg.work_dir)
    except OSError as exc:
        raise WorkerError(
            Reason.INTERNAL_ERROR, f"scratch directory {cfg.work_dir!r} is not writable: {exc}"
        ) from None


def _on_sigterm(signum: int, frame: object) -> None:
    """Stop every FFmpeg child now; the raised error unwinds to main(), which reports it
    and removes the scratch files (in the image the worker is PID 1: without this handler
    the kernel would ignore SIGTERM until the grace period ends in SIGKILL)."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    stopped = process.stop_all()
    raise WorkerError(
        Reason.TERMINATED,
        f"stopped by SIGTERM before the clip was finished (the Pod was deleted, evicted or "
        f"hit its deadline); {stopped} FFmpeg process(es) stopped",
    )


def main(argv: list[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    """Run one clip job from CLIP_* environment variables; return the exit code."""
    environ = os.environ if env is None else env
    args = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in args):
        from clip_worker.usage import USAGE

        print(USAGE, end="")
        return 0
    if args:
        print(
            f"clip-worker: takes no arguments (got {' '.join(args)}); see --help", file=sys.stderr
        )
        return 2
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.DEBUG if environ.get("CLIP_DEBUG") else logging.INFO,
        format="clip-worker %(levelname)s %(message)s",
    )
    termination_log = environ.get("CLIP_TERMINATION_LOG", "").strip() or "/dev/termination-log"
    work: str | None = None
    if env is None:
        signal.signal(signal.SIGTERM, _on_sigterm)
    progress = Reporter(None)
    try:
        cfg = config.load(environ)
        work = _work_dir(cfg)
        progress = Reporter.from_env(environ, cfg.network_timeout).start()
        result = run_clip(cfg, work, progress)
        text = success_json(result)
        put_result(cfg, text)
        write_termination_log(termination_log, text)
        print(text, flush=True)
        return 0
    except WorkerError as exc:
        message = scrub(exc.message, work)
        log.error("%s: %s", exc.reason.value, message)
        write_termination_log(termination_log, failure_json(exc.reason, message))
        return exc.exit_code
    except Exception as exc:
        # An unexpected bug: one concise line; the traceback only with CLIP_DEBUG.
        log.error("InternalError: %s: %s", type(exc).__name__, exc, exc_info=bool(
            environ.get("CLIP_DEBUG")))  # fmt: skip
        message = scrub(f"unexpected {type(exc).__name__}: {exc}", work)
        write_termination_log(termination_log, failure_json(Reason.INTERNAL_ERROR, message))
        return 1
    finally:
        progress.stop()
        if work:
            shutil.rmtree(work, ignore_errors=True)
