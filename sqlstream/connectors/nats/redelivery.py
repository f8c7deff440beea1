"""Which JetStream messages this run already took into the pipeline.

A message's stream sequence identifies it. JetStream redelivers a message whose ack
did not arrive within ``ack_wait`` — while the pipeline still holds it in an open
window, while it waits in the reader's buffer behind a slow batch, after its batch
was acked but before the server saw the ack — and a process starting on the same
durable rewinds the consumer to its ack floor, after which the server delivers the
same messages again with a delivery count of 1, like new ones. So the delivery count
cannot tell a copy; the sequence can. Within one run each sequence may enter the
pipeline once: :class:`TakenSequences` remembers every sequence taken and marks
later copies, vectorized over whole batches.

Memory stays bounded: everything at or below the consumer's ack floor (polled from
the server) counts as taken — the server never delivers those again, and a copy that
was already on its way is a copy — so only the sequences above it are kept, as one
sorted ``int64`` array (8 bytes each).

>>> import numpy as np
>>> seen = TakenSequences()
>>> seen.take(np.array([5, 6, 5, 7])).tolist()   # the second 5 is a copy within the batch
[True, True, False, True]
>>> seen.take(np.array([6, 8])).tolist()         # 6 was taken by an earlier batch
[False, True]
>>> seen.advance_floor(7)                        # the server acked everything up to 7
>>> seen.take(np.array([3, 9])).tolist(), seen.size
([False, True], 2)
"""

from __future__ import annotations

import numpy as np

__all__ = ["TakenSequences"]

#: sequences kept above the ack floor before the lowest are forgotten (32 MB); only a
#: floor stuck for millions of messages (another process holding one) reaches it
MAX_KEPT = 4_000_000


class TakenSequences:
    """Stream sequences taken into the pipeline during this run."""

    def __init__(self, max_kept: int = MAX_KEPT):
        self.floor = 0  # every sequence <= floor counts as taken
        self.above = np.zeros(0, dtype=np.int64)  # sorted, unique, all > floor
        self.max_kept = max_kept
        self.forgotten = 0  # sequences dropped from memory over max_kept (a later copy would count again)

    @property
    def size(self) -> int:
        return len(self.above)

    def take(self, sequences: np.ndarray) -> np.ndarray:
        """Mark ``sequences`` (one batch, in delivery order) as taken; returns a mask
        of the ones that are new: not seen before, and first of their kind here."""
        sequences = np.asarray(sequences, dtype=np.int64)
        new = np.zeros(len(sequences), dtype=bool)
        if not len(sequences):
            return new
        if (np.diff(sequences) > 0).all():  # the usual case: in order, so no copies within
            new[:] = True
        else:
            _, first = np.unique(sequences, return_index=True)
            new[first] = True
        new &= sequences > self.floor
        above = self.above
        if len(above):
            at = np.searchsorted(above, sequences)
            new &= above[np.minimum(at, len(above) - 1)] != sequences
        fresh = np.sort(sequences[new])
        if len(fresh):
            if not len(above) or fresh[0] > above[-1]:  # the usual case: deliveries in order
                self.above = np.concatenate([above, fresh])
            else:  # a merge, linear in the kept size
                self.above = np.insert(above, np.searchsorted(above, fresh), fresh)
            if len(self.above) > self.max_kept:
                excess = len(self.above) - self.max_kept
                self.forgotten += excess
                self.above = self.above[excess:]
        return new

    def advance_floor(self, floor: int) -> None:
        """Everything up to ``floor`` is acked on the server: forget it individually."""
        if floor <= self.floor:
            return
        self.floor = floor
        self.above = self.above[np.searchsorted(self.above, floor, side="right"):]
