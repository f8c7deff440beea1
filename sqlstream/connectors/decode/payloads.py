"""Message payloads → Arrow, one micro-batch at a time, for message connectors.

A :class:`PayloadDecoder` decodes a list of message payloads against the declared
data columns (metadata columns are the connector's business) in one go:

- ``json`` / ``csv``: one record per message, joined and decoded by one pyarrow call
  (:class:`JsonDecoder` / :class:`CsvDecoder`: bad records are bisected out);
- ``arrow``: each message is an Arrow IPC stream of any number of rows;
- ``raw``: the payload is the value of the one declared column (VARCHAR or BYTEA).

``decode`` returns the rows, for each row the index of the message it came from
(so the caller can add per-message metadata with one ``take``), and the dead
letters, whose position the caller's ``position(index)`` names.
"""

from __future__ import annotations

import base64
from typing import Callable, Sequence

import numpy as np
import pyarrow as pa

from sqlstream.connectors.dead_letters import DeadLetter
from sqlstream.connectors.decode.conform import conform_table
from sqlstream.connectors.decode.csv_lines import CsvDecoder
from sqlstream.connectors.decode.json_lines import JsonDecoder

__all__ = ["PayloadDecoder", "PAYLOAD_FORMATS"]

#: the payload formats message sources read
PAYLOAD_FORMATS = ("json", "csv", "arrow", "raw")


class PayloadDecoder:
    """Decodes micro-batches of payloads into ``data_schema`` (declared data columns)."""

    def __init__(
        self,
        data_schema: pa.Schema,
        source_name: str,
        fmt: str,
        timestamp_format: str = "iso",
        delimiter: str = ",",
        null_values: Sequence[str] = (),
    ):
        self.data_schema = data_schema
        self.source_name = source_name
        self.format = fmt
        self.timestamp_format = timestamp_format
        self.not_null = [f.name for f in data_schema if not f.nullable]
        if fmt == "json":
            self._decoder = JsonDecoder(data_schema, source_name, timestamp_format)
        elif fmt == "csv":
            self._decoder = CsvDecoder(data_schema, source_name, None, delimiter, timestamp_format, null_values)
        else:
            self._decoder = None

    def decode(
        self, payloads: Sequence[bytes], position: Callable[[int], str]
    ) -> tuple[pa.Table, np.ndarray, list[DeadLetter]]:
        """Rows, the message index of each row, and dead letters."""
        dead: list[DeadLetter] = []
        if self.format == "arrow":
            table, rows = self._decode_arrow(payloads, position, dead)
        elif self.format == "raw":
            table, rows = self._decode_raw(payloads, position, dead)
        else:
            decoded = self._decoder.decode_records(payloads, position)
            dead.extend(decoded.dead)
            table, rows = decoded.table, decoded.records
        return table, rows, dead

    def _decode_arrow(self, payloads, position, dead: list[DeadLetter]) -> tuple[pa.Table, np.ndarray]:
        """Arrow IPC: each message is a stream of record batches (any number of rows)."""
        tables, rows = [], []
        by_lower = {f.name.lower(): f.name for f in self.data_schema}
        for i, payload in enumerate(payloads):
            raw = "base64:" + base64.b64encode(payload[:4096]).decode()
            try:
                table = pa.ipc.open_stream(payload).read_all()
            except (pa.ArrowInvalid, OSError) as error:
                dead.append(DeadLetter(self.source_name, "decode", f"not an Arrow IPC stream: {error}", raw, position(i)))
                continue
            names = {by_lower[n.lower()]: n for n in table.column_names if n.lower() in by_lower}
            try:
                table = conform_table(table, self.data_schema, self.timestamp_format, names)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as error:
                detail = str(error).splitlines()[0]
                reason = "decode" if detail.endswith("not valid UTF-8") else "type"  # text that is not UTF-8 is no record
                dead.append(DeadLetter(self.source_name, reason, detail, raw, position(i)))
                continue
            for name in self.not_null:
                if table.column(name).null_count:
                    dead.append(DeadLetter(self.source_name, "null", f"column '{name}' is NULL but declared NOT NULL", raw, position(i)))
                    break
            else:
                tables.append(table)
                rows.append(np.full(table.num_rows, i, dtype=np.int64))
        if not tables:
            return conform_table(self.data_schema.empty_table(), self.data_schema), np.zeros(0, dtype=np.int64)
        return pa.concat_tables(tables), np.concatenate(rows)

    def _decode_raw(self, payloads, position, dead: list[DeadLetter]) -> tuple[pa.Table, np.ndarray]:
        """raw: the payload is the value of the one declared column (VARCHAR or BYTEA)."""
        field = self.data_schema.field(0)
        values = pa.array(payloads, pa.binary())
        index = np.arange(len(payloads))
        if pa.types.is_string(field.type) or pa.types.is_large_string(field.type):
            try:
                values = values.cast(field.type)
            except pa.ArrowInvalid:
                good = []
                for i, payload in enumerate(payloads):
                    try:
                        payload.decode("utf-8")
                        good.append(i)
                    except UnicodeDecodeError as error:
                        text = payload.decode("utf-8", "replace")
                        dead.append(DeadLetter(self.source_name, "decode", f"not UTF-8 text: {error}", text, position(i)))
                index = np.array(good, dtype=np.int64)
                values = values.take(pa.array(index)).cast(field.type)
        else:
            values = values.cast(field.type)
        return pa.table([values], schema=pa.schema([field.with_nullable(True)])), index
