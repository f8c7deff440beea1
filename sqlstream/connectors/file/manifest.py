"""The hidden manifest of an exactly-once file sink: which epochs are committed.

One JSON document, replaced atomically (hidden temporary file, fsync, ``os.replace``,
fsync of the directory) each time it changes::

    {"version": 1, "base": 0, "committed": 42,
     "epochs": [{"epoch": 41, "files": ["part-00000041-0000.parquet"], "rows": 1000}, ...]}

``committed`` is the last committed epoch (epochs are committed in order); ``epochs``
keeps the entries of the last :data:`KEEP` of them (a fallback to an older checkpoint
goes back a few epochs, not thousands), so the document stays small however long the
run. ``base`` is what belongs to earlier output, fixed when the sink's checkpointed
history starts: for a directory, part numbers up to it; for one file, its length then.
Entries of a directory sink list ``files``; those of a one-file sink the file's
``length`` once the epoch is in.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from sqlstream.connectors.durable_files import publish, temp_path
from sqlstream.errors import ConnectorError

__all__ = ["EpochManifest", "KEEP"]

#: entries kept for the most recent committed epochs
KEEP = 64


@dataclass
class EpochManifest:
    path: str
    base: int = 0
    committed: int = 0
    epochs: list[dict] = field(default_factory=list)

    @classmethod
    def load(cls, path: str) -> "EpochManifest | None":
        try:
            with open(path, "rb") as handle:
                document = json.loads(handle.read())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as error:
            raise ConnectorError(
                f"the sink's manifest {path} cannot be read: {error}",
                hint="it is written atomically, so something else changed it; restore it or start over",
            ) from error
        return cls(path, int(document["base"]), int(document["committed"]), list(document["epochs"]))

    def save(self) -> None:
        temp = temp_path(self.path)
        with open(temp, "wb") as handle:
            handle.write(json.dumps(
                {"version": 1, "base": self.base, "committed": self.committed, "epochs": self.epochs}, indent=None
            ).encode() + b"\n")
        publish(temp, self.path)  # fsync, rename, fsync the directory

    def entry(self, epoch: int) -> dict | None:
        for entry in self.epochs:
            if entry["epoch"] == epoch:
                return entry
        return None

    def add(self, entry: dict) -> None:
        """Record a committed epoch (the next one) and save."""
        self.epochs = [*self.epochs, entry][-KEEP:]
        self.committed = entry["epoch"]
        self.save()

    def roll_back_to(self, epoch: int) -> None:
        """Forget the epochs after ``epoch`` (saved only if there were any)."""
        if self.committed <= epoch:
            return
        self.epochs = [e for e in self.epochs if e["epoch"] <= epoch]
        self.committed = epoch
        self.save()
