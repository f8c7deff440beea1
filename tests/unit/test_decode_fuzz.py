"""Fuzzing the record decoders (JSON lines, CSV, NATS payloads, Parquet with odd types).

Random mixes of good and bad records (``tests/generators/fuzz_records.py`` knows what each must
become) are decoded in randomly cut blocks, straight through the decoder classes
and through file sources with ``file_batch_size`` 1, 2, 7 and large. Invariants:
nothing raises; every non-blank line is exactly one row or exactly one dead letter
with its reason, its raw text (invalid UTF-8 as ``\\xNN``) and its ``path:line``;
rows come out in input order with the values written; results do not depend on
where blocks are cut; sink output is readable by DuckDB. The tables of examples
pin each decided rule with a readable failure of its own.

``pytest -m slow tests/unit/test_decode_fuzz.py`` runs the same properties with
more examples (200 per property, inputs twice as long).
"""

from __future__ import annotations

import json
import math
import os
import random
import re
import time
from collections import Counter
from datetime import datetime, timezone

import duckdb
import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from sqlstream.connectors.decode import CsvDecoder, JsonDecoder
from sqlstream.connectors.nats.messages import MessageDecoder, Received
from sqlstream.testing import TestSession
from tests.generators.fuzz_records import (
    ARROW_SCHEMA,
    NAMES,
    ORJSON_MAX_DEPTH,
    SQL_COLUMNS,
    Record,
    check_outcomes,
    csv_lines,
    csv_record,
    json_lines,
    json_record,
    json_view,
    normalize_rows,
    payload_record,
    split_quote_records,
)

# No shrinking: a failure lists the records decoded wrongly (raw bytes, expected, got),
# which says more than a shrunk random generator would; and failures stay fast.
_PHASES = [Phase.explicit, Phase.reuse, Phase.generate]
_CHECKS = [HealthCheck.too_slow, HealthCheck.data_too_large]
FAST = settings(max_examples=100, deadline=None, phases=_PHASES, suppress_health_check=_CHECKS)
CUTS = settings(max_examples=50, deadline=None, phases=_PHASES, suppress_health_check=_CHECKS)
SLOW = settings(max_examples=200, deadline=None, phases=_PHASES, suppress_health_check=_CHECKS)
FILES = settings(max_examples=8, deadline=None, phases=_PHASES, suppress_health_check=_CHECKS)

# -- checking an outcome record by record ----------------------------------------------------------


def physical_lines(data: bytes) -> list[bytes]:
    """``data`` cut after each \\n (the terminators stay on their lines)."""
    parts = data.split(b"\n")
    lines = [p + b"\n" for p in parts[:-1]]
    return lines + ([parts[-1]] if parts[-1] else [])


def decode_in_blocks(decoder, data: bytes, cuts: list[int], name: str = "f"):
    """Decode ``data`` in blocks of whole lines cut before the lines in ``cuts``
    (positions are ``name:line``, 1-based); returns rows and dead letters."""
    lines = physical_lines(data)
    bounds = sorted({0, len(lines), *(c % (len(lines) + 1) for c in cuts)})
    rows, dead = [], []
    for start, end in zip(bounds, bounds[1:]):
        block = b"".join(lines[start:end])
        table, letters = decoder.decode(block, lambda i, start=start: f"{name}:{start + i + 1}")
        assert table.schema.names == NAMES
        rows.extend(table.to_pylist())
        dead.extend(letters)
    return rows, dead


def _summary(rows, dead) -> tuple:
    return normalize_rows(rows), Counter((d.reason, d.raw, d.position) for d in dead)


def json_decoder() -> JsonDecoder:
    return JsonDecoder(ARROW_SCHEMA, "fuzz")


def csv_decoder() -> CsvDecoder:
    return CsvDecoder(ARROW_SCHEMA, "fuzz", columns=NAMES)


# -- JSON lines -----------------------------------------------------------------------------------


@st.composite
def json_inputs(draw, max_records: int = 40):
    rng = draw(st.randoms(use_true_random=False))
    records = [json_record(rng) for _ in range(draw(st.integers(1, max_records)))]
    cuts = draw(st.lists(st.integers(0, max_records), max_size=6))
    return records, json_lines(records, rng), cuts


def _json_property(case):
    records, data, cuts = case
    rows, dead = decode_in_blocks(json_decoder(), data, cuts)
    check_outcomes(records, rows, dead, lambda i: f"f:{i + 1}")


@FAST
@given(json_inputs())
def test_json_every_line_is_one_row_or_one_dead_letter(case):
    _json_property(case)


@CUTS
@given(json_inputs(max_records=25), st.lists(st.integers(0, 25), min_size=1, max_size=8))
def test_json_results_do_not_depend_on_the_block_cuts(case, other_cuts):
    """Independent of what each record should become: one block or many, the same result."""
    _, data, cuts = case
    whole = _summary(*decode_in_blocks(json_decoder(), data, []))
    assert _summary(*decode_in_blocks(json_decoder(), data, cuts)) == whole
    assert _summary(*decode_in_blocks(json_decoder(), data, other_cuts)) == whole
    one_by_one = _summary(*decode_in_blocks(json_decoder(), data, list(range(len(physical_lines(data))))))
    assert one_by_one == whole


@pytest.mark.slow
@SLOW
@given(json_inputs(max_records=80))
def test_json_every_line_is_one_row_or_one_dead_letter_slow(case):
    _json_property(case)


# The decided rules, one example each (raw line, expected outcome). A row's values are
# checked by the properties above; these pin the classification and the raw text.
JSON_RULES = [
    ('{"Id": 1, "ID": 2}', "decode", "two_other_spellings"),
    ('{"Name": "a", "NAME": "a", "id": 1}', "decode", "two_other_spellings_same_value"),
    ('{"id": 1, "id": 2}', "decode", "exact_duplicate"),
    ('{"ID": 1, "ID": 1}', "decode", "other_spelling_twice"),
    ('{"id": 1, "ID": 2}', "row", "exact_spelling_wins"),
    ('{"ID": 2, "id": 1, "Name": "b", "name": "a"}', "row", "exact_spelling_wins_in_any_order"),
    ('{"id": 1} {"id": 2}', "decode", "two_objects"),
    ('{"id": 1}{"id": 2}', "decode", "two_objects_no_space"),
    ('{"id": 1} 1', "decode", "object_then_number"),
    ("[1, 2]", "decode", "array"),
    ("42", "decode", "number"),
    ('"text"', "decode", "string"),
    ("null", "decode", "json_null"),
    ('{"id": 1, "v": NaN}', "row", "nan_literal_read_as_float"),
    ('{"id": 1, "v": -Infinity}', "row", "infinity_literal_read_as_float"),
    ('{"id": 1, "name": "a\x01b"}', "decode", "raw_control_character"),
    ('{"id": 1, "name": "a\x00b"}', "decode", "raw_nul"),
    ('{"ID": 2}', "row", "upper_case_key"),
    ('{"Id": 3, "nAmE": "x"}', "row", "mixed_case_keys"),
    ('{"id": 1, "name": "a\\u0000b"}', "row", "escaped_nul"),
    ('{"id": 1, "name": "a\\nb"}', "row", "escaped_newline"),
    ('{"id": 1, "extra": ' + "[" * 300 + "]" * 300 + "}", "row", "undeclared_300_deep"),
    ('{"id": 1, "extra": ' + "[" * (ORJSON_MAX_DEPTH + 5) + "]" * (ORJSON_MAX_DEPTH + 5) + "}", "row", "undeclared_deeper_than_orjson"),
    ('{"ID": 1, "extra": ' + "[" * 2000 + "]" * 2000 + "}", "row", "deeper_than_orjson_other_spelling"),
    ('{"Id": 1, "iD": 2, "extra": ' + "[" * 2000 + "]" * 2000 + "}", "decode", "deeper_than_orjson_two_spellings"),
    ('{"id": 1, "ts": "2024-01-01T00:00:00Z"}', "type", "timestamp_with_z"),
    ('{"id": 1, "ts": "2024-01-01T00:00:00+02:00"}', "type", "timestamp_with_offset"),
    ('{"id": 1, "tz": "2024-01-01T02:00:00+02:00"}', "row", "timestamptz_with_offset"),
    ('{"id": 1, "tz": "2024-01-01T00:00:00"}', "row", "timestamptz_without_offset"),
    ('{"id": 1, "ts": "2024-02-30T00:00:00"}', "type", "timestamp_no_such_day"),
    ('{"id": "abc"}', "type", "text_in_bigint"),
    ('{"id": 99999999999999999999999}', "type", "bigint_overflow"),
    ('{"id": null}', "null", "null_not_null_column"),
    ('{"name": "x"}', "null", "missing_not_null_column"),
]


@pytest.mark.parametrize("line, outcome, case", JSON_RULES, ids=[c for _, _, c in JSON_RULES])
@pytest.mark.parametrize("neighbours", ["alone", "among_good_lines"])
def test_json_rules(line, outcome, case, neighbours):
    good = [Record(b'{"id": 10, "name": "before"}', "row", "good", {"id": 10, "name": "before"}),
            Record(b'{"ID": 11, "Name": "after"}', "row", "good", {"id": 11, "name": "after"})]
    record = Record(line.encode(), outcome, case, _rule_row(line) if outcome == "row" else None)
    records = [record] if neighbours == "alone" else [good[0], record, good[1]]
    data = b"\n".join(r.raw for r in records) + b"\n"
    for cuts in ([], [1, 2]):
        rows, dead = decode_in_blocks(json_decoder(), data, cuts)
        check_outcomes(records, rows, dead, lambda i: f"f:{i + 1}")


def _rule_row(line: str) -> dict:
    shallow = re.sub(r'"extra": \[+\]+', '"extra": 0', line)  # deeper than Python's json parses
    record = json.loads(shallow, object_pairs_hook=list)
    row = {n: None for n in NAMES}
    for key, value in sorted(record, key=lambda item: item[0] in NAMES):  # the exact spelling last: it wins
        if key.lower() in row:
            row[key.lower()] = value
    if row["tz"]:
        row["tz"] = datetime.fromisoformat(row["tz"]).astimezone(timezone.utc) if "+" in row["tz"] else (
            datetime.fromisoformat(row["tz"]).replace(tzinfo=timezone.utc))
    return row


def test_json_whitespace_only_lines_are_not_records():
    data = b' \n{"id": 1}\n\t\r\n\n   \t\n{"id": 2}\r\n \n'
    rows, dead = decode_in_blocks(json_decoder(), data, [2, 3])
    assert [r["id"] for r in rows] == [1, 2] and dead == []


@pytest.mark.parametrize("bad", [b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xc0\xaf"],
                         ids=["ff", "c328", "surrogate", "above_max", "overlong"])
@pytest.mark.parametrize("where", ["value", "undeclared_value", "key", "outside_string"])
def test_json_invalid_utf8_is_one_decode_dead_letter_with_escaped_raw(bad, where):
    line = {
        "value": b'{"id": 1, "name": "a' + bad + b'"}',
        "undeclared_value": b'{"id": 1, "other": "a' + bad + b'"}',
        "key": b'{"id": 1, "na' + bad + b'me": "a"}',
        "outside_string": b'{"id": 1}' + bad,
    }[where]
    table, dead = json_decoder().decode(b'{"id": 0}\n' + line + b'\n{"id": 2}\n', lambda i: f"f:{i + 1}")
    assert table.column("id").to_pylist() == [0, 2]
    assert [(d.reason, d.position, d.raw) for d in dead] == [("decode", "f:2", line.decode("utf-8", "backslashreplace"))]
    assert "\ufffd" not in dead[0].raw


@pytest.mark.parametrize("key", ["name", "NAME"])
def test_json_nested_300_deep_in_a_declared_varchar_column_is_a_type_dead_letter(key):
    """An array is no text (a ``type`` dead letter, as for any array in a VARCHAR), at any depth."""
    line = b'{"id": 1, "%s": ' % key.encode() + b"[" * 300 + b"]" * 300 + b"}"
    table, dead = json_decoder().decode(b'{"id": 0}\n' + line + b"\n", lambda i: f"f:{i + 1}")
    assert table.num_rows == 1
    assert [(d.reason, d.position) for d in dead] == [("type", "f:2")]


def test_json_huge_lines_and_their_neighbours():
    rng = random.Random(7)
    records = [json_record(rng, bad_share=0.5) for _ in range(6)]
    records.insert(3, json_record(rng, huge=True))
    records.append(Record(b'{"id": 1, "name": "' + b"x" * (3 << 20) + b"\xff" + b'"}', "decode", "huge_invalid_utf8"))
    data = json_lines(records, rng)
    for cuts in ([], [3, 4], [1, 2, 3, 4, 5, 6, 7, 8]):
        rows, dead = decode_in_blocks(json_decoder(), data, cuts)
        check_outcomes(records, rows, dead, lambda i: f"f:{i + 1}")


# -- CSV ---------------------------------------------------------------------------------------


@st.composite
def csv_inputs(draw, max_records: int = 40):
    rng = draw(st.randoms(use_true_random=False))
    records: list[Record] = []
    for _ in range(draw(st.integers(1, max_records))):
        records.extend(split_quote_records(rng) if rng.random() < 0.03 else [csv_record(rng)])
    cuts = draw(st.lists(st.integers(0, max_records), max_size=6))
    return records, csv_lines(records, rng, header=False), cuts


def _csv_property(case):
    records, data, cuts = case
    rows, dead = decode_in_blocks(csv_decoder(), data, cuts)
    check_outcomes(records, rows, dead, lambda i: f"f:{i + 1}")


@FAST
@given(csv_inputs())
def test_csv_every_line_is_one_row_or_one_dead_letter(case):
    _csv_property(case)


@CUTS
@given(csv_inputs(max_records=25), st.lists(st.integers(0, 25), min_size=1, max_size=8))
def test_csv_results_do_not_depend_on_the_block_cuts(case, other_cuts):
    _, data, cuts = case
    whole = _summary(*decode_in_blocks(csv_decoder(), data, []))
    assert _summary(*decode_in_blocks(csv_decoder(), data, cuts)) == whole
    assert _summary(*decode_in_blocks(csv_decoder(), data, other_cuts)) == whole
    assert _summary(*decode_in_blocks(csv_decoder(), data, list(range(len(physical_lines(data)))))) == whole


@pytest.mark.slow
@SLOW
@given(csv_inputs(max_records=80))
def test_csv_every_line_is_one_row_or_one_dead_letter_slow(case):
    _csv_property(case)


NAN = float("nan")

# (line for columns id,name,v,ts,tz; outcome; expected (name, v) for a row)
CSV_RULES = [
    ("1,NA,1.0,,", "row", ("NA", 1.0), "na_is_text"),
    ("1,null,1.0,,", "row", ("null", 1.0), "null_is_text"),
    ("1,N/A,1.0,,", "row", ("N/A", 1.0), "n_a_is_text"),
    ("1,nan,1.0,,", "row", ("nan", 1.0), "nan_is_text_in_varchar"),
    ("1,NULL,1.0,,", "row", ("NULL", 1.0), "upper_null_is_text"),
    ('1,"",1.0,,', "row", ("", 1.0), "quoted_empty_is_empty_text"),
    ("1,,1.0,,", "row", (None, 1.0), "unquoted_empty_is_null"),
    ("1,a,NaN,,", "row", ("a", NAN), "NaN_is_a_double"),
    ("1,a,nan,,", "row", ("a", NAN), "nan_is_a_double"),
    ("1,a,inf,,", "row", ("a", math.inf), "inf_is_a_double"),
    ("1,a,-inf,,", "row", ("a", -math.inf), "minus_inf_is_a_double"),
    ("1,a,,,", "row", ("a", None), "empty_double_is_null"),
    ("0x10,a,1.0,,", "type", None, "hex_in_bigint"),
    ("NA,a,1.0,,", "type", None, "na_in_bigint"),
    ("1,a,NA,,", "type", None, "na_in_double"),
    (",a,1.0,,", "null", None, "empty_not_null_column"),
    ("1,a,1.0,2024-01-01T00:00:00Z,", "type", None, "timestamp_with_z"),
    ("1,a,1.0,2024-01-01T00:00:00+02:00,", "type", None, "timestamp_with_offset"),
    ("1,a,1.0,,2024-01-01T02:00:00+02:00", "row", ("a", 1.0), "timestamptz_with_offset"),
    ("1,a,1.0,,2024-01-01T00:00:00Z", "row", ("a", 1.0), "timestamptz_with_z"),
    ("1,a,1.0,,2024-01-01T00:00:00", "row", ("a", 1.0), "timestamptz_without_offset"),
    ("1,a,1.0,,,", "decode", None, "one_field_too_many"),
    ("1,a,1.0,", "decode", None, "one_field_too_few"),
    ('1,"a,1.0,,', "decode", None, "unclosed_quote"),
    ("1,a\xff,1.0,,", "decode", None, "invalid_utf8"),
    ('1,"a\xc3\x28",1.0,,', "decode", None, "invalid_utf8_quoted"),
]


@pytest.mark.parametrize("line, outcome, values, case", CSV_RULES, ids=[c[-1] for c in CSV_RULES])
@pytest.mark.parametrize("neighbours", ["alone", "among_good_lines"])
def test_csv_rules(line, outcome, values, case, neighbours):
    raw = line.encode("latin-1") if "\xff" in line or "\xc3" in line else line.encode()
    row = None
    if outcome == "row":
        tz = datetime(2024, 1, 1, tzinfo=timezone.utc) if line.count(",") == 4 and line.split(",")[4] else None
        row = {"id": 1, "name": values[0], "v": values[1], "ts": None, "tz": tz}
    record = Record(raw, outcome, case, row)
    good = [Record(b'10,"before",2.5,,', "row", "good", {"id": 10, "name": "before", "v": 2.5}),
            Record(b"11,after,,,", "row", "good", {"id": 11, "name": "after"})]
    records = [record] if neighbours == "alone" else [good[0], record, good[1]]
    data = b"\n".join(r.raw for r in records) + b"\n"
    for cuts in ([], [1, 2]):
        rows, dead = decode_in_blocks(csv_decoder(), data, cuts)
        check_outcomes(records, rows, dead, lambda i: f"f:{i + 1}")


def test_csv_null_values_option_adds_null_spellings(tmp_path):
    (tmp_path / "in.csv").write_text("id,name,v\n1,NA,NA\n2,null,1.5\n3,N/A,\n4,,null\n")
    session = TestSession(base_dir=str(tmp_path), dead_letter_path=str(tmp_path / "dead.jsonl"))
    session.execute("""CREATE SOURCE s (id BIGINT, name VARCHAR, v DOUBLE)
                         WITH (connector = 'file', path = 'in.csv', format = 'csv', null_values = 'NA,null');
                       CREATE SINK out AS SELECT * FROM s WITH (connector = 'memory');""")
    session.run()
    assert session.rows("out") == [{"id": 1, "name": None, "v": None}, {"id": 2, "name": None, "v": 1.5},
                                   {"id": 3, "name": "N/A", "v": None}, {"id": 4, "name": None, "v": None}]
    assert not (tmp_path / "dead.jsonl").exists()


def test_an_empty_csv_file_is_an_empty_input(tmp_path):
    (tmp_path / "in.csv").write_bytes(b"")
    session = TestSession(base_dir=str(tmp_path), dead_letter_path=str(tmp_path / "dead.jsonl"))
    session.execute(f"""CREATE SOURCE s ({SQL_COLUMNS}) WITH (connector = 'file', path = 'in.csv', format = 'csv');
                        CREATE SINK out AS SELECT * FROM s WITH (connector = 'memory');""")
    summary = session.run()
    assert session.rows("out") == [] and summary.dead_letters == {}


# -- NATS payloads --------------------------------------------------------------------------------


def _received(records: list[Record], first_seq: int) -> Received:
    n = len(records)
    return Received(subjects=[b"fuzz.in"] * n, payloads=[r.raw for r in records], headers=[None] * n,
                    sequences=np.arange(first_seq, first_seq + n, dtype=np.int64))


def decode_messages(records: list[Record], cuts: list[int]):
    decoder = MessageDecoder(ARROW_SCHEMA, "fuzz", "json")
    bounds = sorted({0, len(records), *(c % (len(records) + 1) for c in cuts)})
    rows, dead = [], []
    for start, end in zip(bounds, bounds[1:]):
        batch, letters = decoder.decode(_received(records[start:end], start + 1))
        rows.extend(batch.to_pylist())
        dead.extend(letters)
    return rows, dead


@st.composite
def message_inputs(draw, max_records: int = 40):
    rng = draw(st.randoms(use_true_random=False))
    records = [payload_record(rng) for _ in range(draw(st.integers(1, max_records)))]
    return records, draw(st.lists(st.integers(0, max_records), max_size=6))


@FAST
@given(message_inputs())
def test_nats_every_message_is_one_row_or_one_dead_letter(case):
    _nats_property(case)


@pytest.mark.slow
@SLOW
@given(message_inputs(max_records=80))
def test_nats_every_message_is_one_row_or_one_dead_letter_slow(case):
    _nats_property(case)


def _nats_property(case):
    records, cuts = case
    rows, dead = decode_messages(records, cuts)
    check_outcomes(records, rows, dead, lambda i: f"fuzz.in#{i + 1}")
    for letter in dead:
        if records[int(letter.position.rsplit("#", 1)[1]) - 1].case == "empty_payload":
            assert "empty" in letter.detail


@CUTS
@given(message_inputs(max_records=25), st.lists(st.integers(0, 25), min_size=1, max_size=8))
def test_nats_results_do_not_depend_on_the_batches(case, other_cuts):
    records, cuts = case
    whole = _summary(*decode_messages(records, []))
    assert _summary(*decode_messages(records, cuts)) == whole
    assert _summary(*decode_messages(records, other_cuts)) == whole


NATS_RULES = [
    (b'{"id": 1}\n{"id": 2}', "decode", "two_objects_two_lines"),
    (b'{"id": 1} {"id": 2}', "decode", "two_objects_one_line"),
    (b"", "decode", "empty"),
    (b" \r\n\t", "decode", "whitespace_only"),
    (b'{"id": 1, "name": "\xff"}', "decode", "invalid_utf8"),
    (b'{\n  "id": 1,\n  "name": "pretty"\n}\n', "row", "pretty_printed"),
    (b'{"Id": 1, "ID": 2}', "decode", "two_other_spellings"),
    (b'{"id": 1, "Id": 2}', "row", "exact_spelling_wins"),
    (b"[1, 2]", "decode", "array"),
]


@pytest.mark.parametrize("payload, outcome, case", NATS_RULES, ids=[c for _, _, c in NATS_RULES])
@pytest.mark.parametrize("neighbours", ["alone", "among_good_messages"])
def test_nats_rules(payload, outcome, case, neighbours):
    row = _rule_row(payload.decode()) if outcome == "row" else None
    record = Record(payload, outcome, case, row)
    good = [Record(b'{"id": 10}', "row", "good", {"id": 10}), Record(b'{"ID": 11}', "row", "good", {"id": 11})]
    records = [record] if neighbours == "alone" else [good[0], record, good[1]]
    rows, dead = decode_messages(records, [])
    check_outcomes(records, rows, dead, lambda i: f"fuzz.in#{i + 1}")
    if case in ("empty", "whitespace_only"):
        assert "empty" in dead[0].detail


# -- through a file source: file_batch_size, sinks, DuckDB ----------------------------------------------


def run_files(tmp_path, fmt: str, data: bytes, batch_size: int, *, columns: str = SQL_COLUMNS):
    """Run ``data`` through a file source into JSON and Parquet file sinks; returns the
    rows of each sink (read by DuckDB) and the dead letters (read back as JSON lines)."""
    directory = tmp_path / f"{fmt}_{batch_size}"
    directory.mkdir()
    (directory / f"in.{fmt}").write_bytes(data)
    _settled(directory / f"in.{fmt}")
    session = TestSession(base_dir=str(directory), dead_letter_path=str(directory / "dead.jsonl"))
    session.execute(f"""SET file_batch_size = {batch_size};
        CREATE SOURCE src ({columns}) WITH (connector = 'file', path = 'in.{fmt}', format = '{fmt}');
        CREATE SINK as_json AS SELECT * FROM src WITH (connector = 'file', path = 'out.jsonl', format = 'json');
        CREATE SINK as_parquet AS SELECT * FROM src WITH (connector = 'file', path = 'out.parquet', format = 'parquet');""")
    summary = session.run()
    return directory, summary, read_outputs(directory)


def _settled(path) -> None:
    """Date ``path`` back: a file that stopped growing has its unterminated last line read at
    once (a fresh one is waited for, ``SETTLE_S``)."""
    old = time.time() - 60
    os.utime(path, (old, old))


def read_outputs(directory):
    out_json, out_parquet, dead = directory / "out.jsonl", directory / "out.parquet", directory / "dead.jsonl"
    for path in (out_json, dead):
        if path.exists():
            path.read_bytes().decode("utf-8")  # strict: no invalid UTF-8 is ever written
    json_rows = [orjson.loads(line) for line in out_json.read_bytes().splitlines()] if out_json.exists() else []
    typed = ", ".join(f"{f.name}: '{_duck_type(f.type)}'" for f in ARROW_SCHEMA)
    duck_json = duck_rows(f"SELECT * FROM read_json('{out_json}', format = 'newline_delimited', columns = {{{typed}}})"
                          ) if json_rows else []
    duck_parquet = duck_rows(f"SELECT * FROM read_parquet('{out_parquet}')")
    letters = [orjson.loads(line) for line in dead.read_bytes().splitlines()] if dead.exists() else []
    return duck_json, duck_parquet, letters


def duck_rows(sql: str) -> list[dict]:
    with duckdb.connect() as connection:
        connection.execute("SET TimeZone = 'UTC'")
        return connection.sql(sql).to_arrow_table().to_pylist()


def _duck_type(arrow_type) -> str:
    return {pa.int64(): "BIGINT", pa.string(): "VARCHAR", pa.float64(): "DOUBLE", pa.timestamp("us"): "TIMESTAMP",
            pa.timestamp("us", tz="UTC"): "TIMESTAMPTZ"}[arrow_type]


def _utc(rows: list[dict]) -> list[dict]:
    """DuckDB gives TIMESTAMPTZ in the session time zone: compare in UTC."""
    return [{k: (v.astimezone(timezone.utc) if isinstance(v, datetime) and v.tzinfo else v) for k, v in r.items()}
            for r in rows]


@st.composite
def file_inputs(draw, fmt: str):
    rng = draw(st.randoms(use_true_random=False))
    records: list[Record] = []
    for _ in range(draw(st.integers(1, 30))):
        if fmt == "json":
            records.append(json_record(rng))
        else:
            records.extend(split_quote_records(rng) if rng.random() < 0.03 else [csv_record(rng)])
    return records, (json_lines if fmt == "json" else csv_lines)(records, rng)


def _file_property(tmp_path, fmt, case):
    records, data = case
    header = fmt == "csv"
    results = {}
    for batch_size in (1, 2, 7, 1_000_000):
        directory, summary, (duck_json, duck_parquet, letters) = run_files(tmp_path, fmt, data, batch_size)
        path = directory / f"in.{fmt}"
        check_outcomes(records, _utc(duck_parquet), letters, lambda i, p=path: f"{p}:{i + 1 + header}")
        assert normalize_rows(_utc(duck_json)) == normalize_rows(json_view(_utc(duck_parquet)))
        counted = [r for r in records if r.outcome != "skip"]
        assert summary.sources["src"]["records_in"] == len(counted)
        assert summary.sources["src"]["rows_in"] + sum(summary.dead_letters.values()) == len(counted)
        results[batch_size] = (normalize_rows(_utc(duck_parquet)),
                               Counter((d["reason"], d["raw"], d["position"].rsplit(":", 1)[1]) for d in letters))
    assert len({repr(r) for r in results.values()}) == 1, "results depend on file_batch_size"


@FILES
@given(file_inputs("json"))
def test_json_file_source_any_batch_size_into_json_and_parquet_sinks(tmp_path_factory, case):
    _file_property(tmp_path_factory.mktemp("jsonfile"), "json", case)


@FILES
@given(file_inputs("csv"))
def test_csv_file_source_any_batch_size_into_json_and_parquet_sinks(tmp_path_factory, case):
    _file_property(tmp_path_factory.mktemp("csvfile"), "csv", case)


# -- Parquet with odd types ---------------------------------------------------------------------------

# (Arrow type written, SQL type declared, values to draw)
PARQUET_COLUMNS = [
    (pa.int64(), "INT", st.integers(-(2**40), 2**40)),
    (pa.int64(), "SMALLINT", st.integers(-(2**20), 2**20)),
    (pa.uint64(), "BIGINT", st.integers(0, 2**64 - 1)),
    (pa.int8(), "BIGINT", st.integers(-128, 127)),
    (pa.float64(), "BIGINT", st.floats(-1e20, 1e20, allow_nan=False)),
    (pa.float64(), "FLOAT", st.floats(allow_nan=True, allow_infinity=True)),
    (pa.decimal128(20, 3), "DOUBLE", st.decimals(-10**16, 10**16, places=3, allow_nan=False, allow_infinity=False)),
    (pa.large_string(), "VARCHAR", st.text(max_size=10)),
    (pa.dictionary(pa.int32(), pa.string()), "VARCHAR", st.sampled_from(["a", "b", "ü"])),
    (pa.timestamp("ns"), "TIMESTAMP", st.integers(-(2**62), 2**62)),
    (pa.timestamp("ms", tz="Europe/Paris"), "TIMESTAMPTZ", st.integers(-(6 * 10**12), 6 * 10**12)),
    (pa.date32(), "DATE", st.integers(-50_000, 50_000)),
]


@st.composite
def parquet_tables(draw):
    picked = draw(st.lists(st.sampled_from(range(len(PARQUET_COLUMNS))), min_size=1, max_size=4, unique=True))
    n = draw(st.integers(1, 30))
    arrays, declared = [], ["k BIGINT"]
    for index in picked:
        arrow_type, sql_type, values = PARQUET_COLUMNS[index]
        drawn = draw(st.lists(st.one_of(st.none(), values), min_size=n, max_size=n))
        if pa.types.is_dictionary(arrow_type):
            array = pa.array(drawn, pa.string()).dictionary_encode()
        elif pa.types.is_timestamp(arrow_type) or pa.types.is_date(arrow_type):
            array = pa.array(drawn, pa.int64() if pa.types.is_timestamp(arrow_type) else pa.int32()).cast(arrow_type)
        else:
            array = pa.array(drawn, arrow_type)
        arrays.append((f"c{index}", array))
        declared.append(f"c{index} {sql_type}")
    table = pa.table({"k": pa.array(range(n), pa.int64()), **dict(arrays)})
    row_group = draw(st.sampled_from([1, 3, 1000]))
    return table, ", ".join(declared), row_group


@FILES
@given(parquet_tables())
def test_parquet_odd_types_every_row_is_a_row_or_one_type_dead_letter(tmp_path_factory, case):
    table, columns, row_group = case
    results = set()
    for batch_size in (1, 7, 1_000_000):
        directory = tmp_path_factory.mktemp("parquet")
        pq.write_table(table, directory / "in.parquet", row_group_size=row_group)
        session = TestSession(base_dir=str(directory), dead_letter_path=str(directory / "dead.jsonl"))
        session.execute(f"""SET file_batch_size = {batch_size};
            CREATE SOURCE src ({columns}) WITH (connector = 'file', path = 'in.parquet', format = 'parquet');
            CREATE SINK out AS SELECT * FROM src WITH (connector = 'file', path = 'out.parquet', format = 'parquet');""")
        session.run()
        with duckdb.connect() as connection:
            output = connection.sql(f"SELECT * FROM read_parquet('{directory / 'out.parquet'}')").to_arrow_table()
        rows = output.select(["k"]).to_pylist()
        dead = directory / "dead.jsonl"
        letters = [orjson.loads(line) for line in dead.read_bytes().splitlines()] if dead.exists() else []
        kept = [r["k"] for r in rows]
        lettered = [int(d["position"].rsplit(":row ", 1)[1]) - 1 for d in letters]
        assert {d["reason"] for d in letters} <= {"type"}
        assert sorted(kept + lettered) == list(range(table.num_rows)), (
            f"file_batch_size {batch_size}: a row lost or counted twice: rows {kept}, dead letters at {lettered}")
        assert kept == sorted(kept)
        for letter in letters:
            assert letter["position"].startswith(f"{directory / 'in.parquet'}:row ") and letter["detail"]
            json.loads(letter["raw"])
        results.add((tuple(kept), tuple(sorted(lettered))))
    assert len(results) == 1, "results depend on file_batch_size"
