"""NATS messages ⇄ Arrow, one micro-batch at a time.

:class:`MessageDecoder` turns a list of received messages into one record batch of
the declared schema: the payloads are joined and decoded in one pyarrow call
(``json``, ``csv``), read as Arrow IPC streams (``arrow``) or taken as they are
(``raw``); declared metadata columns (``_subject``, ``_received_at``, ``_headers``,
``_stream_seq``) are filled from the messages; bad payloads become dead letters whose
position is ``subject#sequence``. :func:`encode_rows` does the reverse for the sink.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sqlstream.connectors.dead_letters import DeadLetter
from sqlstream.connectors.decode.payloads import PayloadDecoder
from sqlstream.connectors.encode import encode_json_values
from sqlstream.connectors.nats.protocol import text
from sqlstream.connectors.nats.routing import parse_headers
from sqlstream.hidden import SOURCE_ID_COLUMN

__all__ = [
    "js_pending",
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


def js_pending(reply: bytes | str) -> int | None:
    """Messages left on the server for the consumer when this one was delivered: the last
    field of a v1 JetStream ack subject (9 tokens), the eleventh of a v2 one.

    >>> js_pending(b"$JS.ACK.ORDERS.c.1.42.42.1700000000000000000.17"), js_pending("$JS.ACK.d.h.S.c.1.5.5.1.3.x")
    (17, 3)
    """
    tokens = (reply.decode() if isinstance(reply, bytes) else reply).split(".")
    index = 8 if len(tokens) == 9 else 10
    return int(tokens[index]) if len(tokens) > index and tokens[index].isdigit() else None


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
        self.payloads = PayloadDecoder(self.data_schema, source_name, fmt, timestamp_format, delimiter, null_values)
        self.output_schema = pa.schema(
            [f.with_nullable(True) for f in schema]
            + ([pa.field(SOURCE_ID_COLUMN, pa.string())] if stream is not None else [])
        )

    # -- decoding ---------------------------------------------------------------------------

    def decode(self, received: Received) -> tuple[pa.RecordBatch, list[DeadLetter]]:
        def position(index: int) -> str:
            return f"{received.subjects[index].decode('utf-8', 'replace')}#{received.sequences[index]}"

        table, rows, dead = self.payloads.decode(received.payloads, position)
        return self._assemble(table, rows, received), dead

    # -- metadata and assembly ------------------------------------------------------------------

    def _assemble(self, table: pa.Table, rows: np.ndarray, received: Received) -> pa.RecordBatch:
        """Data columns plus metadata columns, in declared order (plus the hidden id)."""
        if not self.metadata and self.stream is None:  # (the common case: the data columns as they are)
            columns = [_one_array(table.column(name)) for name in self.output_schema.names]
            return pa.RecordBatch.from_arrays(columns, schema=self.output_schema)
        take = pa.array(rows, pa.int64())
        columns = []
        for field in self.schema:
            name = field.name
            if name not in METADATA_COLUMNS:
                columns.append(_one_array(table.column(name)))
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


def _one_array(column: pa.ChunkedArray) -> pa.Array:
    return column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()


# -- encoding (sink) --------------------------------------------------------------------------


def encode_json_payloads(batch: pa.RecordBatch) -> pa.Array:
    """One JSON object per row, as binary message payloads."""
    if batch.num_rows == 0:
        return pa.array([], pa.binary())
    return encode_json_values(batch).view(pa.binary())


def encode_arrow_payload(batch: pa.RecordBatch) -> bytes:
    """An Arrow IPC stream holding ``batch``."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema) as writer:
        writer.write_batch(batch)
    return sink.getvalue().to_pybytes()
