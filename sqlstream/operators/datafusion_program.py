"""The DataFusion boundary: a SQL text planned once, run on every micro-batch.

A :class:`DataFusionProgram` registers each batch as the table ``__input`` and runs
``SELECT ... FROM __input WHERE ...`` on a single-partition DataFusion context
(measured: ~0.75 ms per call at 8k rows, ~7 ms at 1M rows). Its output schema is
known at plan time by planning the same SQL over an empty batch; errors DataFusion
raises are converted here, keeping the original as ``__cause__``. The SQL text comes
from the planner (:mod:`sqlstream.plan.lowering` writes expressions in DataFusion's
dialect).
"""

from __future__ import annotations

import difflib
import re
import threading
from collections.abc import Callable

import pyarrow as pa

from sqlstream.batches import empty_batch, to_batch
from sqlstream.errors import DataFusionError, SqlAnalysisError, UnknownFunctionError
from sqlstream.failure_isolation import isolate_failures
from sqlstream.operators.arrow_program import ARROW_MAX_ROWS, ArrowProgram, NeedsDataFusion
from sqlstream.operators.datafusion_import import SessionConfig, SessionContext

__all__ = ["DataFusionProgram", "normalize_type", "plan_error", "INPUT_TABLE"]

INPUT_TABLE = "__input"


_VIEW_TYPES = {
    pa.string_view(): pa.string(),
    pa.binary_view(): pa.binary(),
}


def normalize_type(t: pa.DataType) -> pa.DataType:
    """Arrow types we hand downstream: no view types (not every kernel takes them)."""
    if t in _VIEW_TYPES:
        return _VIEW_TYPES[t]
    if pa.types.is_large_string(t):
        return pa.string()
    if pa.types.is_list_view(t) or pa.types.is_large_list(t):
        return pa.list_(normalize_type(t.value_type))
    if pa.types.is_struct(t):
        return pa.struct([f.with_type(normalize_type(f.type)) for f in t])
    return t


def _normalize_schema(schema: pa.Schema) -> pa.Schema:
    return pa.schema([f.with_type(normalize_type(f.type)) for f in schema])


def _config() -> SessionConfig:
    # One partition, no repartitioning: a micro-batch is one input batch. No batch
    # coalescing either: with a large target batch size the coalescer preallocates
    # output buffers for it (16 MB per filtered batch here), so every retained output
    # (window state, a collecting sink) pinned that much memory and later calls slowed
    # down 10-60x; without it a filter's output is exactly the rows that pass.
    return (
        SessionConfig()
        .with_target_partitions(1)
        .with_repartition_joins(False)
        .with_repartition_aggregations(False)
        .with_repartition_windows(False)
        .with_batch_size(1 << 20)
        .set("datafusion.execution.coalesce_batches", "false")
    )


_INVALID_FUNCTION = re.compile(r"Invalid function '([^']+)'")


class DataFusionProgram:
    """``sql`` over the table ``__input`` with ``input_schema``; reused for every batch.

    ``arrow``: compiles the same program as Arrow kernels
    (:mod:`sqlstream.operators.arrow_program`), which the planner gives where they compute
    exactly what DataFusion does; they run the batches of up to ``ARROW_MAX_ROWS`` rows
    when their output types are the planned ones."""

    def __init__(self, sql: str, input_schema: pa.Schema, arrow: Callable[[], ArrowProgram | None] | None = None):
        self.sql = sql
        self.input_schema = input_schema
        self._local = threading.local()
        empty = empty_batch(input_schema)
        ctx = self._ctx()
        ctx.register_record_batches(INPUT_TABLE, [[empty]])
        try:
            raw_schema = ctx.sql(sql).schema()
        finally:
            ctx.deregister_table(INPUT_TABLE)
        self.raw_schema = raw_schema
        self.schema = _normalize_schema(raw_schema)
        self._needs_cast = self.schema != raw_schema
        self.arrow: ArrowProgram | None = None
        self._compile_arrow = arrow
        self._arrow_schemas: tuple[pa.Schema, pa.Schema] | None = None  # (input, output) DataFusion gave

    def prepare_arrow(self) -> ArrowProgram | None:
        """The Arrow path, compiled once (by the first batch, not at plan time: its literals
        would be the process's first conversion of Python values to Arrow, which makes
        pyarrow import pandas, 0.3 s that ``sqlstream check`` need not pay)."""
        compile_arrow, self._compile_arrow = self._compile_arrow, None
        if compile_arrow is None:
            return self.arrow
        arrow = compile_arrow()
        if arrow is None or arrow.output_types(self.input_schema) != self.schema.types:
            return None
        self.arrow = arrow
        if all(f.nullable for f in self.input_schema):
            # learn DataFusion's output schema from one row of NULLs (else from the first batch)
            try:
                self.run(pa.RecordBatch.from_arrays([pa.nulls(1, f.type) for f in self.input_schema],
                                                    schema=self.input_schema))
            except DataFusionError:
                self.arrow = None
        return self.arrow

    def _ctx(self) -> SessionContext:
        ctx = getattr(self._local, "ctx", None)
        if ctx is None:
            ctx = SessionContext(_config())
            self._local.ctx = ctx
        return ctx

    def run(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        if self._compile_arrow is not None:
            self.prepare_arrow()
        if self.arrow is not None and batch.num_rows <= ARROW_MAX_ROWS:
            out = self.run_arrow(batch)
            if out is not None:
                return out
        out = self._run_datafusion(batch)
        if self.arrow is not None and self._arrow_schemas is None and out.num_rows:
            self._arrow_schemas = (batch.schema, out.schema)
        return out

    def run_arrow(self, batch: pa.RecordBatch) -> pa.RecordBatch | None:
        """The Arrow path's output for ``batch``, or None where DataFusion computes it:
        no Arrow program, values it would compute differently (NaN in a comparison),
        or an input schema DataFusion has not yet run on. (DataFusion's batches can
        be stricter about NULLs than its plan: the Arrow path gives the schema
        DataFusion gave for the same input schema.)"""
        schemas = self._arrow_schemas
        if schemas is None or not batch.schema.equals(schemas[0]):
            return None
        try:
            return self.arrow.run(batch, schemas[1])
        except (NeedsDataFusion, pa.ArrowException):
            return None  # DataFusion computes it (or raises what it raises)

    def _run_datafusion(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        ctx = self._ctx()
        ctx.register_record_batches(INPUT_TABLE, [[batch]])
        try:
            result = ctx.sql(self.sql).collect()
        except Exception as error:  # DataFusion raises plain Exception
            raise DataFusionError(_clean(str(error))) from error
        finally:
            ctx.deregister_table(INPUT_TABLE)
        if not result:
            out = empty_batch(self.raw_schema)
        elif len(result) == 1:
            out = result[0]
        else:
            out = to_batch(pa.Table.from_batches(result))
        if self._needs_cast:
            out = out.cast(self.schema)
        return _owned(out)

    def run_isolating(self, batch: pa.RecordBatch) -> tuple[pa.RecordBatch, list[tuple[int, Exception]]]:
        """Run over ``batch`` leaving out the rows it fails on (found by bisection): the
        output of the other rows, and ``(row, error)`` for each failing row."""
        good, bad = isolate_failures(batch.num_rows, lambda s, e: self.run(batch.slice(s, e - s)))
        parts = [b for _, _, b in good if b.num_rows]
        if not parts:
            return empty_batch(self.schema), bad
        return to_batch(pa.Table.from_batches(parts, schema=self.schema)), bad


_OWN_BELOW_ROWS = 65_536


def _owned(batch: pa.RecordBatch) -> pa.RecordBatch:
    """A copy of ``batch`` in pyarrow's memory.

    Batches that DataFusion returns stay tied to objects of its runtime for as long as
    they live; with many of them alive (window and join state, buffering sinks, a
    collecting test sink) every later DataFusion call slowed down 10-40x (measured:
    0.6 ms → 20 ms for a filter over 100 rows with 1,500 outputs retained). One copy of
    the output (a memcpy: ~0.8 ms per million doubles) frees them at once. Large
    batches (bounded files) are few, so they are handed on as they are."""
    if batch.num_rows == 0 or batch.num_rows >= _OWN_BELOW_ROWS:
        return batch
    columns = [pa.concat_arrays([column, column.slice(0, 0)]) for column in batch.columns]
    return pa.RecordBatch.from_arrays(columns, schema=batch.schema)


def _clean(message: str) -> str:
    message = message.strip()
    for prefix in ("DataFusion error: ", "Arrow error: ", "Error during planning: ", "Execution error: "):
        while message.startswith(prefix):
            message = message[len(prefix) :]
    return message.splitlines()[0] if message else "DataFusion error"


#: words in a function name that suggest a model rather than a typo of a built-in
_MODEL_WORDS = re.compile(r"(^|_)(predict\w*|score|scoring|classif\w*|infer\w*|model|embed\w*|detect\w*|"
                          r"forecast\w*|anomal\w*|sentiment|inference)(_|$)", re.IGNORECASE)


def plan_error(error: Exception) -> SqlAnalysisError:
    """A planning failure of DataFusion as a SqlAnalysisError with a hint where possible."""
    text = str(error)
    match = _INVALID_FUNCTION.search(text)
    if match:
        name = match.group(1)
        suggestion = re.search(r"Did you mean '([^']+)'", text)
        hint = f"did you mean '{suggestion.group(1)}'?" if suggestion else None
        close = suggestion is not None and difflib.SequenceMatcher(None, name, suggestion.group(1)).ratio() >= 0.8
        if _MODEL_WORDS.search(name) and not close:
            hint = (f"to call a model, CREATE FUNCTION {name} AS MODEL 'path/to/model.onnx'; "
                    f"for Python code, a @udf function in udfs/*.py")  # not a far-fetched built-in name
        return UnknownFunctionError(
            f"unknown function '{name}'",
            function_name=name,
            hint=hint or "register Python functions with @udf in udfs/*.py, models with CREATE FUNCTION ... AS MODEL",
        )
    return SqlAnalysisError(_clean(text))
