"""End-to-end fuzz: seeded mixes of good and bad records (``tests/generators/fuzz_records.py``)
through real ``sqlstream run`` processes — JSON-lines and CSV files, and a JetStream
stream — into JSON, Parquet and JetStream sinks. Checks the accounting
``rows out + dead letters = records in``, every dead letter's reason, raw text and
position, the rows against what the records hold, and that every output is readable
(DuckDB for files, strict UTF-8 JSON for messages).

Bounded: a few thousand records per seed; ``pytest -m slow`` runs it.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import duckdb
import orjson
import pytest
from conftest import wait_until

from tests.generators.fuzz_records import (
    CSV_HEADER,
    NAMES,
    SQL_COLUMNS,
    Record,
    check_outcomes,
    csv_lines,
    csv_record,
    json_lines,
    json_record,
    json_view,
    normalize_rows,
    payload_record,
    split_quote_records,
)

pytestmark = pytest.mark.slow

SEEDS = [11, 12, 13]
STREAM_SEEDS = SEEDS[:2]  # a JetStream run costs about twice a file run
RECORDS = 2000
SQLSTREAM = [sys.executable, "-m", "sqlstream.cli.main"]


def _sqlstream_command() -> list[str]:
    script = Path(sys.executable).with_name("sqlstream")
    return [str(script)] if script.exists() else SQLSTREAM


def _env() -> dict:
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    return env


def make_records(fmt: str, seed: int) -> list[Record]:
    rng = random.Random(seed)
    records: list[Record] = []
    while len(records) < RECORDS:
        if fmt == "json":
            records.append(json_record(rng))
        elif rng.random() < 0.01:
            records.extend(split_quote_records(rng))
        else:
            records.append(csv_record(rng))
    if fmt == "json":  # one line longer than a read block, somewhere in the middle
        records.insert(rng.randrange(len(records)), json_record(rng, huge=True))
    return records


def read_dead_letters(path: Path) -> list[dict]:
    if not path.exists():
        return []
    data = path.read_bytes()
    data.decode("utf-8")  # strict: no invalid UTF-8 is ever written
    return [orjson.loads(line) for line in data.splitlines()]


def duck_rows(sql: str) -> list[dict]:
    with duckdb.connect() as connection:
        connection.execute("SET TimeZone = 'UTC'")
        return connection.sql(sql).to_arrow_table().to_pylist()


TYPED = "{id: 'BIGINT', name: 'VARCHAR', v: 'DOUBLE', ts: 'TIMESTAMP', tz: 'TIMESTAMPTZ'}"


def _shallow(raw: bytes) -> bytes:
    """``raw`` with its deeply nested undeclared values (``[[[…]]]``, ``{"a":{"a":…1}}``) made 0,
    so that orjson (depth 1024) can read the declared ones."""
    raw = re.sub(rb"\[{20,}\]{20,}", b"0", raw)
    return re.sub(rb'((?:\{"a":){20,})1(\}+)', lambda m: b"0" + b"}" * (len(m[2]) - len(m[1]) // 5), raw)


def _declared(pairs: list) -> dict:
    """The declared keys of one record, folded to their names; the exact spelling wins."""
    return {k.lower(): v for k, v in sorted(pairs, key=lambda kv: kv[0] in NAMES) if k.lower() in NAMES}


def duckdb_reading_of_the_good_records(records: list[Record], fmt: str, directory: Path) -> list[dict]:
    """The good records as DuckDB reads them (JSON: the declared keys folded to their
    lower-case names first, as DuckDB matches keys case-sensitively)."""
    good = [r for r in records if r.outcome == "row"]
    if fmt == "json":
        path = directory / "good.jsonl"
        # Python's json: NaN / Infinity are read (as decided) and written back for DuckDB
        path.write_text("".join(json.dumps(_declared(json.loads(_shallow(r.raw), object_pairs_hook=list))) + "\n"
                                for r in good))
        return duck_rows(f"SELECT * FROM read_json('{path}', format = 'newline_delimited', columns = {TYPED})")
    path = directory / "good.csv"
    path.write_bytes(CSV_HEADER.encode() + b"\n" + b"".join(r.raw + b"\n" for r in good))
    return duck_rows(f"""SELECT * FROM read_csv('{path}', header = true, quote = '"', escape = '"',
                         allow_quoted_nulls = false, columns = {TYPED})""")


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("fmt", ["json", "csv"])
def test_file_source_into_json_and_parquet_sinks(tmp_path, fmt, seed):
    records = make_records(fmt, seed)
    rng = random.Random(seed)
    data = json_lines(records, rng) if fmt == "json" else csv_lines(records, rng)
    source = tmp_path / f"in.{fmt}"
    source.write_bytes(data)
    old = time.time() - 60  # a file that stopped growing: its unterminated last line is read at once
    os.utime(source, (old, old))
    batch_size = rng.choice([1, 7, 97, 1_000_000]) if len(records) < 1000 else rng.choice([7, 97, 1_000_000])
    (tmp_path / "pipeline.sql").write_text(f"""
        SET dead_letter_path = 'dead.jsonl';
        SET file_batch_size = {batch_size};
        CREATE SOURCE src ({SQL_COLUMNS}) WITH (connector = 'file', path = 'in.{fmt}', format = '{fmt}');
        CREATE SINK as_json AS SELECT * FROM src WITH (connector = 'file', path = 'out.jsonl', format = 'json');
        CREATE SINK as_parquet AS SELECT * FROM src
          WITH (connector = 'file', path = 'out.parquet', format = 'parquet');
    """)
    done = subprocess.run([*_sqlstream_command(), "run", "pipeline.sql"], cwd=tmp_path, env=_env(),
                          capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr.decode(errors="backslashreplace")[-3000:]

    parquet_rows = duck_rows(f"SELECT * FROM read_parquet('{tmp_path / 'out.parquet'}')")
    out_json = tmp_path / "out.jsonl"
    for line in out_json.read_bytes().split(b"\n")[:-1]:
        orjson.loads(line)  # strict JSON (no NaN / Infinity) in strict UTF-8
    json_rows = duck_rows(f"SELECT * FROM read_json('{out_json}', format = 'newline_delimited', columns = {TYPED})")
    letters = read_dead_letters(tmp_path / "dead.jsonl")

    counted = [r for r in records if r.outcome != "skip"]
    assert len(parquet_rows) + len(letters) == len(counted), "rows out + dead letters != records in"
    header = 1 if fmt == "csv" else 0
    check_outcomes(records, parquet_rows, letters, lambda i: f"{source}:{i + 1 + header}")
    assert normalize_rows(json_rows) == normalize_rows(json_view(parquet_rows))
    assert normalize_rows(parquet_rows) == normalize_rows(duckdb_reading_of_the_good_records(records, fmt, tmp_path))
    assert {letter["source"] for letter in letters} <= {"src"}


@pytest.mark.nats
@pytest.mark.parametrize("seed", STREAM_SEEDS)
def test_jetstream_source_into_jetstream_and_parquet_sinks(tmp_path, nats_server, nats_client, seed):
    rng = random.Random(seed)
    records = [payload_record(rng) for _ in range(RECORDS)]
    stream_in, stream_out = f"FUZZ_IN_{seed}", f"FUZZ_OUT_{seed}"
    subject_in, subject_out = f"fuzz{seed}.in", f"fuzz{seed}.out"
    nats_client.add_stream(stream_in, [subject_in])
    nats_client.add_stream(stream_out, [subject_out])
    nats_client.js_publish(subject_in, [r.raw for r in records])
    (tmp_path / "pipeline.sql").write_text(f"""
        SET dead_letter_path = 'dead.jsonl';
        SET batch_size = {rng.choice([7, 64, 500])};
        CREATE SOURCE src ({SQL_COLUMNS}, _stream_seq BIGINT)
          WITH (connector = 'nats', url = '{nats_server.url}', stream = '{stream_in}', durable = 'fuzz',
                max_future = 'off');
        CREATE SINK to_stream AS SELECT * FROM src
          WITH (connector = 'nats', url = '{nats_server.url}', subject = '{subject_out}', stream = '{stream_out}');
        CREATE SINK to_parquet AS SELECT * FROM src
          WITH (connector = 'file', path = 'out_parquet', format = 'parquet', rows_per_file = 500);
    """)
    process = subprocess.Popen([*_sqlstream_command(), "run", "pipeline.sql"], cwd=tmp_path, env=_env(),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    dead_path = tmp_path / "dead.jsonl"

    def accounted() -> bool:
        if process.poll() is not None:
            return True  # died: the checks below say how
        stored = nats_client.run(nats_client.js.stream_info(stream_out)).state.messages
        letters = len(dead_path.read_bytes().splitlines()) if dead_path.exists() else 0
        return stored + letters >= len(records)

    try:
        wait_until(accounted, timeout=60, what="every record stored or dead-lettered")
        died = process.poll()
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert died is None, f"sqlstream run exited with {died}: {stderr.decode(errors='backslashreplace')[-3000:]}"
    assert process.returncode in (0, 143), stderr.decode(errors="backslashreplace")[-3000:]

    stored = []
    for message in nats_client.stream_messages(stream_out):
        message.data.decode("utf-8")  # strict
        stored.append(orjson.loads(message.data))
    letters = read_dead_letters(dead_path)
    assert len(stored) + len(letters) == len(records), "rows out + dead letters != records in"
    assert sorted(r["_stream_seq"] for r in stored) == sorted({r["_stream_seq"] for r in stored}), "a row twice"
    stored.sort(key=lambda r: r["_stream_seq"])
    # a JSON message holds no NaN or infinity: the sink writes null (the Parquet sink keeps them)
    as_json = [Record(r.raw, r.outcome, r.case, json_view([r.row])[0] if r.row else None) for r in records]
    check_outcomes(as_json, [_from_json(r) for r in stored], letters, lambda i: f"{subject_in}#{i + 1}")
    wrong = [records[r["_stream_seq"] - 1].describe() for r in stored if records[r["_stream_seq"] - 1].outcome != "row"]
    assert not wrong, f"rows from records that must be dead letters: {wrong[:5]}"

    parquet_rows = duck_rows(f"SELECT * FROM read_parquet('{tmp_path / 'out_parquet'}/*.parquet') ORDER BY _stream_seq")
    assert [r["_stream_seq"] for r in parquet_rows] == [r["_stream_seq"] for r in stored]
    assert normalize_rows(parquet_rows) == normalize_rows([records[r["_stream_seq"] - 1].row for r in stored])


def _from_json(row: dict) -> dict:
    """A row read back from a JSON message: timestamps as datetimes (TIMESTAMPTZ in UTC)."""
    out = dict(row)
    for name in ("ts", "tz"):
        if isinstance(out.get(name), str):
            value = datetime.fromisoformat(out[name])
            if name == "tz":
                value = value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)
            out[name] = value
    return out
