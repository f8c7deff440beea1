"""Random records with a known outcome, for the decoder fuzzers.

Every generated :class:`Record` is one line of a JSON-lines or CSV file (or one
NATS message payload) together with what the decoders must make of it: a row
(``outcome == "row"``, with the expected values), exactly one dead letter with
reason ``decode`` / ``type`` / ``null``, or nothing at all (``"skip"``: a blank
line is not a record). The cases follow the decoder semantics the project
decided (docs/pipelines-and-connectors.md, "Bad input and dead letters"): one non-blank line is one record; keys match
columns case-insensitively per record (the exact spelling wins); two other
spellings of one column, a key twice, two JSON values on a line or invalid UTF-8
are ``decode``; nesting of any depth is read, and ``NaN`` / ``Infinity`` as floats;
CSV NULL is only an empty unquoted field; ``TIMESTAMP`` takes no offset,
``TIMESTAMPTZ`` converts offsets to UTC.

Generators take a ``random.Random`` (or hypothesis' ``st.randoms()``), so the
unit fuzzers shrink and the end-to-end fuzz is seeded.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import pyarrow as pa

__all__ = [
    "SQL_COLUMNS", "ARROW_SCHEMA", "CSV_HEADER", "ORJSON_MAX_DEPTH", "Record", "json_record", "csv_record",
    "payload_record", "json_lines", "csv_lines", "payloads", "expected_raw", "normalize_row", "normalize_rows",
    "check_outcomes", "json_view", "split_quote_records", "random_records",
]

SQL_COLUMNS = "id BIGINT NOT NULL, name VARCHAR, v DOUBLE, ts TIMESTAMP, tz TIMESTAMPTZ"
ARROW_SCHEMA = pa.schema([
    pa.field("id", pa.int64(), nullable=False),
    pa.field("name", pa.string()),
    pa.field("v", pa.float64()),
    pa.field("ts", pa.timestamp("us")),
    pa.field("tz", pa.timestamp("us", tz="UTC")),
])
NAMES = ARROW_SCHEMA.names
CSV_HEADER = ",".join(NAMES)
ORJSON_MAX_DEPTH = 1024  # orjson rejects deeper documents ("depth limit exceeded")

INVALID_UTF8 = [b"\xff", b"\xfe", b"\xc3\x28", b"\xa0\xa1", b"\xe2\x28\xa1", b"\xed\xa0\x80", b"\xc0\xaf",
                b"\xf4\x90\x80\x80", b"\xf0\x28\x8c\xbc", b"\x80"]

TEXTS = ["", " ", "plain", "NA", "null", "N/A", "nan", "NaN", "NULL", "None", "-", "héllo wörld", "✓ 𝄞 漢字",
         'say "hi"', "a,b", "back\\slash", "tab\there", "line\nbreak", "nul\x00byte", "\u2028sep", "  padded  ",
         "{\"not\": \"parsed\"}", "0x10", "1e5", "\ufeffbom"]


@dataclass(frozen=True)
class Record:
    """One record (a line without its terminator, or a message payload) and its fate."""

    raw: bytes
    outcome: str  # row | decode | type | null | skip
    case: str  # which generator case made it (for failure messages)
    row: dict | None = field(default=None, compare=False)

    def __repr__(self) -> str:
        return f"Record({self.raw[:120]!r}{'...' if len(self.raw) > 120 else ''}, {self.outcome!r}, {self.case!r})"

    def describe(self) -> str:
        return f"{self.case} → {self.outcome}: {self.raw[:200]!r}"


def expected_raw(raw: bytes) -> str:
    """A dead letter's ``raw`` for a record read as ``raw`` (invalid UTF-8 as \\xNN escapes)."""
    return raw.decode("utf-8", "backslashreplace")


# -- values -----------------------------------------------------------------------------------


def _int(rng) -> int:
    return rng.choice([0, 1, -1, 42, 2**31, -(2**31) - 1, 2**53 + 1, 2**63 - 1, -(2**63), rng.randint(-10**9, 10**9),
                       rng.randint(-(2**63), 2**63 - 1)])


def _text(rng, *, csv: bool = False) -> str:
    if rng.random() < 0.6:
        text = rng.choice(TEXTS)
    else:
        alphabet = "abcXYZ019 _-.,;:'\"\\/{}[]éß€✓𝄞\t\u00a0\u2029"
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12)))
    if csv:
        text = text.replace("\n", " ").replace("\r", " ")  # a raw newline splits a CSV line (see "split_quote")
    return text


def _float(rng) -> float:
    return rng.choice([0.0, -0.0, 1.5, -2.25, 1e-300, 1.7976931348623157e308, 5e-324, 3.0,
                       rng.uniform(-1e6, 1e6), rng.uniform(-1, 1) * 10 ** rng.randint(-20, 20)])


def _naive_ts(rng) -> tuple[str, datetime]:
    """An ISO timestamp without offset, in one of the spellings every reader takes."""
    year = rng.choice([1, 1900, 1970, 2000, 2024, 2038, 9999, rng.randint(1971, 2100)])
    month = rng.randint(1, 12)
    day = rng.choice([1, 28, 29 if year % 4 == 0 and (year % 100 != 0 or year % 400 == 0) else 28,
                      rng.randint(1, 28)])
    if month == 2 and day == 29 and not (year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)):
        day = 28
    value = datetime(year, month, day, rng.randint(0, 23), rng.randint(0, 59), rng.randint(0, 59))
    digits = rng.choice([0, 0, 1, 3, 6])
    fraction = ""
    if digits:
        fraction_value = rng.randint(0, 10**digits - 1)
        fraction = "." + str(fraction_value).rjust(digits, "0")
        value = value.replace(microsecond=fraction_value * 10 ** (6 - digits))
    text = f"{value.year:04d}-{value.month:02d}-{value.day:02d}{rng.choice(['T', ' '])}{value:%H:%M:%S}{fraction}"
    return text, value


def _tz_ts(rng) -> tuple[str, datetime]:
    """A TIMESTAMPTZ value: an offset (or Z) converted to UTC, or no offset (read as UTC)."""
    text, value = _naive_ts(rng)
    if value.year < 1900 or value.year > 9000:
        return text, value.replace(tzinfo=timezone.utc)
    kind = rng.choice(["none", "Z", "offset"])
    if kind == "none":
        return text, value.replace(tzinfo=timezone.utc)
    if kind == "Z":
        return text + "Z", value.replace(tzinfo=timezone.utc)
    minutes = rng.choice([60, -60, 330, -570, 0, 14 * 60, -12 * 60])
    sign = "+" if minutes >= 0 else "-"
    offset = f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"
    return text + offset, (value - timedelta(minutes=minutes)).replace(tzinfo=timezone.utc)


def _good_values(rng) -> tuple[dict, dict]:
    """(values to write, expected row); a None value is written as null or left out."""
    row = {"id": _int(rng), "name": None, "v": None, "ts": None, "tz": None}
    written: dict = {"id": row["id"]}
    if rng.random() < 0.8:
        row["name"] = written["name"] = _text(rng)
    elif rng.random() < 0.5:
        written["name"] = None
    if rng.random() < 0.8:
        row["v"] = written["v"] = _float(rng)
    elif rng.random() < 0.5:
        written["v"] = None
    if rng.random() < 0.7:
        written["ts"], row["ts"] = _naive_ts(rng)
    if rng.random() < 0.7:
        written["tz"], row["tz"] = _tz_ts(rng)
    return written, row


def _spell(rng, key: str) -> str:
    return rng.choice([key, key, key.upper(), key.capitalize(), "".join(rng.choice([c, c.upper()]) for c in key)])


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth if depth % 2 else '{"a":' * depth + "1" + "}" * depth


# -- JSON lines -------------------------------------------------------------------------------


def _json_object(rng, written: dict, *, spell: bool = True, extra: bool = True) -> bytes:
    """``written`` as one JSON object: keys in any case and order, undeclared keys mixed in."""
    items = [(_spell(rng, k) if spell else k, json.dumps(v, ensure_ascii=rng.random() < 0.3)) for k, v in written.items()]
    if extra and rng.random() < 0.3:
        value = rng.choice(['{"id": 5, "deep": [1, {"x": null}]}', '"ignored"', "[1,2,3]", "null",
                            _nested(rng.choice([3, 50, 300, ORJSON_MAX_DEPTH + 76, 2000]))])
        items.append((rng.choice(["extra", "x_1", "idx", "names", "ID2"]), value))
    rng.shuffle(items)
    colon, comma = rng.choice([(":", ","), (": ", ", "), (" : ", " , ")])
    body = comma.join(json.dumps(k) + colon + v for k, v in items)
    pad = rng.choice(["", "", " ", "\t"])
    return (pad + "{" + body + "}" + rng.choice(["", "", " ", "\t "])).encode("utf-8")


def _bad_json_decode(rng, written: dict) -> tuple[str, bytes]:
    good = _json_object(rng, written).strip()
    case = rng.choice(["truncated", "not_object", "two_values", "garbage_after", "invalid_utf8", "invalid_utf8_key",
                       "raw_control", "duplicate_key", "case_duplicate", "trailing_comma", "single_quotes",
                       "bare_word"])
    if case == "truncated":
        return case, good[: rng.randint(1, len(good) - 1)]
    if case == "not_object":
        return case, rng.choice([b"[1, 2, 3]", b"3", b'"text"', b"true", b"null", b"[]", b"[" + good + b"]", b"-0.5"])
    if case == "two_values":
        return case, good + rng.choice([b" ", b"", b"\t"]) + rng.choice([good, b"{}", b"1", b'{"id": 2}', b"[]"])
    if case == "garbage_after":
        return case, good + rng.choice([b" x", b",", b"}", b"]"])
    if case == "invalid_utf8":
        text = json.dumps(_text(rng)).encode()
        bad = text[:-1] + rng.choice(INVALID_UTF8) + b'"'
        return case, b'{"id": %d, "name": %s}' % (written["id"], bad)
    if case == "invalid_utf8_key":
        return case, b'{"id": %d, "x' % written["id"] + rng.choice(INVALID_UTF8) + b'": 1}'
    if case == "raw_control":
        return case, b'{"id": %d, "name": "a' % written["id"] + rng.choice([b"\x00", b"\x01", b"\x1f", b"\x0b"]) + b'b"}'
    if case == "duplicate_key":
        key = rng.choice(["id", "name", "v"])
        value = {"id": b"7", "name": b'"dup"', "v": b"1.5"}[key]
        return case, b'{"%s": %s, "id": %d, "%s": %s}' % (key.encode(), value, written["id"], key.encode(), value)
    if case == "case_duplicate":  # two spellings, neither the exact one (the exact one would win)
        key = rng.choice(["id", "name", "ts"])
        value = {"id": b"7", "name": b'"dup"', "ts": b'"2024-01-01T00:00:00"'}[key]
        first, second = rng.choice([(key.upper(), key.capitalize()), (key.capitalize(), key.upper())])
        body = b'"%s": %s, "%s": %s' % (first.encode(), value, second.encode(), value)
        if key != "id":
            body = b'"id": %d, ' % written["id"] + body
        return case, b"{" + body + b"}"
    if case == "trailing_comma":
        return case, good[:-1] + b",}"
    if case == "single_quotes":
        return case, b"{'id': %d}" % written["id"]
    return case, rng.choice([b"not json", b"id=1", b"{id: 1}", b"\x00", b"{", b"}"])


def _bad_json_type(rng, written: dict) -> tuple[str, bytes]:
    bad = dict(written)
    column = rng.choice(["id", "v", "ts", "tz"])
    if column == "id":
        bad["id"] = rng.choice(["abc", "12", 1.5, 2**63, -(2**63) - 1, 10**30, True, [1], {"a": 1}])
    elif column == "v":
        bad["v"] = rng.choice(["high", "1.5", True, [1.0], {"x": 1}])
    elif column == "ts":
        bad["ts"] = rng.choice(["yesterday", "2024-02-30T00:00:00", "2024-13-01T00:00:00", "2023-02-29 12:00:00",
                                "2024-01-01T00:00:00Z", "2024-01-01T00:00:00+02:00", "2024-06-01 10:00:00-05:30",
                                "2024-01-01T25:00:00", "01/02/2024"])
    else:
        bad["tz"] = rng.choice(["yesterday", "2024-02-30T00:00:00+00:00", "2024-01-01T00:00:00+25:00", "tomorrow Z"])
    return f"type_{column}", _json_object(rng, bad)


def json_record(rng, *, bad_share: float = 0.35, huge: bool = False) -> Record:
    """One random JSON-lines record (good or bad) with its expected outcome."""
    written, row = _good_values(rng)
    roll = rng.random()
    if huge:
        written["name"] = row["name"] = "h" * rng.choice([(1 << 20) + 17, 3 << 20])
        return Record(_json_object(rng, written), "row", "huge", row)
    if roll < 0.03:
        return Record(rng.choice([b"", b" ", b"\t", b"  \t "]), "skip", "blank")
    if roll >= bad_share and rng.random() < 0.08:
        return _exact_spelling_wins(rng, written, row)
    if roll >= bad_share and rng.random() < 0.03:  # not JSON, but read as the floats they name (decided)
        literal = rng.choice(["NaN", "Infinity", "-Infinity"])
        row["v"] = float(literal.lower().replace("infinity", "inf"))
        body = _json_object(rng, {k: v for k, v in written.items() if k != "v"}, extra=False).strip()[1:-1]
        raw = b"{" + (body.encode() if isinstance(body, str) else body) + (b", " if body else b"") + b'"v": ' + literal.encode() + b"}"
        return Record(raw, "row", "nan_literal", row)
    if roll >= bad_share:
        return Record(_json_object(rng, written), "row", "good", row)
    kind = rng.random()
    if kind < 0.6:
        case, raw = _bad_json_decode(rng, written)
        return Record(raw, "decode", case)
    if kind < 0.85:
        case, raw = _bad_json_type(rng, written)
        return Record(raw, "type", case)
    bad = dict(written)
    if rng.random() < 0.5:
        bad["id"] = None
    else:
        del bad["id"]
    return Record(_json_object(rng, bad), "null", "null_id")


def _exact_spelling_wins(rng, written: dict, row: dict) -> Record:
    """A key spelled exactly like its column next to another spelling of it: the exact one wins."""
    key = rng.choice(["id", "name", "v"])
    if written.get(key) is None:
        written[key] = row[key] = {"id": 1, "name": "exact", "v": 2.5}[key]
    variant = {"id": rng.choice(["ID", "Id", "iD"]), "name": rng.choice(["NAME", "Name"]), "v": "V"}[key]
    other = json.dumps({"id": 7, "name": "variant", "v": 0.25}[key]).encode()
    body = _json_object(rng, {k: v for k, v in written.items() if k != key}, extra=False).strip()[1:-1]
    items = [b'"%s": %s' % (key.encode(), json.dumps(written[key]).encode()), b'"%s": %s' % (variant.encode(), other)]
    rng.shuffle(items)
    if body:
        items.insert(rng.randrange(len(items) + 1), body)
    return Record(b"{" + b", ".join(items) + b"}", "row", "exact_spelling_wins", row)


def json_lines(records: list[Record], rng, *, crlf: bool = True) -> bytes:
    """The file holding ``records``, one per line (\\n or \\r\\n), the last maybe unterminated."""
    out = []
    for i, record in enumerate(records):
        last = i == len(records) - 1
        out.append(record.raw + (b"" if last and rng.random() < 0.5 else (b"\r\n" if crlf and rng.random() < 0.2 else b"\n")))
    return b"".join(out)


# -- CSV ----------------------------------------------------------------------------------------


def _csv_text(rng, value: str | None) -> str:
    if value is None:
        return ""
    if value == "" or any(c in value for c in ',"\n\r') or value != value.strip() or rng.random() < 0.4:
        return '"' + value.replace('"', '""') + '"'
    return value


def _csv_float(rng, value: float | None) -> tuple[str, float | None]:
    if value is None:
        return "", None
    if rng.random() < 0.15:
        text = rng.choice(["NaN", "nan", "inf", "-inf"])
        return text, float(text)
    return repr(value), value


def csv_record(rng, *, bad_share: float = 0.35) -> Record:
    """One random CSV line for the columns of ``CSV_HEADER`` with its expected outcome."""
    written, row = _good_values(rng)
    row["name"] = written.get("name")
    if row["name"] is not None:
        row["name"] = written["name"] = row["name"].replace("\n", " ").replace("\r", " ").replace("\u2028", " ")
    v_text, row["v"] = _csv_float(rng, row["v"])
    fields = [str(row["id"]), _csv_text(rng, row["name"]), v_text, written.get("ts", ""), written.get("tz", "")]
    roll = rng.random()
    if roll < 0.02:
        return Record(b"", "skip", "empty_line")
    if roll >= bad_share:
        return Record(",".join(fields).encode(), "row", "good", row)
    case = rng.choice(["extra_field", "missing_field", "open_quote", "invalid_utf8", "invalid_utf8_quoted",
                       "hex_int", "text_int", "float_int", "big_int", "text_double", "ts_offset", "ts_z", "bad_date",
                       "tz_text", "null_id"])
    if case == "extra_field":
        return Record((",".join(fields) + rng.choice([",", ",x", ',""'])).encode(), "decode", case)
    if case == "missing_field":
        return Record(",".join(fields[: rng.randint(1, 4)]).encode(), "decode", case)
    if case == "open_quote":
        fields[1] = '"' + (row["name"] or "x").replace('"', '""')
        return Record(",".join(fields).encode(), "decode", case)
    if case in ("invalid_utf8", "invalid_utf8_quoted"):
        bad = rng.choice(INVALID_UTF8)
        text = b"ab" + bad + b"c"
        fields_b = [f.encode() for f in fields]
        fields_b[1] = b'"' + text + b'"' if case.endswith("quoted") else text
        return Record(b",".join(fields_b), "decode", case)
    if case == "null_id":
        fields[0] = ""
        return Record(",".join(fields).encode(), "null", case)
    column, value = {
        "hex_int": (0, rng.choice(["0x10", "0X1F", "0b1", "1_000"])),
        "text_int": (0, rng.choice(["abc", "1 2", "NaN", "NA", "null"])),
        "float_int": (0, rng.choice(["1.5", "1e3", "2.0"])),
        "big_int": (0, rng.choice(["9223372036854775808", "-9223372036854775809", "99999999999999999999"])),
        "text_double": (2, rng.choice(["high", "1.2.3", "1x", "NA", "null"])),
        "ts_offset": (3, (written.get("ts") or "2024-01-01T00:00:00") + rng.choice(["+02:00", "-05:30", "+00:00"])),
        "ts_z": (3, (written.get("ts") or "2024-01-01T00:00:00") + "Z"),
        "bad_date": (3, rng.choice(["2024-02-30T00:00:00", "2023-02-29 00:00:00", "2024-13-01T00:00:00", "yesterday"])),
        "tz_text": (4, rng.choice(["yesterday", "2024-02-30T00:00:00Z", "2024-01-01T00:00:00+25:00"])),
    }[case]
    fields[column] = value
    return Record(",".join(fields).encode(), "type", case)


def split_quote_records(rng) -> list[Record]:
    """A quoted field with a raw newline: two physical lines, each a ``decode`` dead letter."""
    ident = rng.randint(0, 10**6)
    first = f'{ident},"two'.encode()
    second = b'lines",1.5,,'
    return [Record(first, "decode", "split_quote"), Record(second, "decode", "split_quote")]


def csv_lines(records: list[Record], rng, *, header: bool = True, crlf: bool = True) -> bytes:
    data = json_lines(records, rng, crlf=crlf)
    return (CSV_HEADER.encode() + b"\n" + data) if header else data


# -- NATS payloads ----------------------------------------------------------------------------


def payload_record(rng, *, bad_share: float = 0.35) -> Record:
    """One JSON message payload: one message is one record."""
    roll = rng.random()
    if roll < 0.05:
        return Record(rng.choice([b"", b" ", b"\n", b"\r\n", b" \t\n "]), "decode", "empty_payload")
    if roll < 0.12:
        written, row = _good_values(rng)
        pretty = json.dumps({_spell(rng, k): v for k, v in written.items()}, indent=rng.choice([1, 2, "\t"]))
        return Record(pretty.encode() + rng.choice([b"", b"\n", b"\r\n"]), "row", "pretty_printed", row)
    if roll < 0.17:
        written, _ = _good_values(rng)
        one = _json_object(rng, written).strip()
        return Record(one + rng.choice([b"\n", b"\r\n", b"\n\n"]) + one, "decode", "two_objects_two_lines")
    record = json_record(rng, bad_share=bad_share)
    if record.outcome == "skip":  # a blank payload is a message: say it is empty
        return Record(record.raw, "decode", "empty_payload")
    return record


def payloads(records: list[Record]) -> list[bytes]:
    return [r.raw for r in records]


# -- comparing --------------------------------------------------------------------------------


def normalize_value(value):
    if isinstance(value, float) and math.isnan(value):
        return "NaN"
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value.astimezone(timezone.utc).replace(tzinfo=None).isoformat() + "Z"
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def normalize_row(row: dict) -> tuple:
    return tuple(normalize_value(row.get(name)) for name in NAMES)


def normalize_rows(rows) -> list[tuple]:
    return [normalize_row(r) for r in rows]


def check_outcomes(records: list[Record], rows: list[dict], letters, position_of) -> None:
    """Each record became what it must: a row (in order, with its values) or exactly one
    dead letter with its reason, raw text and position. Fails listing the records that did not."""
    problems = []
    by_position: dict[str, list] = {}
    for letter in letters:
        by_position.setdefault(letter.position if hasattr(letter, "position") else letter["position"], []).append(letter)
    for index, record in enumerate(records):
        position = position_of(index)
        got = by_position.get(position, [])
        if record.outcome in ("decode", "type", "null"):
            if len(got) != 1:
                problems.append(f"{position}: {record.describe()}\n    got {len(got)} dead letters")
                continue
            letter = _letter(got[0])
            if (letter["reason"], letter["raw"]) != (record.outcome, expected_raw(record.raw)):
                problems.append(f"{position}: {record.describe()}\n    got ({letter['reason']!r}, raw "
                                f"{letter['raw'][:200]!r}): {letter['detail'][:200]}")
        elif got:
            letter = _letter(got[0])
            problems.append(f"{position}: {record.describe()}\n    got a dead letter ({letter['reason']}: "
                            f"{letter['detail'][:200]})")
    for position in sorted(set(by_position) - {position_of(i) for i in range(len(records))}):
        problems.append(f"a dead letter at an unknown position {position!r}: {_letter(by_position[position][0])}")
    expected_rows = [r.row for r in records if r.outcome == "row"]
    want, have = normalize_rows(expected_rows), normalize_rows(rows)
    if want != have and not problems:
        for i, (w, h) in enumerate(zip(want, have)):
            if w != h:
                record = [r for r in records if r.outcome == "row"][i]
                problems.append(f"row {i}: {record.describe()}\n    expected {w}\n    got      {h}")
                break
        else:
            problems.append(f"expected {len(want)} rows, got {len(have)}")
    assert not problems, f"{len(problems)} record(s) decoded wrongly:\n" + "\n".join(problems[:8])


def _letter(letter) -> dict:
    if isinstance(letter, dict):
        return letter
    return {"reason": letter.reason, "raw": letter.raw, "detail": letter.detail, "position": letter.position}


def json_view(rows: list[dict]) -> list[dict]:
    """Rows as a JSON sink writes them: NaN and infinities are not JSON, they become null."""
    return [{k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in r.items()} for r in rows]


def random_records(maker, seed: int, n: int, **options) -> list[Record]:
    rng = random.Random(seed)
    return [maker(rng, **options) for _ in range(n)]
