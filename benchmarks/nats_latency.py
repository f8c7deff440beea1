"""End-to-end latency through a NATS pipeline at a steady rate.

A publisher process sends ``--rate`` (default 10k) msgs/s; each message carries the
wall-clock time it was published. The pipeline, in its own process, is

    SELECT id, sent_ns, score(f1, f2, f3, f4) AS s FROM lat_src WHERE f1 > 0.1

(``score`` a tiny ONNX model: the example's logistic regression) from a core NATS
source into a core NATS sink; this process subscribes to the output and records
receive time - publish time per message. The first 10% of messages are warm-up.

Each round runs, per ``--rates`` value (default 1k and 10k msgs/s), a baseline: a
bare nats-py relay that republishes each message as it arrives (the transport's own
latency); then the pipeline at the default settings (or once per ``--timeouts``
value of ``batch_timeout``, the upper bound on how long a batch waits for more
rows). ``--baseline-tree`` runs the same pipeline from another checkout too, in the
same run, so a change is compared under the same load.

    python benchmarks/nats_latency.py                       # 10 s at 1k/s and at 10k/s
    python benchmarks/nats_latency.py --seconds 5 --repeat 3 --baseline-tree ../main
    python benchmarks/nats_latency.py --rates 10000 --timeouts 1ms,10ms,50ms
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from nats_common import NatsServerProcess  # noqa: E402

IN_SUBJECT = "lat.in"
OUT_SUBJECT = "lat.out"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def build_model(path: str) -> str:
    spec = importlib.util.spec_from_file_location("build_model", os.path.join(ROOT, "examples", "nats_sensors", "build_model.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.build(path)


# -- processes ------------------------------------------------------------------------------


def pipeline_session(url: str, model: str, settings: dict | None = None):
    """The measured pipeline (core NATS in, filter + model, core NATS out), not started."""
    from sqlstream.session import Session

    session = Session(dead_letter_path="off", settings=settings or {})
    session.register_model("score", model)
    session.execute(
        f"""CREATE SOURCE lat_src (id BIGINT, sent_ns BIGINT, f1 DOUBLE, f2 DOUBLE, f3 DOUBLE, f4 DOUBLE)
              WITH (connector = 'nats', url = '{url}', subject = '{IN_SUBJECT}');
            CREATE SINK lat_out AS SELECT id, sent_ns, score(f1, f2, f3, f4) AS s FROM lat_src WHERE f1 > 0.1
              WITH (connector = 'nats', url = '{url}', subject = '{OUT_SUBJECT}');"""
    )
    return session


def run_pipeline(url: str, model: str, batch_timeout: str) -> None:
    session = pipeline_session(url, model, {} if batch_timeout == "default" else {"batch_timeout": batch_timeout})
    driver = session.build(session.pending_sinks())
    signal.signal(signal.SIGTERM, lambda *_: driver.stop())
    print("ready", flush=True)
    driver.run()


async def run_relay(url: str) -> None:
    """The baseline: republish every message as it arrives, no decoding."""
    import nats

    nc = await nats.connect(url)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)

    async def relay(msg):
        await nc.publish(OUT_SUBJECT, msg.data)

    await nc.subscribe(IN_SUBJECT, cb=relay, pending_msgs_limit=2_000_000, pending_bytes_limit=1 << 30)
    await nc.flush()
    print("ready", flush=True)
    await stop.wait()
    await nc.close()


async def publish_steady(url: str, messages: int, rate: float) -> None:
    import nats

    nc = await nats.connect(url)
    rng = np.random.default_rng(5)
    features = rng.uniform(0, 1, (messages, 4))
    started = time.perf_counter()
    i = 0
    while i < messages:
        due = int((time.perf_counter() - started) * rate) + 1
        while i < min(due, messages):
            f = features[i]
            await nc.publish(
                IN_SUBJECT,
                b'{"id":%d,"sent_ns":%d,"f1":%.4f,"f2":%.4f,"f3":%.4f,"f4":%.4f}'
                % (i, time.time_ns(), f[0], f[1], f[2], f[3]),
            )
            i += 1
        # 1 ms ticks: asyncio's epoll waits in whole milliseconds, so a shorter sleep
        # turns into a busy loop that takes a core away from the pipeline under test
        await asyncio.sleep(0.001)
    await nc.flush()
    await nc.close()


# -- the parent -------------------------------------------------------------------------------


async def measure(url: str, messages: int, rate: float, expected: int) -> np.ndarray:
    import nats

    nc = await nats.connect(url)
    latencies = np.zeros(messages, dtype=np.int64)
    seen = np.zeros(messages, dtype=bool)
    done = asyncio.Event()
    count = 0

    async def on_message(msg):
        nonlocal count
        now = time.time_ns()
        row = json.loads(msg.data)
        latencies[row["id"]] = now - row["sent_ns"]
        seen[row["id"]] = True
        count += 1
        if count >= expected:
            done.set()

    await nc.subscribe(OUT_SUBJECT, cb=on_message, pending_msgs_limit=2_000_000, pending_bytes_limit=1 << 30)
    await nc.flush()
    publisher = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--role", "publish", url,
                                  str(messages), str(rate)])
    try:
        await asyncio.wait_for(done.wait(), timeout=messages / rate + 30)
    except asyncio.TimeoutError:
        pass
    publisher.wait(60)
    await nc.close()
    warm = messages // 10
    keep = seen.copy()
    keep[:warm] = False
    return latencies[keep]


def start(role: list[str], tree: str = ROOT) -> subprocess.Popen:
    """A role in its own process; ``tree`` is the checkout whose sqlstream it imports."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([tree, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    process = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--role", *role], stdout=subprocess.PIPE,
                               text=True, env=env)
    if process.stdout.readline().strip() != "ready":
        raise SystemExit(f"{role[0]} failed to start")
    return process


def stop(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGTERM)
    process.wait(30)


def report(name: str, latencies: np.ndarray, expected: int) -> None:
    ms = latencies / 1e6
    p50, p99, p999 = np.percentile(ms, [50, 99, 99.9])
    print(f"{name:>48}: p50 {p50:7.2f} ms  p99 {p99:7.2f} ms  p99.9 {p999:7.2f} ms  max {ms.max():7.2f} ms"
          f"  ({len(ms):,}/{expected:,} measured)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="how long each measurement publishes")
    parser.add_argument("--rates", default="1000,10000", help="messages per second to run, comma-separated")
    parser.add_argument("--timeouts", default="default",
                        help="batch_timeout values to run, comma-separated ('default': the setting left alone)")
    parser.add_argument("--baseline-tree", metavar="PATH",
                        help="also run the pipeline from this checkout (e.g. a worktree of the code before a change)")
    parser.add_argument("--repeat", type=int, default=1, help="rounds of every measurement")
    args = parser.parse_args()
    trees = [("this tree", ROOT)] + ([("baseline tree", os.path.abspath(args.baseline_tree))] if args.baseline_tree else [])
    server = NatsServerProcess(jetstream=False)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            model = build_model(os.path.join(tmp, "score.onnx"))
            print(f"nats-server at {server.url}; {args.seconds:g} s per measurement; first 10% are warm-up; "
                  f"latency = subscriber receive - publish (wall clock)")
            for round_ in range(args.repeat):
                for rate in (float(r) for r in args.rates.split(",")):
                    messages = int(rate * args.seconds)
                    rng = np.random.default_rng(5)
                    # the rows the filter keeps: the publisher's features, as printed (4 decimals)
                    keeps = np.round(rng.uniform(0, 1, (messages, 4))[:, 0], 4) > 0.1
                    passing, warm = int(keeps.sum()), messages // 10
                    print(f"-- round {round_ + 1}: {messages:,} messages at {rate:,.0f}/s")
                    relay = start(["relay", server.url])
                    try:
                        latencies = asyncio.run(measure(server.url, messages, rate, messages))
                    finally:
                        stop(relay)
                    report("bare nats-py relay (baseline)", latencies, messages - warm)
                    for timeout in (t.strip() for t in args.timeouts.split(",")):
                        # (alternate the order by round: neither tree always runs first)
                        for tree_name, tree in trees if round_ % 2 == 0 else trees[::-1]:
                            pipeline = start(["pipeline", server.url, model, timeout], tree)
                            try:
                                latencies = asyncio.run(measure(server.url, messages, rate, passing))
                            finally:
                                stop(pipeline)
                            setting = "default batch_timeout" if timeout == "default" else f"batch_timeout={timeout}"
                            report(f"sqlstream ({tree_name}), {setting}", latencies, int(keeps[warm:].sum()))
    finally:
        server.stop()


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--role":
        role, rest = sys.argv[2], sys.argv[3:]
        if role == "pipeline":
            run_pipeline(*rest)
        elif role == "relay":
            asyncio.run(run_relay(rest[0]))
        else:
            asyncio.run(publish_steady(rest[0], int(rest[1]), float(rest[2])))
    else:
        main()
