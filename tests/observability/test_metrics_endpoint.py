"""``sqlstream run --http``: ``/metrics`` scraped from a real run over known input (1,000
good rows, malformed and mistyped records, a late row, a function that fails on some
rows) and parsed with prometheus_client's own parser; ``/live``, ``/ready``."""

from __future__ import annotations

import re
import signal

from prometheus_client.parser import text_string_to_metric_families

from tests.observability.conftest import DECODE, EVENTS, GOOD, TYPE, Running, get, wait_for


def scrape(url: str) -> dict[tuple[str, tuple], float]:
    """``{(sample name, sorted labels without pipeline): value}``; checks every sample is labelled with the pipeline."""
    status, text = get(f"{url}/metrics")
    assert status == 200
    samples = {}
    for family in text_string_to_metric_families(text):
        assert family.name.startswith("sqlstream_"), family.name
        for s in family.samples:
            assert s.labels.pop("pipeline") == "p", s
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def test_metrics_count_exactly_what_the_run_did(known_run):
    def done():
        samples = scrape(known_run.url)
        return samples if samples.get(("sqlstream_sink_rows_total", (("sink", "windows"),))) == 100 else None

    m = wait_for(done, "the file source to be read and its windows emitted")
    src = (("source", "events"),)
    assert m[("sqlstream_pipeline_ready", ())] == 1
    assert m[("sqlstream_source_rows_total", src)] == GOOD + 1  # the late row is read, then dropped by the window
    assert m[("sqlstream_source_records_total", src)] == GOOD + DECODE + TYPE + 1
    assert m[("sqlstream_source_bytes_total", src)] == len(EVENTS.encode())
    assert ("sqlstream_source_bytes_total", (("source", "beat"),)) not in m  # a generator reads no bytes
    assert m[("sqlstream_dead_letters_total", (("reason", "decode"), ("source", "events")))] == DECODE
    assert m[("sqlstream_dead_letters_total", (("reason", "type"), ("source", "events")))] == TYPE
    assert m[("sqlstream_dead_letters_total", (("reason", "late"), ("source", "events")))] == 1
    assert m[("sqlstream_dead_letters_total", (("reason", "udf"), ("source", "events")))] == 10
    assert m[("sqlstream_late_rows_total", src)] == 1
    assert m[("sqlstream_sink_rows_total", (("sink", "scored"),))] == GOOD + 1 - 10
    assert m[("sqlstream_function_rows_total", (("function", "risky"),))] >= GOOD + 1  # failing batches are bisected
    assert m[("sqlstream_function_failed_rows_total", (("function", "risky"),))] == 10
    assert m[("sqlstream_function_seconds_total", (("function", "risky"),))] > 0
    assert m[("sqlstream_source_watermark_seconds", src)] == 1704067200 + GOOD - 1  # 2024-01-01 + 999 s
    assert m[("sqlstream_source_watermark_lag_seconds", src)] > 60 * 60 * 24 * 365  # data from 2024
    assert not any(name.endswith("_created") for name, _ in m)
    # the window's query: the late filter drops the late row, the window gets the rest; its state is gone at the end
    def operator(kind):
        found = [labels for name, labels in m if name == "sqlstream_operator_rows_in_total"
                 and dict(labels)["operator"].endswith(kind)]
        assert len(found) == 1, found
        return found[0]

    late_filter, window = operator("late_filter"), operator("window_aggregate")
    assert (m[("sqlstream_operator_rows_in_total", late_filter)], m[("sqlstream_operator_rows_out_total", late_filter)]) \
        == (GOOD + 1, GOOD)
    assert m[("sqlstream_operator_rows_in_total", window)] == GOOD
    assert m[("sqlstream_operator_rows_out_total", window)] == 100
    assert m[("sqlstream_operator_batches_total", window)] >= 1
    assert m[("sqlstream_operator_state_rows", window)] == 0
    assert m[("sqlstream_operator_busy_seconds_total", window)] > 0
    # each micro-batch the window took is in its time histogram, in some bucket
    batches = m[("sqlstream_operator_batches_total", window)]
    assert m[("sqlstream_operator_batch_seconds_count", window)] == batches
    assert m[("sqlstream_operator_batch_seconds_bucket", tuple(sorted((*window, ("le", "+Inf")))))] == batches
    assert m[("sqlstream_operator_batch_seconds_sum", window)] == m[("sqlstream_operator_busy_seconds_total", window)]
    beats = m[("sqlstream_sink_rows_total", (("sink", "beats"),))]
    later = wait_for(lambda: (s := scrape(known_run.url))[("sqlstream_sink_rows_total", (("sink", "beats"),))] > beats
                     and s, "the generator's rows to grow")
    assert later[("sqlstream_source_rows_total", src)] == GOOD + 1  # read once, counted once


def test_live_and_ready(known_run):
    assert get(f"{known_run.url}/live") == (200, "live\n")
    wait_for(lambda: get(f"{known_run.url}/ready")[0] == 200, "the run to be ready")
    assert get(f"{known_run.url}/ready") == (200, "ready\n")
    assert get(f"{known_run.url}/nope")[0] == 404
    code, stderr = known_run.stop(signal.SIGINT)
    assert code == 130, stderr


def test_ready_is_503_before_the_run_is_built():
    """The endpoint serves before the run is built (sources opened, checkpoint restored):
    /live is 200 then, /ready 503 and the ready gauge 0."""
    from sqlstream.observability.server import ObservabilityServer

    server = ObservabilityServer(("127.0.0.1", 0), lambda: None, "p").start()
    try:
        url = server.url.rstrip("/")
        assert get(f"{url}/ready") == (503, "not ready\n")
        assert get(f"{url}/live") == (200, "live\n")
        status, text = get(f"{url}/metrics")
        assert status == 200 and 'sqlstream_pipeline_ready{pipeline="p"} 0.0' in text
    finally:
        server.close()


def test_set_http_in_the_file_and_a_taken_port(tmp_path):
    (tmp_path / "p.sql").write_text(
        "SET http = '127.0.0.1:0';\n"
        "CREATE SOURCE beat (n BIGINT) WITH (connector = 'generator', rows_per_second = 50);\n"
        "CREATE SINK out FROM beat WITH (connector = 'file', path = 'out.jsonl', format = 'json');\n")
    run = Running(tmp_path, ["p.sql"])
    try:
        wait_for(lambda: get(f"{run.url}/ready")[0] == 200, "the run to be ready")
        port = run.url.rsplit(":", 1)[1]
        (tmp_path / "q.sql").write_text((tmp_path / "p.sql").read_text().replace("'127.0.0.1:0'", f"'127.0.0.1:{port}'"))
        import subprocess

        from tests.observability.conftest import SQLSTREAM
        taken = subprocess.run([SQLSTREAM, "run", "q.sql"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert taken.returncode == 2, taken.stderr
        assert f"error: --http 127.0.0.1:{port}: cannot listen: Address already in use" in taken.stderr
    finally:
        code, stderr = run.stop()
    assert code == 143, stderr


def test_a_bad_http_setting_is_bad_input(tmp_path):
    import subprocess

    from tests.observability.conftest import SQLSTREAM
    (tmp_path / "p.sql").write_text("CREATE SOURCE beat (n BIGINT) WITH (connector = 'generator', max_rows = 1);\n"
                                    "CREATE SINK out FROM beat WITH (connector = 'stdout');\n")
    result = subprocess.run([SQLSTREAM, "run", "p.sql", "--http", "localhost:http"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "invalid value 'localhost:http' for setting 'http': expected 'host:port'" in result.stderr


def test_checkpoint_metrics(tmp_path):
    (tmp_path / "p.sql").write_text(
        "CREATE SOURCE beat (n BIGINT, ts TIMESTAMP, WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)\n"
        "    WITH (connector = 'generator', rows_per_second = 200);\n"
        "CREATE SINK counts AS SELECT window_end, count(*) AS n FROM TUMBLE(beat, ts, INTERVAL '1' HOUR)\n"
        "    GROUP BY window_end WITH (connector = 'file', path = 'counts.jsonl', format = 'json');\n")
    run = Running(tmp_path, ["p.sql", "--http", "127.0.0.1:0", "--checkpoint", "ck", "--checkpoint-interval", "200ms"])
    try:
        m = wait_for(lambda: (s := scrape(run.url)).get(("sqlstream_checkpoints_total", ()), 0) >= 2 and s,
                     "two checkpoints")
        assert m[("sqlstream_checkpoint_last_epoch", ())] == m[("sqlstream_checkpoints_total", ())]  # a first run
        assert m[("sqlstream_checkpoint_last_state_rows", ())] > 0  # the open window's partials
        assert m[("sqlstream_checkpoint_last_size_bytes", ())] > 0
        assert 0 < m[("sqlstream_checkpoint_last_duration_seconds", ())] <= m[("sqlstream_checkpoint_duration_seconds_total", ())]
        assert 0 <= m[("sqlstream_checkpoint_age_seconds", ())] < 60
        window = [labels for name, labels in m if name == "sqlstream_operator_state_rows"]
        assert len(window) == 1 and m[("sqlstream_operator_state_rows", window[0])] > 0
    finally:
        code, stderr = run.stop()
    assert code == 143, stderr
    assert re.search(r"^sqlstream: stopped by SIGTERM \| .* rows of open window/aggregate state kept in the checkpoint",
                     stderr, re.MULTILINE), stderr
