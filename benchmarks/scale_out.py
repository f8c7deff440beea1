"""Scale-out throughput: one worker vs two over the same partitioned stream (P = 4).

The data is published first: ``--messages`` ~100-byte JSON sensor readings
(:func:`nats_common.payload`, 1,000 sensors) into a JetStream stream partitioned by
``sensor`` (``subject = 'bench.{sensor}'``, ``partitions = 4``), then one late reading
per sensor, so every partition's watermark passes every window of the data. Each
measurement is a whole ``sqlstream run p.sql --workers N`` (a new group, a new
checkpoint directory, reading the stream from its start) into a JetStream sink stream
of its own, timed from the start of the process until the sink stream holds every
expected row:

* ``stateless``: ``SELECT id, sensor, temp FROM readings WHERE temp >= 34`` (1 row in 20);
* ``tumble``: per sensor and 10-second window, ``count(*)`` and ``avg(temp)``
  (``--messages`` / 10 rows);
* ``shuffle``: the same per site (8 sites), a key that is not the partition key: each
  partition's partial aggregates of a closed window go through an exchange
  (docs/scale-out.md#shuffles);
* ``shuffle_rows``: ``count(DISTINCT sensor)`` per site and window: every row goes
  through the exchange. Against ``tumble`` these two price the exchange.

Start-up is subtracted as in :mod:`whole_process`: the same command on a 20-message
stream of the same layout (process start, imports, joining the group, claiming
partitions and the hand-over of half of them to the second worker) is timed too, and
events/s is ``messages / (full - start-up)``. The configurations alternate, the best of
``--repeat`` rounds counts, and the load average is printed: on a shared machine with
fewer cores than workers + nats-server, the ratio says more about the machine.

    python benchmarks/scale_out.py                         # 200,000 messages, 2 rounds
    python benchmarks/scale_out.py --messages 100000 --repeat 1 --only tumble
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from nats_common import SENSOR_COLUMNS, NatsServerProcess, payload  # noqa: E402

SQLSTREAM = [sys.executable, "-m", "sqlstream.cli.main"]
SENSORS = 1000
TINY = 20
QUERIES = {
    "stateless": ("SELECT id, sensor, temp FROM readings WHERE temp >= 34", lambda n: sum(1 for i in range(n)
                                                                                        if i % 20 == 19)),
    "tumble": ("SELECT window_start, window_end, sensor, count(*) AS n, avg(temp) AS mean_temp "
               "FROM TUMBLE(readings, ts, INTERVAL '10' SECOND) GROUP BY window_start, window_end, sensor",
               lambda n: len({(i // 10_000, i % SENSORS) for i in range(n)})),
    # keyed by site, not by the partition key: through an exchange (docs/scale-out.md#shuffles),
    # as partial aggregates per closed window, or (count DISTINCT) as rows
    "shuffle": ("SELECT window_start, window_end, site, count(*) AS n, avg(temp) AS mean_temp "
                "FROM TUMBLE(readings, ts, INTERVAL '10' SECOND) GROUP BY window_start, window_end, site",
                lambda n: len({(i // 10_000, i % 8) for i in range(n)})),
    "shuffle_rows": ("SELECT window_start, window_end, site, count(DISTINCT sensor) AS sensors "
                     "FROM TUMBLE(readings, ts, INTERVAL '10' SECOND) GROUP BY window_start, window_end, site",
                     lambda n: len({(i // 10_000, i % 8) for i in range(n)})),
}


def _late(sensor: int) -> bytes:
    return (b'{"id":-1,"sensor":"s-%04d","ts":"2024-01-01T01:00:00.000","temp":0.0,"ok":false,"site":"late"}'
            % sensor)


async def fill(url: str, stream: str, messages: int) -> float:
    """Create the partitioned stream and publish the readings, then a late one per sensor."""
    import nats

    from sqlstream.connectors.nats.partitions import PartitionLayout, ensure_partitioned_stream

    nc = await nats.connect(url, pending_size=64 * 1024 * 1024)
    js = nc.jetstream(publish_async_max_pending=20_000)
    await ensure_partitioned_stream(js, stream, PartitionLayout.parse(f"{stream.lower()}.{{sensor}}", 4, "sensor"),
                                    "benchmark")
    started = time.perf_counter()
    for i in range(messages):
        await js.publish_async(f"{stream.lower()}.s-{i % SENSORS:04d}", payload(i))
    for sensor in range(min(messages, SENSORS)):
        await js.publish_async(f"{stream.lower()}.s-{sensor:04d}", _late(sensor))
    await js.publish_async_completed()
    elapsed = time.perf_counter() - started
    await nc.close()
    return elapsed


def _pipeline(folder: Path, url: str, stream: str, query: str, out: str) -> Path:
    path = folder / "p.sql"
    path.write_text(f"""
        CREATE SOURCE readings ({SENSOR_COLUMNS}, WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)
        WITH (connector = 'nats', url = '{url}', stream = '{stream}', subject = '{stream.lower()}.{{sensor}}',
              partitions = 4, partition_by = 'sensor');
        CREATE SINK out AS {query}
        WITH (connector = 'nats', url = '{url}', stream = '{out}', subject = '{out.lower()}.rows');
    """)
    return path


async def run_once(url: str, stream: str, query: str, expected: int, workers: int, lease_ttl: str) -> float:
    """Seconds from starting ``run --workers`` until the sink stream holds ``expected`` rows."""
    import nats
    from nats.js.api import StreamConfig

    tag = uuid.uuid4().hex[:8]
    out = f"OUT{tag}"
    nc = await nats.connect(url)
    js = nc.jetstream()
    await js.add_stream(StreamConfig(name=out, subjects=[f"{out.lower()}.>"]))
    with tempfile.TemporaryDirectory(prefix="sqlstream-scale-bench-") as folder:
        pipeline = _pipeline(Path(folder), url, stream, query, out)
        started = time.perf_counter()
        group = subprocess.Popen(SQLSTREAM + ["run", str(pipeline), "--workers", str(workers), "--group", f"g{tag}",
                                              "--checkpoint", "ck", "--lease-ttl", lease_ttl, "--quiet"],
                                 cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            while (await js.stream_info(out)).state.messages < expected:
                if group.poll() is not None:
                    raise SystemExit(f"the group stopped early ({group.returncode}):\n{group.stderr.read()[-2000:]}")
                await asyncio.sleep(0.02)
            elapsed = time.perf_counter() - started
        finally:
            if group.poll() is None:
                group.send_signal(signal.SIGTERM)
            group.communicate(timeout=120)
    await js.delete_stream(out)
    await nc.close()
    return elapsed


async def main(args) -> dict:
    server = NatsServerProcess()
    load_before = os.getloadavg()
    try:
        full, tiny = f"DATA{uuid.uuid4().hex[:6]}", f"TINY{uuid.uuid4().hex[:6]}"
        publish_s = await fill(server.url, full, args.messages)
        await fill(server.url, tiny, TINY)
        print(f"published {args.messages:,} readings (+{SENSORS} late) in {publish_s:.1f}s; "
              f"load average {load_before[0]:.2f}", file=sys.stderr)
        best: dict[tuple[str, int], dict[str, float]] = {}
        names = [args.only] if args.only else list(QUERIES)
        for round_ in range(args.repeat):
            for name in names:
                query, count = QUERIES[name]
                for workers in (1, 2):
                    startup = await run_once(server.url, tiny, query, count(TINY), workers, args.lease_ttl)
                    total = await run_once(server.url, full, query, count(args.messages), workers, args.lease_ttl)
                    seen = best.setdefault((name, workers), {"full_s": total, "startup_s": startup})
                    seen["full_s"], seen["startup_s"] = min(seen["full_s"], total), min(seen["startup_s"], startup)
                    print(f"round {round_ + 1}: {name}, {workers} worker(s): {total:.2f}s, start-up {startup:.2f}s "
                          f"(load {os.getloadavg()[0]:.2f})", file=sys.stderr)
        results = {}
        for name in names:
            rates = {}
            for workers in (1, 2):
                m = best[(name, workers)]
                work_s = m["full_s"] - m["startup_s"]  # too few messages: within the start-up's noise
                rates[workers] = args.messages / work_s if work_s > 0.2 else None
                results[f"{name}_{workers}w"] = {**m, "events_per_s": rates[workers] and round(rates[workers])}
            results[f"{name}_speedup"] = round(rates[2] / rates[1], 2) if rates[1] and rates[2] else None
        results["messages"] = args.messages
        results["load_average"] = [round(x, 2) for x in (*load_before, *os.getloadavg())]
        results["cpus"] = os.cpu_count()
        return results
    finally:
        server.stop()


def _print(results: dict) -> None:
    print(f"{'query':<12} {'workers':>7} {'full s':>7} {'start-up s':>10} {'events/s':>10}")
    for key, value in results.items():
        if isinstance(value, dict):
            name, workers = key.rsplit("_", 1)
            rate = f"{value['events_per_s']:,}" if value["events_per_s"] else "n/a"
            print(f"{name:<12} {workers[:-1]:>7} {value['full_s']:>7.2f} {value['startup_s']:>10.2f} {rate:>10}")
    for key, value in results.items():
        if key.endswith("_speedup"):
            ratio = f"{value:.2f}x" if value else "n/a (use more --messages)"
            print(f"{key[:-8]}: 2 workers / 1 worker = {ratio}")
    before, after = results["load_average"][:3], results["load_average"][3:]
    print(f"{results['messages']:,} messages, {results['cpus']} CPUs, load average {before} before, {after} after")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=200_000, help="readings in the stream (a multiple of 10,000)")
    parser.add_argument("--repeat", type=int, default=2, help="rounds; the best counts")
    parser.add_argument("--only", choices=tuple(QUERIES))
    parser.add_argument("--lease-ttl", default="2s", help="the group's lease TTL (rounds every quarter of it)")
    parser.add_argument("--json", action="store_true", help="print the results as one JSON object")
    options = parser.parse_args()
    measured = asyncio.run(main(options))
    print(json.dumps(measured)) if options.json else _print(measured)
