"""EXPLAIN ANALYZE (SQL, through a Session) and ``sqlstream explain --analyze FILE``:
the plan, run to the end of its input, with exact rows in/out per operator."""

from __future__ import annotations

import re
import subprocess

import pytest

from sqlstream import Session
from sqlstream.errors import UnsupportedSqlError
from tests.observability.conftest import EVENTS, SQLSTREAM, UDF


def annotations(text: str) -> list[tuple[str, int, int]]:
    """``(plan line, rows in, rows out)`` for every annotated operator, in plan order."""
    lines = text.splitlines()
    out = []
    for i, line in enumerate(lines):
        m = re.match(r"\s*>> rows in ([\d,]+) -> out ([\d,]+), ", line)
        if m:
            node = next(lines[j].strip() for j in range(i - 1, -1, -1) if not lines[j].startswith(" " * (len(line) - len(line.lstrip()))))
            out.append((node.split(" ")[0], int(m.group(1).replace(",", "")), int(m.group(2).replace(",", ""))))
    return out


@pytest.fixture
def events(tmp_path):
    (tmp_path / "events.jsonl").write_text(EVENTS)
    session = Session(base_dir=str(tmp_path), dead_letter_path=str(tmp_path / "dl.jsonl"))
    session.execute("CREATE SOURCE events (id BIGINT, ts TIMESTAMP, v BIGINT, WATERMARK FOR ts AS ts - INTERVAL '0' SECOND)"
                    " WITH (connector = 'file', path = 'events.jsonl', format = 'json')")
    return session


def test_explain_analyze_select_counts_every_operator(events):
    [result] = events.execute("EXPLAIN ANALYZE SELECT window_start, count(*) AS n "
                              "FROM TUMBLE(events, ts, INTERVAL '10' SECOND) GROUP BY window_start")
    text = result.text
    assert text.startswith("== query (EXPLAIN ANALYZE) ==\nSink query: 100 rows out, time ")
    assert annotations(text) == [
        ("Stateless", 100, 100),  # the window's output columns
        ("WindowAggregate", 1000, 100),  # 100 windows of 10 s
        ("Stateless", 1000, 1000),
        ("LateFilter", 1001, 1000),  # the late row stops here
        ("Scan", 1001, 1001),  # 1,000 good rows and the late one; bad records never reach the plan
    ]
    assert re.search(r"WindowAggregate .*\n(.*\n)*?\s+>> rows in 1,000 -> out 100, 1 batch, time [\d.]+ ms \(\d+%\), "
                     r"peak state \d+ rows / \d+ B\n", text)
    assert "\nsource events: 1,001 rows in (1,011 records)\ndead letters: 11 (decode 6, late 1, type 4)\n" in text


def test_explain_analyze_runs_functions_and_counts_their_failures(events, tmp_path):
    (tmp_path / "udfs").mkdir()
    (tmp_path / "udfs" / "risky.py").write_text(UDF)
    events.load_udfs(str(tmp_path / "udfs"))
    [result] = events.execute("EXPLAIN ANALYZE SELECT id, risky(v) AS r FROM events WHERE id < 500")
    assert annotations(result.text) == [("Stateless", 1001, 495), ("Scan", 1001, 1001)]  # 0, 100, ..., 400 fail
    assert "Sink query: 495 rows out" in result.text
    assert "dead letters: 15 (decode 6, type 4, udf 5)" in result.text


def test_explain_analyze_refuses_an_endless_source(events):
    events.execute("CREATE SOURCE ticks (n BIGINT) WITH (connector = 'generator', rows_per_second = 10)")
    with pytest.raises(UnsupportedSqlError, match="EXPLAIN ANALYZE runs the query to the end of its input, but source "
                                                  "'ticks' has no end"):
        events.execute("EXPLAIN ANALYZE SELECT n FROM ticks")


def test_explain_without_analyze_does_not_run(events):
    [result] = events.execute("EXPLAIN SELECT id FROM events")
    assert ">>" not in result.text and "ANALYZE" not in result.text


def test_cli_explain_analyze_runs_the_file_and_annotates_each_sink(tmp_path):
    (tmp_path / "events.jsonl").write_text(EVENTS)
    (tmp_path / "p.sql").write_text(
        "CREATE SOURCE events (id BIGINT, ts TIMESTAMP, v BIGINT) WITH (connector = 'file', path = 'events.jsonl',"
        " format = 'json');\n"
        "CREATE SINK small AS SELECT id FROM events WHERE id < 10 WITH (connector = 'file', path = 'small.jsonl',"
        " format = 'json');\n"
        "CREATE SINK keys AS SELECT id % 3 AS k, count(*) AS n FROM events GROUP BY id % 3"
        " WITH (connector = 'file', path = 'keys.jsonl', format = 'json');\n")
    result = subprocess.run([SQLSTREAM, "explain", "--analyze", "p.sql"], cwd=tmp_path, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    small, keys = result.stdout.split("\n\n")[:2]
    assert small.startswith("== sink small [file(json: small.jsonl)] (EXPLAIN ANALYZE) ==\nSink small: 10 rows out")
    assert annotations(small) == [("Stateless", 1001, 10), ("Scan", 1001, 1001)]
    assert annotations(keys) == [("Stateless", 3, 3), ("GroupAggregate", 1001, 3), ("Stateless", 1001, 1001),
                                 ("Scan", 1001, 1001)]
    assert "peak state 3 rows / " in keys
    assert len((tmp_path / "small.jsonl").read_text().splitlines()) == 10  # the sinks wrote, as in run


def test_explain_analyze_in_the_repl(tmp_path):
    (tmp_path / "events.jsonl").write_text(EVENTS)
    result = subprocess.run(
        [SQLSTREAM, "repl", "--no-udfs", "-e",
         "CREATE SOURCE events (id BIGINT, ts TIMESTAMP, v BIGINT) WITH (connector = 'file', path = 'events.jsonl',"
         " format = 'json'); EXPLAIN ANALYZE SELECT id FROM events WHERE v >= 990"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "== query (EXPLAIN ANALYZE) ==\nSink query: 10 rows out" in result.stdout
    assert annotations(result.stdout) == [("Stateless", 1001, 10), ("Scan", 1001, 1001)]
