"""examples/nats_sensors end to end: ``sqlstream produce`` → NATS → ``sqlstream run
pipeline.sql`` (windows + ONNX model) → alerts on NATS → printed; the printed alerts
must be what DuckDB computes from the very readings that were published."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import duckdb
import pytest
from conftest import wait_until

pytestmark = pytest.mark.nats

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "nats_sensors"


def wait_briefly(predicate, seconds: float = 0.5) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)  # polling a condition with a deadline
    return False


def _cli(*args) -> list[str]:
    return [sys.executable, "-m", "sqlstream.cli.main", *args]


def test_sensor_example_alerts_match_duckdb(tmp_path, nats_server, nats_client):
    work = tmp_path / "example"
    shutil.copytree(EXAMPLE, work)
    subprocess.run([sys.executable, str(work / "build_model.py")], check=True, capture_output=True, timeout=120)
    pipeline = work / "pipeline.sql"
    pipeline.write_text(pipeline.read_text().replace("nats://127.0.0.1:4222", nats_server.url))
    readings = nats_client.subscribe("sensors.readings")
    run = subprocess.Popen(_cli("run", str(pipeline)), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    printed: list[dict] = []

    def collect():  # stdout lines as they come (a thread: readline blocks)
        for line in run.stdout:
            if line.strip():
                printed.append(json.loads(line))

    threading.Thread(target=collect, daemon=True).start()
    try:
        # the pipeline is subscribed once a probe sent to its alerts feed comes out printed
        probe = json.dumps({"window_end": "2024-01-01T00:00:00", "sensor_id": -1, "readings": 0, "avg_temp": 0,
                            "max_temp": 0, "score": -1}).encode()

        def probe_seen():
            nats_client.publish("alerts.probe", [probe])
            return wait_briefly(lambda: any(p["subject"] == "alerts.probe" for p in printed)) or run.poll() is not None

        wait_until(probe_seen, timeout=60, what="the pipeline to subscribe")
        assert run.poll() is None, run.stderr.read()
        produce = subprocess.run(
            _cli("produce", "sensors.readings", "--url", nats_server.url, "--rate", "0", "--count", "3000",
                 "--columns", "sensor_id BIGINT, ts TIMESTAMP, temp DOUBLE, humidity DOUBLE",
                 "-o", "clock=simulated", "-o", "fields.ts.step=20ms", "-o", "fields.ts.max_delay=500ms",
                 "-o", "fields.sensor_id.max=19", "-o", "fields.temp.min=15", "-o", "fields.temp.max=45",
                 "-o", "fields.humidity.min=20", "-o", "fields.humidity.max=80", "-o", "seed=11"),
            capture_output=True, text=True, timeout=120,
        )
        assert produce.returncode == 0, produce.stderr
        wait_until(lambda: len(readings) == 3000, what="the published readings")

        path = tmp_path / "readings.jsonl"
        path.write_text("\n".join(m.data.decode() for m in readings))
        expected = duckdb.sql(f"""
            WITH w AS (
              SELECT time_bucket(INTERVAL 5 SECOND, ts::TIMESTAMP) + INTERVAL 5 SECOND AS window_end, sensor_id,
                     count(*) AS readings, avg(temp) AS avg_temp, max(temp) AS max_temp, avg(humidity) AS hum
              FROM read_json('{path}') GROUP BY ALL),
            scored AS (
              SELECT *, 1 / (1 + exp(-(0.8 * (avg_temp - 33) + 0.5 * (max_temp - 42) - 0.02 * (hum - 50)))) AS score
              FROM w)
            SELECT window_end, sensor_id, readings, round(avg_temp, 2), round(max_temp, 2), round(score, 3) FROM scored
            WHERE score > 0.8 AND window_end <= (SELECT max(ts::TIMESTAMP) - INTERVAL 1 SECOND FROM read_json('{path}'))
            ORDER BY window_end, sensor_id""").fetchall()
        assert expected, "the example data must raise some alerts"

        def alerts():
            return [p for p in printed if p["subject"] != "alerts.probe"]

        wait_until(lambda: len(alerts()) >= len(expected), timeout=60,
                   what="the alerts to be printed")
    finally:
        run.send_signal(signal.SIGTERM)
        _, stderr = run.communicate(timeout=30)
    assert run.returncode == 143, stderr  # stopped by SIGTERM (drained)
    got = sorted((a["window_end"], int(a["subject"].split(".")[1]), a["readings"], a["avg_temp"], a["max_temp"], a["score"])
                 for a in alerts())
    want = [(w.isoformat(sep=" "), s, n, a, m, sc) for w, s, n, a, m, sc in expected]
    assert [g[:3] for g in got] == [w[:3] for w in want]
    for g, w in zip(got, want, strict=True):
        assert g[3:5] == pytest.approx(w[3:5], abs=0.011) and g[5] == pytest.approx(w[5], abs=0.002)
