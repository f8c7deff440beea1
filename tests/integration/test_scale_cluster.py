"""Scale-out on a 3-node NATS cluster: two workers (``run --workers 2``) over a 4-partition
stream with 3 replicas, whose lease bucket and consumers are replicated too; a server
is killed with SIGKILL mid-run, the publisher goes on through the other servers, and
the union of the committed outputs still equals DuckDB over the published data, with
no row lost or written twice and no worker failed (docs/scale-out.md, *Running on a
NATS cluster*). The server killed leads the stream (TTL 10 s: the election fits in a
lease), or leads the lease bucket with a 3 s TTL: renewals fail through the election,
fences refuse checkpoints and runs stop, and the partitions resume from their
checkpoints."""

from __future__ import annotations

import asyncio
import subprocess
import time
import uuid
from collections import Counter

import nats.errors
import orjson
import pytest
from conftest import NatsClient, wait_until
from test_scale_out import (
    CLI,
    _committed,
    _expected_windows,
    _flush,
    _orders,
    _owners,
    _pipeline,
    _stop,
    _stream_exists,
    _windows,
)

pytestmark = pytest.mark.nats


def _publish_through_elections(client: NatsClient, prefix: str, rows: list[dict], first_id: int,
                               timeout: float = 120.0) -> None:
    """Publish ``rows`` one acknowledged message at a time, each with a ``Nats-Msg-Id``:
    a publish that fails while the stream elects a leader is sent again, and the stream
    drops the copy if the first one was stored after all."""

    async def go():
        deadline = time.monotonic() + timeout
        for i, row in enumerate(rows):
            headers = {"Nats-Msg-Id": f"order-{first_id + i}"}
            while True:
                try:
                    await client.js.publish(f"{prefix}.{row['customer_id']}", orjson.dumps(row), headers=headers,
                                            timeout=2)
                    break
                except (nats.errors.Error, asyncio.TimeoutError):
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.1)  # a leader election: retried with a deadline

    client.run(go(), timeout=timeout + 10)


def _answered(read):
    """``read()``, or None when JetStream did not answer: right after the cluster starts or
    loses a server, a request may time out or find the system "temporarily unavailable"
    until the elections end."""
    try:
        return read()
    except (nats.errors.Error, asyncio.TimeoutError, TimeoutError):
        return None


def _once_available(read, what: str):
    return wait_until(lambda: _answered(read), 60, what)


def _leader(client: NatsClient, stream: str) -> str | None:
    return client.run(client.js.stream_info(stream)).cluster.leader


@pytest.mark.parametrize("killed, lease_ttl", [("stream", "10s"), ("leases", "3s")])
def test_a_group_survives_the_loss_of_a_cluster_node(tmp_path, nats_cluster, processes, killed, lease_ttl):
    tag = uuid.uuid4().hex[:8]
    stream, prefix, group = f"ORD{tag}", f"orders{tag}", f"g{tag}"
    leader_of = {"stream": stream, "leases": f"KV_sqlstream_{group}"}[killed]
    name = _pipeline(tmp_path, nats_cluster.url, stream, prefix, replicas=3)
    client = NatsClient(nats_cluster.url)
    try:
        runner = subprocess.Popen(CLI + ["run", name, "--workers", "2", "--group", group, "--checkpoint", "ck",
                                         "--checkpoint-interval", "200ms", "--lease-ttl", lease_ttl],
                                  cwd=tmp_path, stderr=subprocess.PIPE, text=True)
        processes.append(runner)
        wait_until(lambda: _answered(lambda: _stream_exists(client, stream)), 60,
                   "the workers to create the partitioned stream")
        info = _once_available(lambda: client.run(client.js.stream_info(stream)), "the stream's info")
        assert info.config.num_replicas == 3
        wait_until(lambda: len(set((_answered(lambda: _owners(nats_cluster.url, group)) or {}).values())) == 2, 60,
                   "two owners")
        bucket = _once_available(lambda: client.run(client.js.stream_info(f"KV_sqlstream_{group}")), "the bucket")
        assert bucket.config.num_replicas == 3  # the leases survive a node too

        rows = _orders(0, 300)
        _publish_through_elections(client, prefix, rows, 0)
        wait_until(lambda: len(_committed(tmp_path, "all_rows")) >= 200, 60, "output before the kill")
        leader = _once_available(lambda: _leader(client, leader_of), f"the leader of {leader_of}")
        doomed = next(s for s in nats_cluster.servers if f"n{s.port}" == leader)
        doomed.kill()  # SIGKILL, mid-run: what it led (the stream, consumers, the leases) elects new leaders

        more = _orders(300, 300)
        _publish_through_elections(client, prefix, more, 300)  # through the two servers left
        assert _once_available(lambda: _leader(client, leader_of), "a new leader") != leader
        _publish_through_elections(client, prefix, _flush(), 600)
        rows += more + _flush()
        messages = _once_available(lambda: client.stream_messages(stream), "the stored messages")
        assert len(messages) == len(rows)  # every publish stored once (retries dropped by Nats-Msg-Id)
        published = [orjson.loads(m.data) for m in messages]
        expected = _expected_windows(published)
        assert expected == _expected_windows(rows)
        wait_until(lambda: len(_committed(tmp_path, "all_rows")) >= len(messages) and _windows(tmp_path) == expected,
                   120, "the group's output after the node's loss")
        code, err = _stop(runner)
    finally:
        client.close()
    assert code == 143, err  # stopped by SIGTERM; a worker that failed would make it 1
    assert "stopped by SIGTERM: 2 workers" in err
    seqs = Counter(r["seq"] for r in _committed(tmp_path, "all_rows"))
    assert sorted(seqs) == [m.seq for m in messages]  # nothing lost
    assert set(seqs.values()) == {1}  # nothing twice
    assert _windows(tmp_path) == expected
