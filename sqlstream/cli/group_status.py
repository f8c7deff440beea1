"""``sqlstream group FILE --group NAME --checkpoint DIR|nats://…/BUCKET``: a worker group at a glance.

One row per partition: the worker holding its lease, its last committed checkpoint
(epoch, when, the stream sequence it resumes after) and its lag — the messages of the
partition after that sequence (a short-lived consumer's ``num_pending``), i.e. what a
new owner would read again. The live workers are listed first. The REPL's
``SHOW WORKERS [group]`` (and ``\\workers``) shows the same (:func:`show_workers`).
"""

from __future__ import annotations

import asyncio
import sys

from sqlstream.cli.workers import (
    PARTITIONED_SOURCE_HINT,
    PartitionedPipeline,
    load_pipeline,
    mirror_of,
    partitioned_pipeline,
    source_pipeline,
)
from sqlstream.connectors.base import Partition
from sqlstream.connectors.nats.objects import ObjectBucket
from sqlstream.errors import SqlAnalysisError, SqlStreamError
from sqlstream.runtime.checkpoint_mirror import is_bucket_url, split_bucket_url
from sqlstream.runtime.checkpointing import utc_text
from sqlstream.runtime.checkpoints import CheckpointStore, DamagedCheckpoint
from sqlstream.scaleout.partition_run import partition_checkpoint_dir

__all__ = ["cmd_group", "group_rows", "show_workers"]


def _last_checkpoint(pipeline: PartitionedPipeline, index: int, bucket: ObjectBucket | None,
                     group: str) -> tuple[int | None, str, int]:
    """(epoch, taken, stream sequence) of a partition's last committed checkpoint."""
    if bucket is not None:
        pointer = mirror_of(bucket, pipeline, group, Partition(index, pipeline.partitions)).latest()
        if pointer is None:
            return None, "-", 0
        position = (pointer["sources"].get(pipeline.source) or {}).get("position") or {}
        return pointer["epoch"], utc_text(pointer["created_at"]), int(position.get("sequence", 0))
    store = CheckpointStore(partition_checkpoint_dir(pipeline.checkpoint_dir, Partition(index, pipeline.partitions)))
    for epoch in reversed(store.committed_epochs() if store.exists() else []):
        try:
            checkpoint = store.load(epoch)
        except (DamagedCheckpoint, OSError):
            continue
        position = (checkpoint.sources.get(pipeline.source) or {}).get("position") or {}
        return epoch, utc_text(checkpoint.created_at), int(position.get("sequence", 0))
    return None, "-", 0


async def group_rows(pipeline: PartitionedPipeline, group: str | None) -> tuple[str, list[str], list[dict]]:
    """The group, its live workers and one row per partition. ``group`` None: the one
    group on the source's server (an error names them when there are several)."""
    import nats
    from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

    from sqlstream.connectors.nats.leases import PartitionLeases, group_names

    nc = await nats.connect(pipeline.url.split(","), connect_timeout=5, max_reconnect_attempts=0)
    try:
        js = nc.jetstream()
        if group is None:
            group = _only_group(await group_names(js), pipeline.url)
        leases = PartitionLeases(js, group, "status", pipeline.partitions, None)
        await leases.open()
        workers, owners = await leases.members(), await leases.owners()
        rows = []
        remote = is_bucket_url(pipeline.checkpoint_dir)
        bucket = ObjectBucket(*split_bucket_url(pipeline.checkpoint_dir)) if remote else None
        try:
            checkpoints = [(None, "-", 0) if pipeline.checkpoint_dir is None else
                           _last_checkpoint(pipeline, i, bucket, group) for i in range(pipeline.partitions)]
        finally:
            if bucket is not None:
                bucket.close()
        for index in range(pipeline.partitions):
            epoch, taken, sequence = checkpoints[index]
            if pipeline.checkpoint_dir is None:  # SHOW WORKERS without checkpoint_dir: owners only
                rows.append({"partition": index, "owner": owners.get(index, "-"), "checkpoint": None, "taken": "-",
                             "stream_seq": None, "lag": None})
                continue
            config = ConsumerConfig(filter_subject=pipeline.layout.subject_of(index), ack_policy=AckPolicy.NONE,
                                    deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=sequence + 1,
                                    inactive_threshold=10.0, mem_storage=True)
            info = await js.add_consumer(pipeline.stream, config)
            await js.delete_consumer(pipeline.stream, info.name)
            rows.append({"partition": index, "owner": owners.get(index, "-"), "checkpoint": epoch, "taken": taken,
                         "stream_seq": sequence, "lag": info.num_pending})
        return group, workers, rows
    finally:
        await nc.close()


def _header(group: str, workers: list[str]) -> str:
    return f"group '{group}': {len(workers)} worker(s){': ' if workers else ''}{', '.join(workers)}"


def _only_group(groups: list[str], url: str) -> str:
    if len(groups) == 1:
        return groups[0]
    if not groups:
        raise SqlAnalysisError(f"SHOW WORKERS: no worker group on {url}",
                               hint="start workers with sqlstream worker FILE --group NAME (or run FILE --workers N)")
    raise SqlAnalysisError(f"SHOW WORKERS: {len(groups)} worker groups on {url}: {', '.join(groups)}",
                           hint=f"name one: SHOW WORKERS {groups[0]}")


def show_workers(session, group: str | None, location=None) -> tuple[str, list[dict]]:
    """SHOW WORKERS [group] in the REPL: what ``sqlstream group`` shows, for the session's
    partitioned source; the last checkpoints are read from ``checkpoint_dir`` when set."""
    keys = session.partition_keys()
    if len(keys) != 1:
        raise SqlAnalysisError(
            "SHOW WORKERS: no partitioned source in this session" if not keys else
            f"SHOW WORKERS: {len(keys)} partitioned sources in this session ({', '.join(sorted(keys))}); "
            "a group of workers runs a pipeline with one", location=location,
            hint=f"{PARTITIONED_SOURCE_HINT}, as in the pipeline the workers run")
    (name,) = keys
    pipeline = source_pipeline(session, name, session.settings["checkpoint_dir"])
    try:
        group, workers, rows = asyncio.run(group_rows(pipeline, group))
    except SqlStreamError as error:
        error.location = error.location or location
        raise
    except Exception as error:  # NATS unreachable, a timeout
        raise SqlStreamError(f"SHOW WORKERS: cannot read the groups on {pipeline.url}: {error}",
                             location=location, exit_code=1) from None
    return _header(group, workers), rows


def cmd_group(args) -> int:
    from rich.console import Console

    from sqlstream.cli.render import render_table
    from sqlstream.introspection import rows_table

    args.checkpoint_interval = None
    pipeline = partitioned_pipeline(load_pipeline(args, None), args.file, args.checkpoint)
    _, workers, rows = asyncio.run(group_rows(pipeline, args.group))
    print(_header(args.group, workers))
    console = Console() if sys.stdout.isatty() else None
    render_table(rows_table(rows), "table" if console else "csv", sys.stdout, console)
    return 0
