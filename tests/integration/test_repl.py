"""``sqlstream repl``: scripts on piped stdin, -e/-f, result modes and formats, meta
commands, background sinks, \\save_test, errors, and the prompt (prompt_toolkit's pipe
input) with multi-line input, history, Ctrl-R and Tab completion."""

from __future__ import annotations

import io
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prompt_toolkit.completion import CompleteEvent
from prompt_toolkit.document import Document
from prompt_toolkit.input import create_pipe_input
from prompt_toolkit.output import DummyOutput
from rich.console import Console

from sqlstream.cli.completion import SqlCompleter
from sqlstream.cli.prompt import make_prompt_session
from sqlstream.cli.repl import Repl
from sqlstream.pipeline_tests import run_case
from sqlstream.session import Session

NUMS = (
    "CREATE SOURCE nums (n BIGINT, temp DOUBLE) WITH (connector = 'generator', max_rows = 30, "
    "rows_per_second = 0, fields.n.kind = 'sequence', fields.temp.min = 0, fields.temp.max = 1);"
)
LIVE = (
    "CREATE SOURCE live (id BIGINT, ts TIMESTAMP, WATERMARK FOR ts AS ts - INTERVAL '1' SECOND) "
    "WITH (connector = 'generator', rows_per_second = 500, fields.id.kind = 'sequence');"
)


def _session(tmp_path: Path) -> Session:
    return Session(base_dir=str(tmp_path), dead_letter_path=str(tmp_path / "dead.jsonl"))


def _repl(tmp_path: Path, **kwargs) -> tuple[Repl, io.StringIO, io.StringIO]:
    out, err = io.StringIO(), io.StringIO()
    return Repl(_session(tmp_path), out=out, err=err, **kwargs), out, err


def _script(repl: Repl, text: str, tmp_path: Path) -> bool:
    return repl.run_lines(textwrap.dedent(text).strip().splitlines(), "<stdin>", str(tmp_path))


def _wait_for(condition, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def _repl_process(args: list[str], stdin: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "sqlstream.cli.main", "repl", *args],
        input=stdin, cwd=cwd, capture_output=True, text=True, timeout=120,
    )


# -- scripts: piped stdin, -e, -f ---------------------------------------------------------------------


def test_piped_stdin_runs_ddl_and_queries_and_agrees_with_duckdb(tmp_path):
    """``sqlstream repl --json FILE < queries``: FILE's DDL first, then every statement on stdin;
    the rows equal DuckDB's over the same file."""
    rng = random.Random(3)
    rows = [{"id": i, "kind": rng.choice("abc"), "v": round(rng.uniform(-5, 5), 3)} for i in range(300)]
    (tmp_path / "events.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "defs.sql").write_text(
        "CREATE SOURCE events (id BIGINT, kind VARCHAR, v DOUBLE)\n"
        "  WITH (connector = 'file', path = 'events.jsonl', format = 'json');\n"
    )
    stdin = (
        "SET file_batch_size = 7;\n"
        "SELECT kind, count(*) AS n, sum(v) AS total\n  FROM events GROUP BY kind;\n"
        "SELECT id, v * 2 AS v2 FROM events WHERE v > 4;\n"
    )
    proc = _repl_process(["--json", "defs.sql"], stdin, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    out = [json.loads(line) for line in proc.stdout.splitlines()]
    totals = sorted((r for r in out if "total" in r), key=lambda r: r["kind"])
    filtered = sorted((r for r in out if "v2" in r), key=lambda r: r["id"])
    con = duckdb.connect()
    src = f"read_json('{tmp_path / 'events.jsonl'}', format = 'newline_delimited')"
    oracle_totals = con.sql(f"SELECT kind, count(*), sum(v) FROM {src} GROUP BY kind ORDER BY kind").fetchall()
    oracle_filtered = con.sql(f"SELECT id, v * 2 FROM {src} WHERE v > 4 ORDER BY id").fetchall()
    assert [(r["kind"], r["n"]) for r in totals] == [(k, n) for k, n, _ in oracle_totals]
    assert [r["total"] for r in totals] == pytest.approx([t for _, _, t in oracle_totals])
    assert [r["id"] for r in filtered] == [i for i, _ in oracle_filtered]
    assert [r["v2"] for r in filtered] == pytest.approx([v for _, v in oracle_filtered])
    assert len(filtered) > 10


def test_script_flags_csv_output_and_errors_with_file_locations(tmp_path):
    """-e runs before -f; an error names the file, line and column with a caret and a hint,
    the statements after it still run, and the exit code says invalid input."""
    (tmp_path / "script.sql").write_text(
        "-- a query with a typo\n"
        "SELECT n FROM nums WHERE n < 2;\n"
        "SELECT n,\n       tmep FROM nums;\n"
        "SELECT n * 10 AS m FROM nums WHERE n = 3;\n"
    )
    proc = _repl_process(["--csv", "-e", NUMS, "-f", "script.sql"], "", tmp_path)
    assert proc.returncode == 2
    assert proc.stdout == '"n"\n0\n1\n"m"\n30\n'
    assert proc.stderr == (
        "script.sql:4:8: error: unknown column 'tmep'\n"
        "         tmep FROM nums;\n"
        "         ^^^^\n"
        "  hint: did you mean 'temp'?\n"
    )


# -- results: formats and modes ------------------------------------------------------------------------


def test_table_format_output_and_row_count(tmp_path):
    repl, out, err = _repl(tmp_path)
    _script(repl, f"""
        {NUMS}
        SELECT n, n * n AS sq
          FROM nums WHERE n BETWEEN 8 AND 10;
        SELECT n % 3 AS k, count(*) AS c, sum(n) AS s FROM nums GROUP BY n % 3;
    """, tmp_path)
    assert err.getvalue() == ""
    assert out.getvalue() == (
        "n    | sq\n"
        "-----+-----\n"
        "8    | 64\n"
        "9    | 81\n"
        "10   | 100\n"
        "(3 rows)\n"
        "k    | c    | s\n"
        "-----+------+-----\n"
        "0    | 10   | 135\n"
        "1    | 10   | 145\n"
        "2    | 10   | 155\n"
        f"(3 rows, {repl.last.outcome.received} changes)\n"
    )


def test_modes_and_formats(tmp_path):
    repl, out, err = _repl(tmp_path)
    _script(repl, f"""
        {NUMS}
        \\mode changelog
        SELECT n FROM nums WHERE n < 2;
        \\mode tableau
        \\format json
        SELECT n % 2 AS k, count(*) AS c FROM nums WHERE n < 4 GROUP BY n % 2;
        \\format csv
        \\mode table
        SELECT n % 2 AS k, count(*) AS c FROM nums WHERE n < 4 GROUP BY n % 2;
        \\mode
        \\format
    """, tmp_path)
    assert err.getvalue() == ""
    lines = out.getvalue().splitlines()
    assert lines[:5] == ["op   | n", "-----+-----", "+I   | 0", "+I   | 1", "(2 rows)"]
    changes = [json.loads(line) for line in lines[5:] if line.startswith("{")]
    assert {c["__op"] for c in changes} <= {"+I", "-U", "+U"}
    from sqlstream.changelog import fold_changelog

    assert sorted(map(json.dumps, fold_changelog(changes))) == sorted(
        json.dumps(r) for r in [{"k": 0, "c": 2}, {"k": 1, "c": 2}]
    )
    csv_start = lines.index('"k","c"')
    assert sorted(lines[csv_start + 1 : csv_start + 3]) == ["0,2", "1,2"]
    assert lines[-2:] == ["mode: table", "format: csv"]


def test_updating_result_redrawn_in_place_ends_with_the_final_table(tmp_path):
    """On a terminal an updating aggregate is a table redrawn in place (rich Live); when the
    bounded source ends, the final values stay on screen."""
    screen = io.StringIO()
    terminal = Console(file=screen, force_terminal=True, width=100, height=30, color_system=None)
    repl = Repl(_session(tmp_path), out=screen, err=io.StringIO(), terminal=terminal)
    _script(repl, """
        CREATE SOURCE g (id BIGINT) WITH (connector = 'generator', max_rows = 90, rows_per_second = 300,
                                          fields.id.kind = 'sequence');
        SELECT id % 3 AS k, count(*) AS n, sum(id) AS s FROM g GROUP BY id % 3;
    """, tmp_path)
    text = screen.getvalue()
    assert "\x1b[2K" in text  # the live region was redrawn in place
    final = text[text.rindex("┏") :]
    for k in range(3):
        total = sum(i for i in range(90) if i % 3 == k)
        assert f"│ {k} │ 30 │ {total} │" in final.replace("  ", " ").replace("  ", " ")
    assert final.rstrip().endswith(f"(3 rows, {repl.last.outcome.received} changes)")
    assert "watermark" not in final


def test_output_to_a_file_and_timing(tmp_path):
    repl, out, err = _repl(tmp_path, interactive=True)
    target = tmp_path / "result.json"
    _script(repl, f"""
        {NUMS}
        \\format json
        \\o {target}
        SELECT n FROM nums WHERE n > 27;
        \\o
        \\timing on
        SELECT n FROM nums WHERE n = 0;
    """, tmp_path)
    assert err.getvalue() == ""
    assert [json.loads(line) for line in target.read_text().splitlines()] == [{"n": 28}, {"n": 29}]
    text = out.getvalue()
    assert f"Results go to {target}." in text
    assert "Results go to the terminal." in text
    assert "Timing is on." in text
    assert '{"n":0}\nTime: ' in text and " ms\n" in text


def test_describe_and_show_meta_commands(tmp_path):
    repl, out, err = _repl(tmp_path)
    _script(repl, f"""
        {NUMS}
        CREATE VIEW warm AS SELECT n, temp FROM nums WHERE temp > 0.5;
        \\d
        \\d warm
        \\d NUMS
        SHOW VIEWS;
        \\?
    """, tmp_path)
    assert err.getvalue() == ""
    text = out.getvalue()
    assert "nums                  | source | generator(" in text
    assert "warm                  | view   | CREATE VIEW warm AS SELECT n, temp FROM nums WHERE temp > 0.5" in text
    assert "column | type   | nullable\n-------+--------+---------\nn      | BIGINT | true\ntemp   | DOUBLE | true\n" in text
    assert "view warm: CREATE VIEW warm" in text
    assert "source nums: generator(" in text
    assert "\\save_test  write the session's DDL" in text


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("\\frobnicate", "<stdin>:2:1: error: unknown command '\\frobnicate'\n  \\frobnicate\n  ^^^^^^^^^^^\n"
                         "  hint: \\? lists the commands"),
        ("\\mod table", "<stdin>:2:1: error: unknown command '\\mod'\n  \\mod table\n  ^^^^\n"
                        "  hint: did you mean '\\mode'? \\? lists the commands"),
        ("\\mode fancy", "<stdin>:2:1: error: unknown result mode 'fancy'\n  \\mode fancy\n  ^^^^^\n"
                         "  hint: \\mode table | changelog | tableau"),
        ("\\format xml", "error: unknown format 'xml'"),
        ("\\timing maybe", "error: \\timing takes on or off, not 'maybe'"),
        ("\\save_test", "error: \\save_test needs a name\n  \\save_test\n  ^^^^^^^^^^\n  hint: \\save_test tests/sql/my_case"),
        ("\\save_test somewhere", "error: no query to save yet"),
        ("\\o /nonexistent/dir/out.txt", "error: cannot write /nonexistent/dir/out.txt: No such file or directory"),
        ("\\d nothing", "error: unknown name 'nothing'"),
        ("SELECT * FROM numz;", ("<stdin>:2:15: error: unknown source",  # the planner's wording may grow
                                 "'numz'\n  SELECT * FROM numz;\n                ^^^^\n  hint: did you mean 'nums'?")),
        ("STOP QUERY 7;", "<stdin>:2:1: error: no query 7\n  STOP QUERY 7;\n  ^\n"
                          "  hint: SHOW QUERIES lists them (numbers: none)"),
        ("SET batch_size = 'lots';", "<stdin>:2:18: error: invalid value 'lots' for setting 'batch_size'"),
    ],
)
def test_user_errors_print_with_location_and_the_repl_goes_on(tmp_path, line, message):
    repl, out, err = _repl(tmp_path)
    assert _script(repl, f"{NUMS}\n{line}\nSELECT n FROM nums WHERE n = 5;", tmp_path)
    for fragment in (message,) if isinstance(message, str) else message:
        assert fragment in err.getvalue()
    assert out.getvalue().endswith("5\n(1 row)\n")  # the statement after the error ran
    assert repl.exit_code == 2


def test_an_open_string_continues_on_the_next_line_until_the_script_ends(tmp_path):
    repl, out, err = _repl(tmp_path)
    _script(repl, f"{NUMS}\nSELECT 'open FROM nums;\nSELECT n FROM nums;", tmp_path)
    assert out.getvalue() == ""
    assert err.getvalue().startswith("<stdin>:2:8: error: unterminated literal: missing closing '\n  SELECT 'open")


def test_a_failing_udf_does_not_end_the_repl(tmp_path):
    (tmp_path / "udfs").mkdir()
    (tmp_path / "udfs" / "fragile.py").write_text(textwrap.dedent("""
        import pyarrow as pa
        import pyarrow.compute as pc
        from sqlstream import udf

        @udf(args=[pa.int64()], returns=pa.int64())
        def fragile(x: pa.Array) -> pa.Array:
            if pc.any(pc.equal(x, 3)).as_py():
                raise ValueError("three is not allowed")
            return pc.multiply(x, 10)
    """))
    repl, out, err = _repl(tmp_path)
    repl.session.load_udfs(str(tmp_path / "udfs"))
    _script(repl, f"""
        {NUMS}
        SELECT n, fragile(n) AS f FROM nums WHERE n < 5;
        SELECT fragile(n, n) AS f FROM nums;
        SELECT n FROM nums WHERE n = 29;
    """, tmp_path)
    text = out.getvalue()
    assert "0    | 0\n1    | 10\n2    | 20\n4    | 40\n(4 rows)\n" in text  # the row that failed is a dead letter
    assert text.endswith("29\n(1 row)\n")
    dead = [json.loads(line) for line in (tmp_path / "dead.jsonl").read_text().splitlines()]
    assert [(d["reason"], d["detail"]) for d in dead] == [("udf", "fragile: ValueError: three is not allowed")]
    assert "<stdin>:3:8: error:" in err.getvalue() and "fragile" in err.getvalue()


# -- background sinks -------------------------------------------------------------------------------------


def test_create_sink_starts_in_the_background_show_and_stop_queries(tmp_path):
    repl, out, err = _repl(tmp_path, interactive=True)
    _script(repl, f"""
        {NUMS}
        {LIVE}
        CREATE SINK squares AS SELECT n, n * n AS sq FROM nums
          WITH (connector = 'file', path = 'squares.jsonl', format = 'json');
        CREATE SINK ticks AS SELECT id FROM live WITH (connector = 'file', path = 'ticks.jsonl', format = 'json');
    """, tmp_path)
    assert err.getvalue() == ""
    assert "started query 1: sink squares (file" in out.getvalue()
    assert "started query 2: sink ticks (file" in out.getvalue()
    first, second = repl.background.queries
    _wait_for(lambda: first.status == "finished", "the bounded sink to finish")
    _wait_for(lambda: second.row()["rows_out"] > 0, "the live sink to write rows")
    rows = [json.loads(line) for line in (tmp_path / "squares.jsonl").read_text().splitlines()]
    assert rows == [{"n": n, "sq": n * n} for n in range(30)]
    out.truncate(0), out.seek(0)
    _script(repl, "\\format json\nSHOW QUERIES;\nSHOW METRICS;", tmp_path)
    shown = [json.loads(line) for line in out.getvalue().splitlines() if line.startswith("{")]
    queries = {r["id"]: r for r in shown if "status" in r}
    assert queries[1]["status"] == "finished" and queries[1]["rows_in"] == 30 and queries[1]["rows_out"] == 30
    assert queries[2]["status"] == "running" and queries[2]["sink"] == "ticks"
    metrics = [r for r in shown if "kind" in r]
    assert {"query": 1, "kind": "sink", "name": "squares", "rows": 30, "dead_letters": 0} in metrics
    out.truncate(0), out.seek(0)
    _script(repl, "STOP QUERY 2;\nSTOP QUERY 3;", tmp_path)
    assert second.status == "stopped"
    assert out.getvalue().startswith("query 2 (sink ticks) stopped: live: ")
    assert "<stdin>:2:1: error: no query 3\n  STOP QUERY 3;\n  ^\n  hint: SHOW QUERIES lists them (numbers: 1, 2)" in err.getvalue()
    written = (tmp_path / "ticks.jsonl").read_text().splitlines()
    assert [json.loads(line)["id"] for line in written] == list(range(len(written)))  # flushed on stop
    repl.close()


def test_dropping_a_running_sink_stops_it(tmp_path):
    repl, out, err = _repl(tmp_path)
    _script(repl, f"""
        {LIVE}
        CREATE SINK ticks AS SELECT id FROM live WITH (connector = 'file', path = 'ticks.jsonl', format = 'json');
    """, tmp_path)
    query = repl.background.queries[0]
    _wait_for(lambda: query.row()["rows_out"] > 0, "rows")
    _script(repl, "DROP SINK ticks;", tmp_path)
    assert query.status == "stopped"
    assert repl.background.queries == []
    assert "ticks" not in repl.session.sinks
    assert err.getvalue().startswith("sqlstream: started query 1: sink ticks (file")


def test_a_script_waits_for_its_bounded_sinks(tmp_path):
    proc = _repl_process([], f"{NUMS}\nCREATE SINK out AS SELECT n FROM nums WITH (connector = 'file', "
                             "path = 'out.jsonl', format = 'json');\n", tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.startswith("sqlstream: started query 1: sink out")
    assert "query 1 (sink out) finished: nums: 30 rows in | out: 30 rows out" in proc.stderr
    assert len((tmp_path / "out.jsonl").read_text().splitlines()) == 30


# -- \save_test -----------------------------------------------------------------------------------------------


def test_save_test_turns_a_live_query_into_a_passing_pipeline_test(tmp_path):
    repl, out, err = _repl(tmp_path)
    case = tmp_path / "cases" / "first_ids"
    _script(repl, f"""
        {LIVE}
        CREATE VIEW even AS SELECT id, ts FROM live WHERE id % 2 = 0;
        SELECT id FROM even LIMIT 4;
        \\save_test {case}
        \\save_test {case}
    """, tmp_path)
    assert out.getvalue().startswith("id\n----\n0\n2\n4\n6\n(4 rows)\n")
    assert f"wrote {case}/: pipeline.sql, 1 input fixture(s)" in out.getvalue()
    assert f"`sqlstream test {case}` passes" in out.getvalue()
    assert f"error: '{case}' already exists" in err.getvalue()
    pipeline = (case / "pipeline.sql").read_text()
    assert "CREATE SOURCE live" in pipeline and "CREATE VIEW even" in pipeline
    assert pipeline.rstrip().endswith("SELECT id FROM even LIMIT 4;")
    assert [json.loads(x) for x in (case / "expected" / "query_1.jsonl").read_text().splitlines()] == [
        {"id": 0}, {"id": 2}, {"id": 4}, {"id": 6}
    ]
    assert run_case(str(case)).passed
    # the fixture holds what the query read: change an expected row and the test fails
    (case / "expected" / "query_1.jsonl").write_text('{"id":0}\n{"id":2}\n{"id":4}\n{"id":8}\n')
    assert not run_case(str(case)).passed


def test_save_test_of_an_updating_aggregate(tmp_path):
    repl, out, err = _repl(tmp_path)
    case = tmp_path / "agg"
    _script(repl, f"""
        {NUMS}
        SET batch_size = 4;
        SELECT n % 4 AS k, max(temp) AS hottest, count(*) AS c FROM nums GROUP BY n % 4;
        \\save_test {case}
    """, tmp_path)
    assert err.getvalue() == ""
    assert (case / "test.toml").read_text().startswith("[settings]\nbatch_size = 4\n")
    expected = [json.loads(x) for x in (case / "expected" / "query_1.jsonl").read_text().splitlines()]
    assert sorted(r["k"] for r in expected) == [0, 1, 2, 3]
    assert sum(r["c"] for r in expected) == 30
    assert run_case(str(case)).passed


# -- the prompt (prompt_toolkit pipe input) ---------------------------------------------------------------


def _interact(tmp_path: Path, keys: list, history: Path | None = None) -> tuple[Repl, str, str]:
    """Type ``keys`` at the prompt; a callable in the list is called with (prompt, output so
    far) until it returns True (a condition to wait for, or an action)."""
    repl, out, err = _repl(tmp_path, interactive=True)
    history = history or tmp_path / "history"
    with create_pipe_input() as pipe:
        prompt = make_prompt_session(repl.session, input=pipe, output=DummyOutput(), history=str(history))

        def feed():
            for key in keys:
                if callable(key):
                    _wait_for(lambda key=key: key(prompt, out.getvalue()), "the prompt")
                else:
                    pipe.send_text(key)

        feeder = threading.Thread(target=feed)
        feeder.start()
        repl.interact(prompt)
        feeder.join()
    return repl, out.getvalue(), err.getvalue()


def test_prompt_multiline_history_completion_and_quit(tmp_path):
    repl, out, err = _interact(tmp_path, [
        "CREATE SOURCE nums (n BIGINT, temp DOUBLE)\r",
        "  WITH (connector = 'generator', max_rows = 30, rows_per_second = 0,\r",
        "        fields.n.kind = 'sequence');\r",
        "SELECT n FROM nums WHERE te\t > 2 LIMIT 2;\r",  # Tab completes the column 'temp'
        "SELECT n FROM nums\r WHERE n = 3;\r",
        "\x03",  # Ctrl-C at the prompt clears the line, the REPL stays
        "\\q\r",
    ])
    assert err == ""
    assert "CREATE SOURCE nums\n" in out
    assert "n\n----\n(0 rows)\n" in out
    assert out.endswith("3\n(1 row)\n")
    history = (tmp_path / "history").read_text()
    assert "+SELECT n FROM nums WHERE temp > 2 LIMIT 2;\n" in history
    assert "+SELECT n FROM nums\n+ WHERE n = 3;\n" in history
    assert "+CREATE SOURCE nums (n BIGINT, temp DOUBLE)\n+  WITH (connector" in history


def test_prompt_live_query_stopped_by_ctrl_c_returns_to_the_prompt(tmp_path):
    """Ctrl-C (a real SIGINT) while a query over an unbounded generator scrolls: the query
    stops, the REPL goes on with the next statement."""

    def interrupt_after_rows(prompt, out):
        if out.count("\n") < 8:
            return False
        os.kill(os.getpid(), signal.SIGINT)
        return True

    repl, out, err = _interact(tmp_path, [
        LIVE + "\r",
        "SELECT id\r FROM live;\r",
        interrupt_after_rows,
        lambda prompt, out: "stopped)" in out,
        "SELECT id FROM live LIMIT 2;\r",
        "\\q\r",
    ])
    assert err == ""
    first, _, rest = out.partition("stopped)\n")
    ids = [int(line) for line in first.splitlines()[3:-1] if line.strip().isdigit()]
    assert ids == list(range(len(ids))) and len(ids) >= 6
    assert repl.last.outcome.ended  # the LIMIT query after the stopped one ran to its end
    assert rest == "id\n----\n0\n1\n(2 rows)\n"


def test_prompt_ctrl_r_finds_a_statement_in_the_history_file(tmp_path):
    history = tmp_path / "history"
    history.write_text(f"\n# earlier\n+{NUMS}\n\n# earlier\n+SELECT n * 7 AS seven FROM nums WHERE n = 6;\n")
    def history_loaded(entries):  # the prompt loads its history file in the background
        return lambda prompt, out: prompt.app.is_running and prompt.default_buffer.working_index == entries

    repl, out, err = _interact(tmp_path, [
        history_loaded(2), "\x12", "CREATE", "\r", "\r",  # Ctrl-R, type, accept the match, run it
        history_loaded(3), "\x12", "seven", "\r", "\r",
        "\\q\r",
    ], history=history)
    assert err == ""
    assert "CREATE SOURCE nums\n" in out
    assert "seven\n-----\n42\n(1 row)\n" in out


# -- folding updating results for display ------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 4), st.integers(0, 3), st.booleans()), max_size=60),
       st.integers(1, 7), st.booleans())
def test_current_table_folds_like_the_changelog_reference(steps, batch_size, nested):
    """ArrowChangelogTable (Arrow group-by, compacted) == fold_changelog (the Python reference),
    for retractions, duplicates, NULLs, any batch split, and nested columns (fallback)."""
    from sqlstream.changelog import fold_changelog
    from sqlstream.cli.render import current_table

    live: dict[int, object] = {}
    changes = []
    for key, value, delete in steps:  # a consistent changelog: retract what is there
        shown = None if value == 0 else ([value] if nested else float(value))
        was_live = key in live
        if was_live:
            changes.append({"__op": "-D" if delete else "-U", "k": key, "v": live.pop(key)})
            if delete:
                continue
        changes.append({"__op": "+U" if was_live else "+I", "k": key, "v": shown})
        live[key] = shown
    schema = pa.schema([("__op", pa.string()), ("k", pa.int64()), ("v", pa.list_(pa.int64()) if nested else pa.float64())])
    table = current_table(["k", "v"])
    for start in range(0, len(changes), batch_size):
        table.apply_batch(pa.RecordBatch.from_pylist(changes[start : start + batch_size], schema=schema))
    expected = sorted(fold_changelog(changes), key=lambda r: (r["k"], str(r["v"])))
    assert sorted(table.rows(), key=lambda r: (r["k"], str(r["v"]))) == expected
    assert len(table) == len(expected)


# -- completion --------------------------------------------------------------------------------------------


@pytest.fixture
def completer(tmp_path):
    session = _session(tmp_path)
    session.execute(
        "CREATE SOURCE sensors (sensor_id BIGINT, temp DOUBLE, ts TIMESTAMP) WITH (connector = 'generator');"
        "CREATE VIEW hot AS SELECT sensor_id AS sid, temp FROM sensors WHERE temp > 0.9;"
        "CREATE SINK alerts AS SELECT sid FROM hot WITH (connector = 'stdout');"
    )
    return SqlCompleter(session)


def _complete(completer: SqlCompleter, text: str, cursor: int | None = None) -> list[str]:
    document = Document(text, cursor_position=len(text) if cursor is None else cursor)
    return [c.text for c in completer.get_completions(document, CompleteEvent(completion_requested=True))]


@pytest.mark.parametrize(
    ("text", "cursor", "expected"),
    [
        ("SELECT te FROM sensors", 9, ["temp"]),  # columns of the sources in the statement
        ("SELECT s.te FROM sensors s", 11, ["s.temp"]),  # through an alias
        ("SELECT h.s FROM hot AS h", 10, ["h.sid"]),  # a view's columns
        ("SELECT sen", None, ["sensor_id"]),  # no FROM yet: columns of every relation
        ("SELECT window_e FROM TUMBLE(sensors, ts, INTERVAL '1' SECOND)", 15, ["window_end"]),
        ("SELECT * FROM h", None, ["hot", "HOP"]),
        ("SELECT * FROM TUMBLE(se", None, ["sensors"]),
        ("DROP SINK a", None, ["alerts"]),
        ("DESCRIBE h", None, ["hot"]),
        ("INSERT INTO al", None, ["alerts"]),
        ("SELECT upp", None, ["upper"]),  # DataFusion built-ins
        ("sel", None, ["select"]),  # keywords keep the case being typed
        ("CREATE SOURCE s (a BIGINT, b DOU", None, ["DOUBLE"]),
        ("CREATE SOURCE s (a BIGINT) WITH (", None, ["connector"]),
        ("CREATE SOURCE s (a BIGINT) WITH (connector = 'gen", None, ["generator'"]),
        ("CREATE SOURCE s (a BIGINT) WITH (connector = 'generator', max_r", None, ["max_rows"]),
        ("CREATE SOURCE s (a BIGINT) WITH (connector = 'generator', fields.a.k", None, ["fields.a.kind"]),
        ("CREATE SOURCE s (a BIGINT) WITH (connector = 'generator', clock = '", None, ["wall'", "simulated'"]),
        ("CREATE SINK k AS SELECT 1 FROM hot WITH (connector = 'file', pa", None, ["path"]),
        ("\\mo", None, ["\\mode"]),
        ("\\format j", None, ["json"]),
        ("\\d se", None, ["sensors"]),
    ],
)
def test_completion(completer, text, cursor, expected):
    assert _complete(completer, text, cursor)[: len(expected)] == expected


def test_completion_skips_options_already_given(completer):
    found = _complete(completer, "CREATE SOURCE s (a BIGINT) WITH (connector = 'generator', max_rows = 3, ")
    assert "max_rows" not in found and "rows_per_second" in found and "seed" in found
