"""Decoding the queued request bodies of one poll as one micro-batch.

The JSON-lines (or CSV) bodies of a poll are joined and decoded in one call of the
vectorized line decoders; which request each row and each dead letter came from is
found from the line numbers (``searchsorted`` over where each body starts), so no
Python runs per row. Arrow bodies were read as tables by the handler threads and are
conformed to the declared schema here, one dead letter per body that does not fit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from sqlstream.connectors.dead_letters import DeadLetter
from sqlstream.connectors.decode import CsvDecoder, JsonDecoder, conform_table
from sqlstream.connectors.http.server import Posted

__all__ = ["BodyDecoder", "DecodedRequests", "response_body"]

MAX_REPORTED = 100  # dead letters listed in one response (all are counted)


@dataclass
class DecodedRequests:
    """One poll's requests decoded: the rows, the dead letters, and per request how
    many rows it gave and which dead letters are its own."""

    table: pa.Table
    dead: list[DeadLetter]
    accepted: np.ndarray  # int64 per request
    dead_of: list[list[DeadLetter]]  # per request
    records: int  # records received (rows + dead letters)


class BodyDecoder:
    def __init__(self, schema: pa.Schema, source_name: str, timestamp_format: str, delimiter: str,
                 null_values: list[str]):
        self.schema = pa.schema([f.with_nullable(True) for f in schema])
        self.source_name = source_name
        self.timestamp_format = timestamp_format
        self.json = JsonDecoder(schema, source_name, timestamp_format)
        self.csv = CsvDecoder(schema, source_name, None, delimiter, timestamp_format, null_values)
        self.by_lower = {f.name.lower(): f.name for f in schema}
        self.not_null = [f.name for f in schema if not f.nullable]

    def decode(self, requests: list[Posted]) -> DecodedRequests:
        tables: list[pa.Table] = []
        dead: list[DeadLetter] = []
        accepted = np.zeros(len(requests), dtype=np.int64)
        dead_of: list[list[DeadLetter]] = [[] for _ in requests]
        for fmt in ("json", "csv"):
            group = [i for i, r in enumerate(requests) if r.format == fmt]
            if group:
                tables.append(self._decode_lines(fmt, requests, group, accepted, dead_of, dead))
        for i, posted in enumerate(requests):
            if posted.format == "arrow":
                table = self._decode_arrow(posted, dead_of[i], dead)
                if table is not None:
                    tables.append(table)
                    accepted[i] = table.num_rows
        records = int(accepted.sum()) + len(dead)
        if not tables:
            return DecodedRequests(self.schema.empty_table(), dead, accepted, dead_of, records)
        table = pa.concat_tables([t.cast(self.schema) if t.schema != self.schema else t for t in tables])
        return DecodedRequests(table, dead, accepted, dead_of, records)

    def _decode_lines(self, fmt: str, requests: list[Posted], group: list[int], accepted: np.ndarray,
                      dead_of: list[list[DeadLetter]], dead: list[DeadLetter]) -> pa.Table:
        bodies = [requests[i] for i in group]
        starts = np.zeros(len(bodies), dtype=np.int64)
        np.cumsum([b.lines for b in bodies[:-1]], out=starts[1:])

        def position(line: int) -> str:
            k = int(np.searchsorted(starts, line, side="right")) - 1
            return f"request {bodies[k].number} line {line - starts[k] + 1}"

        decoder = self.json if fmt == "json" else self.csv
        decoded = decoder.decode_block(b"".join(b.body for b in bodies), position)
        owner = np.searchsorted(starts, decoded.records, side="right") - 1
        accepted[group] = np.bincount(owner, minlength=len(bodies))
        for letter, line in zip(decoded.dead, np.searchsorted(starts, decoded.rejected, side="right") - 1, strict=True):
            dead_of[group[line]].append(letter)
        dead.extend(decoded.dead)
        return decoded.table

    def _decode_arrow(self, posted: Posted, own: list[DeadLetter], dead: list[DeadLetter]) -> pa.Table | None:
        table: pa.Table = posted.body
        names = {self.by_lower[n.lower()]: n for n in table.column_names if n.lower() in self.by_lower}
        try:
            table = conform_table(table, pa.schema(list(self.schema)), self.timestamp_format, names)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as error:
            letter = DeadLetter(self.source_name, "type", str(error).splitlines()[0], None, f"request {posted.number}")
        else:
            nulls = [n for n in self.not_null if table.column(n).null_count]
            if not nulls:
                return table
            letter = DeadLetter(self.source_name, "null", f"column '{nulls[0]}' is NULL but declared NOT NULL", None,
                                f"request {posted.number}")
        own.append(letter)
        dead.append(letter)
        return None


def response_body(accepted: int, letters: list[DeadLetter]) -> dict:
    """What a request is answered with once its records were taken."""
    return {
        "accepted": accepted,
        "dead_letters": len(letters),
        "errors": [{"reason": d.reason, "detail": d.detail, "position": d.position} for d in letters[:MAX_REPORTED]],
    }
