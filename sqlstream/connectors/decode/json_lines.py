"""JSON lines: each line one object; keys matched to columns record by record.

A ``BYTEA`` column is read from base64 text (:mod:`~sqlstream.connectors.base64_columns`,
the JSON sink writes it so): a value that is not base64 makes its record a ``type``
dead letter.
"""

from __future__ import annotations

import io
import json
import re

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pjson

from sqlstream.connectors.base64_columns import base64_problem, from_base64
from sqlstream.connectors.decode.block import (
    JSON_CHANGED,
    Decoded,
    Decoder,
    Lines,
    Position,
    RecordCount,
    Rejects,
    arrow_message,
    join_ranges,
)
from sqlstream.connectors.decode.conform import CONVERT_ERRORS, READ_ERRORS
from sqlstream.connectors.decode.json_clean import CleanJsonReader
from sqlstream.failure_isolation import isolate_failures

__all__ = ["JsonDecoder"]

_JSON_TWICE = re.compile(r"Column\(/([^)]*)\) was specified twice")

class _Object(dict):
    """A parsed JSON object that remembers which keys it held twice."""

    twice: frozenset = frozenset()


def _object(pairs: list) -> _Object:
    obj = _Object(pairs)
    if len(obj) < len(pairs):
        seen: set = set()
        obj.twice = frozenset(k for k, _ in pairs if k in seen or seen.add(k))
    return obj


def _no_constant(text: str):
    raise ValueError(f"{text} is not JSON")


def _parse_object(line: bytes) -> _Object:
    """One record, parsed as strictly as pyarrow reads it (no NaN), keeping duplicates in view."""
    return json.loads(line, object_pairs_hook=_object, parse_constant=_no_constant)


class JsonDecoder(Decoder):
    """JSON lines: each line one object. Keys match column names case-insensitively,
    decided record by record: a key spelled exactly like the column wins; otherwise
    the one key that matches it in another case is used; two such keys (``"Id"`` and
    ``"ID"``) make the record a ``decode`` dead letter.

    The fast path reads a block with each column's exact name and the spelling the
    block's first record uses (``"Temp"`` for ``temp``). Only rows that could hold a
    third spelling are looked at one by one; what they hold is read again from just
    their declared keys, never re-serializing the record."""

    blank = b" \t\r"

    def __init__(self, schema: pa.Schema, source_name: str, timestamp_format: str = "iso"):
        super().__init__(schema, source_name, timestamp_format)
        # BYTEA travels as base64 text: read as text, decoded after the read
        self._base64 = [f.name for f in self.read_schema if pa.types.is_binary(f.type) or pa.types.is_large_binary(f.type)]
        self.read_schema = pa.schema([f.with_type(pa.string()) if f.name in self._base64 else f for f in self.read_schema])
        self._lower = {f.name.lower(): f.name for f in self.schema}
        self._spelling: dict[str, str] = {}  # declared name → the block's other spelling
        self._exact_options = self._parse_options({})
        self._options = self._exact_options
        # small clean blocks (a micro-batch of a few messages) skip pyarrow.json
        self._clean = CleanJsonReader(self.read_schema) if CleanJsonReader.applies(self.read_schema) else None
        # what conform_table gives when the read types are the declared ones (no conversion)
        self._conformed = pa.schema([f.with_nullable(True) for f in self.schema])
        self._read_as_declared = self.read_schema.types == self.schema.types and not self._base64

    def _parse_options(self, spelling: dict[str, str]) -> pjson.ParseOptions:
        fields = list(self.read_schema)
        fields += [pa.field(spelling[f.name], f.type) for f in self.read_schema if f.name in spelling]
        return pjson.ParseOptions(explicit_schema=pa.schema(fields), unexpected_field_behavior="ignore")

    def _first_spelling(self, data: bytes) -> dict[str, str]:
        start = data.lstrip()
        end = start.find(b"\n")
        try:
            record = orjson.loads(start[: end if end >= 0 else len(start)])
        except orjson.JSONDecodeError:
            return {}
        if not isinstance(record, dict):
            return {}
        spelling = {}
        for key in record:
            declared = self._lower.get(key.lower())
            if declared is not None and key != declared:
                spelling[declared] = key
        return spelling

    def _screen(self, lines: Lines, rejects: Rejects) -> Lines:
        """A line that does not start with '{' is no object, and pyarrow must not see it:
        a bare ``null`` line crashes its reader (SIGSEGV, pyarrow 20-22)."""
        raw = np.frombuffer(lines.data, dtype=np.uint8)
        starts = lines.starts[lines.records]
        first = raw[starts] if len(starts) else raw[:0]
        suspects = lines.records[first != ord("{")]
        bad = {}
        for index in suspects:
            line = lines.line(index)
            if line.lstrip(self.blank)[:1] != b"{":
                bad[int(index)] = self._classify(line, RecordCount(0, 1))
        return self._drop(lines, rejects, bad) if bad else lines

    def decode_block(self, data: bytes, position: Position) -> Decoded:
        decoded = self._decode_clean(data) if self._clean is not None else None
        if decoded is not None:
            return decoded
        spelling = self._first_spelling(data)
        if spelling != self._spelling:
            self._spelling = spelling
            self._options = self._parse_options(spelling) if spelling else self._exact_options
        return super().decode_block(data, position)

    def _decode_clean(self, data: bytes) -> Decoded | None:
        """A small block that every record of makes a row (see ``json_clean.py``), or None."""
        columns = self._clean.read(data)
        if columns is None:
            return None
        if self._read_as_declared:
            return self._clean_rows(pa.Table.from_arrays(columns, schema=self._conformed))
        table = pa.Table.from_arrays(columns, schema=self.read_schema)
        for name in self._base64:
            values, bad_rows = from_base64(table.column(name).combine_chunks())
            if len(bad_rows):
                return None
            table = table.set_column(table.column_names.index(name), name, values)
        try:
            return self._clean_rows(self._conform(table))
        except CONVERT_ERRORS:
            return None

    def _clean_rows(self, table: pa.Table) -> Decoded | None:
        if any(table.column(name).null_count for name in self.not_null):
            return None
        return Decoded(table, np.arange(table.num_rows), [], np.zeros(0, dtype=np.int64))

    def _read(self, data: bytes, options: pjson.ParseOptions | None = None) -> pa.Table:
        options = options or self._options
        # 1 MiB blocks: pyarrow parses them on its threads (one huge block is one thread);
        # a record longer than that needs a block that holds it whole
        try:
            return self._read_blocks(data, 1 << 20, options)
        except pa.ArrowInvalid as error:
            if "straddl" not in str(error) or len(data) < 1 << 20:
                raise
            return self._read_blocks(data, len(data) + 1, options)

    def _read_blocks(self, data: bytes, block_size: int, options: pjson.ParseOptions) -> pa.Table:
        return pjson.read_json(
            io.BytesIO(data),
            # threads pay off from the second block on; a small micro-batch is parsed inline
            read_options=pjson.ReadOptions(use_threads=len(data) > block_size, block_size=block_size),
            parse_options=options,
        )

    def _as_one_line(self, record: bytes) -> tuple[bytes | None, str | None]:
        """A pretty-printed object (a message) as one line of its declared keys."""
        try:
            value = _parse_object(record)
        except (ValueError, RecursionError) as error:
            return None, f"malformed JSON: {error}"
        if not isinstance(value, dict):
            return None, f"expected a JSON object, got {type(value).__name__}"
        picked, problem = self._pick(value)
        if problem is None:
            try:
                return orjson.dumps(picked), None
            except (TypeError, orjson.JSONEncodeError) as error:
                problem = f"a declared value cannot be read: {error}"
        return None, problem

    def _empty_read(self) -> pa.Table:
        return self._options.explicit_schema.empty_table()  # the block's spellings as columns too

    # -- base64 ------------------------------------------------------------------------

    def _conform_records(self, table: pa.Table, records: np.ndarray, rejects: Rejects) -> tuple[pa.Table, np.ndarray]:
        if self._base64:
            table, records = self._from_base64(table, records, rejects)
        return super()._conform_records(table, records, rejects)

    def _from_base64(self, table: pa.Table, records: np.ndarray, rejects: Rejects) -> tuple[pa.Table, np.ndarray]:
        """The base64 columns as bytes; a record whose text is not base64 is a dead letter."""
        bad = np.zeros(table.num_rows, dtype=bool)
        for name in self._base64:
            text = table.column(name).combine_chunks()
            values, rows = from_base64(text)
            table = table.set_column(table.column_names.index(name), name, values)
            for row in rows[~bad[rows]]:  # (the first column that fails names the record)
                value = text[int(row)].as_py()
                shown = value if len(value) <= 40 else value[:37] + "..."
                rejects.add(records[row], "type", f"column '{name}': invalid base64 {shown!r}: {base64_problem(value)}")
            bad[rows] = True
        if not bad.any():
            return table, records
        return table.filter(pa.array(~bad)), records[~bad]

    # -- key spellings -----------------------------------------------------------------

    def _resolve(self, table: pa.Table, records: np.ndarray, lines: Lines, rejects: Rejects):
        """Fold the block's other spelling into each column, then look one by one at the
        rows where a spelling the read did not ask for could be hiding."""
        suspects = np.zeros(table.num_rows, dtype=bool)
        lowered = None
        columns = []
        for name in self.read_schema.names:
            exact = table.column(name)
            other = self._spelling.get(name)
            value = exact if other is None else pc.coalesce(exact, table.column(other))
            columns.append(value)
            # rows whose value did not come from the exact spelling could hold a third one
            if not exact.null_count:
                continue
            open_rows = pc.is_null(exact)
            key = b'"' + name.lower().encode() + b'"'
            if lowered is None:
                lowered = lines.data.lower()
            exact_key, other_key = f'"{name}"', f'"{other}"' if other is not None else None
            found = lowered.count(key)
            if other is None and found == lines.data.count(exact_key.encode()):
                continue  # no other spelling anywhere in the block
            if other is not None and found == lines.data.count(other_key.encode()):
                continue  # the block's other spelling is the only one in it
            rows = np.flatnonzero(open_rows.to_numpy(zero_copy_only=False))
            texts = lines.as_array(records[rows])
            found_rows = pc.count_substring(texts, key.decode(), ignore_case=True)
            known = pc.count_substring(texts, exact_key)
            if other is not None:
                # a value read from the other spelling stands only if no other key (the
                # exact one with a null either) names the column in that record
                from_other = pc.count_substring(texts, other_key)
                valued = pc.is_valid(table.column(other).take(pa.array(rows)))
                known = pc.if_else(valued, from_other, pc.add(known, from_other))
            suspects[rows[pc.greater(found_rows, known).to_numpy(zero_copy_only=False)]] = True
        table = pa.table(columns, schema=self.read_schema)
        if not suspects.any():
            return table, records
        return self._reread(table, records, np.flatnonzero(suspects), lines, rejects)

    def _reread(self, table: pa.Table, records: np.ndarray, rows: np.ndarray, lines: Lines, rejects: Rejects):
        """Rows whose keys need matching one by one: each record's declared values are
        picked by the rule above and read again; the rows are replaced in place."""
        drop, redo, redo_rows, deep, deep_rows = [], [], [], [], []
        for row in rows:
            line = lines.line(records[row])
            try:
                picked, problem = self._pick(_parse_object(line))
                if problem is None:
                    redo.append(orjson.dumps(picked))
                    redo_rows.append(row)
                    continue
                problem = ("decode", problem)
            except (ValueError, RecursionError, orjson.JSONEncodeError, TypeError):
                # deeper than Python's parser goes, or a number orjson cannot write again:
                # pyarrow reads the record's spellings
                replacement, problem = self._read_spellings(line)
                if problem is None:
                    deep.append(replacement)
                    deep_rows.append(row)
                    continue
            rejects.add(records[row], *problem)
            drop.append(row)
        replacement, bad = self._read_picked(redo)
        failed = {i for i, _ in bad}
        for i, error in bad:
            rejects.add(records[redo_rows[i]], *self._classify(lines.line(records[redo_rows[i]]), error))
            drop.append(redo_rows[i])
        replaced = [r for i, r in enumerate(redo_rows) if i not in failed] + deep_rows
        order = np.arange(table.num_rows)
        order[replaced] = table.num_rows + np.arange(len(replaced))
        keep = np.ones(table.num_rows, dtype=bool)
        keep[drop] = False
        merged = pa.concat_tables([table, replacement, *deep]).take(pa.array(order[keep]))
        return merged, records[keep]

    def _read_spellings(self, line: bytes) -> tuple[pa.Table | None, tuple[str, str] | None]:
        """One record too deep for Python's JSON parser (or with a number orjson cannot
        write again): read every spelling of a declared key that
        occurs in it as its own column (pyarrow reads any depth, top-level keys only);
        the exact spelling wins, else the one other spelling with a value."""
        pattern = b'"(' + b"|".join(re.escape(n.encode()) for n in self._lower) + b')"'
        spellings = {m.group(1).decode() for m in re.finditer(pattern, line, re.IGNORECASE)}
        types = {f.name: f.type for f in self.read_schema}
        fields = [pa.field(k, types[self._lower[k.lower()]]) for k in sorted(spellings)]
        options = pjson.ParseOptions(explicit_schema=pa.schema(fields), unexpected_field_behavior="ignore")
        try:
            read = self._read(line, options)
        except READ_ERRORS as error:
            return None, self._classify(line, error)
        columns = []
        for name in self.read_schema.names:
            found = [k for k in sorted(spellings) if self._lower[k.lower()] == name and read.column(k)[0].is_valid]
            if name not in found and len(found) > 1:
                return None, ("decode", f"keys {' and '.join(repr(k) for k in found)} both name column '{name}'")
            chosen = name if name in found else (found[0] if found else None)
            columns.append(read.column(chosen) if chosen else pa.nulls(1, types[name]))
        return pa.table(columns, schema=self.read_schema), None

    def _pick(self, record: _Object) -> tuple[dict, str | None]:
        """The declared values of one record, by the rule above, or why there are none."""
        if not isinstance(record, dict):
            raise ValueError("not an object")
        picked: dict = {}
        spelled: dict[str, list[str]] = {}
        for key, value in record.items():
            name = self._lower.get(key.lower())
            if name is None:
                continue
            if key in record.twice:
                return picked, f"key '{key}' appears twice in the object"
            spelled.setdefault(name, []).append(key)
            picked[name] = record[name] if name in record else value
        for name, keys in spelled.items():
            if name not in record and len(keys) > 1:
                return picked, f"keys {' and '.join(repr(k) for k in keys)} both name column '{name}'"
        return picked, None

    def _read_picked(self, redo: list[bytes]) -> tuple[pa.Table, list[tuple[int, Exception]]]:
        def read(start: int, end: int) -> pa.Table:
            return self._read(b"\n".join(redo[start:end]), self._exact_options)

        good, bad = isolate_failures(len(redo), read)
        return join_ranges(good, np.arange(len(redo)), self.read_schema.empty_table())[0], bad

    def _classify(self, record: bytes, error: Exception) -> tuple[str, str]:
        if isinstance(error, RecordCount) and error.rows > 1:
            return "decode", f"{error.rows} JSON values on one line: a line must hold one object"
        twice = _JSON_TWICE.search(str(error))
        if twice:
            return "decode", f"key '{twice.group(1)}' appears twice in the object"
        try:
            value = orjson.loads(record)
        except orjson.JSONDecodeError as decode_error:
            deep = "depth" in str(decode_error) or "ecursion" in str(decode_error)
            if deep and (JSON_CHANGED.search(str(error)) or "Failed to convert JSON" in str(error)):
                return "type", arrow_message(error)  # pyarrow reads any depth: a value does not fit
            return "decode", f"malformed JSON: {decode_error}"
        if not isinstance(value, dict):
            return "decode", f"expected a JSON object, got {type(value).__name__}"
        return "type", arrow_message(error)
