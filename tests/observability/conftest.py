"""A real ``sqlstream run --http 127.0.0.1:0`` over known input, for the endpoint tests."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

SQLSTREAM = str(Path(sys.executable).with_name("sqlstream"))

#: 1,000 good rows (ts = second i), 6 malformed lines, 4 rows whose id is not a number,
#: then one row 995 s late for the 10 s windows
GOOD, DECODE, TYPE = 1000, 6, 4
EVENTS = (
    "".join(f'{{"id": {i}, "ts": "2024-01-01T00:{i // 60:02d}:{i % 60:02d}", "v": {i}}}\n' for i in range(GOOD))
    + "not json\n" * DECODE
    + '{"id": "x", "ts": "2024-01-01T00:00:01", "v": 1}\n' * TYPE
    + '{"id": 1000, "ts": "2024-01-01T00:00:05", "v": 5}\n'
)

PIPELINE = """
    CREATE SOURCE events (id BIGINT, ts TIMESTAMP, v BIGINT, WATERMARK FOR ts AS ts - INTERVAL '0' SECOND)
        WITH (connector = 'file', path = 'events.jsonl', format = 'json');
    CREATE SOURCE beat (n BIGINT) WITH (connector = 'generator', rows_per_second = 20, fields.n.kind = 'sequence');
    CREATE SINK windows AS SELECT window_start, count(*) AS n FROM TUMBLE(events, ts, INTERVAL '10' SECOND)
        GROUP BY window_start WITH (connector = 'file', path = 'windows.jsonl', format = 'json');
    CREATE SINK scored AS SELECT id, risky(v) AS r FROM events WITH (connector = 'file', path = 'scored.jsonl',
                                                                      format = 'json');
    CREATE SINK beats AS SELECT n FROM beat WITH (connector = 'file', path = 'beats.jsonl', format = 'json');
"""

UDF = '''
import pyarrow as pa
from sqlstream import udf


@udf(args=[pa.int64()], returns=pa.int64())
def risky(v):
    values = v.to_pylist()
    if any(x % 100 == 0 for x in values):
        raise ValueError("multiple of 100")
    return pa.array([x * 2 for x in values], pa.int64())
'''


def get(url: str, timeout: float = 5) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def wait_for(predicate, what: str, timeout: float = 60):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)  # polling another process over HTTP


class Running:
    """``sqlstream run`` in a subprocess; ``url`` is its endpoint once it said where."""

    def __init__(self, folder: Path, args: list[str]):
        self.folder = folder
        self.log = folder / "stderr.txt"
        self._err = self.log.open("w")
        env = {k: v for k, v in os.environ.items() if k != "SQLSTREAM_DEBUG"}
        self.process = subprocess.Popen([SQLSTREAM, "run", *args], cwd=folder, stdout=subprocess.DEVNULL,
                                        stderr=self._err, env=env)
        self.url = wait_for(self._url, "the endpoint's address on stderr")

    def _url(self) -> str | None:
        assert self.process.poll() is None, self.log.read_text()
        match = re.search(r"console on (http://\S+/)", self.log.read_text())
        return match.group(1).rstrip("/") if match else None

    def stop(self, signum: int = signal.SIGTERM) -> tuple[int, str]:
        if self.process.poll() is None:
            self.process.send_signal(signum)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self._err.close()
        return self.process.returncode, self.log.read_text()


@pytest.fixture
def known_run(tmp_path):
    """The known pipeline running with ``--http 127.0.0.1:0``; stopped after the test."""
    (tmp_path / "events.jsonl").write_text(EVENTS)
    (tmp_path / "udfs").mkdir()
    (tmp_path / "udfs" / "risky.py").write_text(UDF)
    (tmp_path / "p.sql").write_text(textwrap.dedent(PIPELINE).lstrip())
    run = Running(tmp_path, ["p.sql", "--http", "127.0.0.1:0"])
    yield run
    run.stop()
