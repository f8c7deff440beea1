"""SQL types ↔ Arrow types: declared columns, DESCRIBE, CAST in queries."""

from __future__ import annotations

import datetime
import decimal

import pyarrow as pa
import pytest

from sqlstream.errors import SqlStreamError
from sqlstream.sql.statements import SourceText, parse_script
from sqlstream.sql.types import sql_type_name

TYPES = [
    ("BIGINT", pa.int64(), "BIGINT"),
    ("INT8", pa.int64(), "BIGINT"),
    ("INT", pa.int32(), "INT"),
    ("INTEGER", pa.int32(), "INT"),
    ("SMALLINT", pa.int16(), "SMALLINT"),
    ("DOUBLE", pa.float64(), "DOUBLE"),
    ("DOUBLE PRECISION", pa.float64(), "DOUBLE"),
    ("FLOAT8", pa.float64(), "DOUBLE"),
    ("REAL", pa.float32(), "REAL"),
    ("FLOAT", pa.float32(), "REAL"),  # Flink semantics, not sqlglot's risingwave mapping
    ("FLOAT4", pa.float32(), "REAL"),
    ("BOOLEAN", pa.bool_(), "BOOLEAN"),
    ("VARCHAR", pa.string(), "VARCHAR"),
    ("VARCHAR(20)", pa.string(), "VARCHAR"),
    ("TEXT", pa.string(), "VARCHAR"),
    ("TIMESTAMP", pa.timestamp("us"), "TIMESTAMP"),
    ("TIMESTAMP(6)", pa.timestamp("us"), "TIMESTAMP"),
    ("TIMESTAMP(3)", pa.timestamp("ms"), "TIMESTAMP(3)"),
    ("TIMESTAMPTZ", pa.timestamp("us", tz="UTC"), "TIMESTAMPTZ"),
    ("TIMESTAMP WITH TIME ZONE", pa.timestamp("us", tz="UTC"), "TIMESTAMPTZ"),
    ("DATE", pa.date32(), "DATE"),
    ("TIME", pa.time64("us"), "TIME"),
    ("DECIMAL(10,2)", pa.decimal128(10, 2), "DECIMAL(10,2)"),
    ("NUMERIC(38, 9)", pa.decimal128(38, 9), "DECIMAL(38,9)"),
    ("BYTEA", pa.binary(), "BYTEA"),
    ("FLOAT[4]", pa.list_(pa.float32(), 4), "REAL[4]"),
    ("DOUBLE[3]", pa.list_(pa.float64(), 3), "DOUBLE[3]"),
    ("BIGINT[]", pa.list_(pa.int64()), "BIGINT[]"),
    # tensors: the shape as written, outermost first (3 lists of 64 lists of 64)
    ("FLOAT[3][64][64]", pa.list_(pa.list_(pa.list_(pa.float32(), 64), 64), 3), "REAL[3][64][64]"),
    ("INT[2][5]", pa.list_(pa.list_(pa.int32(), 5), 2), "INT[2][5]"),
    ("FLOAT[3][]", pa.list_(pa.list_(pa.float32(), 3)), "REAL[3][]"),
    ("VARCHAR[]", pa.list_(pa.string()), "VARCHAR[]"),
    ("STRUCT<x INT, name VARCHAR>", pa.struct([("x", pa.int32()), ("name", pa.string())]), "STRUCT<x INT, name VARCHAR>"),
    (
        "STRUCT<p STRUCT<a DOUBLE>, tags VARCHAR[]>",
        pa.struct([("p", pa.struct([("a", pa.float64())])), ("tags", pa.list_(pa.string()))]),
        "STRUCT<p STRUCT<a DOUBLE>, tags VARCHAR[]>",
    ),
]


def declared(sql_type: str) -> pa.DataType:
    statement = next(parse_script(SourceText(f"CREATE SOURCE s (c {sql_type}) WITH (connector = 'memory')")))
    return statement.columns[0].type


@pytest.mark.parametrize("sql_type, arrow, name", TYPES, ids=[t[0] for t in TYPES])
def test_declared_type_maps_to_arrow_and_back(sql_type, arrow, name):
    assert declared(sql_type) == arrow
    assert sql_type_name(arrow) == name
    assert declared(name) == arrow  # the SQL spelling DESCRIBE shows parses to the same type


@pytest.mark.parametrize("sql_type, message", [("FOO", "type FOO is not supported"), ("TIMESTAMP(2)", "TIMESTAMP(2) is not supported")])
def test_unsupported_types(sql_type, message):
    with pytest.raises(SqlStreamError, match=message.replace("(", r"\(").replace(")", r"\)")):
        declared(sql_type)


def test_describe_shows_sql_types(session):
    session.execute(
        "CREATE SOURCE s (id BIGINT NOT NULL, f FLOAT[2], st STRUCT<x INT, y VARCHAR>, ts TIMESTAMP(3)) "
        "WITH (connector = 'memory')"
    )
    table = session.execute("DESCRIBE s")[0].table
    assert table.to_pylist() == [
        {"column": "id", "type": "BIGINT", "nullable": False},
        {"column": "f", "type": "REAL[2]", "nullable": True},
        {"column": "st", "type": "STRUCT<x INT, y VARCHAR>", "nullable": True},
        {"column": "ts", "type": "TIMESTAMP(3)", "nullable": True},
    ]


def test_values_of_every_type_flow_through_a_query(session):
    session.execute(
        """CREATE SOURCE s (v DOUBLE, n BIGINT, f FLOAT[2], st STRUCT<x INT, y VARCHAR>, l BIGINT[],
             d DECIMAL(10,2), b BYTEA, tz TIMESTAMPTZ, dt DATE, ts3 TIMESTAMP(3), ok BOOLEAN)
           WITH (connector = 'memory')"""
    )
    row = {
        "v": 1.5, "n": 3, "f": [1.0, 2.0], "st": {"x": 1, "y": "a"}, "l": [1, 2], "d": decimal.Decimal("2.50"),
        "b": b"xy", "tz": datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc), "dt": datetime.date(2024, 1, 2),
        "ts3": datetime.datetime(2024, 1, 1, 0, 0, 0, 123000), "ok": True,
    }
    session.stream("s").push([row]).finish()
    batches = list(session.query("SELECT *, (st).y AS sy FROM s"))
    assert batches[0].schema.field("f").type == pa.list_(pa.float32(), 2)
    assert batches[0].schema.field("ts3").type == pa.timestamp("ms")
    assert [r for b in batches for r in b.to_pylist()] == [{**row, "sy": "a"}]


def test_cast_uses_the_same_type_mapping(session):
    session.execute("CREATE SOURCE s (v DOUBLE, n BIGINT) WITH (connector = 'memory')")
    session.stream("s").push([{"v": 1.5, "n": 3}]).finish()
    batch = next(
        session.query(
            "SELECT CAST(v AS FLOAT) AS f, CAST(v AS REAL) AS r, CAST(n AS INT) AS i, CAST(n AS DECIMAL(10,2)) AS d, "
            "CAST(n AS VARCHAR) AS s, CAST('2024-01-01 00:00:01.5' AS TIMESTAMP(3)) AS t FROM s"
        )
    )
    types = {f.name: f.type for f in batch.schema}
    assert types == {
        "f": pa.float32(),
        "r": pa.float32(),
        "i": pa.int32(),
        "d": pa.decimal128(10, 2),
        "s": pa.string(),
        "t": pa.timestamp("ms"),
    }
    assert batch.to_pylist() == [
        {"f": 1.5, "r": 1.5, "i": 3, "d": decimal.Decimal("3.00"), "s": "3",
         "t": datetime.datetime(2024, 1, 1, 0, 0, 1, 500000)}
    ]
