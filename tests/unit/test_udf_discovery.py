"""Discovery of ``udfs/*.py``: next to the pipeline, in the working directory, ``--udfs
DIR``; errors (import, syntax, duplicates, bad declarations) at ``file.py:line:col``."""

from __future__ import annotations

import json
import textwrap

import pytest

from sqlstream.cli.main import main
from sqlstream.cli.session_setup import make_session
from sqlstream.errors import UdfError
from sqlstream.session import Session

SCORING = '''\
import pyarrow as pa
import pyarrow.compute as pc
from sqlstream import udf


@udf(args=[pa.float64()], returns=pa.float64())
def risk(amount: pa.Array) -> pa.Array:
    return pc.divide(amount, 100.0)


@udf
def label(amount: float) -> str:
    return pc.if_else(pc.greater(amount, 50.0), "big", "small")
'''

PIPELINE = """\
CREATE SOURCE tx (id BIGINT, amount DOUBLE) WITH (connector = 'file', path = 'tx.jsonl', format = 'json');
CREATE SINK out AS SELECT id, risk(amount) AS r, label(amount) AS l FROM tx WHERE risk(amount) > 0.2
  WITH (connector = 'file', path = 'out.jsonl', format = 'json');
"""


def write(path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))


@pytest.fixture
def project(tmp_path, tmp_path_factory, monkeypatch):
    """A pipeline with its transactions; UDF files are added by each test. The working
    directory is an empty one (its udfs/ would be loaded too)."""
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))
    write(tmp_path / "pipeline.sql", PIPELINE)
    rows = [{"id": i, "amount": float(a)} for i, a in enumerate([10, 30, 70, 15, 90])]
    (tmp_path / "tx.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return tmp_path


def output(project) -> list[dict]:
    return [json.loads(line) for line in (project / "out.jsonl").read_text().splitlines()]


EXPECTED = [
    {"id": 1, "r": 0.3, "l": "small"},
    {"id": 2, "r": 0.7, "l": "big"},
    {"id": 4, "r": 0.9, "l": "big"},
]


def test_udfs_next_to_the_pipeline_are_loaded(project, capsys):
    write(project / "udfs" / "scoring.py", SCORING)
    assert main(["check", str(project / "pipeline.sql")]) == 0
    assert "2 function(s)" in capsys.readouterr().out
    assert main(["run", str(project / "pipeline.sql")]) == 0
    assert output(project) == EXPECTED


def test_udfs_in_the_working_directory_and_from_the_option(project, tmp_path_factory, monkeypatch):
    elsewhere = tmp_path_factory.mktemp("cwd")
    write(elsewhere / "udfs" / "scoring.py", SCORING.split("\n\n@udf\ndef label")[0])
    extra = tmp_path_factory.mktemp("extra")
    write(extra / "labels.py", "import pyarrow.compute as pc\nfrom sqlstream import udf\n\n\n@udf\n"
          "def label(amount: float) -> str:\n    return pc.if_else(pc.greater(amount, 50.0), 'big', 'small')\n")
    monkeypatch.chdir(elsewhere)
    session = make_session(str(project / "pipeline.sql"), [str(extra)], [])
    assert sorted(session.functions) == ["label", "risk"]
    assert session.functions["label"].origin == f"{extra / 'labels.py'}:5"
    assert main(["run", str(project / "pipeline.sql"), "--udfs", str(extra)]) == 0
    assert output(project) == EXPECTED


def test_a_missing_udfs_directory_is_an_error(project, capsys):
    assert main(["check", str(project / "pipeline.sql"), "--udfs", str(project / "nope")]) == 2
    assert f"error: --udfs {project / 'nope'}: no such directory" in capsys.readouterr().err


def test_helpers_import_and_underscore_files_are_skipped(tmp_path):
    write(tmp_path / "udfs" / "_shared.py", "FACTOR = 3.0\nraise_if_discovered = True\n")
    write(tmp_path / "udfs" / "tripled.py", """\
        import pyarrow.compute as pc
        from _shared import FACTOR
        from sqlstream import udf


        @udf
        def triple(x: float) -> float:
            return pc.multiply(x, FACTOR)
        """)
    session = Session(base_dir=str(tmp_path), dead_letter_path="off", udf_dirs=[str(tmp_path / "udfs")])
    assert list(session.functions) == ["triple"]


def test_imported_udfs_are_not_registered_twice(tmp_path):
    write(tmp_path / "udfs" / "base.py", SCORING)
    write(tmp_path / "udfs" / "more.py", "from base import risk  # re-exported, not redefined\n")
    session = Session(base_dir=str(tmp_path), dead_letter_path="off", udf_dirs=[str(tmp_path / "udfs")])
    assert sorted(session.functions) == ["label", "risk"]


def test_duplicate_names_report_both_files_and_lines(project, capsys):
    write(project / "udfs" / "a.py", SCORING)
    write(project / "udfs" / "b.py", "import pyarrow as pa\nfrom sqlstream import udf\n\n\n@udf(args=[pa.float64()], returns=pa.float64(), name='RISK')\ndef other(x):\n    return x\n")
    assert main(["check", str(project / "pipeline.sql")]) == 2
    err = capsys.readouterr().err
    a, b = project / "udfs" / "a.py", project / "udfs" / "b.py"
    assert err.startswith(  # a.py was loaded (and listed) before b.py clashed with it
        f"sqlstream: loaded UDFs from {a} (2 functions: risk, label)\n"
        f"{b}:5:1: error: function 'risk' is defined twice: {a}:6 and {b}:5\n"
    )
    assert "  @udf(args=[pa.float64()], returns=pa.float64(), name='RISK')" in err
    assert "hint: rename one of them (@udf(name='...'))" in err


def test_duplicate_names_across_directories(project, tmp_path_factory, capsys):
    write(project / "udfs" / "a.py", SCORING)
    extra = tmp_path_factory.mktemp("extra")
    write(extra / "again.py", SCORING)
    assert main(["check", str(project / "pipeline.sql"), "--udfs", str(extra)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(
        f"sqlstream: loaded UDFs from {project / 'udfs' / 'a.py'} (2 functions: risk, label)\n"
        f"{extra / 'again.py'}:6:1: error: function 'risk' is defined twice: {project / 'udfs' / 'a.py'}:6 and {extra / 'again.py'}:6"
    )


def test_import_errors_point_at_the_failing_line(project, capsys):
    write(project / "udfs" / "broken.py", "import pyarrow as pa\n\nLIMITS = {'a': 1}\nTHRESHOLD = LIMITS['b']\n")
    assert main(["check", str(project / "pipeline.sql")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"{project / 'udfs' / 'broken.py'}:4:1: error: importing UDF module failed: KeyError: 'b'\n")
    assert "  THRESHOLD = LIMITS['b']" in err
    assert "Traceback" not in err


def test_syntax_errors_point_at_line_and_column(project, capsys):
    write(project / "udfs" / "typo.py", "from sqlstream import udf\n\ndef f(x:\n    return x\n")
    assert main(["check", str(project / "pipeline.sql")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"{project / 'udfs' / 'typo.py'}:3:")
    assert "error: syntax error in UDF module:" in err.splitlines()[0]


def test_bad_declaration_in_a_discovered_file_is_located(tmp_path):
    write(tmp_path / "udfs" / "untyped.py", "from sqlstream import udf\n\n\n@udf\ndef guess(x):\n    return x\n")
    with pytest.raises(UdfError) as info:
        Session(base_dir=str(tmp_path), dead_letter_path="off", udf_dirs=[str(tmp_path / "udfs")])
    assert str(info.value).startswith(f"{tmp_path / 'udfs' / 'untyped.py'}:4:1: error: function 'guess' needs argument types: no hint for x")


def test_an_edited_file_is_imported_again(tmp_path):
    module = tmp_path / "udfs" / "version.py"
    body = "import pyarrow as pa\nfrom sqlstream import udf\n\n\n@udf(args=[pa.int64()], returns=pa.int64(), name='{name}')\ndef f(x):\n    return x\n"
    write(module, body.format(name="first"))
    assert list(Session(dead_letter_path="off", udf_dirs=[str(tmp_path / "udfs")]).functions) == ["first"]
    write(module, body.format(name="second_name"))
    assert list(Session(dead_letter_path="off", udf_dirs=[str(tmp_path / "udfs")]).functions) == ["second_name"]


def test_the_repository_example_udfs(tmp_path):
    import pathlib

    udfs = pathlib.Path(__file__).resolve().parents[2] / "udfs"
    session = Session(base_dir=str(tmp_path), dead_letter_path="off", udf_dirs=[str(udfs)])
    assert {name: session.functions[name].signature for name in sorted(session.functions)} == {
        "count_char": "count_char(VARCHAR, VARCHAR) -> BIGINT",
        "geomean": "geomean(DOUBLE) -> DOUBLE  [aggregate]",
        "haversine_km": "haversine_km(DOUBLE, DOUBLE, DOUBLE, DOUBLE) -> DOUBLE",
        "median": "median(DOUBLE) -> DOUBLE  [aggregate]",
    }
    from sqlstream.testing import TestSession

    test = TestSession(base_dir=str(tmp_path), udf_dirs=[str(udfs)])
    test.execute("CREATE SOURCE s (word VARCHAR, ch VARCHAR, lat DOUBLE, lon DOUBLE) WITH (connector = 'memory')")
    test.stream("s").push(
        [
            {"word": "banana", "ch": "a", "lat": 48.8566, "lon": 2.3522},
            {"word": "apple", "ch": "p", "lat": None, "lon": 0.0},
            {"word": None, "ch": "a", "lat": 51.5074, "lon": -0.1278},
            {"word": "cherry", "ch": None, "lat": 48.8566, "lon": 2.3522},
        ]
    ).finish()
    rows = test.run_query(
        "SELECT count_char(word, ch) AS n, count_char(word, 'r') AS r, haversine_km(lat, lon, 51.5074, -0.1278) AS km FROM s"
    )
    assert [(r["n"], r["r"]) for r in rows] == [(3, 0), (2, 0), (None, None), (None, 2)]
    assert rows[0]["km"] == pytest.approx(343.6, abs=0.5)  # Paris - London
    assert rows[1]["km"] is None and rows[2]["km"] == pytest.approx(0.0)
    test.execute("CREATE SOURCE t (ch VARCHAR, lat DOUBLE) WITH (connector = 'memory')")
    test.stream("t").push([{"ch": "a", "lat": 48.8566}, {"ch": "p", "lat": None}, {"ch": "a", "lat": 51.5074},
                           {"ch": None, "lat": 48.8566}]).finish()
    grouped = test.run_query("SELECT ch, median(lat) AS m, geomean(lat) AS g, count(*) AS n FROM t GROUP BY ch")
    assert sorted(grouped, key=lambda r: (r["ch"] is None, r["ch"] or "")) == [
        {"ch": "a", "m": pytest.approx((48.8566 + 51.5074) / 2), "g": pytest.approx((48.8566 * 51.5074) ** 0.5), "n": 2},
        {"ch": "p", "m": None, "g": None, "n": 1},
        {"ch": None, "m": pytest.approx(48.8566), "g": pytest.approx(48.8566), "n": 1},
    ]
