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
from sqlstream.udf.model_versions import ModelVersionFunction, VersionedModel

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


def _versioned(impl) -> VersionedModel | None:
    """The model function whose version ``impl`` depends on (pinned once per batch)."""
    if isinstance(impl, VersionedModel):
        return impl
    return impl.model if isinstance(impl, ModelVersionFunction) else None


class CallStage:
    """One function call over the whole batch, appended as its output column. A model
    call is scored by the version the step pinned for the batch; ``arg_types`` and the
    result type are recorded with the model, so a new version must fit them."""

    def __init__(self, call: FunctionCall, arg_types: list[pa.DataType] | None = None):
        self.call = call
        self.model = _versioned(call.impl)
        if isinstance(call.impl, VersionedModel) and arg_types is not None:
            call.impl.track(self, arg_types, call.impl.return_type)

    def explain(self) -> str:
        impl = self.call.impl
        kind = impl.kind if impl.kind.startswith("model") else ("async python" if impl.is_async else "python")
        return f"vectorized {kind} call {self.call.sql} -> {self.call.output} (once per micro-batch)"

    def _arrays(self, batch: pa.RecordBatch, impl) -> list[pa.Array]:
        n = batch.num_rows
        arrays = []
        for arg in self.call.args:
            if arg.column is not None:
                arrays.append(batch.column(arg.column))
            elif pa.types.is_null(arg.literal_type):
                arrays.append(pa.nulls(n))
            else:
                arrays.append(pa.repeat(pa.scalar(arg.literal, arg.literal_type), n))
        return impl.prepare(arrays)

    def apply(self, batch: pa.RecordBatch, op, pinned: dict | None = None) -> pa.RecordBatch:
        call = self.call
        impl = call.impl
        if self.model is not None:  # the version pinned for this batch (the current one when alone)
            version = pinned[self.model] if pinned is not None and self.model in pinned else self.model.pin()
            impl = impl.bind(version)
        n = batch.num_rows
        args = self._arrays(batch, impl)
        failures: list[tuple[int, str, str]] = []
        stats = op.function_stats.get(call.impl.name)
        if stats is None:
            stats = op.function_stats[call.impl.name] = FunctionStats()
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
                    result, failures = self._isolate(impl, args, n)
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

    def _isolate(self, impl, args: list[pa.Array], n: int):

        def attempt(start: int, end: int) -> pa.Array:
            return impl.call([a.slice(start, end - start) for a in args], end - start)

        good, bad = isolate_failures(n, attempt)
        for _, error in bad:
            if isinstance(error, UdfError):
                raise error
        name, result_type = self.call.impl.name, self.call.impl.return_type
        failures = [(row, "udf", f"{name}: {type(error).__name__}: {_message(error)}") for row, error in bad]
        pieces = sorted([(s, v) for s, _, v in good] + [(row, pa.nulls(1, result_type)) for row, _ in bad], key=lambda p: p[0])
        values = [v for _, v in pieces]
        return (pa.concat_arrays(values) if values else pa.nulls(0, result_type)), failures


def _message(error: Exception) -> str:
    text = str(error).strip()
    return text if len(text) <= 500 else text[:497] + "..."


class UdfStep:
    """The stages computing a query's function calls; one instance per query plan
    (functions hold no per-run state). Each batch pins one version of every model
    function it calls, so no batch is scored half by one version and half by another."""

    def __init__(self, stages: list):
        self.stages = stages
        self.models = list({id(s.model): s.model for s in stages if isinstance(s, CallStage) and s.model}.values())

    @property
    def calls(self) -> list[FunctionCall]:
        return [s.call for s in self.stages if isinstance(s, CallStage)]

    def instantiate(self, ctx) -> "UdfStep":
        return self

    def explain(self) -> list[str]:
        return [stage.explain() for stage in self.stages]

    def apply(self, batch: pa.RecordBatch, op) -> pa.RecordBatch:
        pinned = {model: model.pin() for model in self.models}
        for stage in self.stages:
            batch = stage.apply(batch, op, pinned) if isinstance(stage, CallStage) else stage.apply(batch, op)
            if batch.num_rows == 0:
                break
        return batch
