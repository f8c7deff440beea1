"""Property-based tests for the parsers: durations, interval literals, the SQL
front end (any text gives statements or a located SqlStreamError, never another
exception) and the JSON/CSV decoders (every good record decoded as a reference
parser reads it, every bad one dead-lettered at its line, whatever the blocks)."""

from __future__ import annotations

import json

import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sqlstream.connectors.decode import CsvDecoder, JsonDecoder
from sqlstream.durations import UNIT_US, format_duration_us, parse_duration_us
from sqlstream.errors import SqlStreamError
from sqlstream.sql.statements import CreateSource, SourceText, parse_script

# -- durations and intervals ---------------------------------------------------------------


@given(st.integers(min_value=0, max_value=10**12))
def test_a_formatted_duration_parses_back(us):
    assert parse_duration_us(format_duration_us(us)) == us


@given(st.integers(min_value=0, max_value=10**6), st.sampled_from(sorted(UNIT_US)), st.sampled_from(["", " "]))
def test_duration_number_and_unit(n, unit, space):
    assert parse_duration_us(f"{n}{space}{unit}") == n * UNIT_US[unit]


INTERVAL_UNITS = {"MILLISECOND": 1_000, "SECOND": 1_000_000, "MINUTE": 60_000_000, "HOUR": 3_600_000_000,
                  "DAY": 86_400_000_000}


@given(st.integers(min_value=0, max_value=10**5), st.sampled_from(sorted(INTERVAL_UNITS)), st.booleans())
def test_watermark_interval_literals(n, unit, plural):
    word = unit + ("S" if plural else "")
    sql = f"CREATE SOURCE s (ts TIMESTAMP, WATERMARK FOR ts AS ts - INTERVAL '{n}' {word}) WITH (connector = 'memory')"
    (statement,) = parse_script(SourceText(sql))
    assert isinstance(statement, CreateSource)
    assert statement.watermark.delay_us == n * INTERVAL_UNITS[unit]


# -- the SQL front end -----------------------------------------------------------------------

FRAGMENTS = [
    "SELECT", "FROM", "WHERE", "GROUP BY", "HAVING", "CREATE", "SOURCE", "SINK", "VIEW", "TABLE", "AS", "WITH",
    "(", ")", ",", ";", "*", "=", "'x'", "''", "1", "-2.5", "s", "ts", "k", "v", "count(*)", "sum(v)",
    "TUMBLE(s, ts, INTERVAL '1' SECOND)", "HOP", "SESSION", "DESCRIPTOR(ts)", "TABLE(", "EMIT", "EVERY",
    "ON WINDOW CLOSE", "INTERVAL '5' SECOND", "WATERMARK FOR ts AS ts -", "connector = 'generator'",
    "format = 'json'", "INSERT INTO", "VALUES", "SET", "SHOW", "SOURCES", "DESCRIBE", "EXPLAIN", "DROP",
    "FUNCTION", "MODEL", "JOIN", "LEFT", "BETWEEN", "AND", "OR", "NOT", "NULL", "CASE WHEN", "THEN", "ELSE",
    "END", "CAST(", "BIGINT", "FLOAT[4]", "STRUCT<a INT>", "predict(features)", ".", "[1]", "--", "/*", "*/",
    "\n", "\"Quoted\"", "$", "::", "window_start", "window_end", "ROW_NUMBER() OVER (", "PARTITION BY",
    "ORDER BY", "LIMIT", "UNION ALL", "STOP QUERY", "IF NOT EXISTS", "OR REPLACE",
]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.lists(st.sampled_from(FRAGMENTS), max_size=25).map(" ".join), st.text(max_size=80)))
def test_any_text_parses_or_fails_with_a_located_error(text):
    try:
        list(parse_script(SourceText(text, "fuzz.sql")))
    except SqlStreamError as error:
        location = error.location
        if location is not None:
            assert 1 <= location.line <= text.count("\n") + 1
            assert str(error).startswith(f"fuzz.sql:{location.line}:{location.col}: error: ")


# -- decoders --------------------------------------------------------------------------------

SCHEMA = pa.schema([pa.field("id", pa.int64(), nullable=False), pa.field("name", pa.string()), pa.field("v", pa.float64())])

names = st.one_of(st.none(), st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\n\r\x00"),
                                     max_size=12))
records = st.lists(
    st.tuples(
        st.integers(min_value=-(2**63), max_value=2**63 - 1),
        names,
        st.one_of(st.none(), st.floats(allow_nan=False, allow_infinity=False)),
        st.booleans(),  # corrupt this record
    ),
    min_size=1,
    max_size=40,
)


def _decode_in_blocks(decoder, lines: list[bytes], cuts: list[int]):
    """Decode ``lines`` in blocks cut at ``cuts``; positions are 1-based line numbers."""
    bounds = sorted({0, len(lines), *(c % (len(lines) + 1) for c in cuts)})
    tables, dead = [], []
    for start, end in zip(bounds, bounds[1:]):
        table, letters = decoder.decode(b"\n".join(lines[start:end]), lambda i, start=start: str(start + i + 1))
        tables.append(table)
        dead.extend(letters)
    return pa.concat_tables(tables).to_pylist(), dead


@settings(max_examples=150, deadline=None)
@given(records, st.lists(st.integers(min_value=0, max_value=40), max_size=4))
def test_json_decoder_keeps_every_good_record_and_letters_every_bad_one(rows, cuts):
    lines, expected, bad_lines = [], [], set()
    for i, (id_, name, v, corrupt) in enumerate(rows):
        text = json.dumps({"id": id_, "name": name, "v": v}, ensure_ascii=False)
        if corrupt:
            text = text[:-1]  # an object without its closing brace
            bad_lines.add(str(i + 1))
        else:
            expected.append({"id": id_, "name": name, "v": v})
        lines.append(text.encode("utf-8"))
    decoded, dead = _decode_in_blocks(JsonDecoder(SCHEMA, "src"), lines, cuts)
    assert decoded == expected
    assert {d.position for d in dead} == bad_lines and len(dead) == len(bad_lines)
    assert {d.reason for d in dead} <= {"decode"}


def _csv_field(value) -> str:
    if value is None:
        return ""  # unquoted empty: NULL
    if isinstance(value, str):
        return '"' + value.replace('"', '""') + '"'
    return repr(value)


@settings(max_examples=150, deadline=None)
@given(records, st.lists(st.integers(min_value=0, max_value=40), max_size=4))
def test_csv_decoder_keeps_every_good_record_and_letters_every_bad_one(rows, cuts):
    lines, expected, bad_lines = [], [], set()
    for i, (id_, name, v, corrupt) in enumerate(rows):
        fields = [str(id_), _csv_field(name), _csv_field(v)]
        if corrupt:
            fields.append("extra")  # one field too many
            bad_lines.add(str(i + 1))
        else:
            expected.append({"id": id_, "name": name, "v": v})
        lines.append(",".join(fields).encode("utf-8"))
    decoded, dead = _decode_in_blocks(CsvDecoder(SCHEMA, "src"), lines, cuts)
    assert decoded == expected
    assert {d.position for d in dead} == bad_lines and len(dead) == len(bad_lines)
