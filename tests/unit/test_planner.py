"""The planner on its own (a stub catalog): what it hands the stateless operator, and
the window columns of window results, and views expanded by sub-planners."""

from __future__ import annotations

import pyarrow as pa
import pytest

from sqlstream.errors import SqlAnalysisError
from sqlstream.hidden import WM_COLUMN
from sqlstream.operators.stateless import StatelessOperator
from sqlstream.plan.nodes import PlanNode, Stateless
from sqlstream.plan.planner import QueryPlanner, RelationInfo
from sqlstream.sql.statements import QueryStatement, SourceText, parse_script

SCHEMA = pa.schema([("k", pa.string()), ("v", pa.int64()), ("ts", pa.timestamp("us"))])


class _Catalog:
    def __init__(self, views: dict[str, str] | None = None):
        self.views = views or {}

    def relation(self, name: str) -> RelationInfo | None:
        if name == "s":
            return RelationInfo("s", "SOURCE", SCHEMA, "ts", 1_000_000, "memory")
        if name in self.views:
            source = SourceText(self.views[name])
            return RelationInfo(name, "VIEW", query=_query(source), source=source)
        return None

    def relation_names(self) -> list[str]:
        return ["s", *self.views]

    def udf_planner(self):
        return None


def _query(source: SourceText):
    (statement,) = list(parse_script(source))
    assert isinstance(statement, QueryStatement)
    return statement.query


def plan(sql: str, views: dict[str, str] | None = None) -> PlanNode:
    source = SourceText(sql)
    return QueryPlanner(_Catalog(views), source).plan(_query(source))


@pytest.mark.parametrize("sql,projection", [
    ("SELECT v AS x, k FROM s", (1, 0, 3)),  # the watermark column travels too
    ("SELECT * FROM s", (0, 1, 2, 3)),
    ("SELECT v + 1 AS x FROM s", None),
    ("SELECT v FROM s WHERE v > 1", None),
    ("SELECT CAST(v AS DOUBLE) AS v FROM s", None),
])
def test_the_planner_hands_pure_column_projections_to_the_stateless_node(sql, projection):
    node = plan(sql)
    assert isinstance(node, Stateless)
    assert node.projection == projection
    if projection is not None:
        assert node.program.input_schema.names[projection[-1]] == WM_COLUMN


def test_a_pure_projection_never_runs_datafusion():
    node = plan("SELECT v AS x, k FROM s")

    class Untouchable:
        def __init__(self, program):
            self.input_schema, self.schema, self.sql = program.input_schema, program.schema, program.sql

        def run(self, batch):
            raise AssertionError("DataFusion ran a pure projection")

    op = StatelessOperator(Untouchable(node.program), None, "fail", "q", node.projection)
    out = []
    op.emit = out.append
    batch = pa.RecordBatch.from_pylist(
        [{"k": "a", "v": 1, "ts": 0, WM_COLUMN: 5}],
        schema=SCHEMA.append(pa.field(WM_COLUMN, pa.int64())),
    )
    op.on_batch(batch, 0)
    assert out[0].to_pylist() == [{"x": 1, "k": "a", WM_COLUMN: 5}]


def test_window_results_carry_their_window_and_key_columns_from_the_constructor():
    node = plan("SELECT k AS key, window_start AS ws, window_end AS we, count(*) AS n "
                "FROM TUMBLE(s, ts, INTERVAL '10' SECOND) GROUP BY k, window_start, window_end")
    assert (node.window, node.key_columns, node.window_end, node.rowtime) == (("ws", "we"), ("key",), "we", None)
    outer = plan("SELECT key, we FROM w", {"w": "SELECT k AS key, window_start AS ws, window_end AS we, count(*) AS n "
                                                 "FROM TUMBLE(s, ts, INTERVAL '10' SECOND) GROUP BY k, window_start, window_end"})
    assert (outer.window, outer.window_end) == (None, "we")


def test_a_view_that_reaches_itself_through_another_is_an_error():
    views = {"a": "SELECT k, v FROM b", "b": "SELECT k, v FROM a"}
    with pytest.raises(SqlAnalysisError, match="view 'a' refers to itself"):
        plan("SELECT k FROM a", views)
