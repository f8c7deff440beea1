"""Which names a registered function may take.

Registered names win over the built-ins of the SQL dialect (``predict``, ``explode``,
``score``, even ``upper``: see :attr:`sqlstream.sql.dialect.Parser.user_functions`),
but two kinds of name cannot work and are refused when the function is registered:
aggregate functions (``sum``, ``count``: a scalar function cannot stand in for one)
and words the grammar reserves (``values``, ``case``), which never parse as a call.
"""

from __future__ import annotations

from sqlstream.errors import UdfError
from sqlstream.operators.aggregates import AGGREGATE_FUNCTIONS
from sqlstream.sql.statements import function_call_problem

__all__ = ["check_function_name"]


def check_function_name(name: str) -> None:
    """Raise UdfError if ``name`` (lower case) cannot be called as a scalar function."""
    if name in AGGREGATE_FUNCTIONS:
        raise UdfError(
            f"function name '{name}' is a SQL aggregate function", hint="choose another name, e.g. @udf(name='my_" + name + "')"
        )
    problem = function_call_problem(name)
    if problem is not None:
        raise UdfError(
            f"function name '{name}' is a reserved word in SQL ({problem})",
            hint="choose another name, e.g. @udf(name='my_" + name + "')",
        )
