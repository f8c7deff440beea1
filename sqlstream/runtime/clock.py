"""Clocks. The runtime takes one as a dependency: wall time in production, a manual
clock in tests so that timeouts, rates and ``EMIT EVERY`` never need ``sleep``."""

from __future__ import annotations

import threading
import time

__all__ = ["WallClock", "ManualClock"]


class WallClock:
    def now_us(self) -> int:
        return time.time_ns() // 1_000

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)


class ManualClock:
    """A clock that moves only when told to. ``sleep`` advances it instead of waiting."""

    def __init__(self, start_us: int = 1_700_000_000_000_000):
        self._now_us = start_us
        self._lock = threading.Lock()

    def now_us(self) -> int:
        return self._now_us

    def monotonic(self) -> float:
        return self._now_us / 1e6

    def sleep(self, seconds: float) -> None:
        self.advance(seconds)

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now_us += int(round(seconds * 1e6))
