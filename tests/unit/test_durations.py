from __future__ import annotations

import datetime

import pytest

from mpjobs.scheduling.durations import parse_bytes, parse_daily_time, parse_duration


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0, 0.0),
        (5, 5.0),
        (2.5, 2.5),
        ("5", 5.0),
        ("2.5", 2.5),
        ("500ms", 0.5),
        ("30s", 30.0),
        ("5m", 300.0),
        ("2h32m", 9120.0),
        ("1h30m15s", 5415.0),
        ("1.5h", 5400.0),
        ("1d", 86400.0),
        ("2w", 1209600.0),
        ("2h 32m", 9120.0),
        ("  2H32M ", 9120.0),
        ("1h 500ms", 3600.5),
        (datetime.timedelta(minutes=2, seconds=1), 121.0),
    ],
)
def test_parse_duration_accepts(value: object, expected: float) -> None:
    result = parse_duration(value)  # type: ignore[arg-type]
    assert result == pytest.approx(expected)
    assert isinstance(result, float)


@pytest.mark.parametrize(
    "value",
    ["", "   ", "16:00", "abc", "2x", "-5", "5 m x", "h", "1h1", "1.2.3s", True, False, -1,
     -0.5, float("nan"), float("inf"), datetime.timedelta(seconds=-1), None, [1]],
)
def test_parse_duration_rejects(value: object) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(value)  # type: ignore[arg-type]


def test_parse_duration_message_names_what_and_value() -> None:
    with pytest.raises(ValueError) as info:
        parse_duration("2x", what="timeout")
    assert str(info.value) == (
        "invalid timeout '2x': expected seconds or a string such as '30s', '5m', '2h32m'"
    )


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1, 1),
        (4096, 4096),
        ("1024", 1024),
        ("100kb", 100 * 1024),
        ("512M", 512 * 1024**2),
        ("512MB", 512 * 1024**2),
        ("512mib", 512 * 1024**2),
        ("1G", 1024**3),
        ("1.5GB", 1536 * 1024**2),
        ("2GiB", 2 * 1024**3),
        ("1 TB", 1024**4),
    ],
)
def test_parse_bytes_accepts(value: int | str, expected: int) -> None:
    assert parse_bytes(value) == expected


@pytest.mark.parametrize("value", [0, -1, True, "", "0", "abc", "12XB", "1.5.1G", "-1G", 1.5])
def test_parse_bytes_rejects(value: object) -> None:
    with pytest.raises(ValueError, match="invalid memory limit"):
        parse_bytes(value)  # type: ignore[arg-type]


def test_parse_bytes_message_names_value() -> None:
    with pytest.raises(ValueError, match="'12XB'"):
        parse_bytes("12XB")


@pytest.mark.parametrize(
    ("value", "expected"),
    [("16:00", (16, 0)), ("7:05", (7, 5)), ("00:00", (0, 0)), ("23:59", (23, 59))],
)
def test_parse_daily_time(value: str, expected: tuple[int, int]) -> None:
    assert parse_daily_time(value) == expected


@pytest.mark.parametrize("value", ["23:59:", "abc", "30m", "16", "1600", "16:0", ":30", ""])
def test_parse_daily_time_not_a_time(value: str) -> None:
    assert parse_daily_time(value) is None


@pytest.mark.parametrize("value", ["25:00", "12:61", "24:00"])
def test_parse_daily_time_out_of_range(value: str) -> None:
    with pytest.raises(ValueError, match="invalid time of day"):
        parse_daily_time(value)
