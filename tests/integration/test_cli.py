"""The ``sqlstream`` command as a user runs it (a subprocess): exit codes 0/1/2,
``file.sql:line:col: error:`` output, the summary line, clean shutdown on SIGTERM
and SIGINT, ``--set`` / ``SET`` precedence, ``--udfs``, and the README's example."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import orjson
import pytest

REPO = Path(__file__).resolve().parents[2]
SQLSTREAM = str(Path(sys.executable).with_name("sqlstream"))
SUMMARY = re.compile(r"^sqlstream: (?P<body>.*\| elapsed \d+\.\d+s)$", re.MULTILINE)


def run(args: list[str], cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "SQLSTREAM_DEBUG"}
    return subprocess.run([SQLSTREAM, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)


@pytest.fixture
def cli(monkeypatch, capsys):
    """``sqlstream ARGS`` in this process (no interpreter start-up), from a directory."""
    from sqlstream.cli.main import main

    def invoke(args: list[str], cwd: Path) -> tuple[int, str, str]:
        monkeypatch.chdir(cwd)
        capsys.readouterr()
        code = main(args)
        out, err = capsys.readouterr()
        return code, out, err

    return invoke


def pipeline(folder: Path, text: str, name: str = "p.sql") -> str:
    (folder / name).write_text(textwrap.dedent(text).lstrip())
    return name


def counts(summary: str) -> dict[str, int]:
    """``{name: rows}`` from a summary line: rows in per source and rows out per sink."""
    return {m.group(1): int(m.group(2).replace(",", "")) for m in re.finditer(r"(\w+): ([\d,]+) rows (?:in|out)", summary)}


def jsonl(path: Path) -> list[dict]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


GOOD = """
    CREATE SOURCE nums (n BIGINT) WITH (connector = 'generator', rows_per_second = 0, max_rows = 100,
                                        fields.n.kind = 'sequence');
    CREATE SINK evens AS SELECT n, n * n AS sq FROM nums WHERE n % 2 = 0
      WITH (connector = 'file', path = 'out/evens.jsonl', format = 'json');
"""


def test_run_exits_0_with_a_summary_line(tmp_path):
    name = pipeline(tmp_path, GOOD)
    result = run(["run", name], tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""  # results went to the file sink; the summary goes to stderr
    assert SUMMARY.search(result.stderr).group("body").startswith("nums: 100 rows in | evens: 50 rows out | dead letters: 0")
    assert jsonl(tmp_path / "out" / "evens.jsonl")[:2] == [{"n": 0, "sq": 0}, {"n": 2, "sq": 4}]


def test_check_and_explain(tmp_path, cli):
    name = pipeline(tmp_path, GOOD)
    code, out, _ = cli(["check", name], tmp_path)
    assert (code, out.strip()) == (0, "p.sql: ok (1 source(s)/table(s), 0 view(s), 1 query(ies), 0 function(s))")
    assert not (tmp_path / "out").exists()  # nothing ran
    code, out, _ = cli(["explain", name], tmp_path)
    assert code == 0
    assert out.splitlines() == [
        "== sink evens [file(json: out/evens.jsonl)] ==",
        "Stateless (DataFusion per micro-batch) -> (n, sq)",
        '    sql: SELECT "n" AS "n", "n" * "n" AS "sq" FROM __input WHERE "n" % 2 = 0',
        "  Scan nums [generator] -> (n)",
    ]


BAD_COLUMN = """
    CREATE SOURCE nums (n BIGINT, temp DOUBLE) WITH (connector = 'generator', max_rows = 5);
    SELECT n, tmp FROM nums;
"""
BAD_COLUMN_ERROR = (
    "p.sql:2:11: error: unknown column 'tmp'\n"
    "  SELECT n, tmp FROM nums;\n"
    "            ^^^\n"
    "  hint: did you mean 'temp'?\n"
)


def test_sql_error_exits_2_with_location_and_caret(tmp_path):
    result = run(["run", pipeline(tmp_path, BAD_COLUMN)], tmp_path)
    assert (result.returncode, result.stdout, result.stderr) == (2, "", BAD_COLUMN_ERROR)


@pytest.mark.parametrize("command", ["check", "explain"])
def test_check_and_explain_report_the_same_error(tmp_path, cli, command):
    assert cli([command, pipeline(tmp_path, BAD_COLUMN)], tmp_path) == (2, "", BAD_COLUMN_ERROR)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("SELEC 1;", "p.sql:1:1: error: 'SELEC' does not start a statement"),
        ("CREATE SOURCE s (a BIGINT) WITH (connector = 'generator', rows_per_secnd = 5);",
         "p.sql:1:59: error: unknown option 'rows_per_secnd' for connector 'generator'"),
        ("CREATE SOURCE s (a BIGINT) WITH (connector = 'kafka');", "p.sql:1:34: error: unknown source connector 'kafka'"),
        ("SET batch_size = 'many';", "p.sql:1:18: error: invalid value 'many' for setting 'batch_size'"),
        ("CREATE SOURCE s (a BIGINT) WITH (connector = 'file', path = 'nope.csv', format = 'csv');\n"
         "CREATE SINK k FROM s WITH (connector = 'stdout');",
         "error: source 's': no file matches path"),
        ("CREATE SOURCE s (a BIGINT) WITH (connector = 'generator', max_rows = 3);", "error: p.sql: nothing to run"),
    ],
)
def test_invalid_input_exits_2(tmp_path, cli, text, expected):
    code, out, err = cli(["run", pipeline(tmp_path, text)], tmp_path)
    assert code == 2 and out == ""
    assert expected in err.splitlines()[0]
    assert "Traceback" not in err


def test_command_line_mistakes_exit_2(tmp_path, cli):
    code, _, err = cli(["check", "missing.sql"], tmp_path)
    assert (code, err.strip()) == (2, "error: cannot read missing.sql: No such file or directory")
    name = pipeline(tmp_path, GOOD)
    code, _, err = cli(["run", name, "--set", "batch_size"], tmp_path)
    assert code == 2 and "error: --set expects key=value, got 'batch_size'" in err
    code, _, err = cli(["run", name, "--set", "bach_size=5"], tmp_path)
    assert code == 2 and "error: unknown setting 'bach_size'" in err
    code, _, err = cli(["run", name, "--udfs", "nope"], tmp_path)
    assert code == 2 and "error: --udfs nope: no such directory" in err
    with pytest.raises(SystemExit) as exit_info:  # argparse: an unknown command
        cli(["frobnicate"], tmp_path)
    assert exit_info.value.code == 2


def test_runtime_failure_exits_1(tmp_path):
    (tmp_path / "in.jsonl").write_text('{"n": 1}\n{"n": oops}\n{"n": 3}\n')
    name = pipeline(
        tmp_path,
        """
        CREATE SOURCE src (n BIGINT) WITH (connector = 'file', path = 'in.jsonl', format = 'json', on_error = 'fail');
        CREATE SINK out FROM src WITH (connector = 'file', path = 'out.jsonl', format = 'json');
        """,
    )
    result = run(["run", name], tmp_path)
    assert result.returncode == 1
    assert result.stderr.startswith(f"error: source 'src': bad record at {tmp_path / 'in.jsonl'}:2 (decode): malformed JSON")
    assert "Traceback" not in result.stderr


def test_dead_letters_are_counted_in_the_summary(tmp_path, cli):
    (tmp_path / "in.jsonl").write_text('{"n": 1}\n{"n": oops}\n{"n": "x"}\n{"n": 4}\n')
    name = pipeline(
        tmp_path,
        """
        CREATE SOURCE src (n BIGINT) WITH (connector = 'file', path = 'in.jsonl', format = 'json');
        CREATE SINK out FROM src WITH (connector = 'file', path = 'out.jsonl', format = 'json');
        """,
    )
    code, _, err = cli(["run", name], tmp_path)
    assert code == 0
    assert "src: 2 rows in | out: 2 rows out | dead letters: 2 (decode 1, type 1)" in err
    letters = jsonl(tmp_path / "p.dead_letter.jsonl")  # next to the pipeline, named after it
    assert [(d["reason"], d["position"]) for d in letters] == [
        ("decode", f"{tmp_path / 'in.jsonl'}:2"),
        ("type", f"{tmp_path / 'in.jsonl'}:3"),
    ]


def test_command_line_set_and_file_set(tmp_path, cli):
    (tmp_path / "in.jsonl").write_text('{"n": 1}\n{"n": oops}\n')
    body = """
        CREATE SOURCE src (n BIGINT) WITH (connector = 'file', path = 'in.jsonl', format = 'json');
        CREATE SINK out FROM src WITH (connector = 'file', path = 'out.jsonl', format = 'json');
    """
    plain = pipeline(tmp_path, body, "plain.sql")
    with_set = pipeline(tmp_path, "SET dead_letter_path = 'from_file.jsonl';\n" + textwrap.dedent(body), "with_set.sql")
    assert cli(["run", plain, "--set", "dead_letter_path=from_flag.jsonl"], tmp_path)[0] == 0
    assert len(jsonl(tmp_path / "from_flag.jsonl")) == 1  # --set applies ...
    assert cli(["run", with_set, "--set", "dead_letter_path=from_flag.jsonl"], tmp_path)[0] == 0
    assert len(jsonl(tmp_path / "from_file.jsonl")) == 1  # ... but a SET in the file wins
    assert len(jsonl(tmp_path / "from_flag.jsonl")) == 1


UDF_FILE = """
import pyarrow as pa
import pyarrow.compute as pc
from sqlstream import udf

@udf(args=[pa.int64()], returns=pa.{returns}())
def {name}(x):
    return {body}
"""


def test_udf_discovery_and_udfs_flag(tmp_path, cli):
    def udf_dir(folder: Path, name: str, returns: str, body: str) -> Path:
        folder.mkdir(parents=True)
        (folder / f"{name}.py").write_text(UDF_FILE.format(name=name, returns=returns, body=body))
        return folder

    udf_dir(tmp_path / "udfs", "triple", "int64", "pc.multiply(x, 3)")  # next to the pipeline
    more = udf_dir(tmp_path / "more", "predict", "float64", "pc.divide(pc.cast(x, pa.float64()), 2)")
    elsewhere = tmp_path / "elsewhere"
    udf_dir(elsewhere / "udfs", "predict", "float64", "pc.divide(pc.cast(x, pa.float64()), 2)")  # in the cwd
    name = pipeline(
        tmp_path,
        """
        CREATE SOURCE nums (n BIGINT) WITH (connector = 'generator', rows_per_second = 0, max_rows = 3,
                                            fields.n.kind = 'sequence');
        CREATE SINK out AS SELECT triple(n) AS t, predict(n) AS p FROM nums
          WITH (connector = 'file', path = 'out.jsonl', format = 'json');
        """,
    )
    pipeline_path = str(tmp_path / name)
    code, _, err = cli(["run", pipeline_path], elsewhere)  # udfs/ next to the file and udfs/ in the cwd
    assert code == 0, err
    assert jsonl(tmp_path / "out.jsonl") == [{"t": 0, "p": 0.0}, {"t": 3, "p": 0.5}, {"t": 6, "p": 1.0}]
    code, _, err = cli(["check", pipeline_path], tmp_path)  # here only udfs/ next to the file
    assert code == 2 and "unknown function 'predict'" in err
    code, _, err = cli(["check", pipeline_path, "--udfs", str(more)], tmp_path)  # --udfs adds a directory
    assert code == 0, err


def test_bare_select_prints_json_lines_when_stdout_is_not_a_terminal(tmp_path, cli):
    name = pipeline(
        tmp_path,
        """
        CREATE SOURCE nums (n BIGINT) WITH (connector = 'generator', rows_per_second = 0, max_rows = 4,
                                            fields.n.kind = 'sequence');
        SELECT n, n > 1 AS big FROM nums;
        """,
    )
    code, out, err = cli(["run", name], tmp_path)
    assert code == 0
    assert [orjson.loads(line) for line in out.splitlines()] == [
        {"n": 0, "big": False}, {"n": 1, "big": False}, {"n": 2, "big": True}, {"n": 3, "big": True},
    ]
    assert "query_1: 4 rows out" in err


def test_readme_example_is_bounded(tmp_path):
    result = run(["run", "queries/hello.sql"], REPO, timeout=120)
    assert result.returncode == 0, result.stderr
    rows = [orjson.loads(line) for line in result.stdout.splitlines()]
    summary = counts(SUMMARY.search(result.stderr).group("body"))
    assert summary["sensors"] == 1000 and summary["query_1"] == len(rows) > 0
    assert all(row["temp_c"] >= 100 and row["site"] in ("BERLIN", "LISBON", "OSLO") for row in rows)


def test_second_example_writes_parquet(tmp_path, cli):
    import shutil

    import pyarrow.parquet as pq

    shutil.copytree(REPO / "queries", tmp_path / "queries", ignore=shutil.ignore_patterns("out", "*.dead_letter.jsonl"))
    code, _, err = cli(["run", "queries/orders_to_parquet.sql"], tmp_path)
    assert code == 0, err
    assert "orders: 300 rows in | paid_orders: 193 rows out | dead letters: 2 (decode 1, type 1)" in err
    table = pq.read_table(tmp_path / "queries" / "out" / "paid_orders.parquet")
    assert table.num_rows == 193
    assert table.column_names == ["order_id", "customer_domain", "country", "amount_eur", "size", "hour"]
    assert len(jsonl(tmp_path / "queries" / "orders_to_parquet.dead_letter.jsonl")) == 2


# -- clean shutdown ---------------------------------------------------------------------------------


@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)], ids=["SIGTERM", "SIGINT"])
def test_signal_stops_cleanly_and_every_row_read_is_in_the_sink(tmp_path, signum, code):
    name = pipeline(
        tmp_path,
        """
        CREATE SOURCE ticks (n BIGINT, ts TIMESTAMP) WITH (connector = 'generator', rows_per_second = 2000,
                                                          fields.n.kind = 'sequence');
        CREATE SINK out AS SELECT n, ts FROM ticks WITH (connector = 'file', path = 'out.jsonl', format = 'json');
        """,
    )
    out = tmp_path / "out.jsonl"
    process = subprocess.Popen([SQLSTREAM, "run", name], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # overwriting output is written under a hidden name and renamed onto out.jsonl at a clean stop
    in_progress = tmp_path / f".out.jsonl.{process.pid}.inprogress"
    try:
        deadline = time.monotonic() + 60
        while not (in_progress.exists() and in_progress.stat().st_size > 0):  # unbounded: wait until rows flow
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "no output within 60 s"
            time.sleep(0.05)
        process.send_signal(signum)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == code, stderr  # a graceful stop still says it was stopped (exit 128 + signal)
    assert f"sqlstream: stopped by {signal.Signals(signum).name} | " in stderr
    assert not in_progress.exists()
    summary = counts(SUMMARY.search(stderr).group("body"))
    rows = jsonl(out)
    assert summary["ticks"] > 0
    assert summary["ticks"] == summary["out"] == len(rows)  # every row read before the signal was written
    assert [r["n"] for r in rows] == list(range(len(rows)))


def test_progress_line_on_a_terminal(tmp_path):
    pexpect = pytest.importorskip("pexpect")
    name = pipeline(
        tmp_path,
        """
        CREATE SOURCE ticks (n BIGINT) WITH (connector = 'generator', rows_per_second = 1000, max_rows = 1500);
        CREATE SINK out FROM ticks WITH (connector = 'file', path = 'out.jsonl', format = 'json');
        """,
    )
    child = pexpect.spawn(SQLSTREAM, ["run", name], cwd=str(tmp_path), encoding="utf-8", timeout=60)
    child.expect(r"in [\d,]+ \([\d,]+/s\)  out [\d,]+ \([\d,]+/s\)  dead letters 0")
    child.expect(r"sqlstream: ticks: 1,500 rows in \| out: 1,500 rows out")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


def test_sqlstream_test_command(tmp_path, cli):
    code, out, err = cli(["test", str(REPO / "tests" / "sql")], tmp_path)
    assert code == 0, out + err
    case = tmp_path / "cases" / "wrong"
    case.mkdir(parents=True)
    (case / "pipeline.sql").write_text(
        "CREATE SOURCE nums (n BIGINT) WITH (connector = 'generator', rows_per_second = 0, max_rows = 2, "
        "fields.n.kind = 'sequence');\nCREATE SINK out FROM nums WITH (connector = 'stdout');\n"
    )
    (case / "expected").mkdir()
    (case / "expected" / "out.jsonl").write_text('{"n": 0}\n{"n": 5}\n')
    code, out, _ = cli(["test", str(tmp_path / "cases")], tmp_path)
    assert code == 1
    assert "cases/wrong FAILED" in out
    assert '-{"n":5}' in out.splitlines() and '+{"n":1}' in out.splitlines()


def test_a_nats_source_that_never_connects_says_cannot_connect_at_its_create(tmp_path):
    """Not "disconnected ... reconnecting" (it never was connected), and the error points at
    the CREATE SOURCE that names the server."""
    (tmp_path / "n.sql").write_text(
        "CREATE SOURCE s (v BIGINT) WITH (connector = 'nats', url = 'nats://127.0.0.1:1', subject = 'x.>',\n"
        "                                 connect_timeout = '1s');\n"
        "SELECT v FROM s;\n")
    done = subprocess.run([str(Path(sys.executable).with_name("sqlstream")), "run", "n.sql"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "n.sql:1:1: error: source 's': cannot connect to NATS at nats://127.0.0.1:1" in done.stderr
    assert "disconnected" not in done.stderr and "Traceback" not in done.stderr
