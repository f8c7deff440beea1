"""``SHOW WORKERS`` and ``\\workers`` in the REPL (docs/scale-out.md): a session that
declares the partitioned source a group of workers runs shows the group's workers,
partition owners and last checkpoints, as ``sqlstream group`` does; a session without
one, or a server with several groups and none named, gets an error that says what to
do."""

from __future__ import annotations

import asyncio
import csv
import io
import subprocess
import uuid

import nats
import orjson
import pytest
from conftest import NatsServer, wait_until
from test_scale_out import CLI, _orders, _owners, _stop

from sqlstream.cli.repl import Repl
from sqlstream.connectors.base import Partition
from sqlstream.errors import SqlAnalysisError
from sqlstream.runtime.checkpoints import CheckpointStore
from sqlstream.scaleout.partition_run import partition_checkpoint_dir
from sqlstream.session import Session

pytestmark = pytest.mark.nats


def _source(url: str, stream: str, prefix: str) -> str:
    return (f"CREATE SOURCE orders (customer_id BIGINT, amount BIGINT, ts TIMESTAMP) "
            f"WITH (connector = 'nats', url = '{url}', stream = '{stream}', subject = '{prefix}.{{customer_id}}', "
            "partitions = 4, partition_by = 'customer_id');")


def _repl(tmp_path, lines: list[str]) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    repl = Repl(Session(base_dir=str(tmp_path), dead_letter_path="off"), out=out, err=err)
    repl.run_lines(lines, "<stdin>", str(tmp_path))
    return out.getvalue(), err.getvalue()


def _table(text: str) -> list[list[str]]:
    return list(csv.reader(text.strip().splitlines()))


def test_show_workers_lists_the_group_of_the_sessions_partitioned_source(tmp_path, processes):
    server = NatsServer(tmp_path / "nats").start()  # its own server: "the one group on it" is this test's
    try:
        url = server.url
        tag = uuid.uuid4().hex[:8]
        stream, prefix, group = f"ORD{tag}", f"orders{tag}", f"g{tag}"
        (tmp_path / "pipeline.sql").write_text(
            _source(url, stream, prefix) + "\nCREATE SINK rows AS SELECT customer_id, amount FROM orders "
            "WITH (connector = 'file', path = 'out/rows', format = 'json');\n")
        worker = subprocess.Popen(CLI + ["worker", "pipeline.sql", "--group", group, "--checkpoint", "ck",
                                         "--checkpoint-interval", "200ms", "--lease-ttl", "2s"],
                                  cwd=tmp_path, stderr=subprocess.PIPE, text=True)
        processes.append(worker)
        wait_until(lambda: len(_owners(url, group)) == 4, 60, "the worker to claim every partition")

        async def publish():  # rows in every partition, so each takes a checkpoint
            nc = await nats.connect(url)
            try:
                for row in _orders(0, 40):
                    await nc.jetstream().publish(f"{prefix}.{row['customer_id']}", orjson.dumps(row))
            finally:
                await nc.close()

        asyncio.run(publish())
        stores = [CheckpointStore(partition_checkpoint_dir(str(tmp_path / "ck"), Partition(p, 4))) for p in range(4)]
        wait_until(lambda: all(s.exists() and s.committed_epochs() for s in stores), 60, "a checkpoint per partition")

        out, err = _repl(tmp_path, [_source(url, stream, prefix), "SET checkpoint_dir = 'ck';", "\\format csv",
                                    "SHOW WORKERS;"])
        assert err == ""
        header, *rest = out.strip().splitlines()
        me = f"-{worker.pid}-"
        assert header.startswith(f"group '{group}': 1 worker(s): ") and me in header
        table = _table("\n".join(rest))
        assert table[0] == ["partition", "owner", "checkpoint", "taken", "stream_seq", "lag"]
        assert [r[0] for r in table[1:]] == ["0", "1", "2", "3"]
        assert all(me in r[1] and r[2].isdigit() for r in table[1:])

        async def another_group():  # a second group on the server: SHOW WORKERS must be told which
            nc = await nats.connect(url)
            try:
                await nc.jetstream().create_key_value(bucket=f"sqlstream_other{tag}", ttl=2.0)
            finally:
                await nc.close()

        asyncio.run(another_group())
        out, err = _repl(tmp_path, [_source(url, stream, prefix), "SHOW WORKERS;", "\\format csv",
                                    f"\\workers {group}"])
        assert f"SHOW WORKERS: 2 worker groups on {url}: g{tag}, other{tag}" in err
        assert f"hint: name one: SHOW WORKERS g{tag}" in err
        header, *rest = out.strip().splitlines()[-6:]
        assert header.startswith(f"group '{group}': 1 worker(s)")
        assert [r[2] for r in _table("\n".join(rest))[1:]] == [""] * 4  # no checkpoint_dir set: owners only
        code, text = _stop(worker)
        assert code == 143, text
    finally:
        server.stop()


def test_show_workers_needs_a_partitioned_source(tmp_path):
    out, err = _repl(tmp_path, ["SHOW WORKERS;"])
    assert "SHOW WORKERS: no partitioned source in this session" in err
    assert "partitions = 4, partition_by = 'customer_id'" in err


def test_show_workers_outside_the_repl_says_where_it_is_answered():
    with pytest.raises(SqlAnalysisError, match="SHOW WORKERS is answered by the REPL") as raised:
        Session(dead_letter_path="off").execute("SHOW WORKERS")
    assert raised.value.hint == "sqlstream repl (or sqlstream group FILE --group NAME --checkpoint ...)"
