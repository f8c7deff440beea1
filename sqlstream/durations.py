"""Durations written by users ('10ms', '2s', '1h', '5 seconds') as integer microseconds."""

from __future__ import annotations

import re

__all__ = ["parse_duration_us", "format_duration_us", "UNIT_US"]

UNIT_US = {
    "us": 1,
    "microsecond": 1,
    "microseconds": 1,
    "ms": 1_000,
    "millisecond": 1_000,
    "milliseconds": 1_000,
    "s": 1_000_000,
    "sec": 1_000_000,
    "second": 1_000_000,
    "seconds": 1_000_000,
    "m": 60_000_000,
    "min": 60_000_000,
    "minute": 60_000_000,
    "minutes": 60_000_000,
    "h": 3_600_000_000,
    "hour": 3_600_000_000,
    "hours": 3_600_000_000,
    "d": 86_400_000_000,
    "day": 86_400_000_000,
    "days": 86_400_000_000,
}

_DURATION = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


def parse_duration_us(text: str | int | float, default_unit: str = "s") -> int:
    """'10ms' → 10000. A bare number uses ``default_unit``. Raises ValueError."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return int(round(text * UNIT_US[default_unit]))
    match = _DURATION.match(str(text))
    if not match:
        raise ValueError(f"'{text}' is not a duration (examples: '500ms', '2s', '1h')")
    number, unit = match.groups()
    unit = (unit or default_unit).lower()
    if unit not in UNIT_US:
        raise ValueError(f"unknown time unit '{unit}' in '{text}' (use us, ms, s, m, h or d)")
    return int(round(float(number) * UNIT_US[unit]))


def format_duration_us(us: int) -> str:
    for unit, size in (("h", 3_600_000_000), ("m", 60_000_000), ("s", 1_000_000), ("ms", 1_000)):
        if us and us % size == 0:
            return f"{us // size}{unit}"
    return f"{us}us"
