"""The checkpoint directory: epochs written so that a crash at any moment leaves a
consistent way back.

Layout (``N`` is the epoch, zero-padded so names sort)::

    <dir>/offsets/<N>.json          source positions, watermarks, what each sink prepared,
                                    the operators' small state and the list of state files
    <dir>/state/<N>/<op>.<t>.arrow  one Arrow IPC file per operator table
    <dir>/commits/<N>.json          written once every sink committed epoch N

Every file is written under a temporary name, synced, renamed into place and its
directory synced; nothing is overwritten. An offsets file carries a SHA-256 of its own
content and of every state file it lists, so a torn or damaged file is detected instead
of misread (:meth:`CheckpointStore.load`). The protocol around these files is in
:mod:`sqlstream.runtime.checkpointing`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from sqlstream.connectors.durable_files import fsync_directory, publish, remove_if_exists
from sqlstream.errors import CheckpointError
from sqlstream.operators.snapshot import OperatorSnapshot

__all__ = ["CheckpointStore", "Checkpoint", "EpochInfo", "DamagedCheckpoint", "FORMAT_VERSION"]

#: the layout of offsets/commits files; a directory written by another version is refused
FORMAT_VERSION = 1


@dataclass
class Checkpoint:
    """The content of one epoch's offsets file (its operator tables are read lazily)."""

    epoch: int
    pipeline: dict[str, Any]  # what the pipeline was: sinks, their columns and plans, operators
    sources: dict[str, dict[str, Any]]  # name -> {"position", "watermark", "ended"}
    sinks: dict[str, Any]  # name -> what prepare_commit returned
    operators: dict[str, dict[str, Any]]  # id -> {"kind", "version", "values", "tables": {name: file entry}}
    created_at: float  # seconds since the epoch (wall clock)
    stats: dict[str, Any] = field(default_factory=dict)
    committed: bool = False


@dataclass
class EpochInfo:
    """One epoch as ``SHOW CHECKPOINTS`` lists it."""

    epoch: int
    created_at: float
    committed: bool
    state_rows: int
    state_bytes: int
    duration_ms: float


def _canonical(document: dict) -> bytes:
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


def _sealed(document: dict) -> bytes:
    """``document`` with a checksum of its own content."""
    body = dict(document)
    body["checksum"] = hashlib.sha256(_canonical(document)).hexdigest()
    return json.dumps(body, sort_keys=True, indent=1).encode()


def _unseal(data: bytes, what: str) -> dict:
    try:
        body = json.loads(data)
        checksum = body.pop("checksum")
    except (ValueError, KeyError, AttributeError, TypeError) as error:
        raise DamagedCheckpoint(f"{what} is not a complete checkpoint file ({error})") from None
    if hashlib.sha256(_canonical(body)).hexdigest() != checksum:
        raise DamagedCheckpoint(f"{what} does not match its checksum")
    return body


class DamagedCheckpoint(Exception):
    """A checkpoint file that is incomplete or does not match its checksum."""


def _write_atomically(path: str, data: bytes) -> None:
    temp = f"{path}.tmp"
    with open(temp, "wb") as handle:
        handle.write(data)
    publish(temp, path)  # fsync, rename, fsync the directory


class CheckpointStore:
    """Reads and writes one pipeline's checkpoint directory."""

    def __init__(self, directory: str):
        self.directory = directory
        self.offsets_dir = os.path.join(directory, "offsets")
        self.state_dir = os.path.join(directory, "state")
        self.commits_dir = os.path.join(directory, "commits")

    # -- writing ------------------------------------------------------------------------

    def create(self) -> None:
        """The directory's folders; what a write cut short by a crash left is removed."""
        for path in (self.directory, self.offsets_dir, self.state_dir, self.commits_dir):
            os.makedirs(path, exist_ok=True)
        fsync_directory(os.path.dirname(os.path.abspath(self.directory)))
        for folder in (self.offsets_dir, self.commits_dir):
            for name in os.listdir(folder):
                if name.endswith(".tmp"):
                    remove_if_exists(os.path.join(folder, name))

    def write_state(self, epoch: int, snapshots: dict[str, OperatorSnapshot]) -> dict[str, dict[str, Any]]:
        """Each operator's tables as Arrow IPC files under ``state/<epoch>/``; returns the
        operators' entries for the offsets file (values, and each file's name, size, rows
        and checksum)."""
        folder = os.path.join(self.state_dir, _name(epoch))
        os.makedirs(folder, exist_ok=True)
        entries: dict[str, dict[str, Any]] = {}
        for op_id, snap in snapshots.items():
            files = {}
            for table_name, table in snap.tables.items():
                file_name = f"{op_id}.{table_name}.arrow"
                data = _ipc_bytes(table)
                temp = os.path.join(folder, file_name + ".tmp")
                with open(temp, "wb") as handle:
                    handle.write(data)
                    handle.flush()
                    os.fsync(handle.fileno())
                os.replace(temp, os.path.join(folder, file_name))
                files[table_name] = {
                    "file": file_name, "bytes": len(data), "rows": table.num_rows,
                    "sha256": hashlib.sha256(data).hexdigest(),
                }
            entries[op_id] = {"kind": snap.kind, "version": snap.version, "values": snap.values, "tables": files}
        fsync_directory(folder)
        fsync_directory(self.state_dir)
        return entries

    def write_offsets(self, checkpoint: Checkpoint) -> None:
        document = {
            "format": FORMAT_VERSION,
            "epoch": checkpoint.epoch,
            "created_at": checkpoint.created_at,
            "pipeline": checkpoint.pipeline,
            "sources": checkpoint.sources,
            "sinks": checkpoint.sinks,
            "operators": checkpoint.operators,
            "stats": checkpoint.stats,
        }
        _write_atomically(self._offsets_path(checkpoint.epoch), _sealed(document))

    def write_commit(self, epoch: int, stats: dict[str, Any]) -> None:
        document = {"format": FORMAT_VERSION, "epoch": epoch, "committed_at": time.time(), "stats": stats}
        _write_atomically(self._commit_path(epoch), _sealed(document))

    def prune(self, keep: int) -> None:
        """Remove all but the ``keep`` newest committed epochs (and anything older)."""
        committed = self.committed_epochs()
        if len(committed) <= keep:
            return
        oldest_kept = committed[-keep]
        for epoch in self.epochs():
            if epoch >= oldest_kept:
                break
            self.remove_epoch(epoch)

    def remove_epoch(self, epoch: int) -> None:
        """Forget ``epoch``: its commit marker first, so a crash midway never leaves a
        commit without its offsets."""
        remove_if_exists(self._commit_path(epoch))
        remove_if_exists(self._offsets_path(epoch))
        shutil.rmtree(os.path.join(self.state_dir, _name(epoch)), ignore_errors=True)

    def remove_all(self) -> None:
        """``--from-scratch``: forget every epoch."""
        for epoch in reversed(self.epochs()):
            self.remove_epoch(epoch)
        shutil.rmtree(self.state_dir, ignore_errors=True)
        os.makedirs(self.state_dir, exist_ok=True)

    def remove_unlisted_state(self) -> None:
        """State folders of epochs whose offsets were never written (a crash midway)."""
        listed = {_name(e) for e in self.epochs()}
        try:
            names = os.listdir(self.state_dir)
        except FileNotFoundError:
            return
        for name in names:
            if name not in listed:
                shutil.rmtree(os.path.join(self.state_dir, name), ignore_errors=True)

    # -- reading ------------------------------------------------------------------------

    def exists(self) -> bool:
        return bool(self.epochs())

    def epochs(self) -> list[int]:
        """Epochs with an offsets file, oldest first."""
        return _listed(self.offsets_dir)

    def committed_epochs(self) -> list[int]:
        return _listed(self.commits_dir)

    def files_of(self, epoch: int) -> list[str]:
        """Epoch ``epoch``'s files relative to the directory: its state files, then its
        offsets file (the order a copy must be written in: offsets last)."""
        folder = os.path.join(self.state_dir, _name(epoch))
        names = sorted(os.listdir(folder)) if os.path.isdir(folder) else []
        state = [f"state/{_name(epoch)}/{n}" for n in names if not n.endswith(".tmp")]
        return state + [f"offsets/{_name(epoch)}.json"]

    def load(self, epoch: int) -> Checkpoint:
        """Epoch ``epoch``'s offsets file, with every state file it lists checked against
        its checksum. Raises ``DamagedCheckpoint`` for a torn or altered file."""
        path = self._offsets_path(epoch)
        with open(path, "rb") as handle:
            body = _unseal(handle.read(), f"offsets file {path}")
        if body.get("format") != FORMAT_VERSION:
            raise CheckpointError(
                f"{path} was written in checkpoint format {body.get('format')}; this sqlstream reads format {FORMAT_VERSION}",
                hint="resume with the sqlstream version that wrote it, or start over with --from-scratch",
            )
        for op_id, entry in body["operators"].items():
            for table in entry["tables"].values():
                self._check_state_file(epoch, table, op_id)
        # a damaged commit marker counts as missing: recovery commits the epoch again (idempotent)
        committed = self._commit_stats(epoch) is not None
        return Checkpoint(
            epoch=body["epoch"], pipeline=body["pipeline"], sources=body["sources"], sinks=body["sinks"],
            operators=body["operators"], created_at=body["created_at"], stats=body.get("stats", {}),
            committed=committed,
        )

    def read_table(self, epoch: int, entry: dict[str, Any]) -> pa.Table:
        path = os.path.join(self.state_dir, _name(epoch), entry["file"])
        with pa.memory_map(path) as source:
            return pa.ipc.open_file(source).read_all()

    def snapshots(self, checkpoint: Checkpoint) -> dict[str, OperatorSnapshot]:
        """The operators' snapshots of ``checkpoint``, tables read from their files."""
        return {
            op_id: OperatorSnapshot(
                entry["kind"], entry["version"], entry["values"],
                {name: self.read_table(checkpoint.epoch, table) for name, table in entry["tables"].items()},
            )
            for op_id, entry in checkpoint.operators.items()
        }

    def list(self) -> list[EpochInfo]:
        """Every epoch whose offsets file can be read, oldest first (damaged ones left out)."""
        infos = []
        for epoch in self.epochs():
            try:
                with open(self._offsets_path(epoch), "rb") as handle:
                    body = _unseal(handle.read(), "offsets")
            except (OSError, DamagedCheckpoint):
                continue
            stats = body.get("stats", {})
            committed = self._commit_stats(epoch)
            infos.append(EpochInfo(
                epoch, body.get("created_at", 0.0), committed is not None,
                stats.get("state_rows", 0), stats.get("state_bytes", 0), (committed or {}).get("duration_ms", 0.0),
            ))
        return infos

    def _commit_stats(self, epoch: int) -> dict | None:
        """The stats of epoch ``epoch``'s commit file; None when it has none (or a damaged one)."""
        try:
            with open(self._commit_path(epoch), "rb") as handle:
                return _unseal(handle.read(), "commit").get("stats", {})
        except (OSError, DamagedCheckpoint):
            return None

    def _check_state_file(self, epoch: int, entry: dict[str, Any], op_id: str) -> None:
        path = os.path.join(self.state_dir, _name(epoch), entry["file"])
        try:
            with open(path, "rb") as handle:
                digest = hashlib.file_digest(handle, "sha256").hexdigest()
        except FileNotFoundError:
            raise DamagedCheckpoint(f"state file {path} of operator {op_id} is missing") from None
        if digest != entry["sha256"]:
            raise DamagedCheckpoint(f"state file {path} of operator {op_id} does not match its checksum")

    def _offsets_path(self, epoch: int) -> str:
        return os.path.join(self.offsets_dir, _name(epoch) + ".json")

    def _commit_path(self, epoch: int) -> str:
        return os.path.join(self.commits_dir, _name(epoch) + ".json")


def _name(epoch: int) -> str:
    return f"{epoch:010d}"


def _listed(folder: str) -> list[int]:
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return []
    return sorted(int(n[:-5]) for n in names if n.endswith(".json") and n[:-5].isdigit())


def _ipc_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()
