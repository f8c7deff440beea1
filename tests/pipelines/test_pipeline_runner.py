"""``sqlstream test``: pipeline tests (folders and single TOML files) with fixtures,
watermark and clock steps, final/append expectations, and a diff on failure."""

from __future__ import annotations

import datetime as dt
import json
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import duckdb
import pytest

from sqlstream.cli.main import main
from sqlstream.pipeline_tests import discover_cases, run_case

ROOT = Path(__file__).resolve().parents[2]

WINDOW_SQL = """
CREATE SOURCE bids (id BIGINT, ts TIMESTAMP, price DOUBLE, WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)
  WITH (connector = 'nats', url = 'nats://127.0.0.1:4222', subject = 'bids', format = 'json');
CREATE SINK totals AS
  SELECT window_start, window_end, count(*) AS n, sum(price) AS total
  FROM TUMBLE(bids, ts, INTERVAL '10' SECOND) GROUP BY window_start, window_end
  WITH (connector = 'stdout');
"""


def _write(path: Path, text: str) -> Path:
    """Write dedented ``text``; ``@SQL@`` stands for the windowed pipeline."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip().replace("@SQL@", WINDOW_SQL))
    return path


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _bids(n: int, seed: int) -> list[dict]:
    """Out-of-order bids within a small jitter (none late for a 1 s watermark delay... mostly)."""
    rng = random.Random(seed)
    start = dt.datetime(2024, 1, 1)
    rows = []
    for i in range(n):
        ts = start + dt.timedelta(milliseconds=i * 250 + rng.randint(0, 600))
        rows.append({"id": i, "ts": ts.isoformat(), "price": round(rng.uniform(1, 100), 2)})
    return rows


def test_project_golden_cases_pass_through_the_cli(capsys):
    """tests/sql runs through the same runner users get as ``sqlstream test``."""
    code = main(["test", str(ROOT / "tests" / "sql")])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "FAILED" not in out
    assert f"{len(discover_cases(str(ROOT / 'tests' / 'sql')))} passed" in out


def test_cli_reports_a_wrong_expectation_with_a_diff_and_exit_1(tmp_path):
    """A passing and a failing case side by side: pytest-like lines, a diff, exit code 1."""
    rows = [{"id": i, "kind": "ab"[i % 2], "v": float(i)} for i in range(6)]
    for name in ("good", "bad"):
        case = tmp_path / "suite" / name
        _write(case / "pipeline.sql", """
            CREATE SOURCE events (id BIGINT, kind VARCHAR, v DOUBLE)
              WITH (connector = 'file', path = 'events.jsonl', format = 'json');
            CREATE SINK totals AS SELECT kind, count(*) AS n, sum(v) AS s FROM events GROUP BY kind
              WITH (connector = 'stdout');
        """)
        _jsonl(case / "events.jsonl", rows)
    _jsonl(tmp_path / "suite/good/expected/totals.jsonl", [{"kind": "a", "n": 3, "s": 6.0}, {"kind": "b", "n": 3, "s": 9.0}])
    _jsonl(tmp_path / "suite/bad/expected/totals.jsonl", [{"kind": "a", "n": 3, "s": 6.0}, {"kind": "b", "n": 4, "s": 9.0}])
    proc = subprocess.run(
        [sys.executable, "-m", "sqlstream.cli.main", "test", "suite"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert any(line.startswith("suite/bad ") and "FAILED" in line for line in lines)
    assert any(line.startswith("suite/good ") and "PASSED" in line for line in lines)
    out = proc.stdout
    assert "sink totals (final table): 2 rows expected, 2 received" in out
    assert '-{"kind":"b","n":4,"s":9.0}' in out
    assert '+{"kind":"b","n":3,"s":9.0}' in out
    assert "1 failed, 1 passed" in out


def test_missing_directory_is_an_input_error(tmp_path, capsys):
    assert main(["test", str(tmp_path / "nope")]) == 2
    assert "no such file or directory" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["test", str(tmp_path / "empty")]) == 2
    assert "no pipeline tests under" in capsys.readouterr().err


def test_windowed_fixture_agrees_with_duckdb(tmp_path):
    """A NATS source swapped for a fixture; the final windows equal DuckDB's batch answer,
    whatever the batch size."""
    rows = _bids(400, seed=7)
    case = tmp_path / "win"
    _write(case / "pipeline.sql", WINDOW_SQL)
    fixture = _jsonl(case / "inputs" / "bids.jsonl", rows)
    con = duckdb.connect()
    oracle = con.sql(f"""
        SELECT time_bucket(INTERVAL 10 SECOND, ts::TIMESTAMP) AS window_start,
               time_bucket(INTERVAL 10 SECOND, ts::TIMESTAMP) + INTERVAL 10 SECOND AS window_end,
               count(*) AS n, sum(price) AS total
        FROM read_json('{fixture}', format = 'newline_delimited') GROUP BY ALL
    """).fetchall()
    expected = [
        {"window_start": s.isoformat(), "window_end": e.isoformat(), "n": n, "total": t} for s, e, n, t in oracle
    ]
    _jsonl(case / "expected" / "totals.jsonl", expected)
    for batch_size in (1, 7, 1000):
        _write(case / "test.toml", f"[settings]\nfile_batch_size = {batch_size}\n")
        result = run_case(str(case))
        assert result.passed, "\n".join(result.messages)
    assert len(result.outputs["totals"]) == len(expected)


def test_watermark_steps_emit_windows_when_the_watermark_passes(tmp_path):
    """Single-file TOML: rows and watermark steps on the manual clock, with per-step checks."""
    path = _write(tmp_path / "steps.toml", """
        sql = '''@SQL@'''

        [inputs.bids]
        rows = [ { id = 1, ts = 2024-01-01T00:00:01, price = 10.0 }, { id = 2, ts = 2024-01-01T00:00:05, price = 2.5 } ]

        [[steps]]
        expect.totals = []
        [[steps]]
        source = "bids"
        rows = [ { id = 3, ts = 2024-01-01T00:00:12, price = 1.0 } ]
        [[steps]]
        expect.totals = [ { window_start = 2024-01-01T00:00:00, window_end = 2024-01-01T00:00:10, n = 2, total = 12.5 } ]
        [[steps]]
        watermark = { bids = 2024-01-01T00:00:20 }
        [[steps]]
        expect.totals = [ { window_start = "2024-01-01 00:00:10", window_end = "2024-01-01T00:00:20", n = 1, total = 1.0 } ]

        [expected.totals]
        rows = [
          { window_start = 2024-01-01T00:00:00, window_end = 2024-01-01T00:00:10, n = 2, total = 12.5 },
          { window_start = 2024-01-01T00:00:10, window_end = 2024-01-01T00:00:20, n = 1, total = 1.0 },
        ]
    """)
    result = run_case(str(path))
    assert result.passed, "\n".join(result.messages)
    # the same steps, expecting the second window too early: the step check fails with a diff
    text = path.read_text().replace("[[steps]]\nwatermark = { bids = 2024-01-01T00:00:20 }\n", "")
    early = _write(tmp_path / "early.toml", text)
    result = run_case(str(early))
    assert not result.passed
    message = "\n".join(result.messages)
    assert "sink totals after step 4: 1 rows expected, 0 received" in message
    assert '-{"window_start":"2024-01-01 00:00:10","window_end":"2024-01-01 00:00:20","n":1,"total":1.0}' in message


def test_end_of_input_false_leaves_open_windows_unemitted(tmp_path):
    path = _write(tmp_path / "open.toml", """
        sql = '''@SQL@'''
        end_of_input = false
        [inputs.bids]
        rows = [ { id = 1, ts = 2024-01-01T00:00:01, price = 10.0 }, { id = 2, ts = 2024-01-01T00:00:12, price = 2.5 } ]
        [[steps]]
        advance = "1s"
        [expected.totals]
        rows = [ { window_start = 2024-01-01T00:00:00, window_end = 2024-01-01T00:00:10, n = 1, total = 10.0 } ]
    """)
    result = run_case(str(path))
    assert result.passed, "\n".join(result.messages)


def test_clock_steps_drive_early_emission_and_append_mode_checks_the_changelog(tmp_path):
    """EMIT EVERY fires on processing time: ``advance`` moves the manual clock. Append mode
    compares every change (with ``__op``) in order."""
    path = _write(tmp_path / "early.toml", """
        sql = '''
        CREATE SOURCE bids (id BIGINT, ts TIMESTAMP, WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)
          WITH (connector = 'generator', rows_per_second = 10);
        CREATE SINK counts AS
          SELECT window_start, count(*) AS n FROM TUMBLE(bids, ts, INTERVAL '10' SECOND)
          GROUP BY window_start, window_end EMIT EVERY INTERVAL '1' SECOND
          WITH (connector = 'stdout');
        '''
        [[steps]]
        source = "bids"
        rows = [ { id = 1, ts = 2024-01-01T00:00:01 }, { id = 2, ts = 2024-01-01T00:00:05 } ]
        [[steps]]
        expect.counts = []
        [[steps]]
        advance = "2s"
        [[steps]]
        expect.counts = [ { __op = "+I", window_start = 2024-01-01T00:00:00, n = 2 } ]
        [[steps]]
        source = "bids"
        rows = [ { id = 3, ts = 2024-01-01T00:00:06 } ]
        [[steps]]
        advance = "2s"

        [expected.counts]
        mode = "append"
        ordered = true
        rows = [
          { __op = "+I", window_start = 2024-01-01T00:00:00, n = 2 },
          { __op = "-U", window_start = 2024-01-01T00:00:00, n = 2 },
          { __op = "+U", window_start = 2024-01-01T00:00:00, n = 3 },
        ]
    """)
    result = run_case(str(path))
    assert result.passed, "\n".join(result.messages)


def test_update_writes_expected_rows_then_the_case_passes(tmp_path, capsys):
    case = tmp_path / "fresh"
    _write(case / "pipeline.sql", """
        CREATE SOURCE nums (n BIGINT) WITH (connector = 'generator', max_rows = 20, rows_per_second = 0,
                                           fields.n.kind = 'sequence');
        SELECT n % 3 AS k, sum(n) AS total FROM nums GROUP BY n % 3;
    """)
    first = run_case(str(case))
    assert not first.passed
    assert "sink query_1: no expected rows (write expected/query_1.jsonl, or run sqlstream test --update)" in first.messages
    assert main(["test", str(case), "--update"]) == 0
    assert "1 updated" in capsys.readouterr().out
    written = [json.loads(line) for line in (case / "expected" / "query_1.jsonl").read_text().splitlines()]
    assert sorted(written, key=lambda r: r["k"]) == [
        {"k": k, "total": sum(n for n in range(20) if n % 3 == k)} for k in range(3)
    ]
    assert run_case(str(case)).passed


def test_csv_fixture_file_from_test_toml(tmp_path):
    case = tmp_path / "csvcase"
    _write(case / "pipeline.sql", """
        CREATE SOURCE readings (sensor VARCHAR, ts TIMESTAMP, temp DOUBLE)
          WITH (connector = 'nats', url = 'nats://127.0.0.1:4222', subject = 'r', format = 'json');
        CREATE SINK hot AS SELECT sensor, temp FROM readings WHERE temp > 20 WITH (connector = 'stdout');
    """)
    _write(case / "data" / "r.csv", """
        sensor,ts,temp
        a,2024-01-01T00:00:00,19.5
        b,2024-01-01T00:00:01,22.0
        a,2024-01-01T00:00:02,25.25
    """)
    _write(case / "test.toml", """
        [inputs.readings]
        file = "data/r.csv"
        [expected.hot]
        rows = [ { sensor = "b", temp = 22.0 }, { sensor = "a", temp = 25.25 } ]
    """)
    result = run_case(str(case))
    assert result.passed, "\n".join(result.messages)


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("colour = 1\n", "test.toml: unknown key 'colour'\n  hint: valid keys: sql, pipeline"),
        ("[inputs.nope]\nrows = []\n", "error: fixture for 'nope', which is not a source of"),
        ("[[steps]]\nadvance = \"1s\"\nend = true\n", "test.toml: step 1: a step does one thing"),
        ("[[steps]]\nadvance = \"soon\"\n", "step 1: advance: 'soon' is not a duration"),
        ("[expected.totals]\nmode = \"sorted\"\n", "[expected.totals]: mode must be final or append, not 'sorted'"),
        ("[expected.nope]\nrows = []\n", "expected rows for 'nope', which is not a sink of"),
        ("[expected.totals]\nrows = [ { kind = \"a\", n = 3, colour = 1 } ]\n",
         "expected row 1 does not have the sink's columns (missing s; unknown colour); columns: kind, n, s"),
        ("[expected.totals]\nrows = [ { kind = \"a\", n = \"many\", s = 1.0 } ]\n", "does not fit the sink's column types"),
        ("[[steps]]\nwatermark = { ghost = 2024-01-01T00:00:00 }\n", "error: fixture for 'ghost', which is not a source of"),
        ("sql = 'x'\npipeline = 'y.sql'\n", "give either sql = '''...''' or pipeline = \"file.sql\", not both"),
        ("[settings]\nbatch_sise = 3\n", "unknown setting 'batch_sise'"),
    ],
)
def test_malformed_tests_say_what_is_wrong(tmp_path, toml, message):
    case = tmp_path / "c"
    _write(case / "pipeline.sql", """
        CREATE SOURCE events (kind VARCHAR, v DOUBLE) WITH (connector = 'generator', rows_per_second = 5);
        CREATE SINK totals AS SELECT kind, count(*) AS n, sum(v) AS s FROM events GROUP BY kind
          WITH (connector = 'stdout');
    """)
    _jsonl(case / "inputs" / "events.jsonl", [{"kind": "a", "v": 1.0}])
    _write(case / "test.toml", toml)
    result = run_case(str(case))
    assert not result.passed
    assert message in "\n".join(result.messages)


def test_an_unbounded_source_without_fixture_is_named(tmp_path):
    case = tmp_path / "live"
    _write(case / "pipeline.sql", """
        CREATE SOURCE g (n BIGINT) WITH (connector = 'generator', rows_per_second = 5);
        SELECT n FROM g;
    """)
    result = run_case(str(case))
    assert not result.passed
    text = "\n".join(result.messages)
    assert "error: source 'g' is unbounded" in text
    assert f"hint: give it a fixture: {case / 'inputs' / 'g.jsonl'}" in text  # tmp_path: shown absolute


def test_sql_errors_in_a_test_pipeline_point_at_the_file(tmp_path):
    case = tmp_path / "typo"
    _write(case / "pipeline.sql", """
        CREATE SOURCE g (n BIGINT) WITH (connector = 'generator', max_rows = 3);
        SELECT nn FROM g;
    """)
    result = run_case(str(case))
    assert not result.passed
    assert f"{case / 'pipeline.sql'}:2:8: error: unknown column 'nn'" in result.messages[0]
