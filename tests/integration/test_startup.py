"""``sqlstream --help`` (and ``--version``, and ``import sqlstream``) start fast: they do not
import pyarrow, DataFusion, NATS, sqlglot, rich or pandas; ``sqlstream check`` imports what
planning needs (pyarrow, DataFusion, sqlglot) and not pandas, NATS, ONNX Runtime or the
terminal libraries. Import checks in a fresh interpreter, not timings
(``benchmarks/startup.py`` times them)."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest

HELLO = pathlib.Path(__file__).resolve().parents[2] / "queries" / "hello.sql"
HEAVY = ("pyarrow", "datafusion", "nats", "sqlglot", "rich", "pandas", "numpy", "duckdb", "prompt_toolkit")


def _modules_after(code: str) -> set[str]:
    probe = f"""
import sys
try:
{code}
except SystemExit:
    pass
print(" ".join(sorted({{m.split(".")[0] for m in sys.modules}})), file=sys.stderr)
"""
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return set(done.stderr.split())


@pytest.mark.parametrize("argv", [["--help"], ["--version"], ["run", "--help"], ["repl", "--help"]])
def test_help_and_version_import_no_heavy_library(argv):
    loaded = _modules_after(f"    from sqlstream.cli.main import main\n    main({argv!r})")
    assert "sqlstream" in loaded
    assert sorted(loaded & set(HEAVY)) == []


def test_import_sqlstream_is_light_until_a_session_is_made():
    loaded = _modules_after("    import sqlstream\n    sqlstream.udf; sqlstream.SqlStreamError")
    assert sorted(loaded & set(HEAVY)) == []
    loaded = _modules_after("    import sqlstream\n    sqlstream.Session")
    assert {"pyarrow", "sqlglot"} <= loaded


def test_check_imports_what_planning_needs_and_not_pandas():
    # pyarrow imports pandas on its first conversion of a Python value (datafusion.functions
    # makes one at import): sqlstream.operators.datafusion_import and sqlstream.batches avoid them
    loaded = _modules_after(f"    from sqlstream.cli.main import main\n    main(['check', {str(HELLO)!r}])")
    assert {"sqlstream", "pyarrow", "datafusion", "sqlglot"} <= loaded
    assert sorted(loaded & {"pandas", "nats", "onnxruntime", "rich", "prompt_toolkit", "duckdb", "polars"}) == []


def test_run_of_a_pipeline_without_nats_does_not_load_the_nats_connector():
    # run looks at --checkpoint for an object store URL (sqlstream.runtime.checkpoint_mirror)
    loaded = _modules_after(f"    from sqlstream.cli.main import main\n    main(['run', {str(HELLO)!r}, '--quiet'])")
    assert "pyarrow" in loaded
    assert sorted(loaded & {"nats", "asyncio"}) == []


def test_datafusion_functions_still_load_on_first_use():
    # sqlstream defers running datafusion.functions; whoever uses it gets the whole module
    loaded = _modules_after(
        "    import sqlstream.operators.datafusion_program\n"
        "    from datafusion import col, functions as F\n"
        "    assert 'pandas' not in sys.modules\n"
        "    assert str(F.abs(col('a'))) == str(col('a').abs()) == 'Expr(abs(a))'"
    )
    assert "datafusion" in loaded
