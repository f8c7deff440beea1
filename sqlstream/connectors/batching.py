"""When a message source closes a micro-batch: the one rule network readers share.

A network thread appends messages to a buffer; the driver thread takes up to
``batch_size`` of them when a :class:`BatchTimer` says a batch is due:

* ``batch_size`` messages are buffered (a full batch never waits), or
* the oldest buffered message has waited ``batch_timeout`` (the upper bound), or
* the driver has rested since its last batch as long as that batch kept it busy.

The last rule is what keeps latency low without giving up large batches. After
taking a batch the driver is away processing it (decode, the query, the sinks) for
some time ``busy``, measured from the take to the next poll. A partial batch is due
once the driver has been back for ``busy`` too: a quiet source's message goes out at
the next poll, while under load the messages that arrive during one batch and the
rest after it make the next one, so batches grow with the arrival rate and with
what a batch costs, and the driver spends at most about half its time on partial
batches (at full load batches fill to ``batch_size`` and are taken back to back).

Times are monotonic seconds fed by the reader, so the rule is tested without
sleeping. With nothing buffered a reader is polled again after ``IDLE_POLL_S`` at
the latest.
"""

from __future__ import annotations

__all__ = ["IDLE_POLL_S", "BatchTimer"]

IDLE_POLL_S = 0.001  # how often poll() looks for messages when none are buffered

_NEVER = float("-inf")


class BatchTimer:
    """Decides when a reader's buffered messages make a batch (driver thread only).

    >>> timer = BatchTimer(batch_size=100, timeout_s=1.0)  # (seconds: round numbers)
    >>> timer.polled(10.0)
    >>> timer.due(pending=3, since=9.75, now=10.0)  # an idle driver takes what is there
    True
    >>> timer.taken(10.0)
    >>> timer.polled(10.25)  # the batch kept the driver busy for 0.25 s ...
    >>> timer.due(pending=40, since=10.125, now=10.25)  # ... so it rests as long
    False
    >>> timer.next_at(pending=40, since=10.125, now=10.25)
    10.5
    >>> timer.due(pending=75, since=10.125, now=10.5)
    True
    """

    def __init__(self, batch_size: int, timeout_s: float):
        self.batch_size = batch_size
        self.timeout_s = timeout_s
        self.taken_at = _NEVER  # when the last batch was taken
        self.back_at = _NEVER  # the first poll after it: the driver was busy in between
        self.busy_s = 0.0

    def polled(self, now: float) -> None:
        """Note a poll (called on every poll, before anything is taken)."""
        if self.back_at < self.taken_at:
            self.back_at = now
            self.busy_s = now - self.taken_at

    def taken(self, now: float) -> None:
        """Note that a batch was taken."""
        self.taken_at = now

    def rested_at(self) -> float:
        """When the driver will have rested as long as its last batch kept it busy."""
        return self.back_at + self.busy_s

    def due(self, pending: int, since: float, now: float) -> bool:
        """True when ``pending`` buffered messages (the oldest arrived at ``since``) make a batch now."""
        if pending <= 0:
            return False
        if pending >= self.batch_size or now - since >= self.timeout_s:
            return True
        return self.back_at >= self.taken_at and now >= self.rested_at()

    def next_at(self, pending: int, since: float | None, now: float) -> float:
        """When (monotonic seconds) to poll next for a batch."""
        if since is None or pending <= 0:
            return now + min(IDLE_POLL_S, self.timeout_s)
        if pending >= self.batch_size:
            return now
        at = since + self.timeout_s
        if self.back_at >= self.taken_at:
            at = min(at, self.rested_at())
        return max(at, now)
