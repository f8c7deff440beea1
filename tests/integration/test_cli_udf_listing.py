"""UDF files are code that runs: ``run``, ``check``, ``explain``, ``repl`` and ``test`` list
every file they load on stderr, and ``--no-udfs`` stops the automatic discovery of
``udfs/`` folders (``--udfs DIR`` still loads). Real subprocesses, as a user runs them."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

SQLSTREAM = str(Path(sys.executable).with_name("sqlstream"))

SCORING = """\
import pyarrow as pa
import pyarrow.compute as pc
from sqlstream import udf


@udf(args=[pa.int64()], returns=pa.int64())
def triple(x):
    return pc.multiply(x, 3)


@udf(args=[pa.int64()], returns=pa.int64())
def negate(x):
    return pc.negate(x)
"""

# importing this file leaves a mark: proof that its code ran (or did not)
MARKER = "open(__file__ + '.ran', 'w').close()\n"

PIPELINE = """\
CREATE SOURCE nums (n BIGINT) WITH (connector = 'generator', rows_per_second = 0, max_rows = 3,
                                    fields.n.kind = 'sequence');
CREATE SINK out AS SELECT triple(n) AS t, negate(n) AS m FROM nums
  WITH (connector = 'file', path = 'out.jsonl', format = 'json');
"""

LISTED = (
    "sqlstream: loaded UDFs from udfs/helpers.py (no functions)\n"
    "sqlstream: loaded UDFs from udfs/scoring.py (2 functions: triple, negate)\n"
)


def sqlstream(args: list[str], cwd: Path, stdin: str = "") -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "SQLSTREAM_DEBUG"}
    return subprocess.run([SQLSTREAM, *args], cwd=cwd, input=stdin, capture_output=True, text=True, timeout=120, env=env)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "udfs").mkdir()
    (tmp_path / "udfs" / "scoring.py").write_text(SCORING)
    (tmp_path / "udfs" / "helpers.py").write_text(MARKER)
    (tmp_path / "p.sql").write_text(PIPELINE)
    return tmp_path


@pytest.mark.parametrize("command", ["check", "explain"])
def test_check_and_explain_list_each_loaded_file_on_stderr(project, command):
    result = sqlstream([command, "p.sql"], project)
    assert result.returncode == 0, result.stderr
    assert result.stderr == LISTED
    assert "loaded UDFs" not in result.stdout


def test_run_lists_the_files_before_its_summary(project):
    result = sqlstream(["run", "p.sql"], project)
    assert result.returncode == 0, result.stderr
    assert result.stderr.startswith(LISTED)
    assert result.stderr.count("loaded UDFs") == 2
    assert result.stderr.splitlines()[2].startswith("sqlstream: nums: 3 rows in")


def test_a_pipeline_in_another_folder_lists_absolute_paths(project, tmp_path_factory):
    elsewhere = tmp_path_factory.mktemp("cwd")
    result = sqlstream(["check", str(project / "p.sql")], elsewhere)
    assert result.returncode == 0, result.stderr
    assert result.stderr == (
        f"sqlstream: loaded UDFs from {project / 'udfs' / 'helpers.py'} (no functions)\n"
        f"sqlstream: loaded UDFs from {project / 'udfs' / 'scoring.py'} (2 functions: triple, negate)\n"
    )


def test_no_udfs_runs_no_udf_code(project):
    result = sqlstream(["check", "p.sql", "--no-udfs"], project)
    assert result.returncode == 2
    assert "loaded UDFs" not in result.stderr
    assert "p.sql:3:27: error: unknown function 'triple'" in result.stderr
    assert not (project / "udfs" / "helpers.py.ran").exists()  # the file's code never ran


def test_no_udfs_still_loads_an_explicit_udfs_folder(project, tmp_path_factory):
    elsewhere = tmp_path_factory.mktemp("cwd")
    result = sqlstream(["run", str(project / "p.sql"), "--no-udfs", "--udfs", str(project / "udfs")], elsewhere)
    assert result.returncode == 0, result.stderr
    assert result.stderr.startswith(
        f"sqlstream: loaded UDFs from {project / 'udfs' / 'helpers.py'} (no functions)\n"
        f"sqlstream: loaded UDFs from {project / 'udfs' / 'scoring.py'} (2 functions: triple, negate)\n"
    )
    assert (project / "udfs" / "helpers.py.ran").exists()


def test_repl_lists_the_files_once_at_start(project):
    (project / "defs.sql").write_text(PIPELINE.split(";")[0] + ";\n")
    result = sqlstream(["repl", "defs.sql", "--json"], project, stdin="SELECT triple(n) AS t FROM nums WHERE n = 2;\n")
    assert result.returncode == 0, result.stderr
    assert result.stderr == LISTED
    assert result.stdout == '{"t":6}\n'
    (project / "udfs" / "helpers.py.ran").unlink()
    quiet = sqlstream(["repl", "--no-udfs", "--json"], project, stdin="SHOW FUNCTIONS;\n")
    assert (quiet.returncode, quiet.stderr) == (0, "")
    assert not (project / "udfs" / "helpers.py.ran").exists()


def test_sqlstream_test_lists_each_file_once_and_honours_no_udfs(tmp_path):
    for case in ("a", "b"):
        folder = tmp_path / "cases" / case
        (folder / "udfs").mkdir(parents=True)
        (folder / "udfs" / "scoring.py").write_text(SCORING)
        (folder / "pipeline.sql").write_text(textwrap.dedent(PIPELINE).replace("'file', path = 'out.jsonl', format = 'json'", "'stdout'"))
        (folder / "expected").mkdir()
        (folder / "expected" / "out.jsonl").write_text('{"t": 0, "m": 0}\n{"t": 3, "m": -1}\n{"t": 6, "m": -2}\n')
    result = sqlstream(["test", "cases"], tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stderr == (
        "sqlstream: loaded UDFs from cases/a/udfs/scoring.py (2 functions: triple, negate)\n"
        "sqlstream: loaded UDFs from cases/b/udfs/scoring.py (2 functions: triple, negate)\n"
    )
    quiet = sqlstream(["test", "cases", "--no-udfs"], tmp_path)
    assert quiet.returncode == 1
    assert quiet.stderr == ""
    assert "unknown function 'triple'" in quiet.stdout
