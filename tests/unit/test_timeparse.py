import re
from pathlib import Path

import pytest
import yaml

from clip_operator.timeparse import (
    TIMESTAMP_PATTERN,
    TimestampError,
    format_seconds,
    parse_timestamp,
)

GOOD = [
    ("0", 0.0),
    ("65.5", 65.5),
    ("10", 10.0),
    ("0.040", 0.04),
    ("1:05.5", 65.5),
    ("01:05", 65.0),
    ("59:59", 3599.0),
    ("1:00:00", 3600.0),
    ("01:02:03.250", 3723.25),
    ("100:00:00", 360000.0),
]
BAD = [
    "",
    " ",
    "-1",
    "1:60",
    "1:5",
    "1:2:3:4",
    "abc",
    "1,5",
    "1e3",
    "1:05.",
    ".5",
    "1:65:00",
    "12:3",
    "01:02:03.2500000",
    "1234567",
]


@pytest.mark.parametrize(("text", "seconds"), GOOD)
def test_parses_good_timestamps(text: str, seconds: float) -> None:
    assert parse_timestamp(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", BAD)
def test_rejects_bad_timestamps_with_the_grammar_in_the_message(text: str) -> None:
    with pytest.raises(TimestampError, match=r"\[HH:\]MM:SS"):
        parse_timestamp(text)


def test_crd_uses_the_same_pattern() -> None:
    crd = yaml.safe_load(Path("crds/clipjob.yaml").read_text())
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert spec["properties"]["start"]["pattern"] == TIMESTAMP_PATTERN
    assert spec["properties"]["end"]["pattern"] == TIMESTAMP_PATTERN
    # The rules that compare start and end (CEL) parse both with the same pattern.
    timed = [r for r in spec["x-kubernetes-validations"] if "self.start" in r["rule"]]
    assert len(timed) >= 2
    for rule in timed:
        assert rule["rule"].count(TIMESTAMP_PATTERN) == 2
    for text, _ in GOOD:
        assert re.match(TIMESTAMP_PATTERN, text)


@pytest.mark.parametrize(
    ("seconds", "text"), [(65.5, "65.5"), (10.0, "10"), (0.0, "0"), (3723.25, "3723.25")]
)
def test_format_seconds_is_canonical(seconds: float, text: str) -> None:
    assert format_seconds(seconds) == text
