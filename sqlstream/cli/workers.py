"""``sqlstream worker FILE --group NAME`` and ``sqlstream run FILE --workers N``.

A pipeline whose source is partitioned (``partitions = P``) runs as a group of
workers (docs/scale-out.md). ``worker`` joins a group from any machine that reaches
the NATS server and the checkpoint directory (only the NATS server with
``--checkpoint nats://host:port/BUCKET``: checkpoints in an object store); ``run --workers N`` starts N
``sqlstream worker`` processes on this machine, passes Ctrl-C / SIGTERM on to them and
prints one summary for the group. Every worker checks the pipeline first, so a
mistake is reported once, before anything runs (exit 2).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlstream.connectors.base import Partition
from sqlstream.connectors.durable_files import publish, temp_path
from sqlstream.connectors.nats.objects import ObjectBucket
from sqlstream.durations import parse_duration_us
from sqlstream.errors import SqlStreamError
from sqlstream.runtime.checkpoint_mirror import is_bucket_url, split_bucket_url

if TYPE_CHECKING:
    from sqlstream.connectors.nats.partitions import PartitionLayout

__all__ = ["PARTITIONED_SOURCE_HINT", "cmd_worker", "run_group", "PartitionedPipeline", "partitioned_pipeline",
           "source_pipeline", "load_pipeline", "mirror_of"]

_LAYOUT_FILE = "partitioning.json"
PARTITIONED_SOURCE_HINT = ("CREATE SOURCE ... WITH (connector = 'nats', stream = '...', "
                           "subject = 'orders.{customer_id}', partitions = 4, partition_by = 'customer_id')")
#: sinks whose output stays right with one writer per partition (see docs/scale-out.md)
_GROUP_SINKS = ("file", "nats", "stdout")


@dataclass(frozen=True)
class PartitionedPipeline:
    """What a group needs to know of a checked pipeline."""

    source: str
    url: str
    stream: str
    partitions: int
    partition_by: str
    subject: str
    checkpoint_dir: str | None  # a directory or nats://host:port/BUCKET; None: not known (SHOW WORKERS)
    layout: "PartitionLayout"
    replicas: int = 1  # JetStream replicas of the stream, consumers and buckets sqlstream creates


def partitioned_pipeline(session, path: str, checkpoint: str | None = None) -> PartitionedPipeline:
    """The pipeline's partitioned source, checked for running as a group (exit 2 if not);
    ``checkpoint``: the --checkpoint flag, a directory (in the session's settings by
    then) or an object store bucket (``nats://host:port/BUCKET``)."""
    keys = session.partition_keys()
    if len(keys) != 1:
        raise SqlStreamError(
            f"{path}: a group of workers runs a pipeline with one partitioned source; this one has {len(keys) or 'none'}",
            hint=PARTITIONED_SOURCE_HINT)
    (name,) = keys
    sinks = session.pending_sinks()
    if not sinks:
        raise SqlStreamError(f"{path}: nothing to run", hint="add CREATE SINK ... AS SELECT, INSERT INTO, or a SELECT")
    for sink in sinks:
        if name not in sink.plan.sources():
            raise SqlStreamError(
                f"sink '{sink.name}' does not read partitioned source '{name}': every partition would run it again",
                location=sink.statement.location if sink.statement is not None else None,
                hint="run queries over other sources in a separate pipeline")
        if sink.connector.name not in _GROUP_SINKS:
            raise SqlStreamError(
                f"sink '{sink.name}': connector '{sink.connector.name}' is not supported by workers yet",
                location=sink.statement.location if sink.statement is not None else None,
                hint=f"workers write to {', '.join(_GROUP_SINKS)} sinks (each partition commits its own epochs)")
    if session.settings["http"] is not None:
        raise SqlStreamError("--http / SET http is not supported by workers yet (each partition is its own run)")
    checkpoint_dir = checkpoint if is_bucket_url(checkpoint) else session.settings["checkpoint_dir"]
    if checkpoint_dir is None:
        raise SqlStreamError(
            "a group of workers needs checkpoints: a partition handed over resumes from its last checkpoint",
            hint="add --checkpoint DIR, a directory every worker of the group can read and write, "
                 "or --checkpoint nats://host:port/BUCKET, an object store bucket on the NATS server")
    return source_pipeline(session, name, checkpoint_dir)


def source_pipeline(session, name: str, checkpoint_dir: str | None) -> PartitionedPipeline:
    """What a group needs to know of partitioned source ``name`` (no checks)."""
    connector = session.sources[name].connector
    config = connector.config
    return PartitionedPipeline(name, config["url"], config["stream"], config["partitions"],
                               config["partition_by"], config["subject"], checkpoint_dir, connector.layout,
                               config["replicas"])


async def _ensure_stream(pipeline: PartitionedPipeline, connect_timeout_s: float) -> None:
    """Create the partitioned stream (or check it) before any partition is claimed, so
    publishers can start as soon as a worker has joined."""
    import nats

    from sqlstream.connectors.nats.partitions import ensure_partitioned_stream

    try:
        nc = await nats.connect(pipeline.url.split(","), connect_timeout=connect_timeout_s, max_reconnect_attempts=0)
    except Exception as error:
        raise SqlStreamError(f"source '{pipeline.source}': cannot connect to NATS at {pipeline.url}: {error}",
                             hint="start nats-server, or fix the source's url", exit_code=1) from None
    owner = f"source '{pipeline.source}'"
    try:
        if await ensure_partitioned_stream(nc.jetstream(), pipeline.stream, pipeline.layout, owner, pipeline.replicas):
            print(f"sqlstream: created stream {pipeline.stream} ({pipeline.layout.stream_subject}, "
                  f"{pipeline.partitions} partitions)", file=sys.stderr)
    finally:
        await nc.close()


def _check_layout(pipeline: PartitionedPipeline, bucket: ObjectBucket | None, group: str) -> None:
    """The checkpoint directory (or the group's key in the bucket) remembers the layout
    its partitions were written with: checkpoints of 4 partitions do not fit a run over 8."""
    layout = {"stream": pipeline.stream, "subject": pipeline.subject, "partitions": pipeline.partitions,
              "partition_by": pipeline.partition_by.lower()}
    if bucket is not None:
        name = f"{group}/{_LAYOUT_FILE}"
        saved = bucket.get(name)
        if saved is None:
            bucket.put(name, json.dumps(layout).encode())
        elif json.loads(saved) != layout:
            raise SqlStreamError(
                f"checkpoints of group '{group}' in {pipeline.checkpoint_dir} belong to a pipeline partitioned as "
                f"{json.loads(saved)}, not {layout}", hint="use another --group or bucket")
        return
    os.makedirs(pipeline.checkpoint_dir, exist_ok=True)
    path = os.path.join(pipeline.checkpoint_dir, _LAYOUT_FILE)
    if os.path.exists(path):
        with open(path, encoding="utf-8") as handle:
            saved = json.load(handle)
        if saved != layout:
            raise SqlStreamError(
                f"checkpoint {pipeline.checkpoint_dir} belongs to a pipeline partitioned as {saved}, not {layout}",
                hint="use another --checkpoint directory, or --from-scratch to start over")
        return
    temporary = temp_path(path)
    with open(temporary, "w", encoding="utf-8") as handle:
        json.dump(layout, handle)
    publish(temporary, path)


def load_pipeline(args, partition: Partition | None, checkpoint_dir: str | None = None):
    from sqlstream.cli.session_setup import make_session, read_sql_file

    session = make_session(args.file, args.udfs, args.set, discover_udfs=not args.no_udfs,
                           allow_paths=args.allow_paths, partition=partition)
    session.execute(read_sql_file(args.file), path=args.file, base_dir=os.path.dirname(os.path.abspath(args.file)))
    local = None if is_bucket_url(args.checkpoint) else args.checkpoint  # a bucket: each run's working directory
    flags = {"checkpoint_dir": checkpoint_dir or local, "checkpoint_interval": args.checkpoint_interval}
    for key, value in flags.items():  # the flags win over SET in the file
        if value:
            session.apply_setting(key, value)
    return session


def mirror_of(bucket: ObjectBucket, pipeline: PartitionedPipeline, group: str, partition: Partition):
    """Where one partition's checkpoints travel: ``<group>/partition=<n>`` in the bucket."""
    from sqlstream.runtime.checkpoint_mirror import CheckpointMirror

    key = f"{group}/{partition.label}"
    return CheckpointMirror(bucket, key, f"{pipeline.checkpoint_dir}/{key}")


def _ttl_s(text: str) -> float:
    try:
        us = parse_duration_us(text)
    except ValueError as error:
        raise SqlStreamError(f"--lease-ttl {text}: {error}", hint="e.g. --lease-ttl 10s") from None
    if us < 1_000_000:
        raise SqlStreamError(f"--lease-ttl {text}: must be at least 1s")
    return us / 1e6


def cmd_worker(args) -> int:
    from sqlstream.connectors.nats.leases import check_group_name

    check_group_name(args.group)
    ttl_s = _ttl_s(args.lease_ttl)
    session = load_pipeline(args, None)
    pipeline = partitioned_pipeline(session, args.file, args.checkpoint)
    if args.from_scratch:
        raise SqlStreamError("--from-scratch is not supported by workers",
                             hint="remove the checkpoint directory while no worker of the group runs")
    if not is_bucket_url(pipeline.checkpoint_dir):
        _check_layout(pipeline, None, args.group)
        return _serve(args, pipeline, ttl_s, None, pipeline.checkpoint_dir)
    for sink in session.pending_sinks():
        if sink.connector.name == "file":
            print(f"sqlstream: sink '{sink.name}' writes files: with checkpoints in an object store its path must "
                  "still be a directory every worker of the group shares (a partition's next owner finishes or "
                  "rolls back the epochs its last owner wrote there)", file=sys.stderr)
    bucket = ObjectBucket(*split_bucket_url(pipeline.checkpoint_dir), replicas=pipeline.replicas)
    try:
        _check_layout(pipeline, bucket, args.group)
        with tempfile.TemporaryDirectory(prefix="sqlstream-worker-") as work:  # the runs' working directories
            return _serve(args, pipeline, ttl_s, bucket, work)
    finally:
        bucket.close()


def _serve(args, pipeline: PartitionedPipeline, ttl_s: float, bucket: ObjectBucket | None, checkpoint_dir: str) -> int:
    """Join the group and run partitions until stopped; with ``bucket``, each partition's
    checkpoints travel through it (``checkpoint_dir`` holds the working copies)."""
    from sqlstream.scaleout.partition_run import PartitionRun, partition_checkpoint_dir
    from sqlstream.scaleout.worker import Worker

    asyncio.run(_ensure_stream(pipeline, 5.0))
    name = os.path.splitext(os.path.basename(args.file))[0]

    def note(text: str) -> None:
        print(f"sqlstream: {text}", file=sys.stderr, flush=True)

    def open_session(partition: Partition):
        return load_pipeline(args, partition, partition_checkpoint_dir(checkpoint_dir, partition))

    def start(index: int, fence) -> PartitionRun:
        partition = Partition(index, pipeline.partitions, args.group)
        mirror = None if bucket is None else mirror_of(bucket, pipeline, args.group, partition)
        return PartitionRun(partition, open_session, name, lambda text: note(f"partition {index}: {text}"), fence,
                            mirror)

    worker = Worker(url=pipeline.url, group=args.group, partitions=pipeline.partitions, ttl_s=ttl_s,
                    start=start, note=note, replicas=pipeline.replicas)

    async def serve():
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, worker.stop, signal.Signals(sig).name)
        return await worker.serve()

    report = asyncio.run(serve())
    for run in report.runs:
        resumed = f", resumed from epoch {run.resumed_from}" if run.resumed_from is not None else ""
        out = "".join(f", {sink} {rows:,} rows" for sink, rows in run.rows_out.items())
        note(f"worker {report.worker}: partition {run.partition} {run.ended}: {run.rows_in:,} rows in{out}{resumed}")
    if args.report:
        with open(args.report, "w", encoding="utf-8") as handle:
            json.dump(report.as_dict(), handle)
    if report.error:
        failures = [r.error for r in report.runs if r.error]
        print(f"error: {report.error}: {failures[0] if failures else ''}", file=sys.stderr)
        return 1
    return 128 + signal.Signals[report.stopped_by].value if report.stopped_by in ("SIGINT", "SIGTERM") else 0


def _stop_with_parent() -> None:
    """In a worker process before it starts (Linux): SIGTERM when the supervisor dies, so
    a killed ``run --workers`` leaves no workers behind (they stop gracefully)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # not Linux: workers outlive a killed supervisor


def run_group(args) -> int:
    """``run --workers N``: N ``sqlstream worker`` processes and one summary."""
    if args.from_scratch:
        raise SqlStreamError("--from-scratch is not supported with --workers",
                             hint="remove the checkpoint directory while no worker of the group runs")
    session = load_pipeline(args, None)
    partitioned_pipeline(session, args.file, args.checkpoint)  # bad input is reported once, here (exit 2)
    _ttl_s(args.lease_ttl)
    group = args.group or re.sub(r"[^A-Za-z0-9_-]", "_", os.path.splitext(os.path.basename(args.file))[0])
    with tempfile.TemporaryDirectory(prefix="sqlstream-group-") as reports:
        children = []
        for i in range(args.workers):
            command = [sys.executable, "-m", "sqlstream.cli.main", "worker", args.file, "--group", group,
                       "--lease-ttl", args.lease_ttl, "--report", os.path.join(reports, f"{i}.json")]
            command += [f"--set={s}" for s in args.set] + [f"--udfs={u}" for u in args.udfs]
            command += [f"--allow-paths={p}" for p in args.allow_paths] + (["--no-udfs"] if args.no_udfs else [])
            command += ["--checkpoint", args.checkpoint] if args.checkpoint else []
            command += ["--checkpoint-interval", args.checkpoint_interval] if args.checkpoint_interval else []
            children.append(subprocess.Popen(command, preexec_fn=_stop_with_parent))
        signalled: list[int] = []

        def forward(signum, frame):
            signalled.append(signum)
            for child in children:
                if child.poll() is None:
                    child.send_signal(signum)

        previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            codes = [child.wait() for child in children]
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        reports_read = []
        for i in range(args.workers):
            try:
                with open(os.path.join(reports, f"{i}.json"), encoding="utf-8") as handle:
                    reports_read.append(json.load(handle))
            except (OSError, ValueError):
                reports_read.append(None)
    return _group_summary(group, codes, reports_read, signalled, args.quiet)


def _group_summary(group: str, codes: list[int], reports: list, signalled: list[int], quiet: bool) -> int:
    runs = [run for report in reports if report for run in report["runs"]]
    failed = [i for i, code in enumerate(codes) if code not in (0, 130, 143)]
    if not quiet:
        rows_in = sum(r["rows_in"] for r in runs)
        sinks: dict[str, int] = {}
        for run in runs:
            for sink, rows in run["rows_out"].items():
                sinks[sink] = sinks.get(sink, 0) + rows
        handed = sum(1 for r in runs if r["ended"] == "handed over")
        resumed = sum(1 for r in runs if r["resumed_from"] is not None)
        out = "".join(f", sink {sink}: {rows:,} rows" for sink, rows in sinks.items())
        how = f"stopped by {signal.Signals(signalled[0]).name}" if signalled else "finished"
        print(f"sqlstream: group '{group}' {how}: {len(codes)} workers, {len(runs)} partition runs "
              f"({handed} handed over, {resumed} resumed from a checkpoint), {rows_in:,} rows in{out}", file=sys.stderr)
        for i in failed:
            code = codes[i]
            why = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
            print(f"sqlstream: worker {i + 1} {why}: its partitions go to the other workers once their leases "
                  "expire", file=sys.stderr)
    if failed:
        return 1
    return 128 + signalled[0] if signalled else 0
