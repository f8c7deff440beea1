"""Dead letters: records that could not be used, why, and the output they all go to.

Sources, decoders, operators and functions make ``DeadLetter`` values (operators from
failing rows through ``rows_as_dead_letters``); the runtime hands them to the one
``DeadLetterOutput`` of a run. Records are appended as JSON lines to ``dead_letter_path`` (columns ``at``,
``source``, ``reason``, ``detail``, ``raw``, ``position``, ``event_time``) and handed
to any query reading the ``sqlstream_dead_letter`` stream.
"""

from __future__ import annotations

import os
import threading
from collections import Counter, deque
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable, Protocol, Sequence

import numpy as np
import orjson
import pyarrow as pa

from sqlstream.connectors.encode import encode_json_lines
from sqlstream.hidden import drop_hidden

__all__ = ["DeadLetter", "DeadLetterOutput", "rows_as_dead_letters", "DEAD_LETTER_SCHEMA", "DEAD_LETTER_STREAM"]

DEAD_LETTER_STREAM = "sqlstream_dead_letter"
RECENT = 20  # dead letters kept in memory for the console

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


@dataclass
class DeadLetter:
    """A record that could not be used, and why. ``raw`` is the record as received."""

    source: str
    reason: str  # decode | type | null | late | future | udf | timeout
    detail: str
    raw: str | None = None
    position: str | None = None
    event_time: int | None = None  # µs since the epoch


def rows_as_dead_letters(
    batch: pa.RecordBatch,
    rows: Sequence[int] | np.ndarray,
    source: str,
    reasons: str | Sequence[str],
    details: str | Sequence[str],
    event_times: Sequence[int | None] | None = None,
) -> list[DeadLetter]:
    """Rows ``rows`` of ``batch`` as dead letters; ``raw`` is each row as a JSON object
    (hidden columns left out). ``reasons`` and ``details`` are one text for all rows or
    one per row, ``event_times`` (µs or None) one per row."""
    if len(rows) == 0:
        return []
    subset = drop_hidden(batch.take(pa.array(rows, pa.int64())))
    raws = encode_json_lines(subset).decode("utf-8").splitlines()
    n = len(raws)
    why = [reasons] * n if isinstance(reasons, str) else reasons
    texts = [details] * n if isinstance(details, str) else details
    times = event_times if event_times is not None else [None] * n
    return [DeadLetter(source, r, d, raw, None, t) for raw, r, d, t in zip(raws, why, texts, times)]


class _Clock(Protocol):
    def now_us(self) -> int: ...


def _iso(us: int | None) -> str | None:
    if us is None:
        return None
    return datetime.fromtimestamp(us / 1e6, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class DeadLetterOutput:
    """Writes, counts and fans out dead letters. Thread-safe."""

    def __init__(self, path: str | None, clock: _Clock):
        self.path = path
        self.clock = clock
        self.counts: Counter[tuple[str, str]] = Counter()  # (source, reason) → rows written
        self.skipped: Counter[tuple[str, str]] = Counter()  # on_error = 'skip': dropped, only counted
        self._lock = threading.Lock()
        self._handle = None
        self._subscribers: list[Callable[[pa.RecordBatch], None]] = []
        #: the latest dead letters (raw text cut at 500 characters), for the web console
        self.recent: deque[dict] = deque(maxlen=RECENT)

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
            for d in letters[-RECENT:]:
                self.recent.append({"at": _iso(now), "source": d.source, "reason": d.reason, "detail": d.detail,
                                    "raw": d.raw if d.raw is None or len(d.raw) <= 500 else d.raw[:497] + "...",
                                    "position": d.position})
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
