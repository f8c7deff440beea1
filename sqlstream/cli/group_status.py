"""``sqlstream group FILE --group NAME --checkpoint DIR|nats://…/BUCKET``: a worker group at a glance.

One row per partition: the worker holding its lease, its last committed checkpoint
(epoch, when, the stream sequence it resumes after) and its lag — the messages of the
partition after that sequence (a short-lived consumer's ``num_pending``), i.e. what a
new owner would read again. The live workers are listed first.
"""

from __future__ import annotations

import asyncio
import sys

from sqlstream.cli.workers import PartitionedPipeline, load_pipeline, mirror_of, partitioned_pipeline
from sqlstream.connectors.base import Partition
from sqlstream.connectors.nats.objects import ObjectBucket, is_bucket_url, split_bucket_url
from sqlstream.runtime.checkpointing import utc_text
from sqlstream.runtime.checkpoints import CheckpointStore, DamagedCheckpoint
from sqlstream.scaleout.partition_run import partition_checkpoint_dir

__all__ = ["cmd_group", "group_rows"]


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


async def group_rows(pipeline: PartitionedPipeline, group: str) -> tuple[list[str], list[dict]]:
    """The live workers and one row per partition."""
    import nats
    from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

    from sqlstream.connectors.nats.leases import PartitionLeases

    nc = await nats.connect(pipeline.url.split(","), connect_timeout=5, max_reconnect_attempts=0)
    try:
        js = nc.jetstream()
        leases = PartitionLeases(js, group, "status", pipeline.partitions, None)
        await leases.open()
        workers, owners = await leases.members(), await leases.owners()
        rows = []
        remote = is_bucket_url(pipeline.checkpoint_dir)
        bucket = ObjectBucket(*split_bucket_url(pipeline.checkpoint_dir)) if remote else None
        try:
            checkpoints = [_last_checkpoint(pipeline, i, bucket, group) for i in range(pipeline.partitions)]
        finally:
            if bucket is not None:
                bucket.close()
        for index in range(pipeline.partitions):
            epoch, taken, sequence = checkpoints[index]
            config = ConsumerConfig(filter_subject=pipeline.layout.subject_of(index), ack_policy=AckPolicy.NONE,
                                    deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=sequence + 1,
                                    inactive_threshold=10.0, mem_storage=True)
            info = await js.add_consumer(pipeline.stream, config)
            await js.delete_consumer(pipeline.stream, info.name)
            rows.append({"partition": index, "owner": owners.get(index, "-"), "checkpoint": epoch, "taken": taken,
                         "stream_seq": sequence, "lag": info.num_pending})
        return workers, rows
    finally:
        await nc.close()


def cmd_group(args) -> int:
    from rich.console import Console

    from sqlstream.cli.render import render_table
    from sqlstream.introspection import rows_table

    args.checkpoint_interval = None
    pipeline = partitioned_pipeline(load_pipeline(args, None), args.file, args.checkpoint)
    workers, rows = asyncio.run(group_rows(pipeline, args.group))
    print(f"group '{args.group}': {len(workers)} worker(s){': ' if workers else ''}{', '.join(workers)}")
    console = Console() if sys.stdout.isatty() else None
    render_table(rows_table(rows), "table" if console else "csv", sys.stdout, console)
    return 0
