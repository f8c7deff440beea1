"""``allowed_paths`` (``--allow-paths DIR``, ``SET allowed_paths``): every file a pipeline
reads or writes stays inside the allowed directories — ``..``, absolute paths, symbolic
links and globs cannot escape — and SQL can only narrow them. Real files, real sessions."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

import sqlstream
from sqlstream.cli.repl import Repl
from sqlstream.errors import ConnectorError, SqlAnalysisError
from sqlstream.paths import AllowedPaths, resolve_path

SECRET = '{"x": "root:x:0:0"}\nnot json at all\n'


@pytest.fixture
def layout(tmp_path: Path) -> Path:
    """``project/`` (allowed, with ``data/in.jsonl``) beside ``secret/`` (not allowed)."""
    (tmp_path / "project" / "data").mkdir(parents=True)
    (tmp_path / "project" / "data" / "in.jsonl").write_text('{"x": "ok"}\n')
    (tmp_path / "secret").mkdir()
    (tmp_path / "secret" / "passwd").write_text(SECRET)
    (tmp_path / "victim.txt").write_text("precious\n")
    return tmp_path


def confined(layout: Path, allowed: str = "project") -> sqlstream.Session:
    project = layout / "project"
    return sqlstream.Session(
        base_dir=str(project),
        dead_letter_path=str(project / "dead.jsonl"),
        settings={"allowed_paths": str(layout / allowed)},
    )


def source(path: str) -> str:
    return f"CREATE SOURCE s (x VARCHAR) WITH (connector = 'file', path = '{path}', format = 'json');"


def test_unrestricted_by_default(layout):
    """Without allowed_paths (a local tool run by its owner) a path may go anywhere."""
    session = sqlstream.Session(base_dir=str(layout / "project"), dead_letter_path="off")
    session.execute(source("../secret/passwd"))
    assert session.settings["allowed_paths"] is None


def test_a_source_path_climbing_out_with_dotdot_is_refused_at_create(layout):
    session = confined(layout)
    with pytest.raises(ConnectorError) as caught:
        session.execute(source("../../" * 3 + "secret/passwd"), path="p.sql")
    text = caught.value.render()
    assert text.startswith(
        f"p.sql:1:55: error: source 's': path '../../../../../../secret/passwd' is outside the allowed paths "
        f"({os.path.realpath(layout / 'project')})\n"
    )
    assert text.endswith("  hint: allowed_paths (--allow-paths) confines every file a pipeline reads or writes")
    assert caught.value.exit_code == 2
    assert "s" not in session.sources


def test_an_absolute_source_path_outside_is_refused(layout):
    session = confined(layout)
    secret = layout / "secret" / "passwd"
    with pytest.raises(ConnectorError, match=f"source 's': path '{secret}' is outside the allowed paths"):
        session.execute(source(str(secret)))


def test_a_symlink_inside_pointing_outside_is_refused(layout):
    os.symlink(layout / "secret" / "passwd", layout / "project" / "data" / "link.jsonl")
    session = confined(layout)
    with pytest.raises(ConnectorError) as caught:
        session.execute(source("data/link.jsonl"))
    assert "source 's': path 'data/link.jsonl' is outside the allowed paths" in caught.value.message
    assert caught.value.hint.startswith(f"it resolves to {os.path.realpath(layout / 'secret' / 'passwd')}; ")


def test_a_glob_whose_fixed_part_is_outside_is_refused(layout):
    session = confined(layout)
    with pytest.raises(ConnectorError, match=r"source 's': path '\.\./secret/\*' is outside the allowed paths"):
        session.execute(source("../secret/*"))


def test_a_glob_matching_a_symlink_to_outside_fails_before_reading_anything(layout):
    """The glob's folder is allowed, one file it matches is a symlink out: the run stops
    before any row is read, and none of the outside file reaches the dead letters."""
    os.symlink(layout / "secret" / "passwd", layout / "project" / "data" / "zz.jsonl")
    session = confined(layout)
    session.execute(source("data/*.jsonl"))  # the folder is fine at CREATE
    with pytest.raises(ConnectorError) as caught:
        list(session.query("SELECT x FROM s"))
    assert caught.value.message == (
        f"source 's': path '{layout / 'project' / 'data' / 'zz.jsonl'}' is outside the allowed paths "
        f"({os.path.realpath(layout / 'project')})"
    )
    assert not (layout / "project" / "dead.jsonl").exists()


def test_a_sink_path_outside_is_refused_and_the_file_untouched(layout):
    session = confined(layout)
    session.execute(source("data/in.jsonl"))
    with pytest.raises(ConnectorError, match=r"sink 'o': path '\.\./victim\.txt' is outside the allowed paths"):
        session.execute("CREATE SINK o AS SELECT x FROM s WITH (connector = 'file', path = '../victim.txt', format = 'json');")
    assert (layout / "victim.txt").read_text() == "precious\n"


def test_a_sink_into_a_symlinked_folder_is_refused_at_run_too(layout):
    """Declared while the folder was real, then replaced by a link out: the run refuses it."""
    session = confined(layout)
    session.execute(source("data/in.jsonl"))
    (layout / "project" / "out").mkdir()
    session.execute("CREATE SINK o AS SELECT x FROM s WITH (connector = 'file', path = 'out/victim.txt', format = 'json');")
    (layout / "project" / "out").rmdir()
    os.symlink(layout, layout / "project" / "out")
    with pytest.raises(ConnectorError) as caught:
        session.run()
    assert caught.value.message.startswith("sink 'o': path 'out/victim.txt' is outside the allowed paths")
    assert caught.value.hint.startswith(f"it resolves to {os.path.realpath(layout / 'victim.txt')}; ")
    assert (layout / "victim.txt").read_text() == "precious\n"


def test_a_dead_letter_path_outside_is_refused(layout):
    session = confined(layout)
    with pytest.raises(ConnectorError) as caught:
        session.execute("SET dead_letter_path = '../secret/dl.jsonl';", path="p.sql")
    assert caught.value.render().startswith(
        "p.sql:1:24: error: dead_letter_path '../secret/dl.jsonl' is outside the allowed paths"
    )


def test_the_default_dead_letter_file_outside_stops_the_run_with_a_hint(layout):
    session = sqlstream.Session(
        base_dir=str(layout / "project"), dead_letter_path=str(layout / "dl.jsonl"),
        settings={"allowed_paths": str(layout / "project")},
    )
    session.execute(source("data/in.jsonl"))
    with pytest.raises(ConnectorError) as caught:
        list(session.query("SELECT x FROM s"))
    assert caught.value.message.startswith(f"dead-letter file '{layout / 'dl.jsonl'}' is outside the allowed paths")
    assert caught.value.hint == "SET dead_letter_path to a file inside them, or to 'off'"
    assert not (layout / "dl.jsonl").exists()


def test_a_model_outside_is_refused_before_it_is_opened(layout):
    session = confined(layout)
    with pytest.raises(ConnectorError) as caught:
        session.execute("CREATE FUNCTION predict AS MODEL '../secret/m.onnx';", path="p.sql")
    assert caught.value.render().startswith(
        "p.sql:1:1: error: model 'predict': path '../secret/m.onnx' is outside the allowed paths"
    )
    with pytest.raises(ConnectorError, match="model 'p2': path '/etc/m.onnx' is outside the allowed paths"):
        session.register_model("p2", "/etc/m.onnx")


def test_set_can_narrow_but_never_widen(layout):
    session = confined(layout)
    with pytest.raises(SqlAnalysisError) as caught:
        session.execute("SET allowed_paths = '..';", path="p.sql")
    assert caught.value.render() == (
        f"p.sql:1:21: error: SET allowed_paths cannot widen the allowed paths: '{os.path.realpath(layout)}' is "
        f"outside the allowed paths ({os.path.realpath(layout / 'project')}); once set, allowed_paths can only be narrowed\n"
        "  SET allowed_paths = '..';\n"
        "                      ^^^^\n"
        "  hint: the widest allowed paths are decided on the command line (--allow-paths)"
    )
    session.execute("SET allowed_paths = 'data';")  # narrower: fine
    assert str(session.settings["allowed_paths"]) == os.path.realpath(layout / "project" / "data")
    with pytest.raises(SqlAnalysisError, match="cannot widen"):
        session.execute("SET allowed_paths = '.';")
    with pytest.raises(ConnectorError, match="sink 'o': path 'out.jsonl' is outside the allowed paths"):
        session.execute("CREATE SINK o (x VARCHAR) WITH (connector = 'file', path = 'out.jsonl', format = 'json');")


def test_allowed_paths_must_name_existing_folders(layout):
    session = sqlstream.Session(base_dir=str(layout))
    with pytest.raises(SqlAnalysisError, match="invalid value 'nope' for setting 'allowed_paths': 'nope' is not a directory"):
        session.execute("SET allowed_paths = 'nope';")


def test_repl_output_file_outside_is_refused(layout, monkeypatch):
    monkeypatch.chdir(layout / "project")
    out, err = io.StringIO(), io.StringIO()
    repl = Repl(confined(layout), out=out, err=err)
    repl.run_lines(["\\o ../victim.txt"], "<stdin>", str(layout / "project"))
    assert err.getvalue().startswith("<stdin>:1:1: error: \\o file '../victim.txt' is outside the allowed paths")
    assert (layout / "victim.txt").read_text() == "precious\n"


def test_resolve_path_checks_the_real_path_not_the_spelling(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    os.symlink(tmp_path / "b", tmp_path / "a" / "to_b")
    allowed = AllowedPaths.parse("a", str(tmp_path))
    assert resolve_path("a/x/../y.jsonl", str(tmp_path), allowed, what="path") == str(tmp_path / "a" / "y.jsonl")
    with pytest.raises(ConnectorError, match="path 'a/to_b/y.jsonl' is outside"):
        resolve_path("a/to_b/y.jsonl", str(tmp_path), allowed, what="path")
    with pytest.raises(ConnectorError, match="path 'a-sibling/y' is outside"):  # a prefix of the name is not inside
        (tmp_path / "a-sibling").mkdir()
        resolve_path("a-sibling/y", str(tmp_path), allowed, what="path")
