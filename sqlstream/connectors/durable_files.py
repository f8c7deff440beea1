"""Durable files: how a file sink's output (and a checkpoint's files) become visible:
written under a hidden temporary name (``.<name>.<pid>.inprogress``), synced, and
renamed into place in one step; temporary files of processes that died are removed
when a sink opens. A module of its own, outside ``connectors/file/``, so that the
checkpoint store uses it without loading the file connector."""

from __future__ import annotations

import logging
import os
import re
from typing import Callable

__all__ = ["temp_path", "remove_stale_temp_files", "fsync_directory", "publish", "remove_if_exists"]

LOG = logging.getLogger("sqlstream.file")

#: ``.<name>.<pid>.inprogress``: a file being written by process ``pid``, renamed to ``<name>`` when complete
_TEMP_NAME = re.compile(r"^\.(?P<name>.+)\.(?P<pid>[0-9]+)\.inprogress$")


def temp_path(final: str) -> str:
    """The hidden name ``final`` is written under by this process until it is complete."""
    directory, name = os.path.split(final)
    return os.path.join(directory, f".{name}.{os.getpid()}.inprogress")


def _process_alive(pid: int) -> bool:
    if pid <= 0:
        return True  # not a process id we wrote: leave it alone
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def remove_stale_temp_files(directory: str, owned: Callable[[str], bool]) -> list[str]:
    """Remove the temporary files (``.<name>.<pid>.inprogress``) in ``directory`` whose
    ``name`` this sink writes (``owned``) and whose process is no longer alive: what a
    crashed or killed run left behind. Returns the paths removed."""
    removed = []
    try:
        entries = os.scandir(directory)
    except FileNotFoundError:
        return removed
    with entries:
        for entry in entries:
            match = _TEMP_NAME.match(entry.name)
            if match is None or not owned(match["name"]) or _process_alive(int(match["pid"])):
                continue
            try:
                os.remove(entry.path)
            except FileNotFoundError:
                continue
            removed.append(entry.path)
    if removed:
        LOG.info("removed %d temporary file(s) left by runs that did not finish: %s", len(removed), ", ".join(removed))
    return removed


def fsync_directory(directory: str) -> None:
    try:
        fd = os.open(directory or ".", os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def publish(temp: str, final: str) -> None:
    """Make the complete file ``temp`` durable and rename it onto ``final`` in one step."""
    fd = os.open(temp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temp, final)
    fsync_directory(os.path.dirname(final))


def remove_if_exists(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass
