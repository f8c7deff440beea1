"""BYTEA in JSON: base64 text read into bytes (standard and URL-safe alphabets, padded),
bytes written back as base64, and values that are not base64 as dead letters.

Differential: the same JSON lines through sqlstream (micro-batches of 1, 7 and 64
rows) and through DuckDB in batch (``from_base64`` over the good rows) give the same
bytes; a JSON sink's output read back (by sqlstream and by DuckDB) gives them again;
Parquet ``BYTEA`` goes in and out unchanged. Message sources (NATS, MQTT) share the
decoder through ``PayloadDecoder``: one test frames the same records as messages.
"""

from __future__ import annotations

import base64
import json
import random

import duckdb
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import sqlstream
from sqlstream.connectors.decode.payloads import PayloadDecoder

ROWS = 240

#: id → (the text in the JSON, what the dead letter says about it)
CORRUPT = {
    13: ('"aGk"', "invalid base64 'aGk': a length of 3 bytes is not a multiple of 4"),
    41: ('"aG k"', "invalid base64 'aG k': ' ' at character 3 is not in the base64 alphabet"),
    77: ('"a=Gk"', "invalid base64 'a=Gk': '=' (padding) is only allowed in the last two places"),
    78: ('"aGk*"', "invalid base64 'aGk*': '*' at character 4 is not in the base64 alphabet"),
    150: ('"QQ==QQ=="', "invalid base64 'QQ==QQ==': '=' (padding) is only allowed in the last two places"),
    151: ("12", "column 'b': expected a string, got a number"),
    239: ('"\u00e9t\u00e9"', "invalid base64 '\u00e9t\u00e9': a length of 5 bytes is not a multiple of 4"),
}


def make_values(seed: int = 3) -> list[bytes | None]:
    rng = random.Random(seed)
    values: list[bytes | None] = []
    for i in range(ROWS):
        if i % 17 == 5:
            values.append(None)
        elif i % 23 == 0:
            values.append(b"")
        else:
            values.append(bytes(rng.randrange(256) for _ in range(rng.randrange(1, 40))))
    return values


def write_jsonl(path, values: list[bytes | None]) -> None:
    lines = []
    for i, value in enumerate(values):
        if i in CORRUPT:
            text = CORRUPT[i][0]
        elif value is None:
            text = "null" if i % 2 else None  # NULL, or the key left out
        else:  # every third value in the URL-safe alphabet
            text = json.dumps((base64.urlsafe_b64encode if i % 3 == 0 else base64.b64encode)(value).decode())
        lines.append(f'{{"id": {i}, "b": {text}, "note": "n{i}"}}' if text is not None else f'{{"id": {i}, "note": "n{i}"}}')
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


@pytest.fixture(scope="module")
def values():
    return make_values()


@pytest.fixture(scope="module")
def expected(tmp_path_factory, values):
    """DuckDB in batch over the same file: from_base64 of the good rows (URL-safe
    characters mapped to the standard ones first: DuckDB reads only those)."""
    path = tmp_path_factory.mktemp("duck") / "in.jsonl"
    write_jsonl(path, values)
    bad = ", ".join(str(i) for i in CORRUPT)
    rows = duckdb.connect().sql(
        f"""SELECT id, from_base64(translate(b, '-_', '+/')) AS b, lower(hex(from_base64(translate(b, '-_', '+/')))) AS h
            FROM read_json('{path}', format = 'newline_delimited', columns = {{'id': 'BIGINT', 'b': 'VARCHAR'}})
            WHERE id NOT IN ({bad}) AND id % 5 <> 3"""
    ).fetchall()
    return sorted(rows, key=lambda r: r[0])


@pytest.mark.parametrize("batch_size", [1, 7, 64])
def test_base64_json_matches_duckdb_and_bad_values_are_dead_letters(tmp_path, values, expected, batch_size):
    write_jsonl(tmp_path / "in.jsonl", values)
    session = sqlstream.Session(base_dir=str(tmp_path), dead_letter_path=str(tmp_path / "dead.jsonl"))
    session.execute(
        f"""SET file_batch_size = {batch_size};
            CREATE SOURCE src (id BIGINT, b BYTEA, note VARCHAR) WITH (connector = 'file', path = 'in.jsonl', format = 'json');
            CREATE SINK out AS SELECT id, b, encode(b, 'hex') AS h FROM src WHERE id % 5 <> 3
              WITH (connector = 'file', path = 'out.parquet', format = 'parquet');"""
    )
    summary = session.run()
    rows = sorted(pq.read_table(tmp_path / "out.parquet").to_pylist(), key=lambda r: r["id"])
    assert [(r["id"], r["b"], r["h"]) for r in rows] == expected
    assert len(rows) == sum(1 for i in range(ROWS) if i not in CORRUPT and i % 5 != 3)
    assert all(r["b"] == values[r["id"]] for r in rows)
    assert summary.dead_letters == {"type": len(CORRUPT)}
    dead = [orjson.loads(line) for line in (tmp_path / "dead.jsonl").read_bytes().splitlines()]
    assert sorted(json.loads(d["raw"])["id"] for d in dead) == sorted(CORRUPT)
    for letter in dead:
        i = json.loads(letter["raw"])["id"]
        assert letter["reason"] == "type"
        assert letter["position"].endswith(f"in.jsonl:{i + 1}")
        assert CORRUPT[i][1] in letter["detail"]
        if i != 151:
            assert letter["detail"].startswith("column 'b': invalid base64")


def test_the_json_sink_writes_base64_that_reads_back(tmp_path, values):
    write_jsonl(tmp_path / "in.jsonl", values)
    session = sqlstream.Session(base_dir=str(tmp_path), dead_letter_path=str(tmp_path / "dead.jsonl"))
    session.execute(
        """SET file_batch_size = 7;
           CREATE SOURCE src (id BIGINT, b BYTEA) WITH (connector = 'file', path = 'in.jsonl', format = 'json');
           CREATE SINK out AS SELECT id, b FROM src WITH (connector = 'file', path = 'out.jsonl', format = 'json');"""
    )
    session.run()
    good = {i: v for i, v in enumerate(values) if i not in CORRUPT}
    written = [orjson.loads(line) for line in (tmp_path / "out.jsonl").read_bytes().splitlines()]
    # the standard alphabet with padding, whichever alphabet the input used
    assert {r["id"]: r["b"] for r in written} == {
        i: None if v is None else base64.b64encode(v).decode() for i, v in good.items()}
    # DuckDB reads the sink's output back to the same bytes
    back = duckdb.connect().sql(
        f"""SELECT id, from_base64(b) AS b FROM read_json('{tmp_path / 'out.jsonl'}', format = 'newline_delimited',
              columns = {{'id': 'BIGINT', 'b': 'VARCHAR'}})"""
    ).fetchall()
    assert dict(back) == good
    # and so does a JSON source: a round trip
    again = sqlstream.Session(base_dir=str(tmp_path), dead_letter_path=str(tmp_path / "dead2.jsonl"))
    again.execute(
        """CREATE SOURCE back (id BIGINT, b BYTEA) WITH (connector = 'file', path = 'out.jsonl', format = 'json');
           CREATE SINK out2 AS SELECT id, b FROM back WITH (connector = 'file', path = 'out2.parquet', format = 'parquet');"""
    )
    assert again.run().dead_letters == {}
    assert {r["id"]: r["b"] for r in pq.read_table(tmp_path / "out2.parquet").to_pylist()} == good


def test_parquet_bytea_in_and_out_and_into_json(tmp_path, values):
    table = pa.table({"id": pa.array(range(ROWS), pa.int64()), "b": pa.array(values, pa.binary())})
    pq.write_table(table, tmp_path / "in.parquet")
    session = sqlstream.Session(base_dir=str(tmp_path), dead_letter_path=str(tmp_path / "dead.jsonl"))
    session.execute(
        """SET file_batch_size = 64;
           CREATE SOURCE src (id BIGINT, b BYTEA) WITH (connector = 'file', path = 'in.parquet', format = 'parquet');
           CREATE SINK p AS SELECT id, b FROM src WITH (connector = 'file', path = 'out.parquet', format = 'parquet');
           CREATE SINK j AS SELECT id, b FROM src WITH (connector = 'file', path = 'out.jsonl', format = 'json');"""
    )
    assert session.run().dead_letters == {}
    out = pq.read_table(tmp_path / "out.parquet")
    assert out.schema.field("b").type == pa.binary()
    assert sorted(out.to_pylist(), key=lambda r: r["id"]) == table.to_pylist()
    written = {r["id"]: r["b"] for r in map(orjson.loads, (tmp_path / "out.jsonl").read_bytes().splitlines())}
    assert written == {i: None if v is None else base64.b64encode(v).decode() for i, v in enumerate(values)}


def test_messages_decode_base64_with_the_same_rule(values):
    """Message sources (NATS, MQTT, HTTP bodies) decode through PayloadDecoder: one
    record per message, a bad one a dead letter at its message's position."""
    decoder = PayloadDecoder(pa.schema([("id", pa.int64()), ("b", pa.binary())]), "msgs", "json")
    payloads = [b'{"id": 1, "b": "aGk="}', b'{"id": 2, "b": "aGk"}', b'{"id": 3,\n "b": "_-8="}',
                b'{"id": 4, "b": "!!!!"}', b'{"id": 5, "b": null}']
    table, rows, dead = decoder.decode(payloads, lambda i: f"sensors#{i + 1}")
    assert table.to_pylist() == [{"id": 1, "b": b"hi"}, {"id": 3, "b": b"\xff\xef"}, {"id": 5, "b": None}]
    assert rows.tolist() == [0, 2, 4]
    assert [(d.reason, d.position, d.raw) for d in dead] == [
        ("type", "sensors#2", '{"id": 2, "b": "aGk"}'), ("type", "sensors#4", '{"id": 4, "b": "!!!!"}')]
    assert dead[1].detail == "column 'b': invalid base64 '!!!!': '!' at character 1 is not in the base64 alphabet"
