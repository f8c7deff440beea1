"""``connector = 'sequence'``: the numbers start, start + step, ... (count of them)."""

from __future__ import annotations

import pyarrow as pa

from sqlstream.connectors import DeadLetter, OptionSpec, SourceBatch, SourceConnector, SourceReader


class SequenceReader(SourceReader):
    bounded = True

    def __init__(self, start: int, step: int, count: int, batch_size: int, poison_every: int):
        self.next, self.step, self.left = start, step, count
        self.batch_size = batch_size
        self.poison_every = poison_every

    def poll(self) -> SourceBatch | None:  # never blocks: the next numbers, or None at the end
        if self.left <= 0:
            return None
        n = min(self.left, self.batch_size)
        values = [self.next + i * self.step for i in range(n)]
        self.next += n * self.step
        self.left -= n
        good = [v for v in values if not self.poison_every or v % self.poison_every]
        dead = [DeadLetter("sequence", "decode", f"{v} is poison", raw=str(v)) for v in values if v not in good]
        return SourceBatch(pa.RecordBatch.from_pydict({"n": pa.array(good, pa.int64())}), dead, raw_count=n)

    @property
    def exhausted(self) -> bool:
        return self.left <= 0


class SequenceSource(SourceConnector):
    """Numbers from start by step, count of them (a bounded source)."""

    name = "sequence"
    options = (
        OptionSpec("start", "int", default=1, doc="the first number"),
        OptionSpec("step", "int", default=1, doc="the difference between two numbers"),
        OptionSpec("count", "int", default=10, doc="how many numbers"),
        OptionSpec("poison_every", "int", default=0, doc="numbers divisible by this are bad records (tests)"),
    )
    can_back_table = True

    def open(self, ctx) -> SequenceReader:
        c = self.config
        return SequenceReader(c["start"], c["step"], c["count"], ctx.batch_size, c["poison_every"])
