"""What an operator's state looks like in a checkpoint.

Between two driver steps the whole operator graph is quiescent, so each operator can
describe its state on its own: a few JSON values (watermarks, counters) and Arrow
tables (open windows, partial aggregates, join rows). The runtime writes the tables as
Arrow IPC files and the values into the checkpoint's offsets file
(:mod:`sqlstream.runtime.checkpoints`); restoring hands both back to a freshly built
operator of the same plan. Tables keep their key columns, so a snapshot can be split
by key range or partition when state moves to another worker.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

__all__ = ["OperatorSnapshot"]


@dataclass
class OperatorSnapshot:
    """One operator's state. ``kind`` and ``version`` say which layout the values and
    tables follow (a checkpoint written by another layout is refused, not misread)."""

    kind: str
    version: int
    values: dict[str, Any] = field(default_factory=dict)  # JSON-able: ints, floats, strings, lists, dicts
    tables: dict[str, pa.Table] = field(default_factory=dict)

    @property
    def rows(self) -> int:
        return sum(t.num_rows for t in self.tables.values())
