"""hfgrow.units: the one parser for counts and byte sizes, and the one count formatter."""

from __future__ import annotations

import math

import pytest

from hfgrow.errors import HfgrowError
from hfgrow.units import format_bytes, format_count, format_flops, parse_bytes, parse_count


@pytest.mark.parametrize(
    "text, value",
    [("7B", 7_000_000_000), ("1.1b", 1_100_000_000), ("410M", 410_000_000), ("70e9", 70_000_000_000),
     ("2T", 2 * 10**12), ("300B", 300 * 10**9), ("12k", 12_000), ("250K", 250_000), ("1_000", 1000),
     ("1,024", 1024), (" 8 B ", 8 * 10**9), ("1e7", 10**7), (10240, 10240), (2.5e6, 2_500_000)],
)
def test_parse_count(text, value):
    assert parse_count(text) == value


@pytest.mark.parametrize("text", ["7Q", "", "B", "seven", "7BB", "1.2.3B", "nan", "inf", math.nan, math.inf, True])
def test_parse_count_rejects(text):
    with pytest.raises(HfgrowError, match=r"is not a valid model size; .*e\.g\. 7B\.$"):
        parse_count(text, "model size", "7B")


def test_parse_count_minimum():
    assert parse_count("1", minimum=1) == 1
    with pytest.raises(HfgrowError, match="must be at least 1"):
        parse_count("0", "token count", minimum=1)


@pytest.mark.parametrize(
    "text, value",
    [("5GB", 5 * 10**9), ("500MB", 500 * 10**6), ("2GiB", 2 * 2**30), ("1.5KiB", 1536), ("100", 100),
     ("64B", 64), (4096, 4096), ("1tb", 10**12)],
)
def test_parse_bytes(text, value):
    assert parse_bytes(text) == value


@pytest.mark.parametrize("text", ["5 bananas", "GB", "-1GB", "0", 0, "1e9"])
def test_parse_bytes_rejects(text):
    with pytest.raises(HfgrowError, match="shard size"):
        parse_bytes(text, "shard size")


def test_a_count_and_a_size_read_5B_differently():
    # the reason the two parsers stay separate: "5B" is five billion tokens but five bytes
    assert parse_count("5B") == 5 * 10**9
    assert parse_bytes("5B") == 5


def test_formatting():
    assert format_count(1.1e9) == "1.1B"
    assert format_count(1_100_048_384) == "1.1B"
    assert format_count(6.5814e9, 2) == "6.58B"
    assert format_count(2e12, 2) == "2T"
    assert format_count(410e6) == "410M"
    assert format_count(99.96e6) == "100M"
    assert format_flops(3.2e21) == "3.2e21"
    assert format_flops(8.4e22) == "8.4e22"
    assert format_bytes(2.13e9) == "2.13 GB"
    assert format_bytes(999) == "999 B"
