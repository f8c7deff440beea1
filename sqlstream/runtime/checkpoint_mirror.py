"""Checkpoints that travel: a run's checkpoint directory mirrored into a blob store
(a NATS object store bucket, :class:`~sqlstream.connectors.nats.objects.ObjectBucket`).

The run still writes its checkpoints to a local working directory with the ordinary
protocol (:mod:`sqlstream.runtime.checkpointing`). With a mirror, the checkpointer also:

* on open, empties the working directory and downloads the newest epoch the mirror
  names, so a run on any machine resumes where the last owner stopped;
* after writing epoch ``N``'s offsets file (the point from which an epoch counts),
  uploads the epoch's state files, then its offsets file, and only then the
  **pointer** ``<key>/latest.json`` naming ``N`` — the pointer is the remote commit
  point: objects of an epoch no pointer names (an upload cut short by a crash) are
  never read.

The pointer names the last ``checkpoint_keep`` epochs and, for each, its **slot**: epoch
``N`` is uploaded to slot ``N % (keep + 1)``, ``<key>/slot-<s>/state-<i>.arrow`` and
``<key>/slot-<s>/offsets.json``, so the slot being written is never one the current
pointer names, and the bucket holds a bounded set of names (a JetStream object store
keeps a small marker for every name ever deleted: reusing names deletes nothing). The
pointer maps each object back to its path in the checkpoint directory. ``<key>`` is the
pipeline and partition (``orders/partition=3``). Commit markers are not uploaded: a
downloaded epoch is rolled forward by the ordinary recovery (the sinks' commit is
idempotent).
"""

from __future__ import annotations

import json
import os
import re
import time
from typing import Any, Callable, Protocol
from urllib.parse import urlsplit

from sqlstream.errors import ConnectorError
from sqlstream.runtime.checkpoints import Checkpoint, CheckpointStore

__all__ = ["CheckpointMirror", "BlobStore", "POINTER", "is_bucket_url", "split_bucket_url"]

#: the object, under a mirror's key, that names its committed epochs
POINTER = "latest.json"


_SCHEMES = ("nats", "tls")
_BUCKET = re.compile(r"^[A-Za-z0-9_-]+$")


def is_bucket_url(text: str | None) -> bool:
    """Whether a checkpoint location names an object store bucket rather than a
    directory (here, not beside the bucket client: ``sqlstream run`` asks it of every
    ``--checkpoint`` without loading the NATS connector)."""
    return bool(text) and text.split("://", 1)[0].lower() in _SCHEMES and "://" in text


def split_bucket_url(text: str) -> tuple[str, str]:
    """``nats://host:port/BUCKET`` as (server url, bucket name); the servers of a NATS
    cluster are comma-separated before the bucket, so a worker can start while one is down.

    >>> split_bucket_url("nats://127.0.0.1:4222/CK")
    ('nats://127.0.0.1:4222', 'CK')
    >>> split_bucket_url("nats://n1:4222,nats://n2:4222/CK")
    ('nats://n1:4222,nats://n2:4222', 'CK')
    """
    servers, _, bucket = text.rstrip("/").rpartition("/")
    parts = [urlsplit(server.strip()) for server in servers.split(",")]
    if not _BUCKET.match(bucket) or any(not p.netloc or p.path or p.scheme.lower() not in _SCHEMES for p in parts):
        raise ConnectorError(f"{text}: expected nats://host:port/BUCKET (bucket: letters, digits, - and _)",
                             hint="e.g. --checkpoint nats://127.0.0.1:4222/sqlstream_checkpoints (a cluster: "
                                  "nats://n1:4222,nats://n2:4222/sqlstream_checkpoints)", exit_code=2)
    return ",".join(f"{p.scheme}://{p.netloc}" for p in parts), bucket


class BlobStore(Protocol):
    """What a mirror needs of a bucket (:class:`~sqlstream.connectors.nats.objects.ObjectBucket`)."""

    def put(self, name: str, data: bytes) -> None: ...

    def get(self, name: str) -> bytes | None: ...


class CheckpointMirror:
    """One checkpoint directory's copy under ``key`` in ``blobs``."""

    def __init__(self, blobs: BlobStore, key: str, where: str):
        self.blobs = blobs
        self.key = key
        self.where = where  # for messages: nats://host:port/BUCKET/key

    def latest(self) -> dict[str, Any] | None:
        """The pointer: ``{"epoch", "created_at", "sources", "epochs": {epoch: {"slot",
        "files"}}}``; None before the first upload."""
        data = self.blobs.get(f"{self.key}/{POINTER}")
        return None if data is None else json.loads(data)

    def download(self, store: CheckpointStore, warn: Callable[[str], None]) -> int | None:
        """Replace what ``store`` holds with the newest committed epoch of the mirror;
        returns that epoch (None: nothing to resume). The files' checksums are checked
        when the checkpointer loads the epoch, as for a local directory."""
        store.remove_all()
        pointer = self.latest()
        if pointer is None:
            return None
        epoch = pointer["epoch"]
        entry = pointer["epochs"][str(epoch)]
        started = time.perf_counter()
        size = 0
        for index, file in enumerate(entry["files"]):
            data = self.blobs.get(self._name(entry["slot"], index, file))
            if data is None:
                continue  # reported as a damaged checkpoint when it is loaded
            path = os.path.join(store.directory, file)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as handle:
                handle.write(data)
            size += len(data)
        warn(f"downloaded checkpoint epoch {epoch} from {self.where} ({size:,} bytes in "
             f"{time.perf_counter() - started:.2f}s)")
        return epoch

    def upload(self, store: CheckpointStore, checkpoint: Checkpoint, keep: int,
               before_pointer: Callable[[], None]) -> None:
        """Upload epoch ``checkpoint.epoch`` (its offsets file is written) to its slot,
        then — if ``before_pointer`` (the run's fence) does not raise — the pointer naming
        it and the ``keep - 1`` epochs before it."""
        epoch = checkpoint.epoch
        slot = epoch % (keep + 1)
        previous = self.latest() or {}
        kept = {int(e): entry for e, entry in previous.get("epochs", {}).items() if int(e) < epoch}
        if any(entry["slot"] == slot for entry in kept.values()):  # keep changed since: free the slot first
            kept = {e: entry for e, entry in kept.items() if entry["slot"] != slot}
            before_pointer()
            self.blobs.put(f"{self.key}/{POINTER}", json.dumps(dict(previous, epochs=_keys(kept))).encode())
        files = store.files_of(epoch)  # state files first, the offsets file last
        for index, file in enumerate(files):
            with open(os.path.join(store.directory, file), "rb") as handle:
                self.blobs.put(self._name(slot, index, file), handle.read())
        kept[epoch] = {"slot": slot, "files": files}
        newest = sorted(kept)[-keep:]
        pointer = {"epoch": epoch, "created_at": checkpoint.created_at, "sources": checkpoint.sources,
                   "epochs": _keys({e: kept[e] for e in newest})}
        before_pointer()
        self.blobs.put(f"{self.key}/{POINTER}", json.dumps(pointer).encode())

    def _name(self, slot: int, index: int, file: str) -> str:
        kind = "offsets.json" if file.startswith("offsets/") else f"state-{index}.arrow"
        return f"{self.key}/slot-{slot}/{kind}"


def _keys(epochs: dict[int, Any]) -> dict[str, Any]:
    return {str(e): epochs[e] for e in sorted(epochs)}
