"""Plugins installed for real: the example package (examples/plugins/sqlstream-example)
is installed into a temporary directory, then ``sqlstream run`` uses its connector and
functions in a subprocess that has that directory on PYTHONPATH; SHOW CONNECTORS
names its package and version; the conformance kit passes its connector; a plugin that
fails to import is a clear error, exit code 2, no traceback.

Installing: ``pip install --no-deps --no-build-isolation --no-index --target DIR``.
Where the build backend cannot build a wheel offline (setuptools without ``wheel``),
the test installs what pip would: the package's files and a ``.dist-info`` with the
entry points of its ``pyproject.toml``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "plugins" / "sqlstream-example"
SQLSTREAM = str(Path(sys.executable).with_name("sqlstream"))
PIP = str(Path(sys.executable).with_name("pip"))


def _write_dist_info(target: Path, name: str, version: str, entry_points: dict[str, dict[str, str]]) -> None:
    dist_info = target / f"{name.replace('-', '_')}-{version}.dist-info"
    dist_info.mkdir(parents=True)
    (dist_info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    lines = []
    for group, entries in entry_points.items():
        lines.append(f"[{group}]")
        lines += [f"{key} = {value}" for key, value in entries.items()]
    (dist_info / "entry_points.txt").write_text("\n".join(lines) + "\n")
    (dist_info / "RECORD").write_text("")


def install(package: Path, target: Path) -> None:
    """Install ``package`` into ``target`` with pip, offline (``wheel`` is a dev dependency)."""
    pip = subprocess.run([PIP, "install", "--no-deps", "--no-build-isolation", "--no-index", "--quiet",
                          "--target", str(target), str(package)], capture_output=True, text=True, timeout=300)
    assert pip.returncode == 0, pip.stdout + pip.stderr


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    target = tmp_path_factory.mktemp("site")
    install(EXAMPLE, target)
    return target


def _env(site: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = f"{site}{os.pathsep}{REPO}"
    env.pop("SQLSTREAM_DEBUG", None)
    return env


def _python(site: Path, code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=120, env=_env(site), cwd=site)


PIPELINE = """
CREATE SOURCE nums (n BIGINT) WITH (connector = 'sequence', start = 1, count = 3);
CREATE SINK out AS SELECT n, shout(repeat_text('ab', n)) AS s FROM nums
  WITH (connector = 'file', path = 'out.jsonl', format = 'json');
"""


def test_sqlstream_run_uses_the_plugin_connector_and_functions(site, tmp_path):
    (tmp_path / "pipeline.sql").write_text(PIPELINE)
    result = subprocess.run([SQLSTREAM, "run", "pipeline.sql"], cwd=tmp_path, capture_output=True, text=True,
                            timeout=120, env=_env(site))
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert rows == [{"n": 1, "s": "AB!"}, {"n": 2, "s": "ABAB!"}, {"n": 3, "s": "ABABAB!"}]


def test_show_connectors_and_functions_name_the_package(site):
    result = _python(site, """
        from sqlstream import Session
        s = Session()
        for what in ("CONNECTORS", "FUNCTIONS"):
            for row in s.execute(f"SHOW {what}")[0].table.to_pylist():
                print(what, row)
    """)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert ("CONNECTORS {'name': 'sequence', 'kind': 'source', 'origin': 'sqlstream-example==0.1.0', "
            "'description': 'Numbers from start by step, count of them (a bounded source).'}") in out
    assert "CONNECTORS {'name': 'file', 'kind': 'source, sink', 'origin': 'built-in'" in out
    assert "'name': 'shout', 'kind': 'python', 'signature': 'shout(VARCHAR) -> VARCHAR', 'origin': 'sqlstream-example==0.1.0'" in out


def test_the_conformance_kit_passes_the_plugin_connector(site):
    result = _python(site, """
        import pyarrow as pa
        from sqlstream.connectors import SOURCE_CONNECTORS
        from sqlstream.testing import check_source_connector
        table = check_source_connector(SOURCE_CONNECTORS["sequence"], {"start": 5, "count": 4}, pa.schema([("n", pa.int64())]),
                                       bad_input={"count": 6, "poison_every": 3})
        print(table.column("n").to_pylist())
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[5, 6, 7, 8]"


def _broken_site(tmp_path: Path, group: str, value: str) -> Path:
    site = tmp_path / "broken-site"
    (site / "sqlstream_broken").mkdir(parents=True)
    (site / "sqlstream_broken" / "__init__.py").write_text("raise RuntimeError('the plugin is broken on purpose')\n")
    _write_dist_info(site, "sqlstream-broken", "2.0.1", {group: {"wonky": value}})
    return site


@pytest.mark.parametrize(
    ("group", "value", "sql", "message"),
    [
        ("sqlstream.connectors", "sqlstream_broken:WonkySource",
         "CREATE SOURCE s (n BIGINT) WITH (connector = 'wonky');\nCREATE SINK o AS SELECT n FROM s WITH (connector = 'stdout');\n",
         "plugin entry point 'wonky = sqlstream_broken:WonkySource' (sqlstream.connectors, from sqlstream-broken==2.0.1) "
         "failed to load: RuntimeError: the plugin is broken on purpose"),
        ("sqlstream.functions", "sqlstream_broken",
         "CREATE SOURCE s (n BIGINT) WITH (connector = 'generator', max_rows = 1);\n"
         "CREATE SINK o AS SELECT n FROM s WITH (connector = 'stdout');\n",
         "plugin entry point 'wonky = sqlstream_broken' (sqlstream.functions, from sqlstream-broken==2.0.1) "
         "failed to load: RuntimeError: the plugin is broken on purpose"),
    ],
    ids=["connector", "functions"],
)
def test_a_plugin_that_fails_to_import_is_a_clear_error(tmp_path, group, value, sql, message):
    site = _broken_site(tmp_path, group, value)
    (tmp_path / "pipeline.sql").write_text(sql)
    result = subprocess.run([SQLSTREAM, "run", "pipeline.sql"], cwd=tmp_path, capture_output=True, text=True,
                            timeout=120, env=_env(site))
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    if group == "sqlstream.connectors":  # located at the connector option that named it
        assert result.stderr.startswith(f"pipeline.sql:1:34: error: {message}"), result.stderr
    assert "hint: fix or reinstall sqlstream-broken==2.0.1, or uninstall it" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_plugin_may_not_take_a_built_in_name(tmp_path):
    site = tmp_path / "clash-site"
    (site / "sqlstream_clash").mkdir(parents=True)
    (site / "sqlstream_clash" / "__init__.py").write_text("")
    _write_dist_info(site, "sqlstream-clash", "1.0", {"sqlstream.connectors": {"file": "sqlstream_clash:FileSource"}})
    (tmp_path / "pipeline.sql").write_text(
        "CREATE SOURCE s (n BIGINT) WITH (connector = 'nope');\nCREATE SINK o AS SELECT n FROM s WITH (connector = 'stdout');\n")
    result = subprocess.run([SQLSTREAM, "run", "pipeline.sql"], cwd=tmp_path, capture_output=True, text=True,
                            timeout=120, env=_env(site))
    assert result.returncode == 2, result.stderr
    assert ("plugin entry point 'file = sqlstream_clash:FileSource' (sqlstream.connectors, from sqlstream-clash==1.0) "
            "takes the name of the built-in connector 'file'") in result.stderr
    assert "Traceback" not in result.stderr
