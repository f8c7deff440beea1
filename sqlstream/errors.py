"""The sqlstream exception tree, in one place.

::

    SqlStreamError                 base: message, optional Location and hint; exit code 2 or 1
    ├── SqlError                   the user's SQL text is wrong            (exit 2)
    │   ├── SqlSyntaxError         it does not parse
    │   ├── SqlAnalysisError       it parses but names/types do not resolve
    │   └── UnsupportedSqlError    valid SQL that sqlstream does not run (yet)
    ├── PlanError                  a query cannot be turned into a streaming plan (exit 2)
    ├── ConnectorError             a connector's options or I/O failed      (exit 2 at CREATE, 1 at run)
    ├── UdfError                   a Python/model function is wrong or failed
    ├── CheckpointError            state could not be saved or restored     (exit 1)
    └── ExecutionError             a running pipeline failed                 (exit 1)
        └── StateLimitError        its state passed max_state_rows / max_state_bytes

Errors raised by DataFusion, pyarrow or onnxruntime are converted at one boundary
per library and keep the original exception as ``__cause__``.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Iterable

__all__ = [
    "Location",
    "SqlStreamError",
    "SqlError",
    "SqlSyntaxError",
    "SqlAnalysisError",
    "UnsupportedSqlError",
    "PlanError",
    "ConnectorError",
    "UdfError",
    "CheckpointError",
    "ExecutionError",
    "StateLimitError",
    "did_you_mean",
]


@dataclass(frozen=True)
class Location:
    """A place in SQL text: 1-based line and column, and the text's origin name."""

    path: str
    line: int
    col: int
    text: str | None = None  # the whole source text, for the caret excerpt
    length: int = 1

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.col}"

    def excerpt(self) -> str:
        """The offending line with a caret under the position, or '' without text."""
        if not self.text:
            return ""
        lines = self.text.splitlines()
        if not 1 <= self.line <= len(lines):
            return ""
        src = lines[self.line - 1].expandtabs(1)
        pad = " " * (self.col - 1)
        return f"  {src}\n  {pad}{'^' * max(1, min(self.length, len(src) - self.col + 1))}"


class SqlStreamError(Exception):
    """Base class: a message a user can act on, a location and a hint where known."""

    exit_code = 2

    def __init__(self, message: str, *, location: Location | None = None, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.location = location
        self.hint = hint

    def with_location(self, location: Location | None) -> "SqlStreamError":
        if self.location is None and location is not None:
            self.location = location
        return self

    def render(self) -> str:
        """``path:line:col: error: message`` with a caret excerpt and a hint."""
        head = f"{self.location}: error: {self.message}" if self.location else f"error: {self.message}"
        parts = [head]
        if self.location is not None:
            excerpt = self.location.excerpt()
            if excerpt:
                parts.append(excerpt)
        if self.hint:
            parts.append(f"  hint: {self.hint}")
        return "\n".join(parts)

    def __str__(self) -> str:
        return self.render()


class SqlError(SqlStreamError):
    """The SQL text is wrong."""


class SqlSyntaxError(SqlError):
    """The SQL text does not parse."""


class SqlAnalysisError(SqlError):
    """The SQL parses but a name, type or option does not resolve."""


class UnsupportedSqlError(SqlError):
    """Valid SQL that sqlstream does not execute."""


class PlanError(SqlStreamError):
    """A query cannot be turned into a streaming plan."""


class ConnectorError(SqlStreamError):
    """A connector's options are invalid or its I/O failed."""


class UdfError(SqlStreamError):
    """A Python or model function is invalid or failed."""


class CheckpointError(SqlStreamError):
    """State could not be saved or restored."""

    exit_code = 1


class ExecutionError(SqlStreamError):
    """A running pipeline failed."""

    exit_code = 1


class StateLimitError(ExecutionError):
    """The pipeline's state passed a limit (``setting``: ``max_state_rows`` or
    ``max_state_bytes``); the run stopped with its sinks flushed."""

    def __init__(self, message: str, *, setting: str, hint: str | None = None):
        super().__init__(message, hint=hint)
        self.setting = setting


def did_you_mean(name: str, candidates: Iterable[str]) -> str | None:
    """A hint naming the closest candidate to a misspelt ``name``, or None."""
    pool = sorted(set(candidates))
    match = difflib.get_close_matches(name.lower(), [c.lower() for c in pool], n=1, cutoff=0.6)
    if not match:
        return None
    original = next(c for c in pool if c.lower() == match[0])
    return f"did you mean '{original}'?"
