"""What a pipeline test checks: rows in canonical form (floats to 9 significant digits),
expected rows read with the sink's column types, and a diff when they differ; reading
and (``--update``) writing the expected files."""

from __future__ import annotations

import difflib
import os
from collections import Counter

import orjson
import pyarrow as pa

from sqlstream.connectors.decode import JsonDecoder
from sqlstream.connectors.encode import encode_json_lines
from sqlstream.errors import TestSpecError
from sqlstream.pipeline_tests.cases import CaseSpec, ExpectedSpec, shown_path

__all__ = [
    "canonical_rows",
    "row_key",
    "dump_row",
    "json_rows",
    "read_expected_rows",
    "write_expected",
    "typed_rows",
    "compare_rows",
]

_MAX_DIFF_LINES = 40


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


def row_key(row: dict) -> bytes:
    return orjson.dumps(row, option=orjson.OPT_SORT_KEYS)


def json_rows(batches: list[pa.RecordBatch]) -> list[dict]:
    rows: list[dict] = []
    for batch in batches:
        rows.extend(orjson.loads(line) for line in encode_json_lines(batch).splitlines())
    return rows


def dump_row(row: dict) -> bytes:
    """A fixture or expected row (TOML dates and times included) as one JSON object."""
    return orjson.dumps(row)


def read_expected_rows(spec: CaseSpec, expectation: ExpectedSpec) -> list[dict] | None:
    if expectation.rows is not None:
        return expectation.rows
    if expectation.path is None:
        return None
    if not os.path.isfile(expectation.path):
        raise TestSpecError(f"expected file {shown_path(expectation.path)} does not exist")
    rows = []
    with open(expectation.path, "rb") as handle:
        for number, line in enumerate(handle, 1):
            if line.strip():
                try:
                    rows.append(orjson.loads(line))
                except orjson.JSONDecodeError as error:
                    raise TestSpecError(f"{shown_path(expectation.path)}:{number}: not JSON: {error}") from None
    return rows


def write_expected(spec: CaseSpec, expectation: ExpectedSpec, actual: list[dict]) -> None:
    if spec.single_file or expectation.rows is not None:
        raise TestSpecError(
            f"--update cannot rewrite the rows written inline for sink {expectation.sink} in {spec.path}",
            hint="these rows were received: " + " ".join(orjson.dumps(r).decode() for r in actual[:5]),
        )
    path = expectation.path or os.path.join(spec.base_dir, "expected", f"{expectation.sink}.jsonl")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    rows = actual if expectation.ordered else sorted(actual, key=row_key)
    with open(path, "wb") as handle:
        for row in rows:
            handle.write(orjson.dumps(row) + b"\n")


def typed_rows(rows: list[dict], schema: pa.Schema, label: str) -> list[dict] | str:
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
    data = b"".join(dump_row(row) + b"\n" for row in rows)
    table, dead = JsonDecoder(schema, label, "iso").decode(data, lambda i: f"expected row {i + 1}")
    if dead:
        return f"{label}: {dead[0].position} does not fit the sink's column types: {dead[0].detail}"
    return json_rows(table.select(names).to_batches())


def compare_rows(label: str, expected: list[dict], actual: list[dict], schema: pa.Schema, ordered: bool) -> str | None:
    """None when they match; else a message with a diff of expected vs actual rows."""
    typed = typed_rows(expected, schema, label)
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
        if Counter(map(row_key, want)) == Counter(map(row_key, got)):
            return None
        want_lines = sorted(orjson.dumps(r).decode() for r in want)  # both in the sink's column order
        got_lines = sorted(orjson.dumps(r).decode() for r in got)
    diff = list(difflib.unified_diff(want_lines, got_lines, "expected", "actual", lineterm="", n=2))
    shown = diff[:_MAX_DIFF_LINES]
    if len(diff) > len(shown):
        shown.append(f"... {len(diff) - len(shown)} more diff lines")
    head = f"{label}: {len(want)} rows expected, {len(got)} received"
    return "\n".join([head, *shown])
