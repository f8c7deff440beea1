"""``--allow-paths DIR`` on the command line: a path outside is invalid input (exit 2) with
the path, the allowed folders and the statement's location; SQL cannot widen it; nothing
outside is read or written. Real subprocesses, as a user runs them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SQLSTREAM = str(Path(sys.executable).with_name("sqlstream"))


def sqlstream(args: list[str], cwd: Path, stdin: str = "") -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "SQLSTREAM_DEBUG"}
    return subprocess.run([SQLSTREAM, *args], cwd=cwd, input=stdin, capture_output=True, text=True, timeout=120, env=env)


@pytest.fixture
def shared(tmp_path: Path) -> Path:
    """``work/data`` holds the allowed input; ``passwd`` and ``victim.txt`` sit outside."""
    (tmp_path / "work" / "data").mkdir(parents=True)
    (tmp_path / "work" / "data" / "in.jsonl").write_text('{"x": "ok"}\n')
    (tmp_path / "passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    (tmp_path / "victim.txt").write_text("precious\n")
    return tmp_path


def test_check_refuses_a_source_outside_with_exit_2(shared):
    work = shared / "work"
    (work / "p.sql").write_text(
        "CREATE SOURCE s (x VARCHAR)\n"
        "  WITH (connector = 'file', path = '../../../../../../passwd', format = 'json');\n"
        "CREATE SINK o AS SELECT x FROM s WITH (connector = 'stdout');\n"
    )
    result = sqlstream(["check", "p.sql", "--allow-paths", "data"], work)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr == (
        "p.sql:2:29: error: source 's': path '../../../../../../passwd' is outside the allowed paths "
        f"({os.path.realpath(work / 'data')})\n"
        "    WITH (connector = 'file', path = '../../../../../../passwd', format = 'json');\n"
        "                              ^^^^\n"
        "  hint: allowed_paths (--allow-paths) confines every file a pipeline reads or writes\n"
    )


def test_run_refuses_a_sink_outside_and_leaves_the_file_alone(shared):
    work = shared / "work"
    (work / "p.sql").write_text(
        "SET dead_letter_path = 'data/dead.jsonl';\n"
        "CREATE SOURCE s (x VARCHAR) WITH (connector = 'file', path = 'data/*.jsonl', format = 'json');\n"
        "CREATE SINK o AS SELECT x FROM s WITH (connector = 'file', path = '../victim.txt', format = 'json');\n"
    )
    result = sqlstream(["run", "p.sql", "--allow-paths", "."], work)
    assert result.returncode == 2
    assert result.stderr.startswith(
        f"p.sql:3:60: error: sink 'o': path '../victim.txt' is outside the allowed paths ({os.path.realpath(work)})\n"
    )
    assert (shared / "victim.txt").read_text() == "precious\n"


def test_run_refuses_a_glob_that_matches_a_link_out_before_reading(shared):
    """No line of the outside file is read, so none reaches the dead letters either."""
    work = shared / "work"
    os.symlink(shared / "passwd", work / "data" / "zz.jsonl")
    (work / "p.sql").write_text(
        "SET dead_letter_path = 'data/dead.jsonl';\n"
        "CREATE SOURCE s (x VARCHAR) WITH (connector = 'file', path = 'data/*.jsonl', format = 'json');\n"
        "CREATE SINK o AS SELECT x FROM s WITH (connector = 'file', path = 'data/out.jsonl', format = 'json');\n"
    )
    assert sqlstream(["check", "p.sql", "--allow-paths", "data"], work).returncode == 0  # the folder is allowed
    result = sqlstream(["run", "p.sql", "--allow-paths", "data"], work)
    assert result.returncode == 2
    assert result.stderr == (  # found when the source opens: the error points at its CREATE SOURCE
        f"p.sql:2:1: error: source 's': path '{work / 'data' / 'zz.jsonl'}' is outside the allowed paths "
        f"({os.path.realpath(work / 'data')})\n"
        "  CREATE SOURCE s (x VARCHAR) WITH (connector = 'file', path = 'data/*.jsonl', format = 'json');\n"
        "  ^\n"
        f"  hint: it resolves to {os.path.realpath(shared / 'passwd')}; "
        "allowed_paths (--allow-paths) confines every file a pipeline reads or writes\n"
    )
    assert not (work / "data" / "dead.jsonl").exists()
    assert not (work / "data" / "out.jsonl").exists()


def test_a_shared_repl_cannot_widen_its_allowed_paths(shared):
    work = shared / "work"
    stdin = (
        "SET allowed_paths = '/';\n"
        "CREATE SOURCE s (x VARCHAR) WITH (connector = 'file', path = '../passwd', format = 'json');\n"
        "CREATE SOURCE t (x VARCHAR) WITH (connector = 'file', path = 'data/in.jsonl', format = 'json');\n"
        "SELECT x FROM t;\n"
    )
    result = sqlstream(["repl", "--allow-paths", ".", "--set", "dead_letter_path=data/dead.jsonl", "--json"], work, stdin)
    assert result.returncode == 2
    assert result.stdout == '{"x":"ok"}\n'
    assert result.stderr.startswith(
        "<stdin>:1:21: error: SET allowed_paths cannot widen the allowed paths: '/' is outside the allowed paths "
        f"({os.path.realpath(work)}); once set, allowed_paths can only be narrowed\n"
    )
    assert f"<stdin>:2:55: error: source 's': path '../passwd' is outside the allowed paths ({os.path.realpath(work)})" in result.stderr


def test_set_on_the_command_line_cannot_widen_allow_paths_either(shared):
    work = shared / "work"
    (work / "p.sql").write_text("CREATE SOURCE t (x VARCHAR) WITH (connector = 'file', path = '../passwd', format = 'json');\n")
    result = sqlstream(["check", "p.sql", "--allow-paths", "data", "--set", f"allowed_paths={shared}"], work)
    assert result.returncode == 2
    assert result.stderr.startswith("error: SET allowed_paths cannot widen the allowed paths:")


def test_allow_paths_names_an_existing_folder(shared):
    work = shared / "work"
    (work / "p.sql").write_text("SELECT 1;\n")
    result = sqlstream(["check", "p.sql", "--allow-paths", "nope"], work)
    assert (result.returncode, result.stderr) == (2, "error: --allow-paths nope: no such directory\n")
    result = sqlstream(["test", ".", "--allow-paths", "nope"], work)
    assert (result.returncode, result.stderr) == (2, "error: --allow-paths nope: no such directory\n")


def test_sqlstream_test_confines_the_files_a_case_reads(shared):
    case = shared / "work" / "cases" / "leak"
    (case / "expected").mkdir(parents=True)
    (case / "pipeline.sql").write_text(
        "CREATE SOURCE s (x VARCHAR) WITH (connector = 'file', path = '../../../../passwd', format = 'csv', header = false);\n"
        "CREATE SINK o AS SELECT x FROM s WITH (connector = 'stdout');\n"
    )
    (case / "expected" / "o.jsonl").write_text("")
    result = sqlstream(["test", "cases", "--allow-paths", "cases"], shared / "work")
    assert result.returncode == 1
    assert "source 's': path '../../../../passwd' is outside the allowed paths" in result.stdout
    assert "root:x" not in result.stdout
