"""Watching a model file for ``WITH (reload = 'on_change')``.

The check runs at batch boundaries, at most once per ``reload_interval``, and costs
one ``os.stat`` there: a change of the file's modification time, size or inode is
noted; when the next check sees the same stat again (the file stopped changing: a
writer still copying it would move its size or time), the file is read, hashed and
loaded **in a background thread**, so scoring never waits for a load. The handle that
asked (:class:`~sqlstream.udf.model_versions.VersionedModel`) validates what was
loaded and installs it; the batch after that uses it.

A file that is missing (being replaced), or that changes while it is read, is tried
again at the next check. A file that was tried and refused is not tried again until
it changes.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from typing import Callable

__all__ = ["ModelFileWatch", "file_fingerprint", "stat_key", "FileChanging"]

#: sha256 hex digits shown in a version label (``v2 (sha 3f9a1c)``)
SHORT_SHA = 6


class FileChanging(Exception):
    """The file changed while it was read: try again at the next check."""


def file_fingerprint(path: str) -> tuple[tuple[int, int, int], str]:
    """(stat key, sha256 hex) of ``path``, read once; FileChanging if it moved meanwhile."""
    before = stat_key(path)
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    if stat_key(path) != before:
        raise FileChanging(path)
    return before, digest.hexdigest()


def stat_key(path: str) -> tuple[int, int, int]:
    """What a change of ``path`` changes: (mtime ns, size, inode)."""
    st = os.stat(path)
    return st.st_mtime_ns, st.st_size, st.st_ino


class ModelFileWatch:
    """When to reload one model file; ``load(stat_key)`` does it (in a thread) and
    returns whether the result is final for that file state (False: try again)."""

    def __init__(self, path: str, interval_s: float, loaded_key: tuple[int, int, int] | None,
                 load: Callable[[tuple[int, int, int]], bool], clock: Callable[[], float] = time.monotonic):
        self.path = path
        self.interval_s = interval_s
        self._load = load
        self._clock = clock
        self._settled = loaded_key  # the file state last loaded or refused
        self._seen: tuple[int, int, int] | None = None  # a new state seen once, waiting to settle
        self._next_check = clock() + interval_s
        self._loading: threading.Thread | None = None
        self._checking = threading.Lock()
        self.checks = 0

    @property
    def loading(self) -> bool:
        return self._loading is not None and self._loading.is_alive()

    def poll(self) -> None:
        """At a batch boundary: check the file if it is time (see the module docstring).
        Queries running on several threads share the watch: one checks, the others go on."""
        if self._clock() < self._next_check or not self._checking.acquire(blocking=False):
            return
        try:
            self._check()
        finally:
            self._checking.release()

    def _check(self) -> None:
        now = self._clock()
        if now < self._next_check or self.loading:
            return
        self._next_check = now + self.interval_s
        self.checks += 1
        try:
            key = stat_key(self.path)
        except OSError:
            return  # missing for a moment while it is replaced: check again later
        if key == self._settled:
            self._seen = None
            return
        if key != self._seen:
            self._seen = key  # changed: load once it has stopped changing
            return
        self._seen = None
        self._loading = threading.Thread(target=self._run, args=(key,), name="sqlstream-model-reload", daemon=True)
        self._loading.start()

    def _run(self, key: tuple[int, int, int]) -> None:
        if self._load(key):
            self._settled = key

    def wait(self, timeout: float | None = None) -> None:
        """Wait for a load in progress (tests, and stopping a session)."""
        thread = self._loading
        if thread is not None:
            thread.join(timeout)
