"""File sinks across crashes and restarts, and signals while ``sqlstream run`` starts,
with real processes: a rerun killed with SIGKILL leaves the previous output whole (and
its temporary file is removed by the next run); a JetStream-fed file sink keeps the
rows earlier runs acknowledged; SIGTERM / SIGINT stop a run that is still listing files."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import orjson
import pyarrow.parquet as pq
import pytest
from conftest import BackgroundRun, wait_until

from sqlstream import Session

SQLSTREAM = str(Path(sys.executable).with_name("sqlstream"))


def _write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text).lstrip())
    return path


def _generator(max_rows: int | None) -> str:
    bound = f", max_rows = {max_rows}" if max_rows is not None else ""
    return (f"CREATE SOURCE nums (n BIGINT) WITH (connector = 'generator', rows_per_second = 0{bound},"
            f" fields.n.kind = 'sequence');\n")


def _run(folder: Path, name: str) -> subprocess.CompletedProcess:
    return subprocess.run([SQLSTREAM, "run", name], cwd=folder, capture_output=True, text=True, timeout=120)


def _temporaries(folder: Path) -> list[str]:
    return sorted(n for n in os.listdir(folder) if n.endswith(".inprogress"))


def _kill_when(folder: Path, name: str, ready) -> None:
    """Start ``sqlstream run name``, SIGKILL it once ``ready()`` holds."""
    process = subprocess.Popen([SQLSTREAM, "run", name], cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_until(lambda: ready() or process.poll() is not None, timeout=60, what="the rerun to write output")
        assert process.poll() is None, process.stderr.read().decode()
    finally:
        process.kill()
        process.wait(10)


def _parts(folder: Path) -> dict[str, list[int]]:
    return {n: pq.read_table(folder / n).column("n").to_pylist() for n in sorted(os.listdir(folder)) if not n.startswith(".")}


@pytest.mark.parametrize("fmt", ["json", "csv", "parquet"])
def test_a_rerun_killed_mid_way_leaves_the_previous_output_whole(tmp_path, fmt):
    sink = f"CREATE SINK out AS SELECT n FROM nums WITH (connector = 'file', path = 'out.{fmt}', format = '{fmt}');\n"
    _write(tmp_path, "bounded.sql", _generator(1000) + sink)
    _write(tmp_path, "endless.sql", _generator(None) + sink)
    assert _run(tmp_path, "bounded.sql").returncode == 0
    before = (tmp_path / f"out.{fmt}").read_bytes()

    def temporary_has_rows():
        names = _temporaries(tmp_path)
        return names and (tmp_path / names[0]).stat().st_size > (0 if fmt != "parquet" else 4096)

    _kill_when(tmp_path, "endless.sql", temporary_has_rows)
    assert (tmp_path / f"out.{fmt}").read_bytes() == before  # the killed rerun changed nothing
    assert len(_temporaries(tmp_path)) == 1  # what it was writing, under its hidden name

    _write(tmp_path, "small.sql", _generator(5) + sink)
    result = _run(tmp_path, "small.sql")
    assert result.returncode == 0, result.stderr
    assert _temporaries(tmp_path) == []  # the dead run's temporary file is removed
    if fmt == "parquet":
        assert pq.read_table(tmp_path / "out.parquet").column("n").to_pylist() == [0, 1, 2, 3, 4]
    elif fmt == "json":
        assert [orjson.loads(line)["n"] for line in (tmp_path / "out.json").read_bytes().splitlines()] == [0, 1, 2, 3, 4]
    else:
        assert (tmp_path / "out.csv").read_text().splitlines() == ['"n"', "0", "1", "2", "3", "4"]


def test_a_rerun_killed_mid_way_keeps_the_previous_parquet_parts(tmp_path):
    sink = ("CREATE SINK out AS SELECT n FROM nums WITH (connector = 'file', path = 'parts', format = 'parquet',"
            " rows_per_file = 400);\n")
    _write(tmp_path, "bounded.sql", _generator(1000) + sink)
    _write(tmp_path, "endless.sql", _generator(None) + sink)
    assert _run(tmp_path, "bounded.sql").returncode == 0
    before = _parts(tmp_path / "parts")
    assert [len(v) for v in before.values()] == [400, 400, 200]

    _kill_when(tmp_path, "endless.sql", lambda: (tmp_path / "parts" / "part-00004.parquet").exists())
    after = _parts(tmp_path / "parts")
    assert {k: after[k] for k in before} == before  # the old parts are all there, unchanged
    assert all(len(v) == 400 for k, v in after.items() if k not in before)  # plus the killed run's complete parts

    _write(tmp_path, "small.sql", _generator(5) + sink)
    assert _run(tmp_path, "small.sql").returncode == 0
    assert _parts(tmp_path / "parts") == {"part-00000.parquet": [0, 1, 2, 3, 4]}
    assert _temporaries(tmp_path / "parts") == []


@pytest.mark.nats
def test_a_jetstream_fed_file_sink_keeps_what_earlier_runs_acknowledged(tmp_path, nats_server, nats_client):
    nats_client.add_stream("FILE_RESTART", ["file_restart.in"])
    text = f"""
        CREATE SOURCE src (id BIGINT) WITH (connector = 'nats', url = '{nats_server.url}', stream = 'FILE_RESTART',
                                            durable = 'to_file');
        CREATE SINK out AS SELECT id FROM src WITH (connector = 'file', path = 'out.jsonl', format = 'json');
    """
    published = 0
    for batch in (300, 200):  # two runs, each stopped once it has acknowledged everything published so far
        nats_client.js_publish("file_restart.in", [json.dumps({"id": published + i}).encode() for i in range(batch)])
        published += batch
        session = Session(base_dir=str(tmp_path), dead_letter_path=str(tmp_path / "dead.jsonl"))
        session.execute(text)
        run = BackgroundRun(session)
        wait_until(lambda n=published: nats_client.consumer_info("FILE_RESTART", "to_file").ack_floor.stream_seq == n,
                   timeout=60, what="the run to acknowledge every message")
        run.stop()
    ids = [orjson.loads(line)["id"] for line in (tmp_path / "out.jsonl").read_bytes().splitlines()]
    assert sorted(ids) == list(range(published))  # the first run's rows were not overwritten by the second


def _fds_under(pid: int, folder: Path) -> bool:
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except FileNotFoundError:
        return False
    for name in names:
        try:
            if os.readlink(f"/proc/{pid}/fd/{name}").startswith(str(folder)):
                return True
        except OSError:
            continue
    return False


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="watches the process's open directories in /proc")
@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)], ids=["SIGTERM", "SIGINT"])
def test_a_signal_stops_a_run_that_is_still_listing_files(tmp_path, signum, code):
    """A recursive glob over a tree whose symbolic links loop never ends: the signal
    must stop the process while it lists, promptly, with the signal's exit code."""
    tree = tmp_path / "tree"
    tree.mkdir()
    os.symlink(".", tree / "a")
    os.symlink(".", tree / "b")
    _write(tmp_path, "p.sql", """
        CREATE SOURCE s (id BIGINT) WITH (connector = 'file', path = 'tree/**/*.jsonl', format = 'json');
        CREATE SINK o AS SELECT * FROM s WITH (connector = 'file', path = 'out.jsonl', format = 'json');
    """)
    process = subprocess.Popen([SQLSTREAM, "run", "p.sql"], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    try:
        wait_until(lambda: _fds_under(process.pid, tree) or process.poll() is not None, timeout=60,
                   what="the run to list the tree")
        assert process.poll() is None
        sent = time.monotonic()
        process.send_signal(signum)
        _, stderr = process.communicate(timeout=10)
        elapsed = time.monotonic() - sent
    finally:
        process.kill()
        process.wait(10)
    assert process.returncode == code, stderr
    assert elapsed < 2.0
    name = signal.Signals(signum).name
    assert stderr == f"sqlstream: stopped by {name} while starting (before the pipeline ran)\n"
    assert not (tmp_path / "out.jsonl").exists() and _temporaries(tmp_path) == []


def test_a_second_signal_while_draining_stops_at_once_and_keeps_the_previous_output(tmp_path):
    """The first signal asks the run loop to drain; the batch in flight is stuck in a UDF, so
    the drain does not end; a second signal stops the process at once (the signals differ, so
    the operating system cannot merge them: SIGINT's handler runs first)."""
    (tmp_path / "udfs").mkdir()
    marker = tmp_path / "in_udf"
    _write(tmp_path / "udfs", "slow.py", f"""
        import pathlib
        import time

        import pyarrow as pa

        from sqlstream import udf


        @udf(args=[pa.int64()], returns=pa.int64())
        def stuck(n):
            pathlib.Path({str(marker)!r}).touch()
            for _ in range(2400):  # Python work for 2 minutes (one long sleep would defer signal handlers to its end)
                time.sleep(0.05)
            return n
    """)
    (tmp_path / "out.jsonl").write_text('{"n": -1}\n')
    _write(tmp_path, "p.sql", _generator(None) + (
        "CREATE SINK out AS SELECT stuck(n) AS n FROM nums WITH (connector = 'file', path = 'out.jsonl', format = 'json');\n"
    ))
    process = subprocess.Popen([SQLSTREAM, "run", "p.sql"], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    try:
        wait_until(lambda: marker.exists() or process.poll() is not None, timeout=60, what="a batch in the UDF")
        assert process.poll() is None
        sent = time.monotonic()
        process.send_signal(signal.SIGINT)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=10)
        elapsed = time.monotonic() - sent
    finally:
        process.kill()
        process.wait(10)
    assert process.returncode == 143, stderr
    assert stderr.splitlines()[-1] == "sqlstream: stopped by SIGTERM again while draining (sinks not closed)"
    assert elapsed < 2.0
    assert (tmp_path / "out.jsonl").read_text() == '{"n": -1}\n'
