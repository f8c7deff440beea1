"""Pipeline tests: a pipeline, fixture rows for its sources, and the rows each sink must get.

A test is a folder::

    tests/sql/<case>/
      pipeline.sql             the pipeline, as users write it
      <files it reads>         inputs named by its file sources (relative paths)
      inputs/<source>.jsonl    optional fixture replacing source <source> (.jsonl, .csv or .parquet):
                               a NATS or generator source becomes a file of rows
      expected/<sink>.jsonl    rows each sink must receive; a bare SELECT is sink query_1, query_2, ...
      test.toml                optional, see below

or a single TOML file (``tests/sql/<case>.toml``) holding the same in one place::

    sql = '''CREATE SOURCE bids (...) WITH (connector = 'nats', ...);
             CREATE SINK totals AS SELECT ... FROM bids ...;'''   # or: pipeline = "file.sql"
    clock_start = 2024-01-01T00:00:00     # the manual clock (processing time), optional
    end_of_input = true                   # false: stop after the steps without ending the sources

    [settings]                            # applied before the pipeline, like SET
    batch_size = 2

    [inputs.bids]                         # fixture: rows = [...] or file = "...", format, timestamp_format
    rows = [ { id = 1, ts = 2024-01-01T00:00:01, price = 10.0 } ]

    [[steps]]                             # optional, run in order on the manual clock
    source = "bids"                       #   more rows for a source (rows = [...] or file = "...")
    rows = [ { id = 2, ts = 2024-01-01T00:00:07, price = 3.0 } ]
    [[steps]]
    watermark = { bids = 2024-01-01T00:00:10 }   # move a source's watermark
    [[steps]]
    advance = "5s"                        #   move the manual clock (EMIT EVERY, idle_timeout)
    [[steps]]
    expect.totals = [ { ... } ]           #   rows the sink received since its previous check
    [[steps]]
    end = "bids"                          #   the source ends (end = true: every source)

    [expected.totals]                     # rows = [...] or file = "...";
    mode = "final"                        #   final: changelog folded to the final table (default)
    rows = [ { ... } ]                    #   append: every row received, with __op for updating results
    ordered = false                       #   true: rows must arrive in this order (append mode)

Every sink is captured in memory instead of its real destination; no servers are
needed. Rows compare as multisets unless ``ordered``; expected values are read with the
sink's column types (so ``2024-01-01T00:00:01`` matches a TIMESTAMP however it is
written) and floats compare to 9 significant digits. A test's sources have
``max_future = 'off'`` unless they set it: the manual clock is not today's date.
Used by ``sqlstream test`` and by the project's own tests.
"""

from __future__ import annotations

import datetime as dt
import difflib
import os
import sys
import time
import tomllib
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable

import orjson
import pyarrow as pa

from sqlstream.changelog import fold_changelog
from sqlstream.connectors.decode import JsonDecoder
from sqlstream.connectors.encode import encode_json_lines
from sqlstream.durations import parse_duration_us
from sqlstream.errors import SqlStreamError, TestSpecError
from sqlstream.hidden import drop_op
from sqlstream.paths import AllowedPaths
from sqlstream.runtime.clock import ManualClock
from sqlstream.sql.statements import CreateSource, OptionValue, SourceText, parse_script
from sqlstream.testing import MemorySink, TestSession
from sqlstream.udf.discovery import loaded_text

__all__ = [
    "CaseResult",
    "CaseSpec",
    "InputSpec",
    "ExpectedSpec",
    "TestSpecError",
    "load_case",
    "run_case",
    "discover_cases",
    "run_cli",
    "canonical_rows",
]

_FIXTURE_FORMATS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}
_KEPT_SOURCE_OPTIONS = ("on_error", "max_future", "timestamp_format", "idle_timeout")
_MODES = ("final", "append")
_MAX_DIFF_LINES = 40


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


@dataclass
class CaseResult:
    __test__ = False

    name: str
    passed: bool
    messages: list[str] = field(default_factory=list)
    outputs: dict[str, list[dict]] = field(default_factory=dict)
    elapsed_s: float = 0.0


# -- canonical rows -------------------------------------------------------------------------


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


def _json_rows(batches: list[pa.RecordBatch]) -> list[dict]:
    rows: list[dict] = []
    for batch in batches:
        rows.extend(orjson.loads(line) for line in encode_json_lines(batch).splitlines())
    return rows


def _dump(row: dict) -> bytes:
    """A fixture or expected row (TOML dates and times included) as one JSON object."""
    return orjson.dumps(row)


# -- discovery and loading --------------------------------------------------------------------


def _shown(path: str) -> str:
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
    for ext, fmt in _FIXTURE_FORMATS.items():
        path = os.path.join(folder, source + ext)
        if os.path.isfile(path):
            return InputSpec(source, path=path, format=fmt)
    return None


def _time_us(value, where: str) -> int:
    if isinstance(value, dt.datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)
        return int(moment.timestamp() * 1_000_000)
    if isinstance(value, str):
        try:
            return _time_us(dt.datetime.fromisoformat(value), where)
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
    where = _shown(config_path)
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
            raise TestSpecError(f"{where}: no pipeline: {_shown(sql_path)} does not exist",
                                hint="write pipeline.sql, or sql = '''...''' / pipeline = \"file.sql\" in the TOML")
        with open(sql_path, encoding="utf-8") as handle:
            sql = handle.read()
        sql_path = _shown(sql_path)
    spec = CaseSpec(name, path, base_dir, sql_path, sql, single_file=single)
    spec.settings = dict(config.get("settings", {}))
    spec.end_of_input = bool(config.get("end_of_input", True))
    if "clock_start" in config:
        spec.clock_start_us = _time_us(config["clock_start"], f"{where}: clock_start")
    if not single:
        inputs_dir = os.path.join(base_dir, "inputs")
        if os.path.isdir(inputs_dir):
            for file_name in sorted(os.listdir(inputs_dir)):
                stem, ext = os.path.splitext(file_name)
                if ext in _FIXTURE_FORMATS:
                    spec.inputs.setdefault(stem.lower(), _fixture_file(base_dir, stem))
        expected_dir = os.path.join(base_dir, "expected")
        if os.path.isdir(expected_dir):
            for file_name in sorted(os.listdir(expected_dir)):
                if file_name.endswith(".jsonl"):
                    sink = file_name[: -len(".jsonl")].lower()
                    spec.expected[sink] = ExpectedSpec(sink, path=os.path.join(expected_dir, file_name))
    for source, table in (config.get("inputs") or {}).items():
        source = source.lower()
        here = f"{where}: [inputs.{source}]"
        _check_keys(table, ("rows", "file", "format", "timestamp_format"), here)
        if ("rows" in table) == ("file" in table):
            raise TestSpecError(f"{here}: give rows = [...] or file = \"...\"")
        item = InputSpec(source, timestamp_format=table.get("timestamp_format"))
        if "rows" in table:
            item.rows = list(table["rows"])
        else:
            item.path = os.path.join(base_dir, table["file"])
            ext = os.path.splitext(item.path)[1]
            item.format = table.get("format") or _FIXTURE_FORMATS.get(ext, "json")
            if not os.path.isfile(item.path):
                raise TestSpecError(f"{here}: {_shown(item.path)} does not exist")
        spec.inputs[source] = item
    for sink, table in (config.get("expected") or {}).items():
        sink = sink.lower()
        here = f"{where}: [expected.{sink}]"
        _check_keys(table, ("rows", "file", "mode", "ordered"), here)
        item = spec.expected.get(sink) or ExpectedSpec(sink)
        item.mode = str(table.get("mode", item.mode))
        if item.mode not in _MODES:
            raise TestSpecError(f"{here}: mode must be final or append, not '{item.mode}'")
        item.ordered = bool(table.get("ordered", False))
        if "rows" in table:
            item.rows, item.path = list(table["rows"]), None
        elif "file" in table:
            item.path = os.path.join(base_dir, table["file"])
        spec.expected[sink] = item
    steps = config.get("steps") or []
    for index, step in enumerate(steps, 1):
        here = f"{where}: step {index}"
        _check_keys(step, ("source", "rows", "file", "format", "watermark", "advance", "expect", "end"), here)
        actions = [k for k in ("rows", "file", "watermark", "advance", "expect", "end") if k in step]
        if len(actions) != 1 or (("rows" in step or "file" in step) and "source" not in step):
            raise TestSpecError(
                f"{here}: a step does one thing",
                hint="source + rows/file, watermark = { source = time }, advance = \"5s\", expect.<sink> = [...], or end",
            )
        if "file" in step:
            step["file"] = os.path.join(base_dir, step["file"])
        spec.steps.append(step)
    return spec


# -- running ------------------------------------------------------------------------------


class _StepRunner:
    """Feeds memory sources step by step and drives the pipeline on the manual clock."""

    def __init__(self, session: TestSession, spec: CaseSpec, decoders: dict[str, "_RowDecoder"]):
        self.session = session
        self.spec = spec
        self.decoders = decoders
        self.driver = session.build(session.pending_sinks())
        self.checked: dict[str, int] = {}
        self.failures: list[str] = []

    def settle(self) -> None:
        """Run the loop until every queued row and watermark step went through."""
        driver = self.driver
        for sink in driver.sinks:
            sink.open()
        while any(stream.items for stream in self.session.streams.values()):
            if not driver.step():
                return
        driver.step()

    def run(self) -> None:
        try:
            for name, decoder in self.decoders.items():
                fixture = self.spec.inputs.get(name)
                if fixture is not None:
                    self.session.stream(name).push(decoder.rows_of(fixture))
            self.settle()
            for index, step in enumerate(self.spec.steps, 1):
                self.apply(index, step)
                self.settle()
            if self.spec.end_of_input:
                for stream in self.session.streams.values():
                    stream.finish()
            else:
                self.driver.stop()
            self.session.last_summary = self.driver.run()
        except BaseException:
            self.driver.stop()
            try:
                self.driver.run()
            except Exception:  # noqa: BLE001 - the first error is the one to report
                pass
            raise

    def _decoder(self, source: str, index: int) -> "_RowDecoder":
        decoder = self.decoders.get(source.lower())
        if decoder is None:
            raise TestSpecError(
                f"step {index}: '{source}' is not a source of this pipeline",
                hint="sources: " + ", ".join(sorted(self.decoders)) if self.decoders else None,
            )
        return decoder

    def apply(self, index: int, step: dict) -> None:
        session = self.session
        if "rows" in step or "file" in step:
            source = str(step["source"]).lower()
            decoder = self._decoder(source, index)
            item = InputSpec(source, path=step.get("file"), rows=step.get("rows"), format=step.get("format", "json"))
            if item.path is not None and "format" not in step:
                item.format = _FIXTURE_FORMATS.get(os.path.splitext(item.path)[1], "json")
            session.stream(source).push(decoder.rows_of(item))
        elif "watermark" in step:
            marks = step["watermark"]
            if not isinstance(marks, dict):
                raise TestSpecError(f"step {index}: write watermark = {{ source = 2024-01-01T00:00:10 }}")
            for source, value in marks.items():
                decoder = self._decoder(source, index)
                delay = session.sources[decoder.source].delay_us
                session.stream(decoder.source).advance_to(_time_us(value, f"step {index}: watermark") + delay)
        elif "advance" in step:
            try:
                seconds = parse_duration_us(step["advance"]) / 1e6
            except ValueError as error:
                raise TestSpecError(f"step {index}: advance: {error}") from None
            session.clock.advance(seconds)
        elif "end" in step:
            names = list(self.decoders) if step["end"] is True else [str(step["end"]).lower()]
            for source in names:
                session.stream(self._decoder(source, index).source).finish()
        elif "expect" in step:
            self.settle()
            for sink, rows in (step["expect"] or {}).items():
                sink = sink.lower()
                if sink not in session.sinks:
                    raise TestSpecError(f"step {index}: expect names unknown sink '{sink}'",
                                        hint="sinks: " + ", ".join(sorted(session.sinks)))
                batches = session.outputs.get(sink, [])
                new = batches[self.checked.get(sink, 0):]
                self.checked[sink] = len(batches)
                schema = session.schema_of(sink)
                message = _compare(f"sink {sink} after step {index}", list(rows), _json_rows(new), schema, False)
                if message:
                    self.failures.append(message)


class _RowDecoder:
    """Fixture rows (inline or from a file) → Arrow rows of a source's schema."""

    def __init__(self, source: str, schema: pa.Schema, timestamp_format: str):
        self.source = source
        self.schema = schema
        self.timestamp_format = timestamp_format

    def rows_of(self, item: InputSpec) -> pa.Table:
        if item.rows is not None:
            data = b"".join(_dump(row) + b"\n" for row in item.rows)
            return self._decode(data, f"[inputs.{self.source}] rows")
        assert item.path is not None
        if item.format == "json":
            with open(item.path, "rb") as handle:
                return self._decode(handle.read(), _shown(item.path))
        from sqlstream.connectors.decode import CsvDecoder

        if item.format == "csv":
            with open(item.path, "rb") as handle:
                table, dead = CsvDecoder(self.schema, self.source, timestamp_format=self.timestamp_format).decode(
                    handle.read(), lambda i: f"{item.path}:{i + 1}"
                )
            self._reject(dead)
            return table
        import pyarrow.parquet as pq

        return pq.read_table(item.path).select(self.schema.names).cast(self.schema)

    def _decode(self, data: bytes, where: str) -> pa.Table:
        table, dead = JsonDecoder(self.schema, self.source, self.timestamp_format).decode(
            data, lambda i: f"{where} row {i + 1}"
        )
        self._reject(dead)
        return table

    def _reject(self, dead) -> None:
        if dead:
            first = dead[0]
            raise TestSpecError(
                f"fixture for source '{self.source}': {first.position}: {first.detail}",
                hint="step rows are pushed as they are; put bad records in a file fixture without steps",
            )


def _stepped_sources(spec: CaseSpec) -> set[str]:
    names: set[str] = set()
    for step in spec.steps:
        if "source" in step:
            names.add(str(step["source"]).lower())
        if isinstance(step.get("watermark"), dict):
            names |= {str(k).lower() for k in step["watermark"]}
        if isinstance(step.get("end"), str):
            names.add(step["end"].lower())
    return names


def _prepare_source(statement: CreateSource, spec: CaseSpec, stepped: set[str]) -> str | None:
    """Swap a source for its fixture; returns 'memory' when steps feed it."""
    options = statement.options
    if "max_future" not in options:
        options["max_future"] = OptionValue("off")
    fixture = spec.inputs.get(statement.name)
    use_memory = bool(spec.steps) and (statement.name in stepped or (fixture is not None))
    if fixture is None and not use_memory:
        return None
    keep = {k: v for k, v in options.items() if k in _KEPT_SOURCE_OPTIONS}
    if use_memory:
        statement.options = {"connector": OptionValue("memory"), **keep}
        return "memory"
    if fixture.rows is not None:
        return "inline"
    if fixture.timestamp_format:
        keep["timestamp_format"] = OptionValue(fixture.timestamp_format)
    statement.options = {
        "connector": OptionValue("file"),
        "path": OptionValue(fixture.path),
        "format": OptionValue(fixture.format),
        **keep,
    }
    return "file"


def run_case(
    case: str,
    udf_dirs: list[str] | None = None,
    update: bool = False,
    *,
    discover_udfs: bool = True,
    allowed_paths: AllowedPaths | None = None,
    on_udf_file: Callable[[str, list[str]], None] | None = None,
) -> CaseResult:
    """Run one test (folder or TOML file); with ``update``, write what the sinks got as expected.

    ``discover_udfs``: also load the test's own ``udfs/`` folder (``udf_dirs`` always
    load; ``on_udf_file(path, names)`` hears of each file); ``allowed_paths`` confines the
    files its pipeline reads."""
    started = time.monotonic()
    name = os.path.splitext(os.path.basename(os.path.normpath(case)))[0]
    result = CaseResult(name, True)
    try:
        spec = load_case(case)
        result.name = spec.name
        _run(spec, result, update, _UdfLoading(udf_dirs or [], discover_udfs, on_udf_file), allowed_paths)
    except SqlStreamError as error:
        result.passed = False
        result.messages.append(error.render())
    result.elapsed_s = time.monotonic() - started
    return result


@dataclass(frozen=True)
class _UdfLoading:
    """Which UDF folders a test loads: ``udf_dirs``, and its own ``udfs/`` if ``discover``."""

    udf_dirs: list[str]
    discover: bool
    on_file: Callable[[str, list[str]], None] | None


def _run(spec: CaseSpec, result: CaseResult, update: bool, udfs: _UdfLoading,
         allowed_paths: AllowedPaths | None) -> None:
    clock = ManualClock(spec.clock_start_us) if spec.clock_start_us is not None else None
    session = TestSession(base_dir=spec.base_dir, clock=clock)
    if allowed_paths is not None:
        session.apply_setting("allowed_paths", allowed_paths)
    for key, value in spec.settings.items():
        session.apply_setting(key, value)
    automatic = [os.path.join(spec.base_dir, "udfs")] if udfs.discover else []
    for directory in [*automatic, *udfs.udf_dirs]:
        if os.path.isdir(directory):
            session.load_udfs(directory, on_file=udfs.on_file)
    stepped = _stepped_sources(spec)
    decoders: dict[str, _RowDecoder] = {}
    inline: list[tuple[str, InputSpec]] = []
    source = SourceText(spec.sql, spec.sql_path, spec.base_dir)
    for statement in parse_script(source, lambda: session.functions.keys()):
        if isinstance(statement, CreateSource):
            kind = _prepare_source(statement, spec, stepped)
            if kind in ("memory", "inline"):
                fmt = statement.options.get("timestamp_format")
                fixture = spec.inputs.get(statement.name)
                fmt = (fixture.timestamp_format if fixture and fixture.timestamp_format else None) or (
                    str(fmt.value) if fmt else "iso")
                decoders[statement.name] = _RowDecoder(statement.name, statement.schema(), fmt)
            if kind == "inline":
                statement.options = {"connector": OptionValue("memory"),
                                     **{k: v for k, v in statement.options.items() if k in _KEPT_SOURCE_OPTIONS}}
                inline.append((statement.name, spec.inputs[statement.name]))
        session.execute_statement(statement)
    unknown = sorted((set(spec.inputs) | stepped) - set(session.sources))
    if unknown:
        raise TestSpecError(
            f"fixture for '{unknown[0]}', which is not a source of {spec.sql_path}",
            hint="sources: " + ", ".join(sorted(n for n, e in session.sources.items() if e.statement is not None)),
        )
    for entry in session.sinks.values():
        entry.connector = MemorySink(entry.name, {"connector": "memory"})
    sinks = session.pending_sinks()
    if not sinks:
        raise TestSpecError(f"{spec.sql_path}: the pipeline has no sink or SELECT to check")
    for name in sorted(spec.expected):
        if name not in session.sinks:
            raise TestSpecError(f"expected rows for '{name}', which is not a sink of {spec.sql_path}",
                                hint="sinks: " + ", ".join(sorted(s.name for s in sinks)))
    failures: list[str] = []
    if spec.end_of_input or not spec.steps:
        for entry in sinks:
            for src in entry.plan.sources():
                if src not in decoders and not _bounded(session, src):
                    raise TestSpecError(
                        f"source '{src}' is unbounded",
                        hint=f"give it a fixture: {_shown(os.path.join(spec.base_dir, 'inputs', src + '.jsonl'))}",
                    )
    if spec.steps:
        runner = _StepRunner(session, spec, decoders)
        runner.run()
        failures += runner.failures
    else:
        for name, fixture in inline:
            session.stream(name).push(decoders[name].rows_of(fixture)).finish()
        session.run()
    for sink in sinks:
        expectation = spec.expected.get(sink.name) or ExpectedSpec(sink.name)
        received = _json_rows(session.outputs.get(sink.name, []))
        actual = received if expectation.mode == "append" else fold_changelog(received)
        result.outputs[sink.name] = canonical_rows(actual)
        if update:
            _write_expected(spec, expectation, actual)
            continue
        expected_rows = _expected_rows(spec, expectation)
        if expected_rows is None:
            failures.append(f"sink {sink.name}: no expected rows "
                            f"(write expected/{sink.name}.jsonl, or run sqlstream test --update)")
            continue
        schema = session.schema_of(sink.name)
        if expectation.mode == "final":
            schema = drop_op(schema)
        label = f"sink {sink.name} ({'final table' if expectation.mode == 'final' else 'rows as received'})"
        message = _compare(label, expected_rows, actual, schema, expectation.ordered)
        if message:
            failures.append(message)
    if failures:
        result.passed = False
        result.messages.extend(failures)


def _expected_rows(spec: CaseSpec, expectation: ExpectedSpec) -> list[dict] | None:
    if expectation.rows is not None:
        return expectation.rows
    if expectation.path is None:
        return None
    if not os.path.isfile(expectation.path):
        raise TestSpecError(f"expected file {_shown(expectation.path)} does not exist")
    rows = []
    with open(expectation.path, "rb") as handle:
        for number, line in enumerate(handle, 1):
            if line.strip():
                try:
                    rows.append(orjson.loads(line))
                except orjson.JSONDecodeError as error:
                    raise TestSpecError(f"{_shown(expectation.path)}:{number}: not JSON: {error}") from None
    return rows


def _write_expected(spec: CaseSpec, expectation: ExpectedSpec, actual: list[dict]) -> None:
    if spec.single_file or expectation.rows is not None:
        raise TestSpecError(
            f"--update cannot rewrite the rows written inline for sink {expectation.sink} in {spec.path}",
            hint="these rows were received: " + " ".join(orjson.dumps(r).decode() for r in actual[:5]),
        )
    path = expectation.path or os.path.join(spec.base_dir, "expected", f"{expectation.sink}.jsonl")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    rows = actual if expectation.ordered else sorted(actual, key=_key)
    with open(path, "wb") as handle:
        for row in rows:
            handle.write(orjson.dumps(row) + b"\n")


def _typed(rows: list[dict], schema: pa.Schema, label: str) -> list[dict] | str:
    """Expected rows re-read with the sink's column types, formatted as actual rows are."""
    names = schema.names
    for number, row in enumerate(rows, 1):
        if not isinstance(row, dict):
            return f"{label}: expected row {number} is not an object: {row!r}"
        if sorted(row) != sorted(names):
            missing = [n for n in names if n not in row]
            extra = [n for n in row if n not in names]
            detail = "; ".join(p for p in (
                f"missing {', '.join(missing)}" if missing else "", f"unknown {', '.join(extra)}" if extra else "") if p)
            return f"{label}: expected row {number} does not have the sink's columns ({detail}); columns: {', '.join(names)}"
    if not rows:
        return []
    data = b"".join(_dump(row) + b"\n" for row in rows)
    table, dead = JsonDecoder(schema, label, "iso").decode(data, lambda i: f"expected row {i + 1}")
    if dead:
        return f"{label}: {dead[0].position} does not fit the sink's column types: {dead[0].detail}"
    return _json_rows(table.select(names).to_batches())


def _compare(label: str, expected: list[dict], actual: list[dict], schema: pa.Schema, ordered: bool) -> str | None:
    """None when they match; else a message with a diff of expected vs actual rows."""
    typed = _typed(expected, schema, label)
    if isinstance(typed, str):
        return typed
    want = canonical_rows(typed)
    got = canonical_rows(actual)
    if ordered:
        if want == got:
            return None
        want_lines = [orjson.dumps(r).decode() for r in want]
        got_lines = [orjson.dumps(r).decode() for r in got]
    else:
        if Counter(map(_key, want)) == Counter(map(_key, got)):
            return None
        want_lines = sorted(orjson.dumps(r).decode() for r in want)  # both in the sink's column order
        got_lines = sorted(orjson.dumps(r).decode() for r in got)
    diff = list(difflib.unified_diff(want_lines, got_lines, "expected", "actual", lineterm="", n=2))
    shown = diff[:_MAX_DIFF_LINES]
    if len(diff) > len(shown):
        shown.append(f"... {len(diff) - len(shown)} more diff lines")
    head = f"{label}: {len(want)} rows expected, {len(got)} received"
    return "\n".join([head, *shown])


def _bounded(session: TestSession, name: str) -> bool:
    entry = session.sources.get(name)
    if entry is None:
        return True
    connector = entry.connector
    if connector.name == "generator":
        return connector.total_rows is not None
    return connector.name in ("file", "internal")


# -- command line -----------------------------------------------------------------------------


def _rule(text: str, char: str = "=", width: int = 78) -> str:
    text = f" {text} " if text else ""
    side = max(3, (width - len(text)) // 2)
    return f"{char * side}{text}{char * side}"


def run_cli(directory: str, udf_dirs: list[str] | None, verbose: bool = False, update: bool = False,
            out=None, *, discover_udfs: bool = True, allow_paths: list[str] | None = None) -> int:
    """``sqlstream test [DIR]``: one line per test, a diff per failure, exit 1 on any failure.
    Each UDF file loaded is listed once on stderr."""
    out = out or sys.stdout
    if not os.path.exists(directory):
        print(f"error: {directory}: no such file or directory", file=sys.stderr)
        return 2
    for folder in allow_paths or []:
        if not os.path.isdir(folder):
            print(f"error: --allow-paths {folder}: no such directory", file=sys.stderr)
            return 2
    allowed = AllowedPaths.parse(allow_paths, os.getcwd()) if allow_paths else None
    listed: set[str] = set()

    def list_udf_file(path: str, names: list[str]) -> None:
        if path not in listed:
            listed.add(path)
            print(loaded_text(path, names), file=sys.stderr, flush=True)

    cases = discover_cases(directory)
    if not cases:
        print(f"error: no pipeline tests under {directory} (folders with pipeline.sql or test.toml, or *.toml files)",
              file=sys.stderr)
        return 2
    started = time.monotonic()
    failures: list[tuple[str, CaseResult]] = []
    width = max(len(_shown(c)) for c in cases)
    for number, case in enumerate(cases, 1):
        result = run_case(case, udf_dirs, update=update, discover_udfs=discover_udfs, allowed_paths=allowed,
                          on_udf_file=list_udf_file)
        label = _shown(case)
        status = ("UPDATED" if update else "PASSED") if result.passed else "FAILED"
        percent = f"[{100 * number // len(cases):3d}%]"
        print(f"{label.ljust(width)} {status:<7} {percent}", file=out, flush=True)
        if not result.passed:
            failures.append((label, result))
        elif verbose:
            for sink, rows in result.outputs.items():
                print(f"  {sink}: {len(rows)} rows", file=out)
    if failures:
        print(file=out)
        print(_rule("FAILURES"), file=out)
        for label, result in failures:
            print(_rule(label, "_"), file=out)
            for message in result.messages:
                print(message, file=out)
            print(file=out)
    passed = len(cases) - len(failures)
    elapsed = time.monotonic() - started
    parts = ([f"{len(failures)} failed"] if failures else []) + [f"{passed} {'updated' if update else 'passed'}"]
    print(_rule(f"{', '.join(parts)} in {elapsed:.2f}s"), file=out)
    return 1 if failures else 0
