"""The PostgreSQL sink under checkpoints, against a real PostgreSQL: epochs driven through
prepare_commit / commit / recover by hand with a crash at every step (the writer dropped
without close, a new one opened and recovered), replayed epochs, rejected rows, a
fallback past a damaged checkpoint, and real ``sqlstream run`` processes killed by the
fault hook and restarted. The table must hold every epoch's rows exactly once."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

from sqlstream.connectors.base import DeadLetter, RunContext
from sqlstream.connectors.postgres.sink import PostgresSink, PostgresWriter
from sqlstream.errors import ConnectorError
from sqlstream.runtime.clock import ManualClock
from tests.integration import postgres_fixtures
from tests.integration.postgres_fixtures import POSTGRES_URL

pg_schema = postgres_fixtures.pg_schema  # the fixture

pytestmark = pytest.mark.timeout(180)

SQLSTREAM = str(Path(sys.executable).with_name("sqlstream"))
APPEND = pa.schema([("k", pa.string()), ("v", pa.int64())])
CHANGES = pa.schema([("__op", pa.string()), ("k", pa.string()), ("total", pa.int64())])
# the crash points of one epoch, in protocol order: rows staged, prepared, offsets written
# (the checkpoint has the epoch), committed (but commits/N not yet written)
CRASHES = ["after_writes", "after_prepare", "after_offsets", "after_commit"]


class Checkpoints:
    """The coordinator's side, in memory: what each epoch prepared (offsets/N) and which
    epochs committed (commits/N); a run resumes from the newest offsets."""

    def __init__(self):
        self.offsets: dict[int, dict | None] = {}
        self.commits: set[int] = set()

    def resume(self) -> tuple[int, dict | None]:
        if not self.offsets:
            return 0, None
        epoch = max(self.offsets)
        return epoch, self.offsets[epoch]


def _open(schema: str, table: str, columns: pa.Schema, letters: list[DeadLetter] | None = None,
          key: list[str] | None = None) -> PostgresWriter:
    ctx = RunContext(clock=ManualClock(), batch_size=50, checkpointing=True, upsert_key_columns=key,
                     dead_letter=None if letters is None else letters.extend)
    return PostgresSink("out", {"url": POSTGRES_URL, "table": table, "schema": schema}).open(columns, ctx)


def _crash(writer: PostgresWriter) -> None:
    """The process dies: no close, no flush; the server rolls back what is open."""
    writer.conn.close()


def _run(ck: Checkpoints, open_writer, epochs: list[list[pa.RecordBatch]], crash: tuple[str, int] | None = None) -> bool:
    """One run: open, recover, then write epochs (their input is a function of the epoch
    number, as a replayed source gives it) through the protocol. True if it finished."""
    writer = open_writer()
    resume, prepared = ck.resume()
    writer.recover(resume, prepared)
    if resume in ck.offsets:
        ck.commits.add(resume)
    for epoch in range(resume + 1, len(epochs) + 1):
        for batch in epochs[epoch - 1]:
            writer.write(batch)
        if crash == ("after_writes", epoch):
            return _crash(writer) or False
        prepared = writer.prepare_commit(epoch)
        if crash == ("after_prepare", epoch):
            return _crash(writer) or False
        ck.offsets[epoch] = prepared
        if crash == ("after_offsets", epoch):
            return _crash(writer) or False
        writer.commit(epoch, prepared)
        if crash == ("after_commit", epoch):
            return _crash(writer) or False
        ck.commits.add(epoch)
    writer.close()
    return True


def _append_epochs(epochs: int = 4, per_epoch: int = 120) -> list[list[pa.RecordBatch]]:
    out = []
    for e in range(epochs):
        rows = [(f"e{e}-r{i}", e * 1000 + i) for i in range(per_epoch)]
        table = pa.table({"k": [r[0] for r in rows], "v": pa.array([r[1] for r in rows], pa.int64())})
        out.append(table.to_batches(max_chunksize=45))
    return out


def _rows(conn, sql: str) -> list[tuple]:
    return sorted(conn.execute(sql).fetchall(), key=repr)


def _expected_append(epochs: list[list[pa.RecordBatch]]) -> list[tuple]:
    return sorted(((r["k"], r["v"]) for batches in epochs for b in batches for r in b.to_pylist()), key=repr)


@pytest.mark.parametrize("crash", CRASHES)
@pytest.mark.parametrize("epoch", [1, 3])
def test_append_epochs_land_exactly_once_whatever_step_crashes(pg_schema, crash, epoch):
    conn, schema = pg_schema
    epochs = _append_epochs()
    ck = Checkpoints()
    assert not _run(ck, lambda: _open(schema, "appended", APPEND), epochs, crash=(crash, epoch))
    if crash == "after_commit":  # the epoch is in the table already, and its marker
        assert conn.execute(f'SELECT count(*) FROM "{schema}".appended').fetchone()[0] == epoch * 120
    else:  # nothing of the epoch is visible
        assert conn.execute(f'SELECT count(*) FROM "{schema}".appended').fetchone()[0] == (epoch - 1) * 120
    assert _run(ck, lambda: _open(schema, "appended", APPEND), epochs)
    assert _rows(conn, f'SELECT k, v FROM "{schema}".appended') == _expected_append(epochs)
    markers = conn.execute(f'SELECT sink_id, epoch, rows FROM "{schema}".sqlstream_epochs ORDER BY epoch').fetchall()
    assert markers == [(f"out@{schema}.appended", e, 120) for e in range(1, 5)]
    stages = conn.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = %s "
                          "AND table_name LIKE 'sqlstream_stage_%%'", [schema]).fetchall()
    assert len(stages) == 1 and conn.execute(f'SELECT count(*) FROM "{schema}"."{stages[0][0]}"').fetchone() == (0,)


def test_a_crash_during_recovery_is_recovered_the_same_way(pg_schema):
    conn, schema = pg_schema
    epochs = _append_epochs(3)
    ck = Checkpoints()
    assert not _run(ck, lambda: _open(schema, "appended", APPEND), epochs, crash=("after_offsets", 2))
    writer = _open(schema, "appended", APPEND)  # recovers epoch 2 (lands it), then dies before writing
    writer.recover(*ck.resume())
    _crash(writer)
    assert _run(ck, lambda: _open(schema, "appended", APPEND), epochs)
    assert _rows(conn, f'SELECT k, v FROM "{schema}".appended') == _expected_append(epochs)


def test_rows_are_invisible_until_their_epoch_commits(pg_schema):
    conn, schema = pg_schema
    writer = _open(schema, "appended", APPEND)
    writer.recover(0, None)
    assert writer.delivery == "exactly-once"
    for batch in _append_epochs(1, 500)[0]:  # batch_size 50: flushed (staged) as it goes
        writer.write(batch)
    assert writer.rows_written >= 450 and writer.durable_rows(500) == 0
    prepared = writer.prepare_commit(1)
    assert prepared == {"rows": 500}
    assert conn.execute(f'SELECT count(*) FROM "{schema}".appended').fetchone() == (0,)
    writer.commit(1, prepared)
    assert conn.execute(f'SELECT count(*) FROM "{schema}".appended').fetchone() == (500,)
    assert writer.durable_rows(500) == 500
    writer.close()


def test_a_replayed_epoch_changes_nothing(pg_schema):
    conn, schema = pg_schema
    epochs = _append_epochs(2)
    writer = _open(schema, "appended", APPEND)
    writer.recover(0, None)
    prepared = {}
    for epoch in (1, 2):
        for batch in epochs[epoch - 1]:
            writer.write(batch)
        prepared[epoch] = writer.prepare_commit(epoch)
        writer.commit(epoch, prepared[epoch])
    writer.commit(2, prepared[2])  # committed twice
    writer.commit(1, prepared[1])
    before = _rows(conn, f'SELECT k, v FROM "{schema}".appended')
    assert before == _expected_append(epochs)
    writer.close()
    again = _open(schema, "appended", APPEND)  # a resumed run from the committed epoch 2
    again.recover(2, prepared[2])
    again.recover(2, prepared[2])
    again.close()
    assert _rows(conn, f'SELECT k, v FROM "{schema}".appended') == before
    assert conn.execute(f'SELECT count(*) FROM "{schema}".sqlstream_epochs').fetchone() == (2,)


def test_without_checkpoints_delivery_is_at_least_once(pg_schema):
    _, schema = pg_schema
    ctx = RunContext(clock=ManualClock(), batch_size=50)
    writer = PostgresSink("out", {"url": POSTGRES_URL, "table": "plain", "schema": schema}).open(APPEND, ctx)
    assert writer.delivery == "at-least-once"
    writer.close()


def _changelog(n: int, seed: int, having: int | None = None) -> tuple[pa.Table, list[pa.Table]]:
    """Events (k, v) and the changelog of ``SELECT k, sum(v) AS total FROM s GROUP BY k
    [HAVING sum(v) < having]`` as the engine emits it (+I, -U/+U, -D), per event."""
    rnd = random.Random(seed)
    events = [(f"key-{rnd.randrange(9)}", rnd.randrange(-20, 50)) for _ in range(n)]
    totals: dict[str, int] = {}
    ops, keys, values = [], [], []

    def visible(total: int) -> bool:
        return having is None or total < having

    for k, v in events:
        old = totals.get(k)
        new = (old or 0) + v
        totals[k] = new
        if old is not None and visible(old):
            ops.append("-U" if visible(new) else "-D")
            keys.append(k)
            values.append(old)
        if visible(new):
            ops.append("+U" if old is not None and visible(old) else "+I")
            keys.append(k)
            values.append(new)
    changes = pa.table({"__op": ops, "k": keys, "total": pa.array(values, pa.int64())})
    data = pa.table({"k": [e[0] for e in events], "v": pa.array([e[1] for e in events], pa.int64())})
    per_epoch = -(-changes.num_rows // 4)
    return data, [changes.slice(i, per_epoch) for i in range(0, changes.num_rows, per_epoch)]


def _duckdb(data: pa.Table, query: str) -> list[tuple]:
    con = duckdb.connect()
    con.register("s", data)
    return sorted(con.execute(query).fetchall(), key=repr)


@pytest.mark.parametrize("crash", CRASHES)
@pytest.mark.parametrize("having", [None, 40])
def test_upsert_epochs_leave_the_final_result_whatever_step_crashes(pg_schema, crash, having):
    conn, schema = pg_schema
    data, changes = _changelog(700, 11, having)
    epochs = [t.to_batches(max_chunksize=37) for t in changes]
    ck = Checkpoints()

    def open_writer():
        return _open(schema, "totals", CHANGES, key=["k"])

    assert not _run(ck, open_writer, epochs, crash=(crash, 2))
    assert _run(ck, open_writer, epochs)
    query = "SELECT k, sum(v) AS total FROM s GROUP BY k" + ("" if having is None else f" HAVING sum(v) < {having}")
    assert _rows(conn, f'SELECT k, total FROM "{schema}".totals') == _duckdb(data, query)


def test_keyless_changelog_epochs_leave_the_final_result(pg_schema):
    """No key: the table as a multiset, each epoch's changes applied in order."""
    conn, schema = pg_schema
    data, changes = _changelog(400, 12, having=30)
    epochs = [t.to_batches(max_chunksize=29) for t in changes]
    ck = Checkpoints()
    assert not _run(ck, lambda: _open(schema, "multiset", CHANGES), epochs, crash=("after_offsets", 3))
    assert _run(ck, lambda: _open(schema, "multiset", CHANGES), epochs)
    assert _rows(conn, f'SELECT k, total FROM "{schema}".multiset') == _duckdb(
        data, "SELECT k, sum(v) FROM s GROUP BY k HAVING sum(v) < 30")


def test_a_rejected_row_is_a_dead_letter_and_the_rest_of_the_epoch_lands(pg_schema):
    conn, schema = pg_schema
    conn.execute(f'CREATE TABLE "{schema}".checked (k text, v bigint CHECK (v <> 13) CHECK (v <> 1077))')
    epochs = _append_epochs(2, 100)
    extra = pa.table({"k": ["nul\x00byte"], "v": pa.array([5], pa.int64())}).to_batches()
    epochs[1] = epochs[1] + extra  # a NUL byte in text: rejected already when staged
    letters: list[DeadLetter] = []
    ck = Checkpoints()
    assert not _run(ck, lambda: _open(schema, "checked", APPEND, letters), epochs, crash=("after_offsets", 2))
    assert _run(ck, lambda: _open(schema, "checked", APPEND, letters), epochs)
    expected = [r for r in _expected_append(epochs) if r[1] not in (13, 1077) and r[0] != "nul\x00byte"]
    assert _rows(conn, f'SELECT k, v FROM "{schema}".checked') == expected
    assert sorted((d.source, d.reason, json.loads(d.raw)["v"]) for d in letters) == [
        ("out", "sink", 5), ("out", "sink", 13), ("out", "sink", 1077)]
    assert any("checked_v_check" in d.detail for d in letters)
    assert conn.execute(f'SELECT epoch, rows FROM "{schema}".sqlstream_epochs ORDER BY epoch').fetchall() == [
        (1, 99), (2, 99)]


def test_a_rejected_row_without_dead_letters_fails_the_commit_with_its_reason(pg_schema):
    conn, schema = pg_schema
    conn.execute(f'CREATE TABLE "{schema}".checked (k text, v bigint CHECK (v <> 13))')
    writer = _open(schema, "checked", APPEND, letters=None)
    writer.recover(0, None)
    for batch in _append_epochs(1, 100)[0]:
        writer.write(batch)
    prepared = writer.prepare_commit(1)
    with pytest.raises(ConnectorError) as info:
        writer.commit(1, prepared)
    assert 'violates check constraint "checked_v_check"' in info.value.message
    assert conn.execute(f'SELECT count(*) FROM "{schema}".checked').fetchone() == (0,)
    writer.abort()


def _land(schema: str, table: str, columns: pa.Schema, epochs: list[list[pa.RecordBatch]], key=None) -> dict:
    writer = _open(schema, table, columns, key=key)
    writer.recover(0, None)
    prepared = {}
    for epoch, batches in enumerate(epochs, start=1):
        for batch in batches:
            writer.write(batch)
        prepared[epoch] = writer.prepare_commit(epoch)
        writer.commit(epoch, prepared[epoch])
    writer.close()
    return prepared


def test_a_fallback_past_landed_append_epochs_is_refused_with_the_fix(pg_schema):
    conn, schema = pg_schema
    prepared = _land(schema, "appended", APPEND, _append_epochs(4, 10))
    writer = _open(schema, "appended", APPEND)
    with pytest.raises(ConnectorError) as info:  # checkpoints 3 and 4 were damaged: resume at 2
        writer.recover(2, prepared[2])
    writer.abort()
    assert info.value.message == (f"sink 'out': epochs 3–4 landed in {schema}.appended after checkpoint 2, which "
                                  "this run resumes (a later checkpoint was damaged); their rows would be written twice")
    assert (f'DELETE FROM "{schema}"."sqlstream_epochs" WHERE sink_id = \'out@{schema}.appended\' AND epoch > 2'
            in info.value.hint)
    assert conn.execute(f'SELECT count(*) FROM "{schema}".appended').fetchone() == (40,)


def test_a_fallback_past_landed_upsert_epochs_applies_them_again(pg_schema):
    conn, schema = pg_schema
    data, changes = _changelog(300, 13)
    epochs = [t.to_batches() for t in changes]
    prepared = _land(schema, "totals", CHANGES, epochs, key=["k"])
    ck = Checkpoints()
    ck.offsets = {1: prepared[1]}  # checkpoints 2.. were damaged
    assert _run(ck, lambda: _open(schema, "totals", CHANGES, key=["k"]), epochs)
    assert _rows(conn, f'SELECT k, total FROM "{schema}".totals') == _duckdb(
        data, "SELECT k, sum(v) FROM s GROUP BY k")


def test_a_fresh_history_forgets_markers_and_staged_rows(pg_schema):
    conn, schema = pg_schema
    _land(schema, "appended", APPEND, _append_epochs(2, 10))
    writer = _open(schema, "appended", APPEND)
    writer.recover(2, None)
    for batch in _append_epochs(1, 10)[0]:
        writer.write(batch)
    writer.flush()  # staged as epoch 3, never prepared
    _crash(writer)
    writer = _open(schema, "appended", APPEND)
    writer.recover(0, None)  # --from-scratch
    assert conn.execute(f'SELECT count(*) FROM "{schema}".sqlstream_epochs').fetchone() == (0,)
    stage = writer.epochs.stage.sql
    assert conn.execute(f"SELECT count(*) FROM {stage}").fetchone() == (0,)
    writer.close()
    assert conn.execute(f'SELECT count(*) FROM "{schema}".appended').fetchone() == (20,)  # what landed is kept


def test_a_lost_staging_table_is_a_clear_error(pg_schema):
    conn, schema = pg_schema
    writer = _open(schema, "appended", APPEND)
    writer.recover(0, None)
    for batch in _append_epochs(1, 10)[0]:
        writer.write(batch)
    prepared = writer.prepare_commit(1)
    stage = writer.epochs.stage.sql
    _crash(writer)
    conn.execute(f"TRUNCATE {stage}")
    writer = _open(schema, "appended", APPEND)
    with pytest.raises(ConnectorError) as info:
        writer.recover(1, prepared)
    writer.abort()
    assert info.value.message == (f"sink 'out': the checkpoint resumes at epoch 1 with 10 rows prepared, but "
                                  f"{writer.epochs.stage} holds 0 of them")


def test_writing_before_recover_is_refused(pg_schema):
    _, schema = pg_schema
    writer = _open(schema, "appended", APPEND)
    writer.write(_append_epochs(1, 10)[0][0])
    with pytest.raises(ConnectorError) as info:
        writer.flush()
    writer.abort()
    assert "written to before recover()" in info.value.message


# -- real processes -------------------------------------------------------------------------------
# Stateless queries only: operators do not save their state in checkpoints yet (the
# snapshots hold watermarks only), so an updating result resumed after a kill would start
# its aggregates over; the upsert epochs are covered by hand above.

PIPELINE = """
SET file_batch_size = 100;
SET checkpoint_interval = '1ms';
CREATE SOURCE orders (order_id BIGINT, customer VARCHAR, amount BIGINT)
  WITH (connector = 'file', path = 'orders.jsonl', format = 'json');
CREATE SINK copied AS SELECT order_id, customer, amount FROM orders
  WITH (connector = 'postgres', url = '{url}', schema = '{schema}', table = 'copied');
CREATE SINK big AS SELECT order_id, upper(customer) AS customer FROM orders WHERE amount > 50
  WITH (connector = 'postgres', url = '{url}', schema = '{schema}', table = 'big');
CREATE SINK totals AS SELECT customer, count(*) AS n, sum(amount) AS total FROM orders GROUP BY customer
  WITH (connector = 'postgres', url = '{url}', schema = '{schema}', table = 'totals');
"""


def _orders(folder: Path, rows: int, schema: str) -> list[dict]:
    rnd = random.Random(5)
    orders = [{"order_id": i, "customer": f"c{rnd.randrange(12)}", "amount": rnd.randrange(1, 100)}
              for i in range(rows)]
    (folder / "orders.jsonl").write_text("".join(json.dumps(o) + "\n" for o in orders))
    (folder / "p.sql").write_text(PIPELINE.format(url=POSTGRES_URL, schema=schema))
    return orders


def _check(conn, schema: str, orders: list[dict]) -> None:
    got = conn.execute(f'SELECT order_id, customer, amount FROM "{schema}".copied ORDER BY order_id').fetchall()
    assert got == [(o["order_id"], o["customer"], o["amount"]) for o in orders]
    assert _rows(conn, f'SELECT order_id, customer FROM "{schema}".big') == _duckdb(
        pa.Table.from_pylist(orders), "SELECT order_id, upper(customer) FROM s WHERE amount > 50")
    # an updating result: the aggregates' state comes back from the checkpoint, the upserts land once
    assert _rows(conn, f'SELECT customer, n, total FROM "{schema}".totals') == _duckdb(
        pa.Table.from_pylist(orders), "SELECT customer, count(*), sum(amount) FROM s GROUP BY customer")


def _sqlstream(folder: Path, fault: str | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.pop("SQLSTREAM_CHECKPOINT_FAULT", None)
    if fault:
        env["SQLSTREAM_CHECKPOINT_FAULT"] = fault
    return subprocess.run([SQLSTREAM, "run", "p.sql", "--checkpoint", "ck"], cwd=folder, env=env,
                          capture_output=True, text=True, timeout=150)


@pytest.mark.parametrize("fault", ["after_offsets@2", "after_prepare@3", "after_commit@3"])
def test_a_killed_run_restarted_writes_each_row_once(tmp_path, pg_schema, fault):
    conn, schema = pg_schema
    orders = _orders(tmp_path, 8000, schema)
    killed = _sqlstream(tmp_path, fault)
    assert killed.returncode == -9, killed.stderr
    landed = conn.execute(f'SELECT count(*) FROM "{schema}".copied').fetchone()[0]
    assert 0 < landed < len(orders)  # it died mid-run, with epochs landed
    done = _sqlstream(tmp_path)
    assert done.returncode == 0, done.stderr
    assert "resuming from checkpoint epoch" in done.stderr
    _check(conn, schema, orders)


def test_runs_killed_whenever_rows_landed_and_restarted_write_each_row_once(tmp_path, pg_schema):
    """SIGKILL from outside, each time once more rows landed than before (not at a
    chosen protocol step), three times; then a run to the end."""
    conn, schema = pg_schema
    orders = _orders(tmp_path, 30000, schema)
    landed, kills = 0, 0
    for _ in range(3):
        process = subprocess.Popen([SQLSTREAM, "run", "p.sql", "--checkpoint", "ck"], cwd=tmp_path,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while process.poll() is None and time.monotonic() < deadline:
            exists = conn.execute("SELECT to_regclass(%s)", [f'"{schema}".copied']).fetchone()[0]
            now = conn.execute(f'SELECT count(*) FROM "{schema}".copied').fetchone()[0] if exists else 0
            if now > landed:
                landed = now
                break
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            kills += 1
        process.wait(timeout=60)
    done = _sqlstream(tmp_path)
    assert done.returncode == 0, done.stderr
    assert kills >= 1
    _check(conn, schema, orders)
