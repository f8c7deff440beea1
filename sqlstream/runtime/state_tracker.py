"""The state a running pipeline holds: measured after every micro-batch, warned
about when it grows large, stopped at ``max_state_rows`` / ``max_state_bytes``.

Each stateful operator reports ``state_size()`` (rows, estimated bytes) from what it
keeps, never by scanning rows, so a check costs a few microseconds per operator.
Limits apply to the pipeline as a whole (all queries of one run share the memory);
messages name the operator that holds the most and the sinks it feeds.

Warnings (once per crossing, re-armed when the state falls below half the level):

* with a limit: at 80% of it;
* without one: at 10M rows or 1 GB, and again each time the state doubles.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from sqlstream.errors import StateLimitError
from sqlstream.operators.base import Operator
from sqlstream.operators.state_size import NO_STATE, StateSize
from sqlstream.runtime.sink import SinkOperator
from sqlstream.sizes import format_bytes, format_count

__all__ = ["StateLimits", "StateHolder", "StateTracker", "DEFAULT_WARN_ROWS", "DEFAULT_WARN_BYTES", "WARN_FRACTION"]

DEFAULT_WARN_ROWS = 10_000_000
DEFAULT_WARN_BYTES = 1_000_000_000
WARN_FRACTION = 0.8


@dataclass(frozen=True)
class StateLimits:
    """``max_state_rows`` / ``max_state_bytes`` (None = no limit), and the first warning
    levels used when there is no limit."""

    max_rows: int | None = None
    max_bytes: int | None = None
    warn_rows: int = DEFAULT_WARN_ROWS
    warn_bytes: int = DEFAULT_WARN_BYTES


@dataclass(frozen=True)
class StateHolder:
    """A stateful operator and the sinks whose queries it is part of."""

    operator: Operator
    sinks: tuple[str, ...]

    @property
    def label(self) -> str:
        """e.g. ``regular_join in the query of sink 'joined'``."""
        if not self.sinks:
            return self.operator.name
        names = ", ".join(f"'{s}'" for s in self.sinks)
        return f"{self.operator.name} in the query of sink{'s' if len(self.sinks) > 1 else ''} {names}"


def describe(size: StateSize, exact: bool = False) -> str:
    """``1.2M rows / 340 MB`` (``exact``: ``1,234,567 rows / 340 MB``)."""
    rows = f"{size.rows:,}" if exact else format_count(size.rows)
    return f"{rows} rows / {format_bytes(size.bytes)}"


class _Levels:
    """Warning levels of one measure (rows or bytes): crossed ones are not warned again
    until the measure falls below half of the last one crossed."""

    def __init__(self, limit: int | None, default: int):
        self.limit = limit
        self.first = int(limit * WARN_FRACTION) if limit is not None else default
        self.crossed = 0  # levels crossed so far

    def level(self, i: int) -> int | None:
        if self.limit is not None:
            return self.first if i == 0 else None
        return self.first << i

    def check(self, value: int) -> int | None:
        """The level just crossed (to warn about), else None."""
        if self.crossed and value < self.level(self.crossed - 1) // 2:
            self.crossed -= 1
        crossed = None
        while (level := self.level(self.crossed)) is not None and value >= level:
            crossed = level
            self.crossed += 1
        return crossed


class StateTracker:
    """Measures ``holders`` after each batch; warns through ``warn``; raises
    :class:`~sqlstream.errors.StateLimitError` at a limit. ``position`` says how far
    the input was read (for the error)."""

    def __init__(self, holders: list[StateHolder], limits: StateLimits, warn: Callable[[str], None],
                 position: Callable[[], str] = lambda: ""):
        self.holders = holders
        self.limits = limits
        self.warn = warn
        self.position = position
        self.current = NO_STATE
        self.peak = NO_STATE  # the largest rows and the largest bytes seen (not necessarily at once)
        self.peaks: dict[int, StateSize] = {}  # the same per operator, by id(operator) (EXPLAIN ANALYZE)
        self._rows = _Levels(limits.max_rows, limits.warn_rows)
        self._bytes = _Levels(limits.max_bytes, limits.warn_bytes)

    @classmethod
    def of(cls, roots: list[Operator], limits: StateLimits, warn: Callable[[str], None],
           position: Callable[[], str] = lambda: "") -> "StateTracker":
        """Every stateful operator downstream of ``roots``, with the sinks it feeds."""
        holders, seen = [], set()
        for root in roots:
            for op in root.walk():
                if id(op) in seen or op.state_hint is None:
                    continue
                seen.add(id(op))
                sinks = tuple(dict.fromkeys(s.sink_name for s in op.walk() if isinstance(s, SinkOperator)))
                holders.append(StateHolder(op, sinks))
        return cls(holders, limits, warn, position)

    def sizes(self) -> list[tuple[StateHolder, StateSize]]:
        """The state of each stateful operator now (SHOW METRICS)."""
        return [(h, h.operator.state_size()) for h in self.holders]

    def check(self) -> StateSize:
        """Measure; warn at a level; raise at a limit. Called after every micro-batch."""
        if not self.holders:
            return NO_STATE
        sizes = self.sizes()
        total = NO_STATE
        for holder, size in sizes:
            total = total + size
            peak = self.peaks.get(id(holder.operator), NO_STATE)
            if size.rows > peak.rows or size.bytes > peak.bytes:
                self.peaks[id(holder.operator)] = StateSize(max(peak.rows, size.rows), max(peak.bytes, size.bytes))
        self.current = total
        self.peak = StateSize(max(self.peak.rows, total.rows), max(self.peak.bytes, total.bytes))
        limits = self.limits
        if limits.max_rows is not None and total.rows > limits.max_rows:
            self._stop(sizes, total, "max_state_rows", f"{limits.max_rows:,} rows")
        if limits.max_bytes is not None and total.bytes > limits.max_bytes:
            self._stop(sizes, total, "max_state_bytes", format_bytes(limits.max_bytes))
        rows_level = self._rows.check(total.rows)
        bytes_level = self._bytes.check(total.bytes)
        if rows_level is not None or bytes_level is not None:
            self.warn(self._warning(sizes, total, rows_level, bytes_level))
        return total

    @staticmethod
    def _largest(sizes: list[tuple[StateHolder, StateSize]]) -> tuple[StateHolder, StateSize]:
        return max(sizes, key=lambda pair: (pair[1].bytes, pair[1].rows))

    def _hint(self, holder: StateHolder, setting: str | None) -> str:
        raise_it = (f"raise the limit (SET {setting} = ...)" if setting
                    else "set max_state_rows / max_state_bytes to stop the run at a limit instead")
        return f"{holder.operator.state_hint}; or {raise_it}"

    def _warning(self, sizes, total: StateSize, rows_level: int | None, bytes_level: int | None) -> str:
        holder, size = self._largest(sizes)
        passed = " and ".join(
            text for text in (
                f"{rows_level:,} rows" if rows_level is not None else None,
                format_bytes(bytes_level) if bytes_level is not None else None,
            ) if text
        )
        of_limit = ""
        if self.limits.max_rows is not None or self.limits.max_bytes is not None:
            of_limit = f" ({WARN_FRACTION:.0%} of the limit)"
        setting = ("max_state_rows" if rows_level is not None else "max_state_bytes") if of_limit else None
        return (f"warning: pipeline state passed {passed}{of_limit}: {describe(total, True)} held, "
                f"most by {holder.label} ({describe(size, True)})\n  hint: {self._hint(holder, setting)}")

    def _stop(self, sizes, total: StateSize, setting: str, limit: str) -> None:
        holder, size = self._largest(sizes)
        read = self.position()
        message = (f"pipeline state passed {setting} = {limit}: {describe(total, True)} held, most by "
                   f"{holder.label} ({describe(size, True)}); the run stopped"
                   + (f" after reading {read}" if read else "")
                   + "; input after that point was not processed (results produced before it were written)")
        raise StateLimitError(message, setting=setting, hint=self._hint(holder, setting))
