"""Flink's ``ML_PREDICT(TABLE t, MODEL m, DESCRIPTOR(cols))`` and BigQuery's
``ML.PREDICT(MODEL m, TABLE t | (SELECT ...))`` give the rows of the plain call
``SELECT *, m(cols) FROM t``; what does not map is a located error naming the spelling
that works."""

from __future__ import annotations

import numpy as np
import pytest
import sqlglot

from sqlstream.errors import SqlAnalysisError, SqlSyntaxError
from sqlstream.sql.dialect import SqlStream
from sqlstream.testing import TestSession
from tests.udf.test_model_versions import classifier_model, features, scale_model


@pytest.fixture
def session(tmp_path) -> TestSession:
    scale_model(tmp_path / "scale.onnx", 2.0)
    classifier_model(tmp_path / "cls.onnx", np.random.default_rng(5).normal(size=(2, 3)).astype(np.float32))
    session = TestSession(base_dir=str(tmp_path))
    session.execute("CREATE SOURCE s (id BIGINT, x FLOAT[2], a REAL, b REAL) WITH (connector = 'memory')")
    session.execute("CREATE FUNCTION f AS MODEL 'scale.onnx'")
    session.execute("CREATE FUNCTION c AS MODEL 'cls.onnx'")
    return session


def run(session: TestSession, sql: str, batch_size: int) -> list[dict]:
    x = features(100, seed=6)
    rows = [{"id": i, "x": [float(p), float(q)], "a": float(p), "b": float(q)} for i, (p, q) in enumerate(x)]
    session.stream("s").push(rows, batch_size=batch_size).finish()
    return session.run_query(sql)


@pytest.mark.parametrize("batch_size", [1, 7, 64])
@pytest.mark.parametrize("spelled, plain", [
    ("SELECT * FROM ML_PREDICT(TABLE s, MODEL f, DESCRIPTOR(a, b))", "SELECT *, f(a, b) AS y FROM s"),
    ("SELECT p.id, p.y FROM ML_PREDICT(TABLE s, MODEL f, DESCRIPTOR(x)) AS p WHERE p.y > 0",
     "SELECT id, f(x) AS y FROM s WHERE f(x) > 0"),
    ("SELECT id, label, probabilities FROM ML_PREDICT((SELECT id, x FROM s WHERE id % 2 = 0), MODEL c, DESCRIPTOR(x))",
     "SELECT id, c(x).label AS label, c(x).probabilities AS probabilities FROM s WHERE id % 2 = 0"),
    ("SELECT id, predicted_y FROM ML.PREDICT(MODEL f, TABLE s)", "SELECT id, f(x) AS predicted_y FROM s"),
    ("SELECT * FROM ML.PREDICT(MODEL c, (SELECT id, x FROM s))",
     "SELECT id, x, c(x).label AS predicted_label, c(x).probabilities AS predicted_probabilities FROM s"),
])
def test_the_table_function_spellings_give_the_rows_of_the_plain_call(tmp_path, session, spelled, plain, batch_size):
    ours = run(session, spelled, batch_size)
    theirs = run(session, plain, batch_size)
    assert ours == theirs and len(ours) > 10


def test_a_view_keeps_the_spelling(session):
    session.execute("CREATE VIEW scored AS SELECT * FROM ML_PREDICT(TABLE s, MODEL f, DESCRIPTOR(a, b)) AS p")
    assert session.execute("SHOW VIEWS")[0].table.to_pylist()[0]["query"] == (
        "CREATE VIEW scored AS SELECT * FROM ML_PREDICT(TABLE s, MODEL f, DESCRIPTOR(a, b)) AS p")
    assert run(session, "SELECT id, y FROM scored WHERE id < 3", 7) == run(session, "SELECT id, f(a, b) AS y FROM s WHERE id < 3", 7)
    assert sqlglot.parse_one("SELECT * FROM ML.PREDICT(MODEL f, (SELECT a FROM t))", read=SqlStream).sql(
        dialect=SqlStream) == "SELECT * FROM ML.PREDICT(MODEL f, (SELECT a FROM t))"


@pytest.mark.parametrize("sql, error, message, hint", [
    ("SELECT * FROM ML.PREDICT(MODEL g, TABLE s)", SqlAnalysisError,
     "<query>:1:32: error: ML.PREDICT: 'g' is not a model function", "hint: model functions: c, f"),
    ("SELECT * FROM ML.PREDICT(MODEL f, (SELECT id, a FROM s))", SqlAnalysisError,
     "<query>:1:15: error: ML.PREDICT passes the columns named like model f's inputs; its input has no column 'x'",
     "ML_PREDICT(TABLE t, MODEL f, DESCRIPTOR(columns)) or SELECT *, f(columns) FROM t"),
    ("SELECT * FROM ML_PREDICT(TABLE s, MODEL f, DESCRIPTOR(zz))", SqlAnalysisError,
     "<query>:1:55: error: unknown column 'zz'", "columns: id, x, a, b"),
    ("SELECT * FROM ML_PREDICT((SELECT id, a AS y, b FROM s), MODEL f, DESCRIPTOR(y, b))", SqlAnalysisError,
     "<query>:1:15: error: ML_PREDICT: model f's output 'y' has the name of an input column",
     "SELECT *, f(...) AS other_name"),
    ("SELECT * FROM ML_PREDICT(TABLE s, MODEL f, DESCRIPTOR(a, b), MAP['async', 'true'])", SqlSyntaxError,
     "<query>:1:60: error: ML_PREDICT's options argument is not supported: give model options in CREATE FUNCTION", None),
    ("SELECT * FROM ML_PREDICT(TABLE s, MODEL f)", SqlSyntaxError,
     "ML_PREDICT expects DESCRIPTOR(columns) next", None),
])
def test_what_does_not_map_is_a_located_error(session, sql, error, message, hint):
    with pytest.raises(error) as refused:
        session.query(sql)
    text = str(refused.value)
    assert message in text
    if hint is not None:
        assert hint in text
