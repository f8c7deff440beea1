"""The sqlstream exception tree, in one place.

::

    SqlStreamError                 base: message, optional Location and hint; exit code 2 or 1
    ├── SqlError                   the user's SQL text is wrong            (exit 2)
    │   ├── SqlSyntaxError         it does not parse
    │   ├── SqlAnalysisError       it parses but names/types do not resolve
    │   │   └── UnknownFunctionError   a function name nobody registered
    │   └── UnsupportedSqlError    valid SQL that sqlstream does not run (yet)
    ├── PlanError                  a query cannot be turned into a streaming plan (exit 2)
    ├── ConnectorError             a connector's options or I/O failed      (exit 2 at CREATE, 1 at run)
    ├── UdfError                   a Python/model function is wrong or failed
    ├── TestSpecError              a pipeline test (test.toml, fixtures, expected files) is malformed
    ├── ExecutionError             a running pipeline failed                 (exit 1)
    │   ├── DataFusionError        DataFusion failed on a batch
    │   └── StateLimitError        its state passed max_state_rows / max_state_bytes
    └── CheckpointError            a checkpoint cannot be resumed: damaged (exit 1) or
        │                          written by another pipeline (exit 2)
        └── FencedCheckpointError  a worker may no longer write a partition's checkpoints
                                   (its lease may have passed to another worker; exit 1)

``exit_code`` is the class's default; an error raised while running rather than at
CREATE (a connector losing its server, a function failing on data) passes
``exit_code=1``.

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
    "UnknownFunctionError",
    "UnsupportedSqlError",
    "PlanError",
    "ConnectorError",
    "UdfError",
    "TestSpecError",
    "ExecutionError",
    "FencedCheckpointError",
    "DataFusionError",
    "StateLimitError",
    "CheckpointError",
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

    exit_code: int = 2

    def __init__(
        self, message: str, *, location: Location | None = None, hint: str | None = None, exit_code: int | None = None
    ):
        super().__init__(message)
        self.message = message
        self.location = location
        self.hint = hint
        self.exit_code = type(self).exit_code if exit_code is None else exit_code

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


class UnknownFunctionError(SqlAnalysisError):
    """A call of a function nobody registered (``function_name``)."""

    def __init__(self, message: str, *, function_name: str, hint: str | None = None):
        super().__init__(message, hint=hint)
        self.function_name = function_name


class UnsupportedSqlError(SqlError):
    """Valid SQL that sqlstream does not execute."""


class PlanError(SqlStreamError):
    """A query cannot be turned into a streaming plan."""


class ConnectorError(SqlStreamError):
    """A connector's options are invalid or its I/O failed."""


class UdfError(SqlStreamError):
    """A Python or model function is invalid or failed; ``option`` names the CREATE
    FUNCTION option at fault, where one is."""

    def __init__(
        self,
        message: str,
        *,
        location: Location | None = None,
        hint: str | None = None,
        exit_code: int | None = None,
        option: str | None = None,
    ):
        super().__init__(message, location=location, hint=hint, exit_code=exit_code)
        self.option = option


class TestSpecError(SqlStreamError):
    """A pipeline test itself is malformed (test.toml, fixtures, expected files)."""

    __test__ = False


class ExecutionError(SqlStreamError):
    """A running pipeline failed."""

    exit_code = 1


class DataFusionError(ExecutionError):
    """DataFusion failed on a batch (e.g. a CAST of a value that does not fit)."""


class StateLimitError(ExecutionError):
    """The pipeline's state passed a limit (``setting``: ``max_state_rows`` or
    ``max_state_bytes``); the run stopped with its sinks flushed."""

    def __init__(self, message: str, *, setting: str, hint: str | None = None):
        super().__init__(message, hint=hint)
        self.setting = setting


class CheckpointError(SqlStreamError):
    """A checkpoint directory cannot be resumed: every checkpoint in it is damaged, its
    files contradict each other, or it was written by a different pipeline (``exit_code``
    2: the SQL changed; the message says what)."""

    exit_code = 1


class FencedCheckpointError(CheckpointError):
    """A checkpoint was not written because the run's fence refused it: a worker that can
    no longer be sure it holds the partition's lease (docs/scale-out.md)."""


def did_you_mean(name: str, candidates: Iterable[str]) -> str | None:
    """A hint naming the closest candidate to a misspelt ``name``, or None."""
    pool = sorted(set(candidates))
    match = difflib.get_close_matches(name.lower(), [c.lower() for c in pool], n=1, cutoff=0.6)
    if not match:
        return None
    original = next(c for c in pool if c.lower() == match[0])
    return f"did you mean '{original}'?"
