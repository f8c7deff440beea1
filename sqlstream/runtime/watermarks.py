"""Per-source watermarks, the future-skew guard, and per-row watermark stamps.

The watermark of a source is ``max(event time seen) - delay``. Lateness is a property
of each row in arrival order: ``__wm`` on a row is the source watermark *before* that
row (the running maximum of earlier rows, minus the delay), so a row's fate never
depends on how the input was cut into batches.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sqlstream.hidden import MIN_WATERMARK

__all__ = ["WatermarkTracker", "row_watermarks"]


def row_watermarks(times: np.ndarray, previous_max: int, delay_us: int) -> tuple[np.ndarray, int]:
    """(watermark before each row, new running maximum) for rows in arrival order."""
    if times.size == 0:
        return np.empty(0, dtype=np.int64), previous_max
    running = np.maximum.accumulate(times.astype(np.int64, copy=False))
    np.maximum(running, previous_max, out=running)
    wm = np.empty_like(running)  # the running maximum before each row, then minus the delay
    wm[0] = previous_max
    wm[1:] = running[:-1]
    unset = int(np.searchsorted(wm, MIN_WATERMARK, side="right"))  # non-decreasing: a prefix
    wm[unset:] -= delay_us
    return wm, int(running[-1])


@dataclass
class WatermarkTracker:
    """The watermark state of one source."""

    delay_us: int
    max_event_us: int = MIN_WATERMARK
    late_rows: int = 0
    future_rows: int = 0
    idle: bool = False
    #: set for a source whose watermark comes from elsewhere (an exchange): it is that
    external_us: int | None = None

    @property
    def watermark(self) -> int:
        if self.external_us is not None:
            return self.external_us
        if self.max_event_us == MIN_WATERMARK:
            return MIN_WATERMARK
        return self.max_event_us - self.delay_us

    def stamp(self, times: np.ndarray) -> np.ndarray:
        """Per-row watermarks for ``times`` (arrival order); advances the tracker."""
        wm, self.max_event_us = row_watermarks(times, self.max_event_us, self.delay_us)
        return wm
