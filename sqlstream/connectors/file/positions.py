"""Where a file source stands, as the JSON values a checkpoint stores.

A file source reads its files one after the other; its position
(:meth:`SourceReader.position`) is::

    {"done": [{"path": "/in/a.jsonl", "size": 1200, "mtime_ns": 1733...}, ...],
     "file": "/in/b.jsonl", "file_index": 1, "offset": 4096, "line": 37}

``done`` lists the files read to their end (with the size read and the modification
time then); ``file`` is the file the last returned rows came from (None before the
first row and once every file is done), ``file_index`` its index in the sorted list of
files the run resolved (for people; a resumed run goes by ``path``). JSON lines / CSV
store ``offset``, the byte just past the last line returned, and ``line``, the lines
before it (for dead-letter locations); Parquet stores ``row``, the rows of the file
returned.

A resumed run (:func:`resume_plan`) lists the files again, reads the rest of ``file``
first, then every file not ``done`` in name order, so files a glob matches only now
are read too. A done file is never read again: one whose size or modification time
changed since is named in a warning, its new content is not read.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

from sqlstream.errors import ConnectorError

__all__ = ["ResumePlan", "resume_plan", "finished_file"]

LOG = logging.getLogger("sqlstream.file")


@dataclass(frozen=True)
class ResumePlan:
    """What a reader opened at a position reads: ``files`` in this order, the first one
    from ``offset`` (bytes or rows) on, after ``line`` lines; ``done`` as stored."""

    files: list[str]
    offset: int = 0
    line: int = 0
    done: list[dict] = field(default_factory=list)


def finished_file(path: str, size: int) -> dict:
    """The ``done`` entry of a file read to its end (``size`` bytes or rows read)."""
    try:
        mtime_ns = os.stat(path).st_mtime_ns
    except OSError:
        mtime_ns = None
    return {"path": path, "size": size, "mtime_ns": mtime_ns}


def _check_unchanged(entry: dict, source_name: str, count_rows: bool) -> None:
    try:
        stat = os.stat(entry["path"])
    except OSError:
        return  # a finished file may go away; nothing of it is read again
    changed = stat.st_mtime_ns != entry.get("mtime_ns") or (not count_rows and stat.st_size != entry.get("size"))
    if changed:
        LOG.warning(
            "source '%s': %s changed after the checkpoint's run read it (was %s bytes, now %s): "
            "it is not read again, its new content is ignored",
            source_name, entry["path"], entry.get("size"), stat.st_size,
        )


def resume_plan(files: list[str], position: dict | None, source_name: str, *, count_rows: bool = False) -> ResumePlan:
    """The files (sorted by name) a reader reads from ``position`` on; ``count_rows``:
    Parquet (``row``, not bytes)."""
    if not position:
        return ResumePlan(list(files))
    done = list(position.get("done", []))
    finished = {entry["path"] for entry in done}
    for entry in done:
        _check_unchanged(entry, source_name, count_rows)
    current = position.get("file")
    rest = [f for f in files if f not in finished and f != current]
    if current is None:
        return ResumePlan(rest, done=done)
    offset = int(position.get("row" if count_rows else "offset", 0))
    if current not in files:
        raise ConnectorError(
            f"source '{source_name}': the checkpoint stopped in {current} "
            f"({'row' if count_rows else 'byte'} {offset}), which is gone",
            hint="restore the file, or start over with --from-scratch",
        )
    if not count_rows and os.path.getsize(current) < offset:
        raise ConnectorError(
            f"source '{source_name}': the checkpoint read {current} up to byte {offset}, "
            f"but it now has {os.path.getsize(current)} bytes",
            hint="the file was rewritten; start over with --from-scratch",
        )
    return ResumePlan([current, *rest], offset, int(position.get("line", 0)), done)
