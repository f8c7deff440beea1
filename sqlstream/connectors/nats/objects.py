"""A JetStream object store bucket as a small, synchronous blob store.

``nats://host:port/BUCKET`` names a bucket on a NATS server
(:func:`sqlstream.runtime.checkpoint_mirror.split_bucket_url`); :class:`ObjectBucket`
puts, gets and lists whole objects (bytes) by name, from any thread, through
an :class:`~sqlstream.connectors.asyncio_bridge.AsyncioBridge` of its own. It knows
nothing of what the bytes are: the checkpoint mirror
(:mod:`sqlstream.runtime.checkpoint_mirror`) keeps a partition's checkpoints in one.
"""

from __future__ import annotations

import asyncio

from sqlstream.connectors.asyncio_bridge import AsyncioBridge
from sqlstream.errors import ConnectorError

__all__ = ["ObjectBucket"]

_TIMEOUT_S = 30.0
_READ_ATTEMPTS = 3


class ObjectBucket:
    """One object store bucket (created when missing), open until :meth:`close`."""

    def __init__(self, url: str, bucket: str, *, connect_timeout_s: float = 5.0, replicas: int = 1):
        import nats
        from nats.js.api import ObjectStoreConfig
        from nats.js.errors import BucketNotFoundError

        self.url = url
        self.bucket = bucket
        self._bridge = AsyncioBridge(f"object store {bucket}").start()
        self._nc = None

        async def open_bucket():
            self._nc = await nats.connect(url.split(","), connect_timeout=connect_timeout_s, max_reconnect_attempts=-1,
                                          reconnect_time_wait=0.25, allow_reconnect=True)
            js = self._nc.jetstream()
            try:
                return await js.object_store(bucket)
            except BucketNotFoundError:
                return await js.create_object_store(bucket, ObjectStoreConfig(bucket=bucket, replicas=replicas))

        try:
            self._store = self._bridge.call(open_bucket(), _TIMEOUT_S)
        except Exception as error:
            self.close()
            raise ConnectorError(f"object store {url}/{bucket}: cannot open it: {error}",
                                 hint="start nats-server with JetStream (-js), or fix the url", exit_code=1) from None

    def put(self, name: str, data: bytes) -> None:
        self._call(self._store.put(name, data), f"put {name}")

    def get(self, name: str) -> bytes | None:
        """The object's bytes; None when there is no such object (or it was deleted)."""
        from nats.js.errors import ObjectDeletedError, ObjectNotFoundError

        async def read():
            # a read that overlaps a writer replacing the object can wait for chunks that were
            # purged meanwhile (nats-py waits for ever): such a read is given up and tried again
            for attempt in range(_READ_ATTEMPTS):
                try:
                    return (await asyncio.wait_for(self._store.get(name), _TIMEOUT_S / _READ_ATTEMPTS)).data
                except (ObjectNotFoundError, ObjectDeletedError):
                    return None
                except asyncio.TimeoutError:
                    if attempt == _READ_ATTEMPTS - 1:
                        raise

        return self._call(read(), f"get {name}")

    def names(self, prefix: str = "") -> list[str]:
        """The names of the objects that start with ``prefix``, sorted."""
        from nats.js.errors import NotFoundError

        async def listing():
            try:
                return [info.name for info in await self._store.list(ignore_deletes=True)]
            except NotFoundError:  # an empty bucket
                return []

        return sorted(n for n in self._call(listing(), "list") if n.startswith(prefix))

    def close(self) -> None:
        nc = self._nc
        self._bridge.close(nc.close() if nc is not None and not nc.is_closed else None)

    def _call(self, coro, what: str):
        try:
            return self._bridge.call(coro, _TIMEOUT_S + 5)
        except Exception as error:
            raise ConnectorError(f"object store {self.bucket}: {what} failed: {type(error).__name__}: {error}",
                                 exit_code=1) from error
