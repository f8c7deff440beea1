"""Join keys, vectorized: one comparable code per row, and an index built once and
probed many times.

A :class:`KeyIndex` groups the rows of one side by key code once; a probe is a few
vectorized passes per micro-batch instead of a hash table rebuilt per batch:

* integer-like keys (integers, timestamps, dates, booleans) are their own codes,
  exact: one column as is, several combined in mixed radix when their value grids
  allow (window bounds step by the window slide); a dense code range becomes a direct
  lookup table, anything else an open-addressing table of the distinct codes;
* one string/binary column whose indexed values are all at most 7 bytes long: each
  value is its own exact code (:mod:`~sqlstream.operators.key_columns`); longer probe
  values cannot match;
* anything else (strings, floats, mixes) gets a 64-bit hash per row (strings hashed
  eight bytes at a time straight from the Arrow buffers), and every candidate pair is
  verified on the real key values, so a hash collision never produces a wrong match.

NULL keys never match (SQL equality). Probes return pairs grouped by probe row in
ascending order, so outputs keep the arrival order of the probing side. A probe runs
in blocks of 16k rows, so numpy's temporaries stay small and in cache.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from sqlstream.operators.key_columns import C1, C2, KeyColumn, combined, mix

__all__ = ["KeyIndex", "expand_ranges", "join_pairs"]

_LUT_MAX = 1 << 25  # entries of a direct lookup table (it also never exceeds 4x the keys)


def _codes(columns: list[KeyColumn]) -> tuple[np.ndarray, np.ndarray | None, bool]:
    valid = None
    for column in columns:
        if column.valid is not None:
            valid = column.valid if valid is None else (valid & column.valid)
    if len(columns) == 1 and columns[0].kind == "int":
        return columns[0].values, valid, True
    h = None
    for column in columns:
        part = column.hash()
        h = part if h is None else mix(h * C1 + part)
    return h, valid, False


def _sort_order(values: np.ndarray, exact: bool) -> np.ndarray:
    """An order that groups equal ``values``: integer codes spanning less than 2^32 by
    one or two 16-bit radix passes (linear time), anything else by a comparison sort."""
    if exact and values.size > 1:
        low, high = int(values.min()), int(values.max())
        if high - low < 2**32:
            offset = values - low
            order = np.argsort(offset.astype(np.uint16), kind="stable")  # 16-bit keys: numpy's radix sort
            if high - low >= 2**16:
                order = order[np.argsort((offset[order] >> 16).astype(np.uint16), kind="stable")]
            return order
    return np.argsort(values)


_BLOCK_ROWS = 1 << 14


def _blocks(keys: list[pa.Array | pa.ChunkedArray]):
    """(first row, the key columns' slices) of at most ``_BLOCK_ROWS`` rows each: a
    probe's numpy temporaries stay at 128 KiB, heap memory reused while in cache, where a
    whole batch's (2 MiB per array at 256k rows) got fresh pages each time (page faults
    were a third of a VARCHAR probe's CPU time)."""
    keys = [combined(k) for k in keys]
    n = len(keys[0]) if keys else 0
    if n <= _BLOCK_ROWS:
        yield 0, keys
        return
    for first in range(0, n, _BLOCK_ROWS):
        yield first, [k.slice(first, _BLOCK_ROWS) for k in keys]


def expand_ranges(lo: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For ranges ``[lo[i], lo[i] + counts[i])``: (i repeated, each position).

    The owner of each output position is found by marking where each non-empty range
    starts and counting the marks (a cumulative sum), not by ``np.repeat``, which costs
    a copy per range: about half the time for the short ranges of a join probe."""
    ends = np.cumsum(counts)
    total = int(ends[-1]) if ends.size else 0
    starts = ends - counts
    ranges = np.flatnonzero(counts)
    marks = np.zeros(total, dtype=np.int64)
    marks[starts[ranges]] = 1
    owner = ranges[np.cumsum(marks) - 1]
    position = np.arange(total, dtype=np.int64)
    position += (lo - starts)[owner]
    return owner, position


_SPARSE_SLOTS = 1 << 21  # up to this many slots a table is kept at most 1/4 full (shorter probe runs)
_PROBE_ROUNDS = 3  # slots tried per probe; the few codes still unresolved are binary-searched


class _HashSlots:
    """Open addressing over distinct codes, built and probed with vectorized linear
    probing: each slot holds (code, payload) side by side (one cache line per probe),
    the payload a group number or, in a unique index, the build row. Each round of a
    probe costs a numpy pass, and linear probing has a few long runs, so after
    ``_PROBE_ROUNDS`` slots the codes left (~1% at load 1/4) are looked up by binary
    search in the sorted codes instead of round after round over ever fewer rows."""

    def __init__(self, codes: np.ndarray, payload: np.ndarray, mixed: bool):
        self.codes, self.payload = codes, payload  # codes sorted: the binary search
        self.mixed = mixed  # codes are hashes already: their low bits are the home slot
        wanted = 4 * codes.size if 4 * codes.size <= _SPARSE_SLOTS else 2 * codes.size
        size = 1 << max(4, int(wanted - 1).bit_length())
        self.mask = size - 1
        self.slots = np.zeros((size, 2), dtype=np.int64)
        self.slots[:, 1] = -1
        pending = np.arange(codes.size, dtype=np.int64)
        position = self._home(codes)
        claim = np.full(size, -1, dtype=np.int64)
        while pending.size:
            free = self.slots[position, 1] == -1
            claim[position[free]] = pending[free]  # one of the claimants of a slot wins
            placed = free & (claim[position] == pending)
            won = pending[placed]
            self.slots[position[placed]] = np.stack([codes[won].view(np.int64), payload[won]], axis=1)
            pending = pending[~placed]
            position = (position[~placed] + 1) & self.mask

    def _home(self, codes: np.ndarray) -> np.ndarray:
        codes = codes.view(np.uint64)
        return ((codes if self.mixed else mix(codes ^ C2)) & np.uint64(self.mask)).view(np.int64)

    def find(self, codes: np.ndarray) -> np.ndarray:
        """The payload of each code, or -1."""
        keys = codes.view(np.int64)
        position = self._home(codes)
        slot = np.take(self.slots, position, axis=0)
        found = slot[:, 1].copy()
        active = np.flatnonzero((slot[:, 0] != keys) & (found >= 0))  # another code at home: probe on
        found[active] = -1
        for _ in range(_PROBE_ROUNDS - 1):
            if not active.size:
                return found
            at = (position[active] + 1) & self.mask
            position[active] = at
            slot = np.take(self.slots, at, axis=0)
            hit = (slot[:, 0] == keys[active]) & (slot[:, 1] >= 0)
            found[active[hit]] = slot[hit, 1]
            active = active[(slot[:, 1] >= 0) & ~hit]
        if active.size:
            wanted = codes[active]
            at = np.minimum(np.searchsorted(self.codes, wanted), self.codes.size - 1)
            found[active] = np.where(self.codes[at] == wanted, self.payload[at], -1)
        return found


class KeyIndex:
    """The rows of one side, indexed by their key columns.

    >>> index = KeyIndex([pa.array(["a", "b", "a"])])
    >>> probe_rows, build_rows = index.probe([pa.array(["a", "c", None])])
    >>> sorted(zip(probe_rows.tolist(), build_rows.tolist()))
    [(0, 0), (0, 2)]
    """

    def __init__(self, keys: list[pa.Array | pa.ChunkedArray]):
        self.columns = [KeyColumn(k) for k in keys]
        self.num_rows = len(self.columns[0].array) if self.columns else 0
        self._composite = self._composite_layout(self.columns)
        short = None  # one string column, every value of at most 7 bytes: their exact codes
        if len(self.columns) == 1 and self.columns[0].kind == "bytes":
            codes, fits = self.columns[0].short_codes()
            short = codes if fits.all() else None
        self._short = short is not None
        codes, valid, exact = (short, self.columns[0].valid, True) if self._short else self._encode(self.columns)
        self.exact = exact
        rows = np.flatnonzero(valid) if valid is not None else np.arange(self.num_rows, dtype=np.int64)
        values = codes[rows] if valid is not None else codes
        order = _sort_order(values, exact)
        ordered = values[order]
        self.rows = rows[order]  # build rows grouped by code
        change = np.ones(ordered.size, dtype=bool)
        change[1:] = ordered[1:] != ordered[:-1]
        self.starts = np.flatnonzero(change)
        self.counts = np.diff(np.append(self.starts, ordered.size))
        distinct = ordered[self.starts]
        self.unique = bool(self.starts.size == ordered.size)
        self._lut = None
        self._slots = None
        if exact and distinct.size:
            low, high = int(distinct[0]), int(distinct[-1])
            span = high - low + 1
            if span <= max(4 * distinct.size, 1024) and span <= _LUT_MAX:
                # per code: its group's first position and size; slot ``span`` is "no such code"
                slot = distinct - low
                first = np.zeros(span + 1, dtype=np.int64)
                size = np.zeros(span + 1, dtype=np.int64)
                first[slot], size[slot] = self.starts, self.counts
                self._lut = (low, span, first, size)
        if self._lut is None:  # a unique index's slots hold build rows, any other's group numbers
            payload = self.rows if self.unique else np.arange(distinct.size, dtype=np.int64)
            self._slots = _HashSlots(distinct, payload, mixed=not exact)

    def __len__(self) -> int:
        return self.num_rows

    @property
    def nbytes(self) -> int:
        """Bytes of the index's own arrays (the key columns' Arrow buffers belong to the
        indexed table and are not counted here)."""
        arrays = [self.rows, self.starts, self.counts]
        for column in self.columns:
            arrays += column.arrays()
        if self._lut is not None:
            arrays += [self._lut[2], self._lut[3]]
        if self._slots is not None:
            arrays += [self._slots.slots, self._slots.codes]
            if not self.unique:  # a unique index's payload is ``rows``
                arrays += [self._slots.payload]
        return sum(a.nbytes for a in arrays if isinstance(a, np.ndarray))

    @staticmethod
    def _composite_layout(columns: list[KeyColumn]):
        """Several integer-like key columns whose value grids multiply below 2^62 get
        one exact code per row (mixed radix): no hashing, no verification."""
        if len(columns) < 2 or any(c.kind != "int" for c in columns):
            return None
        layout, stride = [], 1
        for column in columns:
            values = column.values if column.valid is None else column.values[column.valid]
            if values.size == 0:
                return None
            low, high = int(values.min()), int(values.max())
            step = int(np.gcd.reduce(values - low)) or 1  # e.g. window bounds: multiples of the slide
            span = (high - low) // step + 1
            layout.append((low, step, span, stride))
            stride *= span
            if stride >= 2**62:
                return None
        return layout

    def _encode(self, columns: list[KeyColumn]) -> tuple[np.ndarray, np.ndarray | None, bool]:
        if self._short:
            codes, fits = columns[0].short_codes()
            valid = columns[0].valid
            if not fits.all():  # longer values: not among the keys
                valid = fits if valid is None else valid & fits
            return codes, valid, True
        if self._composite is None or any(c.kind != "int" for c in columns):
            return _codes(columns)
        code = np.zeros(len(columns[0].array), dtype=np.int64)
        valid = None
        for column, (low, step, span, stride) in zip(columns, self._composite, strict=True):
            offset = column.values - low
            if step > 1:
                inside = offset % step == 0  # off the build's grid: cannot match
                offset = offset // step
                inside &= (offset >= 0) & (offset < span)
            else:
                inside = (offset >= 0) & (offset < span)  # outside the build's range: cannot match
            if column.valid is not None:
                inside &= column.valid
            valid = inside if valid is None else valid & inside
            code += np.where(inside, offset, 0) * stride
        return code, (None if valid.all() else valid), True

    def _groups(self, codes: np.ndarray, valid: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """(first position in ``rows``, number of build rows) of each probe code's group
        (size 0: no such code). Not for a unique index with slots (they hold rows)."""
        if self.starts.size == 0:
            return np.zeros(codes.size, dtype=np.int64), np.zeros(codes.size, dtype=np.int64)
        if self._lut is not None:
            low, span, first, size = self._lut
            offset = codes - low
            inside = (offset >= 0) & (offset < span)
            if valid is not None:
                inside &= valid
            slot = np.where(inside, offset, span)
            return first[slot], size[slot]
        distinct = self._slots.find(codes)
        if valid is not None:
            distinct[~valid] = -1
        hit = distinct >= 0
        slot = np.where(hit, distinct, 0)
        return self.starts[slot], np.where(hit, self.counts[slot], 0)

    def probe(self, keys: list[pa.Array | pa.ChunkedArray]) -> tuple[np.ndarray, np.ndarray]:
        """Every matching (probe row, build row), grouped by probe row ascending."""
        parts = [(first, self._probe(block)) for first, block in _blocks(keys)]
        if len(parts) == 1:
            return parts[0][1]
        return (np.concatenate([pairs[0] + first for first, pairs in parts]),
                np.concatenate([pairs[1] for _, pairs in parts]))

    def _probe(self, keys: list[pa.Array]) -> tuple[np.ndarray, np.ndarray]:
        columns = [KeyColumn(k) for k in keys]
        if self.unique:
            first = self._probe_unique(columns)
            hit = np.flatnonzero(first >= 0)
            return hit, first[hit]
        codes, valid, _ = self._encode(columns)
        starts, counts = self._groups(codes, valid)
        probe_rows, positions = expand_ranges(starts, counts)
        build_rows = self.rows[positions]
        if not self.exact:
            keep = self._verify(columns, probe_rows, build_rows)
            if not keep.all():
                probe_rows, build_rows = probe_rows[keep], build_rows[keep]
        return probe_rows, build_rows

    def probe_unique(self, keys: list[pa.Array | pa.ChunkedArray]) -> np.ndarray:
        """For an index of unique keys: the build row of each probe row, or -1."""
        parts = [self._probe_unique([KeyColumn(k) for k in block]) for _, block in _blocks(keys)]
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def _probe_unique(self, columns: list[KeyColumn]) -> np.ndarray:
        assert self.unique
        codes, valid, _ = self._encode(columns)
        if self._slots is not None:
            found = self._slots.find(codes)
            if valid is not None:
                found[~valid] = -1
        else:
            starts, counts = self._groups(codes, valid)
            found = np.where(counts > 0, self.rows[starts] if self.rows.size else -1, -1)  # unique: one row per code
        if not self.exact:
            candidates = np.flatnonzero(found >= 0)
            wrong = ~self._verify(columns, candidates, found[candidates])
            found[candidates[wrong]] = -1
        return found

    def _verify(self, columns: list[KeyColumn], probe_rows: np.ndarray, build_rows: np.ndarray) -> np.ndarray:
        """Which candidate pairs (equal hashes) have equal keys."""
        same = np.ones(probe_rows.size, dtype=bool)
        if probe_rows.size:
            for probe, build in zip(columns, self.columns, strict=True):
                same &= probe.same(probe_rows, build, build_rows)
        return same


def join_pairs(left_keys: list[pa.Array], right_keys: list[pa.Array]) -> tuple[np.ndarray, np.ndarray]:
    """All matching (left row, right row) of a one-shot equi-join: the smaller side is
    indexed, the larger probes it (pairs grouped by probe row ascending, each group's
    indexed rows ascending). Integer-like keys whose values of both sides fit a dense
    code range are joined on those codes directly (:func:`_dense_pairs`)."""
    n_left = len(combined(left_keys[0])) if left_keys else 0
    n_right = len(combined(right_keys[0])) if right_keys else 0
    if n_left == 0 or n_right == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    left, right = [KeyColumn(k) for k in left_keys], [KeyColumn(k) for k in right_keys]
    dense = _dense_codes(left, right)
    if dense is not None:
        left_codes, right_codes, span = dense
        if n_right <= n_left:
            return _dense_pairs(left_codes, right_codes, span)
        right_rows, left_rows = _dense_pairs(right_codes, left_codes, span)
        return left_rows, right_rows
    if n_right <= n_left:
        return KeyIndex(right_keys).probe(left_keys)
    right_rows, left_rows = KeyIndex(left_keys).probe(right_keys)
    return left_rows, right_rows


def _valid_values(column: KeyColumn) -> np.ndarray:
    return column.values if column.valid is None else column.values[column.valid]


def _common_step(values: list[np.ndarray], low: int) -> int:
    """The greatest common divisor of ``values - low`` (e.g. window bounds: the slide),
    in blocks of ``_BLOCK_ROWS``; 1 as soon as it is 1."""
    step = 0
    for v in values:
        for first in range(0, v.size, _BLOCK_ROWS):
            step = int(np.gcd(step, np.gcd.reduce(v[first:first + _BLOCK_ROWS] - low)))
            if step == 1:
                return 1
    return step or 1


def _dense_codes(left: list[KeyColumn], right: list[KeyColumn]) -> tuple[np.ndarray, np.ndarray, int] | None:
    """Exact codes in ``[0, span)`` for the keys of both sides (mixed radix over value
    grids that cover both), a NULL key coded ``span``; None unless every key column is
    integer-like and ``span`` is at most 4 codes per row (or 1,024) and ``_LUT_MAX``
    (a code and a row number then fit one int64: :func:`_code_order`)."""
    if any(c.kind != "int" for c in left + right):
        return None
    limit = min(max(4 * (len(left[0].values) + len(right[0].values)), 1024), _LUT_MAX)
    values = [[v for v in (_valid_values(a), _valid_values(b)) if v.size] for a, b in zip(left, right, strict=True)]
    if not all(values):
        return None
    bounds = [(min(int(v.min()) for v in pair), max(int(v.max()) for v in pair)) for pair in values]
    if any(high - low >= 2**62 for low, high in bounds):  # differences could overflow int64
        return None
    steps = [1] * len(bounds)
    if np.prod([high - low + 1.0 for low, high in bounds]) > limit:  # values on a coarser grid: window bounds
        steps = [_common_step(pair, low) for pair, (low, _) in zip(values, bounds, strict=True)]
    grids = [(low, step, (high - low) // step + 1) for (low, high), step in zip(bounds, steps, strict=True)]
    if np.prod([float(g[2]) for g in grids]) > limit:
        return None
    span = int(np.prod([g[2] for g in grids]))
    return _mixed_radix(left, grids, span), _mixed_radix(right, grids, span), span


def _mixed_radix(side: list[KeyColumn], grids: list[tuple[int, int, int]], span: int) -> np.ndarray:
    """One side's codes on ``grids``, a row with a NULL key ``span``; computed in blocks
    of ``_BLOCK_ROWS`` into one array (temporaries small and in cache)."""
    n = len(side[0].values)
    codes = np.empty(n, dtype=np.int64)
    for first in range(0, n, _BLOCK_ROWS):
        block = slice(first, first + _BLOCK_ROWS)
        out, stride = codes[block], 1
        for i, (column, (low, step, steps)) in enumerate(zip(side, grids, strict=True)):
            part = np.subtract(column.values[block], low, out=out if i == 0 else None)
            if step > 1:
                part //= step
            if stride > 1:
                part *= stride
            if i:
                out += part
            stride *= steps
        for column in side:
            if column.valid is not None:
                out[~column.valid[block]] = span
    return codes


def _code_order(codes: np.ndarray, span: int) -> np.ndarray:
    """The stable order of ``codes`` in ``[0, span]``: each code packed above its row
    number (all distinct, so any sort is stable) and sorted in place by numpy's SIMD
    sort, faster than two 16-bit radix passes of ``argsort``."""
    bits = max(int(codes.size - 1).bit_length(), 1)
    packed = codes << bits
    packed |= np.arange(codes.size, dtype=np.int64)
    packed.sort()
    packed &= (1 << bits) - 1
    return packed


def _dense_pairs(probe: np.ndarray, build: np.ndarray, span: int) -> tuple[np.ndarray, np.ndarray]:
    """Every (probe row, build row) with equal codes in ``[0, span)`` (``span``: NULL,
    no match): build rows grouped by code with a counting table and a stable radix
    order, then ranges expanded per probe block of ``_BLOCK_ROWS`` rows."""
    counts = np.bincount(build, minlength=span + 1)
    counts[span] = 0
    first = np.cumsum(counts)
    first -= counts
    order = _code_order(build, span)
    parts = []
    for lo in range(0, probe.size, _BLOCK_ROWS):
        block = probe[lo:lo + _BLOCK_ROWS]
        rows, positions = expand_ranges(np.take(first, block), np.take(counts, block))
        parts.append((rows + lo, np.take(order, positions)))
    if len(parts) == 1:
        return parts[0]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
