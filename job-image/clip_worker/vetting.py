"""Every URL the worker hands on is http(s) through the egress proxy: the guarded urllib
opener, and HLS playlists fetched, vetted and pinned before FFmpeg reads them.

FFmpeg must allow its `tcp` protocol (http runs on it), so an HLS playlist naming
`tcp://10.0.0.5:6379/` (as a variant, a rendition, a segment, a key) would make FFmpeg
connect there directly, past the proxy. The worker therefore fetches each playlist
itself (through the proxy), refuses it when any URL in it is not http(s), rewrites every
URL to an absolute one, and pins the result on the proxy (proxy.py): FFmpeg reads that
exact copy, and nested playlists are pinned the same way.
"""

from __future__ import annotations

import logging
import re
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http.client import HTTPResponse
from typing import IO, Any
from urllib.parse import urljoin, urlsplit

from clip_worker.netguard import Refused
from clip_worker.result import Reason, WorkerError

log = logging.getLogger("clip_worker")

MAX_PLAYLIST_BYTES = 16 * 1024 * 1024
MAX_PLAYLISTS = 32
MAX_DEPTH = 3
PLAYLIST_TYPE = "application/vnd.apple.mpegurl"
_URI_ATTR = re.compile(r'URI="([^"]*)"')
# Tags whose URI names another playlist (pinned too), not a segment, key or init section.
_PLAYLIST_TAGS = ("#EXT-X-MEDIA:", "#EXT-X-I-FRAME-STREAM-INF:", "#EXT-X-RENDITION-REPORT:")
_NESTED_EXT = (".m3u8", ".m3u")
# A colon before any / ? #: FFmpeg reads what precedes it as a protocol (RFC 3986 would
# write a relative path with a colon in its first segment as "./a:b").
_SCHEMEISH = re.compile(r"^[^/?#]*:")

Pin = Callable[[bytes, str, str], str]


class _HttpOnlyRedirects(urllib.request.HTTPRedirectHandler):
    """Follow redirects to http(s) only (urllib would follow ftp:, bypassing the proxy),
    and refuse the others as egress refusals (urllib would raise a plain HTTP 302)."""

    def http_error_302(
        self, req: urllib.request.Request, fp: IO[bytes], code: int, msg: str, headers: Any
    ) -> Any:
        location = headers.get("location") or headers.get("uri") or ""
        if location:
            check_http(urljoin(req.full_url, location), "a redirect target")
        return super().http_error_302(req, fp, code, msg, headers)

    http_error_301 = http_error_303 = http_error_307 = http_error_308 = http_error_302

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: Any,
        newurl: str,
    ) -> urllib.request.Request | None:
        if urlsplit(newurl).scheme.lower() not in ("http", "https"):
            raise Refused(f"redirect from {req.full_url} to a non-http(s) URL")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def guarded_opener(proxy_url: str) -> urllib.request.OpenerDirector:
    """urllib with http(s) through the proxy and nothing else (no ftp:, file:, data:)."""
    opener = urllib.request.OpenerDirector()
    for handler in (
        urllib.request.ProxyHandler({"http": proxy_url, "https": proxy_url}),
        urllib.request.HTTPHandler(),
        urllib.request.HTTPSHandler(),
        urllib.request.HTTPDefaultErrorHandler(),
        _HttpOnlyRedirects(),
        urllib.request.HTTPErrorProcessor(),
    ):
        opener.add_handler(handler)
    return opener


def check_http(url: str, what: str) -> None:
    """Refuse anything but an absolute http(s) URL with a host."""
    if _SCHEMEISH.match(url) and not url.lower().startswith(("http://", "https://")):
        # e.g. "subfile,,start,0,end,9,,:tcp://...": no URL scheme to Python, FFmpeg's protocol.
        raise Refused(f"{what} names a protocol")
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise Refused(f"{what} is not an http(s) URL")


def _fetch(
    url: str, headers: Mapping[str, str], proxy_url: str, timeout: float
) -> tuple[str, bytes]:
    """GET a playlist through the proxy; return (final URL, body)."""
    check_http(url, "an HLS playlist URL")
    request = urllib.request.Request(url, headers={"User-Agent": "clip-worker", **headers})
    try:
        response: HTTPResponse
        with guarded_opener(proxy_url).open(request, timeout=timeout) as response:
            body = response.read(MAX_PLAYLIST_BYTES + 1)
            final = response.geturl()
    except Refused:
        raise
    except urllib.error.HTTPError as exc:
        if exc.headers.get("X-Clip-Refused"):
            raise Refused(f"the proxy refused the playlist {url}") from None
        if exc.code in (404, 410):
            raise WorkerError(
                Reason.SOURCE_NOT_FOUND, f"HTTP {exc.code} for an HLS playlist of the source"
            ) from None
        if exc.code in (401, 403, 451):
            raise WorkerError(
                Reason.SOURCE_FORBIDDEN, f"HTTP {exc.code} for an HLS playlist of the source"
            ) from None
        raise WorkerError(
            Reason.NETWORK_ERROR, f"HTTP {exc.code} for an HLS playlist of the source"
        ) from None
    except TimeoutError:
        raise WorkerError(
            Reason.TIMEOUT, "reading an HLS playlist of the source timed out"
        ) from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        if isinstance(reason, TimeoutError):
            raise WorkerError(
                Reason.TIMEOUT, "reading an HLS playlist of the source timed out"
            ) from None
        raise WorkerError(
            Reason.NETWORK_ERROR, f"reading an HLS playlist of the source failed: {reason}"
        ) from None
    if len(body) > MAX_PLAYLIST_BYTES:
        raise WorkerError(
            Reason.UNSUPPORTED_SOURCE, f"an HLS playlist is over {MAX_PLAYLIST_BYTES} bytes"
        )
    return final, body


def guarded_get(url: str, what: str, proxy_url: str, timeout: float, limit: int) -> bytes:
    """GET `url` through the egress proxy (a media option's file: a watermark, subtitles);
    at most `limit` + 1 bytes are read, so the caller can tell an oversized file."""
    check_http(url, what)
    request = urllib.request.Request(url, headers={"User-Agent": "clip-worker"})
    try:
        response: HTTPResponse
        with guarded_opener(proxy_url).open(request, timeout=timeout) as response:
            body: bytes = response.read(limit + 1)
            return body
    except Refused:
        raise
    except urllib.error.HTTPError as exc:
        if exc.headers.get("X-Clip-Refused"):
            raise Refused(f"the egress proxy refused {what} at {url}") from None
        if exc.code in (404, 410):
            raise WorkerError(Reason.SOURCE_NOT_FOUND, f"HTTP {exc.code} for {what}") from None
        if exc.code in (401, 403, 451):
            raise WorkerError(Reason.SOURCE_FORBIDDEN, f"HTTP {exc.code} for {what}") from None
        raise WorkerError(Reason.NETWORK_ERROR, f"HTTP {exc.code} for {what}") from None
    except TimeoutError:
        raise WorkerError(Reason.TIMEOUT, f"reading {what} timed out") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        if isinstance(reason, TimeoutError):
            raise WorkerError(Reason.TIMEOUT, f"reading {what} timed out") from None
        raise WorkerError(Reason.NETWORK_ERROR, f"reading {what} failed: {reason}") from None


class _Pinner:
    """Vets and pins one source's playlists (depth and count bounded)."""

    def __init__(
        self, headers: Mapping[str, str], proxy_url: str, pin: Pin | None, timeout: float
    ) -> None:
        self.headers = headers
        self.proxy_url = proxy_url
        self.pin = pin  # None: check this playlist's URLs only, fetch nothing it names
        self.timeout = timeout
        self.count = 0
        self.names_playlists = False  # a master: variants or renditions to choose from
        self.text = ""  # the top playlist as fetched

    def playlist(self, url: str, depth: int) -> str:
        self.count += 1
        if depth > MAX_DEPTH or self.count > MAX_PLAYLISTS:
            raise WorkerError(
                Reason.UNSUPPORTED_SOURCE,
                f"the HLS playlists nest deeper than {MAX_DEPTH} or number over {MAX_PLAYLISTS}",
            )
        base, body = _fetch(url, self.headers, self.proxy_url, self.timeout)
        text = body.decode("utf-8-sig", errors="replace")
        if depth == 0:
            self.text = text
        if not text.lstrip().startswith("#EXTM3U"):
            raise WorkerError(Reason.UNSUPPORTED_SOURCE, "the HLS playlist is not an M3U8 file")
        out: list[str] = []
        variant_next = False
        for raw in text.splitlines():
            line = raw.strip()
            if not line:
                continue
            if line.startswith("#"):
                out.append(self._tag(line, base, depth))
                if line.startswith("#EXT-X-STREAM-INF:"):
                    variant_next = True
                continue
            check_http(urljoin(base, line) if not _SCHEMEISH.match(line) else line,
                       "a URL in an HLS playlist")  # fmt: skip
            absolute = urljoin(base, line)
            if variant_next:
                out.append(self._nested(absolute, depth))
                variant_next = False
            else:
                if urlsplit(absolute).path.lower().endswith(_NESTED_EXT):
                    raise Refused("an HLS segment URL names a playlist")
                out.append(absolute)
        if self.pin is None:
            return url
        document = ("\n".join(out) + "\n").encode()
        return self.pin(document, PLAYLIST_TYPE, ".m3u8")

    def _nested(self, url: str, depth: int) -> str:
        self.names_playlists = True
        return url if self.pin is None else self.playlist(url, depth + 1)

    def _tag(self, line: str, base: str, depth: int) -> str:
        """A tag line with its URI attributes absolute (and pinned when they are playlists)."""
        nested = line.startswith(_PLAYLIST_TAGS)

        def attr(match: re.Match[str]) -> str:
            raw = match.group(1)
            check_http(raw if _SCHEMEISH.match(raw) else urljoin(base, raw),
                       "a URI attribute in an HLS playlist")  # fmt: skip
            absolute = urljoin(base, raw)
            if nested:
                absolute = self._nested(absolute, depth)
            return f'URI="{absolute}"'

        return _URI_ATTR.sub(attr, line)


def pin_playlists(
    url: str, headers: Mapping[str, str], proxy_url: str, pin: Pin, timeout: float
) -> str:
    """Fetch the HLS playlist at `url` (and every playlist it names), refuse any URL that
    is not http(s), pin the vetted copies on the proxy; return the URL FFmpeg should read.
    """
    pinner = _Pinner(headers, proxy_url, pin, timeout)
    pinned = pinner.playlist(url, 0)
    log.debug("pinned %d HLS playlist(s) for %s", pinner.count, url.split("?", 1)[0])
    return pinned


@dataclass(frozen=True)
class Playlist:
    """What the source's own playlist says about it."""

    master: bool  # it names other playlists (variants or renditions) to choose from
    duration: float | None  # a media playlist's length (None: no #EXT-X-ENDLIST, live)


def check_playlist(
    url: str, headers: Mapping[str, str], proxy_url: str, timeout: float
) -> Playlist:
    """Refuse an HLS playlist (the source's master) naming any URL that is not http(s),
    before yt-dlp reads it (yt-dlp decodes data: URLs itself)."""
    pinner = _Pinner(headers, proxy_url, None, timeout)
    pinner.playlist(url, 0)
    text = pinner.text
    duration = None
    if "#EXT-X-ENDLIST" in text:  # a VOD (or a finished event): its segments add up
        duration = sum(
            float(line[len("#EXTINF:") :].split(",", 1)[0] or 0)
            for line in text.splitlines()
            if line.startswith("#EXTINF:")
        )
    return Playlist(pinner.names_playlists, duration or None)
