"""Joins in FROM (planned in the joins work; until then a clear error)."""

from __future__ import annotations

from sqlstream.errors import UnsupportedSqlError

__all__ = ["plan_joins", "lookup_table_relation"]


def plan_joins(planner, rel, joins, select):
    raise UnsupportedSqlError("joins are not supported yet", location=planner.loc(joins[0]))


def lookup_table_relation(planner, info, alias, node):
    raise UnsupportedSqlError(
        f"'{info.name}' is a TABLE (bounded lookup data); it can only be joined to a stream",
        location=planner.loc(node),
    )
