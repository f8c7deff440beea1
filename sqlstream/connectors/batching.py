"""When a message source closes a micro-batch: the one rule network readers share.

A network thread appends messages to a buffer; the driver thread takes up to
``batch_size`` of them once that many are there, or once the oldest has waited
``batch_timeout`` (``since`` is when it arrived, monotonic seconds). With nothing
buffered a reader is polled again after ``IDLE_POLL_S`` at the latest.
"""

from __future__ import annotations

__all__ = ["IDLE_POLL_S", "batch_due", "next_batch_at"]

IDLE_POLL_S = 0.001  # how often poll() looks for messages when none are buffered


def batch_due(pending: int, since: float, now: float, batch_size: int, timeout_s: float) -> bool:
    """True when ``pending`` buffered messages make a batch now."""
    return pending > 0 and (pending >= batch_size or now - since >= timeout_s)


def next_batch_at(pending: int, since: float | None, now: float, batch_size: int, timeout_s: float) -> float:
    """When (monotonic seconds) to poll next for a batch."""
    if since is None or not pending:
        return now + min(IDLE_POLL_S, timeout_s)
    if pending >= batch_size:
        return now
    return since + timeout_s
