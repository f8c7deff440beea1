"""NATS messages ⇄ Arrow, one micro-batch at a time.

:class:`MessageDecoder` turns a list of received messages into one record batch of
the declared schema: the payloads are joined and decoded in one pyarrow call
(``json``, ``csv``), read as Arrow IPC streams (``arrow``) or taken as they are
(``raw``); declared metadata columns (``_subject``, ``_received_at``, ``_headers``,
``_stream_seq``) are filled from the messages; bad payloads become dead letters whose
position is ``subject#sequence``. :func:`encode_rows` does the reverse for the sink.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sqlstream.connectors.dead_letters import DeadLetter
from sqlstream.connectors.decode import CsvDecoder, JsonDecoder, conform_table
from sqlstream.connectors.encode import encode_json_values
from sqlstream.connectors.nats.protocol import text
from sqlstream.connectors.nats.routing import parse_headers
from sqlstream.hidden import SOURCE_ID_COLUMN

__all__ = [
    "METADATA_COLUMNS",
    "MessageDecoder",
    "Received",
    "js_reply_fields",
    "encode_json_payloads",
    "encode_arrow_payload",
]

HEADERS_TYPE = pa.map_(pa.string(), pa.string())

#: the metadata columns a nats source fills (declared by NatsSource.metadata_columns)
METADATA_COLUMNS: dict[str, pa.DataType] = {
    "_subject": pa.string(),
    "_received_at": pa.timestamp("us"),
    "_headers": HEADERS_TYPE,
    "_stream_seq": pa.int64(),
}


@dataclass
class Received:
    """Messages taken from the connection for one micro-batch, column-wise.

    ``sequences`` are JetStream stream sequences, or for core NATS the message's
    number since the reader started (1-based); ``headers`` hold raw ``NATS/1.0``
    header blocks (or parsed dicts) or None; ``received_us`` is filled only when
    ``_received_at`` is declared.
    """

    subjects: Sequence[bytes]
    payloads: Sequence[bytes]
    headers: Sequence
    sequences: np.ndarray  # int64
    received_us: np.ndarray | None = None


def js_reply_fields(replies: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Stream sequence and delivery count of JetStream messages, from their ack
    subjects (``$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>...``; v2 subjects carry
    a domain and account hash first), parsed for the whole batch at once."""
    if not len(replies):
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty
    tokens = pc.split_pattern(replies.cast(pa.string()), pattern=".")
    lengths = pc.list_value_length(tokens).to_numpy(zero_copy_only=False)
    offset = np.where(lengths == 9, 0, 2)  # v1: 9 tokens; v2: 11 or 12
    flat = tokens.flatten()
    starts = tokens.offsets.to_numpy()[:-1]
    delivered = pc.cast(flat.take(pa.array(starts + 4 + offset)), pa.int64()).to_numpy()
    sequence = pc.cast(flat.take(pa.array(starts + 5 + offset)), pa.int64()).to_numpy()
    return sequence, delivered


class MessageDecoder:
    """Decodes micro-batches of one source's messages into its declared schema."""

    def __init__(
        self,
        schema: pa.Schema,
        source_name: str,
        fmt: str,
        timestamp_format: str = "iso",
        stream: str | None = None,
        delimiter: str = ",",
        null_values: Sequence[str] = (),
    ):
        self.schema = schema
        self.source_name = source_name
        self.format = fmt
        self.timestamp_format = timestamp_format
        self.stream = stream
        self.data_schema = pa.schema([f for f in schema if f.name not in METADATA_COLUMNS])
        self.metadata = [f.name for f in schema if f.name in METADATA_COLUMNS]
        self.not_null = [f.name for f in self.data_schema if not f.nullable]
        if fmt == "json":
            self._decoder = JsonDecoder(self.data_schema, source_name, timestamp_format)
        elif fmt == "csv":
            self._decoder = CsvDecoder(self.data_schema, source_name, None, delimiter, timestamp_format, null_values)
        else:
            self._decoder = None
        self.output_schema = pa.schema(
            [f.with_nullable(True) for f in schema]
            + ([pa.field(SOURCE_ID_COLUMN, pa.string())] if stream is not None else [])
        )

    # -- decoding ---------------------------------------------------------------------------

    def decode(self, received: Received) -> tuple[pa.RecordBatch, list[DeadLetter]]:
        payloads = received.payloads
        dead: list[DeadLetter] = []

        def position(index: int) -> str:
            return f"{received.subjects[index].decode('utf-8', 'replace')}#{received.sequences[index]}"

        if self.format == "arrow":
            table, rows = self._decode_arrow(payloads, position, dead)
        elif self.format == "raw":
            table, rows = self._decode_raw(payloads, position, dead)
        else:
            table, rows = self._decode_text(payloads, position, dead)
        return self._assemble(table, rows, received), dead

    def _decode_text(self, payloads: list[bytes], position, dead: list[DeadLetter]) -> tuple[pa.Table, np.ndarray]:
        """JSON / CSV: one record per message (a row or one dead letter), decoded in one
        call for the batch."""
        decoded = self._decoder.decode_records(payloads, position)
        dead.extend(decoded.dead)
        return decoded.table, decoded.records

    def _decode_arrow(self, payloads: list[bytes], position, dead: list[DeadLetter]) -> tuple[pa.Table, np.ndarray]:
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

    def _decode_raw(self, payloads: list[bytes], position, dead: list[DeadLetter]) -> tuple[pa.Table, np.ndarray]:
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

    # -- metadata and assembly ------------------------------------------------------------------

    def _assemble(self, table: pa.Table, rows: np.ndarray, received: Received) -> pa.RecordBatch:
        """Data columns plus metadata columns, in declared order (plus the hidden id)."""
        take = pa.array(rows, pa.int64())
        columns = []
        for field in self.schema:
            name = field.name
            if name not in METADATA_COLUMNS:
                columns.append(table.column(name).combine_chunks())
                continue
            if name == "_subject":
                values = pa.array(received.subjects, pa.binary()).cast(pa.string())
            elif name == "_received_at":
                values = pa.array(received.received_us, pa.int64()).view(pa.timestamp("us"))
            elif name == "_headers":
                parsed = [parse_headers(h) for h in received.headers]
                values = pa.array([list(h.items()) if h else None for h in parsed], HEADERS_TYPE)
            else:  # _stream_seq
                values = pa.array(received.sequences, pa.int64())
            values = values.take(take)
            columns.append(values.cast(field.type) if values.type != field.type else values)
        if self.stream is not None:
            sequences = pa.array(received.sequences, pa.int64()).take(take)
            columns.append(pc.binary_join_element_wise(text(self.stream), pc.cast(sequences, pa.string()), text(":")))
        return pa.RecordBatch.from_arrays(columns, schema=self.output_schema)


# -- encoding (sink) --------------------------------------------------------------------------


def encode_json_payloads(batch: pa.RecordBatch) -> pa.Array:
    """One JSON object per row, as binary message payloads."""
    if batch.num_rows == 0:
        return pa.array([], pa.binary())
    return pc.cast(encode_json_values(batch), pa.binary())


def encode_arrow_payload(batch: pa.RecordBatch) -> bytes:
    """An Arrow IPC stream holding ``batch``."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema) as writer:
        writer.write_batch(batch)
    return sink.getvalue().to_pybytes()
