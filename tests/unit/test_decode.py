"""Bad input: a file with 1,000 good and 10 bad records loses none of the good ones
and dead-letters exactly the bad ones, with reason and ``file:line``, whatever the
batch size; ``on_error = 'fail' | 'skip'``; and the decoders' type handling."""

from __future__ import annotations

import datetime
import json

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sqlstream.connectors.decode import CsvDecoder, JsonDecoder
from sqlstream.connectors.decode.csv_lines import _has_open_quote
from sqlstream.errors import ExecutionError
from sqlstream.testing import TestSession

GOOD_ROWS = 1000

# (record, reason) — JSON lines that do not fit (id BIGINT NOT NULL, name VARCHAR, v DOUBLE, ts TIMESTAMP)
BAD_JSON = [
    ('{"id": 5000, "name": "x", "v": 1.0', "decode"),  # truncated
    ("not json at all", "decode"),
    ("[1, 2, 3]", "decode"),  # valid JSON, not an object
    ('{"id": 5001, "name": "x", "v": 1.0, "ts": "2024-01-01T00:00:00",}', "decode"),  # trailing comma
    ('{"id": "abc", "name": "x", "v": 1.0, "ts": "2024-01-01T00:00:00"}', "type"),
    ('{"id": 5002, "name": "x", "v": "high", "ts": "2024-01-01T00:00:00"}', "type"),
    ('{"id": 5003, "name": "x", "v": 1.0, "ts": "yesterday"}', "type"),
    ('{"id": 99999999999999999999999, "name": "x", "v": 1.0, "ts": "2024-01-01T00:00:00"}', "type"),
    ('{"id": null, "name": "x", "v": 1.0, "ts": "2024-01-01T00:00:00"}', "null"),
    ('{"name": "x", "v": 1.0, "ts": "2024-01-01T00:00:00"}', "null"),  # NOT NULL column missing
]

BAD_CSV = [
    ("5000,x", "decode"),  # too few fields
    ("5001,x,1.0,2024-01-01T00:00:00,extra", "decode"),  # too many
    ("5002", "decode"),
    ('5003,"unterminated,1.0,2024-01-01T00:00:00', "decode"),  # a quote left open must not swallow the next lines
    ("abc,x,1.0,2024-01-01T00:00:00", "type"),
    ("5004,x,high,2024-01-01T00:00:00", "type"),
    ("5005,x,1.0,yesterday", "type"),
    ("5006,x,1.0,2024-13-01T00:00:00", "type"),
    ("99999999999999999999999,x,1,2024-01-01T00:00:00", "type"),
    (",x,1.0,2024-01-01T00:00:00", "null"),
]

# where the bad records go among the 1,010 (0-based), spread over the file
BAD_AT = [0, 57, 58, 300, 301, 302, 640, 999, 1008, 1009]


def good_record(i: int, fmt: str) -> str:
    ts = f"2024-01-01T00:{i // 60 % 60:02d}:{i % 60:02d}"
    if fmt == "json":
        return json.dumps({"id": i, "name": f"n{i}", "v": i * 0.5, "ts": ts})
    return f'{i},"n{i}",{i * 0.5},{ts}'


def write_input(path, fmt: str) -> dict[int, str]:
    """1,000 good and 10 bad records; returns {1-based line: reason} of the bad ones."""
    bad = BAD_JSON if fmt == "json" else BAD_CSV
    lines, expected, good, bad_iter = [], {}, iter(range(GOOD_ROWS)), iter(bad)
    header = 1 if fmt == "csv" else 0
    for k in range(GOOD_ROWS + len(bad)):
        if k in BAD_AT:
            record, reason = next(bad_iter)
            lines.append(record)
            expected[k + 1 + header] = (reason, record)
        else:
            lines.append(good_record(next(good), fmt))
    with open(path, "w") as handle:
        if fmt == "csv":
            handle.write("id,name,v,ts\n")
        handle.write("\n".join(lines) + "\n")
    return expected


def run_file_pipeline(tmp_path, fmt: str, *, batch_size: int | None = None, on_error: str | None = None):
    data = tmp_path / f"in.{fmt}"
    expected = write_input(data, fmt)
    dead_path = tmp_path / "dead.jsonl"
    session = TestSession(base_dir=str(tmp_path), dead_letter_path=str(dead_path))
    if batch_size:
        session.execute(f"SET file_batch_size = {batch_size}")
    option = f", on_error = '{on_error}'" if on_error else ""
    session.execute(
        f"""CREATE SOURCE src (id BIGINT NOT NULL, name VARCHAR, v DOUBLE, ts TIMESTAMP)
              WITH (connector = 'file', path = 'in.{fmt}', format = '{fmt}'{option});
            CREATE SINK out AS SELECT * FROM src WITH (connector = 'file', path = 'out.jsonl', format = 'json');"""
    )
    summary = session.run()
    return summary, expected, data, tmp_path / "out.jsonl", dead_path


def read_jsonl(path) -> list[dict]:
    if not path.exists():
        return []
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


@pytest.mark.parametrize("fmt", ["json", "csv"])
@pytest.mark.parametrize("batch_size", [None, 7, 64])
def test_thousand_good_ten_bad(tmp_path, fmt, batch_size):
    summary, expected, data, out, dead_path = run_file_pipeline(tmp_path, fmt, batch_size=batch_size)

    rows = read_jsonl(out)
    assert len(rows) == GOOD_ROWS
    assert sorted(r["id"] for r in rows) == list(range(GOOD_ROWS))
    assert rows[123] == {"id": 123, "name": "n123", "v": 61.5, "ts": "2024-01-01 00:02:03"}

    letters = read_jsonl(dead_path)
    assert len(letters) == 10
    assert {letter["position"]: letter["reason"] for letter in letters} == {
        f"{data}:{line}": reason for line, (reason, _) in expected.items()
    }
    for letter in letters:
        line = int(letter["position"].rsplit(":", 1)[1])
        assert letter["raw"] == expected[line][1]  # the record exactly as it was in the file
        assert letter["source"] == "src" and letter["detail"]
        assert set(letter) == {"at", "source", "reason", "detail", "raw", "position", "event_time"}

    by_reason = {}
    for _, (reason, _) in expected.items():
        by_reason[reason] = by_reason.get(reason, 0) + 1
    assert summary.dead_letters == by_reason
    assert summary.sources["src"]["rows_in"] == GOOD_ROWS
    assert summary.sources["src"]["records_in"] == GOOD_ROWS + 10
    assert summary.sinks["out"] == GOOD_ROWS


def test_dead_letter_details_name_the_problem(tmp_path):
    _, _, data, _, dead_path = run_file_pipeline(tmp_path, "json")
    details = {letter["raw"]: letter["detail"] for letter in read_jsonl(dead_path)}
    assert details["[1, 2, 3]"] == "expected a JSON object, got list"
    assert details["not json at all"].startswith("malformed JSON")
    assert details['{"id": "abc", "name": "x", "v": 1.0, "ts": "2024-01-01T00:00:00"}'] == (
        "column 'id': expected a number, got a string"
    )
    assert details['{"id": null, "name": "x", "v": 1.0, "ts": "2024-01-01T00:00:00"}'] == (
        "column 'id' is NULL but declared NOT NULL"
    )


def test_csv_dead_letter_details_name_the_column(tmp_path):
    _, _, _, _, dead_path = run_file_pipeline(tmp_path, "csv")
    details = {letter["raw"]: letter["detail"] for letter in read_jsonl(dead_path)}
    assert details["5000,x"] == "expected 4 fields, got 2"
    assert details["5001,x,1.0,2024-01-01T00:00:00,extra"] == "expected 4 fields, got 5"
    assert details['5003,"unterminated,1.0,2024-01-01T00:00:00'].startswith("unterminated quoted field")
    assert details["5004,x,high,2024-01-01T00:00:00"] == "column 'v': invalid value 'high' for double"
    assert details["5006,x,1.0,2024-13-01T00:00:00"] == "column 'ts': invalid value '2024-13-01T00:00:00' for timestamp[us]"


@pytest.mark.parametrize("fmt", ["json", "csv"])
def test_on_error_fail_stops_at_the_first_bad_record(tmp_path, fmt):
    with pytest.raises(ExecutionError) as info:
        run_file_pipeline(tmp_path, fmt, on_error="fail")
    line = 1 + (fmt == "csv")
    assert info.value.message.startswith(f"source 'src': bad record at {tmp_path / ('in.' + fmt)}:{line} (decode): ")
    assert "on_error = 'dead_letter'" in info.value.hint
    assert not (tmp_path / "dead.jsonl").exists()


@pytest.mark.parametrize("fmt", ["json", "csv"])
def test_on_error_skip_counts_without_writing(tmp_path, fmt):
    summary, _, _, out, dead_path = run_file_pipeline(tmp_path, fmt, on_error="skip")
    assert len(read_jsonl(out)) == GOOD_ROWS
    assert not dead_path.exists()
    assert summary.dead_letters == {}
    assert sum(summary.skipped.values()) == 10
    assert "skipped (on_error = 'skip'): 10" in summary.line()


def test_set_on_error_is_the_default_for_sources(tmp_path):
    write_input(tmp_path / "in.json", "json")
    session = TestSession(base_dir=str(tmp_path))
    session.execute(
        """SET on_error = 'fail';
           CREATE SOURCE src (id BIGINT NOT NULL, name VARCHAR, v DOUBLE, ts TIMESTAMP)
             WITH (connector = 'file', path = 'in.json', format = 'json');
           CREATE SINK out AS SELECT * FROM src WITH (connector = 'memory');"""
    )
    with pytest.raises(ExecutionError, match="bad record at"):
        session.run()


def test_parquet_values_that_do_not_fit_are_type_dead_letters(tmp_path):
    pq.write_table(pa.table({"id": [1, 2, 300, 4], "name": ["a", "b", "c", "d"]}), tmp_path / "in.parquet")
    session = TestSession(base_dir=str(tmp_path), dead_letter_path=str(tmp_path / "dead.jsonl"))
    session.execute(
        """CREATE SOURCE src (id TINYINT, name VARCHAR) WITH (connector = 'file', path = 'in.parquet', format = 'parquet');
           CREATE SINK out AS SELECT * FROM src WITH (connector = 'memory');"""
    )
    session.run()
    assert session.rows("out") == [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}, {"id": 4, "name": "d"}]
    [letter] = read_jsonl(tmp_path / "dead.jsonl")
    assert (letter["reason"], letter["position"]) == ("type", f"{tmp_path / 'in.parquet'}:row 3")
    assert json.loads(letter["raw"]) == {"id": 300, "name": "c"}


# -- the decoders on their own ------------------------------------------------------------------


def decode(decoder, text: str):
    return decoder.decode(text.encode(), lambda i: f"f:{i + 1}")


def test_json_keys_match_columns_case_insensitively():
    schema = pa.schema([("sensor_id", pa.int64()), ("temp", pa.float64())])
    table, dead = decode(JsonDecoder(schema, "s"), '{"Sensor_ID": 1, "TEMP": 2.5, "extra": true}\n{"Sensor_ID": 2}\n')
    assert dead == []
    assert table.to_pylist() == [{"sensor_id": 1, "temp": 2.5}, {"sensor_id": 2, "temp": None}]


@pytest.mark.parametrize(
    "fmt, value",
    [("epoch_s", "1704067201.5"), ("epoch_ms", "1704067201500"), ("epoch_us", "1704067201500000"), ("iso", '"2024-01-01T00:00:01.5"')],
)
def test_timestamp_formats(fmt, value):
    schema = pa.schema([("ts", pa.timestamp("ms"))])
    table, dead = decode(JsonDecoder(schema, "s", fmt), f'{{"ts": {value}}}\n')
    assert dead == []
    assert table.column("ts").to_pylist() == [datetime.datetime(2024, 1, 1, 0, 0, 1, 500000)]
    assert table.schema.field("ts").type == pa.timestamp("ms")


def test_fixed_size_lists_check_their_length():
    schema = pa.schema([("id", pa.int64()), ("f", pa.list_(pa.float32(), 2))])
    records = '{"id": 1, "f": [1, 2]}\n{"id": 2, "f": [1, 2, 3]}\n{"id": 3, "f": null}\n{"id": 4, "f": [null, 5]}\n'
    table, dead = decode(JsonDecoder(schema, "s"), records)
    assert table.to_pylist() == [{"id": 1, "f": [1.0, 2.0]}, {"id": 3, "f": None}, {"id": 4, "f": [None, 5.0]}]
    assert table.schema.field("f").type == pa.list_(pa.float32(), 2)
    assert [(d.reason, d.position) for d in dead] == [("type", "f:2")]
    assert dead[0].detail == "column 'f': expected 2 elements in a fixed_size_list<item: float>[2]"


def test_nested_json_values():
    schema = pa.schema([("st", pa.struct([("x", pa.int32()), ("tags", pa.list_(pa.string()))])), ("d", pa.date32())])
    table, dead = decode(JsonDecoder(schema, "s"), '{"st": {"x": 1, "tags": ["a", "b"]}, "d": "2024-02-29"}\n{"d": "2024-02-30"}\n')
    assert table.to_pylist() == [{"st": {"x": 1, "tags": ["a", "b"]}, "d": datetime.date(2024, 2, 29)}]
    assert [(d.reason, d.position) for d in dead] == [("type", "f:2")]


def test_csv_with_other_column_order_quotes_and_crlf():
    schema = pa.schema([("id", pa.int64()), ("name", pa.string())])
    decoder = CsvDecoder(schema, "s", columns=["name", "unused", "id"])
    table, dead = decode(decoder, '"a, b",x,1\r\n"say ""hi""",y,2\r\n\r\nc,z,3\r\n')
    assert dead == []
    assert table.to_pylist() == [{"id": 1, "name": "a, b"}, {"id": 2, "name": 'say "hi"'}, {"id": 3, "name": "c"}]


def test_csv_open_quote_on_the_last_line_is_rejected():
    schema = pa.schema([("id", pa.int64()), ("name", pa.string())])
    table, dead = decode(CsvDecoder(schema, "s"), '1,a\n2,"b\n')
    assert table.to_pylist() == [{"id": 1, "name": "a"}]
    assert [(d.reason, d.position, d.raw) for d in dead] == [("decode", "f:2", '2,"b')]


def test_csv_semicolon_delimiter_through_a_session(tmp_path):
    (tmp_path / "in.csv").write_text("id;name\n1;a\n2;b\n")
    session = TestSession(base_dir=str(tmp_path))
    session.execute(
        """CREATE SOURCE src (id BIGINT, name VARCHAR)
             WITH (connector = 'file', path = 'in.csv', format = 'csv', delimiter = ';');
           CREATE SINK out AS SELECT * FROM src WITH (connector = 'memory');"""
    )
    session.run()
    assert session.rows("out") == [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]


def test_csv_without_header(tmp_path):
    (tmp_path / "in.csv").write_text("1,a\n2,b\n")
    session = TestSession(base_dir=str(tmp_path))
    session.execute(
        """CREATE SOURCE src (id BIGINT, name VARCHAR)
             WITH (connector = 'file', path = 'in.csv', format = 'csv', header = false);
           CREATE SINK out AS SELECT * FROM src WITH (connector = 'memory');"""
    )
    session.run()
    assert session.rows("out") == [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]


def test_a_json_record_longer_than_a_parse_block():
    schema = pa.schema([("id", pa.int64()), ("s", pa.string())])
    long_text = "x" * (3 << 20)
    records = "\n".join(json.dumps(r) for r in ({"id": 1, "s": "a"}, {"id": 2, "s": long_text}, {"id": 3})) + "\n"
    table, dead = decode(JsonDecoder(schema, "s"), records)
    assert dead == [] and table.column("id").to_pylist() == [1, 2, 3]
    assert table.column("s").to_pylist()[1] == long_text


@pytest.mark.parametrize("fmt", ["json", "csv"])
def test_text_files_are_read_in_blocks_of_file_batch_size_lines(tmp_path, fmt):
    expected = write_input(tmp_path / f"in.{fmt}", fmt)
    session = TestSession(base_dir=str(tmp_path))
    session.execute(
        f"""SET file_batch_size = 100;
            CREATE SOURCE src (id BIGINT NOT NULL, name VARCHAR, v DOUBLE, ts TIMESTAMP)
              WITH (connector = 'file', path = 'in.{fmt}', format = '{fmt}', on_error = 'skip');
            CREATE SINK out AS SELECT id FROM src WITH (connector = 'memory');"""
    )
    session.run()
    # 1,010 lines in blocks of 100 (the CSV header line is not a record); bad lines are left out
    lines_per_block = [100] * 10 + [10]
    bad_per_block = [sum(1 for line in expected if (line - 1 - (fmt == "csv")) // 100 == b) for b in range(11)]
    sizes = [b.num_rows for b in session.outputs["out"]]
    assert sizes == [n - bad for n, bad in zip(lines_per_block, bad_per_block, strict=True) if n - bad]


def test_csv_bad_lines_of_a_crlf_file():
    schema = pa.schema([("id", pa.int64()), ("name", pa.string())])
    table, dead = decode(CsvDecoder(schema, "s"), "1,a\r\nx,b\r\n3\r\n4,d\r\n")
    assert table.to_pylist() == [{"id": 1, "name": "a"}, {"id": 4, "name": "d"}]
    assert [(d.reason, d.position, d.raw, d.detail) for d in dead] == [
        ("type", "f:2", "x,b", "column 'id': invalid value 'x' for int64"),
        ("decode", "f:3", "3", "expected 2 fields, got 1"),
    ]


@pytest.mark.parametrize("file_batch_size", [1, 2, 1000])
def test_json_keys_match_case_insensitively_per_record(tmp_path, file_batch_size):
    (tmp_path / "in.jsonl").write_text(
        '{"Temp":1,"id":1}\n{"temp":2,"id":2}\n{"TEMP":3,"id":3}\n{"id":4}\n{"ID":5, "temp": 5}\n'
    )
    session = TestSession(base_dir=str(tmp_path))
    session.settings["file_batch_size"] = file_batch_size
    session.execute("CREATE SOURCE s (id BIGINT, temp DOUBLE) WITH (connector = 'file', path = 'in.jsonl', format = 'json')")
    rows = sorted((r["id"], r["temp"]) for r in session.run_query("SELECT * FROM s"))
    assert rows == [(1, 1.0), (2, 2.0), (3, 3.0), (4, None), (5, 5.0)]


def test_csv_empty_last_field_after_a_quoted_one_at_the_end_of_a_block_is_null():
    schema = pa.schema([pa.field("id", pa.int64()), pa.field("name", pa.string()), pa.field("v", pa.float64())])
    table, dead = CsvDecoder(schema, "src").decode(b'1,"a",2.0\n0,"x",', lambda i: str(i + 1))
    assert dead == []
    assert table.to_pylist() == [{"id": 1, "name": "a", "v": 2.0}, {"id": 0, "name": "x", "v": None}]


@given(st.binary(max_size=60).map(lambda b: bytes(b'"\n,a'[x % 4] for x in b)))
@settings(max_examples=300, deadline=None)
def test_a_line_with_an_odd_number_of_quotes_is_found(data):
    expected = any(line.count(b'"') % 2 for line in data.split(b"\n"))
    assert _has_open_quote(data) == expected
