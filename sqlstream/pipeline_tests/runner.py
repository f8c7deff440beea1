"""Running a pipeline test: its sources swapped for fixtures (files or in-memory
streams), every sink captured in memory, steps applied on the manual clock, and what
each sink received compared with what it should have."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Callable

import pyarrow as pa
import pyarrow.parquet as pq

from sqlstream.changelog import fold_changelog
from sqlstream.connectors.decode import CsvDecoder, JsonDecoder
from sqlstream.durations import parse_duration_us
from sqlstream.errors import SqlStreamError, TestSpecError
from sqlstream.hidden import drop_op
from sqlstream.paths import AllowedPaths
from sqlstream.pipeline_tests.cases import (
    FIXTURE_FORMATS,
    CaseSpec,
    ExpectedSpec,
    InputSpec,
    load_case,
    shown_path,
    timestamp_us,
)
from sqlstream.pipeline_tests.compare import (
    canonical_rows,
    compare_rows,
    dump_row,
    json_rows,
    read_expected_rows,
    write_expected,
)
from sqlstream.runtime.clock import ManualClock
from sqlstream.sql.statements import CreateSource, OptionValue, SourceText, parse_script
from sqlstream.testing import MemorySink, TestSession

__all__ = ["CaseResult", "run_case"]

_KEPT_SOURCE_OPTIONS = ("on_error", "max_future", "timestamp_format", "idle_timeout")


@dataclass
class CaseResult:
    __test__ = False

    name: str
    passed: bool
    messages: list[str] = field(default_factory=list)
    outputs: dict[str, list[dict]] = field(default_factory=dict)
    elapsed_s: float = 0.0


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
            path = step.get("file")
            fmt = step.get("format", "json")
            if path is not None and "format" not in step:
                fmt = FIXTURE_FORMATS.get(os.path.splitext(path)[1], "json")
            item = InputSpec(source, path=path, rows=step.get("rows"), format=fmt)
            session.stream(source).push(decoder.rows_of(item))
        elif "watermark" in step:
            marks = step["watermark"]
            if not isinstance(marks, dict):
                raise TestSpecError(f"step {index}: write watermark = {{ source = 2024-01-01T00:00:10 }}")
            for source, value in marks.items():
                decoder = self._decoder(source, index)
                delay = session.sources[decoder.source].delay_us
                session.stream(decoder.source).advance_to(timestamp_us(value, f"step {index}: watermark") + delay)
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
                message = compare_rows(f"sink {sink} after step {index}", list(rows), json_rows(new), schema, False)
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
            data = b"".join(dump_row(row) + b"\n" for row in item.rows)
            return self._decode(data, f"[inputs.{self.source}] rows")
        assert item.path is not None
        if item.format == "json":
            with open(item.path, "rb") as handle:
                return self._decode(handle.read(), shown_path(item.path))
        if item.format == "csv":
            with open(item.path, "rb") as handle:
                table, dead = CsvDecoder(self.schema, self.source, timestamp_format=self.timestamp_format).decode(
                    handle.read(), lambda i: f"{item.path}:{i + 1}"
                )
            self._reject(dead)
            return table
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
                        hint=f"give it a fixture: {shown_path(os.path.join(spec.base_dir, 'inputs', src + '.jsonl'))}",
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
        received = json_rows(session.outputs.get(sink.name, []))
        actual = received if expectation.mode == "append" else fold_changelog(received)
        result.outputs[sink.name] = canonical_rows(actual)
        if update:
            write_expected(spec, expectation, actual)
            continue
        expected_rows = read_expected_rows(spec, expectation)
        if expected_rows is None:
            failures.append(f"sink {sink.name}: no expected rows "
                            f"(write expected/{sink.name}.jsonl, or run sqlstream test --update)")
            continue
        schema = session.schema_of(sink.name)
        if expectation.mode == "final":
            schema = drop_op(schema)
        label = f"sink {sink.name} ({'final table' if expectation.mode == 'final' else 'rows as received'})"
        message = compare_rows(label, expected_rows, actual, schema, expectation.ordered)
        if message:
            failures.append(message)
    if failures:
        result.passed = False
        result.messages.extend(failures)


def _bounded(session: TestSession, name: str) -> bool:
    entry = session.sources.get(name)
    if entry is None:
        return True
    return entry.connector.bounded
