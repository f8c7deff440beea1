"""What building the operators of one run needs: plan nodes get it in ``build``, the
runtime makes it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import pyarrow as pa

from sqlstream.operators.base import Operator

__all__ = ["BuildContext"]


@dataclass
class BuildContext:
    """What building operators for one run needs."""

    connect_source: Callable[[str, Operator], None]  # source name, first operator
    dead_letter: Callable  # list[DeadLetter] -> None
    clock: object
    on_error: str = "dead_letter"
    settings: dict = field(default_factory=dict)
    operators: list[Operator] = field(default_factory=list)
    load_table: Callable[[str], pa.Table] | None = None  # TABLE name -> its rows (lookup joins)
    #: TABLE name, swap: ``swap(rows)`` is called with the TABLE's rows each time they are
    #: read again while the run goes on (``refresh_interval``); it prepares what the
    #: operator needs and returns a function that switches to it (called between steps)
    watch_table: Callable[[str, Callable[[pa.Table], Callable[[], None]]], None] | None = None

    def register(self, op: Operator) -> Operator:
        op.dead_letter = self.dead_letter
        self.operators.append(op)
        return op
