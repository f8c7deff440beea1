"""Partitioned JetStream streams: NATS itself puts a partition number into each subject.

A source with ``partitions = P`` and ``partition_by = 'customer_id'`` reads a subject
template whose tokens are literals, ``*`` or ``{column}`` (``'orders.{customer_id}'``:
the token after ``orders.`` carries the row's ``customer_id``). Its stream captures the
template with every column token as ``*`` and stores each message under a subject
with the partition inserted before the first wildcard token, made by the server's
subject transform with the ``partition`` mapping function (nats-server >= 2.10)::

    subjects = ['orders.*']
    subject_transform = {src: 'orders.*', dest: 'orders.{{partition(4,1)}}.{{wildcard(1)}}'}

so ``orders.17`` is stored as ``orders.3.17``, and partition 3 is read by a consumer
filtered on ``orders.3.*``. The partition is a hash of the ``partition_by`` token(s),
so every message of one key lands in one partition, and publishers do not change:
``sqlstream produce 'orders.{customer_id}' --stream ORDERS`` publishes to the stream as
to any other.

>>> layout = PartitionLayout.parse('orders.{customer_id}', 4, 'customer_id')
>>> layout.stream_subject, layout.transform_dest
('orders.*', 'orders.{{partition(4,1)}}.{{wildcard(1)}}')
>>> layout.subject_of(3), layout.all_partitions
('orders.3.*', 'orders.*.*')
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sqlstream.errors import ConnectorError, Location

__all__ = ["PartitionLayout", "ensure_partitioned_stream", "MAX_PARTITIONS"]

#: a bound that keeps lease buckets, consumers and checkpoint folders manageable
MAX_PARTITIONS = 1024
_COLUMN_TOKEN = re.compile(r"^\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}$")


@dataclass(frozen=True)
class PartitionLayout:
    """How a partitioned stream's subjects look: ``tokens`` of the template (literals,
    ``*`` for a wildcard, ``{name}`` kept as the column name in ``columns``)."""

    template: str
    partitions: int
    column: str  # the partition_by column
    tokens: tuple[str, ...]  # literal tokens, or "*" for every wildcard (column or not)
    columns: tuple[str | None, ...]  # per token: the column it carries, or None
    insert_at: int  # index of the first wildcard token: the partition token goes before it

    @classmethod
    def parse(cls, template: str, partitions: int, column: str, where: Location | None = None) -> "PartitionLayout":
        """The layout of ``template``; a ConnectorError at ``where`` says what is wrong."""
        column = column.strip().lower()
        tokens, columns = [], []
        for token in template.split("."):
            match = _COLUMN_TOKEN.match(token)
            if match:
                tokens.append("*")
                columns.append(match.group(1).lower())
            elif token != "*" and any(ch in token for ch in "{}>* \t"):
                raise ConnectorError(
                    f"option 'subject' = {template!r}: token {token!r} is not a literal, '*' or '{{column}}'",
                    location=where,
                    hint="a partitioned source names each wildcard token, e.g. subject = 'orders.{customer_id}'",
                )
            else:
                tokens.append(token)
                columns.append(None)
        if column not in columns:
            named = [c for c in columns if c]
            raise ConnectorError(
                f"option 'partition_by' = {column!r} is not a column token of subject {template!r}",
                location=where,
                hint=(f"partition by one of: {', '.join(named)}" if named else
                      f"write the column into the subject: subject = '{template.rsplit('.', 1)[0]}.{{{column}}}'"),
            )
        if not 1 <= partitions <= MAX_PARTITIONS:
            raise ConnectorError(f"option 'partitions' must be between 1 and {MAX_PARTITIONS}", location=where)
        return cls(template, partitions, column, tuple(tokens), tuple(columns), tokens.index("*"))

    @property
    def stream_subject(self) -> str:
        """The subject the stream captures (what producers publish to)."""
        return ".".join(self.tokens)

    @property
    def transform_dest(self) -> str:
        """The stream's subject transform destination (nats-server's mapping functions)."""
        wildcard = self.columns.index(self.column, self.insert_at)
        number = sum(1 for t in self.tokens[:wildcard + 1] if t == "*")  # 1-based wildcard index
        out, k = [], 0
        for token in self.tokens:
            if token == "*":
                k += 1
                out.append(f"{{{{wildcard({k})}}}}")
            else:
                out.append(token)
        out.insert(self.insert_at, f"{{{{partition({self.partitions},{number})}}}}")
        return ".".join(out)

    def subject_of(self, partition: int) -> str:
        """The stored subjects of one partition, as a consumer filter."""
        return self._stored(str(partition))

    @property
    def all_partitions(self) -> str:
        return self._stored("*")

    def _stored(self, partition_token: str) -> str:
        out = list(self.tokens)
        out.insert(self.insert_at, partition_token)
        return ".".join(out)


async def ensure_partitioned_stream(js, stream: str, layout: PartitionLayout, owner: str, replicas: int = 1) -> bool:
    """Create ``stream`` with ``layout``'s subject transform and ``replicas`` copies (on a
    NATS cluster; 1 on a single server) if it does not exist (True), or check that the
    existing one is partitioned the same way (False; its replicas are the stream's own
    business); a ConnectorError (exit 1) says how it differs."""
    from nats.js.api import StreamConfig, SubjectTransform
    from nats.js.errors import NotFoundError

    from sqlstream.connectors.nats.connection import runtime_error

    try:
        info = await js.stream_info(stream)
    except NotFoundError:
        config = StreamConfig(name=stream, subjects=[layout.stream_subject], num_replicas=replicas,
                              subject_transform=SubjectTransform(src=layout.stream_subject, dest=layout.transform_dest))
        await js.add_stream(config)  # the same config twice (two workers at once) is no error
        return True
    transform = info.config.subject_transform
    have = f"{transform.src} -> {transform.dest}" if transform else "no subject transform (not partitioned)"
    want = f"{layout.stream_subject} -> {layout.transform_dest}"
    if transform is None or (transform.src, transform.dest) != (layout.stream_subject, layout.transform_dest):
        raise runtime_error(
            f"{owner}: JetStream stream '{stream}' is not partitioned as the source says: it has {have}, "
            f"the source needs {want}",
            hint="use another stream name, or match partitions / partition_by / subject to the stream "
                 "(a stream's partition count cannot change while it holds data)",
        )
    return False
