"""``sqlstream run`` exit codes and what its summary says: 0 when the sources ended,
130 / 143 after a graceful stop by SIGINT / SIGTERM ("stopped by SIGTERM", with what
became of open window state), and where the data went (file sinks, dead letters)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

SQLSTREAM = str(Path(sys.executable).with_name("sqlstream"))

WINDOWED = """
    CREATE SOURCE ticks (n BIGINT, ts TIMESTAMP, WATERMARK FOR ts AS ts - INTERVAL '0' SECOND)
        WITH (connector = 'generator', rows_per_second = 2000, fields.n.kind = 'sequence');
    CREATE SINK counts AS SELECT window_end, count(*) AS n FROM TUMBLE(ticks, ts, INTERVAL '1' HOUR)
        GROUP BY window_end WITH (connector = 'file', path = 'counts.jsonl', format = 'json');
    CREATE SINK raw AS SELECT n FROM ticks WITH (connector = 'file', path = 'raw.jsonl', format = 'json');
"""


def _write(folder: Path, text: str, name: str = "p.sql") -> str:
    (folder / name).write_text(textwrap.dedent(text).lstrip())
    return name


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "SQLSTREAM_DEBUG"}


def _stop_once_running(folder: Path, args: list[str], signum: int) -> tuple[int, str]:
    """Start ``sqlstream run ARGS``, wait until its generator has produced rows (the
    pipeline is in its run loop: sink ``raw`` wrote some), send ``signum`` and return (exit code, stderr)."""
    process = subprocess.Popen([SQLSTREAM, "run", *args, "--set", "batch_timeout=10ms"], cwd=folder,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    try:
        deadline = time.monotonic() + 60
        in_progress = folder / f".raw.jsonl.{process.pid}.inprogress"  # raw.jsonl while the run writes it
        parts = folder / "raw.jsonl"  # with checkpoints: a directory of committed parts
        while not ((in_progress.exists() and in_progress.stat().st_size > 0)
                   or (parts.is_dir() and any(p.stat().st_size for p in parts.glob("*.jsonl")))):
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "no rows within 60 s"
            time.sleep(0.05)  # polling a child process's output file, not a stream under test
        process.send_signal(signum)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    return process.returncode, stderr


def test_a_bounded_run_exits_0_and_names_where_the_rows_went(tmp_path):
    (tmp_path / "in.jsonl").write_text("".join(f'{{"id": {i}, "v": {i * 2}}}\n' for i in range(1000))
                                       + '{"id": "x", "v": 1}\n' + "not json\n" * 2)
    name = _write(tmp_path, """
        CREATE SOURCE events (id BIGINT, v BIGINT) WITH (connector = 'file', path = 'in.jsonl', format = 'json');
        CREATE SINK big AS SELECT id FROM events WHERE v >= 1000 WITH (connector = 'file', path = 'out/big.jsonl',
                                                                       format = 'json');
        CREATE SINK everything AS SELECT id, v FROM events WITH (connector = 'file', path = 'all.csv', format = 'csv');
    """)
    result = subprocess.run([SQLSTREAM, "run", name], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                            env=_env())
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert lines[-4].startswith("sqlstream: events: 1,000 rows in | big: 500 rows out | everything: 1,000 rows out "
                                "| dead letters: 3 (decode 2, type 1) | elapsed ")
    assert "stopped" not in result.stderr
    assert lines[-3:] == [
        f"sqlstream: big: 500 rows → {tmp_path / 'out' / 'big.jsonl'}",
        f"sqlstream: everything: 1,000 rows → {tmp_path / 'all.csv'}",
        f"sqlstream: dead letters: 3 rows (decode 2, type 1) → {tmp_path / 'p.dead_letter.jsonl'}",
    ]


def test_no_dead_letter_line_without_dead_letters(tmp_path):
    name = _write(tmp_path, """
        CREATE SOURCE nums (n BIGINT) WITH (connector = 'generator', rows_per_second = 0, max_rows = 10);
        CREATE SINK out FROM nums WITH (connector = 'file', path = 'out.jsonl', format = 'json');
    """)
    result = subprocess.run([SQLSTREAM, "run", name], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                            env=_env())
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines()[-1] == f"sqlstream: out: 10 rows → {tmp_path / 'out.jsonl'}"


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"])
def test_a_stopped_run_exits_128_plus_the_signal_and_says_open_windows_were_not_emitted(tmp_path, signum, code):
    name = _write(tmp_path, WINDOWED)
    returncode, stderr = _stop_once_running(tmp_path, [name], signum)
    assert returncode == code, stderr
    summary = [line for line in stderr.splitlines() if "elapsed" in line][-1]
    assert summary.startswith(f"sqlstream: stopped by {signal.Signals(signum).name} | ticks: ")
    assert "rows of open window/aggregate state not emitted (stopped early)" in summary
    assert stderr.splitlines()[-2] == f"sqlstream: counts: 0 rows → {tmp_path / 'counts.jsonl'}"
    assert stderr.splitlines()[-1].endswith(f" rows → {tmp_path / 'raw.jsonl'}")


def test_a_stopped_checkpointed_run_keeps_open_windows_in_the_checkpoint(tmp_path):
    name = _write(tmp_path, WINDOWED)
    returncode, stderr = _stop_once_running(tmp_path, [name, "--checkpoint", "ck"], signal.SIGTERM)
    assert returncode == 143, stderr
    summary = [line for line in stderr.splitlines() if "elapsed" in line][-1]
    assert summary.startswith("sqlstream: stopped by SIGTERM | ticks: ")
    assert "rows of open window/aggregate state kept in the checkpoint (stopped early)" in summary
