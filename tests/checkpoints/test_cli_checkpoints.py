"""Checkpoints from the command line and SQL: listing them, what `check` warns about,
and flags that do not fit."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from sqlstream import Session
from sqlstream.errors import SqlAnalysisError

SQLSTREAM = str(Path(sys.executable).with_name("sqlstream"))

GENERATOR = """
CREATE SOURCE nums (n BIGINT) WITH (connector = 'generator', rows_per_second = 0, max_rows = 5000,
                                    fields.n.kind = 'sequence');
CREATE SINK out AS SELECT n, n * 2 AS twice FROM nums
  WITH (connector = 'file', path = 'out', format = 'parquet');
"""


def _sqlstream(folder: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([SQLSTREAM, *args], cwd=folder, capture_output=True, text=True, timeout=120)


def test_checkpoints_are_listed_by_the_cli_and_show_checkpoints(tmp_path):
    (tmp_path / "p.sql").write_text(GENERATOR)
    run = _sqlstream(tmp_path, "run", "p.sql", "--checkpoint", "ck")
    assert run.returncode == 0, run.stderr
    assert "checkpoints: 1 taken, last epoch 1" in run.stderr
    listed = _sqlstream(tmp_path, "checkpoints", "ck")
    assert listed.returncode == 0, listed.stderr
    header, first = listed.stdout.splitlines()[:2]
    assert header == '"epoch","taken","committed","state_rows","state_size","duration_ms"'
    assert first.startswith("1,") and ",true," in first
    session = Session(base_dir=str(tmp_path))
    session.execute("SET checkpoint_dir = 'ck'")
    (shown,) = session.execute("SHOW CHECKPOINTS")
    rows = shown.table.to_pylist()
    assert [(r["epoch"], r["committed"]) for r in rows] == [(1, True)]


def test_show_checkpoints_without_a_directory_says_how_to_set_one():
    with pytest.raises(SqlAnalysisError, match="no checkpoint_dir is set") as caught:
        Session().execute("SHOW CHECKPOINTS")
    assert "SET checkpoint_dir" in caught.value.hint


def test_check_warns_about_sources_that_cannot_replay(tmp_path):
    (tmp_path / "p.sql").write_text("""
        CREATE SOURCE s (v BIGINT) WITH (connector = 'nats', url = 'nats://127.0.0.1:1', subject = 'x.>',
                                         format = 'json');
        CREATE SINK out AS SELECT v FROM s WITH (connector = 'file', path = 'out', format = 'json');
    """)
    plain = _sqlstream(tmp_path, "check", "p.sql")
    assert plain.returncode == 0 and "cannot replay" not in plain.stderr
    checked = _sqlstream(tmp_path, "check", "p.sql", "--set", "checkpoint_dir=ck")
    assert checked.returncode == 0, checked.stderr
    assert "warning: source 's' cannot replay" in checked.stderr and "lost" in checked.stderr


def test_from_scratch_needs_a_checkpoint_directory(tmp_path):
    (tmp_path / "p.sql").write_text(GENERATOR)
    done = _sqlstream(tmp_path, "run", "p.sql", "--from-scratch")
    assert done.returncode == 2
    assert "no checkpoint_dir is set" in done.stderr and "Traceback" not in done.stderr


def test_checkpoints_of_a_missing_directory(tmp_path):
    done = _sqlstream(tmp_path, "checkpoints", "nowhere")
    assert done.returncode == 2 and "no such checkpoint directory" in done.stderr
