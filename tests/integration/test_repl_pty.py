"""``sqlstream repl`` in a real pseudo-terminal (pexpect): multi-line input, Tab completion
of a column, a live query over an unbounded generator paused with space and stopped with
Ctrl-C (back at the prompt), \\save_test of what it read, an updating aggregate redrawn in
place ending with its final values, and \\q."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import pytest

from sqlstream.pipeline_tests import run_case

pexpect = pytest.importorskip("pexpect")

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
PROMPT = "sqlstream>"


def _plain(text: str) -> str:
    return ANSI.sub("", text).replace("\r", "")


@pytest.fixture
def repl(tmp_path: Path):
    env = dict(
        os.environ,
        SQLSTREAM_HISTORY=str(tmp_path / "history"),
        PROMPT_TOOLKIT_NO_CPR="1",  # no terminal answers cursor-position requests here
        TERM="xterm",
        COLUMNS="120",
        LINES="40",
    )
    child = pexpect.spawn(
        sys.executable, ["-m", "sqlstream.cli.main", "repl"], cwd=str(tmp_path), env=env,
        encoding="utf-8", codec_errors="replace", dimensions=(40, 120), timeout=30,
    )
    child.expect_exact(PROMPT)
    yield child
    if child.isalive():
        child.terminate(force=True)


def test_live_session_in_a_terminal(repl, tmp_path):
    # a statement over three lines
    repl.send("CREATE SOURCE g (id BIGINT, temp DOUBLE,\r")
    repl.send("  ts TIMESTAMP, WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)\r")
    repl.send("  WITH (connector = 'generator', rows_per_second = 40, fields.id.kind = 'sequence');\r")
    repl.expect_exact("CREATE SOURCE g")
    repl.expect_exact(PROMPT)

    # Tab completes the column; the live query scrolls with a rows/s footer
    repl.send("SELECT id, te\t FROM g;\r")
    repl.expect(r"id +\| temp")
    repl.expect(r"[^\d.]3 +\| \d")
    repl.expect(r"rows/s · [\d.]+s · watermark \d{4}-")
    repl.send(" ")  # space pauses the rendering, the query keeps running
    repl.expect_exact("paused (the query keeps running)")
    repl.send(" ")
    repl.expect_exact("[space: pause  ctrl-c: stop]")
    repl.sendcontrol("c")  # Ctrl-C stops the query, not the REPL
    repl.expect(r"\((\d+) rows, stopped\)")
    shown = int(repl.match.group(1))
    assert shown > 3
    repl.expect_exact(PROMPT)

    # what the stopped query read becomes a pipeline test
    repl.send("\\save_test first_case\r")
    repl.expect(r"`sqlstream test first_case` passes")
    repl.expect_exact(PROMPT)
    assert run_case(str(tmp_path / "first_case")).passed
    fixture = (tmp_path / "first_case" / "inputs" / "g.jsonl").read_text().splitlines()
    assert len(fixture) >= shown

    # an updating aggregate over a bounded source: redrawn in place, final values at the end
    repl.send("CREATE SOURCE b (id BIGINT) WITH (connector = 'generator', max_rows = 60,\r")
    repl.send("  rows_per_second = 120, fields.id.kind = 'sequence');\r")
    repl.expect_exact("CREATE SOURCE b")
    repl.expect_exact(PROMPT)
    repl.send("SELECT id % 3 AS k, count(*) AS n, sum(id) AS s FROM b GROUP BY id % 3;\r")
    repl.expect(r"\(3 rows, \d+ changes\)")
    screen = _plain(repl.before)
    assert "changes/s" in screen  # the live footer was shown while it ran
    final = screen[screen.rindex("┏") :]
    for k in range(3):
        total = sum(i for i in range(60) if i % 3 == k)
        assert re.search(rf"│ +{k} +│ +20 +│ +{total} +│", final), final
    repl.expect_exact(PROMPT)

    repl.send("\\q\r")
    repl.expect(pexpect.EOF)
    repl.close()
    assert repl.exitstatus == 0
    history = (tmp_path / "history").read_text()
    assert "+SELECT id, temp FROM g;\n" in history
    assert "+CREATE SOURCE g (id BIGINT, temp DOUBLE,\n+  ts TIMESTAMP" in history
