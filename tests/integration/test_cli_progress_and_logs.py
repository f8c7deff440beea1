"""``sqlstream run`` on a terminal: the progress line also under rows printed there;
``--quiet``; ``--log-format json`` (warnings, errors and the summary as JSON lines)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

SQLSTREAM = str(Path(sys.executable).with_name("sqlstream"))


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "SQLSTREAM_DEBUG"}


def test_progress_line_under_rows_printed_on_the_terminal(tmp_path):
    pexpect = pytest.importorskip("pexpect")
    (tmp_path / "p.sql").write_text(
        "CREATE SOURCE ticks (n BIGINT) WITH (connector = 'generator', rows_per_second = 1000, max_rows = 1500,"
        " fields.n.kind = 'sequence');\nSELECT n FROM ticks WHERE n % 100 = 0;\n")
    child = pexpect.spawn(SQLSTREAM, ["run", "p.sql"], cwd=str(tmp_path), encoding="utf-8", timeout=60, env=_env())
    child.expect(r"n\s*\r?\n-+")  # the table's header on stdout
    child.expect(r"in [\d,]+ \([\d,]+/s\)  out [\d,]+ \([\d,]+/s\)  dead letters 0")  # the progress line on stderr
    child.expect(r"\x1b\[2K1400")  # a later row: the progress line was cleared before it was printed
    child.expect(r"sqlstream: ticks: 1,500 rows in \| query_1: 15 rows out")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


def test_quiet_prints_no_summary(tmp_path):
    (tmp_path / "p.sql").write_text(
        "CREATE SOURCE ticks (n BIGINT) WITH (connector = 'generator', rows_per_second = 0, max_rows = 10);\n"
        "CREATE SINK out FROM ticks WITH (connector = 'file', path = 'out.jsonl', format = 'json');\n")
    result = subprocess.run([SQLSTREAM, "run", "p.sql", "--quiet"], cwd=tmp_path, capture_output=True, text=True,
                            timeout=60, env=_env())
    assert (result.returncode, result.stderr) == (0, "")
    assert len((tmp_path / "out.jsonl").read_text().splitlines()) == 10


def test_log_format_json_summary_of_a_stopped_run(tmp_path):
    (tmp_path / "in.jsonl").write_text('{"n": 1}\nnot json\n')
    (tmp_path / "p.sql").write_text(
        "CREATE SOURCE ticks (n BIGINT) WITH (connector = 'generator', rows_per_second = 500);\n"
        "CREATE SOURCE f (n BIGINT) WITH (connector = 'file', path = 'in.jsonl', format = 'json');\n"
        "CREATE SINK out FROM ticks WITH (connector = 'file', path = 'out.jsonl', format = 'json');\n"
        "CREATE SINK fout FROM f WITH (connector = 'file', path = 'fout.jsonl', format = 'json');\n")
    process = subprocess.Popen([SQLSTREAM, "run", "p.sql", "--log-format", "json"], cwd=tmp_path,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=_env())
    try:
        in_progress = tmp_path / f".out.jsonl.{process.pid}.inprogress"
        deadline = time.monotonic() + 60
        while not (in_progress.exists() and in_progress.stat().st_size > 0):
            assert process.poll() is None
            assert time.monotonic() < deadline
            time.sleep(0.05)  # polling a child process's output file
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 143
    events = [json.loads(line) for line in stderr.splitlines()]
    summary = events[-1]
    assert {k: summary[k] for k in ("level", "event", "status", "stopped_by", "exit_code")} == \
        {"level": "info", "event": "summary", "status": "stopped", "stopped_by": "SIGTERM", "exit_code": 143}
    assert summary["sinks"]["out"]["rows_out"] == summary["sources"]["ticks"]["rows_in"] > 0
    assert summary["sinks"]["out"]["path"] == str(tmp_path / "out.jsonl")
    assert summary["sinks"]["fout"] == {"rows_out": 1, "path": str(tmp_path / "fout.jsonl")}
    assert summary["sources"]["f"] == {"rows_in": 1, "records_in": 2, "problems": []}
    assert summary["dead_letters"] == {"decode": 1}
    assert summary["dead_letter_path"] == str(tmp_path / "p.dead_letter.jsonl")


def test_log_format_json_error(tmp_path):
    (tmp_path / "p.sql").write_text("SELECT nope FROM nowhere;\n")
    result = subprocess.run([SQLSTREAM, "run", "p.sql", "--log-format", "json"], cwd=tmp_path, capture_output=True,
                            text=True, timeout=60, env=_env())
    assert result.returncode == 2
    [event] = [json.loads(line) for line in result.stderr.splitlines()]
    assert event["level"] == "error" and event["exit_code"] == 2
    assert event["message"].startswith("p.sql:1:")
