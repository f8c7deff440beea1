"""Sizes written by users ('500MB', '2GB', '10M' rows) and sizes shown to them.

Byte units follow the SI/IEC convention: ``KB``, ``MB``, ``GB``, ``TB`` are powers
of 1000, ``KiB``, ``MiB``, ``GiB``, ``TiB`` powers of 1024; a bare number is bytes.
Row counts take ``k``, ``M`` (million) and ``B``/``G`` (billion) and ``_`` separators.
``'off'`` and ``'none'`` mean no limit (None).

>>> parse_bytes('500MB'), parse_bytes('1.5 GiB'), parse_bytes('off')
(500000000, 1610612736, None)
>>> parse_count('10M'), parse_count('2_500_000')
(10000000, 2500000)
>>> format_bytes(340_000_000), format_count(1_234_567)
('340 MB', '1.2M')
"""

from __future__ import annotations

import re

__all__ = ["parse_bytes", "parse_count", "format_bytes", "format_count", "BYTE_UNITS"]

BYTE_UNITS = {
    "": 1, "b": 1,
    "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
    "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40,
}
_COUNT_UNITS = {"": 1, "k": 10**3, "m": 10**6, "b": 10**9, "g": 10**9}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")
_OFF = ("off", "none")


def _parse(text, units: dict[str, int], what: str, examples: str) -> int | None:
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        number, unit = float(text), ""
    else:
        if str(text).strip().lower() in _OFF:
            return None
        match = _SIZE.match(str(text).replace("_", ""))
        if not match:
            raise ValueError(f"'{text}' is not {what} (examples: {examples}, or 'off')")
        number, unit = float(match.group(1)), match.group(2).lower()
        if unit not in units:
            raise ValueError(f"unknown unit '{match.group(2)}' in '{text}' (examples: {examples})")
    value = int(round(number * units[unit]))
    if value <= 0:
        raise ValueError("must be positive (or 'off' for no limit)")
    return value


def parse_bytes(text: str | int | float) -> int | None:
    """'500MB' → 500000000; 'off' → None. Raises ValueError."""
    return _parse(text, BYTE_UNITS, "a size", "'500MB', '2GB', '1.5GiB'")


def parse_count(text: str | int | float) -> int | None:
    """'10M' → 10000000; 'off' → None. Raises ValueError."""
    return _parse(text, _COUNT_UNITS, "a number of rows", "'1000000', '10M', '500k'")


def format_bytes(n: int) -> str:
    """Bytes in the largest decimal unit that keeps the number at least 1."""
    for unit, size in (("TB", 10**12), ("GB", 10**9), ("MB", 10**6), ("KB", 10**3)):
        if n >= size:
            value = n / size
            return f"{value:.1f} {unit}" if value < 10 else f"{value:.0f} {unit}"
    return f"{n} B"


def format_count(n: int) -> str:
    """Row counts, short: 950, 12.3k, 1.2M, 3.4B."""
    for unit, size in (("B", 10**9), ("M", 10**6), ("k", 10**3)):
        if n >= size:
            value = n / size
            return f"{value:.1f}{unit}" if value < 100 else f"{value:.0f}{unit}"
    return str(n)
