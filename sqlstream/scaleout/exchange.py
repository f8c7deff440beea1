"""A worker's run of one partition of a pipeline whose queries have an exchange.

The planner puts an :class:`~sqlstream.plan.partitioning.Exchange` where a query's
state is keyed by something other than the partition key (docs/scale-out.md#shuffles).
Each partition's run splits such a query in two at that point:

* below it, the rows read from the source partition go to an
  :class:`~sqlstream.connectors.nats.exchange.ExchangeWriter`, as a sink of their own
  (``<sink>@exchange``), which hashes them to the partitions of the exchange's stream;
* above it, the rest of the query reads the same-numbered partition of that stream
  (source ``<source>@exchange:<sink>``, an
  :class:`~sqlstream.connectors.nats.exchange.ExchangeSource`) and writes the sink.

Both halves are one pipeline with one checkpoint: what a partition sent and what it
took from the exchange are saved together, and hand-over moves both.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Mapping

from sqlstream.catalog import SourceEntry
from sqlstream.connectors.base import Partition
from sqlstream.connectors.nats.exchange import ExchangeChannel, ExchangeSource, ExchangeWriter
from sqlstream.operators.window_output import WE as WINDOW_END
from sqlstream.plan.nodes import Scan
from sqlstream.plan.partitioning import exchanges_of, replace_node
from sqlstream.runtime.builder import SinkPlan

__all__ = ["split_exchanges", "is_exchange_source"]

_SOURCE_MARK = "@exchange:"


def is_exchange_source(name: str) -> bool:
    """True for the source a split query reads an exchange's partition through."""
    return _SOURCE_MARK in name


def split_exchanges(sinks: list[SinkPlan], sources: Mapping[str, SourceEntry],
                    partition: Partition) -> tuple[list[SinkPlan], dict[str, SourceEntry]]:
    """The sink plans of ``partition``'s run (each query with an exchange split in two)
    and the sources they read (``sources`` plus the exchanges' partitions)."""
    plans, all_sources = [], dict(sources)
    for sink in sinks:
        plan = sink.plan
        for i, exchange in enumerate(exchanges_of(sink.plan)):  # (a join of the stream with itself: one per side)
            label = sink.name if i == 0 else f"{sink.name}-{i}"
            entry = sources[exchange.source]
            config = entry.connector.config
            channel = ExchangeChannel(config["url"], partition.group, label, partition.count, exchange.keys,
                                      config["replicas"], WINDOW_END if exchange.partials else None)
            name = f"{exchange.source}{_SOURCE_MARK}{label}"
            connector = ExchangeSource.of(channel, partition.index, name, exchange.schema, config.get("idle_timeout"))
            all_sources[name] = SourceEntry(name, "SOURCE", connector, exchange.schema, None, 0, None, entry.base_dir)
            plans.append(SinkPlan(f"{label}@exchange", exchange.children[0], exchange.schema,
                                  lambda schema, ctx, channel=channel: ExchangeWriter(channel, partition.index, ctx),
                                  sink.base_dir, passthrough=True))
            plan = replace_node(plan, exchange, Scan(name, exchange.schema, exchange.rowtime, "exchange"))
        plans.append(replace(sink, plan=plan))
    return plans, all_sources
