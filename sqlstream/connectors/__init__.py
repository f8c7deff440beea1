"""Connectors: the interface a source or sink implements, and the registry of them.

This package is the plugin API: a connector subclasses :class:`SourceConnector` /
:class:`SinkConnector` (see :mod:`sqlstream.connectors.base` for the contract), declares
its options with :class:`OptionSpec`, and registers itself by name. A bounded source
that counts down, used from SQL:

>>> import pyarrow as pa
>>> from sqlstream import Session
>>> from sqlstream.connectors import OptionSpec, SourceBatch, SourceConnector, SourceReader, register_source
>>> class CountdownReader(SourceReader):
...     bounded = True
...     def __init__(self, start: int):
...         self.left = start
...     def poll(self):  # never blocks: rows ready now, or None
...         if self.left <= 0:
...             return None
...         batch = pa.RecordBatch.from_pydict({"n": pa.array(range(self.left, 0, -1), pa.int64())})
...         self.left = 0
...         return SourceBatch(batch, raw_count=batch.num_rows)
...     @property
...     def exhausted(self) -> bool:
...         return self.left <= 0
>>> @register_source
... class CountdownSource(SourceConnector):
...     name = "ticks"  # registered for the whole process: pick a name no other connector has
...     options = (OptionSpec("start", "int", default=3, doc="the first number"),)
...     def open(self, ctx):
...         return CountdownReader(self.config["start"])
>>> session = Session()
>>> _ = session.execute("CREATE SOURCE c (n BIGINT) WITH (connector = 'Ticks', start = 4)")
>>> [b.to_pydict() for b in session.query("SELECT n * 10 AS m FROM c")]
[{'m': [40, 30, 20, 10]}]

The built-in connectors (file, generator, nats, stdout) are imported only when they
are first named (see :mod:`sqlstream.connectors.registry`): importing this package
does not import nats-py. Connectors other distributions declare as entry points (group
``sqlstream.connectors``, see :mod:`sqlstream.connectors.plugins` and
``docs/plugins.md``) load the first time a name is not a built-in.

A source on an asyncio client library runs it on an :class:`AsyncioBridge` (its own
event-loop thread) and hands messages to ``poll`` through a bounded :class:`Handoff`
(see :mod:`sqlstream.connectors.asyncio_bridge` and ``docs/plugins.md``).

What this package exports (``__all__``) is the versioned plugin API: it changes only
with a new major version of sqlstream.
"""

from typing import TYPE_CHECKING

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
from sqlstream.connectors.plugins import CONNECTOR_PLUGINS
from sqlstream.connectors.registry import (
    SINK_CONNECTORS,
    SOURCE_CONNECTORS,
    register_sink,
    register_source,
    sink_connector,
    source_connector,
)

SOURCE_CONNECTORS.use_plugins(CONNECTOR_PLUGINS.load)
SINK_CONNECTORS.use_plugins(CONNECTOR_PLUGINS.load)

if TYPE_CHECKING:
    from sqlstream.connectors.asyncio_bridge import AsyncioBridge, Handoff


def __getattr__(name: str):
    """``AsyncioBridge`` and ``Handoff`` load asyncio (and ssl) when first asked for:
    a pipeline without a network connector never needs them (start-up, see
    ``benchmarks/startup.py``)."""
    if name in ("AsyncioBridge", "Handoff"):
        from sqlstream.connectors import asyncio_bridge

        return getattr(asyncio_bridge, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = [
    "SINK_CONNECTORS",
    "SOURCE_CONNECTORS",
    "AsyncioBridge",
    "DeadLetter",
    "Handoff",
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
