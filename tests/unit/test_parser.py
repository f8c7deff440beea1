"""The dialect and the typed statements: every statement form, and malformed input
reported as ``file.sql:line:col: error: message`` with the right position."""

from __future__ import annotations

import pyarrow as pa
import pytest
from sqlglot import exp

from sqlstream.errors import SqlStreamError, SqlSyntaxError, UnsupportedSqlError
from sqlstream.sql.dialect import Emit, SqlStream, WindowTVF
from sqlstream.sql.statements import (
    CreateFunction,
    CreateSink,
    CreateSource,
    CreateView,
    DescribeStatement,
    DropStatement,
    ExplainStatement,
    InsertInto,
    QueryStatement,
    SetStatement,
    ShowStatement,
    SourceText,
    StopQueryStatement,
    interval_us,
    parse_script,
)


def parse(sql: str, user_functions=()) -> list:
    return list(parse_script(SourceText(sql, "pipe.sql"), lambda: user_functions))


def one(sql: str, user_functions=()):
    statements = parse(sql, user_functions)
    assert len(statements) == 1
    return statements[0]


# -- statement forms ----------------------------------------------------------------------


def test_create_source_with_columns_watermark_and_options():
    st = one(
        """CREATE SOURCE Sensors (
             sensor_id BIGINT NOT NULL,
             ts        TIMESTAMP(3),
             "Temp"    DOUBLE,
             WATERMARK FOR ts AS ts - INTERVAL '5' SECOND
           ) WITH (connector = 'generator', format = 'json', start = 5, rate = -2, ratio = 0.5,
                   fields.sensor_id.kind = 'sequence', enabled = true)"""
    )
    assert isinstance(st, CreateSource) and st.kind == "SOURCE"
    assert st.name == "sensors"  # unquoted identifiers fold to lower case
    assert [c.name for c in st.columns] == ["sensor_id", "ts", "Temp"]  # quoted ones keep case
    assert [c.not_null for c in st.columns] == [True, False, False]
    assert st.schema() == pa.schema(
        [pa.field("sensor_id", pa.int64(), nullable=False), ("ts", pa.timestamp("ms")), ("Temp", pa.float64())]
    )
    assert (st.watermark.column, st.watermark.delay_us) == ("ts", 5_000_000)
    # format= and start= are plain options here, not sqlglot's special properties
    values = {k: v.value for k, v in st.options.items()}
    assert values == {
        "connector": "generator",
        "format": "json",
        "start": 5,
        "rate": -2,
        "ratio": 0.5,
        "fields.sensor_id.kind": "sequence",
        "enabled": True,
    }
    where = st.options["rate"].location
    assert (where.line, where.col) == (6, 73)


def test_create_source_watermark_without_delay_and_if_not_exists():
    st = one("CREATE SOURCE IF NOT EXISTS s (ts TIMESTAMP, WATERMARK FOR ts AS ts) WITH (connector = 'generator')")
    assert st.if_not_exists and (st.watermark.column, st.watermark.delay_us) == ("ts", 0)
    replaced = one("CREATE OR REPLACE SOURCE s (a INT) WITH (connector = 'generator')")
    assert replaced.replace and not replaced.if_not_exists and replaced.watermark is None


def test_create_table():
    st = one("CREATE TABLE sites (sensor_id BIGINT, site VARCHAR) WITH (connector = 'file', path = 'ref/sites.csv', format = 'csv')")
    assert isinstance(st, CreateSource) and st.kind == "TABLE" and st.name == "sites"
    assert st.options["path"].value == "ref/sites.csv"


def test_create_view():
    st = one("CREATE VIEW hot AS SELECT * FROM sensors WHERE temp > 80")
    assert isinstance(st, CreateView) and st.name == "hot"
    assert st.query.sql(dialect=SqlStream) == "SELECT * FROM sensors WHERE temp > 80"


def test_create_sink_as_query():
    st = one("CREATE SINK alerts AS SELECT sensor_id FROM sensors WITH (connector = 'file', path = 'out/a.jsonl', format = 'json')")
    assert isinstance(st, CreateSink) and st.name == "alerts"
    assert st.query.sql(dialect=SqlStream) == "SELECT sensor_id FROM sensors"
    assert st.from_name is None and st.columns is None
    assert {k: v.value for k, v in st.options.items()} == {"connector": "file", "path": "out/a.jsonl", "format": "json"}


def test_create_sink_from_view():
    st = one("CREATE SINK alerts2 FROM hot WITH (connector = 'stdout')")
    assert isinstance(st, CreateSink) and st.from_name == "hot" and st.query is None


def test_create_sink_with_columns_then_insert_into():
    create, insert = parse(
        """CREATE SINK s3 (sensor_id BIGINT, n BIGINT) WITH (connector = 'file', path = 'n.parquet', format = 'parquet');
           INSERT INTO s3 SELECT sensor_id, count(*) FROM sensors GROUP BY sensor_id;"""
    )
    assert isinstance(create, CreateSink) and [(c.name, c.type) for c in create.columns] == [
        ("sensor_id", pa.int64()),
        ("n", pa.int64()),
    ]
    assert create.query is None and create.from_name is None
    assert isinstance(insert, InsertInto) and insert.sink == "s3"
    assert insert.query.sql(dialect=SqlStream) == "SELECT sensor_id, COUNT(*) FROM sensors GROUP BY sensor_id"
    assert (insert.location.line, insert.location.col) == (2, 12)


def test_bare_select_and_statement_text():
    st = one("  SELECT a, b FROM s WHERE a > 1  ")
    assert isinstance(st, QueryStatement) and st.text == "SELECT a, b FROM s WHERE a > 1"


def test_set_statements():
    assert [(s.key, s.value.value) for s in parse("SET batch_size = 100; SET Batch_Timeout = '5ms'; SET on_error = fail")] == [
        ("batch_size", 100),
        ("batch_timeout", "5ms"),
        ("on_error", "fail"),
    ]
    assert isinstance(one("SET x = 1"), SetStatement)


def test_create_function_as_model():
    st = one("CREATE FUNCTION Predict AS MODEL 'models/anomaly.onnx' WITH (batch = 3)")
    assert isinstance(st, CreateFunction)
    assert (st.name, st.model_path, st.options["batch"].value) == ("predict", "models/anomaly.onnx", 3)


def test_registered_function_names_win_over_dialect_builtins():
    # predict(x) is a built-in of another dialect that would fail to parse as a call
    st = one("SELECT predict(features) AS p, explode(x) FROM s", user_functions=["predict"])
    calls = [f.name for f in st.query.find_all(exp.Anonymous)]
    assert "predict" in calls


@pytest.mark.parametrize("what", ["SOURCES", "SINKS", "VIEWS", "TABLES", "FUNCTIONS", "WATERMARKS", "METRICS"])
def test_show(what):
    st = one(f"SHOW {what.lower()}")
    assert isinstance(st, ShowStatement) and st.what == what


def test_describe_explain_drop_stop():
    describe = one("DESCRIBE Sensors")
    assert isinstance(describe, DescribeStatement) and describe.name == "sensors"
    explain = one("EXPLAIN SELECT a FROM s")
    assert isinstance(explain, ExplainStatement) and isinstance(explain.statement, QueryStatement)
    explain_sink = one("EXPLAIN CREATE SINK k AS SELECT a FROM s WITH (connector = 'stdout')")
    assert isinstance(explain_sink.statement, CreateSink) and explain_sink.statement.name == "k"
    drops = parse("DROP SOURCE s; DROP VIEW IF EXISTS v; DROP SINK k; DROP TABLE t; DROP FUNCTION f")
    assert [(d.kind, d.name, d.if_exists) for d in drops] == [
        ("SOURCE", "s", False),
        ("VIEW", "v", True),
        ("SINK", "k", False),
        ("TABLE", "t", False),
        ("FUNCTION", "f", False),
    ]
    assert all(isinstance(d, DropStatement) for d in drops)
    stop = one("STOP QUERY 2")
    assert isinstance(stop, StopQueryStatement) and stop.number == 2


def test_script_with_comments_and_locations():
    statements = parse(
        """-- a comment; with a semicolon
        CREATE SOURCE s (a BIGINT) WITH (connector = 'generator'); /* block
        comment; spanning lines */ SELECT a
          FROM s;
        ;
        SELECT 'a;b' AS x FROM s"""
    )
    assert [type(s).__name__ for s in statements] == ["CreateSource", "QueryStatement", "QueryStatement"]
    assert [(s.location.line, s.location.col) for s in statements] == [(2, 9), (3, 36), (6, 9)]
    assert statements[2].query.expressions[0].this.name == "a;b"


WINDOW_CASES = [
    ("SELECT * FROM TUMBLE(s, ts, INTERVAL '1' MINUTE)", "TUMBLE", [60_000_000], None),
    ("SELECT * FROM TABLE(TUMBLE(TABLE s, DESCRIPTOR(ts), INTERVAL '1' MINUTE))", "TUMBLE", [60_000_000], None),
    ("SELECT * FROM HOP(s, ts, INTERVAL '10' SECOND, INTERVAL '1' MINUTE)", "HOP", [10_000_000, 60_000_000], None),
    ("SELECT * FROM TABLE(HOP(TABLE s, DESCRIPTOR(ts), INTERVAL '10' SECOND, INTERVAL '1' MINUTE))", "HOP",
     [10_000_000, 60_000_000], None),
    ("SELECT * FROM CUMULATE(s, ts, INTERVAL '1' MINUTE, INTERVAL '1' HOUR)", "CUMULATE", [60_000_000, 3_600_000_000], None),
    ("SELECT * FROM TABLE(CUMULATE(TABLE s, DESCRIPTOR(ts), INTERVAL '1' MINUTE, INTERVAL '1' HOUR))", "CUMULATE",
     [60_000_000, 3_600_000_000], None),
    ("SELECT * FROM SESSION(s, ts, INTERVAL '30' SECOND)", "SESSION", [30_000_000], None),
    ("SELECT * FROM TABLE(SESSION(TABLE s PARTITION BY k, DESCRIPTOR(ts), INTERVAL '30' SECOND))", "SESSION",
     [30_000_000], ["k"]),
    ("SELECT * FROM TABLE(SESSION(TABLE s PARTITION BY (k, j), DESCRIPTOR(ts), INTERVAL '30 seconds'))", "SESSION",
     [30_000_000], ["k", "j"]),
]


@pytest.mark.parametrize("sql, kind, sizes, partition", WINDOW_CASES)
def test_window_table_functions_short_and_long_forms(sql, kind, sizes, partition):
    st = one(sql)
    tvf = st.query.find(WindowTVF)
    assert tvf.args["kind"] == kind
    assert tvf.this.name == "s" and tvf.args["time_column"].name == "ts"
    assert [interval_us(size) for size in tvf.args["sizes"]] == sizes
    assert [c.name for c in tvf.args.get("partition_by") or []] == (partition or [])
    # the generator writes it back so that it parses to the same tree
    again = one(st.query.sql(dialect=SqlStream))
    assert again.query.sql(dialect=SqlStream) == st.query.sql(dialect=SqlStream)


def test_window_over_subquery_with_alias_and_join():
    st = one("SELECT w.k FROM TUMBLE((SELECT * FROM s WHERE v > 0), ts, INTERVAL '1' SECOND) AS w JOIN t ON w.k = t.k")
    tvf = st.query.find(WindowTVF)
    assert isinstance(tvf.this, exp.Subquery) and tvf.alias_or_name == "w"
    assert st.query.find(exp.Join) is not None


@pytest.mark.parametrize(
    "suffix, every_us",
    [
        ("EMIT ON WINDOW CLOSE", None),
        ("EMIT EVERY INTERVAL '2' SECOND", 2_000_000),
        ("EMIT ON WINDOW CLOSE LIMIT 5", None),
    ],
)
def test_emit(suffix, every_us):
    st = one(f"SELECT window_start, count(*) FROM TUMBLE(s, ts, INTERVAL '1' MINUTE) GROUP BY window_start {suffix}")
    emit = st.query.args["emit"]
    assert isinstance(emit, Emit)
    assert (interval_us(emit.this) if emit.this is not None else None) == every_us
    assert "EMIT" in st.query.sql(dialect=SqlStream)


def test_emit_directly_after_from_is_not_an_alias():
    st = one("SELECT * FROM s EMIT ON WINDOW CLOSE")
    assert isinstance(st.query.args["emit"], Emit)
    assert st.query.args["from_"].this.alias == ""


# -- malformed input: message and line:col -----------------------------------------------------

MALFORMED = [
    # (sql, message fragment, line, col)
    ("SELEC a FROM s", "'SELEC' does not start a statement", 1, 1),
    ("SELECT 1;\n  CRATE SINK k AS SELECT 1", "'CRATE' does not start a statement", 2, 3),
    ("SELECT a\nFROM s\nWHERE (a > 1", "expected ')' after '1'", 3, 12),
    ("SELECT * FROM TUMBLE(s, ts INTERVAL '1' MINUTE)", "expected ')' before 'INTERVAL'", 1, 28),
    ("SELECT 'abc FROM s", "unterminated literal: missing closing '", 1, 8),
    ('SELECT "abc FROM s', 'unterminated literal: missing closing "', 1, 8),
    ("SELECT 1 /* never closed", "unterminated comment: missing closing */", 1, 10),
    ("SELECT a,, b FROM s", "missing item after ','", 1, 9),
    ("SELECT a FROM s\nGROUP BY a,", "missing item after ','", 2, 11),
    ("SELECT 1 +", "unexpected end of statement after '+'", 1, 10),
    ("CREATE SOURCE s (a BIGINT)\nWITH (connector = 'generator'", "expected , or ) in the WITH (...) option list", 2, 19),
    ("CREATE SOURCE s (a BIGINT) WITH (connector 'generator')", "expected = after option 'connector'", 1, 44),
    ("CREATE SOURCE s (a BIGINT) WITH (connector = 'generator', x = )", "expected an option value", 1, 63),
    ("CREATE SOURCE s (a BIGINT) WITH (\n  format = 'json',\n  format = 'csv')", "option 'format' is given twice", 3, 3),
    ("CREATE SOURCE s WITH (connector = 'generator')", "CREATE SOURCE s needs a column list", 1, 1),
    ("CREATE SOURCE s (a BIGINT, a INT) WITH (connector = 'generator')", "column 'a' is declared twice", 1, 28),
    ("CREATE SOURCE s (\n  a BIGINT,\n  b FOO\n) WITH (connector = 'generator')", "type FOO is not supported", 3, 5),
    ("CREATE SOURCE s (a TIMESTAMP(4)) WITH (connector = 'generator')", "TIMESTAMP(4) is not supported", 1, 30),
    ("CREATE SOURCE s (v INT[0]) WITH (connector = 'generator')", "array size must be positive, got 0", 1, 24),
    ("CREATE SOURCE s (ts TIMESTAMP, WATERMARK FOR tss AS tss) WITH (connector = 'generator')",
     "WATERMARK FOR names unknown column 'tss'", 1, 46),
    ("CREATE SOURCE s (a BIGINT, WATERMARK FOR a AS a) WITH (connector = 'generator')",
     "WATERMARK column 'a' must be a TIMESTAMP, not BIGINT", 1, 42),
    ("CREATE SOURCE s (ts TIMESTAMP, WATERMARK FOR ts AS ts + INTERVAL '1' SECOND) WITH (connector = 'generator')",
     "unsupported watermark expression", 1, 52),
    ("CREATE SOURCE s (ts TIMESTAMP, WATERMARK FOR ts AS ts - INTERVAL '1' FORTNIGHT) WITH (connector = 'generator')",
     "cannot read interval", 1, 66),
    ("CREATE TABLE t (ts TIMESTAMP, WATERMARK FOR ts AS ts) WITH (connector = 'file')",
     "a TABLE is bounded reference data and has no watermark", 1, 45),
    ("CREATE SINK k WITH (connector = 'stdout')",
     "CREATE SINK needs AS <query>, FROM <name>, or a column list followed by INSERT INTO", 1, 15),
    ("CREATE SINK k (a BIGINT, WATERMARK FOR a AS a) WITH (connector = 'stdout')", "a SINK has no watermark", 1, 40),
    ("CREATE VIEW v SELECT 1", "expected AS <query> after the view name", 1, 15),
    ("CREATE FUNCTION f AS 'x.py'", "expected AS MODEL 'path.onnx'", 1, 22),
    ("CREATE FUNCTION f AS MODEL x", "AS MODEL needs the model path as a string literal", 1, 28),
    ("CREATE INDEX i ON t (a)", "CREATE INDEX is not a sqlstream statement", 1, 8),
    ("DROP INDEX x", "expected DROP SOURCE|SINK|VIEW|TABLE|FUNCTION name", 1, 1),
    ("INSERT INTO k (a, b) SELECT 1, 2", "INSERT INTO with a column list is not supported", 1, 13),
    ("UPDATE t SET a = 1", "UPDATE statements are not supported by sqlstream", 1, 1),
    ("SELECT * FROM TUMBLE(s)", "TUMBLE needs a time column as its second argument", 1, 23),
    ("SELECT * FROM TABLE(FOO(TABLE s, DESCRIPTOR(ts), INTERVAL '1' MINUTE))",
     "expected a window function TUMBLE, HOP, CUMULATE or SESSION inside TABLE(...)", 1, 21),
    ("SELECT * FROM s EMIT NOW", "expected EMIT ON WINDOW CLOSE or EMIT EVERY INTERVAL", 1, 22),
    ("SELECT * FROM s EMIT EVERY", "EMIT EVERY needs an interval", 1, 22),
    ("SET", "expected SET key = value", 1, 1),
    ("SHOW", "SHOW needs what to show", 1, 1),
    ("EXPLAIN", "EXPLAIN needs a query", 1, 1),
    ("STOP QUERY", "STOP QUERY needs a query number", 1, 6),
]


@pytest.mark.parametrize("sql, message, line, col", MALFORMED, ids=[m[1][:40] for m in MALFORMED])
def test_malformed_input_reports_message_and_position(sql, message, line, col):
    with pytest.raises(SqlStreamError) as info:
        parse(sql)
    error = info.value
    assert message in error.message
    assert (error.location.path, error.location.line, error.location.col) == ("pipe.sql", line, col)
    rendered = error.render()
    assert rendered.startswith(f"pipe.sql:{line}:{col}: error: ")
    assert "Traceback" not in rendered


def test_malformed_inputs_are_many():
    assert len(MALFORMED) >= 20


def test_error_excerpt_has_a_caret_under_the_offending_token():
    with pytest.raises(SqlSyntaxError) as info:
        parse("SELECT 1;\nSELECT a FROM s\nWHERE a > 1 EMIT SOON")
    assert info.value.render() == (
        "pipe.sql:3:18: error: expected EMIT ON WINDOW CLOSE or EMIT EVERY INTERVAL '<n>' SECOND\n"
        "  WHERE a > 1 EMIT SOON\n"
        "                   ^^^^"
    )


def test_hints_for_near_misses():
    with pytest.raises(SqlSyntaxError) as info:
        parse("SELEC a FROM s")
    assert info.value.hint == "did you mean 'SELECT'?"
    with pytest.raises(SqlStreamError) as info:
        parse("CREATE SOURCE s (ts TIMESTAMP, WATERMARK FOR tss AS tss) WITH (connector = 'generator')")
    assert info.value.hint == "did you mean 'ts'?"
    with pytest.raises(SqlStreamError) as info:
        parse("CREATE SOURCE s (a TIMESTAMP(4)) WITH (connector = 'generator')")
    assert info.value.hint == "use TIMESTAMP(0), (3), (6) or (9)"


def test_statements_before_an_error_are_yielded_first():
    statements = parse_script(SourceText("SET batch_size = 5;\nSELECT FROM WHERE", "pipe.sql"))
    assert isinstance(next(statements), SetStatement)
    with pytest.raises(SqlSyntaxError) as info:
        next(statements)
    assert info.value.location.line == 2


def test_unsupported_statement_kind_is_unsupported_sql_error():
    with pytest.raises(UnsupportedSqlError):
        parse("DELETE FROM t WHERE a = 1")


# -- analysis errors: through Session.execute, with the catalog ---------------------------------

CATALOG = """CREATE SOURCE s (id BIGINT, ts TIMESTAMP, temp DOUBLE, site VARCHAR,
  WATERMARK FOR ts AS ts - INTERVAL '1' SECOND) WITH (connector = 'generator', max_rows = 10);
CREATE VIEW v AS SELECT id, temp FROM s;
"""

ANALYSIS = [
    # (sql, message fragment, line, col, hint fragment)
    ("SELECT tmp FROM s", "unknown column 'tmp'", 1, 8, "did you mean 'temp'?"),
    ("SELECT id\nFROM s\nWHERE temprature > 3", "unknown column 'temprature'", 3, 7, "columns: id, ts, temp, site"),
    ("SELECT s.tmp FROM s", "unknown column 'tmp'", 1, 8, "did you mean 'temp'?"),
    ("SELECT x.id FROM s", "unknown relation 'x' in x.id", 1, 8, "relations in scope: s"),
    ("SELECT id FROM sensors", "unknown source, table or view 'sensors'", 1, 16, "known: s, sqlstream_dead_letter, v"),
    ("SELECT uper(site) FROM s", "unknown function 'uper'", 1, 8, "did you mean 'upper'?"),
    ("SELECT id FROM s GROUP BY site", "column 'id' must appear in GROUP BY or be used in an aggregate function", 1, 8, None),
    ("SELECT id + site FROM s", "Cannot coerce arithmetic expression Int64 + Utf8", 1, 8, None),
    ("CREATE SOURCE t (a BIGINT)\n  WITH (connector = 'kafka')", "unknown source connector 'kafka'", 2, 9,
     "file, generator"),  # (other tests may have registered connectors named before 'file')
    ("CREATE SOURCE t (a BIGINT) WITH (connector = 'generatr')", "unknown source connector 'generatr'", 1, 34,
     "did you mean 'generator'?"),
    ("CREATE SOURCE t (a BIGINT)", "a source needs a connector", 1, 1, "add WITH (connector = '...')"),
    ("CREATE SOURCE t (a BIGINT) WITH (connector = 'generator', rows_per_secnd = 5)",
     "unknown option 'rows_per_secnd' for connector 'generator'", 1, 59,
     "did you mean 'rows_per_second'? valid options: connector, on_error, idle_timeout, max_future, timestamp_format, "
     "rows_per_second, max_rows, seed"),
    ("CREATE SOURCE t (a BIGINT) WITH (connector = 'generator', rows_per_second = 'fast')",
     "option 'rows_per_second' = 'fast' is invalid for connector 'generator': expected an integer", 1, 59, None),
    ("CREATE SOURCE t (a BIGINT) WITH (connector = 'generator', rows_per_second = -1)",
     "option 'rows_per_second' = -1 is invalid for connector 'generator': must be >= 0", 1, 59, None),
    ("CREATE SOURCE t (a BIGINT) WITH (connector = 'file', path = 'x.csv')", "connector 'file' needs option 'format'",
     1, 1, "json | csv | parquet"),
    ("CREATE SOURCE t (a BIGINT) WITH (connector = 'file', path = 'x', format = 'xml')",
     "expected one of 'json', 'csv', 'parquet'", 1, 66, None),
    ("CREATE SINK k AS SELECT id FROM s WITH (connector = 'nope')", "unknown sink connector 'nope'", 1, 41,
     "available: file"),
    ("CREATE SINK k AS SELECT id FROM s WITH (connector = 'stdout', colour = 'red')",
     "unknown option 'colour' for connector 'stdout'", 1, 63, "valid options: connector, format"),
    ("CREATE SINK k FROM nothing WITH (connector = 'stdout')", "unknown source or view 'nothing'", 1, 1, None),
    ("INSERT INTO nothing SELECT id FROM s", "unknown sink 'nothing'", 1, 1, "CREATE SINK it first"),
    ("CREATE SINK k (a BIGINT) WITH (connector = 'stdout');\nINSERT INTO k SELECT id, temp FROM s",
     "sink 'k' declares 1 columns but the query produces 2", 1, 1, "columns are matched by position: id, temp"),
    ("CREATE SOURCE s (a BIGINT) WITH (connector = 'generator')", "'s' already exists", 1, 1,
     "use CREATE SOURCE IF NOT EXISTS, CREATE OR REPLACE SOURCE, or DROP SOURCE s first"),
    ("SET batch_sise = 5", "unknown setting 'batch_sise'", 1, 18, "did you mean 'batch_size'? valid settings: batch_size"),
    ("SET batch_size = 'many'", "invalid value 'many' for setting 'batch_size': expected a whole number of rows", 1, 18,
     None),
    ("SET on_error = 'explode'", "expected dead_letter, fail or skip", 1, 16, None),
    ("DESCRIBE nothing", "unknown name 'nothing'", 1, 1, None),
    ("DROP SOURCE nothing", "unknown source 'nothing'", 1, 1, None),
    ("DROP SOURCE s", "cannot drop source 's': v depend(s) on it", 1, 1, "drop those first"),
    ("SHOW THINGS", "cannot SHOW THINGS", 1, 1, "SHOW SOURCES | SINKS"),
    ("SELECT * FROM TUMBLE(s, tss, INTERVAL '1' MINUTE)", "unknown time column 'tss' in TUMBLE", 1, 25,
     "did you mean 'ts'?"),
    ("SELECT * FROM TUMBLE(s, id, INTERVAL '1' MINUTE)", "TUMBLE needs an event-time column with a watermark", 1, 25,
     "the event-time column of this input is 'ts'"),
    ("SELECT * FROM TUMBLE(s, ts, 5)", "expected an INTERVAL, got 5", 1, 29, "INTERVAL '5' SECOND"),
    ("CREATE FUNCTION f AS MODEL 'nope.onnx'", "model file not found", 1, 1, None),
    ("CREATE TABLE t (a BIGINT) WITH (connector = 'generator')", "TABLE t must be bounded", 1, 1, "set max_rows"),
]


@pytest.mark.parametrize("sql, message, line, col, hint", ANALYSIS, ids=[a[1][:40] for a in ANALYSIS])
def test_analysis_errors_through_session(tmp_path, sql, message, line, col, hint):
    from sqlstream.session import Session

    session = Session(base_dir=str(tmp_path), dead_letter_path="off")
    session.execute(CATALOG, path="catalog.sql")
    with pytest.raises(SqlStreamError) as info:
        session.execute(sql, path="pipe.sql")
    error = info.value
    assert message in error.message
    assert (error.location.path, error.location.line, error.location.col) == ("pipe.sql", line, col)
    if hint is not None:
        assert hint in error.hint
    assert error.render().startswith(f"pipe.sql:{line}:{col}: error: ")


def test_positions_after_a_dollar_sign_are_on_the_right_line():
    from sqlstream.sql.statements import SourceText, parse_script

    with pytest.raises(SqlSyntaxError) as caught:
        list(parse_script(SourceText("$ SELECT \n SELECT", "f.sql")))
    assert str(caught.value).startswith("f.sql:2:2: error: ")
