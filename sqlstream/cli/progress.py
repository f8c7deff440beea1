"""Status lines: the rows/s line ``sqlstream run`` keeps on stderr, and the footer
under a query running in the REPL."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TextIO

from rich.text import Text

from sqlstream.hidden import is_real_watermark
from sqlstream.runtime.state_tracker import describe as describe_state

__all__ = ["Progress", "Footer"]


class Progress:
    """A one-line rows/s display on stderr while a pipeline runs, with the state the
    pipeline holds when it has stateful operators::

        in 120,000 (40,000/s)  out 3,000 (1,000/s)  dead letters 0  state 1.2M rows / 340 MB
    """

    def __init__(self, stream: TextIO):
        self.stream = stream
        self._last_in = 0
        self._last_out = 0
        self._last_t = time.monotonic()
        self._shown = False

    def update(self, driver) -> None:
        now = time.monotonic()
        rows_in = sum(s.metrics.rows_in for s in driver.sources)
        rows_out = sum(s.rows_out for s in driver.sinks)
        dt = max(now - self._last_t, 1e-6)
        rate_in = (rows_in - self._last_in) / dt
        rate_out = (rows_out - self._last_out) / dt
        self._last_in, self._last_out, self._last_t = rows_in, rows_out, now
        dead = sum(driver.dead_letters.by_reason().values())
        line = f"in {rows_in:,} ({rate_in:,.0f}/s)  out {rows_out:,} ({rate_out:,.0f}/s)  dead letters {dead:,}"
        if driver.state.holders:
            line += f"  state {describe_state(driver.state.current)}"
        self.stream.write("\r\x1b[2K" + line)
        self.stream.flush()
        self._shown = True

    def note(self, text: str) -> None:
        """A message on its own line (a warning) without mixing it into the progress line."""
        self.stream.write(("\r\x1b[2K" if self._shown else "") + f"sqlstream: {text}\n")
        self.stream.flush()

    def clear(self) -> None:
        if self._shown:
            self.stream.write("\r\x1b[2K")
            self.stream.flush()


@dataclass
class Footer:
    """The status line under a running query."""

    rows: int = 0
    rate: float = 0.0
    watermark_us: int | None = None
    elapsed_s: float = 0.0
    paused: bool = False
    hidden: int = 0
    keys: bool = True
    updating: bool = False

    def text(self) -> Text:
        noun = "changes" if self.updating else "rows"
        parts = [f"{self.rows:,} {noun}", f"{self.rate:,.0f} {noun}/s", f"{self.elapsed_s:.1f}s"]
        if self.watermark_us is not None and is_real_watermark(self.watermark_us):
            parts.append(f"watermark {_timestamp_text(self.watermark_us)}")
        if self.paused:
            head = "paused (the query keeps running)"
            if self.hidden:
                head += f", {self.hidden:,} rows not shown"
            parts.insert(0, head)
        keys = "space: resume  ctrl-c: stop" if self.paused else "space: pause  ctrl-c: stop"
        line = " · ".join(parts) + (f"   [{keys}]" if self.keys else "   [ctrl-c: stop]")
        return Text(line, style="reverse" if self.paused else "dim")


def _timestamp_text(us: int) -> str:
    return datetime.fromtimestamp(us / 1e6, tz=timezone.utc).replace(tzinfo=None).isoformat(sep=" ")
