"""Typed, validated connector options.

A connector declares its options as :class:`OptionSpec` s; :func:`validate_options`
turns the raw ``WITH (...)`` values into a typed dict at CREATE time, and every
unknown, missing or malformed option is an error naming the option, with the list
of valid ones.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping

from sqlstream.durations import parse_duration_us
from sqlstream.errors import ConnectorError, Location, did_you_mean

__all__ = [
    "OptionSpec", "RawOption", "validate_options", "COMMON_SOURCE_OPTIONS", "ON_ERROR_CHOICES", "NULL_VALUES_OPTION",
    "null_spellings",
]

ON_ERROR_CHOICES = ("dead_letter", "fail", "skip")


@dataclass(frozen=True)
class RawOption:
    """An option value as written, with where it was written."""

    value: Any
    location: Location | None = None


@dataclass(frozen=True)
class OptionSpec:
    """One option: ``kind`` is str, int, float, bool, duration (→ µs), or choice."""

    name: str  # may contain '*' wildcards, e.g. 'fields.*.kind'
    kind: str = "str"
    required: bool = False
    default: Any = None
    choices: tuple[str, ...] = ()
    doc: str = ""
    check: Callable[[Any], str | None] | None = None  # returns an error message or None

    def matches(self, key: str) -> bool:
        return fnmatch.fnmatchcase(key, self.name) if "*" in self.name else key == self.name

    def convert(self, raw: Any) -> Any:
        kind = self.kind
        if kind == "str":
            return str(raw)
        if kind == "int":
            if isinstance(raw, bool):
                raise ValueError("expected an integer")
            if isinstance(raw, float) and not raw.is_integer():
                raise ValueError("expected an integer")
            try:
                return int(str(raw).replace("_", "")) if isinstance(raw, str) else int(raw)
            except ValueError:
                raise ValueError("expected an integer") from None
        if kind == "float":
            try:
                return float(raw)
            except ValueError:
                raise ValueError("expected a number") from None
        if kind == "bool":
            if isinstance(raw, bool):
                return raw
            text = str(raw).lower()
            if text in ("true", "1", "yes", "on"):
                return True
            if text in ("false", "0", "no", "off"):
                return False
            raise ValueError("expected true or false")
        if kind == "duration":
            return parse_duration_us(raw)
        if kind == "choice":
            text = str(raw).lower()
            if text not in self.choices:
                raise ValueError(f"expected one of {', '.join(repr(c) for c in self.choices)}")
            return text
        raise AssertionError(f"unknown option kind {kind}")


def _filled_wildcards(key: str, names: list[str]) -> list[str]:
    """The wildcard options with ``key``'s own part in the ``*`` (``fields.a.mn`` →
    ``fields.a.min``, ...), so that a misspelt one gets a suggestion."""
    parts = key.split(".")
    filled = []
    for name in names:
        pattern = name.split(".")
        if "*" in pattern and len(pattern) == len(parts):
            star = pattern.index("*")
            filled.append(".".join(pattern[:star] + [parts[star]] + pattern[star + 1:]))
    return filled


NULL_VALUES_OPTION = OptionSpec(
    "null_values", "str", default="",
    doc="csv: more spellings of NULL, comma-separated ('NA,null'); an empty unquoted field is always NULL",
)


def null_spellings(text: str) -> list[str]:
    """``null_values = 'NA, null'`` → ``['NA', 'null']``."""
    return [part.strip() for part in text.split(",") if part.strip()]


COMMON_SOURCE_OPTIONS = (
    OptionSpec("connector", required=True, doc="connector name"),
    OptionSpec("on_error", "choice", default=None, choices=ON_ERROR_CHOICES, doc="bad records: dead_letter|fail|skip"),
    OptionSpec("idle_timeout", "duration", doc="a quiet source stops holding the watermark back",
               check=lambda us: None if us > 0 else "expected a positive duration, e.g. '10s'"),
    OptionSpec("max_future", "str", default="1h",
               doc="events this far ahead of the wall clock are dead-lettered ('off' disables)",
               check=lambda text: _check_max_future(text)),
    OptionSpec(
        "timestamp_format",
        "choice",
        default="iso",
        choices=("iso", "epoch_s", "epoch_ms", "epoch_us"),
        doc="how TIMESTAMP columns are encoded in the input",
    ),
)


def _check_max_future(text: str) -> str | None:
    if text.lower() in ("off", "none"):
        return None
    try:
        us = parse_duration_us(text)
    except ValueError as error:
        return f"{error}, or 'off'"
    return None if us > 0 else "expected a positive duration, e.g. '1h', or 'off'"


def validate_options(
    connector: str,
    specs: Iterable[OptionSpec],
    raw: Mapping[str, RawOption],
    *,
    where: Location | None = None,
) -> dict[str, Any]:
    """Typed options (defaults filled in) or a ConnectorError at the offending option."""
    specs = list(specs)
    names = [s.name for s in specs]
    out: dict[str, Any] = {}
    for key, option in raw.items():
        spec = next((s for s in specs if s.matches(key)), None)
        if spec is None:
            hint = did_you_mean(key, [n for n in names if "*" not in n] + _filled_wildcards(key, names))
            valid = ", ".join(names)
            raise ConnectorError(
                f"unknown option '{key}' for connector '{connector}'",
                location=option.location or where,
                hint=f"{hint + ' ' if hint else ''}valid options: {valid}",
            )
        try:
            value = spec.convert(option.value)
            problem = spec.check(value) if spec.check else None
        except ValueError as error:
            problem = str(error)
        if problem:
            raise ConnectorError(
                f"option '{key}' = {option.value!r} is invalid for connector '{connector}': {problem}",
                location=option.location or where,
                hint=spec.doc or None,
            )
        out[key] = value
    for spec in specs:
        if "*" in spec.name or spec.name in out:
            continue
        if spec.required:
            raise ConnectorError(
                f"connector '{connector}' needs option '{spec.name}'",
                location=where,
                hint=spec.doc or f"add {spec.name} = '...' to WITH (...)",
            )
        out[spec.name] = spec.default
    return out
