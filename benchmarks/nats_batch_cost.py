"""Driver-thread CPU per small batch of the NATS latency pipeline, in one process.

The pipeline of ``nats_latency.py`` (core NATS JSON in, ``score(f1, f2, f3, f4)`` a
tiny ONNX model, core NATS JSON out) runs on a thread of this process; bursts of
``n`` messages (``--sizes``, default 1, 3 and 10) are published at once, each burst
waits until its rows came back, so most batches hold one burst. For every batch the
driver thread's CPU time (``time.thread_time``) from taking it off the source to the
end of the sink's write is recorded; the report is the median and p90 by rows per
batch, and the CPU time of the whole process per batch (all threads: the NATS loop
threads and this process's publisher and subscriber too). ``--profile`` prints where that time goes (cProfile of the driver thread).
Run it against another checkout by putting that first on ``PYTHONPATH``:

    python benchmarks/nats_batch_cost.py --bursts 400
    PYTHONPATH=../main python benchmarks/nats_batch_cost.py --bursts 400
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import cProfile
import os
import pstats
import sys
import tempfile
import threading
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from nats_common import NatsServerProcess  # noqa: E402
from nats_latency import IN_SUBJECT, OUT_SUBJECT, build_model, pipeline_session  # noqa: E402


def build_pipeline(url: str, model: str):
    session = pipeline_session(url, model)
    return session.build(session.pending_sinks())


class BatchTimes:
    """Wraps every source stage: thread CPU from a poll that returns a batch to the end
    of processing it, by rows in the batch."""

    def __init__(self, driver, profile: bool):
        self.by_rows: dict[int, list[float]] = collections.defaultdict(list)
        self.profiler = cProfile.Profile(time.thread_time) if profile else None
        self.recording = False
        self.process_cpu = 0.0  # seconds, over the bursts measured
        for stage in driver.sources:
            self._wrap(stage)

    def _wrap(self, stage) -> None:
        poll, process = stage.reader.poll, stage.process
        started = [0.0]

        def timed_poll():
            if self.profiler is not None and self.recording:
                self.profiler.enable()
            started[0] = time.thread_time()
            item = poll()
            if item is None and self.profiler is not None:
                self.profiler.disable()
            return item

        def timed_process(item):
            process(item)
            spent = time.thread_time() - started[0]
            if self.profiler is not None:
                self.profiler.disable()
            if self.recording:
                self.by_rows[item.batch.num_rows].append(spent)

        stage.reader.poll, stage.process = timed_poll, timed_process


async def publish_bursts(url: str, sizes: list[int], bursts: int, times: BatchTimes, warmup: int) -> None:
    import nats

    nc = await nats.connect(url)
    got = 0
    arrived = asyncio.Event()

    async def on_out(msg):
        nonlocal got
        got += 1
        arrived.set()

    await nc.subscribe(OUT_SUBJECT, cb=on_out)
    await nc.flush()
    expected = 0
    i = 0
    for burst in range(warmup + bursts):
        if burst == warmup:
            times.process_cpu = -time.process_time()
        times.recording = burst >= warmup
        n = sizes[burst % len(sizes)]
        for _ in range(n):
            await nc.publish(IN_SUBJECT, b'{"id":%d,"sent_ns":%d,"f1":0.5,"f2":0.25,"f3":%d.125,"f4":-1.5}'
                             % (i, time.time_ns(), i % 7))
            i += 1
        await nc.flush()
        expected += n
        deadline = time.monotonic() + 5
        while got < expected and time.monotonic() < deadline:
            arrived.clear()
            try:
                await asyncio.wait_for(arrived.wait(), 1)
            except asyncio.TimeoutError:
                pass
        await asyncio.sleep(0.003)
    times.process_cpu += time.process_time()
    await nc.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1,3,10", help="messages per burst, comma-separated (cycled)")
    parser.add_argument("--bursts", type=int, default=300, help="bursts measured (after 50 of warm-up)")
    parser.add_argument("--profile", action="store_true", help="print cProfile of the driver thread's batches")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    server = NatsServerProcess(jetstream=False)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            driver = build_pipeline(server.url, build_model(os.path.join(tmp, "score.onnx")))
            times = BatchTimes(driver, args.profile)
            runner = threading.Thread(target=driver.run, daemon=True)
            runner.start()
            asyncio.run(publish_bursts(server.url, sizes, args.bursts, times, warmup=50))
            driver.stop()
            runner.join(10)
    finally:
        server.stop()
    import sqlstream

    print(f"sqlstream from {os.path.dirname(os.path.dirname(os.path.abspath(sqlstream.__file__)))}; "
          f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    for rows in sorted(times.by_rows):
        spent = np.array(times.by_rows[rows]) * 1e3
        if len(spent) >= 5:
            print(f"  {rows:3d} rows/batch: {len(spent):4d} batches, driver CPU p50 {np.median(spent):.3f} ms, "
                  f"p90 {np.percentile(spent, 90):.3f} ms")
    batches = sum(map(len, times.by_rows.values()))
    print(f"  process CPU (all threads) per batch: {times.process_cpu / max(batches, 1) * 1e3:.3f} ms")
    if times.profiler is not None:
        pstats.Stats(times.profiler).sort_stats(os.environ.get("SORT", "tottime")).print_stats(int(os.environ.get("TOP", "35")))


if __name__ == "__main__":
    main()
