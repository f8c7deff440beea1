"""A worker of a group: holds partition leases and runs the partitions it owns.

Every round (a quarter of the lease TTL) the worker, on one asyncio loop:

1. rewrites its heartbeat and renews each lease it holds (compare-and-set on the
   revision it last wrote); a lease that cannot be renewed was lost (the worker was
   paused or cut off past the TTL) and its partition's run is stopped;
2. hands over: when it owns more than its fair share of the live workers
   (:func:`~sqlstream.connectors.nats.leases.fair_share`), it stops the surplus runs —
   each drains, takes a last checkpoint and closes its sinks — and only then deletes
   their leases, so the next owner restores a checkpoint nobody writes any more
   (stop-and-hand-over);
3. claims free partitions up to its share (``create``, only if absent) and starts a
   run for each, which resumes from the partition's last checkpoint.

A stop (SIGINT/SIGTERM, or a partition run that failed) stops every run the same
graceful way, deletes the leases and the heartbeat, and ends :meth:`Worker.serve`.
A run that ended because its fence refused a checkpoint, or because NATS did not
answer (an outage; a JetStream leader election on a cluster, whose requests time out
or find the system "temporarily unavailable" for a few seconds), is not a failure:
its lease is released and the partition claimed again, from its last checkpoint.
A killed worker deletes nothing: its leases expire after the TTL and the others claim
its partitions then.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
import uuid
from dataclasses import dataclass, field
from typing import Callable, Protocol

from sqlstream.connectors.nats.connection import nats_outage
from sqlstream.connectors.nats.leases import Lease, PartitionLeases, fair_share
from sqlstream.errors import FencedCheckpointError
from sqlstream.scaleout.partition_run import PartitionOutcome

__all__ = ["Worker", "WorkerReport", "PartitionRunner", "new_worker_id", "FENCE_AFTER"]

#: a lease renewed longer ago than this fraction of the TTL no longer covers a checkpoint
FENCE_AFTER = 0.75


class PartitionRunner(Protocol):
    """What the worker needs of a partition's run (:class:`PartitionRun`)."""

    error: BaseException | None

    def stop(self, reason: str) -> None: ...

    @property
    def done(self) -> bool: ...

    def outcome(self, ended: str) -> PartitionOutcome: ...


def _fenced(error: BaseException | None) -> bool:
    """Whether ``error`` (or what caused it: a final checkpoint's failure is wrapped) is
    a checkpoint refused by the run's fence."""
    while error is not None:
        if isinstance(error, FencedCheckpointError):
            return True
        error = error.__cause__
    return False


def new_worker_id() -> str:
    """Unique per process, readable in the lease bucket: ``host-pid-random``."""
    host = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in socket.gethostname())[:32]
    return f"{host}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


@dataclass
class WorkerReport:
    """A worker's partition runs, for its summary line and the group's."""

    worker: str
    group: str
    runs: list[PartitionOutcome] = field(default_factory=list)
    stopped_by: str | None = None
    error: str | None = None

    def as_dict(self) -> dict:
        return {"worker": self.worker, "group": self.group, "stopped_by": self.stopped_by, "error": self.error,
                "runs": [r.as_dict() for r in self.runs]}


class Worker:
    """``start(partition, fence)`` returns a started :class:`PartitionRunner`; ``note``
    takes what the worker says on stderr (claims, hand-overs, lost leases).

    ``fence()`` (called from the partition's thread) is a reason not to write a
    checkpoint once the worker can no longer be sure it holds the partition's lease:
    lost, or last renewed more than :data:`FENCE_AFTER` of the TTL ago (a worker
    paused longer than that, e.g. by SIGSTOP, learns it only when it renews)."""

    def __init__(self, *, url: str, group: str, partitions: int, ttl_s: float,
                 start: Callable[[int, Callable[[], str | None]], PartitionRunner], note: Callable[[str], None],
                 worker_id: str | None = None, connect_timeout_s: float = 5.0, replicas: int = 1):
        self.url = url
        self.group = group
        self.partitions = partitions
        self.ttl_s = ttl_s
        self.start = start
        self.note = note
        self.id = worker_id or new_worker_id()
        self.connect_timeout_s = connect_timeout_s
        self.replicas = replicas  # of the lease bucket: those of the source's stream
        self.leases: PartitionLeases | None = None
        self.owned: dict[int, Lease] = {}
        self.renewed_at: dict[int, float] = {}  # monotonic time each lease's last renewal was sent
        self.claims: dict[int, int] = {}  # partition → which claim of it the lease is (fences older runs)
        self._claims_made = 0
        self.abandoned: dict[int, PartitionRunner] = {}  # runs of lost leases, until they end
        self.running: dict[int, PartitionRunner] = {}
        self.releasing: set[int] = set()
        self.report = WorkerReport(self.id, group)
        self._stop = asyncio.Event()
        self._stop_reason: str | None = None
        self._outage = False  # disconnected from NATS, reconnecting

    def stop(self, reason: str) -> None:
        """Stop the worker (from the worker's loop: a signal handler added there)."""
        if self._stop_reason is None:
            self._stop_reason = reason
        self._stop.set()

    async def serve(self) -> WorkerReport:
        import nats

        nc = await nats.connect(self.url.split(","), connect_timeout=self.connect_timeout_s, max_reconnect_attempts=-1,
                                reconnect_time_wait=0.25, allow_reconnect=True, error_cb=self._nats_error,
                                disconnected_cb=self._disconnected, reconnected_cb=self._reconnected)
        try:
            self.leases = PartitionLeases(nc.jetstream(), self.group, self.id, self.partitions, self.ttl_s,
                                          self.replicas)
            await self.leases.open()
            self.note(f"worker {self.id} joined group '{self.group}' ({self.partitions} partitions, "
                      f"lease TTL {self.ttl_s:g}s)")
            while await self._round_or_retry(nats.errors.Error):
                if self._stop.is_set():  # stopping: look at the runs more often, keep renewing
                    await asyncio.sleep(min(0.1, self.ttl_s / 4))
                    continue
                try:
                    await asyncio.wait_for(self._stop.wait(), self.ttl_s / 4)
                except asyncio.TimeoutError:
                    pass
            await self.leases.leave()
        finally:
            self._outage = True  # closing: nats-py calls the disconnect callback, nothing to say
            await nc.close()
        self.report.stopped_by = self._stop_reason
        return self.report

    async def _nats_error(self, error: Exception) -> None:
        """Said once per outage (nats-py's default prints a traceback for each, and a
        server that died fails every reconnect attempt to it)."""
        if not self._outage:
            self.note(f"worker {self.id}: NATS error: {error or type(error).__name__}")

    async def _disconnected(self) -> None:
        if not self._outage:
            self._outage = True
            self.note(f"worker {self.id}: disconnected from NATS; reconnecting (to another server of a cluster)")

    async def _reconnected(self) -> None:
        self._outage = False
        self.note(f"worker {self.id}: reconnected to NATS")

    async def _round_or_retry(self, nats_error: type) -> bool:
        """A round; one that NATS fails (a timeout, an outage) is said and tried again at
        the next: meanwhile the leases are not renewed, and the fence stops checkpoints
        once they are too old to vouch for."""
        try:
            return await self._round()
        except (asyncio.TimeoutError, nats_error) as error:
            self.note(f"worker {self.id}: lease round failed ({type(error).__name__}: {error}); retrying")
            return True

    async def _round(self) -> bool:
        """One round; False once the worker has stopped everything and may leave."""
        leases = self.leases
        await leases.heartbeat()
        for partition, lease in list(self.owned.items()):
            sent = time.monotonic()
            renewed = await leases.renew(lease)
            if renewed is None:
                self.note(f"worker {self.id}: lost the lease of partition {partition} (paused, or "
                          "without answers from NATS, past the TTL?): "
                          "stopping its run")
                self.owned.pop(partition)
                self.releasing.discard(partition)
                self._finish(partition, "lost")
            else:
                self.owned[partition] = renewed
                self.renewed_at[partition] = sent
        for partition in self.releasing:  # asked again each round: a run still starting up
            self.running[partition].stop("handover")  # takes the request only once it loops
        for partition, run in list(self.running.items()):
            if not run.done or partition not in self.owned:
                continue
            if _fenced(run.error) or nats_outage(run.error):  # not a failure of the pipeline: tried again
                why = ("stopped writing checkpoints" if _fenced(run.error) else
                       "stopped: NATS did not answer (an outage, a leader election); it resumes from its last "
                       "checkpoint when claimed again")
                self.note(f"worker {self.id}: partition {partition} {why}: {run.error}")
                self.releasing.discard(partition)
                await leases.release(self.owned.pop(partition))
                self._finish(partition, "lost")
                continue
            if run.error is not None and self._stop_reason is None:
                self.report.error = f"partition {partition} failed"
                self.stop("failure")
            handed_over = partition in self.releasing and run.error is None
            self.releasing.discard(partition)
            await leases.release(self.owned.pop(partition))  # after the run's last checkpoint
            self._finish(partition, "handed over" if handed_over else "stopped" if self._stop.is_set() else "finished")
        if self._stop.is_set():
            for run in self.running.values():
                run.stop(self._stop_reason or "stop")
            for partition in [p for p, run in self.running.items() if run.done]:
                if partition in self.owned:
                    await leases.release(self.owned.pop(partition))
                self._finish(partition, "stopped")
            return bool(self.running)
        members = await leases.members()
        target = fair_share(members, self.id, self.partitions)
        active = sorted(p for p in self.owned if p not in self.releasing)
        if len(active) > target:
            for partition in active[target:]:
                self.note(f"worker {self.id}: handing partition {partition} over ({len(members)} workers)")
                self.releasing.add(partition)
                self.running[partition].stop("handover")
        elif len(active) < target and not self.releasing:
            await self._claim(target - len(active), members)
        return True

    async def _claim(self, wanted: int, members: list[str]) -> None:
        taken = await self.leases.taken()
        self.abandoned = {p: run for p, run in self.abandoned.items() if not run.done}
        free = [p for p in range(self.partitions) if p not in taken and p not in self.running and p not in self.abandoned]
        offset = members.index(self.id) * (self.partitions // max(len(members), 1)) if self.id in members else 0
        free.sort(key=lambda p: (p - offset) % self.partitions)  # workers start their search at different places
        for partition in free:
            if wanted == 0:
                break
            sent = time.monotonic()
            lease = await self.leases.claim(partition)
            if lease is None:
                continue
            self.owned[partition] = lease
            self.renewed_at[partition] = sent
            self._claims_made += 1
            self.claims[partition] = self._claims_made
            self.note(f"worker {self.id}: running partition {partition}")
            self.running[partition] = self.start(partition, self.fence(partition, self._claims_made))
            wanted -= 1

    def fence(self, partition: int, claim: int) -> Callable[[], str | None]:
        """The fence of one claim of ``partition``: a later claim of it does not revive it."""

        def check() -> str | None:
            current = partition in self.owned and self.claims.get(partition) == claim
            sent = self.renewed_at.get(partition) if current else None
            if sent is None:
                return f"worker {self.id} lost the lease of partition {partition}"
            age = time.monotonic() - sent
            if age > FENCE_AFTER * self.ttl_s:
                return (f"worker {self.id} last renewed the lease of partition {partition} {age:.1f}s ago "
                        f"(lease TTL {self.ttl_s:g}s)")
            return None

        return check

    def _finish(self, partition: int, ended: str) -> None:
        run = self.running.pop(partition, None)
        self.claims.pop(partition, None)
        if run is None:
            return
        if ended == "lost":
            run.stop("lease lost")
            if not run.done:
                self.abandoned[partition] = run
        outcome = run.outcome(ended)
        self.report.runs.append(outcome)
        if outcome.error:
            self.note(f"worker {self.id}: partition {partition} failed: {outcome.error}")
