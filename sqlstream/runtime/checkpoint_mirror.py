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
  never read, and are replaced when that epoch number is written again;
* once the pointer is written, deletes the objects of the epochs it no longer keeps
  (``checkpoint_keep``, the newest first).

Objects are named ``<key>/<epoch>/<file>`` where ``<file>`` is the file's path in the
checkpoint directory (``offsets/…json``, ``state/…/….arrow``); ``<key>`` is the
pipeline and partition (``orders/partition=3``). Commit markers are not uploaded: a
downloaded epoch is rolled forward by the ordinary recovery (the sinks' commit is
idempotent).
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Callable, Protocol

from sqlstream.runtime.checkpoints import Checkpoint, CheckpointStore

__all__ = ["CheckpointMirror", "BlobStore", "POINTER"]

#: the object, under a mirror's key, that names its committed epochs
POINTER = "latest.json"


class BlobStore(Protocol):
    """What a mirror needs of a bucket (:class:`~sqlstream.connectors.nats.objects.ObjectBucket`)."""

    def put(self, name: str, data: bytes) -> None: ...

    def get(self, name: str) -> bytes | None: ...

    def delete(self, name: str) -> None: ...


class CheckpointMirror:
    """One checkpoint directory's copy under ``key`` in ``blobs``."""

    def __init__(self, blobs: BlobStore, key: str, where: str):
        self.blobs = blobs
        self.key = key
        self.where = where  # for messages: nats://host:port/BUCKET/key

    def latest(self) -> dict[str, Any] | None:
        """The pointer: ``{"epoch", "created_at", "sources", "epochs": {epoch: [files]}}``;
        None before the first upload."""
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
        started = time.perf_counter()
        size = 0
        for file in pointer["epochs"][str(epoch)]:
            data = self.blobs.get(self._name(epoch, file))
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
        """Upload epoch ``checkpoint.epoch`` (its offsets file is written), then — if
        ``before_pointer`` (the run's fence) does not raise — the pointer naming it, then
        remove the epochs the pointer no longer keeps."""
        epoch = checkpoint.epoch
        files = store.files_of(epoch)  # state files first, the offsets file last
        for file in files:
            with open(os.path.join(store.directory, file), "rb") as handle:
                self.blobs.put(self._name(epoch, file), handle.read())
        previous = self.latest()
        kept = {int(e): names for e, names in (previous or {}).get("epochs", {}).items() if int(e) < epoch}
        kept[epoch] = files
        dropped = sorted(kept)[:-keep]
        pointer = {"epoch": epoch, "created_at": checkpoint.created_at, "sources": checkpoint.sources,
                   "epochs": {str(e): kept[e] for e in sorted(kept) if e not in dropped}}
        before_pointer()
        self.blobs.put(f"{self.key}/{POINTER}", json.dumps(pointer).encode())
        for old in dropped:
            for file in kept[old]:
                self.blobs.delete(self._name(old, file))

    def _name(self, epoch: int, file: str) -> str:
        return f"{self.key}/{epoch:010d}/{file}"
