"""Connectors: the base interface, the registry and the built-in connectors."""

from sqlstream.connectors import file, generator, nats, stdout  # noqa: F401  (register themselves)
from sqlstream.connectors.base import (
    SINK_CONNECTORS,
    SOURCE_CONNECTORS,
    RunContext,
    SinkConnector,
    SinkWriter,
    SourceBatch,
    SourceConnector,
    SourceReader,
    sink_connector,
    source_connector,
)
from sqlstream.connectors.dead_letters import DeadLetter

__all__ = [
    "SINK_CONNECTORS",
    "SOURCE_CONNECTORS",
    "DeadLetter",
    "RunContext",
    "SinkConnector",
    "SinkWriter",
    "SourceBatch",
    "SourceConnector",
    "SourceReader",
    "sink_connector",
    "source_connector",
]
