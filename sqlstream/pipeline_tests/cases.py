"""Pipeline test cases: a folder or a TOML file read into a :class:`CaseSpec` (the
pipeline, its fixtures, the expected rows and the steps). The format is described in
:mod:`sqlstream.pipeline_tests`."""

from __future__ import annotations

import datetime as dt
import os
import tomllib
from dataclasses import dataclass, field
from typing import Any

from sqlstream.errors import TestSpecError

__all__ = [
    "InputSpec",
    "ExpectedSpec",
    "CaseSpec",
    "FIXTURE_FORMATS",
    "discover_cases",
    "load_case",
    "shown_path",
    "timestamp_us",
]

FIXTURE_FORMATS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}
_MODES = ("final", "append")


@dataclass
class InputSpec:
    """Fixture rows replacing a source: a file, or rows written inline."""

    source: str
    path: str | None = None
    rows: list[dict] | None = None
    format: str = "json"
    timestamp_format: str | None = None


@dataclass
class ExpectedSpec:
    """Rows a sink must receive: written inline or in a JSON-lines file; ``final`` (the
    changelog folded) or ``append`` (every row as received), in ``ordered`` order or not."""

    sink: str
    mode: str = "final"
    ordered: bool = False
    path: str | None = None
    rows: list[dict] | None = None


@dataclass
class CaseSpec:
    """One test, loaded from a folder or a TOML file (paths resolve against ``base_dir``)."""

    name: str
    path: str
    base_dir: str
    sql_path: str
    sql: str
    settings: dict[str, Any] = field(default_factory=dict)
    inputs: dict[str, InputSpec] = field(default_factory=dict)
    expected: dict[str, ExpectedSpec] = field(default_factory=dict)
    steps: list[dict] = field(default_factory=list)
    end_of_input: bool = True
    clock_start_us: int | None = None
    single_file: bool = False


# -- discovery and loading --------------------------------------------------------------------


def shown_path(path: str) -> str:
    """A path as messages show it: relative to the working directory when below it."""
    relative = os.path.relpath(path)
    return os.path.abspath(path) if relative.startswith("..") else relative


def _is_case_dir(path: str) -> bool:
    return os.path.isfile(os.path.join(path, "pipeline.sql")) or os.path.isfile(os.path.join(path, "test.toml"))


def discover_cases(path: str) -> list[str]:
    """A case folder, a case ``.toml`` file, or every case directly under a folder."""
    if os.path.isfile(path):
        return [path]
    if _is_case_dir(path):
        return [path]
    cases = []
    for name in sorted(os.listdir(path)):
        full = os.path.join(path, name)
        if os.path.isdir(full) and _is_case_dir(full):
            cases.append(full)
        elif os.path.isfile(full) and name.endswith(".toml"):
            cases.append(full)
    return cases


def _read_toml(path: str) -> dict:
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except tomllib.TOMLDecodeError as error:
        raise TestSpecError(f"{path}: not valid TOML: {error}") from error


def _fixture_file(case_dir: str, source: str) -> InputSpec | None:
    folder = os.path.join(case_dir, "inputs")
    for ext, fmt in FIXTURE_FORMATS.items():
        path = os.path.join(folder, source + ext)
        if os.path.isfile(path):
            return InputSpec(source, path=path, format=fmt)
    return None


def timestamp_us(value, where: str) -> int:
    if isinstance(value, dt.datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)
        return int(moment.timestamp() * 1_000_000)
    if isinstance(value, str):
        try:
            return timestamp_us(dt.datetime.fromisoformat(value), where)
        except ValueError:
            pass
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise TestSpecError(f"{where}: expected a timestamp (e.g. 2024-01-01T00:00:10), got {value!r}")


def _check_keys(table: dict, allowed: tuple[str, ...], where: str) -> None:
    unknown = sorted(set(table) - set(allowed))
    if unknown:
        raise TestSpecError(f"{where}: unknown key '{unknown[0]}'", hint="valid keys: " + ", ".join(allowed))


def load_case(path: str) -> CaseSpec:
    """Read a test folder or TOML file into a :class:`CaseSpec`."""
    single = os.path.isfile(path)
    if single:
        base_dir = os.path.dirname(os.path.abspath(path))
        config_path = path
        config = _read_toml(path)
        name = os.path.splitext(os.path.basename(path))[0]
    else:
        base_dir = os.path.abspath(path)
        config_path = os.path.join(path, "test.toml")
        config = _read_toml(config_path) if os.path.isfile(config_path) else {}
        name = os.path.basename(os.path.normpath(path))
    where = shown_path(config_path)
    _check_keys(
        config,
        ("sql", "pipeline", "settings", "inputs", "expected", "steps", "end_of_input", "clock_start", "description"),
        where,
    )
    if "sql" in config and "pipeline" in config:
        raise TestSpecError(f"{where}: give either sql = '''...''' or pipeline = \"file.sql\", not both")
    if "sql" in config:
        sql, sql_path = str(config["sql"]), config_path
    else:
        sql_path = os.path.join(base_dir, config.get("pipeline", "pipeline.sql"))
        if not os.path.isfile(sql_path):
            raise TestSpecError(f"{where}: no pipeline: {shown_path(sql_path)} does not exist",
                                hint="write pipeline.sql, or sql = '''...''' / pipeline = \"file.sql\" in the TOML")
        with open(sql_path, encoding="utf-8") as handle:
            sql = handle.read()
        sql_path = shown_path(sql_path)
    clock_start_us = timestamp_us(config["clock_start"], f"{where}: clock_start") if "clock_start" in config else None
    inputs, expected = ({}, {}) if single else _folder_fixtures(base_dir)
    inputs.update(_inputs(config, base_dir, where))
    expected.update(_expectations(config, expected, base_dir, where))
    return CaseSpec(
        name,
        path,
        base_dir,
        sql_path,
        sql,
        settings=dict(config.get("settings", {})),
        inputs=inputs,
        expected=expected,
        steps=_steps(config, base_dir, where),
        end_of_input=bool(config.get("end_of_input", True)),
        clock_start_us=clock_start_us,
        single_file=single,
    )


def _folder_fixtures(base_dir: str) -> tuple[dict[str, InputSpec], dict[str, ExpectedSpec]]:
    """The fixtures in a case folder's ``inputs/`` and the expected rows in its ``expected/``."""
    inputs: dict[str, InputSpec] = {}
    expected: dict[str, ExpectedSpec] = {}
    inputs_dir = os.path.join(base_dir, "inputs")
    if os.path.isdir(inputs_dir):
        for file_name in sorted(os.listdir(inputs_dir)):
            stem, ext = os.path.splitext(file_name)
            if ext in FIXTURE_FORMATS:
                inputs.setdefault(stem.lower(), _fixture_file(base_dir, stem))
    expected_dir = os.path.join(base_dir, "expected")
    if os.path.isdir(expected_dir):
        for file_name in sorted(os.listdir(expected_dir)):
            if file_name.endswith(".jsonl"):
                sink = file_name[: -len(".jsonl")].lower()
                expected[sink] = ExpectedSpec(sink, path=os.path.join(expected_dir, file_name))
    return inputs, expected


def _inputs(config: dict, base_dir: str, where: str) -> dict[str, InputSpec]:
    """The ``[inputs.<source>]`` tables."""
    inputs: dict[str, InputSpec] = {}
    for source, table in (config.get("inputs") or {}).items():
        source = source.lower()
        here = f"{where}: [inputs.{source}]"
        _check_keys(table, ("rows", "file", "format", "timestamp_format"), here)
        if ("rows" in table) == ("file" in table):
            raise TestSpecError(f"{here}: give rows = [...] or file = \"...\"")
        if "rows" in table:
            inputs[source] = InputSpec(source, rows=list(table["rows"]), timestamp_format=table.get("timestamp_format"))
            continue
        file_path = os.path.join(base_dir, table["file"])
        ext = os.path.splitext(file_path)[1]
        fmt = table.get("format") or FIXTURE_FORMATS.get(ext, "json")
        if not os.path.isfile(file_path):
            raise TestSpecError(f"{here}: {shown_path(file_path)} does not exist")
        inputs[source] = InputSpec(source, path=file_path, format=fmt, timestamp_format=table.get("timestamp_format"))
    return inputs


def _expectations(config: dict, found: dict[str, ExpectedSpec], base_dir: str, where: str) -> dict[str, ExpectedSpec]:
    """The ``[expected.<sink>]`` tables, over the ``expected/`` files ``found`` in the folder."""
    expected: dict[str, ExpectedSpec] = {}
    for sink, table in (config.get("expected") or {}).items():
        sink = sink.lower()
        here = f"{where}: [expected.{sink}]"
        _check_keys(table, ("rows", "file", "mode", "ordered"), here)
        earlier = expected.get(sink) or found.get(sink) or ExpectedSpec(sink)
        mode = str(table.get("mode", earlier.mode))
        if mode not in _MODES:
            raise TestSpecError(f"{here}: mode must be final or append, not '{mode}'")
        rows, file_path = earlier.rows, earlier.path
        if "rows" in table:
            rows, file_path = list(table["rows"]), None
        elif "file" in table:
            file_path = os.path.join(base_dir, table["file"])
        expected[sink] = ExpectedSpec(sink, mode, bool(table.get("ordered", False)), file_path, rows)
    return expected


def _steps(config: dict, base_dir: str, where: str) -> list[dict]:
    """The ``[[steps]]``, each checked to do one thing (a step's ``file`` resolved against ``base_dir``)."""
    steps = []
    for index, step in enumerate(config.get("steps") or [], 1):
        here = f"{where}: step {index}"
        _check_keys(step, ("source", "rows", "file", "format", "watermark", "advance", "expect", "end"), here)
        actions = [k for k in ("rows", "file", "watermark", "advance", "expect", "end") if k in step]
        if len(actions) != 1 or (("rows" in step or "file" in step) and "source" not in step):
            raise TestSpecError(
                f"{here}: a step does one thing",
                hint="source + rows/file, watermark = { source = time }, advance = \"5s\", expect.<sink> = [...], or end",
            )
        steps.append({**step, "file": os.path.join(base_dir, step["file"])} if "file" in step else step)
    return steps
