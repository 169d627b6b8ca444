"""Turn the source URL into media URLs FFmpeg can read: yt-dlp, then the duration.

Every URL handed on (yt-dlp's format URLs, every URL inside an HLS playlist) must be
http(s); HLS playlists are fetched, vetted and pinned here (vetting.py), so FFmpeg never
reads a URL nobody checked.
"""

from __future__ import annotations

import logging
import re
import urllib.error
import urllib.request
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit

from clip_worker.config import Config
from clip_worker.netguard import Refused
from clip_worker.result import Reason, WorkerError
from clip_worker.vetting import Pin, check_playlist, guarded_opener, pin_playlists

log = logging.getLogger("clip_worker")

# Sites that throttle FFmpeg's range reads on progressive formats but serve HLS at speed.
_PREFER_HLS_HOSTS = ("youtube.com", "youtu.be", "youtube-nocookie.com")
_SUPPORTED_PROTOCOLS = ("http", "https", "m3u8", "m3u8_native")
_MEDIA_TYPE = re.compile(r"^(video|audio)/|^application/(vnd\.apple\.|x-)?mpegurl", re.I)
_HLS_TYPE = re.compile(r"mpegurl", re.I)
# Headers yt-dlp hands over that FFmpeg must not repeat (it sets its own or cannot use them).
_DROP_HEADERS = {"range", "accept-encoding", "host", "content-length", "connection"}
# The worker's own requests (the HEAD probe, playlists, and FFmpeg on a direct file).
USER_AGENT = "clip-worker"


@dataclass(frozen=True)
class MediaInput:
    """One URL FFmpeg reads, with the request headers the site expects."""

    url: str
    protocol: str
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Source:
    """The resolved source: one input (muxed) or two (video + audio), and its length."""

    inputs: tuple[MediaInput, ...]
    duration: float | None
    title: str | None
    extractor: str
    live: bool = False
    subtitles: dict[str, str] = field(default_factory=dict)  # language -> WebVTT/SRT URL


def _subtitle_urls(info: dict[str, Any]) -> dict[str, str]:
    """The source's own subtitles (then automatic captions), WebVTT preferred over SRT."""
    found: dict[str, str] = {}
    for kind in ("automatic_captions", "subtitles"):  # the uploader's own win
        tracks = info.get(kind)
        if not isinstance(tracks, dict):
            continue
        for language, formats in tracks.items():
            if not isinstance(formats, list):
                continue
            for ext in ("vtt", "srt"):
                urls = [
                    f.get("url") for f in formats if isinstance(f, dict) and f.get("ext") == ext
                ]
                url = next((u for u in urls if isinstance(u, str)), None)
                if url:
                    found[str(language)] = url
                    break
    return found


def _status_error(status: int, url: str) -> WorkerError | None:
    if status in (404, 410):
        return WorkerError(Reason.SOURCE_NOT_FOUND, f"HTTP {status} for {url}: the video is gone")
    if status in (401, 403, 451):
        return WorkerError(
            Reason.SOURCE_FORBIDDEN, f"HTTP {status} for {url}: access to the video is refused"
        )
    return None


def head_probe(url: str, proxy_url: str, timeout: float) -> tuple[str, str]:
    """HEAD the URL through the egress proxy; return (final URL, content type).

    Gone or forbidden sources fail here, before yt-dlp, with a clear reason. Servers
    that do not answer HEAD (405, 501...) are left to yt-dlp.
    """
    request = urllib.request.Request(url, method="HEAD", headers={"User-Agent": USER_AGENT})
    try:
        with guarded_opener(proxy_url).open(request, timeout=timeout) as response:
            return response.geturl(), response.headers.get("Content-Type", "")
    except Refused:
        raise
    except urllib.error.HTTPError as exc:
        if exc.headers.get("X-Clip-Refused"):
            raise Refused(f"the egress proxy refused {url}") from None
        error = _status_error(exc.code, url)
        if error is not None:
            raise error from None
        return url, ""
    except (urllib.error.URLError, OSError, ValueError) as exc:
        log.info("HEAD %s failed (%s); leaving it to yt-dlp", url, exc)
        return url, ""


def format_selector(cfg: Config) -> str:
    """yt-dlp format selector: the user's, or the best at or under the height limit."""
    if cfg.source_format:
        return cfg.source_format
    if cfg.output_format == "mp3":
        return "ba/b"
    if cfg.max_height:
        h = cfg.max_height
        return f"bv*[height<=?{h}]+ba/b[height<=?{h}]/bv*+ba/b"
    return "bv*+ba/b"


def ydl_options(
    cfg: Config, proxy_url: str, direct_media: bool, playlist: bool = False
) -> dict[str, Any]:
    """Options for yt-dlp's extract_info(download=False)."""
    sort: list[str] = []
    if cfg.max_height:
        sort.append(f"res:{cfg.max_height}")
    host = (urlsplit(cfg.source_url).hostname or "").lower()
    if any(host == h or host.endswith("." + h) for h in _PREFER_HLS_HOSTS):
        sort.append("proto:m3u8")
    opts: dict[str, Any] = {
        "quiet": True,
        "no_warnings": True,
        "noprogress": True,
        "noplaylist": True,
        "playlist_items": "1",
        "socket_timeout": cfg.network_timeout,
        "proxy": proxy_url,
        "format": format_selector(cfg),
        "cachedir": False,
        "extractor_retries": 1,
        "logger": _QuietLogger(),
    }
    if sort:
        opts["format_sort"] = sort
    if direct_media or playlist:
        # The URL is a media file or an HLS playlist (HEAD said so): no site extractor
        # applies, and matching it against ~1,900 of them costs about a second.
        opts["force_generic_extractor"] = True
    if direct_media:
        # The generic extractor GETs a file only to read its headers; one byte keeps it
        # from pulling the start of the video for nothing.
        opts["http_headers"] = {"Range": "bytes=0-0"}
    return opts


class _QuietLogger:
    """yt-dlp logger: its chatter goes to debug, its errors are raised to us anyway."""

    def debug(self, msg: str) -> None:
        log.debug("yt-dlp: %s", msg)

    def info(self, msg: str) -> None:
        log.debug("yt-dlp: %s", msg)

    def warning(self, msg: str) -> None:
        log.debug("yt-dlp warning: %s", msg)

    def error(self, msg: str) -> None:
        log.debug("yt-dlp error: %s", msg)


_OTHER_SCHEME = re.compile(r"Unsupported url scheme|No connection adapters were found", re.I)


def _ydl_error(exc: Exception, url: str) -> WorkerError:
    """Map a yt-dlp failure to a contract reason."""
    cause: BaseException | None = exc
    exc_info = getattr(exc, "exc_info", None)
    if exc_info and exc_info[1] is not None:
        cause = exc_info[1]
    for _ in range(6):
        if cause is None:
            break
        status = getattr(cause, "status", None) or getattr(cause, "code", None)
        if isinstance(status, int):
            error = _status_error(status, url)
            if error is not None:
                return error
        name = type(cause).__name__
        if "Timeout" in name or isinstance(cause, TimeoutError):
            return WorkerError(Reason.TIMEOUT, f"timed out resolving {url}: {exc}")
        if name in ("TransportError", "ConnectionError", "ProxyError") or isinstance(
            cause, ConnectionError
        ):
            return WorkerError(Reason.NETWORK_ERROR, f"network error resolving {url}: {exc}")
        cause = cause.__cause__ or cause.__context__
    text = str(exc)
    if _OTHER_SCHEME.search(text):
        # yt-dlp met a non-http(s) URL (a variant, a redirect) and did not open it.
        return Refused(f"yt-dlp: {text[-300:]}")
    if "Unsupported URL" in text or "No video formats" in text or "Requested format" in text:
        return WorkerError(
            Reason.UNSUPPORTED_SOURCE, f"no video found at {url}: {text[-300:]}".strip()
        )
    if "timed out" in text.lower():
        return WorkerError(Reason.TIMEOUT, f"timed out resolving {url}: {text[-300:]}")
    return WorkerError(Reason.UNSUPPORTED_SOURCE, f"cannot resolve {url}: {text[-400:]}")


def _media_inputs(info: dict[str, Any]) -> tuple[MediaInput, ...]:
    formats = info.get("requested_formats") or [info]
    inputs = []
    for fmt in formats:
        url = fmt.get("url")
        protocol = str(fmt.get("protocol") or "https")
        if not url:
            raise WorkerError(Reason.UNSUPPORTED_SOURCE, "yt-dlp found no media URL")
        parts = urlsplit(str(url))
        if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
            raise Refused(f"format {fmt.get('format_id')} has a non-http(s) URL")
        if protocol not in _SUPPORTED_PROTOCOLS:
            raise WorkerError(
                Reason.UNSUPPORTED_SOURCE,
                f"format {fmt.get('format_id')} uses protocol {protocol!r}, which the worker "
                "cannot seek in; choose an http or HLS format (spec.source.format)",
            )
        headers = {
            str(k): str(v)
            for k, v in (fmt.get("http_headers") or {}).items()
            if str(k).lower() not in _DROP_HEADERS
        }
        if fmt.get("cookies"):
            headers["Cookie"] = str(fmt["cookies"])
        inputs.append(MediaInput(url=str(url), protocol=protocol, headers=headers))
    return tuple(inputs)


def extract(
    cfg: Config, url: str, proxy_url: str, direct_media: bool, playlist: bool = False
) -> Source:
    """Run yt-dlp's extractor without downloading."""
    import yt_dlp

    try:
        opts = ydl_options(cfg, proxy_url, direct_media, playlist)
        with yt_dlp.YoutubeDL(opts) as ydl:
            info = ydl.extract_info(url, download=False, force_generic_extractor=direct_media)
    except Exception as exc:
        raise _ydl_error(exc, url) from None
    if not isinstance(info, dict):
        raise WorkerError(Reason.UNSUPPORTED_SOURCE, f"yt-dlp returned nothing for {url}")
    if info.get("_type") == "playlist":
        entries = [e for e in info.get("entries") or [] if e]
        if not entries:
            raise WorkerError(Reason.UNSUPPORTED_SOURCE, f"no video in the playlist at {url}")
        info = entries[0]
    duration = info.get("duration")
    return Source(
        live=bool(info.get("is_live")),
        inputs=_media_inputs(info),
        duration=float(duration) if isinstance(duration, int | float) and duration > 0 else None,
        title=info.get("title"),
        extractor=str(info.get("extractor_key") or info.get("extractor") or "unknown"),
        subtitles=_subtitle_urls(info),
    )


def header_args(media: MediaInput) -> list[str]:
    """FFmpeg input options carrying the site's request headers."""
    args: list[str] = []
    headers = dict(media.headers)
    agent = next((headers.pop(k) for k in list(headers) if k.lower() == "user-agent"), None)
    if agent:
        args += ["-user_agent", agent]
    if headers:
        args += ["-headers", "".join(f"{k}: {v}\r\n" for k, v in headers.items())]
    return args


def direct(url: str, hls: bool = False, duration: float | None = None) -> Source:
    """A media file or HLS media playlist named by its URL (the HEAD said so): FFmpeg reads
    it as it is, with the User-Agent the HEAD was answered with.

    What yt-dlp's generic extractor would return for it (one format, no duration, no
    subtitles), without importing yt-dlp and running it (0.3-0.5 CPU s and a request of
    its own): every site extractor's job is to find such a URL, and here it is given.
    """
    scheme = urlsplit(url).scheme.lower()
    if scheme not in ("http", "https"):  # a redirect the guarded opener followed
        raise Refused("the source redirected to a URL that is not http(s)")
    protocol = "m3u8_native" if hls else scheme
    media = MediaInput(url=url, protocol=protocol, headers={"User-Agent": USER_AGENT})
    return Source(inputs=(media,), duration=duration, title=None, extractor="direct")


def resolve(cfg: Config, proxy_url: str, pin: Pin) -> Source:
    """HEAD probe, yt-dlp extraction, then HLS playlists vetted and pinned (`pin`).

    A direct media file or HLS media playlist (nothing to choose between, and no format
    selector asked for) skips yt-dlp (`direct`). A direct file has no duration; the
    download step's FFmpeg reads it from the index it fetches anyway (a separate ffprobe
    would fetch the index twice).
    """
    final_url, content_type = head_probe(cfg.source_url, proxy_url, cfg.network_timeout)
    media = bool(_MEDIA_TYPE.match(content_type))
    hls = bool(_HLS_TYPE.search(content_type))
    if media and not hls and not cfg.source_format:
        return direct(final_url)
    playlist = check_playlist(final_url, {}, proxy_url, cfg.network_timeout) if hls else None
    if playlist and not playlist.master and not cfg.source_format:
        if playlist.duration is None:  # what yt-dlp calls live: no #EXT-X-ENDLIST
            raise WorkerError(
                Reason.UNSUPPORTED_SOURCE, f"{final_url} is a live stream; clip a VOD"
            )
        source = direct(final_url, hls=True, duration=playlist.duration)
    else:
        source = extract(cfg, final_url, proxy_url, media and not hls, media and hls)
    # Vetting first: a refused URL is reported as such whatever else is wrong.
    inputs = tuple(
        replace(m, url=pin_playlists(m.url, m.headers, proxy_url, pin, cfg.network_timeout))
        if m.protocol.startswith("m3u8")
        else m
        for m in source.inputs
    )
    if source.live:
        raise WorkerError(Reason.UNSUPPORTED_SOURCE, f"{final_url} is a live stream; clip a VOD")
    return replace(source, inputs=inputs)
