"""Model updates in the REPL: a sink scoring a live generator keeps running while
``CREATE OR REPLACE FUNCTION`` swaps its model and while ``reload = 'on_change'`` picks
up a renamed file; a refused replacement prints a located error and the sink goes on."""

from __future__ import annotations

import io
import json
import textwrap
import time
from pathlib import Path

import pytest

from sqlstream.cli.repl import Repl
from sqlstream.session import Session
from tests.udf.test_model_versions import replace_file, scale_model

LIVE = (
    "CREATE SOURCE live (id BIGINT, a DOUBLE, b DOUBLE) WITH (connector = 'generator', rows_per_second = 2000, "
    "fields.id.kind = 'sequence', fields.a.min = 0, fields.a.max = 1, fields.b.min = 0, fields.b.max = 1);"
)


def _wait_for(condition, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def _rows(path: Path) -> list[dict]:
    """The complete lines written so far (the sink may be appending the last one)."""
    if not path.exists():
        return []
    text = path.read_text()
    return [json.loads(line) for line in text[: text.rfind("\n") + 1].splitlines()]


@pytest.mark.parametrize("how", ["create_or_replace", "reload"])
def test_a_running_repl_sink_switches_versions_without_stopping(tmp_path, how):
    scale_model(tmp_path / "v1.onnx", 1.0)
    scale_model(tmp_path / "v2.onnx", 2.0)
    scale_model(tmp_path / "wide.onnx", 1.0, width=3)
    replace_file(tmp_path / "model.onnx", tmp_path / "v1.onnx")
    out, err = io.StringIO(), io.StringIO()
    repl = Repl(Session(base_dir=str(tmp_path), dead_letter_path=str(tmp_path / "dead.jsonl")), out=out, err=err)
    reload = " WITH (reload = 'on_change', reload_interval = '10ms')" if how == "reload" else ""

    def script(text: str) -> None:
        repl.run_lines(textwrap.dedent(text).strip().splitlines(), "<stdin>", str(tmp_path))

    script(f"""
        {LIVE}
        CREATE FUNCTION f AS MODEL 'model.onnx'{reload};
        CREATE SINK scored AS SELECT id, a, b, f(a, b) AS y, model_version(f) AS v FROM live
          WITH (connector = 'file', path = 'scored.jsonl', format = 'json', mode = 'append');
    """)
    sink = tmp_path / "scored.jsonl"
    _wait_for(lambda: len(_rows(sink)) >= 20, "rows scored by v1")
    script("CREATE OR REPLACE FUNCTION f AS MODEL 'wide.onnx';")
    assert "<stdin>:1:1: error: model f: wide.onnx does not take the arguments a running query passes" in err.getvalue()
    if how == "reload":
        replace_file(tmp_path / "model.onnx", tmp_path / "v2.onnx")
    else:
        script("CREATE OR REPLACE FUNCTION f AS MODEL 'v2.onnx';")
    _wait_for(lambda: any(r["v"].startswith("v2") for r in _rows(sink)), "rows scored by v2")
    seen = len(_rows(sink))
    _wait_for(lambda: len(_rows(sink)) >= seen + 20, "more rows after the swap")
    query = repl.background.queries[0]
    assert query.status == "running"
    repl.close()
    rows = _rows(sink)
    assert [r["id"] for r in rows] == list(range(len(rows)))
    versions = [r["v"].split(" ")[0] for r in rows]
    switch = versions.index("v2")
    assert switch >= 20 and versions == ["v1"] * switch + ["v2"] * (len(rows) - switch)
    for r in rows:
        factor = 1.0 if r["v"].startswith("v1") else 2.0
        assert r["y"] == pytest.approx(factor * (r["a"] + r["b"]), rel=1e-5, abs=1e-6)
