"""EBU R128 loudness: two-pass `loudnorm` of the clip's audio, then a measurement of the
output with `ebur128` (what status reports, not what the filter meant to do).

Pass one measures the clip's window of the segment (audio only: quick). Pass two is the
encode itself, with the measured values and `linear=true`: one gain for the whole clip,
so the dynamics stay as they were (loudnorm falls back to its dynamic mode only when the
true-peak ceiling forbids that gain). Silence is left alone.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass

from clip_worker.options import Loudness
from clip_worker.overlay import option_value
from clip_worker.process import run
from clip_worker.result import Reason, WorkerError

SAMPLE_RATE = 48000  # loudnorm works at 192 kHz; the clip goes back to this
SILENCE_LUFS = -70.0  # below this there is nothing to normalise (the absolute gate)


@dataclass(frozen=True)
class Measured:
    """loudnorm's first-pass figures of the input."""

    integrated: float
    true_peak: float
    lra: float
    threshold: float
    offset: float
    layout: str = "stereo"  # the input's channel layout (loudnorm's output loses it)


def _number(value: object) -> float:
    try:
        number = float(str(value))
    except ValueError:
        return -math.inf
    return number if math.isfinite(number) else -math.inf


_LAYOUT = re.compile(r"Stream #0:\d+.*?: Audio: [^\n]*?, \d+ Hz, ([a-z0-9.() ]+?)(?:,|\n|$)")


def parse_loudnorm(stderr: str) -> Measured | None:
    """The JSON block loudnorm prints at the end of pass one (None when there is none),
    with the channel layout of the input stream FFmpeg printed first."""
    start = stderr.rfind("{")
    end = stderr.rfind("}")
    if start < 0 or end < start:
        return None
    try:
        data = json.loads(stderr[start : end + 1])
    except ValueError:
        return None
    layout = _LAYOUT.search(stderr)
    return Measured(
        _number(data.get("input_i")),
        _number(data.get("input_tp")),
        _number(data.get("input_lra")),
        _number(data.get("input_thresh")),
        _number(data.get("target_offset")),
        layout.group(1).strip() if layout else "stereo",
    )


def _target_lra(measured: Measured) -> float:
    # linear mode needs a loudness-range target at least the input's (FFmpeg 5.1: <= 20).
    lra = measured.lra if math.isfinite(measured.lra) else 0.0
    return min(20.0, max(11.0, math.ceil(lra) + 1.0))


def measure(
    seek_input: list[str], duration: float, target: Loudness, timeout: float
) -> Measured | None:
    """Pass one over the clip's audio; None for silence (nothing to normalise)."""
    args = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "info", *seek_input]
    args += ["-t", f"{duration:.6f}", "-vn", "-map", "0:a:0"]
    args += ["-af", f"loudnorm=I={target.target:g}:TP={target.true_peak:g}:LRA=11:"
             "print_format=json", "-f", "null", "-"]  # fmt: skip
    done = run(args, timeout, "measuring the loudness")
    if done.returncode != 0:
        raise WorkerError(Reason.INTERNAL_ERROR, f"measuring the loudness failed: {done.tail()}")
    measured = parse_loudnorm(done.stderr)
    if measured is None:
        raise WorkerError(Reason.INTERNAL_ERROR, "measuring the loudness gave no figures")
    if measured.integrated <= SILENCE_LUFS or not math.isfinite(measured.threshold):
        return None
    return measured


def audio_filter(target: Loudness, measured: Measured | None) -> str:
    """Pass two's filter (resampled back to 48 kHz, the input's channel layout set again:
    FFmpeg 5.1 cannot negotiate loudnorm's output otherwise); only the resample for
    silence."""
    if measured is None:
        return f"aresample={SAMPLE_RATE}"
    m = measured
    layout = f"aformat=channel_layouts={option_value(m.layout)}"
    return (
        f"loudnorm=I={target.target:g}:TP={target.true_peak:g}:LRA={_target_lra(m):g}"
        f":measured_I={m.integrated:.2f}:measured_TP={m.true_peak:.2f}"
        f":measured_LRA={max(m.lra, 0.0):.2f}:measured_thresh={m.threshold:.2f}"
        f":offset={m.offset:.2f}:linear=true,aresample={SAMPLE_RATE},{layout}"
    )


_SUMMARY_I = re.compile(r"Integrated loudness:\s*I:\s*(-?[\d.]+|-inf)\s*LUFS", re.S)
_SUMMARY_LRA = re.compile(r"Loudness range:\s*LRA:\s*(-?[\d.]+)\s*LU", re.S)
_SUMMARY_TP = re.compile(r"True peak:\s*Peak:\s*(-?[\d.]+|-inf)\s*dBFS", re.S)


def report(path: str, target: Loudness, timeout: float) -> dict[str, float]:
    """Measure the made file with ebur128: the figures status shows."""
    args = ["ffmpeg", "-nostdin", "-hide_banner", "-nostats", "-loglevel", "info", "-i", path,
            "-vn", "-map", "0:a:0", "-af", "ebur128=peak=true", "-f", "null", "-"]  # fmt: skip
    done = run(args, timeout, "measuring the clip's loudness")
    summary = done.stderr[done.stderr.rfind("Summary:") :]
    found = _SUMMARY_I.search(summary)
    if done.returncode != 0 or "Summary:" not in done.stderr or not found:
        raise WorkerError(
            Reason.INTERNAL_ERROR, f"measuring the clip's loudness failed: {done.tail()}"
        )
    result = {"targetLufs": target.target, "integratedLufs": _rounded(found.group(1))}
    lra = _SUMMARY_LRA.search(summary)
    peak = _SUMMARY_TP.search(summary)
    if lra:
        result["rangeLu"] = _rounded(lra.group(1))
    if peak:
        result["truePeakDbtp"] = _rounded(peak.group(1))
    return result


def _rounded(text: str) -> float:
    value = _number(text)
    return round(value, 1) if math.isfinite(value) else -99.0
