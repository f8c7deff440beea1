"""Python/model function calls in a query: planned once, evaluated per micro-batch.

DataFusion's Python UDFs are called per 8192-row chunk, run twice when a call is
in both WHERE and SELECT, and lose the exception type. So calls to registered
functions are taken out of the SQL: each distinct call becomes a column
``__udfN`` that :class:`UdfStep` computes on the whole micro-batch (once, even if
the call appears in several places), and DataFusion sees a plain column. Arguments
that are expressions are computed first by one DataFusion projection.

A call that raises is bisected so that only the rows it fails on go to the
dead-letter output (reason ``udf`` with the function and the exception, or
``timeout``), and the rest of the batch continues: the output is the same whatever
the batch size.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa
from sqlglot import exp

from sqlstream.batches import drop_hidden
from sqlstream.connectors.base import DeadLetter
from sqlstream.connectors.encode import encode_json_lines
from sqlstream.errors import ExecutionError, Location, UdfError
from sqlstream.failure_isolation import isolate_failures
from sqlstream.operators.datafusion_program import DataFusionProgram, to_datafusion_sql

__all__ = ["UdfPlanner", "UdfStep"]


@dataclass
class _Arg:
    column: str | None = None  # a column of the (augmented) batch
    literal: object = None  # a constant


@dataclass
class _Call:
    impl: object  # PythonUdf | ModelUdf
    args: list[_Arg]
    output: str
    sql: str
    location: Location | None


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class UdfPlanner:
    def __init__(self, functions: dict):
        self.functions = functions

    def _function(self, node: exp.Expr):
        if isinstance(node, exp.Anonymous):
            entry = self.functions.get(str(node.this).lower())
            return entry.impl if entry is not None else None
        return None

    def extract(self, expressions: list[exp.Expr], condition: exp.Expr | None, schema: pa.Schema, source):
        """Rewrite calls of registered functions to columns; return the step computing them."""
        roots = list(expressions) + ([condition] if condition is not None else [])
        if not any(self._function(n) for root in roots for n in root.walk()):
            return expressions, condition, None, schema
        calls: list[_Call] = []
        by_sql: dict[str, str] = {}
        pre_items: list[tuple[str, exp.Expr]] = []
        types = {f.name: f.type for f in schema}
        counter = [0]

        def rewrite(node: exp.Expr) -> exp.Expr:
            impl = self._function(node)
            if impl is None:
                return node
            text = to_datafusion_sql(node)
            if text in by_sql:
                return _column(by_sql[text])
            args = []
            arg_types = []
            for arg in node.expressions:
                if isinstance(arg, exp.Column) and arg.name in types:
                    args.append(_Arg(column=arg.name))
                    arg_types.append(types[arg.name])
                elif isinstance(arg, exp.Literal):
                    value = arg.name if arg.is_string else (float(arg.name) if "." in arg.name else int(arg.name))
                    args.append(_Arg(literal=value))
                    arg_types.append(pa.scalar(value).type)
                else:
                    counter[0] += 1
                    name = f"__arg{counter[0]}"
                    pre_items.append((name, arg))
                    args.append(_Arg(column=name))
                    arg_types.append(None)
            output = f"__udf{len(calls)}"
            location = source.location(node) if source is not None else None
            call = _Call(impl, args, output, text, location)
            call.arg_types = arg_types  # type: ignore[attr-defined]
            calls.append(call)
            by_sql[text] = output
            return _column(output)

        new_expressions = [e.copy().transform(rewrite, copy=False) for e in expressions]
        new_condition = condition.copy().transform(rewrite, copy=False) if condition is not None else None
        # arguments that are expressions: one DataFusion projection before the calls
        pre_program = None
        current = schema
        if pre_items:
            sql = "SELECT *, " + ", ".join(f"{to_datafusion_sql(e)} AS {_quote(n)}" for n, e in pre_items) + " FROM __input"
            try:
                pre_program = DataFusionProgram(sql, schema)
            except Exception as error:
                from sqlstream.operators.datafusion_program import plan_error

                err = plan_error(error)
                err.location = source.location(pre_items[0][1]) if source is not None else None
                raise err from error
            current = pre_program.schema
        column_types = {f.name: f.type for f in current}
        fields = list(current)
        for call in calls:
            arg_types = [
                column_types[a.column] if a.column is not None else pa.scalar(a.literal).type for a in call.args
            ]
            try:
                result_type = call.impl.check_args(arg_types)
            except UdfError as error:
                raise error.with_location(call.location)
            column_types[call.output] = result_type
            fields.append(pa.field(call.output, result_type))
        step = UdfStep(pre_program, calls)
        return new_expressions, new_condition, step, pa.schema(fields)


def _column(name: str) -> exp.Column:
    return exp.Column(this=exp.Identifier(this=name, quoted=True))


class UdfStep:
    """The plan-time description; ``instantiate`` gives the per-run evaluator."""

    def __init__(self, pre_program: DataFusionProgram | None, calls: list[_Call]):
        self.pre_program = pre_program
        self.calls = calls

    def instantiate(self, ctx) -> "UdfStep":
        return self

    def explain(self) -> list[str]:
        lines = []
        if self.pre_program is not None:
            lines.append(f"udf arguments: {self.pre_program.sql}")
        for call in self.calls:
            kind = "model" if call.impl.kind == "model" else ("async python" if getattr(call.impl, "is_async", False) else "python")
            lines.append(f"vectorized {kind} call {call.sql} -> {call.output} (once per micro-batch)")
        return lines

    def apply(self, batch: pa.RecordBatch, op) -> pa.RecordBatch:
        if self.pre_program is not None:
            batch = self.pre_program.run(batch)
        for call in self.calls:
            batch = self._evaluate(call, batch, op)
            if batch.num_rows == 0:
                break
        return batch

    def _arrays(self, call: _Call, batch: pa.RecordBatch) -> list[pa.Array]:
        arrays = []
        for arg in call.args:
            if arg.column is not None:
                arrays.append(batch.column(arg.column))
            else:
                arrays.append(pa.array([arg.literal] * batch.num_rows))
        return call.impl.prepare(arrays)

    def _evaluate(self, call: _Call, batch: pa.RecordBatch, op) -> pa.RecordBatch:
        impl = call.impl
        n = batch.num_rows
        args = self._arrays(call, batch)
        failures: list[tuple[int, str, str]] = []
        if getattr(impl, "is_async", False):
            result, row_failures = impl.call_rows(args, n)
            failures = [(f.row, f.reason, f.detail) for f in row_failures]
        else:
            try:
                result = impl.call(args, n)
            except UdfError:
                raise
            except Exception:  # noqa: BLE001 - isolate the rows that fail
                result, failures = self._isolate(impl, args, n)
        out = batch.append_column(pa.field(call.output, result.type), result)
        if not failures:
            return out
        if op.on_error == "fail":
            row, reason, detail = failures[0]
            raise ExecutionError(f"{detail}", hint="on_error = 'dead_letter' (the default) isolates failing rows")
        bad = sorted({row for row, _, _ in failures})
        if op.dead_letter is not None:
            rows = drop_hidden(batch.take(pa.array(bad)))
            rows = rows.select([n for n in rows.schema.names if not n.startswith("__")])
            raws = encode_json_lines(rows).decode("utf-8").splitlines()
            details = {row: (reason, detail) for row, reason, detail in failures}
            op.dead_letter(
                [DeadLetter(op.label, details[row][0], details[row][1], raw) for row, raw in zip(bad, raws)]
            )
        keep = pa.array([i not in set(bad) for i in range(n)])
        return out.filter(keep)

    @staticmethod
    def _isolate(impl, args: list[pa.Array], n: int):
        def attempt(start: int, end: int) -> pa.Array:
            return impl.call([a.slice(start, end - start) for a in args], end - start)

        good, bad = isolate_failures(n, attempt)
        for _, error in bad:
            if isinstance(error, UdfError):
                raise error
        for _, _, value in good:
            if isinstance(value, Exception):
                raise value
        failures = [(row, "udf", f"{impl.name}: {type(error).__name__}: {error}") for row, error in bad]
        pieces = []
        cursor = 0
        result_type = impl.return_type
        bad_rows = [row for row, _ in bad]
        segments = sorted([(s, e, v) for s, e, v in good] + [(r, r + 1, pa.nulls(1, result_type)) for r in bad_rows])
        for start, end, value in segments:
            assert start == cursor
            pieces.append(value)
            cursor = end
        return pa.concat_arrays(pieces) if pieces else pa.nulls(0, result_type), failures
