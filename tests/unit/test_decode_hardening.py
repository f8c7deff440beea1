"""Records that used to end a run or change silently (each reproduced first): invalid
UTF-8, deep nesting with key spellings, several JSON values on a line, key matching
that depended on the neighbouring records, CSV NULL spellings and hexadecimal, UTC
offsets in TIMESTAMP columns, and NATS messages holding two objects or line breaks."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import numpy as np
import orjson
import pyarrow as pa
import pytest

from sqlstream.connectors.decode import CsvDecoder, JsonDecoder
from sqlstream.connectors.nats.messages import MessageDecoder, Received
from sqlstream.testing import TestSession

SQLSTREAM = str(Path(sys.executable).with_name("sqlstream"))
UTC = dt.timezone.utc
ID_S = pa.schema([pa.field("id", pa.int64(), nullable=False), pa.field("s", pa.string())])


def decode(decoder, data: bytes):
    decoded = decoder.decode_block(data, lambda i: f"f:{i + 1}")
    return decoded.table.to_pylist(), [(d.reason, d.raw, d.position) for d in decoded.dead], decoded


def in_blocks(decoder, lines: list[bytes], size: int):
    """Decode ``lines`` cut into blocks of ``size`` lines; rows and dead letters."""
    rows, letters = [], []
    for start in range(0, len(lines), size):
        decoded = decoder.decode_block(b"\n".join(lines[start:start + size]), lambda i, s=start: f"f:{s + i + 1}")
        rows += decoded.table.to_pylist()
        letters += [(d.reason, d.detail, d.raw, d.position) for d in decoded.dead]
    return rows, letters


# -- invalid UTF-8 -------------------------------------------------------------------------


@pytest.mark.parametrize("decoder, data", [
    (JsonDecoder(ID_S, "s"), b'{"id":1,"s":"caf\xe9"}\n{"id":2,"s":"ok"}\n'),
    (CsvDecoder(ID_S, "s"), b'1,caf\xe9\n2,ok\n'),
])
def test_invalid_utf8_is_a_decode_dead_letter_with_the_bytes_shown(decoder, data):
    rows, letters, decoded = decode(decoder, data)
    assert rows == [{"id": 2, "s": "ok"}]
    (letter,) = decoded.dead
    assert (letter.reason, letter.position) == ("decode", "f:1")
    assert letter.raw == data.split(b"\n")[0].decode("utf-8", "backslashreplace")
    assert "\\xe9" in letter.raw
    assert letter.detail.startswith("not valid UTF-8: byte 0xe9 at column")


def test_invalid_utf8_never_reaches_a_string_function_or_a_parquet_file(tmp_path):
    """It crashed DataFusion (SIGSEGV) in upper(s), and made Parquet unreadable."""
    (tmp_path / "in.json").write_bytes(b'{"id":1,"s":"caf\xe9"}\n{"id":2,"s":"ok"}\n{"id":3,"s":"\xff\xfe"}\n')
    (tmp_path / "p.sql").write_text(
        "CREATE SOURCE src (id BIGINT, s VARCHAR) WITH (connector = 'file', path = 'in.json', format = 'json');\n"
        "CREATE SINK up AS SELECT id, upper(s) AS s FROM src WITH (connector = 'file', path = 'up.parquet', format = 'parquet');\n"
        "CREATE SINK everything AS SELECT * FROM src WITH (connector = 'file', path = 'all.parquet', format = 'parquet');\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "SQLSTREAM_DEBUG"}
    done = subprocess.run([SQLSTREAM, "run", "p.sql"], cwd=tmp_path, capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    assert duckdb.sql(f"SELECT * FROM '{tmp_path / 'up.parquet'}'").fetchall() == [(2, "OK")]
    assert duckdb.sql(f"SELECT * FROM '{tmp_path / 'all.parquet'}'").fetchall() == [(2, "ok")]
    letters = [orjson.loads(line) for line in (tmp_path / "p.dead_letter.jsonl").read_bytes().splitlines()]
    assert [(d["reason"], d["position"].rsplit(":", 1)[1]) for d in letters] == [("decode", "1"), ("decode", "3")]


# -- deep nesting, spellings, several values on a line --------------------------------------


def test_deep_nesting_next_to_another_key_spelling_is_read():
    """'Recursion limit reached' ended the run: key folding re-serialized the records."""
    deep = b'{"id":3,"x":' + b"[" * 300 + b"]" * 300 + b"}"
    rows, letters, _ = decode(JsonDecoder(ID_S, "s"), b'{"id":1}\n{"ID":2}\n' + deep + b"\n")
    assert [r["id"] for r in rows] == [1, 2, 3] and letters == []


def test_a_deep_record_with_only_another_spelling_is_read():
    deep = b'{"ID":3,"x":' + b"[" * 2000 + b"]" * 2000 + b"}"
    rows, letters, _ = decode(JsonDecoder(ID_S, "s"), b'{"id":1}\n' + deep + b"\n")
    assert [r["id"] for r in rows] == [1] + ([3] if not letters else [])
    assert len(rows) + len(letters) == 2  # a row or a dead letter, never a failed run


def test_two_json_values_on_one_line_are_one_dead_letter_and_later_positions_stay_right():
    data = b'{"id":1} {"id":2}\n{"id":3}\n{"id":null}\n{"id":4}\n'
    rows, letters, decoded = decode(JsonDecoder(ID_S, "s"), data)
    assert [r["id"] for r in rows] == [3, 4]
    assert letters == [("decode", '{"id":1} {"id":2}', "f:1"), ("null", '{"id":null}', "f:3")]
    assert decoded.dead[0].detail == "2 JSON values on one line: a line must hold one object"
    assert decoded.records.tolist() == [1, 3]


def test_a_value_spread_over_two_lines_is_two_dead_letters():
    rows, letters, _ = decode(JsonDecoder(ID_S, "s"), b'{"id":1,\n"s":"x"}\n{"id":2}\n')
    assert [r["id"] for r in rows] == [2]
    assert [(reason, position) for reason, _, position in letters] == [("decode", "f:1"), ("decode", "f:2")]


SPELLINGS = [
    b'{"id":1}',
    b'{"ID":2}',
    b'{"id":5000025,"Id":5000026}',  # the exact spelling wins
    b'{"Id":3,"ID":4}',  # two other spellings: which one? neither
    b'{"id":5,"id":6}',  # a key twice
    b'{"iD":7,"s":"x"}',
    b'{"Id":8}',
    b'{"id":null,"ID":9}',
    b'   ',
    b'{"s":"no id"}',
    b'{"S":"Text","id":10}',
]


def test_key_matching_depends_on_the_record_alone_whatever_the_block():
    whole = in_blocks(JsonDecoder(ID_S, "s"), SPELLINGS, len(SPELLINGS))
    assert [(r["id"], r["s"]) for r in whole[0]] == [(1, None), (2, None), (5000025, None), (7, "x"), (8, None), (10, "Text")]
    assert [(reason, position) for reason, _, _, position in whole[1]] == [
        ("decode", "f:4"), ("decode", "f:5"), ("null", "f:8"), ("null", "f:10")]
    assert whole[1][0][1] == "keys 'Id' and 'ID' both name column 'id'"
    assert whole[1][1][1] == "key 'id' appears twice in the object"
    for size in range(1, len(SPELLINGS)):
        assert in_blocks(JsonDecoder(ID_S, "s"), SPELLINGS, size) == whole, size
    # whichever record comes first (its spelling is what a block is read with)
    for first in range(len(SPELLINGS)):
        order = [first] + [i for i in range(len(SPELLINGS)) if i != first]
        rows, letters = in_blocks(JsonDecoder(ID_S, "s"), [SPELLINGS[i] for i in order], len(SPELLINGS))
        assert sorted(map(str, rows)) == sorted(map(str, whole[0]))
        assert sorted((r, d, raw) for r, d, raw, _ in letters) == sorted((r, d, raw) for r, d, raw, _ in whole[1])


def test_dead_letter_raw_is_the_line_as_read():
    lines = [b'{"ID": 1, "s": 5}', b'{"Id":  null}', b'{"id":"x",   "S":"y"}\r', b'not json']
    _, letters = in_blocks(JsonDecoder(ID_S, "s"), lines, len(lines))
    assert [raw for _, _, raw, _ in letters] == ['{"ID": 1, "s": 5}', '{"Id":  null}', '{"id":"x",   "S":"y"}', "not json"]


# -- CSV -----------------------------------------------------------------------------------------

CSV_SCHEMA = pa.schema([("s", pa.string()), ("d", pa.float64()), ("i", pa.int64())])


def test_csv_only_an_empty_unquoted_field_is_null():
    rows, letters, decoded = decode(CsvDecoder(CSV_SCHEMA, "s"), b'NA,NaN,1\nnull,nan,0x10\nN/A,-inf,2\n"",,3\n,1.5,\n')
    assert rows[0]["s"] == "NA" and np.isnan(rows[0]["d"]) and rows[0]["i"] == 1
    assert rows[1:] == [{"s": "N/A", "d": float("-inf"), "i": 2}, {"s": "", "d": None, "i": 3}, {"s": None, "d": 1.5, "i": None}]
    assert letters == [("type", "null,nan,0x10", "f:2")]
    assert decoded.dead[0].detail == "column 'i': invalid value '0x10' for int64: hexadecimal numbers are not read"


def test_csv_null_values_adds_spellings():
    rows, letters, _ = decode(CsvDecoder(CSV_SCHEMA, "s", null_values=["NA", "-"]), b'NA,NA,1\n"NA",-,2\n')
    assert rows == [{"s": None, "d": None, "i": 1}, {"s": "NA", "d": None, "i": 2}] and letters == []


def test_csv_null_values_option_in_a_pipeline(tmp_path):
    (tmp_path / "in.csv").write_text("name,v\nNA,1\nnull,NA\n,2\n")
    session = TestSession(base_dir=str(tmp_path))
    session.execute(
        "CREATE SOURCE a (name VARCHAR, v DOUBLE) WITH (connector = 'file', path = 'in.csv', format = 'csv');"
        "CREATE SOURCE b (name VARCHAR, v DOUBLE) WITH (connector = 'file', path = 'in.csv', format = 'csv', null_values = 'NA');"
    )
    assert session.run_query("SELECT * FROM a") == [{"name": "NA", "v": 1.0}, {"name": None, "v": 2.0}]  # 'NA' is no DOUBLE
    assert session.run_query("SELECT * FROM b") == [{"name": None, "v": 1.0}, {"name": "null", "v": None}, {"name": None, "v": 2.0}]


# -- UTC offsets ------------------------------------------------------------------------------------

TS = pa.schema([("ts", pa.timestamp("us")), ("tz", pa.timestamp("us", "UTC"))])
TS_LINES = [  # (ts text, tz text)
    ("2024-01-01T10:00:00", "2024-01-01T10:00:00+02:00"),
    ("2024-01-01T10:00:00+02:00", None),
    ("2024-01-01 10:00:00-0500", None),
    ("2024-01-01T10:00:00Z", None),
    (None, "2024-01-01 10:00:00"),
    (None, "2024-01-01T10:00:00.5Z"),
    (None, "2024-01-01T10:00:00-05:00"),
    ("2024-01-01", "2024-01-01"),
]
TS_EXPECTED_ROWS = [
    {"ts": dt.datetime(2024, 1, 1, 10), "tz": dt.datetime(2024, 1, 1, 8, tzinfo=UTC)},
    {"ts": None, "tz": dt.datetime(2024, 1, 1, 10, tzinfo=UTC)},
    {"ts": None, "tz": dt.datetime(2024, 1, 1, 10, 0, 0, 500000, tzinfo=UTC)},
    {"ts": None, "tz": dt.datetime(2024, 1, 1, 15, tzinfo=UTC)},
    {"ts": dt.datetime(2024, 1, 1), "tz": dt.datetime(2024, 1, 1, tzinfo=UTC)},
]


def _ts_input(fmt: str) -> bytes:
    if fmt == "json":
        return b"\n".join(orjson.dumps({k: v for k, v in zip(("ts", "tz"), line) if v}) for line in TS_LINES)
    return b"\n".join(b",".join((v or "").encode() for v in line) for line in TS_LINES)


@pytest.mark.parametrize("fmt", ["json", "csv"])
def test_utc_offsets_are_refused_by_timestamp_and_converted_by_timestamptz(fmt):
    decoder = JsonDecoder(TS, "s") if fmt == "json" else CsvDecoder(TS, "s")
    rows, letters, decoded = decode(decoder, _ts_input(fmt))
    assert [(r["ts"], r["tz"].astimezone(UTC) if r["tz"] else None) for r in rows] == [
        (r["ts"], r["tz"]) for r in TS_EXPECTED_ROWS]
    assert [(reason, position) for reason, _, position in letters] == [("type", "f:2"), ("type", "f:3"), ("type", "f:4")]
    assert decoded.dead[0].detail == (
        "column 'ts': '2024-01-01T10:00:00+02:00' carries a UTC offset, which a TIMESTAMP column (no time zone) "
        "does not keep: declare the column TIMESTAMPTZ to convert offsets to UTC")


# -- messages ---------------------------------------------------------------------------------------


def _messages(payloads: list[bytes], fmt: str = "json", schema=ID_S):
    decoder = MessageDecoder(schema, "m", fmt)
    received = Received([b"in"] * len(payloads), payloads, [None] * len(payloads), np.arange(1, len(payloads) + 1))
    batch, dead = decoder.decode(received)
    return batch.to_pylist(), [(d.reason, d.raw, d.position) for d in dead], dead


def test_a_message_with_two_objects_is_one_dead_letter_not_a_failed_run():
    """'pipeline failed: _BlankRecords' on every restart."""
    rows, letters, dead = _messages([b'{"id":1}', b'{"id":2} {"id":3}', b'{"id":4}'])
    assert [r["id"] for r in rows] == [1, 4]
    assert letters == [("decode", '{"id":2} {"id":3}', "in#2")]


def test_every_message_is_a_row_or_one_dead_letter():
    payloads = [
        b'{\n  "id": 1,\n  "s": "pretty"\n}\n',  # pretty-printed: one record
        b"",
        b"  \r\n",
        b'{"id":2,"s":"caf\xe9"}',
        b'{"id":3,"s":"a\nb"}',  # a raw line break inside a string is not JSON
        b'{"id":4}\n',
        b'{"ID":5,\n"Id":6}',
        b'{"id":7} {"id":8}\n{"id":9}',
        b'{"id":10,"s":"ok"}',
    ]
    rows, letters, _ = _messages(payloads)
    assert rows == [{"id": 1, "s": "pretty"}, {"id": 4, "s": None}, {"id": 10, "s": "ok"}]
    assert sorted(position for _, _, position in letters) == sorted(f"in#{i}" for i in (2, 3, 4, 5, 7, 8))
    assert {position: raw for _, raw, position in letters}["in#4"] == '{"id":2,"s":"caf\\xe9"}'
    assert {position: raw for _, raw, position in letters}["in#5"] == '{"id":3,"s":"a\nb"}'  # as received
    assert all(reason == "decode" for reason, _, _ in letters)


def test_csv_messages_keep_trailing_fields_and_refuse_line_breaks():
    rows, letters, _ = _messages([b"1,a\n", b"2,b \r\n", b"3,c\n4,d", b"5,"], fmt="csv")
    assert rows == [{"id": 1, "s": "a"}, {"id": 2, "s": "b "}, {"id": 5, "s": None}]
    assert [(reason, position) for reason, _, position in letters] == [("decode", "in#3")]


def test_arrow_messages_with_invalid_utf8_text_are_decode_dead_letters():
    bad = pa.Array.from_buffers(pa.string(), 1, [None, pa.py_buffer(np.array([0, 2], dtype=np.int32)), pa.py_buffer(b"\xff\xfe")])
    good = pa.array(["ok"])
    payloads = []
    for text, ident in ((good, 1), (bad, 2)):
        sink = pa.BufferOutputStream()
        batch = pa.record_batch([pa.array([ident]), text], names=["id", "s"])
        with pa.ipc.new_stream(sink, batch.schema) as writer:
            writer.write_batch(batch)
        payloads.append(sink.getvalue().to_pybytes())
    rows, letters, dead = _messages(payloads, fmt="arrow")
    assert rows == [{"id": 1, "s": "ok"}]
    assert [(reason, position) for reason, _, position in letters] == [("decode", "in#2")]
    assert dead[0].detail == "column 's': text that is not valid UTF-8"
