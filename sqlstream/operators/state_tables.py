"""Operator state as snapshot tables and back (see :mod:`sqlstream.operators.snapshot`).

A snapshot's tables are flat (name → ``pa.Table``), so state held as lists of
partials or of numpy arrays is spread over several tables with numbered names:
``{name}_{i}_main`` and ``{name}_{i}_set{j}`` for the ``i``-th partial of a list, one
table of equal-length numpy arrays as columns. Names use ``[a-z0-9_]`` only (the
runtime makes file names of them). Lists are read back up to the first missing
number, in order, so a restored list has the same order as the snapshot's.

>>> part = Partial(pa.table({"k": ["a"], "__n": [2]}))
>>> tables = partials_to_tables("open", [part])
>>> sorted(tables)
['open_0_main']
>>> partials_from_tables("open", tables)[0].main.to_pylist()
[{'k': 'a', '__n': 2}]
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import pyarrow as pa

from sqlstream.operators.aggregates import Partial

__all__ = ["partials_to_tables", "partials_from_tables", "arrays_to_table", "table_to_arrays", "numbered"]


def numbered(name: str, tables: Mapping[str, pa.Table]) -> int:
    """How many tables ``{name}_0``, ``{name}_1``, ... (or ``{name}_{i}_main``) there are."""
    count = 0
    while f"{name}_{count}" in tables or f"{name}_{count}_main" in tables:
        count += 1
    return count


def partials_to_tables(name: str, parts: list[Partial]) -> dict[str, pa.Table]:
    """The tables of each partial in ``parts``, numbered in list order."""
    tables = {}
    for i, part in enumerate(parts):
        tables[f"{name}_{i}_main"] = part.main
        for j, table in enumerate(part.sets):
            tables[f"{name}_{i}_set{j}"] = table
    return tables


def partials_from_tables(name: str, tables: Mapping[str, pa.Table]) -> list[Partial]:
    """The partials :func:`partials_to_tables` wrote under ``name``, in order (sizes are
    measured again from the restored tables)."""
    parts = []
    for i in range(numbered(name, tables)):
        sets = []
        while f"{name}_{i}_set{len(sets)}" in tables:
            sets.append(tables[f"{name}_{i}_set{len(sets)}"])
        parts.append(Partial(tables[f"{name}_{i}_main"], tuple(sets)))
    return parts


def arrays_to_table(arrays: Mapping[str, np.ndarray | None]) -> pa.Table:
    """Equal-length numpy arrays as the columns of one table (None arrays left out)."""
    present = {name: values for name, values in arrays.items() if values is not None}
    return pa.table({name: pa.array(values) for name, values in present.items()})


def table_to_arrays(table: pa.Table, dtypes: Mapping[str, type]) -> dict[str, np.ndarray | None]:
    """Writable numpy copies of ``table``'s columns as ``dtypes`` says (None where the
    table has no such column): state arrays are updated in place after a restore."""
    out: dict[str, np.ndarray | None] = {}
    for name, dtype in dtypes.items():
        if name not in table.column_names:
            out[name] = None
            continue
        column = table.column(name)
        values = column.to_numpy() if column.num_chunks else np.zeros(0, dtype=dtype)
        out[name] = np.array(values, dtype=dtype, copy=True)
    return out
