"""Checkpoints that travel through a NATS object store (docs/scale-out.md): the mirror's
commit order against a real nats-server (an upload without its pointer is never
restored, only the last few epochs are kept, under names that are reused), and two ``sqlstream worker`` processes in separate
directories — nothing shared but NATS — where one is killed with SIGKILL mid-run and the
other restores its partitions from the bucket: the JetStream sinks hold every row and
every window once, as DuckDB computes them."""

from __future__ import annotations

import csv
import signal
import subprocess
import uuid
from collections import Counter
from datetime import datetime

import orjson
import pyarrow as pa
import pytest
from conftest import wait_until
from test_scale_out import CLI, _expected_windows, _flush, _orders, _owners, _publish, _stop

from sqlstream.connectors.nats.objects import ObjectBucket
from sqlstream.errors import FencedCheckpointError
from sqlstream.operators.snapshot import OperatorSnapshot
from sqlstream.runtime.checkpoint_mirror import CheckpointMirror
from sqlstream.runtime.checkpoints import Checkpoint, CheckpointStore

pytestmark = pytest.mark.nats


def _write_epoch(store: CheckpointStore, epoch: int) -> Checkpoint:
    table = pa.table({"key": [epoch], "count": [epoch * 10]})
    state = store.write_state(epoch, {"op1": OperatorSnapshot("tumble", 1, {}, {"windows": table})})
    checkpoint = Checkpoint(epoch=epoch, pipeline={"sinks": {}}, sources={"orders": {"position": {"sequence": epoch}}},
                            sinks={}, operators=state, created_at=1.0e9 + epoch)
    store.write_offsets(checkpoint)
    return checkpoint


def test_an_epoch_counts_once_its_pointer_is_written_and_only_the_last_few_are_kept(tmp_path, nats_server):
    tag = uuid.uuid4().hex[:8]
    bucket = ObjectBucket(nats_server.url, f"CK{tag}")
    try:
        mirror = CheckpointMirror(bucket, "orders/partition=1", "test")
        store = CheckpointStore(str(tmp_path / "a"))
        store.create()
        for epoch in range(1, 6):
            mirror.upload(store, _write_epoch(store, epoch), 3, lambda: None)

        def fenced():
            raise FencedCheckpointError("checkpoint of epoch 6 not written: lease lost")

        with pytest.raises(FencedCheckpointError):  # uploaded, but no pointer names it
            mirror.upload(store, _write_epoch(store, 6), 3, fenced)
        pointer = mirror.latest()
        assert pointer["epoch"] == 5 and sorted(int(e) for e in pointer["epochs"]) == [3, 4, 5]
        assert {e: entry["slot"] for e, entry in pointer["epochs"].items()} == {"3": 3, "4": 0, "5": 1}
        names = bucket.names("orders/partition=1/")  # epoch N in slot N % (keep + 1): names are reused
        assert names == ["orders/partition=1/latest.json"] + [f"orders/partition=1/slot-{s}/{kind}" for s in range(4)
                                                              for kind in ("offsets.json", "state-0.arrow")]

        fresh = CheckpointStore(str(tmp_path / "b"))
        fresh.create()
        notes: list[str] = []
        assert mirror.download(fresh, notes.append) == 5  # the half-written epoch 6 is ignored
        assert fresh.epochs() == [5] and notes[0].startswith("downloaded checkpoint epoch 5 from test")
        restored = fresh.load(5)  # checksums checked, as for a local directory
        assert restored.sources["orders"]["position"]["sequence"] == 5
        assert fresh.snapshots(restored)["op1"].tables["windows"].to_pylist() == [{"key": 5, "count": 50}]
        other = CheckpointMirror(bucket, "orders/partition=2", "test")  # checkpoint_keep lowered from 5 to 3
        for epoch in range(11, 16):
            other.upload(store, _write_epoch(store, epoch), 5, lambda: None)
        seen: list[list[str]] = []  # the epochs the pointer names each time the fence is asked
        other.upload(store, _write_epoch(store, 16), 3, lambda: seen.append(sorted(other.latest()["epochs"])))
        # slot 0 (16 % 4) held epoch 12 (12 % 6): the pointer stopped naming it before the slot was overwritten
        assert seen == [["11", "12", "13", "14", "15"], ["11", "13", "14", "15"]]
        assert {e: entry["slot"] for e, entry in other.latest()["epochs"].items()} == {"14": 2, "15": 3, "16": 0}
        assert other.download(fresh, notes.append) == 16 and fresh.load(16).epoch == 16
        assert CheckpointMirror(bucket, "orders/partition=3", "test").download(fresh, notes.append) is None
        assert fresh.epochs() == []  # nothing to resume: the working directory is emptied
    finally:
        bucket.close()


def _pipeline(folder, url: str, stream: str, prefix: str, rows_stream: str, windows_stream: str) -> str:
    folder.mkdir()
    (folder / "pipeline.sql").write_text(f"""
        CREATE SOURCE orders (customer_id BIGINT, amount BIGINT, ts TIMESTAMP, _stream_seq BIGINT,
                              WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)
        WITH (connector = 'nats', url = '{url}', stream = '{stream}', subject = '{prefix}.{{customer_id}}',
              partitions = 4, partition_by = 'customer_id');
        CREATE SINK all_rows AS SELECT _stream_seq AS seq, customer_id, amount FROM orders
          WITH (connector = 'nats', url = '{url}', stream = '{rows_stream}', subject = '{rows_stream}.{{customer_id}}');
        CREATE SINK per_customer AS
          SELECT window_start, window_end, customer_id, count(*) AS n, sum(amount) AS total
          FROM TUMBLE(orders, ts, INTERVAL '5' SECOND) GROUP BY window_start, window_end, customer_id
          WITH (connector = 'nats', url = '{url}', stream = '{windows_stream}',
                subject = '{windows_stream}.{{customer_id}}');
    """)
    return "pipeline.sql"


def test_workers_sharing_only_nats_hand_a_killed_workers_partitions_over(tmp_path, nats_server, nats_client,
                                                                       processes):
    tag = uuid.uuid4().hex[:8]
    stream, prefix, group = f"ORD{tag}", f"orders{tag}", f"g{tag}"
    rows_stream, windows_stream, bucket_name = f"ROWS{tag}", f"WIN{tag}", f"CK{tag}"
    nats_client.add_stream(rows_stream, [f"{rows_stream}.>"])
    nats_client.add_stream(windows_stream, [f"{windows_stream}.>"])
    checkpoint = f"{nats_server.url}/{bucket_name}"
    command = CLI + ["worker", "pipeline.sql", "--group", group, "--checkpoint", checkpoint,
                     "--checkpoint-interval", "200ms", "--lease-ttl", "2s"]
    machines = [tmp_path / "machine-a", tmp_path / "machine-b"]  # no directory in common
    for machine in machines:
        _pipeline(machine, nats_server.url, stream, prefix, rows_stream, windows_stream)
    doomed = subprocess.Popen(command, cwd=machines[0], stderr=subprocess.DEVNULL)
    processes.append(doomed)
    wait_until(lambda: len(_owners(nats_server.url, group)) == 4, 60, "the first worker to claim all partitions")
    survivor = subprocess.Popen(command, cwd=machines[1], stderr=subprocess.PIPE, text=True)
    processes.append(survivor)
    wait_until(lambda: len(set(_owners(nats_server.url, group).values())) == 2, 60, "a hand-over to the second worker")
    first = _orders(0, 300)
    _publish(nats_client, prefix, first)
    bucket = ObjectBucket(nats_server.url, bucket_name)
    try:
        def checkpointed(count: int) -> bool:  # every partition's pointer names an epoch that read its rows
            pointers = [CheckpointMirror(bucket, f"{group}/partition={p}", "").latest() for p in range(4)]
            return all(pointers) and sum(p["sources"]["orders"]["position"]["sequence"] > 0 for p in pointers) == 4 \
                and len(nats_client.stream_messages(rows_stream)) >= count

        wait_until(lambda: checkpointed(250), 60, "checkpoints of every partition in the bucket")
        doomed.send_signal(signal.SIGKILL)  # mid-run: windows are open, nothing is handed over
        doomed.wait(10)
        rest = _orders(300, 300) + _flush()
        _publish(nats_client, prefix, rest)
        mine = f"-{survivor.pid}-"
        wait_until(lambda: [mine in owner for owner in _owners(nats_server.url, group).values()] == [True] * 4, 30,
                   "the survivor to take every partition")
        expected = [(ws, c, n) for ws, c, n, _ in _expected_windows(first + rest)]

        def windows() -> list[tuple]:
            return sorted((datetime.fromisoformat(r["window_start"]).isoformat(), r["customer_id"], r["n"])
                          for r in (orjson.loads(m.data) for m in nats_client.stream_messages(windows_stream)))

        wait_until(lambda: len(nats_client.stream_messages(rows_stream)) >= 620 and windows() == expected, 60,
                   "the output after the take-over")
        status = subprocess.run(CLI + ["group", "pipeline.sql", "--group", group, "--checkpoint", checkpoint],
                                cwd=machines[0], capture_output=True, text=True, timeout=60)
        assert status.returncode == 0, status.stderr
        header, *lines = status.stdout.splitlines()
        assert header == f"group '{group}': 1 worker(s): " + _owners(nats_server.url, group)[0]
        table = list(csv.reader(lines))
        assert [row[0] for row in table] == ["partition", "0", "1", "2", "3"]
        assert all(row[2].isdigit() and row[5] == "0" for row in table[1:])  # an epoch from the bucket, no lag
        code, err = _stop(survivor)
        assert code == 143, err
        rows = nats_client.stream_messages(rows_stream)
        seqs = Counter(orjson.loads(m.data)["seq"] for m in rows)
        assert sorted(seqs) == list(range(1, 621)) and set(seqs.values()) == {1}  # nothing lost, nothing twice
        assert windows() == expected
        assert err.count("downloaded checkpoint epoch") >= 2  # at least the killed worker's two partitions
        assert "resumed from epoch" in err
        for p in range(4):  # the last few epochs only: checkpoint_keep = 3, so 4 slots at most
            slots = {n.split("/")[2] for n in bucket.names(f"{group}/partition={p}/") if n.count("/") > 2}
            assert slots <= {f"slot-{s}" for s in range(4)} and slots
    finally:
        bucket.close()


def test_a_bucket_url_is_for_groups_of_workers(tmp_path):
    (tmp_path / "p.sql").write_text("SELECT 1 AS x")
    run = subprocess.run(CLI + ["run", "p.sql", "--checkpoint", "nats://127.0.0.1:4222/CK"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 2
    assert "--checkpoint nats://127.0.0.1:4222/CK: checkpoints in a NATS object store are for groups of workers" \
        in run.stderr


def test_a_bucket_url_names_a_bucket():
    from sqlstream.errors import ConnectorError
    from sqlstream.runtime.checkpoint_mirror import split_bucket_url

    with pytest.raises(ConnectorError, match=r"nats://h:4222/a\.b: expected nats://host:port/BUCKET"):
        split_bucket_url("nats://h:4222/a.b")
