"""Checkpoints under fire, with real ``sqlstream run`` processes: SIGKILL at random
moments (R1), at every step of the commit protocol (R2), during recovery (R3), torn or
altered checkpoint files (R6/R7) and a changed pipeline. Each run's output must equal
an uninterrupted run's: no row lost, none twice, no part file outside the manifest."""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import duckdb
import pyarrow.dataset as ds
import pytest

from sqlstream.runtime.checkpoints import CheckpointStore

SQLSTREAM = str(Path(sys.executable).with_name("sqlstream"))

PIPELINE = """
SET file_batch_size = 250;
CREATE SOURCE orders (order_id BIGINT, customer VARCHAR, amount DOUBLE, ts TIMESTAMP(3),
                      WATERMARK FOR ts AS ts - INTERVAL '5' SECOND)
  WITH (connector = 'file', path = 'orders.jsonl', format = 'json');
CREATE SOURCE payments (order_id BIGINT, paid DOUBLE, paid_at TIMESTAMP(3),
                        WATERMARK FOR paid_at AS paid_at - INTERVAL '5' SECOND)
  WITH (connector = 'file', path = 'payments.jsonl', format = 'json');

CREATE SINK per_customer AS
  SELECT window_start, window_end, customer, count(*) AS n, sum(amount) AS total
  FROM TUMBLE(orders, ts, INTERVAL '{window}' SECOND) GROUP BY window_start, window_end, customer
  WITH (connector = 'file', path = 'out/per_customer', format = 'parquet');
CREATE SINK sessions AS
  SELECT window_start, window_end, customer, count(*) AS n, max(amount) AS top
  FROM SESSION(orders, ts, INTERVAL '4' SECOND) GROUP BY window_start, window_end, customer
  WITH (connector = 'file', path = 'out/sessions.jsonl', format = 'json');
CREATE SINK paid AS
  SELECT o.order_id, o.customer, o.amount, p.paid, p.paid_at
  FROM orders o JOIN payments p
    ON o.order_id = p.order_id AND p.paid_at BETWEEN o.ts AND o.ts + INTERVAL '20' SECOND
  WITH (connector = 'file', path = 'out/paid', format = 'parquet');
CREATE SINK big AS
  SELECT order_id, upper(customer) AS customer, round(amount * 1.2, 2) AS gross
  FROM orders WHERE amount > 90
  WITH (connector = 'file', path = 'out/big.jsonl', format = 'json');
"""

SINKS = {"per_customer": "parquet", "sessions": "json", "paid": "parquet", "big": "json"}
LONG_ROWS = 60_000
FAULT_POINTS = ["after_prepare", "after_state", "after_offsets", "after_commit", "after_commits", "after_acks"]


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3]


def _write_inputs(folder: Path, rows: int, seed: int = 7) -> None:
    """Orders with event times up to 3 s out of order, payments for most of them, and a
    few malformed lines (dead letters, not failures)."""
    rng = random.Random(seed)
    start = 1_700_000_000_000
    orders, payments = [], []
    for i in range(rows):
        ts = start + i * 20 + rng.randint(-3000, 0)
        orders.append(json.dumps({"order_id": i, "customer": f"c{rng.randint(0, 40)}",
                                  "amount": round(rng.uniform(1, 100), 2), "ts": _iso(ts)}))
        if rng.random() < 0.8:
            paid_at = ts + rng.randint(0, 25_000)
            payments.append((paid_at, json.dumps({"order_id": i, "paid": round(rng.uniform(1, 100), 2),
                                                  "paid_at": _iso(paid_at)})))
        if i % 5000 == 17:
            orders.append('{"order_id": "not a number", "ts": ')
    payments.sort(key=lambda p: p[0] + rng.randint(-2000, 0))
    (folder / "orders.jsonl").write_text("\n".join(orders) + "\n")
    (folder / "payments.jsonl").write_text("\n".join(p for _, p in payments) + "\n")


def _pipeline(folder: Path, window: int = 10, interval: str = "100ms") -> None:
    (folder / "p.sql").write_text(f"SET checkpoint_interval = '{interval}';\n" + PIPELINE.format(window=window))


def _start(folder: Path, *args: str, fault: str | None = None) -> subprocess.Popen:
    env = dict(os.environ)
    env.pop("SQLSTREAM_CHECKPOINT_FAULT", None)
    if fault:
        env["SQLSTREAM_CHECKPOINT_FAULT"] = fault
    return subprocess.Popen([SQLSTREAM, "run", "p.sql", "--checkpoint", "ck", *args], cwd=folder, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _run(folder: Path, *args: str, fault: str | None = None) -> subprocess.CompletedProcess:
    process = _start(folder, *args, fault=fault)
    _, err = process.communicate(timeout=180)
    return subprocess.CompletedProcess(process.args, process.returncode, "", err)


def _sink_rows(folder: Path, name: str) -> list[str]:
    """The sink's rows as sorted JSON texts (Parquet through pyarrow.dataset, which skips
    hidden files as DuckDB's globs do)."""
    path = folder / "out" / (name + (".jsonl" if SINKS[name] == "json" else ""))
    if SINKS[name] == "json":  # with checkpoints a directory of parts; without, one file
        files = sorted(path.glob("*.jsonl")) if path.is_dir() else [path] if path.exists() else []
        lines = [line for f in files for line in f.read_text().splitlines()]
        return sorted(json.dumps(json.loads(line), sort_keys=True) for line in lines)
    if not path.exists():
        return []
    table = ds.dataset(str(path), format="parquet").to_table()
    return sorted(json.dumps(row, sort_keys=True, default=str) for row in table.to_pylist())


def _digest(folder: Path) -> dict[str, tuple[int, str]]:
    out = {}
    for name in SINKS:
        rows = _sink_rows(folder, name)
        out[name] = (len(rows), hashlib.sha256("\n".join(rows).encode()).hexdigest())
    return out


def _leftovers(folder: Path) -> list[str]:
    """Files in the sinks' output that no reader should see: in-progress or uncommitted parts."""
    found = []
    for root, _, files in os.walk(folder / "out"):
        for name in files:
            if name.endswith((".inprogress", ".tmp")) or (name.startswith(".") and "manifest" not in name):
                found.append(os.path.join(root, name))
    return found


def _reference_run(folder: Path, rows: int, plain: bool = False) -> dict[str, tuple[int, str]]:
    _write_inputs(folder, rows)
    if plain:
        (folder / "p.sql").write_text(PIPELINE.format(window=10))
        done = subprocess.run([SQLSTREAM, "run", "p.sql"], cwd=folder, capture_output=True, text=True, timeout=180)
    else:
        _pipeline(folder)
        done = _run(folder)
    assert done.returncode == 0, done.stderr
    digest = _digest(folder)
    assert all(count > 0 for count, _ in digest.values()), digest
    return digest


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict[str, tuple[int, str]]:
    """The uninterrupted run's output over 6,000 orders (checkpointing on; it equals a
    run without)."""
    digest = _reference_run(tmp_path_factory.mktemp("reference"), 6000)
    assert _reference_run(tmp_path_factory.mktemp("plain"), 6000, plain=True) == digest
    return digest


@pytest.fixture(scope="module")
def long_reference(tmp_path_factory) -> dict[str, tuple[int, str]]:
    """The same over 60,000 orders: a run of a few seconds, long enough to kill at random."""
    return _reference_run(tmp_path_factory.mktemp("long_reference"), LONG_ROWS)


def _fresh(tmp_path: Path, rows: int = 6000, interval: str = "10ms") -> Path:
    """Inputs and the pipeline; checkpoints every 10 ms, so that a run of a fraction of a
    second on a fast machine still takes the several epochs the fault points name."""
    _write_inputs(tmp_path, rows)
    _pipeline(tmp_path, interval=interval)
    return tmp_path


def _finish(folder: Path) -> subprocess.CompletedProcess:
    done = _run(folder)
    assert done.returncode == 0, done.stderr
    assert _leftovers(folder) == []
    return done


def test_uninterrupted_run_matches_duckdb(tmp_path, reference):
    """The reference itself is right: the TUMBLE sink equals DuckDB's batch answer over
    the same file (malformed lines left out, late rows none with a 5 s delay)."""
    folder = _fresh(tmp_path)
    _finish(folder)
    expected = duckdb.sql(f"""
        SELECT time_bucket(INTERVAL 10 SECOND, ts) AS window_start, customer, count(*) AS n,
               round(sum(amount), 6) AS total
        FROM read_json('{folder / "orders.jsonl"}', format = 'newline_delimited', ignore_errors = true,
                       columns = {{order_id: 'BIGINT', customer: 'VARCHAR', amount: 'DOUBLE', ts: 'TIMESTAMP'}})
        WHERE customer IS NOT NULL GROUP BY ALL ORDER BY ALL""").fetchall()
    per_customer = ds.dataset(str(folder / "out" / "per_customer"), format="parquet").to_table()  # noqa: F841 (DuckDB reads it by name)
    actual = duckdb.sql("SELECT window_start::TIMESTAMP, customer, n, round(total, 6) FROM per_customer ORDER BY ALL").fetchall()
    assert [(a.replace(tzinfo=None), *rest) for a, *rest in actual] == [
        (e.replace(tzinfo=None), *rest) for e, *rest in expected]
    assert _digest(folder) == reference


@pytest.mark.parametrize("point", FAULT_POINTS)
def test_crash_at_every_commit_step(tmp_path, reference, point):
    """R2: SIGKILL exactly at ``point`` of epoch 2; the next run recovers with nothing
    lost and nothing twice."""
    folder = _fresh(tmp_path)
    crashed = _run(folder, fault=f"{point}@2")
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    done = _finish(folder)
    assert "resuming from checkpoint" in done.stderr
    assert _digest(folder) == reference


def test_crash_during_recovery(tmp_path, reference):
    """R3: killed while committing epoch 2, killed again while restoring, then recovered."""
    folder = _fresh(tmp_path)
    assert _run(folder, fault="after_offsets@2").returncode == -signal.SIGKILL
    assert _run(folder, fault="during_restore").returncode == -signal.SIGKILL
    assert _run(folder, fault="during_restore").returncode == -signal.SIGKILL
    _finish(folder)
    assert _digest(folder) == reference


def _random_kills(folder: Path, kills: int, seed: int) -> int:
    """Start the run, let it take at least one checkpoint, SIGKILL it at a random moment
    after that; ``kills`` times (or until a run finishes first). Returns the kills."""
    rng = random.Random(seed)
    store = CheckpointStore(str(folder / "ck"))
    hits = 0
    for _ in range(kills):
        before = max(store.epochs(), default=0)
        process = _start(folder)
        deadline = time.monotonic() + 60
        while process.poll() is None and max(store.epochs(), default=0) <= before and time.monotonic() < deadline:
            time.sleep(0.01)  # polling a child process's progress, not waiting a fixed time
        time.sleep(rng.uniform(0, 0.6))
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            hits += 1
        process.communicate(timeout=60)
        if process.returncode == 0:
            break
    return hits


def test_random_kills(tmp_path, long_reference):
    """R1, short: three kills at random moments of a running pipeline."""
    _write_inputs(tmp_path, LONG_ROWS)
    _pipeline(tmp_path, interval="200ms")
    hits = _random_kills(tmp_path, kills=3, seed=1)
    _finish(tmp_path)
    assert hits >= 2
    assert _digest(tmp_path) == long_reference


@pytest.mark.slow
def test_random_kills_many(tmp_path, long_reference):
    """R1: twenty and more kills at seeded random moments, checkpoints every 0.5 s."""
    _write_inputs(tmp_path, LONG_ROWS)
    _pipeline(tmp_path, interval="500ms")
    total = 0
    for round_ in range(16):  # a round ends early when a run finishes before its next kill
        shutil.rmtree(tmp_path / "out", ignore_errors=True)
        shutil.rmtree(tmp_path / "ck", ignore_errors=True)
        total += _random_kills(tmp_path, kills=4, seed=100 + round_)
        _finish(tmp_path)
        assert _digest(tmp_path) == long_reference
        if total >= 20:
            break
    assert total >= 20


def _checkpointed_to_epoch(folder: Path, epoch: int) -> None:
    crashed = _run(folder, fault=f"after_commits@{epoch}")
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr


def test_torn_last_offsets_file_falls_back(tmp_path, reference):
    """R6: the newest offsets file is cut short (a torn write): recovery warns and resumes
    from the epoch before, whose committed output the sinks roll back to."""
    folder = _fresh(tmp_path)
    _checkpointed_to_epoch(folder, 3)
    last = sorted((folder / "ck" / "offsets").iterdir())[-1]
    last.write_bytes(last.read_bytes()[: len(last.read_bytes()) // 2])
    done = _finish(folder)
    assert "damaged" in done.stderr and "resuming from epoch 2" in done.stderr
    assert _digest(folder) == reference


def test_altered_state_file_falls_back(tmp_path, reference):
    """R6: a state file of the newest epoch does not match its checksum."""
    folder = _fresh(tmp_path)
    _checkpointed_to_epoch(folder, 3)
    state = sorted((folder / "ck" / "state").iterdir())[-1]
    files = sorted(state.iterdir())
    assert files, "epoch 3 holds operator state"
    data = bytearray(files[0].read_bytes())
    data[len(data) // 2] ^= 0xFF
    files[0].write_bytes(bytes(data))
    done = _finish(folder)
    assert "does not match its checksum" in done.stderr
    assert _digest(folder) == reference


def test_only_checkpoint_damaged_is_a_clear_error(tmp_path):
    """R7: the only checkpoint is damaged: a clear error and exit 1, never a guess."""
    folder = _fresh(tmp_path)
    _checkpointed_to_epoch(folder, 1)
    (only,) = (folder / "ck" / "offsets").iterdir()
    only.write_text("{")
    done = _run(folder)
    assert done.returncode == 1
    assert "no intact checkpoint" in done.stderr and "--from-scratch" in done.stderr
    assert "Traceback" not in done.stderr


def test_changed_pipeline_is_refused_then_started_over(tmp_path, reference):
    """A window size changed between runs: exit 2 naming the change; --from-scratch
    starts over and produces the new pipeline's output."""
    folder = _fresh(tmp_path)
    _checkpointed_to_epoch(folder, 2)
    _pipeline(folder, window=20)
    done = _run(folder)
    assert done.returncode == 2, done.stderr
    assert "different pipeline" in done.stderr and "sink 'per_customer'" in done.stderr
    assert "Traceback" not in done.stderr
    again = _run(folder, "--from-scratch")
    assert again.returncode == 0, again.stderr
    _pipeline(folder, window=10)
    assert _run(folder, "--from-scratch").returncode == 0
    assert _digest(folder) == reference
