"""The dead-letter output: every rejected record, with the reason, counted.

Records are appended as JSON lines to ``dead_letter_path`` (columns ``at``,
``source``, ``reason``, ``detail``, ``raw``, ``position``, ``event_time``) and handed
to any query reading the ``sqlstream_dead_letter`` stream.
"""

from __future__ import annotations

import os
import threading
from collections import Counter
from datetime import datetime, timezone
from typing import Callable

import orjson
import pyarrow as pa

from sqlstream.connectors.base import Clock, DeadLetter

__all__ = ["DeadLetterOutput", "DEAD_LETTER_SCHEMA", "DEAD_LETTER_STREAM"]

DEAD_LETTER_STREAM = "sqlstream_dead_letter"

DEAD_LETTER_SCHEMA = pa.schema(
    [
        ("at", pa.timestamp("us")),
        ("source", pa.string()),
        ("reason", pa.string()),
        ("detail", pa.string()),
        ("raw", pa.string()),
        ("position", pa.string()),
        ("event_time", pa.timestamp("us")),
    ]
)


def _iso(us: int | None) -> str | None:
    if us is None:
        return None
    return datetime.fromtimestamp(us / 1e6, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class DeadLetterOutput:
    """Writes, counts and fans out dead letters. Thread-safe."""

    def __init__(self, path: str | None, clock: Clock):
        self.path = path
        self.clock = clock
        self.counts: Counter[tuple[str, str]] = Counter()  # (source, reason) → rows written
        self.skipped: Counter[tuple[str, str]] = Counter()  # on_error = 'skip': dropped, only counted
        self._lock = threading.Lock()
        self._handle = None
        self._subscribers: list[Callable[[pa.RecordBatch], None]] = []

    def subscribe(self, callback: Callable[[pa.RecordBatch], None]) -> None:
        self._subscribers.append(callback)

    def by_reason(self) -> dict[str, int]:
        out: Counter[str] = Counter()
        for (_, reason), n in self.counts.items():
            out[reason] += n
        return dict(out)

    def skip(self, letters: list[DeadLetter]) -> None:
        """``on_error = 'skip'``: drop the records, count them."""
        with self._lock:
            for letter in letters:
                self.skipped[(letter.source, letter.reason)] += 1

    def skipped_by_reason(self) -> dict[str, int]:
        out: Counter[str] = Counter()
        for (_, reason), n in self.skipped.items():
            out[reason] += n
        return dict(out)

    def total(self, source: str | None = None, reason: str | None = None) -> int:
        return sum(
            n for (s, r), n in self.counts.items() if (source is None or s == source) and (reason is None or r == reason)
        )

    def write(self, letters: list[DeadLetter]) -> None:
        if not letters:
            return
        now = self.clock.now_us()
        with self._lock:
            for letter in letters:
                self.counts[(letter.source, letter.reason)] += 1
            if self.path:
                if self._handle is None:
                    os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
                    self._handle = open(self.path, "ab")
                lines = [
                    orjson.dumps(
                        {
                            "at": _iso(now),
                            "source": d.source,
                            "reason": d.reason,
                            "detail": d.detail,
                            "raw": d.raw,
                            "position": d.position,
                            "event_time": _iso(d.event_time),
                        }
                    )
                    for d in letters
                ]
                self._handle.write(b"\n".join(lines) + b"\n")
                self._handle.flush()
        if self._subscribers:
            batch = pa.RecordBatch.from_pydict(
                {
                    "at": pa.array([now] * len(letters), pa.timestamp("us")),
                    "source": [d.source for d in letters],
                    "reason": [d.reason for d in letters],
                    "detail": [d.detail for d in letters],
                    "raw": [d.raw for d in letters],
                    "position": [d.position for d in letters],
                    "event_time": pa.array([d.event_time for d in letters], pa.timestamp("us")),
                },
                schema=DEAD_LETTER_SCHEMA,
            )
            for callback in self._subscribers:
                callback(batch)

    def close(self) -> None:
        with self._lock:
            if self._handle is not None:
                self._handle.close()
                self._handle = None
