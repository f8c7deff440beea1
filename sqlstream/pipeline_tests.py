"""Pipeline tests: a folder with ``pipeline.sql``, its inputs and ``expected/<sink>.jsonl``.

::

    tests/sql/<case>/
      pipeline.sql             the pipeline, as users write it
      <files it reads>         inputs named by its file sources (relative paths)
      inputs/<source>.jsonl    optional fixture replacing source <source> (.jsonl, .csv or .parquet):
                               a NATS or generator source becomes a file of rows
      expected/<sink>.jsonl    rows each sink must receive; a bare SELECT is sink query_1, query_2, ...
      test.toml                optional: [settings] applied before the pipeline (SET-like)

Every sink is captured in memory instead of its real destination. Updating results
(changelogs) are folded to their final table, and rows compare as multisets (floats
to 9 significant digits). Used by ``sqlstream test`` and by the project's own tests.
"""

from __future__ import annotations

import os
import sys
import tomllib
from dataclasses import dataclass, field

import orjson

from sqlstream.changelog import fold_changelog
from sqlstream.connectors.encode import encode_json_lines
from sqlstream.errors import SqlStreamError
from sqlstream.sql.statements import OptionValue, SourceText, parse_script, CreateSource
from sqlstream.testing import MemorySink, TestSession

__all__ = ["CaseResult", "run_case", "discover_cases", "run_cli", "canonical_rows"]

_FIXTURE_FORMATS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}


@dataclass
class CaseResult:
    name: str
    passed: bool
    messages: list[str] = field(default_factory=list)
    outputs: dict[str, list[dict]] = field(default_factory=dict)


def _canonical(value):
    if isinstance(value, float):
        return float(f"{value:.9g}")
    if isinstance(value, list):
        return [_canonical(v) for v in value]
    if isinstance(value, dict):
        return {k: _canonical(v) for k, v in value.items()}
    return value


def canonical_rows(rows: list[dict]) -> list[dict]:
    return [_canonical(r) for r in rows]


def _key(row: dict) -> bytes:
    return orjson.dumps(row, option=orjson.OPT_SORT_KEYS)


def discover_cases(directory: str) -> list[str]:
    if os.path.isfile(os.path.join(directory, "pipeline.sql")):
        return [directory]
    return sorted(
        os.path.join(directory, name)
        for name in os.listdir(directory)
        if os.path.isfile(os.path.join(directory, name, "pipeline.sql"))
    )


def _fixture(case: str, source: str) -> tuple[str, str] | None:
    folder = os.path.join(case, "inputs")
    for ext, fmt in _FIXTURE_FORMATS.items():
        path = os.path.join(folder, source + ext)
        if os.path.isfile(path):
            return path, fmt
    return None


def run_case(case: str, udf_dirs: list[str] | None = None, update: bool = False) -> CaseResult:
    name = os.path.basename(os.path.normpath(case))
    result = CaseResult(name, True)
    session = TestSession(base_dir=case)
    config_path = os.path.join(case, "test.toml")
    if os.path.isfile(config_path):
        with open(config_path, "rb") as handle:
            config = tomllib.load(handle)
        from sqlstream.settings import parse_setting

        for key, value in config.get("settings", {}).items():
            session.settings[key] = parse_setting(key, value)
    for directory in [os.path.join(case, "udfs"), *(udf_dirs or [])]:
        if os.path.isdir(directory):
            session.load_udfs(directory)
    path = os.path.join(case, "pipeline.sql")
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    source = SourceText(text, path, case)
    try:
        for statement in parse_script(source, lambda: session.functions.keys()):
            if isinstance(statement, CreateSource):
                fixture = _fixture(case, statement.name)
                if fixture is not None:
                    keep = {k: v for k, v in statement.options.items() if k in ("on_error", "max_future", "timestamp_format", "idle_timeout")}
                    statement.options = {
                        "connector": OptionValue("file"),
                        "path": OptionValue(fixture[0]),
                        "format": OptionValue(fixture[1]),
                        **keep,
                    }
            session.execute_statement(statement)
        for entry in session.sinks.values():
            entry.connector = MemorySink(entry.name, {"connector": "memory"})
        for entry in session.pending_sinks():
            for src in entry.plan.sources():
                reader_bounded = _bounded(session, src)
                if not reader_bounded:
                    raise SqlStreamError(
                        f"source '{src}' is unbounded",
                        hint=f"give it a fixture: {os.path.join(case, 'inputs', src + '.jsonl')}",
                    )
        session.run()
    except SqlStreamError as error:
        result.passed = False
        result.messages.append(error.render())
        return result
    expected_dir = os.path.join(case, "expected")
    for sink in session.pending_sinks():
        batches = session.outputs.get(sink.name, [])
        rows = []
        for batch in batches:
            rows.extend(orjson.loads(line) for line in encode_json_lines(batch).splitlines())
        actual = canonical_rows(fold_changelog(rows))
        result.outputs[sink.name] = actual
        expected_path = os.path.join(expected_dir, f"{sink.name}.jsonl")
        if update:
            os.makedirs(expected_dir, exist_ok=True)
            with open(expected_path, "wb") as handle:
                for row in sorted(actual, key=_key):
                    handle.write(orjson.dumps(row) + b"\n")
            continue
        if not os.path.isfile(expected_path):
            result.passed = False
            result.messages.append(f"no expected output {expected_path} (sqlstream test --update writes it)")
            continue
        with open(expected_path, "rb") as handle:
            expected = canonical_rows([orjson.loads(line) for line in handle if line.strip()])
        missing, unexpected = _diff(expected, actual)
        if missing or unexpected:
            result.passed = False
            lines = [f"sink {sink.name}: {len(expected)} rows expected, {len(actual)} received"]
            lines += [f"  - missing:    {orjson.dumps(r).decode()}" for r in missing[:20]]
            lines += [f"  + unexpected: {orjson.dumps(r).decode()}" for r in unexpected[:20]]
            result.messages.append("\n".join(lines))
    return result


def _bounded(session: TestSession, name: str) -> bool:
    entry = session.sources.get(name)
    if entry is None:
        return True
    connector = entry.connector
    if connector.name == "generator":
        return connector.total_rows is not None
    return connector.name in ("file", "memory", "internal")


def _diff(expected: list[dict], actual: list[dict]) -> tuple[list[dict], list[dict]]:
    from collections import Counter

    e = Counter(_key(r) for r in expected)
    a = Counter(_key(r) for r in actual)
    missing = [orjson.loads(k) for k, n in (e - a).items() for _ in range(n)]
    unexpected = [orjson.loads(k) for k, n in (a - e).items() for _ in range(n)]
    return missing, unexpected


def run_cli(directory: str, udf_dirs: list[str] | None, verbose: bool = False, update: bool = False) -> int:
    if not os.path.isdir(directory):
        print(f"error: {directory}: no such directory", file=sys.stderr)
        return 2
    cases = discover_cases(directory)
    if not cases:
        print(f"error: no pipeline tests under {directory} (folders with pipeline.sql)", file=sys.stderr)
        return 2
    failed = 0
    for case in cases:
        result = run_case(case, udf_dirs, update=update)
        status = "PASSED" if result.passed else "FAILED"
        print(f"{os.path.relpath(case)} {status}")
        if not result.passed or verbose:
            for message in result.messages:
                print(message)
        failed += not result.passed
    passed = len(cases) - failed
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0
