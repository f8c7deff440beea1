"""``sqlstream --help`` (and ``--version``, and ``import sqlstream``) start fast: they do not
import pyarrow, DataFusion, NATS, sqlglot, rich or pandas. An import check in a fresh
interpreter, not a timing (``benchmarks/startup.py`` times it)."""

from __future__ import annotations

import subprocess
import sys

import pytest

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
