"""NATS ingest throughput: sqlstream vs a bare nats-py consumer, same server, same run.

Core NATS: a publisher process sends ``--messages`` (default 1M) ~100-byte JSON
messages as fast as it can; the consumer, in its own process, is either

* ``bare``: a nats-py subscriber whose callback only counts (pending limits raised
  to 2M msgs / 1 GiB, as a tuned subscriber would), or
* ``sqlstream``: ``SELECT * FROM nats_src`` (``connector = 'nats'``, JSON decoded
  into the declared columns) into a sink that only counts rows.

Each reports msgs/s from its first received message to its last processed one, the
messages it got (a core NATS consumer that falls behind loses messages) and
slow-consumer events. The ratio is sqlstream / bare.

JetStream: the stream is filled first; then each consumer drains it through its own
durable pull consumer and acks every message — ``bare``: nats-py ``fetch`` in
batches of ``--fetch`` plus ``msg.ack()`` per message; ``sqlstream``: the JetStream
source (acks after the sink write) into the counting sink.

    python benchmarks/nats_ingest.py                  # 1M messages, core and JetStream
    python benchmarks/nats_ingest.py --messages 200000 --only core --repeat 1
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from nats_common import SENSOR_COLUMNS, CountingSink, NatsServerProcess, start_publisher  # noqa: E402

SUBJECT = "bench.ingest"
STREAM = "BENCH"
JS_SUBJECT = "benchjs.ingest"
IDLE_S = 2.0  # a consumer that got nothing new for this long is done (messages were lost)


# -- consumers (each runs in its own process and prints one JSON line) -----------------------


async def bare_core(url: str, messages: int) -> dict:
    import nats
    from nats.errors import SlowConsumerError

    slow = 0

    async def on_error(error):
        nonlocal slow
        if isinstance(error, SlowConsumerError):
            slow += 1

    nc = await nats.connect(url, error_cb=on_error)
    count = 0
    first = last = None
    done = asyncio.Event()

    async def on_message(msg):
        nonlocal count, first, last
        count += 1
        if count == 1:
            first = time.perf_counter()
        if count == messages:
            last = time.perf_counter()
            done.set()

    await nc.subscribe(SUBJECT, cb=on_message, pending_msgs_limit=2_000_000, pending_bytes_limit=1 << 30)
    await nc.flush()
    print("ready", flush=True)
    last_change, seen = time.perf_counter(), 0
    while not done.is_set():
        await asyncio.sleep(0.01)
        now = time.perf_counter()
        if count != seen:
            seen, last_change = count, now
        elif count and now - last_change > IDLE_S:
            last = last_change
            break
    await nc.close()
    return {"received": count, "seconds": (last or time.perf_counter()) - (first or 0), "slow_consumer": slow}


async def bare_jetstream(url: str, messages: int, fetch: int) -> dict:
    import nats

    nc = await nats.connect(url)
    js = nc.jetstream()
    sub = await js.pull_subscribe(JS_SUBJECT, durable="bare", stream=STREAM)
    print("ready", flush=True)
    count = 0
    first = None
    while count < messages:
        try:
            batch = await sub.fetch(fetch, timeout=IDLE_S)
        except nats.errors.TimeoutError:
            break
        if first is None:
            first = time.perf_counter()
        for msg in batch:
            await msg.ack()
        count += len(batch)
    last = time.perf_counter()
    await nc.flush()
    await nc.close()
    return {"received": count, "seconds": last - (first or last), "slow_consumer": 0}


def sqlstream_consumer(url: str, messages: int, jetstream: bool) -> dict:
    from sqlstream.session import Session

    session = Session(dead_letter_path="off")
    source_options = (
        f"stream = '{STREAM}', subject = '{JS_SUBJECT}', durable = 'sqlstream'" if jetstream else f"subject = '{SUBJECT}'"
    )
    session.execute(
        f"""CREATE SOURCE nats_src ({SENSOR_COLUMNS})
              WITH (connector = 'nats', url = '{url}', {source_options});
            CREATE SINK counted AS SELECT * FROM nats_src WITH (connector = 'count');"""
    )
    driver = session.build(session.pending_sinks())
    reader = driver.sources[0].reader
    CountingSink.on_rows = lambda rows: driver.stop() if rows >= messages else None
    first: list[float] = []

    def watch():  # first arrival, and the end of a run that lost messages
        seen, last_change = 0, time.perf_counter()
        while not driver.finished:
            time.sleep(0.01)
            now = time.perf_counter()
            if not first and reader.received:
                first.append(now)
            if CountingSink.rows != seen:
                seen, last_change = CountingSink.rows, now
            elif first and now - last_change > IDLE_S:
                driver.stop()
                return

    watcher = threading.Thread(target=watch, daemon=True)
    print("ready", flush=True)
    watcher.start()
    summary = driver.run()
    status = reader.status()
    return {
        "received": CountingSink.rows,
        "seconds": (CountingSink.last or 0) - (first[0] if first else 0),
        "slow_consumer": status.get("slow_consumer_drops", 0),
        "dead_letters": sum(summary.dead_letters.values()),
    }


def run_consumer(argv: list[str]) -> None:
    kind, url, messages, fetch = argv[0], argv[1], int(argv[2]), int(argv[3])
    if kind == "bare-core":
        result = asyncio.run(bare_core(url, messages))
    elif kind == "bare-jetstream":
        result = asyncio.run(bare_jetstream(url, messages, fetch))
    else:
        result = sqlstream_consumer(url, messages, jetstream=kind == "sqlstream-jetstream")
    print(json.dumps(result), flush=True)


# -- the parent: server, publisher, consumers --------------------------------------------------


def start_consumer(kind: str, url: str, messages: int, fetch: int) -> subprocess.Popen:
    command = [sys.executable, os.path.abspath(__file__), "--consumer", kind, url, str(messages), str(fetch)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    line = process.stdout.readline().strip()
    if line != "ready":
        raise SystemExit(f"{kind} consumer failed to start: {line!r}")
    return process


def result_of(process: subprocess.Popen) -> dict:
    out, _ = process.communicate(timeout=600)
    lines = [line for line in out.splitlines() if line.startswith("{")]
    if process.returncode or not lines:
        raise SystemExit(f"a benchmark process failed (exit {process.returncode}): {out[-2000:]}")
    return json.loads(lines[-1])


def core_round(server: NatsServerProcess, kind: str, messages: int) -> dict:
    consumer = start_consumer(kind, server.url, messages, 0)
    publisher = start_publisher(server.url, SUBJECT, messages)
    published = result_of(publisher)
    result = result_of(consumer)
    result["publish_rate"] = published["published"] / published["seconds"]
    return result


async def fill_stream(url: str, messages: int) -> None:
    import nats

    nc = await nats.connect(url)
    js = nc.jetstream()
    try:
        await js.delete_stream(STREAM)
    except Exception:  # noqa: BLE001 - not there yet
        pass
    await js.add_stream(name=STREAM, subjects=[JS_SUBJECT])
    await nc.close()
    result_of(start_publisher(url, JS_SUBJECT, messages, stream=STREAM))


async def consumer_state(url: str, durable: str) -> tuple[int, int]:
    import nats

    nc = await nats.connect(url)
    info = await nc.jetstream().consumer_info(STREAM, durable)
    await nc.close()
    return info.num_ack_pending, info.ack_floor.stream_seq


def js_round(server: NatsServerProcess, kind: str, messages: int, fetch: int) -> dict:
    asyncio.run(fill_stream(server.url, messages))
    result = result_of(start_consumer(kind, server.url, messages, fetch))
    durable = "bare" if kind == "bare-jetstream" else "sqlstream"
    result["ack_pending"], result["ack_floor"] = asyncio.run(consumer_state(server.url, durable))
    return result


def report(name: str, runs: list[dict], messages: int) -> dict:
    best = max(runs, key=lambda r: r["received"] / max(r["seconds"], 1e-9))
    rate = best["received"] / max(best["seconds"], 1e-9)
    extra = ""
    if "ack_pending" in best:
        extra = f", ack floor {best['ack_floor']:,}, unacked {best['ack_pending']:,}"
    lost = messages - best["received"]
    rates = ", ".join(f"{r['received'] / max(r['seconds'], 1e-9):,.0f}" for r in runs)
    print(
        f"{name:>22}: {rate:>10,.0f} msgs/s  received {best['received']:,}/{messages:,} "
        f"(lost {lost:,}), slow-consumer events {best['slow_consumer']:,}{extra}"
        + (f", publisher {best['publish_rate']:,.0f} msgs/s" if "publish_rate" in best else "")
        + (f"  [runs: {rates}]" if len(runs) > 1 else "")
    )
    return {"rate": rate, **best}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=2, help="rounds of each consumer; the best counts")
    parser.add_argument("--only", choices=("core", "jetstream"), help="run one of the two benchmarks")
    parser.add_argument("--fetch", type=int, default=1000, help="bare JetStream consumer: messages per fetch")
    args = parser.parse_args()
    server = NatsServerProcess()
    try:
        print(f"nats-server at {server.url}; {args.messages:,} messages of ~100 bytes; best of {args.repeat}")
        if args.only in (None, "core"):
            print("core NATS (publisher in its own process, as fast as it can):")
            runs: dict[str, list[dict]] = {"bare-core": [], "sqlstream-core": []}
            for _ in range(args.repeat):
                for kind in runs:  # alternate, so both see the same machine conditions
                    runs[kind].append(core_round(server, kind, args.messages))
            bare = report("bare nats-py", runs["bare-core"], args.messages)
            ours = report("sqlstream", runs["sqlstream-core"], args.messages)
            print(f"  ratio sqlstream / bare nats-py: {ours['rate'] / bare['rate']:.2f}x")
        if args.only in (None, "jetstream"):
            print(f"JetStream (stream filled first; every message acked; bare fetch batch {args.fetch}):")
            runs = {"bare-jetstream": [], "sqlstream-jetstream": []}
            for _ in range(args.repeat):
                for kind in runs:
                    runs[kind].append(js_round(server, kind, args.messages, args.fetch))
            bare = report("bare nats-py pull+ack", runs["bare-jetstream"], args.messages)
            ours = report("sqlstream jetstream", runs["sqlstream-jetstream"], args.messages)
            print(f"  ratio sqlstream / bare nats-py: {ours['rate'] / bare['rate']:.2f}x")
    finally:
        server.stop()


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--consumer":
        run_consumer(sys.argv[2:])
    else:
        main()
