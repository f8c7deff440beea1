"""Test helpers: in-memory sources and sinks, and a manual clock, so pipeline tests
run without servers and window tests never sleep; and the connector conformance kit
(:func:`check_source_connector`, :func:`check_sink_connector`, from
:mod:`sqlstream.conformance`) that a plugin's tests run on its connectors.

>>> from sqlstream.testing import TestSession
>>> t = TestSession()
>>> _ = t.execute("CREATE SOURCE s (k VARCHAR, v BIGINT) WITH (connector = 'memory')")
>>> _ = t.stream("s").push([{"k": "a", "v": 1}, {"k": "a", "v": 2}]).finish()
>>> t.run_query("SELECT k, sum(v) AS total FROM s GROUP BY k")
[{'k': 'a', 'total': 3}]
"""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa

from sqlstream.changelog import fold_changelog
from sqlstream.conformance import check_sink_connector, check_source_connector
from sqlstream.connectors.memory import MemorySink, MemorySource, MemoryStream
from sqlstream.errors import ExecutionError
from sqlstream.operators.snapshot import OperatorSnapshot
from sqlstream.runtime.clock import ManualClock, WallClock
from sqlstream.runtime.operator_ids import checkpoint_operators
from sqlstream.session import Session

__all__ = ["TestSession", "PipelineRun", "MemoryStream", "MemorySource", "MemorySink", "ManualClock", "WallClock",
           "check_source_connector", "check_sink_connector", "stored_snapshot"]


class TestSession(Session):
    """A Session with a manual clock, in-memory streams and collected outputs."""

    __test__ = False  # not a pytest test class

    def __init__(self, clock=None, **kwargs: Any):
        kwargs.setdefault("dead_letter_path", "off")
        super().__init__(clock=clock or ManualClock(), **kwargs)
        self.streams: dict[str, MemoryStream] = {}
        self.outputs: dict[str, list[pa.RecordBatch]] = {}

    def stream(self, name: str) -> MemoryStream:
        if name not in self.streams:
            schema = self.sources[name].schema if name in self.sources else None
            self.streams[name] = MemoryStream(schema)
        return self.streams[name]

    def start(self) -> "PipelineRun":
        """Build every sink's query and run it step by step in this thread (see
        :class:`PipelineRun`): for tests of processing time (EMIT EVERY, idle_timeout)
        and of state between batches."""
        return PipelineRun(self)

    def run_query(self, sql: str, fold: bool = True) -> list[dict]:
        """Run one query to the end of its (bounded) input; rows as dicts, changelogs folded."""
        rows = [row for batch in self.query(sql) for row in batch.to_pylist()]
        return fold_changelog(rows) if fold else rows

    def rows(self, sink: str, fold: bool = True) -> list[dict]:
        rows = [row for batch in self.outputs.get(sink, []) for row in batch.to_pylist()]
        return fold_changelog(rows) if fold else rows


class PipelineRun:
    """The sinks of a :class:`TestSession`, driven step by step in the calling thread:
    queue rows on its streams, :meth:`pump` them through, move the manual clock with
    :meth:`advance`, and :meth:`finish` (every source ends, windows flush). Nothing
    sleeps and nothing runs in the background.

    >>> t = TestSession()
    >>> _ = t.execute("CREATE SOURCE s (v BIGINT) WITH (connector = 'memory')")
    >>> _ = t.execute("CREATE SINK out AS SELECT count(*) AS n FROM s WITH (connector = 'memory')")
    >>> run = t.start()
    >>> _ = t.stream("s").push([{"v": 1}, {"v": 2}])
    >>> t.rows("out", fold=False) == [] and run.pump().session.rows("out")
    [{'n': 2}]
    """

    def __init__(self, session: TestSession):
        self.session = session
        self.driver = session.build(session.pending_sinks())
        session.report_on(self.driver)  # SHOW WATERMARKS / METRICS see this run
        for sink in self.driver.sinks:
            sink.open()

    def pump(self) -> "PipelineRun":
        """Process everything queued on the streams (event time moves, the clock does not)."""
        names = {stage.name for stage in self.driver.sources}
        streams = [s for name, s in self.session.streams.items() if name in names]
        while any(s.items for s in streams):
            self.driver.step()
        return self

    def advance(self, seconds: float) -> "PipelineRun":
        """Move the manual clock (processing time) and let the pipeline see it: idle
        sources are detected and EMIT EVERY fires."""
        self.session.clock.advance(seconds)
        self.driver.step()
        return self

    def state_rows(self) -> int:
        return self.driver.state_rows()

    def restart(self) -> "PipelineRun":
        """Stop here and go on from a checkpoint: every operator's snapshot, stored as a
        checkpoint stores it (tables through Arrow IPC, values through JSON), restored
        into a fresh build of the same queries, with each source's watermark carried
        over. The returned run continues where this one stopped (do not use this one
        again); outputs keep collecting in ``session.outputs``."""
        snapshots = [(name, stored_snapshot(op.snapshot())) for name, op in checkpoint_operators(self.driver.sources)]
        fresh = PipelineRun(self.session)
        operators = checkpoint_operators(fresh.driver.sources)
        if [name for name, _ in operators] != [name for name, _ in snapshots]:
            raise ExecutionError("a fresh build of the same queries has other operators")
        for (_, snapshot), (_, op) in zip(snapshots, operators, strict=True):
            op.restore(snapshot)
        for old, new in zip(self.driver.sources, fresh.driver.sources, strict=True):
            new.restore(json.loads(json.dumps(old.checkpoint())))
        return fresh

    def finish(self):
        """End every source, run to completion (all windows close), close the sinks."""
        for stream in self.session.streams.values():
            stream.finish()
        summary = self.driver.run()
        self.session.last_summary = summary
        return summary


def stored_snapshot(snapshot: OperatorSnapshot) -> OperatorSnapshot:
    """``snapshot`` as a checkpoint gives it back: values through ``json`` (anything but
    JSON's own types fails), each table written and read as an Arrow IPC file."""
    values = json.loads(json.dumps(snapshot.values, allow_nan=False))
    tables = {}
    for name, table in snapshot.tables.items():
        sink = pa.BufferOutputStream()
        with pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)
        tables[name] = pa.ipc.open_file(sink.getvalue()).read_all()
    return OperatorSnapshot(snapshot.kind, snapshot.version, values, tables)
