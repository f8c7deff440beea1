"""Differential: stateless queries through sqlstream (file source, small and large
micro-batches, events out of order, every query a file sink fed by one read) give
the same rows as DuckDB running the same SQL in batch over the same file.

The input has NULLs, empty strings, negative numbers, non-ASCII text and event times
in random order. It is written as JSON lines, CSV and Parquet; each format is read
with several ``file_batch_size`` values. DuckDB reads the file with the declared
column types and runs each query's SQL text unchanged (``src`` is a CTE over the
file), except where the two engines' semantics are known to differ (noted inline).
"""

from __future__ import annotations

import datetime
import decimal
import json
from collections import Counter

import duckdb
import numpy as np
import orjson
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest

import sqlstream

ROWS = 3000

COLUMNS = {
    "id": "BIGINT",
    "k": "VARCHAR",
    "name": "VARCHAR",
    "v": "DOUBLE",
    "n": "INT",
    "ok": "BOOLEAN",
    "ts": "TIMESTAMP",
}

# name → (sqlstream SQL, DuckDB SQL or None when it is the same text)
QUERIES = {
    "filter_project": (
        "SELECT id, k, v * 2 AS v2, n + 1 AS n1 FROM src WHERE v > 10 AND k IN ('a', 'b') OR name IS NULL",
        None,
    ),
    "case_coalesce": (
        """SELECT id,
                  CASE WHEN v > 50 THEN 'high' WHEN v > 10 THEN 'mid' WHEN v IS NULL THEN 'none' ELSE 'low' END AS level,
                  CASE k WHEN 'a' THEN 1 WHEN 'b' THEN 2 ELSE 0 END AS code,
                  COALESCE(name, '(none)') AS name, NULLIF(k, 'c') AS k_not_c,
                  NOT ok AS not_ok, ok IS NULL AS ok_unknown, n BETWEEN -10 AND 10 AS small
           FROM src WHERE id % 3 <> 1""",
        None,
    ),
    "casts": (
        """SELECT id, CAST(n AS VARCHAR) AS n_text, CAST(v AS REAL) AS v_real, CAST(n AS DOUBLE) / 4 AS quarter,
                  CAST(v AS DECIMAL(12, 3)) AS v_dec, TRY_CAST(name AS BIGINT) AS name_num,
                  CAST(ts AS DATE) AS day, CAST(CAST(ts AS VARCHAR) AS TIMESTAMP) AS ts_back, CAST(v AS BIGINT) AS v_int
           FROM src""",
        # a fractional number CAST to an integer truncates toward zero in sqlstream (Flink
        # and DataFusion semantics), DuckDB rounds
        """SELECT id, CAST(n AS VARCHAR) AS n_text, CAST(v AS REAL) AS v_real, CAST(n AS DOUBLE) / 4 AS quarter,
                  CAST(v AS DECIMAL(12, 3)) AS v_dec, TRY_CAST(name AS BIGINT) AS name_num,
                  CAST(ts AS DATE) AS day, CAST(CAST(ts AS VARCHAR) AS TIMESTAMP) AS ts_back,
                  CAST(trunc(v) AS BIGINT) AS v_int
           FROM src""",
    ),
    "strings": (
        """SELECT id, upper(name) AS up, lower(name) AS low, length(name) AS len, substr(name, 2, 3) AS mid,
                  name || '-' || k AS joined, concat(k, name, 'x') AS cat, trim(name) AS trimmed,
                  replace(name, 'a', 'A') AS swapped, name LIKE 'a%' AS starts_a, starts_with(name, 'b') AS starts_b,
                  strpos(name, 'e') AS e_at, split_part(name, ' ', 1) AS first_word, reverse(k) AS rk,
                  regexp_replace(name, '[aeiou]', '_', 'g') AS no_vowels, left(name, 2) AS l2
           FROM src WHERE name IS NOT NULL""",
        None,
    ),
    "math": (
        """SELECT id, abs(v) AS a, round(v, 2) AS r2, round(v) AS r0, floor(v) AS fl, ceil(v) AS ce,
                  sqrt(abs(v)) AS sq, power(v, 2) AS p2, n % 7 AS m7, -n AS neg, exp(v / 100) AS e,
                  ln(abs(v) + 1) AS lg, greatest(v, n) AS g, least(v, n) AS l, v / 3 AS third
           FROM src WHERE v IS NOT NULL""",
        None,
    ),
    "time": (
        """SELECT id, date_trunc('minute', ts) AS minute, date_trunc('day', ts) AS day,
                  extract(hour FROM ts) AS hour, extract(minute FROM ts) AS minute_of_hour,
                  extract(year FROM ts) AS year, extract(month FROM ts) AS month, extract(dow FROM ts) AS dow,
                  ts + INTERVAL '90' MINUTE AS later, ts - INTERVAL '1' DAY AS day_before,
                  ts > TIMESTAMP '2023-03-01 12:00:00' AS after_noon
           FROM src WHERE ts >= TIMESTAMP '2023-03-01 00:00:00'""",
        None,
    ),
}

WORDS = ["alpha", "beta", "gamma delta", "épsilon", "zeta", "", "  padded ", "123", "-7", "a b c", "über"]


def make_input(seed: int = 5) -> pa.Table:
    rng = np.random.default_rng(seed)
    start = int(datetime.datetime(2023, 3, 1, tzinfo=datetime.timezone.utc).timestamp() * 1e6)
    times = start + rng.integers(-86_400, 3 * 86_400, ROWS) * 1_000_000 + rng.integers(0, 1_000_000, ROWS)
    names = [WORDS[i] for i in rng.integers(0, len(WORDS), ROWS)]
    v = rng.normal(20, 40, ROWS)  # full precision: no exact ties for round(v, 2) to break differently

    def nulls(p):
        return rng.random(ROWS) < p

    return pa.table(
        {
            "id": np.arange(ROWS),
            "k": pa.array(rng.choice(["a", "b", "c", "dd"], ROWS)),
            "name": pa.array(names, mask=nulls(0.1)),
            "v": pa.array(v, mask=nulls(0.05)),
            "n": pa.array(rng.integers(-50, 50, ROWS).astype(np.int32), mask=nulls(0.05)),
            "ok": pa.array(rng.random(ROWS) < 0.5, mask=nulls(0.1)),
            "ts": pa.array(times, pa.timestamp("us")),  # out of order: random, not sorted
        }
    )


def write(table: pa.Table, folder, fmt: str) -> str:
    path = folder / f"input.{fmt}"
    if fmt == "parquet":
        pq.write_table(table, path, row_group_size=1000)
    elif fmt == "csv":
        pcsv.write_csv(table, path)  # strings quoted: "" is an empty string, an empty field NULL
    else:
        with open(path, "w") as handle:
            for row in table.to_pylist():
                row["ts"] = row["ts"].isoformat()
                handle.write(json.dumps(row) + "\n")
    return str(path)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("differential")
    table = make_input()
    return {fmt: write(table, folder, fmt) for fmt in ("json", "csv", "parquet")}


@pytest.fixture(scope="module")
def expected(inputs):
    """DuckDB's results, once per query (every format holds the same data)."""
    types = "{" + ", ".join(f"'{c}': '{t}'" for c, t in COLUMNS.items()) + "}"
    readers = {
        "json": f"read_json('{inputs['json']}', format = 'newline_delimited', columns = {types})",
        "csv": f"read_csv('{inputs['csv']}', header = true, columns = {types}, allow_quoted_nulls = false)",
        "parquet": f"read_parquet('{inputs['parquet']}')",
    }
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    out = {}
    for fmt, reader in readers.items():
        for name, (sql, duck_sql) in QUERIES.items():
            rows = con.sql(f"WITH src AS (SELECT * FROM {reader}) {duck_sql or sql}").to_arrow_table().to_pylist()
            out[(fmt, name)] = canonical(rows)
    for name in QUERIES:  # the three readings of the file agree with each other
        assert out[("json", name)] == out[("csv", name)] == out[("parquet", name)]
    return out


def canonical_value(value):
    if isinstance(value, float):
        return None if value != value else float(f"{value:.9g}")
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, (datetime.datetime, datetime.date)):
        return value.isoformat()
    return value


def canonical(rows: list[dict]) -> Counter:
    return Counter(orjson.dumps({k: canonical_value(v) for k, v in row.items()}, option=orjson.OPT_SORT_KEYS) for row in rows)


@pytest.mark.parametrize("fmt", ["json", "csv", "parquet"])
@pytest.mark.parametrize("file_batch_size", [1_000_000, 1000, 256])
def test_stateless_queries_match_duckdb(tmp_path, inputs, expected, fmt, file_batch_size):
    columns = ", ".join(f"{c} {t}" for c, t in COLUMNS.items())
    sinks = "\n".join(
        f"CREATE SINK {name} AS {sql} WITH (connector = 'file', path = '{name}.parquet', format = 'parquet');"
        for name, (sql, _) in QUERIES.items()
    )
    session = sqlstream.Session(base_dir=str(tmp_path), dead_letter_path=str(tmp_path / "dead.jsonl"))
    session.execute(
        f"""SET file_batch_size = {file_batch_size};
            CREATE SOURCE src ({columns}, WATERMARK FOR ts AS ts - INTERVAL '1' MINUTE)
              WITH (connector = 'file', path = '{inputs[fmt]}', format = '{fmt}');
            {sinks}"""
    )
    summary = session.run()
    assert summary.sources["src"]["rows_in"] == ROWS  # one read feeds every sink
    assert summary.dead_letters == {}
    for name in QUERIES:
        table = pq.read_table(tmp_path / f"{name}.parquet")
        actual = canonical(table.to_pylist())
        assert sum(actual.values()) == sum(expected[(fmt, name)].values()), name
        assert actual == expected[(fmt, name)], name


def test_json_sink_output_matches_duckdb(tmp_path, inputs, expected):
    """The JSON-lines sink, read back by DuckDB with the query's result types."""
    sql = QUERIES["filter_project"][0]
    session = sqlstream.Session(base_dir=str(tmp_path), dead_letter_path=str(tmp_path / "dead.jsonl"))
    columns = ", ".join(f"{c} {t}" for c, t in COLUMNS.items())
    session.execute(
        f"""SET file_batch_size = 500;
            CREATE SOURCE src ({columns}) WITH (connector = 'file', path = '{inputs['json']}', format = 'json');
            CREATE SINK out AS {sql} WITH (connector = 'file', path = 'out.jsonl', format = 'json');"""
    )
    session.run()
    rows = duckdb.connect().sql(
        f"SELECT * FROM read_json('{tmp_path / 'out.jsonl'}', format = 'newline_delimited', "
        "columns = {'id': 'BIGINT', 'k': 'VARCHAR', 'v2': 'DOUBLE', 'n1': 'BIGINT'})"
    ).to_arrow_table().to_pylist()
    assert canonical(rows) == expected[("json", "filter_project")]
