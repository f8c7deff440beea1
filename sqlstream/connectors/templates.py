"""Message destinations named from row values: ``'alerts.{sensor_id}'``, ``'factory/{line}/alerts'``.

A :class:`DestinationTemplate` is literal text and column references in braces.
``render`` gives one destination per row, computed for the whole batch: values are
cast to text, NULL becomes ``null``, characters the protocol reserves (``forbidden``,
a regex character class) become ``_``, and an empty value becomes ``_``, so every
row gets a valid destination. The NATS sink uses it for subjects, the MQTT sink for
topics.
"""

from __future__ import annotations

import string
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from sqlstream.connectors.encode import text
from sqlstream.errors import ConnectorError, Location, did_you_mean
from sqlstream.hidden import is_hidden

__all__ = ["DestinationTemplate"]


class DestinationTemplate:
    """Literal text and column references; ``forbidden`` is what values may not contain."""

    def __init__(self, text: str, forbidden: str = r"[\s*>]", kind: str = "subject"):
        self.text = text
        self.forbidden = forbidden
        self.kind = kind  # "subject" | "topic": for error texts
        self.parts: list[tuple[str, str | None]] = []  # (literal, column or None)
        try:
            for literal, name, spec, conversion in string.Formatter().parse(text):
                if name is not None and (spec or conversion):
                    raise ValueError(f"'{{{name}}}' takes no format spec")
                if name == "":
                    raise ValueError("'{}' needs a column name, e.g. '{sensor_id}'")
                self.parts.append((literal, name.strip().lower() if name is not None else None))
        except ValueError as error:
            raise ValueError(f"bad {kind} template: {error}") from None
        self.columns = [name for _, name in self.parts if name is not None]

    @classmethod
    def from_option(cls, option: str, value: str, where: Location | None, example: str) -> "DestinationTemplate":
        """The template a sink's ``option`` gives; a bad one is a ConnectorError at ``where``."""
        try:
            return cls(value)
        except ValueError as error:
            raise ConnectorError(
                f"option '{option}' = {value!r}: {error}",
                location=where,
                hint=f"columns go in braces: {option} = '{example}'",
            ) from None

    @property
    def constant(self) -> bool:
        return not self.columns

    def bind(self, schema: pa.Schema, owner: str, where: Location | None = None) -> None:
        by_lower = {n.lower(): n for n in schema.names}
        resolved = []
        for column in self.columns:
            if column not in by_lower:
                raise ConnectorError(
                    f"{owner}: {self.kind} '{self.text}' names column '{column}', which the query does not produce",
                    location=where,
                    hint=did_you_mean(column, [n for n in schema.names if not is_hidden(n)])
                    or f"columns: {', '.join(schema.names)}",
                )
            resolved.append(by_lower[column])
        self._resolved = resolved

    def render(self, batch: pa.RecordBatch) -> pa.Array | str:
        """One destination per row (or the constant one)."""
        if self.constant:
            return self.text
        pieces: list[Any] = []
        names = iter(self._resolved)
        for literal, name in self.parts:
            if literal:
                pieces.append(text(literal))
            if name is not None:
                values = pc.cast(batch.column(next(names)), pa.string())
                values = pc.replace_substring_regex(pc.fill_null(values, text("null")), pattern=self.forbidden, replacement="_")
                values = pc.if_else(pc.equal(values, text("")), text("_"), values)
                pieces.append(values)
        if len(pieces) == 1:
            return pieces[0]
        return pc.binary_join_element_wise(*pieces, text(""))
