"""Checkpoints: the epoch protocol and recovery.

The run loop is single-threaded, so between two driver steps the whole operator graph is
quiescent and a consistent snapshot needs no barriers. Epoch ``N`` is everything read
since checkpoint ``N-1``. Checkpoint ``N`` is taken between two steps, in this order,
each step durable before the next:

1. every sink's ``prepare_commit(N)``: the epoch's rows durable, not yet visible;
2. every operator's state as Arrow IPC files under ``state/N/``;
3. ``offsets/N``: source positions and watermarks, what each sink prepared, the state
   files' checksums: from here on epoch N can be finished without its input;
4. every sink's ``commit(N)``: the epoch becomes visible (idempotent);
5. ``commits/N``;
6. the input of epochs up to N is acknowledged (JetStream).

With a mirror (a worker's checkpoints in a NATS object store), step 3 ends with the
epoch's upload, and the epoch counts once the mirror's pointer names it
(:mod:`sqlstream.runtime.checkpoint_mirror`).

Recovery takes the newest epoch whose offsets and state files are intact. If its commit
marker is missing (a crash between 3 and 5), the sinks finish committing it from what
they prepared (roll forward); epochs after it (unfinished, or damaged and skipped with a
warning) are removed by the sinks' ``recover`` and produced again from the restored
positions. Every recovery step is idempotent, so a crash during recovery is recovered
the same way.

``SQLSTREAM_CHECKPOINT_FAULT=<point>[@<epoch>]`` kills the process with SIGKILL at that
point (``after_prepare``, ``after_state``, ``after_offsets``, ``after_commit``,
``after_commits``, ``after_acks``, ``during_restore``): the crash tests use it.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Callable, Mapping, Protocol

from sqlstream.errors import CheckpointError, FencedCheckpointError
from sqlstream.runtime.checkpoints import Checkpoint, CheckpointStore, DamagedCheckpoint
from sqlstream.runtime.operator_ids import checkpoint_operators
from sqlstream.runtime.sink import SinkOperator
from sqlstream.runtime.source_stage import SourceStage
from sqlstream.sizes import format_bytes

if TYPE_CHECKING:
    from sqlstream.operators.base import Operator
    from sqlstream.runtime.checkpoint_mirror import CheckpointMirror

__all__ = ["CheckpointConfig", "Checkpointer", "CheckpointStats", "FAULT_ENV", "describe_change", "utc_text"]

FAULT_ENV = "SQLSTREAM_CHECKPOINT_FAULT"


class CheckpointedRun(Protocol):
    """What checkpoints need of a run (the :class:`~sqlstream.runtime.driver.Driver`)."""

    sources: list[SourceStage]
    sinks: list[SinkOperator]
    activity: int  # grows whenever state or output may have changed


@dataclass(frozen=True)
class CheckpointConfig:
    directory: str
    interval_s: float = 5.0
    keep: int = 3  # committed epochs kept on disk
    from_scratch: bool = False
    #: asked before a checkpoint is taken and again before its offsets are written: a
    #: reason (text) when this run may no longer write checkpoints — a worker whose
    #: partition lease may have passed to another worker (docs/scale-out.md)
    fence: Callable[[], str | None] | None = field(default=None, compare=False)
    #: a copy of the checkpoints elsewhere (a NATS object store): ``directory`` is then a
    #: local working directory, refilled from the mirror on open (checkpoint_mirror.py)
    mirror: "CheckpointMirror | None" = field(default=None, compare=False)

    @classmethod
    def of(cls, settings: Mapping[str, Any], from_scratch: bool = False) -> "CheckpointConfig | None":
        """The run's checkpoint settings (``checkpoint_dir``, ``_interval``, ``_keep``);
        None without ``checkpoint_dir``."""
        directory = settings["checkpoint_dir"]
        if directory is None:
            if from_scratch:
                raise CheckpointError("--from-scratch starts a checkpointed pipeline over, but no checkpoint_dir is set",
                                      hint="add --checkpoint DIR (or SET checkpoint_dir = '...')", exit_code=2)
            return None
        return cls(directory, settings["checkpoint_interval"] / 1e6, settings["checkpoint_keep"], from_scratch)


@dataclass
class CheckpointStats:
    """What the run summary and metrics say about checkpoints."""

    resumed_from: int | None = None
    taken: int = 0
    last_epoch: int = 0
    last_state_rows: int = 0
    last_state_bytes: int = 0
    last_duration_ms: float = 0.0
    total_duration_ms: float = 0.0
    last_at: float | None = None  # monotonic
    restore_s: float = 0.0  # reading and restoring the resumed checkpoint's state

    def line(self) -> str:
        if not self.taken and self.resumed_from is None:
            return ""
        parts = []
        if self.resumed_from is not None:
            parts.append(f"resumed from epoch {self.resumed_from}")
        if self.taken:
            average = self.total_duration_ms / self.taken
            parts.append(f"{self.taken} taken, last epoch {self.last_epoch} "
                         f"({self.last_state_rows:,} state rows, {format_bytes(self.last_state_bytes)}), "
                         f"{average:.0f} ms each")
        return "checkpoints: " + ", ".join(parts)


class Checkpointer:
    """Takes a run's checkpoints and restores a run from the last one.

    The builder calls :meth:`open` with the pipeline's description before it opens any
    reader (a resumed source opens at :meth:`start_position`), :meth:`attach` once the
    driver is built; the driver calls :meth:`restore` after opening its sinks,
    :meth:`maybe_take` after each step and :meth:`take` when it closes gracefully."""

    def __init__(self, config: CheckpointConfig, warn: Callable[[str], None], clock):
        self.config = config
        self.store = CheckpointStore(config.directory)
        self.warn = warn
        self.clock = clock
        self.resume: Checkpoint | None = None
        self.epoch = 0
        self.pipeline: dict[str, Any] = {}
        self.operators: list[tuple[str, Operator]] = []
        self.stats = CheckpointStats()
        self._activity = -1  # the driver's activity counter at the last checkpoint
        self._fault = _parse_fault(os.environ.get(FAULT_ENV))

    # -- before the run ---------------------------------------------------------------------

    def open(self, plans: dict[str, Any]) -> Checkpoint | None:
        """Find the checkpoint to resume (None: a fresh start) and check that it was
        written by this pipeline (``plans``: each sink's columns and plan)."""
        if self.config.from_scratch:
            self.store.remove_all()
        self.store.create()
        if self.config.mirror is not None:
            self.config.mirror.download(self.store, self.warn)
        self.pipeline = {"sinks": plans}
        self.resume = self._newest_intact()
        if self.resume is not None:
            change = describe_change(self.resume.pipeline.get("sinks", {}), plans)
            if change:
                raise CheckpointError(
                    f"checkpoint {self.config.directory} was written by a different pipeline: {change}",
                    hint="resume with the pipeline that wrote it, or start over with --from-scratch "
                         "(the checkpoint is removed and the sources are read again)",
                    exit_code=2,
                )
            self.epoch = self.resume.epoch
            self.stats.resumed_from = self.epoch
            where = self.config.mirror.where if self.config.mirror is not None else self.config.directory
            self.warn(f"resuming from checkpoint epoch {self.epoch} in {where} "
                      f"(taken {utc_text(self.resume.created_at)} UTC)")
        return self.resume

    def start_position(self, source: str) -> dict | None:
        if self.resume is None:
            return None
        entry = self.resume.sources.get(source)
        return None if entry is None else entry.get("position")

    def attach(self, driver: CheckpointedRun) -> None:
        """Name the built operators and check them against the checkpoint's; say which
        sources cannot replay what arrives while the pipeline is down."""
        self.operators = checkpoint_operators(driver.sources)
        self.pipeline["operators"] = [[op_id, type(op).__name__, op.state_version] for op_id, op in self.operators]
        if self.resume is not None:
            old = [tuple(x) for x in self.resume.pipeline.get("operators", [])]
            new = [tuple(x) for x in self.pipeline["operators"]]
            if old != new:
                raise CheckpointError(
                    f"checkpoint {self.config.directory} holds state for operators "
                    f"{_operator_list(old)}, but this pipeline has {_operator_list(new)}",
                    hint="the plan or the state layout changed (a newer sqlstream?); start over with --from-scratch",
                    exit_code=2,
                )
        for stage in driver.sources:
            gap = stage.spec.replay_gap
            if gap is None:
                continue
            if self.resume is not None:
                gap += f" (this run resumes a checkpoint taken {utc_text(self.resume.created_at)} UTC)"
            self.warn(gap)

    # -- the run ------------------------------------------------------------------------------

    def restore(self, driver: CheckpointedRun) -> None:
        """After the sinks opened and before the first step: finish or roll back the sinks'
        epochs, then give operators and sources their saved state."""
        self._crash_if("during_restore", self.epoch)
        resume = self.resume
        for sink in driver.sinks:
            prepared = None if resume is None else resume.sinks.get(sink.sink_name)
            sink.writer.recover(self.epoch, prepared)
        if resume is not None and not resume.committed:
            self.store.write_commit(resume.epoch, dict(resume.stats, rolled_forward=True))
        for epoch in self.store.epochs():
            if epoch > self.epoch:  # unfinished or damaged: produced again from here
                self.store.remove_epoch(epoch)
        self.store.remove_unlisted_state()
        if resume is not None:
            started = time.perf_counter()
            snapshots = self.store.snapshots(resume)
            for op_id, op in self.operators:
                op.restore(snapshots[op_id])
            for stage in driver.sources:
                saved = resume.sources.get(stage.name)
                if saved is not None:
                    stage.restore(saved)
            self.stats.restore_s = time.perf_counter() - started
            rows = sum(snap.rows for snap in snapshots.values())
            self.warn(f"restored epoch {resume.epoch}: {rows:,} rows of state in {self.stats.restore_s:.2f}s")
            if all(stage.ended for stage in driver.sources):
                self.warn("the checkpointed run had read all of its input: nothing is left to do "
                          "(--from-scratch runs the pipeline again)")
        self._activity = driver.activity
        self.stats.last_at = self.clock.monotonic()

    def maybe_take(self, driver: CheckpointedRun) -> None:
        if self.clock.monotonic() - self.stats.last_at >= self.config.interval_s:
            self.take(driver)

    def take(self, driver: CheckpointedRun) -> None:
        """Checkpoint the next epoch, unless nothing happened since the last one."""
        self.stats.last_at = self.clock.monotonic()
        if driver.activity == self._activity:
            return
        started = time.perf_counter()
        epoch = self.epoch + 1
        self._check_fence(epoch)
        prepared = {}
        for sink in driver.sinks:
            prepared[sink.sink_name] = sink.writer.prepare_commit(epoch)
            self._crash_if("after_prepare", epoch)
        state = self.store.write_state(epoch, {op_id: op.snapshot() for op_id, op in self.operators})
        self._crash_if("after_state", epoch)
        rows = sum(t["rows"] for e in state.values() for t in e["tables"].values())
        size = sum(t["bytes"] for e in state.values() for t in e["tables"].values())
        stats = {"state_rows": rows, "state_bytes": size, "duration_ms": 0.0}
        checkpoint = Checkpoint(
            epoch=epoch, pipeline=self.pipeline, sources={s.name: s.checkpoint() for s in driver.sources},
            sinks=prepared, operators=state, created_at=time.time(), stats=stats,
        )
        self._check_fence(epoch)  # from here on the epoch counts: only while this run may still write
        self.store.write_offsets(checkpoint)
        if self.config.mirror is not None:  # the epoch counts once the mirror's pointer names it
            self.config.mirror.upload(self.store, checkpoint, self.config.keep, lambda: self._check_fence(epoch))
        self._crash_if("after_offsets", epoch)
        for sink in driver.sinks:
            sink.writer.commit(epoch, prepared[sink.sink_name])
            self._crash_if("after_commit", epoch)
        elapsed_ms = (time.perf_counter() - started) * 1000
        self.store.write_commit(epoch, dict(stats, duration_ms=elapsed_ms))
        self._crash_if("after_commits", epoch)
        for stage in driver.sources:
            stage.release_committed()
        self._crash_if("after_acks", epoch)
        self.store.prune(self.config.keep)
        self.epoch = epoch
        self._activity = driver.activity
        self.stats.taken += 1
        self.stats.last_epoch = epoch
        self.stats.last_state_rows = rows
        self.stats.last_state_bytes = size
        self.stats.last_duration_ms = elapsed_ms
        self.stats.total_duration_ms += elapsed_ms

    # -- helpers ------------------------------------------------------------------------------

    def _check_fence(self, epoch: int) -> None:
        reason = self.config.fence() if self.config.fence is not None else None
        if reason:
            raise FencedCheckpointError(f"checkpoint of epoch {epoch} not written: {reason}",
                                  hint="another worker may own this partition now; it resumes from the last "
                                       "checkpoint", exit_code=1)

    def _newest_intact(self) -> Checkpoint | None:
        epochs = self.store.epochs()
        problems = []
        for epoch in reversed(epochs):
            try:
                checkpoint = self.store.load(epoch)
            except (DamagedCheckpoint, OSError) as error:
                problems.append(str(error))
                continue
            if not checkpoint.committed and epoch != epochs[-1]:
                problems.append(f"epoch {epoch} was never committed, yet a later one exists")
                continue
            if problems:
                self.warn(f"checkpoint damaged ({'; '.join(problems)}): resuming from epoch {epoch} instead; "
                          "later epochs are produced again")
            return checkpoint
        if problems:
            raise CheckpointError(
                f"no intact checkpoint in {self.config.directory}: {'; '.join(problems)}",
                hint="the files were altered or the disk lost writes; start over with --from-scratch "
                     "(the sources are read again from the start)",
            )
        return None

    def _crash_if(self, point: str, epoch: int) -> None:
        if self._fault is not None and self._fault[0] == point and self._fault[1] in (None, epoch):
            os.kill(os.getpid(), signal.SIGKILL)


def utc_text(seconds: float, timespec: str = "seconds") -> str:
    """A wall-clock time (seconds since the epoch) as ``2026-12-07 13:05:09``, UTC."""
    return datetime.fromtimestamp(seconds, tz=timezone.utc).replace(tzinfo=None).isoformat(sep=" ", timespec=timespec)


def _parse_fault(text: str | None) -> tuple[str, int | None] | None:
    if not text:
        return None
    point, _, epoch = text.partition("@")
    return point, int(epoch) if epoch else None


def _operator_list(operators: list[tuple]) -> str:
    return "(" + ", ".join(f"{kind} v{version}" for _, kind, version in operators) + ")"


def describe_change(old: dict[str, Any], new: dict[str, Any]) -> str:
    """What differs between two pipelines' sink descriptions, in words ('' when nothing)."""
    changes = []
    for name in sorted(set(old) - set(new)):
        changes.append(f"sink '{name}' is gone")
    for name in sorted(set(new) - set(old)):
        changes.append(f"sink '{name}' is new")
    for name in sorted(set(old) & set(new)):
        before, after = old[name], new[name]
        if before["columns"] != after["columns"]:
            changes.append(f"sink '{name}' columns ({', '.join(before['columns'])}) are now "
                           f"({', '.join(after['columns'])})")
        elif before["plan"] != after["plan"]:
            for was, now in zip(before["plan"] + [""] * len(after["plan"]), after["plan"] + [""] * len(before["plan"])):
                if was != now:
                    changes.append(f"sink '{name}' plan step '{was.strip()}' is now '{now.strip()}'")
                    break
    return "; ".join(changes)
