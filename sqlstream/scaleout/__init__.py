"""Scale-out: workers that share a pipeline over a partitioned JetStream stream.

:mod:`~sqlstream.scaleout.worker` holds a worker's leases and runs its partitions,
:mod:`~sqlstream.scaleout.partition_run` runs one partition's pipeline on a thread.
The user's guide is docs/scale-out.md.
"""
