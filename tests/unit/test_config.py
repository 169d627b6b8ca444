import pytest

from clip_operator.config import ConfigError, load_config
from clip_operator.models import MAX_URL_EXPIRES_SECONDS


def test_defaults_are_valid() -> None:
    config = load_config({})
    assert config.in_flight_limit == 10 and config.namespaces == []


def test_lists_and_numbers_are_parsed() -> None:
    config = load_config(
        {
            "CLIP_OPERATOR_NAMESPACES": "a, b",
            "CLIP_OPERATOR_IN_FLIGHT_LIMIT": "3",
            "CLIP_OPERATOR_ALLOW_PRIVATE_NETWORKS": "127.0.0.0/8,10.0.0.0/8",
            "UNRELATED": "x",
        }
    )
    assert config.namespaces == ["a", "b"] and config.in_flight_limit == 3
    assert config.allow_private_networks == ["127.0.0.0/8", "10.0.0.0/8"]


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"CLIP_OPERATOR_IN_FLIGHT_LIMIT": "many"},
            "CLIP_OPERATOR_IN_FLIGHT_LIMIT='many': Input should be a valid integer",
        ),
        ({"CLIP_OPERATOR_IN_FLIGHT_LIMIT": "-1"}, "greater than or equal to 0"),
        (
            {"CLIP_OPERATOR_DEFAULT_URL_EXPIRES_SECONDS": "700000"},
            "CLIP_OPERATOR_DEFAULT_URL_EXPIRES_SECONDS='700000'",
        ),
        ({"CLIP_OPERATOR_ALLOW_PRIVATE_NETWORKS": "10.0.0.0/33"}, "'10.0.0.0/33' is not a CIDR"),
        ({"CLIP_OPERATOR_JOB_MEMORY_LIMIT": "1 GB"}, "CLIP_OPERATOR_JOB_MEMORY_LIMIT='1 GB'"),
        ({"CLIP_OPERATOR_JOB_IMAGE_PULL_POLICY": "Sometimes"}, "JOB_IMAGE_PULL_POLICY"),
        (
            {"CLIP_OPERATOR_INFLIGHT_LIMIT": "3"},
            "CLIP_OPERATOR_INFLIGHT_LIMIT is not a clip-operator setting",
        ),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(env)
    assert message in str(info.value)


def test_url_expiry_is_clamped_to_seven_days() -> None:
    config = load_config({})
    assert config.effective_url_expiry(None) == 3600
    assert config.effective_url_expiry(10**9) == MAX_URL_EXPIRES_SECONDS
