"""The web console in a real headless Chromium (Playwright, the system's ``chromium``):
the page loads without console errors, shows the known pipeline's nodes, its rows/s
move while a generator runs, and dead letters appear after bad input.
``SQLSTREAM_UPDATE_SCREENSHOT=1`` saves the page to docs/images/console.png."""

from __future__ import annotations

import os
import shutil
import socket
import textwrap
import urllib.request
from pathlib import Path

import pytest

from tests.observability.conftest import Running, get, wait_for

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH (CI installs it with apt-get)")
SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "images" / "console.png"

PIPELINE = """
    CREATE SOURCE readings (sensor BIGINT, temp DOUBLE, ts TIMESTAMP, WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)
        WITH (connector = 'generator', rows_per_second = 400, fields.sensor.min = 1, fields.sensor.max = 5);
    CREATE SOURCE uploads (id BIGINT, v BIGINT) WITH (connector = 'http', listen = '127.0.0.1:{port}', format = 'json');
    CREATE SINK per_sensor AS SELECT window_end, sensor, count(*) AS n, avg(temp) AS avg_temp
        FROM TUMBLE(readings, ts, INTERVAL '1' SECOND) GROUP BY window_end, sensor
        WITH (connector = 'file', path = 'per_sensor.jsonl', format = 'json');
    CREATE SINK hot AS SELECT sensor, temp FROM readings WHERE temp > 50
        WITH (connector = 'file', path = 'hot.jsonl', format = 'json');
    CREATE SINK uploaded AS SELECT id, v FROM uploads WITH (connector = 'file', path = 'uploaded.jsonl', format = 'json');
"""


@pytest.fixture
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser
        browser.close()


def test_console_shows_the_pipeline_live(tmp_path, browser):
    with socket.socket() as probe:  # a free port for the webhook source
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    (tmp_path / "p.sql").write_text(textwrap.dedent(PIPELINE).lstrip().replace("{port}", str(port)))
    run = Running(tmp_path, ["p.sql", "--http", "127.0.0.1:0"])
    try:
        wait_for(lambda: get(f"{run.url}/ready")[0] == 200, "the run to be ready")
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        errors = []
        page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(run.url + "/")
        page.wait_for_selector("#status.ready", timeout=30_000)
        nodes = page.locator(".node .name").all_inner_texts()
        assert {"readings", "uploads", "per_sensor", "hot", "uploaded"} <= set(nodes)
        assert any(name.endswith("window_aggregate") for name in nodes)

        def rate() -> str:
            return page.locator('.node[data-id="source:readings"] .rate').inner_text()

        first = wait_for(lambda: (r := rate()) != "0 rows/s" and r, "a rows/s value for the generator", timeout=30)
        wait_for(lambda: rate() != first, "the generator's rows/s to change", timeout=30)

        request = urllib.request.Request(f"http://127.0.0.1:{port}/", data=b'{"id": 1, "v": 2}\nnot json\n{"id": "x", "v": 3}\n',
                                         headers={"Content-Type": "application/x-ndjson"})
        with urllib.request.urlopen(request, timeout=30) as response:
            assert response.status == 200
        page.wait_for_selector("#dead-reasons tbody tr", timeout=30_000)
        wait_for(lambda: page.locator("#dead-reasons tbody").inner_text().split() == ["decode", "1", "type", "1"],
                 "both dead letters in the console", timeout=30)
        latest = page.locator("#dead-latest tbody").inner_text()
        assert "not json" in latest and "uploads" in latest
        assert errors == []
        page.screenshot(path=str(tmp_path / "console.png"), full_page=True)
        if os.environ.get("SQLSTREAM_UPDATE_SCREENSHOT"):  # docs/images/console.png, on request only
            shutil.copyfile(tmp_path / "console.png", SCREENSHOT)
    finally:
        code, stderr = run.stop()
    assert code == 143, stderr
