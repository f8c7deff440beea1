"""Golden pipeline tests: every ``tests/sql/<case>`` runs through
:func:`sqlstream.pipeline_tests.run_case` (what ``sqlstream test`` runs).

Expected outputs come from DuckDB, not from sqlstream: ``oracle/<sink>.sql`` in a case
is DuckDB SQL over the case's input files (paths relative to the case folder), and
``expected/<sink>.jsonl`` is what it returns. The second test checks that the
committed expected files still equal DuckDB's answer; after changing an input or an
oracle, rewrite them with::

    python tests/pipelines/test_golden.py [CASE ...]
"""

from __future__ import annotations

import os
import sys
from collections import Counter

import duckdb
import orjson
import pytest

from sqlstream.connectors.encode import encode_json_lines
from sqlstream.pipeline_tests import canonical_rows, discover_cases, run_case

SQL_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "sql")
CASES = discover_cases(SQL_DIR)
ORACLE_CASES = [c for c in CASES if os.path.isdir(os.path.join(c, "oracle"))]


def oracle_rows(case: str, sink: str) -> list[dict]:
    """DuckDB's rows for ``oracle/<sink>.sql``, encoded the way sink outputs are compared."""
    with open(os.path.join(case, "oracle", f"{sink}.sql"), encoding="utf-8") as handle:
        sql = handle.read()
    con = duckdb.connect()
    con.execute(f"SET file_search_path = '{case}'")
    con.execute("SET TimeZone = 'UTC'")
    table = con.sql(sql).to_arrow_table()
    return canonical_rows([orjson.loads(line) for line in encode_json_lines(table).splitlines()])


def oracle_sinks(case: str) -> list[str]:
    return sorted(name[:-4] for name in os.listdir(os.path.join(case, "oracle")) if name.endswith(".sql"))


def expected_rows(case: str, sink: str) -> list[dict]:
    with open(os.path.join(case, "expected", f"{sink}.jsonl"), "rb") as handle:
        return canonical_rows([orjson.loads(line) for line in handle if line.strip()])


def _key(row: dict) -> bytes:
    return orjson.dumps(row, option=orjson.OPT_SORT_KEYS)


@pytest.mark.parametrize("case", CASES, ids=os.path.basename)
def test_pipeline_case(case):
    result = run_case(case)
    assert result.passed, "\n".join(result.messages)


@pytest.mark.parametrize("case", ORACLE_CASES, ids=os.path.basename)
def test_expected_output_is_duckdbs(case):
    sinks = oracle_sinks(case)
    expected_files = sorted(n[:-6] for n in os.listdir(os.path.join(case, "expected")) if n.endswith(".jsonl"))
    assert sinks == expected_files, "every expected/<sink>.jsonl needs an oracle/<sink>.sql"
    for sink in sinks:
        expected = expected_rows(case, sink)
        assert expected, f"{sink}: an empty expectation proves little"
        assert Counter(map(_key, expected)) == Counter(map(_key, oracle_rows(case, sink))), sink


def write_expected(case: str) -> None:
    os.makedirs(os.path.join(case, "expected"), exist_ok=True)
    for sink in oracle_sinks(case):
        rows = sorted(oracle_rows(case, sink), key=_key)
        with open(os.path.join(case, "expected", f"{sink}.jsonl"), "wb") as handle:
            for row in rows:
                handle.write(orjson.dumps(row) + b"\n")
        print(f"{os.path.relpath(case)}: expected/{sink}.jsonl ({len(rows)} rows from DuckDB)")


if __name__ == "__main__":
    chosen = [os.path.join(SQL_DIR, name) for name in sys.argv[1:]] or ORACLE_CASES
    for case in chosen:
        write_expected(case)
