"""Partition leases of a worker group, in a NATS key-value bucket.

A group ``NAME`` keeps its leases in the bucket ``sqlstream_NAME`` (on the server of the
partitioned source), whose ``ttl`` is the lease time-to-live; on a NATS cluster it has
as many replicas as the source's stream (a bucket on one server would take every
lease of the group down with that server):

``workers.<id>``
    each live worker's heartbeat, rewritten every round: the group's members.
``partitions.<n>``
    the owner of partition ``n``: written with ``create`` (only if absent) to claim it,
    rewritten with ``update`` naming the revision last written (compare-and-set) to
    renew it, deleted (again naming the revision) to hand it over.

A worker that stops renewing (killed, hung, cut off) loses its keys when the bucket's
TTL passes since their last write: the server removes them and another worker's
``create`` succeeds. Renewing after that fails (the revision moved on or the key is
gone), which is how a worker learns it lost a partition.

Fair share: workers sorted by id, each aims for ``P // N`` partitions, the first
``P % N`` of them one more (:func:`fair_share`), so the group converges to an even split
and a worker that joins gets partitions handed over by those above their share.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from nats.js.api import KeyValueConfig
from nats.js.errors import (
    BadRequestError,
    BucketNotFoundError,
    KeyDeletedError,
    KeyNotFoundError,
    KeyWrongLastSequenceError,
)

from sqlstream.errors import ConnectorError

__all__ = ["Lease", "PartitionLeases", "fair_share", "bucket_name", "check_group_name"]

_GROUP = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_WORKERS, _PARTITIONS = "workers.", "partitions."
_WRONG_LAST_SEQUENCE = 10071  # JetStream's error code; nats-py's kv.delete raises it as a plain BadRequestError


def _wrong_revision(error: Exception) -> bool:
    return isinstance(error, KeyWrongLastSequenceError) or getattr(error, "err_code", None) == _WRONG_LAST_SEQUENCE


def check_group_name(group: str) -> None:
    if not _GROUP.match(group):
        raise ConnectorError(f"group name {group!r} is invalid",
                             hint="letters, digits, '-' and '_' (it names a NATS key-value bucket)")


def bucket_name(group: str) -> str:
    """The key-value bucket of a group's leases."""
    check_group_name(group)
    return f"sqlstream_{group}"


async def group_names(js) -> list[str]:
    """The groups with a lease bucket on the server ``js`` talks to, sorted."""
    names = [info.config.name for info in await js.streams_info()]
    return sorted(n[len("KV_sqlstream_"):] for n in names if n.startswith("KV_sqlstream_"))


def fair_share(workers: list[str], me: str, partitions: int) -> int:
    """How many partitions worker ``me`` should own among ``workers`` (ids).

    >>> [fair_share(["a", "b", "c"], w, 4) for w in "abc"]
    [2, 1, 1]
    >>> fair_share(["a"], "a", 4), fair_share(["a", "b"], "z", 4)
    (4, 0)
    """
    ranked = sorted(workers)
    if me not in ranked:
        return 0
    share, extra = divmod(partitions, len(ranked))
    return share + (1 if ranked.index(me) < extra else 0)


@dataclass(frozen=True)
class Lease:
    """Partition ``partition`` owned as of KV revision ``revision``."""

    partition: int
    revision: int


class PartitionLeases:
    """One worker's view of its group's bucket (coroutines on a nats-py JetStream context)."""

    def __init__(self, js, group: str, worker: str, partitions: int, ttl_s: float | None, replicas: int = 1):
        self.js = js
        self.bucket = bucket_name(group)
        self.group = group
        self.worker = worker
        self.partitions = partitions
        self.ttl_s = ttl_s
        self.replicas = replicas  # of the bucket, when this worker creates it
        self.kv = None
        self._heartbeat_revision: int | None = None

    async def open(self) -> None:
        """Open the group's bucket, creating it with ``ttl_s`` if missing; a bucket with
        another TTL belongs to a group run with another --lease-ttl: refused. With
        ``ttl_s`` None (a reader such as ``sqlstream group``) the bucket must exist."""
        try:
            self.kv = await self.js.key_value(self.bucket)
        except BucketNotFoundError:
            if self.ttl_s is None:
                raise ConnectorError(f"no worker group '{self.group}' (no bucket {self.bucket})",
                                     hint="start workers with sqlstream worker FILE --group NAME", exit_code=1) from None
            self.kv = await self.js.create_key_value(KeyValueConfig(bucket=self.bucket, ttl=self.ttl_s, history=1,
                                                                    replicas=self.replicas))
        if self.ttl_s is None:
            return
        status = await self.kv.status()
        ttl = status.ttl or 0
        if abs(ttl - self.ttl_s) > 1e-3:
            raise ConnectorError(
                f"group '{self.group}' runs with a lease TTL of {ttl:g}s, not {self.ttl_s:g}s",
                hint=f"use --lease-ttl {ttl:g}s (every worker of a group uses the same TTL)", exit_code=1)

    async def heartbeat(self) -> None:
        """Say this worker is alive (its ``workers.<id>`` key, rewritten)."""
        key = _WORKERS + self.worker
        value = self.worker.encode()
        if self._heartbeat_revision is not None:
            try:
                self._heartbeat_revision = await self.kv.update(key, value, last=self._heartbeat_revision)
                return
            except KeyWrongLastSequenceError:
                pass  # expired meanwhile (a pause longer than the TTL): write it anew
        try:
            self._heartbeat_revision = await self.kv.create(key, value)
        except (KeyWrongLastSequenceError, KeyNotFoundError):  # (see claim)
            self._heartbeat_revision = await self.kv.put(key, value)

    async def members(self) -> list[str]:
        """The ids of the workers alive now (this one included once it beat)."""
        return sorted(k[len(_WORKERS):] for k in await self._live() if k.startswith(_WORKERS))

    async def taken(self) -> set[int]:
        """Partitions some worker holds a lease on."""
        return set(await self.owners())

    async def owners(self) -> dict[int, str]:
        """Partition → the worker holding its lease."""
        return {int(k[len(_PARTITIONS):]): v.decode() for k, v in sorted((await self._live()).items())
                if k.startswith(_PARTITIONS)}

    async def claim(self, partition: int) -> Lease | None:
        """The lease of a free partition, or None when another worker holds it."""
        try:
            revision = await self.kv.create(_PARTITIONS + str(partition), self.worker.encode())
        except (KeyWrongLastSequenceError, KeyNotFoundError):
            # (nats-py's create looks the key up after a refused write, to take over a delete
            # marker: a lease that expires in between is not found; it is free next round)
            return None
        return Lease(partition, revision)

    async def renew(self, lease: Lease) -> Lease | None:
        """The lease renewed, or None when it was lost (expired, maybe claimed by another)."""
        try:
            revision = await self.kv.update(_PARTITIONS + str(lease.partition), self.worker.encode(), last=lease.revision)
        except KeyWrongLastSequenceError:
            return None
        return Lease(lease.partition, revision)

    async def release(self, lease: Lease) -> None:
        """Hand a partition over: delete its lease, if it is still this worker's."""
        try:
            await self.kv.delete(_PARTITIONS + str(lease.partition), last=lease.revision)
        except (KeyWrongLastSequenceError, BadRequestError) as error:
            if not _wrong_revision(error):
                raise  # lost already (the revision moved on): nothing of ours to delete

    async def leave(self) -> None:
        """Remove this worker's heartbeat: the others rebalance at once."""
        if self._heartbeat_revision is not None:
            try:
                await self.kv.delete(_WORKERS + self.worker, last=self._heartbeat_revision)
            except (KeyWrongLastSequenceError, BadRequestError) as error:
                if not _wrong_revision(error):
                    raise
            self._heartbeat_revision = None

    async def _live(self) -> dict[str, bytes]:
        """The live keys and their values: the bucket stream's subjects (cheap, no
        consumer; nats-py's ``kv.keys()`` leaves a watcher consumer behind on the server
        for minutes), less those whose last entry is a delete (a released lease or a
        worker that left)."""
        prefix = f"$KV.{self.bucket}."
        info = await self.js.stream_info(f"KV_{self.bucket}", subjects_filter=f"{prefix}>")
        live = {}
        for subject in sorted(info.state.subjects or {}):
            key = subject[len(prefix):]
            try:
                entry = await self.kv.get(key)
            except (KeyNotFoundError, KeyDeletedError):  # released, left, or expired meanwhile
                continue
            live[key] = entry.value
        return live
