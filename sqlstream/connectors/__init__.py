"""Connectors: the interface a source or sink implements, and the registry of them.

This package is the plugin API: a connector subclasses :class:`SourceConnector` /
:class:`SinkConnector` (see :mod:`sqlstream.connectors.base` for the contract), declares
its options with :class:`OptionSpec`, and registers itself by name::

    from sqlstream.connectors import OptionSpec, SourceConnector, register_source

    @register_source
    class KafkaSource(SourceConnector):
        name = "kafka"
        options = (OptionSpec("topic", required=True, doc="topic to read"),)

        def open(self, ctx):
            ...

The built-in connectors (file, generator, nats, stdout) are imported only when they
are first named (see :mod:`sqlstream.connectors.registry`): importing this package
does not import nats-py.
"""

from sqlstream.connectors.base import (
    RunContext,
    SinkConnector,
    SinkWriter,
    SourceBatch,
    SourceConnector,
    SourceReader,
)
from sqlstream.connectors.dead_letters import DeadLetter
from sqlstream.connectors.options import OptionSpec
from sqlstream.connectors.registry import (
    SINK_CONNECTORS,
    SOURCE_CONNECTORS,
    register_sink,
    register_source,
    sink_connector,
    source_connector,
)

__all__ = [
    "SINK_CONNECTORS",
    "SOURCE_CONNECTORS",
    "DeadLetter",
    "OptionSpec",
    "RunContext",
    "SinkConnector",
    "SinkWriter",
    "SourceBatch",
    "SourceConnector",
    "SourceReader",
    "register_sink",
    "register_source",
    "sink_connector",
    "source_connector",
]
