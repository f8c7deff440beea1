"""Partition leases against a real nats-server: claim (create only if absent), renew
(compare-and-set on the revision), expiry of a SIGKILLed holder's lease after the TTL,
and a group's fair share as workers join and leave (docs/scale-out.md)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import time
import uuid

import nats
import pytest

from sqlstream.connectors.nats.leases import Lease, PartitionLeases
from sqlstream.errors import ConnectorError
from sqlstream.scaleout.partition_run import PartitionOutcome
from sqlstream.scaleout.worker import Worker

pytestmark = pytest.mark.nats


def _group() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


async def _leases(url: str, group: str, worker: str, partitions: int = 4, ttl_s: float = 1.0):
    nc = await nats.connect(url)
    leases = PartitionLeases(nc.jetstream(), group, worker, partitions, ttl_s)
    await leases.open()
    return nc, leases


def test_claim_renew_release_and_compare_and_set(nats_server):
    async def go():
        group = _group()
        nc_a, a = await _leases(nats_server.url, group, "a")
        nc_b, b = await _leases(nats_server.url, group, "b")
        try:
            lease = await a.claim(0)
            assert lease is not None
            assert await b.claim(0) is None  # create only if absent
            renewed = await a.renew(lease)
            assert renewed is not None and renewed.revision > lease.revision
            assert await a.renew(lease) is None  # a stale revision is refused: the lease moved on
            assert await b.renew(Lease(0, renewed.revision + 100)) is None
            assert await a.owners() == {0: "a"}
            await a.release(renewed)
            assert await a.owners() == {}
            taken = await b.claim(0)
            assert taken is not None and await b.owners() == {0: "b"}
            await a.release(renewed)  # releasing a lease lost to another deletes nothing
            assert await b.owners() == {0: "b"}
            await a.heartbeat()
            await b.heartbeat()
            assert await a.members() == ["a", "b"]
            await b.leave()
            assert await a.members() == ["a"]
        finally:
            await nc_a.close()
            await nc_b.close()

    asyncio.run(go())


def test_a_group_refuses_another_lease_ttl(nats_server):
    async def go():
        group = _group()
        nc, _ = await _leases(nats_server.url, group, "a", ttl_s=1.0)
        await nc.close()
        with pytest.raises(ConnectorError) as caught:
            await _leases(nats_server.url, group, "b", ttl_s=3.0)
        assert caught.value.message == f"group '{group}' runs with a lease TTL of 1s, not 3s"
        assert caught.value.hint.startswith("use --lease-ttl 1s")

    asyncio.run(go())


_HOLDER = textwrap.dedent("""
    import asyncio, sys
    import nats
    from sqlstream.connectors.nats.leases import PartitionLeases

    async def main(url, group):
        nc = await nats.connect(url)
        leases = PartitionLeases(nc.jetstream(), group, "doomed", 4, 1.0)
        await leases.open()
        lease = await leases.claim(2)
        print("claimed", flush=True)
        while True:  # renews until killed
            await leases.heartbeat()
            lease = await leases.renew(lease)
            await asyncio.sleep(0.2)

    asyncio.run(main(sys.argv[1], sys.argv[2]))
""")


def test_the_lease_of_a_killed_worker_expires_after_the_ttl(nats_server):
    group = _group()
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, nats_server.url, group], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "claimed"

        async def go():
            nc, me = await _leases(nats_server.url, group, "survivor")
            try:
                await asyncio.sleep(1.5)  # longer than the TTL: the holder's renewals keep it alive
                assert await me.claim(2) is None
                assert await me.members() == ["doomed"]
                holder.kill()
                holder.wait(5)
                killed = time.monotonic()
                while (lease := await me.claim(2)) is None:
                    assert time.monotonic() - killed < 5, "the lease did not expire"
                    await asyncio.sleep(0.05)
                assert time.monotonic() - killed >= 0.5  # not before the TTL (1s, less the last renewal's age)
                assert await me.owners() == {2: "survivor"}
                assert await me.members() == []  # the heartbeat expired too
                return lease
            finally:
                await nc.close()

        assert asyncio.run(go()).partition == 2
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(5)


class _Run:
    """A partition run that only records that it ran (the lease logic is what is tested)."""

    def __init__(self, partition: int, fence):
        self.partition = partition
        self.fence = fence
        self.error = None
        self.stopped_by: str | None = None

    def stop(self, reason: str) -> None:
        self.stopped_by = reason

    @property
    def done(self) -> bool:
        return self.stopped_by is not None

    def outcome(self, ended: str) -> PartitionOutcome:
        return PartitionOutcome(self.partition, ended)


def test_workers_share_partitions_fairly_as_they_join_and_leave(nats_server):
    group = _group()
    notes: list[str] = []

    async def owners():
        nc, view = await _leases(nats_server.url, group, "observer", 5, 1.0)
        try:
            found = await view.owners()
        finally:
            await nc.close()
        return found

    def counts(found: dict[int, str]) -> list[int]:
        per: dict[str, int] = {}
        for worker in found.values():
            per[worker] = per.get(worker, 0) + 1
        return sorted(per.values())

    async def go():
        workers = {name: Worker(url=nats_server.url, group=group, partitions=5, ttl_s=1.0, start=_Run,
                                note=notes.append, worker_id=name) for name in ("w1", "w2", "w3")}
        tasks = {"w1": asyncio.create_task(workers["w1"].serve())}

        async def until(expected: list[int], what: str):
            deadline = time.monotonic() + 10
            while True:
                found = await owners()
                if len(found) == 5 and counts(found) == expected:
                    return found
                assert time.monotonic() < deadline, f"{what}: owners {found}"
                await asyncio.sleep(0.1)

        assert set((await until([5], "one worker takes all")).values()) == {"w1"}
        tasks["w2"] = asyncio.create_task(workers["w2"].serve())
        await until([2, 3], "a second worker joins")
        tasks["w3"] = asyncio.create_task(workers["w3"].serve())
        found = await until([1, 2, 2], "a third worker joins")
        assert {w for w in found.values()} == {"w1", "w2", "w3"}
        workers["w1"].stop("SIGTERM")  # leaves: deletes its leases and heartbeat
        report = await tasks["w1"]
        assert report.stopped_by == "SIGTERM"
        assert {run.ended for run in report.runs} >= {"handed over", "stopped"}
        found = await until([2, 3], "the first worker leaves")
        assert set(found.values()) == {"w2", "w3"}
        for name in ("w2", "w3"):
            workers[name].stop("SIGTERM")
            await tasks[name]
        assert await owners() == {}

    asyncio.run(go())
    assert any("handing partition" in note for note in notes)
