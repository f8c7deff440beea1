"""``connector = 'nats'``: core NATS and JetStream, as a source and as a sink.

Source::

    CREATE SOURCE sensors (sensor_id BIGINT, temp DOUBLE, ts TIMESTAMP, _subject VARCHAR,
                           WATERMARK FOR ts AS ts - INTERVAL '2' SECOND)
    WITH (connector = 'nats', url = 'nats://127.0.0.1:4222', subject = 'sensors.>',
          stream = 'SENSORS', durable = 'alerts');        -- JetStream; leave out for core NATS

Sink::

    CREATE SINK alerts AS SELECT ... WITH (connector = 'nats', subject = 'alerts.{sensor_id}',
                                           stream = 'ALERTS');

See docs/nats.md for the delivery guarantees and the server settings they assume.
"""

from __future__ import annotations

import pyarrow as pa

from sqlstream.connectors.base import (
    RunContext,
    SinkConnector,
    SinkWriter,
    SourceConnector,
    SourceReader,
)
from sqlstream.connectors.nats.core import CoreReader
from sqlstream.connectors.nats.jetstream import JetStreamReader, ack_defaults
from sqlstream.connectors.nats.messages import METADATA_COLUMNS
from sqlstream.connectors.nats.partitions import PartitionLayout
from sqlstream.connectors.nats.sink import NatsWriter, SubjectTemplate
from sqlstream.connectors.options import NULL_VALUES_OPTION, OptionSpec
from sqlstream.connectors.registry import register_sink, register_source
from sqlstream.errors import ConnectorError, Location
from sqlstream.hidden import SOURCE_ID_COLUMN

__all__ = ["NatsSource", "NatsSink", "ack_defaults"]

_DEFAULT_URL = "nats://127.0.0.1:4222"
_JETSTREAM_ONLY = ("durable", "deliver", "ack_wait", "max_ack_pending", "fetch_batch", "partitions")


def _positive(value) -> str | None:
    return None if value > 0 else "must be > 0"


def _url(value: str) -> str | None:
    for url in value.split(","):
        if not url.strip().startswith(("nats://", "tls://", "ws://", "wss://")):
            return "expected nats://host:port (several: comma-separated)"
    return None


def _replicas(value: int) -> str | None:
    return None if 1 <= value <= 5 else "must be between 1 and 5 (JetStream's limit)"


def _subject(value: str) -> str | None:
    if not value or any(ch.isspace() for ch in value) or ".." in value or value.startswith(".") or value.endswith("."):
        return "not a NATS subject (tokens separated by '.', no spaces)"
    return None


_COMMON = (
    OptionSpec("url", default=_DEFAULT_URL, doc="NATS server(s): 'nats://host:port', comma-separated", check=_url),
    OptionSpec("connect_timeout", "duration", default=5_000_000, doc="how long to try the first connection"),
)


@register_source
class NatsSource(SourceConnector):
    name = "nats"
    metadata_columns = METADATA_COLUMNS
    layout: PartitionLayout | None = None  # set by validate for a partitioned source
    options = _COMMON + (
        OptionSpec("subject", doc="subject to read; wildcards allowed ('sensors.>'); JetStream: filter within the stream",
                   check=_subject),
        OptionSpec("queue", doc="core NATS queue group: processes in one group share the subject's messages"),
        OptionSpec("format", "choice", default="json", choices=("json", "csv", "arrow", "raw"),
                   doc="payload format: json | csv (one record per message) | arrow (IPC stream) | raw"),
        OptionSpec("delimiter", default=",", doc="csv field delimiter",
                   check=lambda v: None if len(v) == 1 else "must be one character"),
        NULL_VALUES_OPTION,
        OptionSpec("max_pending_messages", "int", default=2_000_000, check=_positive,
                   doc="core NATS: messages waiting for the pipeline before new ones are dropped (slow consumer)"),
        OptionSpec("max_pending_bytes", "int", default=1 << 30, check=_positive,
                   doc="core NATS: bytes waiting for the pipeline before new messages are dropped (slow consumer)"),
        OptionSpec("stream", doc="JetStream stream to read (at-least-once; acked after the sinks wrote the rows)"),
        OptionSpec("durable", doc="JetStream durable consumer name: a restart resumes where the last run acked"),
        OptionSpec("deliver", "choice", default="all", choices=("all", "new"),
                   doc="JetStream, new consumer: start at the stream's first message (all) or at new ones"),
        OptionSpec("ack_wait", "duration", doc="JetStream: redelivery timeout (default: derived from the windows)"),
        OptionSpec("max_ack_pending", "int", doc="JetStream: unacked messages allowed (default: derived; -1 = no limit)",
                   check=lambda v: None if v == -1 or v > 0 else "must be > 0, or -1 for no limit"),
        OptionSpec("fetch_batch", "int", check=_positive, doc="JetStream: messages per pull request (default batch_size)"),
        OptionSpec("partitions", "int", check=_positive,
                   doc="JetStream: the stream is split into this many partitions, run by a group of workers"),
        OptionSpec("partition_by", doc="with partitions: the subject's column token that chooses the partition"),
        OptionSpec("replicas", "int", default=1, check=_replicas,
                   doc="with partitions: JetStream replicas of what sqlstream creates (the stream when missing, the "
                       "group's lease bucket, a checkpoint bucket); 3 on a 3-node cluster survives a server's loss"),
    )

    def validate(self, where: Location | None) -> None:
        config = self.config
        self.layout = self._partition_layout(where)
        jetstream = bool(config["stream"])
        if not jetstream:
            if not config["subject"]:
                raise ConnectorError(
                    "connector 'nats' needs option 'subject'",
                    location=where,
                    hint="subject = 'sensors.>' (or stream = '...' to read a JetStream stream)",
                )
            for name in _JETSTREAM_ONLY:
                if config[name] is not None and not (name == "deliver" and config[name] == "all"):
                    raise ConnectorError(
                        f"option '{name}' applies to JetStream only",
                        location=where,
                        hint="add stream = '<stream name>' to read through JetStream",
                    )
        elif config["queue"]:
            raise ConnectorError(
                "option 'queue' applies to core NATS only",
                location=where,
                hint="with JetStream, processes that share a durable consumer share its messages",
            )
        data = [f for f in self.schema if f.name not in self.metadata_columns]
        for field in self.schema:
            self._check_metadata(field, jetstream, where)
        if config["format"] == "raw":
            if len(data) != 1 or not (pa.types.is_string(data[0].type) or pa.types.is_binary(data[0].type)):
                raise ConnectorError(
                    "format = 'raw' needs exactly one column (besides metadata columns), of type VARCHAR or BYTEA",
                    location=where,
                    hint="e.g. CREATE SOURCE lines (line VARCHAR, _subject VARCHAR) WITH (..., format = 'raw')",
                )
        if not data:
            raise ConnectorError("a nats source needs at least one column besides metadata columns", location=where)

    def _partition_layout(self, where: Location | None) -> PartitionLayout | None:
        """``partitions`` / ``partition_by``: the stream's layout (docs/scale-out.md)."""
        config = self.config
        subject = config["subject"] or ""
        if config["partitions"] is None:
            if config["replicas"] != 1:
                raise ConnectorError("option 'replicas' applies to a partitioned source (whose stream sqlstream creates)",
                                     location=where, hint="add partitions = P, partition_by = '...', or create the "
                                     "stream with its replicas yourself (nats stream add --replicas 3)")
            if config["partition_by"] is not None:
                raise ConnectorError("option 'partition_by' needs 'partitions'", location=where,
                                     hint="partitions = 8, partition_by = 'customer_id'")
            if "{" in subject:
                raise ConnectorError(
                    f"option 'subject' = {subject!r}: column tokens ('{{column}}') are for partitioned sources",
                    location=where, hint="use '*' to match any token, or add partitions = P, partition_by = '...'")
            return None
        if config["partition_by"] is None or not subject:
            raise ConnectorError(
                "a partitioned source needs 'subject' with the partition key as a column token, and 'partition_by'",
                location=where, hint="subject = 'orders.{customer_id}', partition_by = 'customer_id'")
        layout = PartitionLayout.parse(subject, config["partitions"], config["partition_by"], where)
        declared = {f.name.lower(): f.name for f in self.schema}
        if layout.column not in declared:
            raise ConnectorError(
                f"option 'partition_by' = {layout.column!r} is not a declared column of source '{self.source_name}'",
                location=where, hint="the partition key must be a column the rows carry (and publishers put into the subject)")
        return layout

    @property
    def partition_key(self) -> str | None:
        """The declared column that chooses the partition (``partition_by``)."""
        if self.layout is None:
            return None
        return {f.name.lower(): f.name for f in self.schema}[self.layout.column]

    def _check_metadata(self, field: pa.Field, jetstream: bool, where: Location | None) -> None:
        name, t = field.name, field.type
        expected = {
            "_subject": ("VARCHAR", pa.types.is_string(t)),
            "_received_at": ("TIMESTAMP", pa.types.is_timestamp(t)),
            "_headers": ("MAP(VARCHAR, VARCHAR)", pa.types.is_map(t) and pa.types.is_string(t.key_type)
                         and pa.types.is_string(t.item_type)),
            "_stream_seq": ("BIGINT", pa.types.is_integer(t)),
        }.get(name)
        if expected is None:
            return
        sql_type, ok = expected
        if not ok:
            raise ConnectorError(f"metadata column '{name}' must be declared {sql_type}", location=where)
        if name == "_stream_seq" and not jetstream:
            raise ConnectorError(
                "metadata column '_stream_seq' needs JetStream", location=where, hint="add stream = '<stream name>'"
            )

    @property
    def acknowledges(self) -> bool:
        """JetStream acknowledges messages once the sinks hold their rows; core NATS does not."""
        return bool(self.config["stream"])

    @property
    def replayable(self) -> bool:  # type: ignore[override]
        """JetStream resumes at a stream sequence (``SourceReader.position``); core NATS
        keeps no record of what it delivered."""
        return bool(self.config["stream"])

    def replay_gap(self) -> str | None:
        if self.replayable:
            return None
        return (f"source '{self.source_name}' cannot replay: core NATS keeps no messages, so those published to "
                f"'{self.config['subject']}' while the pipeline is down are lost (a resumed run restores its state "
                "and reads what arrives from then on); read the subject through a JetStream stream "
                "(stream = '...') to resume exactly")

    def hidden_fields(self) -> tuple[pa.Field, ...]:
        # JetStream rows carry their message's identity to the sinks (deterministic Nats-Msg-Id)
        return (pa.field(SOURCE_ID_COLUMN, pa.string()),) if self.config["stream"] else ()

    def open(self, ctx: RunContext) -> SourceReader:
        if self.config["stream"]:
            return JetStreamReader(self, ctx)
        return CoreReader(self, ctx)

    def describe(self) -> str:
        c = self.config
        if c["stream"]:
            consumer = f", durable {c['durable']}" if c["durable"] else ""
            subject = f", subject {c['subject']}" if c["subject"] else ""
            parts = f", {c['partitions']} partitions by {c['partition_by']}" if c["partitions"] else ""
            return f"nats(jetstream {c['stream']}{subject}{parts}{consumer}, {c['format']})"
        queue = f", queue {c['queue']}" if c["queue"] else ""
        return f"nats({c['subject']}{queue}, {c['format']})"


@register_sink
class NatsSink(SinkConnector):
    name = "nats"
    options = _COMMON + (
        OptionSpec("subject", required=True, doc="subject to publish to; may name columns: 'alerts.{sensor_id}'"),
        OptionSpec("format", "choice", default="json", choices=("json", "arrow"),
                   doc="json (a message per row) | arrow (an IPC message per batch and subject)"),
        OptionSpec("stream", doc="publish through JetStream into this stream (acked, with Nats-Msg-Id)"),
        OptionSpec("ack_timeout", "duration", default=5_000_000, doc="JetStream: wait per publish attempt for its ack"),
    )

    def validate(self, where: Location | None) -> None:
        at = self.located("subject", where)
        template = SubjectTemplate.from_option("subject", self.config["subject"], at, "alerts.{sensor_id}")
        rendered = "".join(literal + ("x" if name else "") for literal, name in template.parts)
        problem = _subject(rendered)
        if problem or "*" in rendered or ">" in rendered:
            raise ConnectorError(
                f"option 'subject' = {self.config['subject']!r} is invalid for connector 'nats': "
                f"{problem or 'a published subject cannot contain wildcards'}",
                location=at,
            )

    def check_schema(self, schema: pa.Schema, where: Location | None) -> None:
        SubjectTemplate(self.config["subject"]).bind(schema, f"sink '{self.sink_name}'", self.located("subject", where))

    def open(self, schema: pa.Schema, ctx: RunContext) -> SinkWriter:
        return NatsWriter(self, schema, ctx)

    def describe(self) -> str:
        c = self.config
        target = f"jetstream {c['stream']}, " if c["stream"] else ""
        return f"nats({target}{c['subject']}, {c['format']})"
