"""One partition of a partitioned pipeline, run on its own thread by a worker.

Each partition is a whole pipeline of its own: a :class:`~sqlstream.session.Session`
made for it (``Session.partition``), so its source reads only that partition, its
operators hold only that partition's state, its checkpoints go to the partition's own
folder (or its own key of the group's object store bucket) and its file sinks write the partition's own part-file series. A run that
starts where an earlier owner stopped resumes from that folder's last committed
checkpoint (the ordinary checkpoint recovery): same state, same stream sequence.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

from sqlstream.connectors.base import Partition
from sqlstream.scaleout.exchange import is_exchange_source

if TYPE_CHECKING:
    from sqlstream.runtime.checkpoint_mirror import CheckpointMirror
    from sqlstream.runtime.driver import RunSummary
    from sqlstream.session import Session

__all__ = ["PartitionRun", "PartitionOutcome", "partition_checkpoint_dir"]


def partition_checkpoint_dir(checkpoint_dir: str, partition: Partition) -> str:
    """Where one partition's checkpoints go: ``<checkpoint_dir>/partition=<n>``."""
    return os.path.join(checkpoint_dir, partition.label)


@dataclass
class PartitionOutcome:
    """What one run of one partition did (for the worker's and the group's summary)."""

    partition: int
    ended: str  # handed over | stopped | lost | failed | finished
    resumed_from: int | None = None  # the checkpoint epoch it restored
    rows_in: int = 0
    rows_out: dict[str, int] = field(default_factory=dict)
    dead_letters: int = 0
    error: str | None = None

    def as_dict(self) -> dict:
        return dict(self.__dict__)


class PartitionRun:
    """``open_session(partition)`` and its ``run()`` on a thread; ``stop`` asks it to
    drain, take a last checkpoint and close its sinks (repeat it until ``done``: a run
    still starting up takes the request once it loops). ``fence`` says when the worker
    can no longer vouch for the partition's lease: no checkpoint is written then.
    ``mirror``: the partition's checkpoints in a NATS object store (the session's
    checkpoint directory is then a local working copy)."""

    def __init__(self, partition: Partition, open_session: Callable[[Partition], "Session"], pipeline: str,
                 warn: Callable[[str], None], fence: Callable[[], str | None],
                 mirror: "CheckpointMirror | None" = None):
        self.partition = partition
        self._mirror = mirror
        self._fence = fence
        self._open_session = open_session
        self._pipeline = pipeline
        self._warn = warn
        self.session: "Session | None" = None
        self.summary: "RunSummary | None" = None
        self.error: BaseException | None = None
        self.stop_reason: str | None = None
        self._thread = threading.Thread(target=self._run, name=f"sqlstream-partition-{partition.index}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self.session = self._open_session(self.partition)
            if self.stop_reason is None:
                self.summary = self.session.run(pipeline=self._pipeline, warn=self._warn,
                                                checkpoint_fence=self._fence, checkpoint_mirror=self._mirror)
        except BaseException as error:  # reported by the worker, which stops the group's work here
            self.error = error

    def stop(self, reason: str) -> None:
        if self.stop_reason is None:
            self.stop_reason = reason
        if self.session is not None:
            self.session.stop(self.stop_reason)

    @property
    def done(self) -> bool:
        return not self._thread.is_alive()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    def outcome(self, ended: str) -> PartitionOutcome:
        out = PartitionOutcome(self.partition.index, "failed" if self.error is not None else ended)
        if self.error is not None:
            render = getattr(self.error, "render", None)
            out.error = (render() if callable(render) else "") or f"{type(self.error).__name__}: {self.error}"
        summary = self.summary
        if summary is not None:
            out.rows_in = sum(m["rows_in"] for name, m in summary.sources.items() if not is_exchange_source(name))
            out.rows_out = dict(summary.sinks)
            out.dead_letters = sum(summary.dead_letters.values())
            if summary.checkpoints is not None:
                out.resumed_from = summary.checkpoints.resumed_from
        return out
