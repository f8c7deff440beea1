"""Python/model function calls evaluated once per micro-batch: the ``UdfStep`` that
``plan/udf_calls.py`` plans.

A step is a list of stages: DataFusion programs (filters, argument expressions) and
function calls over the whole batch, each appending its output column. A call that
raises is bisected so that only the rows it fails on go to the dead-letter output
(reason ``udf`` with the function and the exception, or ``timeout``), and the rest of
the batch continues: the output is the same whatever the batch size. ``on_error =
'fail'`` stops instead. A function that returns the wrong length or type is a
:class:`~sqlstream.errors.UdfError` at the call's location.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from time import perf_counter

import numpy as np
import pyarrow as pa
from sqlglot import exp

from sqlstream.connectors.dead_letters import rows_as_dead_letters
from sqlstream.errors import DataFusionError, ExecutionError, Location, UdfError
from sqlstream.failure_isolation import isolate_failures
from sqlstream.operators.datafusion_program import DataFusionProgram
from sqlstream.operators.stateless import FunctionStats

__all__ = ["CallArgument", "FunctionCall", "ProgramStage", "CallStage", "UdfStep"]


@dataclass
class CallArgument:
    """An argument of a call: a column of the batch or a constant."""

    column: str | None = None  # a column of the (augmented) batch
    literal: object = None  # a constant
    literal_type: pa.DataType | None = None


@dataclass
class FunctionCall:
    """One call of a registered function, computed into column ``output``."""

    impl: object  # PythonUdf | ModelUdf
    nodes: list[exp.Expr]  # argument expressions, inner calls already columns
    output: str
    sql: str
    location: Location | None
    phase: str  # where | select
    level: int  # 1 + the level of the deepest call in its arguments (same phase)
    args: list[CallArgument] = field(default_factory=list)


def _dead_letter(op, batch: pa.RecordBatch, failures: list[tuple[int, str, str]]) -> None:
    if op.dead_letter is None or not failures:
        return
    rows, reasons, details = zip(*failures)
    op.dead_letter(rows_as_dead_letters(batch, rows, op.label, reasons, details))


def _without(batch: pa.RecordBatch, rows: list[int]) -> pa.RecordBatch:
    keep = np.ones(batch.num_rows, dtype=bool)
    keep[rows] = False
    return batch.filter(pa.array(keep))


class ProgramStage:
    """A DataFusion projection/filter inside the step; rows it fails on are dead letters."""

    def __init__(self, program: DataFusionProgram, what: str):
        self.program = program
        self.what = what

    def explain(self) -> str:
        return f"udf {self.what}: {self.program.sql}"

    def apply(self, batch: pa.RecordBatch, op) -> pa.RecordBatch:
        try:
            return self.program.run(batch)
        except DataFusionError as error:
            if op.on_error == "fail":
                raise ExecutionError(f"{op.label}: {error.message}") from error
        out, bad = self.program.run_isolating(batch)
        _dead_letter(op, batch, [(row, "type", str(getattr(error, "message", error))) for row, error in bad])
        return out


class CallStage:
    """One function call over the whole batch, appended as its output column."""

    def __init__(self, call: FunctionCall):
        self.call = call

    def explain(self) -> str:
        impl = self.call.impl
        kind = "model" if impl.kind == "model" else ("async python" if impl.is_async else "python")
        return f"vectorized {kind} call {self.call.sql} -> {self.call.output} (once per micro-batch)"

    def _arrays(self, batch: pa.RecordBatch) -> list[pa.Array]:
        n = batch.num_rows
        arrays = []
        for arg in self.call.args:
            if arg.column is not None:
                arrays.append(batch.column(arg.column))
            elif pa.types.is_null(arg.literal_type):
                arrays.append(pa.nulls(n))
            else:
                arrays.append(pa.repeat(pa.scalar(arg.literal, arg.literal_type), n))
        return self.call.impl.prepare(arrays)

    def apply(self, batch: pa.RecordBatch, op) -> pa.RecordBatch:
        call = self.call
        impl = call.impl
        n = batch.num_rows
        args = self._arrays(batch)
        failures: list[tuple[int, str, str]] = []
        stats = op.function_stats.get(impl.name)
        if stats is None:
            stats = op.function_stats[impl.name] = FunctionStats()
        start = perf_counter()
        try:
            if impl.reports_row_failures:  # async Python, image models: failures per row, with a reason
                result, row_failures = impl.call_rows(args, n)
                failures = [(f.row, f.reason, f.detail) for f in row_failures]
            else:
                try:
                    result = impl.call(args, n)
                except UdfError:
                    raise
                except Exception:  # noqa: BLE001 - isolate the rows that fail
                    result, failures = self._isolate(args, n)
        except UdfError as error:
            error.exit_code = 1  # a function misbehaving at run time (declared on SqlStreamError)
            raise error.with_location(call.location)
        finally:
            stats.calls += 1
            stats.rows += n
            stats.seconds += perf_counter() - start
        stats.failed_rows += len(failures)
        out = batch.append_column(pa.field(call.output, result.type), result)
        if not failures:
            return out
        if op.on_error == "fail":
            _, _, detail = failures[0]
            raise ExecutionError(
                f"{detail}", location=call.location, hint="on_error = 'dead_letter' (the default) isolates failing rows"
            )
        _dead_letter(op, batch, failures)
        return _without(out, [row for row, _, _ in failures])

    def _isolate(self, args: list[pa.Array], n: int):
        impl = self.call.impl

        def attempt(start: int, end: int) -> pa.Array:
            return impl.call([a.slice(start, end - start) for a in args], end - start)

        good, bad = isolate_failures(n, attempt)
        for _, error in bad:
            if isinstance(error, UdfError):
                raise error
        failures = [(row, "udf", f"{impl.name}: {type(error).__name__}: {_message(error)}") for row, error in bad]
        pieces = sorted([(s, v) for s, _, v in good] + [(row, pa.nulls(1, impl.return_type)) for row, _ in bad], key=lambda p: p[0])
        values = [v for _, v in pieces]
        return (pa.concat_arrays(values) if values else pa.nulls(0, impl.return_type)), failures


def _message(error: Exception) -> str:
    text = str(error).strip()
    return text if len(text) <= 500 else text[:497] + "..."


class UdfStep:
    """The stages computing a query's function calls; one instance per query plan
    (functions hold no per-run state)."""

    def __init__(self, stages: list):
        self.stages = stages

    @property
    def calls(self) -> list[FunctionCall]:
        return [s.call for s in self.stages if isinstance(s, CallStage)]

    def instantiate(self, ctx) -> "UdfStep":
        return self

    def explain(self) -> list[str]:
        return [stage.explain() for stage in self.stages]

    def apply(self, batch: pa.RecordBatch, op) -> pa.RecordBatch:
        for stage in self.stages:
            batch = stage.apply(batch, op)
            if batch.num_rows == 0:
                break
        return batch
