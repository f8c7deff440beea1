"""The file sink's encoding and writing on a thread of its own, so that encoding
batch n-1 (Parquet, CSV: pyarrow releases the GIL) overlaps with the pipeline working
on batch n on the driver thread.

A :class:`WriteThread` runs the jobs it is given one at a time, in the order given,
so the bytes written are the same as without it. The queue is bounded: a driver that
produces faster than the disk takes waits in :meth:`WriteThread.submit`, and at most
``depth`` encoded-to-be batches are held.

What must come after the writes waits for them: closing a file, a checkpoint's
``prepare_commit`` (its rows must be on disk before the checkpoint is stored), a
clean close. :meth:`WriteThread.wait` blocks until every job submitted so far is done.

A job that fails stops the writing: later jobs are dropped (the queue keeps being
emptied, so the driver never blocks on it), and the next ``submit`` or ``wait`` on the
driver thread raises :class:`~sqlstream.errors.ConnectorError` with the job's exception
as ``__cause__``; so does every later call. :meth:`WriteThread.stop` (a failed run's
``abort``) waits for the thread without raising.
"""

from __future__ import annotations

import queue
import threading
from typing import Callable

from sqlstream.errors import ConnectorError

__all__ = ["WriteThread"]

_STOP = object()


class WriteThread:
    """Runs write jobs in order on one daemon thread (started by the first job);
    ``what`` names the writer in errors (``sink 'out': writing out.parquet``)."""

    def __init__(self, what: str, depth: int = 2):
        self.what = what
        self._jobs: queue.Queue = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None

    def submit(self, job: Callable[[], None]) -> None:
        """Queue ``job`` after the ones before it; waits while ``depth`` jobs are queued.
        Raises ConnectorError if an earlier job failed."""
        self._raise_failure()
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="sqlstream-file-writer", daemon=True)
            self._thread.start()
        self._jobs.put(job)

    def wait(self) -> None:
        """Return once every job submitted so far is done; raise ConnectorError if one failed."""
        if self._thread is not None:
            self._jobs.join()
        self._raise_failure()

    def stop(self) -> None:
        """End the thread after the jobs queued (dropped if one failed); never raises.
        ``submit`` starts a new thread afterwards."""
        if self._thread is None:
            return
        self._jobs.put(_STOP)
        self._thread.join()
        self._thread = None

    def _raise_failure(self) -> None:
        if self._error is not None:
            error = self._error
            raise ConnectorError(f"{self.what} failed: {type(error).__name__}: {error}") from error

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            try:
                if job is _STOP:
                    return
                if self._error is None:
                    job()
            except BaseException as error:  # noqa: BLE001 - handed to the driver thread by submit/wait
                self._error = error
            finally:
                self._jobs.task_done()
