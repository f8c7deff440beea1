"""Small clean JSON blocks read by orjson decode exactly as through pyarrow.json.

Random blocks of records, mostly clean with one perturbation or another (a key in
another case or twice, a nested or extra key, a value of another type, ``-0``, a big
integer, an escape, a blank line, NULL in a NOT NULL column, bad base64, the decoder
fuzzer's records) are decoded by a :class:`JsonDecoder` with the clean path and by
one without it: tables (schemas included), row records and dead letters must be
equal. Every block the clean path refuses is decoded by the full path, so this also
checks the clean path refuses what it must.
"""

from __future__ import annotations

import random

import pyarrow as pa
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from sqlstream.connectors.decode import JsonDecoder
from sqlstream.connectors.decode.json_clean import CleanJsonReader
from tests.generators.fuzz_records import ARROW_SCHEMA, json_record

SCHEMA = pa.schema([
    pa.field("id", pa.int64(), nullable=False), pa.field("small", pa.int16()), pa.field("v", pa.float64()),
    pa.field("ok", pa.bool_()), pa.field("name", pa.string()), pa.field("blob", pa.binary()),
    pa.field("ts", pa.timestamp("us")), pa.field("Mixed", pa.float64()),
])

_VALUES = {
    "id": ["1", "-7", "9223372036854775807", "9223372036854775808", "1.0", "1e2", "true", '"5"', "null", "-0"],
    "small": ["3", "32767", "-5", "32768", "-32769", "2.5", "null"],
    "v": ["0.1", "1", "2.5e-3", "-0.0", "-0", "123456789012345678", "9007199254740993", "1e308", "1e400", '"x"',
          "false", "null", "[1]", '{"a":1}', "NaN"],
    "ok": ["true", "false", "null", "1", '"true"'],
    "name": ['"a"', '""', '"id"', '"x\\"y"', '"\\u00e9"', '"é"', "7", "null", '"a:b"', '": x"'],
    "blob": ['"aGk="', '""', "null", '"not base64!"', "3"],
    "ts": ['"2024-01-01T00:00:00"', '"2024-01-01 10:00:00.5"', "null", '"2024-01-01T00:00:00Z"', '"nope"', "5"],
    "Mixed": ["1", "2.5", "null"],
}


@st.composite
def records(draw) -> bytes:
    parts = []
    for field in SCHEMA:
        if draw(st.integers(0, 29)) == 0:
            continue  # missing
        key = field.name
        spelling = draw(st.integers(0, 59))
        if spelling == 0:
            key = key.upper()
        elif spelling == 1:
            key = key.lower()
        values = _VALUES[field.name]
        value = draw(st.sampled_from(values if draw(st.integers(0, 29)) == 0 else values[:3]))
        colon = draw(st.sampled_from([":", ":", " : ", ":\t"]))
        parts.append(f'"{key}"{colon}{value}')
        if draw(st.integers(0, 59)) == 0:
            parts.append(f'"{key}":{value}')  # twice
    if draw(st.integers(0, 19)) == 0:
        parts.append(draw(st.sampled_from(['"extra":1', '"nest":{"id":2}', '"arr":[1,2]', '"extra":"s"'])))
    draw(st.randoms()).shuffle(parts)
    line = "{" + ",".join(parts) + "}"
    if draw(st.integers(0, 39)) == 0:
        line = draw(st.sampled_from(["", "  ", "[1]", "null", line + line, line + "\r", "{", " " + line]))
    return line.encode()


def _rows(table: pa.Table) -> list:
    return [[repr(v) if isinstance(v, float) else v for v in c.to_pylist()] for c in table.columns]  # NaN, -0.0


def _letters(decoded) -> list:
    return [(d.reason, d.detail, d.raw, d.position) for d in decoded.dead]


def _both(schema: pa.Schema, data: bytes) -> bool:
    """Decode ``data`` both ways and compare; True when the clean path read it."""
    clean = JsonDecoder(schema, "src")
    full = JsonDecoder(schema, "src")
    full._clean = None  # the decoder without its clean path
    position = str
    got, expected = clean.decode_block(data, position), full.decode_block(data, position)
    assert got.table.schema.equals(expected.table.schema, check_metadata=True), data
    assert _rows(got.table) == _rows(expected.table), data
    assert got.records.tolist() == expected.records.tolist(), data
    assert got.rejected.tolist() == expected.rejected.tolist(), data
    assert _letters(got) == _letters(expected), data
    return clean._decode_clean(data) is not None


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.lists(records(), min_size=1, max_size=6))
def test_random_blocks_decode_as_the_full_decoder_does(lines):
    taken = _both(SCHEMA, b"\n".join(lines))
    event(f"clean path: {taken}")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.randoms(use_true_random=False), st.integers(1, 10), st.sampled_from([0.0, 0.05, 0.35]))
def test_fuzzer_records_decode_as_the_full_decoder_does(rng, n, bad_share):
    taken = _both(ARROW_SCHEMA, b"\n".join(json_record(rng, bad_share=bad_share).raw for _ in range(n)))
    event(f"clean path: {taken}")


def test_clean_blocks_take_the_clean_path():
    rng = random.Random(3)
    lines = [f'{{"id":{i},"small":{i % 7},"v":{rng.random()!r},"ok":true,"name":"n{i}","blob":"aGk=",'
             f'"ts":"2024-01-01T00:00:0{i % 10}","Mixed":{i}}}'.encode() for i in range(12)]
    assert _both(SCHEMA, b"\n".join(lines))
    assert _both(SCHEMA, b'{"id":1, "v": 2}')
    assert not _both(SCHEMA, b'{"id":1, "V": 2}')  # another spelling: the full decoder matches it
    assert not _both(SCHEMA, b'{"id":1, "v": -0}')
    assert not _both(SCHEMA, b'{"small":1}')  # NULL in the NOT NULL id: a dead letter


def test_only_flat_schemas_of_plain_types_read_clean():
    assert CleanJsonReader.applies(pa.schema([("a", pa.int64()), ("b", pa.string())]))
    assert not CleanJsonReader.applies(pa.schema([("a", pa.list_(pa.int64()))]))
    assert not CleanJsonReader.applies(pa.schema([("a", pa.float32())]))
    assert not CleanJsonReader.applies(pa.schema([("é", pa.int64())]))
