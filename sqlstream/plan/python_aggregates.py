"""Calls of Python and model aggregates (``@udaf``, ``... AS MODEL ... WITH (aggregate
= true)``) in an aggregation: their argument and its type check.

The pre-stage computes one column per call: the argument, or a STRUCT of the
arguments when there are several (the aggregate's state unpacks it, see
:func:`sqlstream.udf.aggregate.arguments_of`). Types are checked against the
function's signature when the query is planned, like scalar UDF calls.
"""

from __future__ import annotations

import pyarrow as pa
from sqlglot import exp

from sqlstream.errors import SqlAnalysisError, UdfError
from sqlstream.operators.aggregates import AggCall
from sqlstream.plan.lowering import to_datafusion_sql
from sqlstream.plan.relation import PlannerContext

__all__ = ["python_argument", "check_python_call", "key_text"]


def python_argument(ctx: PlannerContext, agg: exp.Expr, function, condition: exp.Expr | None) -> exp.Expr:
    """The expression the pre-stage computes for a Python aggregate call ``agg``."""
    if condition is not None:
        raise ctx.unsupported(f"FILTER (WHERE ...) on aggregate {function.name}() is not supported", agg,
                              "filter the rows with WHERE, or pass CASE WHEN ... THEN x END (NULLs are skipped)")
    args = list(agg.expressions)
    if any(isinstance(a, exp.Distinct) for a in args):
        raise ctx.unsupported(f"{function.name}(DISTINCT ...) is not supported", agg, "COUNT(DISTINCT x) is")
    if any(isinstance(a, exp.Star) for a in args) or not args:
        raise SqlAnalysisError(f"aggregate {function.name}() needs {len(function.arg_types)} argument(s)",
                               location=ctx.loc(agg), hint=function.signature())
    if len(args) != len(function.arg_types):
        raise SqlAnalysisError(f"aggregate {function.name} takes {len(function.arg_types)} argument(s), got {len(args)}",
                               location=ctx.loc(agg), hint=function.signature())
    if len(args) == 1:
        return args[0]
    return exp.Struct(expressions=args)


def check_python_call(ctx: PlannerContext, call: AggCall, where: exp.Expr) -> None:
    """Check the argument types of ``call`` against its function's signature."""
    function = call.function.function
    t = call.arg_type
    types = [t] if len(function.arg_types) == 1 or not pa.types.is_struct(t) else [f.type for f in t]
    try:
        function.check_args(types)
    except UdfError as error:
        raise SqlAnalysisError(error.message, location=ctx.loc(where), hint=error.hint) from error


def key_text(key: exp.Expr) -> str:
    """A GROUP BY key as its dead letters name it: a column's name, else its SQL."""
    if isinstance(key, exp.Column):
        original = key.meta.get("scope_column")
        return original.name if original is not None else key.name
    return to_datafusion_sql(key)
