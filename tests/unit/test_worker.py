"""Pure parts of the worker: configuration, address policy, arguments, results, errors."""

from __future__ import annotations

import ipaddress
import json
import socket
import urllib.error
import urllib.request
from typing import Any

import pytest

from clip_worker import config, netguard
from clip_worker.fetch import classify_failure, fetch_args, input_duration
from clip_worker.process import Completed
from clip_worker.proxy import EgressProxy
from clip_worker.resolve import MediaInput, Source, format_selector, header_args, ydl_options
from clip_worker.result import (
    MAX_RESULT_BYTES,
    Reason,
    WorkerError,
    exit_code_for,
    failure_json,
    success_json,
)
from clip_worker.upload import classify, content_disposition

BASE = {
    "CLIP_SOURCE_URL": "https://videos.example.com/v.mp4",
    "CLIP_START": "65.5",
    "CLIP_END": "75",
    "CLIP_S3_BUCKET": "clips",
    "CLIP_S3_KEY": "media/a.mp4",
}


def _cfg(**env: str) -> config.Config:
    return config.load({**BASE, **env})


def _reason(env: dict[str, str]) -> Reason:
    with pytest.raises(WorkerError) as info:
        config.load({**BASE, **env})
    return info.value.reason


def test_config_defaults_and_parsing() -> None:
    cfg = _cfg(CLIP_S3_ENDPOINT="http://s3.local:7070", CLIP_MAX_HEIGHT="720")
    assert (cfg.start, cfg.end, cfg.duration) == (65.5, 75.0, 9.5)
    assert (cfg.output_format, cfg.mode) == ("mp4", "accurate")
    assert cfg.max_clip_seconds == 600 and cfg.max_output_bytes == 2 * 1024**3
    assert cfg.network_timeout == 30 and cfg.max_height == 720
    assert cfg.s3_addressing_style == "path"  # an endpoint means a self-hosted store
    assert _cfg().s3_addressing_style == "auto"
    assert cfg.allow_private_networks == ()


@pytest.mark.parametrize(
    ("env", "reason"),
    [
        ({"CLIP_SOURCE_URL": "file:///etc/passwd"}, Reason.INVALID_INPUT),
        ({"CLIP_SOURCE_URL": "ftp://example.com/v.mp4"}, Reason.INVALID_INPUT),
        ({"CLIP_SOURCE_URL": "http:///nohost"}, Reason.INVALID_INPUT),
        ({"CLIP_START": "1:05"}, Reason.INVALID_INPUT),
        ({"CLIP_START": "-1"}, Reason.INVALID_INPUT),
        ({"CLIP_END": "65.5"}, Reason.INVALID_INPUT),
        ({"CLIP_END": "700", "CLIP_START": "0"}, Reason.CLIP_TOO_LONG),
        ({"CLIP_MAX_CLIP_SECONDS": "5"}, Reason.CLIP_TOO_LONG),
        ({"CLIP_OUTPUT_FORMAT": "avi"}, Reason.INVALID_INPUT),
        ({"CLIP_MODE": "exact"}, Reason.INVALID_INPUT),
        ({"CLIP_MAX_HEIGHT": "0"}, Reason.INVALID_INPUT),
        ({"CLIP_NETWORK_TIMEOUT_SECONDS": "nan"}, Reason.INVALID_INPUT),
        ({"CLIP_ALLOW_PRIVATE_NETWORKS": "10.0.0.0/8,banana"}, Reason.INVALID_INPUT),
        ({"CLIP_S3_BUCKET": ""}, Reason.INVALID_INPUT),
    ],
)
def test_config_rejects(env: dict[str, str], reason: Reason) -> None:
    assert _reason(env) is reason


def test_clip_limit_is_inclusive() -> None:
    assert _cfg(CLIP_START="0", CLIP_END="600").duration == 600
    assert _cfg(CLIP_MAX_CLIP_SECONDS="9.5").duration == 9.5


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("10.1.2.3", "private"),
        ("192.168.0.10", "private"),
        ("172.16.5.4", "private"),
        ("169.254.169.254", "link-local/metadata"),
        ("fe80::1", "link-local"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("100.64.1.1", "shared"),
        ("100.100.100.200", "link-local/metadata"),
        ("fd00:ec2::254", "link-local/metadata"),
        ("::ffff:127.0.0.1", "loopback"),
        ("fc00::1", "private"),
        ("8.8.8.8", None),
        ("2606:4700:4700::1111", None),
    ],
)
def test_forbidden_kind(address: str, kind: str | None) -> None:
    assert netguard.forbidden_kind(ipaddress.ip_address(address)) == kind


def test_allow_list_opens_only_its_networks() -> None:
    allow = config.parse_networks("127.0.0.0/8, 10.0.0.0/16")
    assert netguard.is_allowed(ipaddress.ip_address("127.0.0.5"), allow)
    assert netguard.is_allowed(ipaddress.ip_address("::ffff:127.0.0.5"), allow)
    assert netguard.is_allowed(ipaddress.ip_address("10.0.3.4"), allow)
    assert not netguard.is_allowed(ipaddress.ip_address("10.1.3.4"), allow)
    assert not netguard.is_allowed(ipaddress.ip_address("169.254.169.254"), allow)
    assert netguard.is_allowed(ipaddress.ip_address("1.1.1.1"), ())


def test_resolve_checked_refuses_and_allows_literals() -> None:
    with pytest.raises(WorkerError) as info:
        netguard.resolve_checked("127.0.0.1", 80, (), 5)
    assert info.value.reason is Reason.FORBIDDEN_ADDRESS
    assert info.value.message == netguard.REFUSED  # one message, whatever the cause
    assert isinstance(info.value, netguard.Refused) and "loopback" in info.value.detail
    allow = config.parse_networks("127.0.0.0/8")
    assert netguard.resolve_checked("127.0.0.1", 80, allow, 5) == [
        (ipaddress.ip_address("127.0.0.1"), 80)
    ]
    with pytest.raises(WorkerError) as resolved:
        netguard.resolve_checked("localhost", 80, (), 5)  # names are resolved, then checked
    assert resolved.value.reason is Reason.FORBIDDEN_ADDRESS


def test_proxy_refuses_forbidden_targets_before_connecting() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.settimeout(0.5)
    port = listener.getsockname()[1]
    try:
        with EgressProxy((), timeout=5, ports=(port,)) as proxy:
            opener = urllib.request.build_opener(urllib.request.ProxyHandler({"http": proxy.url}))
            with pytest.raises(urllib.error.HTTPError) as info:
                opener.open(f"http://127.0.0.1:{port}/x", timeout=5)
            assert info.value.code == 403
            assert info.value.headers["X-Clip-Refused"] == "1"
            assert proxy.log.refusals == [netguard.REFUSED]
            assert "loopback" in proxy.log.refusal_details[0]
        with pytest.raises(TimeoutError):
            listener.accept()  # nothing ever connected to the target
    finally:
        listener.close()


def test_exit_codes_follow_the_contract() -> None:
    permanent = {
        Reason.INVALID_INPUT, Reason.UNSUPPORTED_SOURCE, Reason.FORBIDDEN_ADDRESS,
        Reason.CLIP_TOO_LONG, Reason.OUTPUT_TOO_LARGE, Reason.START_BEYOND_END,
        Reason.STORAGE_AUTH_FAILED, Reason.STORAGE_BUCKET_NOT_FOUND,
    }  # fmt: skip
    gone = {Reason.SOURCE_NOT_FOUND, Reason.SOURCE_FORBIDDEN}
    for reason in Reason:
        expected = 2 if reason in permanent else 3 if reason in gone else 1
        assert exit_code_for(reason) == expected, reason


@pytest.mark.parametrize("message", ["x" * 10_000, 'é"\\\n' * 3000, "ü" * 5000])
def test_failure_json_is_truncated_under_4_kib(message: str) -> None:
    text = failure_json(Reason.NETWORK_ERROR, message)
    assert len(text.encode()) <= MAX_RESULT_BYTES < 4096
    data = json.loads(text)
    assert data["reason"] == "NetworkError"
    assert data["message"].endswith("…")
    assert message.startswith(data["message"][:-1])


def test_short_failure_json_is_untouched() -> None:
    assert json.loads(failure_json(Reason.TIMEOUT, "slow")) == {
        "reason": "Timeout",
        "message": "slow",
    }
    assert json.loads(success_json({"a": 1})) == {"a": 1}
    with pytest.raises(ValueError):
        success_json({"a": "x" * 5000})


def _source(*protocols: str) -> Source:
    inputs = tuple(
        MediaInput(f"https://cdn.example.com/{i}", p, {"Referer": "https://example.com/"})
        for i, p in enumerate(protocols)
    )
    return Source(inputs, None, None, "Generic")


def test_fetch_args_seek_before_input_and_keep_source_timestamps() -> None:
    cfg = _cfg()
    args = fetch_args(cfg, _source("https"), "http://127.0.0.1:9999", "/s/seg.mkv")
    i = args.index("-i")
    assert args[args.index("-ss") + 1] == "65.500000" and args.index("-ss") < i
    assert args[args.index("-http_proxy") + 1] == "http://127.0.0.1:9999"
    assert args[args.index("-rw_timeout") + 1] == "30000000"
    assert "file" not in args[args.index("-protocol_whitelist") + 1].split(",")
    assert args.index("-t") > i  # output-side: FFmpeg 5.1 drops input-side -t with copyts
    assert float(args[args.index("-t") + 1]) >= cfg.duration
    assert args[args.index("-output_ts_offset") + 1] == "65.500000"
    assert args[args.index("-c") + 1] == "copy"
    assert args[-1] == "/s/seg.mkv"
    assert "Referer: https://example.com/\r\n" in args


def test_fetch_args_for_separate_video_and_audio() -> None:
    args = fetch_args(_cfg(), _source("m3u8_native", "https"), "http://p", "/o.mkv")
    assert args.count("-i") == 2 and args.count("-ss") == 2
    maps = [args[i + 1] for i, a in enumerate(args) if a == "-map"]
    assert maps == ["0:v:0?", "1:a:0?"]
    mp3 = fetch_args(_cfg(CLIP_OUTPUT_FORMAT="mp3"), _source("https"), "http://p", "/o.mkv")
    assert [mp3[i + 1] for i, a in enumerate(mp3) if a == "-map"] == ["0:a:0?"]


def test_input_duration_from_ffmpeg_banner() -> None:
    text = "Input #0, mov,mp4\n  Duration: 01:02:03.45, start: 0.000000, bitrate: 1 kb/s"
    assert input_duration(text) == pytest.approx(3723.45)
    assert input_duration("  Duration: N/A, start: 0") is None


class _Log:
    def __init__(self, **kw: object) -> None:
        self.refusals: list[str] = list(kw.get("refusals", []))  # type: ignore[call-overload]
        self.upstream_errors: list[str] = list(kw.get("errors", []))  # type: ignore[call-overload]
        self.statuses: list[tuple[str, int]] = list(kw.get("statuses", []))  # type: ignore[call-overload]


class _Proxy:
    def __init__(self, **kw: object) -> None:
        self.log = _Log(**kw)


@pytest.mark.parametrize(
    ("stderr", "proxy", "reason"),
    [
        ("Server returned 404 Not Found", {}, Reason.SOURCE_NOT_FOUND),
        ("Server returned 403 Forbidden", {}, Reason.SOURCE_FORBIDDEN),
        ("Server returned 403 Forbidden", {"refusals": ["10.0.0.1"]}, Reason.FORBIDDEN_ADDRESS),
        ("Server returned 4XX Client Error", {"statuses": [("u", 410)]}, Reason.SOURCE_NOT_FOUND),
        ("Connection timed out", {}, Reason.TIMEOUT),
        ("Server returned 5XX Server Error", {}, Reason.NETWORK_ERROR),
        ("x: Invalid data found when processing input", {}, Reason.UNSUPPORTED_SOURCE),
        ("Server returned 502 Bad Gateway", {"errors": ["refused"]}, Reason.NETWORK_ERROR),
    ],
)
def test_classify_download_failures(stderr: str, proxy: dict[str, object], reason: Reason) -> None:
    done = Completed(1, "", stderr)
    assert classify_failure(done, _Proxy(**proxy)).reason is reason  # type: ignore[arg-type]


def test_format_selection() -> None:
    assert format_selector(_cfg()) == "bv*+ba/b"
    assert format_selector(_cfg(CLIP_OUTPUT_FORMAT="mp3")) == "ba/b"
    assert "height<=?720" in format_selector(_cfg(CLIP_MAX_HEIGHT="720"))
    assert format_selector(_cfg(CLIP_SOURCE_FORMAT="18")) == "18"
    yt = ydl_options(_cfg(CLIP_SOURCE_URL="https://www.youtube.com/watch?v=x"), "http://p", False)
    assert "proto:m3u8" in yt["format_sort"]  # HLS where progressive is throttled
    assert yt["proxy"] == "http://p" and yt["socket_timeout"] == 30
    assert "format_sort" not in ydl_options(_cfg(), "http://p", False)
    direct = ydl_options(_cfg(), "http://p", True)
    assert direct["http_headers"] == {"Range": "bytes=0-0"}
    assert direct["force_generic_extractor"] is True
    assert "force_generic_extractor" not in ydl_options(_cfg(), "http://p", False)
    playlist = ydl_options(_cfg(), "http://p", False, playlist=True)
    assert playlist["force_generic_extractor"] is True and "http_headers" not in playlist


def test_header_args() -> None:
    media = MediaInput("u", "https", {"User-Agent": "UA/1", "Referer": "https://r/"})
    assert header_args(media) == ["-user_agent", "UA/1", "-headers", "Referer: https://r/\r\n"]
    assert header_args(MediaInput("u", "https")) == []


def test_content_disposition_is_readable_and_safe() -> None:
    value = content_disposition('Chorus \u2013 "take" 1.mp4')
    assert value.startswith('attachment; filename="Chorus _take_ 1.mp4"')
    assert "filename*=UTF-8''Chorus%20%E2%80%93%20%22take%22%201.mp4" in value


def _client_error(code: str, status: int) -> Exception:
    from botocore.exceptions import ClientError

    response: Any = {"Error": {"Code": code, "Message": "m"}}
    response["ResponseMetadata"] = {"HTTPStatusCode": status}
    return ClientError(response, "PutObject")


@pytest.mark.parametrize(
    ("code", "status", "reason"),
    [
        ("InvalidAccessKeyId", 403, Reason.STORAGE_AUTH_FAILED),
        ("SignatureDoesNotMatch", 403, Reason.STORAGE_AUTH_FAILED),
        ("NoSuchBucket", 404, Reason.STORAGE_BUCKET_NOT_FOUND),
        ("SlowDown", 503, Reason.STORAGE_UNAVAILABLE),
    ],
)
def test_storage_errors(code: str, status: int, reason: Reason) -> None:
    assert classify(_client_error(code, status), _cfg()).reason is reason
    # boto3's transfer manager wraps the ClientError; the cause is still found.
    try:
        try:
            raise _client_error(code, status)
        except Exception as inner:
            raise RuntimeError("Failed to upload") from inner
    except RuntimeError as outer:
        assert classify(outer, _cfg()).reason is reason


def test_unreachable_storage_is_transient() -> None:
    from botocore.exceptions import EndpointConnectionError

    error = EndpointConnectionError(endpoint_url="http://127.0.0.1:9")
    result = classify(error, _cfg())
    assert result.reason is Reason.STORAGE_UNAVAILABLE and result.exit_code == 1
