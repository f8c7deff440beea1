"""examples/quality_control over NATS end to end: ``publish.py`` puts generated photos
(and a payload that is not an image) on JetStream, ``sqlstream run pipeline_nats.sql``
inspects them and publishes a JSON alert per scratched part. The alerts must be exactly
the parts the file-based pipeline (``pipeline.sql``, same model, same photos) calls
scratched, one each; accuracy against the truth must reach the file-based example test's
floor; the broken payload must be a ``decode`` dead letter."""

from __future__ import annotations

import json
import os
import runpy
import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from conftest import wait_until

pytestmark = pytest.mark.nats

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "quality_control"
COUNT = 40


def _cli(*args) -> list[str]:
    return [sys.executable, "-m", "sqlstream.cli.main", *args]


def test_quality_control_over_nats_alerts_once_per_scratched_part(tmp_path, nats_server, nats_client, monkeypatch):
    work = tmp_path / "quality_control"
    shutil.copytree(EXAMPLE, work, ignore=shutil.ignore_patterns("out", "frames", "*.onnx", "*.csv", "*.jsonl",
                                                                  "__pycache__"))
    monkeypatch.chdir(work)
    monkeypatch.setattr(sys, "argv", ["make_data.py", "--count", str(COUNT), "--seed", "3"])
    runpy.run_path(str(work / "make_data.py"), run_name="__main__")
    runpy.run_path(str(work / "make_model.py"), run_name="__main__")

    # the reference: the file-based pipeline over the same photos
    subprocess.run(_cli("run", str(work / "pipeline.sql")), check=True, capture_output=True, timeout=300)
    verdicts = [json.loads(line) for line in (work / "out" / "verdicts.jsonl").read_text().splitlines()]
    scratched = sorted(os.path.splitext(os.path.basename(v["path"]))[0] for v in verdicts if v["label"] == "scratch")
    assert len(verdicts) == COUNT and scratched, "the example data must have scratched parts"

    (work / "frames" / "part_bad.jpg").write_bytes(b"not a photo")
    publish = runpy.run_path(str(work / "publish.py"))
    publish["main"](["--url", nats_server.url, "--frames", str(work / "frames")])
    alerts = nats_client.subscribe("qc.alerts.>")
    pipeline = work / "pipeline_nats.sql"
    pipeline.write_text(pipeline.read_text().replace("nats://127.0.0.1:4222", nats_server.url))
    run = subprocess.Popen(_cli("run", str(pipeline)), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        def all_acked():  # every photo is through the model, its alert published and its dead letter written
            assert run.poll() is None, run.communicate()[1]
            try:
                info = nats_client.consumer_info("CAMERA", "inspector")
            except Exception:  # noqa: BLE001 - the consumer does not exist until the pipeline starts
                return False
            return info.ack_floor.stream_seq == COUNT + 1

        wait_until(all_acked, timeout=120, what="every photo to be acknowledged")
        wait_until(lambda: len(alerts) >= len(scratched), timeout=30, what="the alerts")
    finally:
        run.send_signal(signal.SIGTERM)
        _, stderr = run.communicate(timeout=60)
    assert run.returncode == 143, stderr

    got = [json.loads(m.data) for m in alerts]
    assert {m.subject for m in alerts} == {"qc.alerts.line1"}
    assert Counter(a["part"] for a in got) == Counter(scratched)  # exactly one alert per scratched part
    assert all(a["line"] == "line1" and a["score"] > 0 for a in got)

    truth = dict(line.split(",") for line in (work / "frames_truth.csv").read_text().splitlines()[1:])
    alerted = {a["part"] for a in got}
    right = sum((os.path.splitext(name)[0] in alerted) == (label == "scratch") for name, label in truth.items())
    assert right / COUNT >= 0.9  # the floor of test_quality_control_example_finds_the_scratches

    letters = [json.loads(line) for line in (work / "pipeline_nats.dead_letter.jsonl").read_text().splitlines()]
    assert [d["reason"] for d in letters] == ["decode"]
    assert letters[0]["source"] == "camera"
    assert json.loads(letters[0]["raw"])["_subject"] == "camera.line1.part_bad"
    assert letters[0]["detail"] == "inspect: UnidentifiedImageError: cannot identify image file"
