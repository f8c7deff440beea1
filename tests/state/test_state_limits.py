"""State is measured after every micro-batch: a warning when it grows large, a clear
error (exit 1, sinks flushed) at ``max_state_rows`` / ``max_state_bytes``, the state
in the progress line, the peak in the run summary and per operator in SHOW METRICS."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import orjson
import pyarrow as pa
import pytest

from sqlstream.cli.progress import Progress
from sqlstream.errors import SqlAnalysisError, StateLimitError
from sqlstream.operators.regular_join import RegularJoinOperator
from sqlstream.operators.window_aggregate import WindowAggregateOperator
from sqlstream.runtime.state_tracker import StateLimits, StateTracker
from sqlstream.settings import parse_setting
from sqlstream.testing import TestSession

pytestmark = pytest.mark.timeout(120)

REPO = Path(__file__).resolve().parents[2]
BASE_US = 1_699_000_000_000_000
SECOND = 1_000_000


def run_cli(tmp_path: Path, sql: str, *sets: str) -> subprocess.CompletedProcess:
    path = tmp_path / "pipeline.sql"
    path.write_text(textwrap.dedent(sql))
    args = [sys.executable, "-m", "sqlstream.cli.main", "run", str(path)]
    for item in sets:
        args += ["--set", item]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=120, env=env)


GROUP_BY = """
    CREATE SOURCE nums (n BIGINT) WITH (connector = 'generator', rows_per_second = 0, max_rows = 5000,
                                        fields.n.kind = 'sequence');
    CREATE SINK counts AS SELECT n, count(*) AS c FROM nums GROUP BY n
      WITH (connector = 'file', path = 'counts.jsonl', format = 'json');
"""


def test_unwindowed_group_by_stops_at_max_state_rows_with_exit_1_and_flushed_sink(tmp_path):
    result = run_cli(tmp_path, GROUP_BY, "max_state_rows=1000", "batch_size=100")
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert (
        "error: pipeline state passed max_state_rows = 1,000 rows: 1,100 rows / 18 KB held, most by "
        "group_aggregate in the query of sink 'counts' (1,100 rows / 18 KB); the run stopped after reading "
        "1,100 rows of nums; input after that point was not processed (results produced before it were written)\n"
        "  hint: aggregate over a window (TUMBLE, HOP, SESSION) instead of all time, or group by fewer keys; "
        "or raise the limit (SET max_state_rows = ...)"
    ) in result.stderr
    # what was produced before the limit is in the file: one +I per key of the 11 batches read
    rows = [orjson.loads(line) for line in (tmp_path / "counts.jsonl").read_bytes().splitlines()]
    assert len(rows) == 1_100 and {r["n"] for r in rows} == set(range(1_100))


def test_warning_at_80_percent_of_the_limit_once(tmp_path):
    result = run_cli(tmp_path, GROUP_BY, "max_state_rows=1000", "batch_size=100")
    warning = (
        "sqlstream: warning: pipeline state passed 800 rows (80% of the limit): 800 rows / 13 KB held, most by "
        "group_aggregate in the query of sink 'counts' (800 rows / 13 KB)\n"
        "  hint: aggregate over a window (TUMBLE, HOP, SESSION) instead of all time, or group by fewer keys; "
        "or raise the limit (SET max_state_rows = ...)\n"
    )
    assert warning in result.stderr
    assert result.stderr.count("warning:") == 1


def test_max_state_bytes_names_the_size_and_the_setting(tmp_path):
    result = run_cli(tmp_path, GROUP_BY, "max_state_bytes=20KB", "batch_size=100")
    assert result.returncode == 1, result.stderr
    assert "error: pipeline state passed max_state_bytes = 20 KB: 1,300 rows / 21 KB held" in result.stderr
    assert "or raise the limit (SET max_state_bytes = ...)" in result.stderr


def test_below_the_limit_the_run_finishes_and_the_summary_shows_the_peak(tmp_path):
    result = run_cli(tmp_path, GROUP_BY, "max_state_rows=10k")
    assert result.returncode == 0, result.stderr
    assert "warning" not in result.stderr
    assert "| counts: 5,000 rows out | dead letters: 0 | peak state 5.0k rows / 80 KB | elapsed " in result.stderr


JOIN = """
    CREATE SOURCE a (k BIGINT) WITH (connector = 'generator', rows_per_second = 0, max_rows = 3000,
                                     fields.k.kind = 'sequence');
    CREATE SOURCE b (k BIGINT) WITH (connector = 'generator', rows_per_second = 0, max_rows = 3000,
                                     fields.k.kind = 'sequence');
    CREATE SINK pairs AS SELECT a.k AS ak, b.k AS bk FROM a JOIN b ON a.k = b.k
      WITH (connector = 'file', path = 'pairs.jsonl', format = 'json');
"""


def test_regular_join_without_ttl_stops_at_the_limit_and_points_at_join_state_ttl(tmp_path):
    result = run_cli(tmp_path, JOIN, "max_state_rows=1000", "batch_size=100")
    assert result.returncode == 1, result.stderr
    assert "error: pipeline state passed max_state_rows = 1,000 rows: " in result.stderr
    assert "most by regular_join in the query of sink 'pairs'" in result.stderr
    assert "of a, " in result.stderr and "of b; input after that point was not processed" in result.stderr
    assert (
        "  hint: without a time bound it keeps every row of both inputs: SET join_state_ttl = '1h' (state older "
        "than that is dropped), or join within a window or an event-time interval; or raise the limit "
        "(SET max_state_rows = ...)"
    ) in result.stderr
    pairs = [orjson.loads(line) for line in (tmp_path / "pairs.jsonl").read_bytes().splitlines()]
    assert pairs and all(p["ak"] == p["bk"] for p in pairs)  # the matches found before the stop were written


def _join_session(**settings) -> tuple[TestSession, object]:
    session = TestSession()
    for key, value in settings.items():
        session.execute(f"SET {key} = '{value}'")
    session.execute("CREATE SOURCE a (k BIGINT, s VARCHAR) WITH (connector = 'memory')")
    session.execute("CREATE SOURCE b (k BIGINT, t VARCHAR) WITH (connector = 'memory')")
    session.execute("CREATE SINK out AS SELECT a.k, s, t FROM a JOIN b ON a.k = b.k WITH (connector = 'memory')")
    return session, session.start()


def test_regular_join_state_grows_without_ttl_and_the_default_warning_names_it():
    session, run = _join_session()
    warnings: list[str] = []
    driver = run.driver
    driver.state = StateTracker(driver.state.holders, StateLimits(warn_rows=1_000), warnings.append, driver._position)
    for i in range(4):
        session.stream("a").push(pa.table({"k": pa.array(range(i * 300, (i + 1) * 300)), "s": ["x" * 20] * 300}))
        run.pump()
    assert driver.state.current.rows == 1_200 and driver.state.current.bytes > 1_200 * 8
    assert warnings == [
        f"warning: pipeline state passed 1,000 rows: 1,200 rows / {driver.state.current.bytes // 1000} KB held, "
        f"most by regular_join in the query of sink 'out' (1,200 rows / {driver.state.current.bytes // 1000} KB)\n"
        "  hint: without a time bound it keeps every row of both inputs: SET join_state_ttl = '1h' (state older "
        "than that is dropped), or join within a window or an event-time interval; "
        "or set max_state_rows / max_state_bytes to stop the run at a limit instead"
    ]
    for i in range(4, 8):  # no new warning until the state doubles
        session.stream("a").push(pa.table({"k": pa.array(range(i * 300, (i + 1) * 300)), "s": ["x"] * 300}))
        run.pump()
    assert len(warnings) == 2 and warnings[1].startswith("warning: pipeline state passed 2,000 rows: 2,100 rows")


def test_regular_join_with_ttl_frees_state_and_reports_it():
    session, run = _join_session(join_state_ttl="10s")
    (join,) = [op for op in run.driver.operators if isinstance(op, RegularJoinOperator)]
    session.stream("a").push(pa.table({"k": pa.array(range(500)), "s": ["x"] * 500}))
    run.pump()
    assert join.state_size().rows == 500 and join.state_size().bytes > 500 * 8
    run.advance(11)
    run.advance(1)
    assert join.state_size() == (0, 0)


def test_window_state_goes_back_down_when_windows_close():
    session = TestSession()
    session.execute("""CREATE SOURCE src (k BIGINT, ts TIMESTAMP, WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)
                       WITH (connector = 'memory')""")
    session.execute("""CREATE SINK out AS SELECT window_start, k, count(*) AS n
                       FROM TUMBLE(src, ts, INTERVAL '10' SECOND) GROUP BY window_start, window_end, k
                       WITH (connector = 'memory')""")
    run = session.start()
    (window,) = [op for op in run.driver.operators if isinstance(op, WindowAggregateOperator)]
    ts = pa.array([BASE_US + i * 1_000 for i in range(1_000)], pa.timestamp("us"))
    session.stream("src").push(pa.table({"k": pa.array(range(1_000)), "ts": ts}))
    run.pump()
    held = run.driver.state.current
    assert held.rows == 1_000 and held.bytes > 1_000 * 8 and window.state_size() == held
    # a row 20 s later moves the watermark past the end of the first window: its 1,000 groups are freed
    session.stream("src").push(pa.table({"k": pa.array([0]), "ts": pa.array([BASE_US + 20 * SECOND], pa.timestamp("us"))}))
    run.pump()
    assert run.driver.state.current.rows == 1 and run.driver.state.current.bytes < held.bytes
    assert run.driver.state.peak == held
    summary = run.finish()
    assert run.driver.state.sizes()[0][1] == (0, 0)
    assert f"peak state 1.0k rows / {held.bytes // 1000} KB" in summary.line()


def test_show_metrics_lists_state_rows_and_bytes_per_operator():
    session, run = _join_session()
    session.stream("b").push(pa.table({"k": pa.array([1, 2, 3]), "t": ["u", "v", "w"]}))
    run.pump()
    metrics = {(r["kind"], r["name"]): r["rows"] for r in session.execute("SHOW METRICS")[0].table.to_pylist()}
    (join,) = [op for op in run.driver.operators if isinstance(op, RegularJoinOperator)]
    assert metrics[("state", "rows")] == metrics[("state", "regular_join in the query of sink 'out' rows")] == 3
    assert metrics[("state", "bytes")] == metrics[("state", "regular_join in the query of sink 'out' bytes")]
    assert metrics[("state", "bytes")] == join.state_size().bytes > 0


def test_progress_line_shows_the_state():
    session, run = _join_session()
    session.stream("a").push(pa.table({"k": pa.array(range(2_500)), "s": ["x"] * 2_500}))
    run.pump()
    out = io.StringIO()
    progress = Progress(out)
    progress.update(run.driver)
    bytes_kb = run.driver.state.current.bytes // 1000
    assert out.getvalue().startswith("\r\x1b[2Kin 2,500 (")
    assert out.getvalue().endswith(f"dead letters 0  state 2.5k rows / {bytes_kb} KB")
    progress.note("warning: something")  # a warning clears the progress line and gets its own line
    assert out.getvalue().endswith("\r\x1b[2Ksqlstream: warning: something\n")


def test_state_limit_error_from_the_python_api():
    session, run = _join_session(max_state_rows="100")
    session.stream("a").push(pa.table({"k": pa.array(range(150)), "s": ["x"] * 150}))
    with pytest.raises(StateLimitError) as raised:
        run.finish()
    assert raised.value.setting == "max_state_rows" and raised.value.exit_code == 1
    assert "pipeline state passed max_state_rows = 100 rows: 150 rows" in raised.value.message


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("max_state_bytes", "2GB", 2_000_000_000),
        ("max_state_bytes", "500 MB", 500_000_000),
        ("max_state_bytes", "1.5GiB", 1_610_612_736),
        ("max_state_bytes", "off", None),
        ("max_state_rows", "10M", 10_000_000),
        ("max_state_rows", "1_000_000", 1_000_000),
        ("max_state_rows", 5000, 5000),
        ("max_state_rows", "none", None),
    ],
)
def test_state_limit_settings_parse_sizes(key, value, expected):
    assert parse_setting(key, value) == expected


def test_bad_state_limit_values_say_what_is_expected():
    with pytest.raises(SqlAnalysisError) as raised:
        parse_setting("max_state_bytes", "2 parsecs")
    assert raised.value.message == (
        "invalid value '2 parsecs' for setting 'max_state_bytes': "
        "unknown unit 'parsecs' in '2 parsecs' (examples: '500MB', '2GB', '1.5GiB')"
    )
    with pytest.raises(SqlAnalysisError) as raised:
        parse_setting("max_state_rows", "0")
    assert raised.value.message == (
        "invalid value '0' for setting 'max_state_rows': must be positive (or 'off' for no limit)"
    )
    with pytest.raises(SqlAnalysisError) as raised:
        parse_setting("max_state_rows", "lots")
    assert "'lots' is not a number of rows (examples: '1000000', '10M', '500k', or 'off')" in raised.value.message
