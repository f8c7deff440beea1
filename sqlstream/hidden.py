"""Hidden columns and watermark bounds: the names and constants every layer shares.

A hidden column travels with the rows but is never shown to users, written by sinks
or visible to SQL:

* ``__wm``: the watermark in force before the row arrived (int64 µs); a row is late
  for a window whose end is at or below it.
* ``__src_id``: the source message a row came from (a string, e.g. ``'STREAM:42'``),
  used to send one message per row downstream.
* ``__op``: the changelog kind of a row of an updating result (``+I``, ``-U``,
  ``+U``, ``-D``). It is hidden from SQL but shown by result views.

Watermarks are int64 µs since the epoch, bounded by ``MIN_WATERMARK`` (nothing seen
yet) and ``MAX_WATERMARK`` (the input has ended).

>>> is_hidden("__wm"), is_hidden("__op"), is_hidden("price")
(True, False, False)
>>> is_real_watermark(MIN_WATERMARK), is_real_watermark(1_700_000_000_000_000)
(False, True)
"""

from __future__ import annotations

import pyarrow as pa

__all__ = [
    "HIDDEN_PREFIX",
    "WM_COLUMN",
    "OP_COLUMN",
    "SOURCE_ID_COLUMN",
    "MIN_WATERMARK",
    "MAX_WATERMARK",
    "is_hidden",
    "is_real_watermark",
    "visible_schema",
    "drop_hidden",
    "drop_op",
]

#: columns whose names start with this are internal
HIDDEN_PREFIX = "__"
WM_COLUMN = "__wm"
OP_COLUMN = "__op"
SOURCE_ID_COLUMN = "__src_id"

MIN_WATERMARK = -(2**62)
MAX_WATERMARK = 2**62


def is_hidden(name: str) -> bool:
    """True for internal columns; ``__op`` is not hidden (result views show it)."""
    return name.startswith(HIDDEN_PREFIX) and name != OP_COLUMN


def is_real_watermark(wm: int | None) -> bool:
    """True for a watermark that stands for a time (not ``None`` nor one of the bounds)."""
    return wm is not None and MIN_WATERMARK < wm < MAX_WATERMARK


def visible_schema(schema: pa.Schema) -> pa.Schema:
    return pa.schema([f for f in schema if not is_hidden(f.name)])


def drop_hidden(batch: pa.RecordBatch) -> pa.RecordBatch:
    hidden = [i for i, name in enumerate(batch.schema.names) if is_hidden(name)]
    if not hidden:
        return batch
    keep = [i for i in range(batch.num_columns) if i not in hidden]
    return pa.RecordBatch.from_arrays([batch.column(i) for i in keep], schema=pa.schema([batch.schema.field(i) for i in keep]))


def drop_op(schema: pa.Schema) -> pa.Schema:
    """The schema without the changelog column."""
    return pa.schema([f for f in schema if f.name != OP_COLUMN])
