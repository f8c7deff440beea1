"""What people type out of habit from psql, sqlite and other REPLs works in ``sqlstream``:
``exit``/``quit``/``help``, dot commands, ``\\dt``/``\\df``/``\\x``/``\\i``/``\\e``, a SELECT
without FROM, bare ``sqlstream`` and ``--version``, ``repl FILE`` that loads without
running its SELECTs, and hints that point at models for model-like function names.

Driven in a real pseudo-terminal (pexpect) where the prompt matters, in a subprocess
otherwise."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from sqlstream import Session
from sqlstream.errors import SqlAnalysisError

pexpect = pytest.importorskip("pexpect")

SQLSTREAM = str(Path(sys.executable).with_name("sqlstream"))
PROMPT = "sqlstream>"
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
GEN = ("CREATE SOURCE g (id BIGINT, ts TIMESTAMP, WATERMARK FOR ts AS ts - INTERVAL '2' SECOND) "
       "WITH (connector = 'generator', max_rows = 3, rows_per_second = 0, fields.id.kind = 'sequence');")


def _env(tmp_path: Path, **extra: str) -> dict:
    return dict(os.environ, SQLSTREAM_HISTORY=str(tmp_path / "history"), PROMPT_TOOLKIT_NO_CPR="1", TERM="xterm",
                COLUMNS="120", LINES="40", **extra)


def _spawn(tmp_path: Path, args: list[str], **env: str):
    child = pexpect.spawn(SQLSTREAM, args, cwd=str(tmp_path), env=_env(tmp_path, **env), encoding="utf-8",
                          codec_errors="replace", dimensions=(40, 120), timeout=30)
    return child


def _plain(text: str) -> str:
    return ANSI.sub("", text).replace("\r", "")


def _sqlstream(args: list[str], cwd: Path, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run([SQLSTREAM, *args], input=stdin, cwd=cwd, capture_output=True, text=True, timeout=120)


@pytest.fixture
def repl(tmp_path: Path):
    child = _spawn(tmp_path, [])  # bare ``sqlstream`` opens the REPL
    child.expect_exact("help or \\? for help")
    child.expect_exact(PROMPT)
    yield child
    if child.isalive():
        child.terminate(force=True)


def test_bare_sqlstream_opens_the_repl_and_exit_leaves_it(repl):
    repl.send("SELECT 40 + 2 AS answer;\r")
    repl.expect(r"answer[^\n]*\n[^\n]*\n[^\d]*42")
    repl.expect_exact("(1 row)")
    repl.expect_exact(PROMPT)
    repl.send("exit\r")
    repl.expect(pexpect.EOF)
    repl.wait()
    assert repl.exitstatus == 0


@pytest.mark.parametrize("word", ["quit", ".exit", ".quit", "\\q", "exit;"])
def test_every_way_to_leave(tmp_path, word):
    child = _spawn(tmp_path, ["repl"])
    child.expect_exact(PROMPT)
    child.send(word + "\r")
    child.expect(pexpect.EOF)
    child.wait()
    assert child.exitstatus == 0


def test_help_tables_and_functions_at_the_prompt(repl):
    repl.send("help\r")
    repl.expect_exact("\\dt")
    repl.expect_exact("this help (also help, .help)")
    repl.expect_exact(PROMPT)
    repl.send(".help\r")
    repl.expect_exact("expanded display")
    repl.expect_exact(PROMPT)
    repl.send(GEN + "\r")
    repl.expect_exact("CREATE SOURCE g")
    repl.expect_exact(PROMPT)
    repl.send(".tables\r")
    repl.expect(r"g +│ source +│ generator")
    repl.expect_exact(PROMPT)
    repl.send("\\dt\r")
    repl.expect(r"g +│ source +│ generator")
    repl.expect_exact(PROMPT)
    repl.send("\\d g\r")
    repl.expect_exact("watermark ts - 2s")
    repl.expect_exact(PROMPT)
    repl.send("\\x\r")
    repl.expect_exact("Expanded display is on.")
    repl.expect_exact(PROMPT)
    repl.send("SELECT id FROM g WHERE id = 1;\r")
    repl.expect_exact("-[ RECORD 1 ]")
    repl.expect(r"id \| 1")
    repl.expect_exact("(1 row)")
    repl.expect_exact(PROMPT)
    repl.send("\\x off\r")
    repl.expect_exact("Expanded display is off.")
    repl.expect_exact(PROMPT)
    repl.send(".nope\r")
    repl.expect_exact("unknown command '.nope'")
    repl.expect_exact(PROMPT)
    repl.send("\\q\r")
    repl.expect(pexpect.EOF)


def test_include_a_file_with_backslash_i_and_dot_read(repl, tmp_path):
    (tmp_path / "defs.sql").write_text(GEN + "\nSELECT count(*) AS n FROM g;\n")
    repl.send("\\i defs.sql\r")
    repl.expect_exact("CREATE SOURCE g")
    repl.expect(r"n[^\n]*\n[^\n]*\n[^\d]*3")
    repl.expect_exact(PROMPT)
    (tmp_path / "more.sql").write_text("SELECT max(id) AS top FROM g;\n")
    repl.send(".read more.sql\r")
    repl.expect(r"top[^\n]*\n[^\n]*\n[^\d]*2")
    repl.expect_exact(PROMPT)
    repl.send("\\i missing.sql\r")
    repl.expect_exact("missing.sql")
    repl.expect_exact(PROMPT)


def test_edit_the_last_statement_in_editor(tmp_path):
    editor = tmp_path / "editor.sh"  # an "editor" that turns 40 + 2 into 40 + 3
    editor.write_text("#!/bin/sh\nsed -i 's/40 + 2/40 + 3/' \"$1\"\n")
    editor.chmod(editor.stat().st_mode | stat.S_IEXEC)
    child = _spawn(tmp_path, ["repl"], EDITOR=str(editor))
    child.expect_exact(PROMPT)
    child.send("SELECT 40 + 2 AS answer;\r")
    child.expect_exact("(1 row)")
    child.expect_exact(PROMPT)
    child.send("\\e\r")
    child.expect_exact("SELECT 40 + 3 AS answer;")
    child.expect(r"[^\d]43[^\d]")
    child.expect_exact("(1 row)")
    child.expect_exact(PROMPT)
    child.send("\\q\r")
    child.expect(pexpect.EOF)


def test_repl_file_shows_the_prompt_and_leaves_its_selects_for_later(tmp_path):
    (tmp_path / "p.sql").write_text(GEN + "\nSELECT id * 100 AS big FROM g;\n")
    child = _spawn(tmp_path, ["repl", "p.sql"])
    child.expect_exact("help or \\? for help")  # the banner first
    child.expect_exact("p.sql: loaded; 1 query not run (line 2)")
    child.expect_exact(PROMPT)
    assert "200" not in _plain(child.before)
    child.send("SELECT count(*) AS n FROM g;\r")  # the file's DDL ran
    child.expect(r"n[^\n]*\n[^\n]*\n[^\d]*3")
    child.expect_exact(PROMPT)
    child.send("\\q\r")
    child.expect(pexpect.EOF)

    ran = _spawn(tmp_path, ["repl", "--run", "p.sql"])
    ran.expect(r"[^\d]200[^\d]")
    ran.expect_exact(PROMPT)
    assert "not run" not in _plain(ran.before)
    ran.send("\\q\r")
    ran.expect(pexpect.EOF)


def test_version_and_scripts():
    from sqlstream import __version__

    done = _sqlstream(["--version"], Path.cwd())
    assert (done.returncode, done.stdout.strip()) == (0, f"sqlstream {__version__}")


def test_piped_words_and_dot_commands(tmp_path):
    (tmp_path / "defs.sql").write_text(GEN + "\n")
    stdin = ".read defs.sql\nSELECT 40 + 2 AS answer;\n\\x\nSELECT id FROM g WHERE id = 2;\nquit\nSELECT 'never';\n"
    done = _sqlstream(["--csv"], tmp_path, stdin)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        '"answer"', "42", "Expanded display is on.", "-[ RECORD 1 ]--------", "id | 2", "(1 row)",
    ]


@pytest.mark.parametrize("name", ["predict", "fraud_score", "classify_text", "infer", "model"])
def test_a_model_like_unknown_function_hints_at_create_function(name):
    with Session(dead_letter_path="off") as s, pytest.raises(SqlAnalysisError) as info:
        s.sql(f"SELECT {name}(1.0) AS p")
    assert info.value.message == f"unknown function '{name}'"
    assert info.value.hint == (f"to call a model, CREATE FUNCTION {name} AS MODEL 'path/to/model.onnx'; "
                               "for Python code, a @udf function in udfs/*.py")


def test_a_close_typo_still_gets_did_you_mean():
    with Session(dead_letter_path="off") as s, pytest.raises(SqlAnalysisError) as info:
        s.sql("SELECT uper('a') AS p")
    assert info.value.hint == "did you mean 'upper'?"
