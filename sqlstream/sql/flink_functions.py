"""Flink SQL functions that have a RisingWave/DataFusion equivalent, parsed into it.

* ``DATE_FORMAT(ts, 'yyyy-MM-dd HH:mm')`` — a Java date pattern — is ``TO_CHAR`` with
  the same pattern in strftime form (what DataFusion's ``to_char`` reads);
* ``HOUR(ts)``, ``MINUTE(ts)``, ``SECOND(ts)`` are ``EXTRACT(... FROM ts)``;
* ``REGEXP_EXTRACT(s, 'pattern', i)`` (group ``i``, 0 = the whole match, default 1;
  NULL without a match) is ``(regexp_match(s, '(pattern)'))[i + 1]``;
* ``SPLIT_INDEX(s, 'sep', i)`` (the ``i``-th piece, 0-based; NULL past the end) is
  ``string_to_array(s, 'sep')[i + 1]``.

The pattern and the indexes must be literals (else the name stays unknown and the
error says so).

Without these, DataFusion's own ``date_format`` would print the Java pattern letters
as they are: a wrong result, not an error.

>>> from sqlglot import parse_one
>>> from sqlstream.sql.dialect import SqlStream
>>> parse_one("SELECT DATE_FORMAT(ts, 'yyyy-MM-dd HH:mm:ss.SSS')", dialect=SqlStream).expressions[0].args["format"].name
'%Y-%m-%d %H:%M:%S.%3f'
"""

from __future__ import annotations

from sqlglot import exp
from sqlglot.time import format_time

__all__ = ["FLINK_FUNCTIONS", "JAVA_TIME_MAPPING"]

#: Java (``java.time.format.DateTimeFormatter``) pattern letters → strftime (chrono)
JAVA_TIME_MAPPING = {
    "yyyy": "%Y", "yy": "%y", "MMMM": "%B", "MMM": "%b", "MM": "%m", "M": "%-m", "dd": "%d", "d": "%-d",
    "HH": "%H", "H": "%-H", "hh": "%I", "h": "%-I", "mm": "%M", "m": "%-M", "ss": "%S", "s": "%-S",
    "SSSSSS": "%6f", "SSS": "%3f", "a": "%p", "EEEE": "%A", "EEE": "%a", "E": "%a", "D": "%j", "Z": "%z",
}


def _date_format(args: list) -> exp.Expr:
    if len(args) != 2:
        return exp.Anonymous(this="DATE_FORMAT", expressions=args)
    pattern = args[1]
    if isinstance(pattern, exp.Literal) and pattern.is_string:
        pattern = exp.Literal.string(format_time(pattern.name, JAVA_TIME_MAPPING))
    return exp.TimeToStr(this=args[0], format=pattern)


def _extract(unit: str):
    def build(args: list) -> exp.Expr:
        if len(args) != 1:
            return exp.Anonymous(this=unit, expressions=args)
        return exp.Extract(this=exp.var(unit), expression=args[0])

    return build


def _literal_index(node: exp.Expr) -> int | None:
    if isinstance(node, exp.Literal) and not node.is_string and node.name.isdigit():
        return int(node.name)
    return None


def _regexp_extract(args: list) -> exp.Expr:
    index = _literal_index(args[2]) if len(args) == 3 else 1 if len(args) == 2 else None
    pattern = args[1] if len(args) in (2, 3) else None
    if index is None or not (isinstance(pattern, exp.Literal) and pattern.is_string):
        return exp.Anonymous(this="REGEXP_EXTRACT", expressions=args)
    # the whole pattern as group 1: Flink's group i is group i + 1 (Bracket indexes are 0-based)
    match = exp.Anonymous(this="regexp_match", expressions=[args[0], exp.Literal.string(f"({pattern.name})")])
    return exp.Bracket(this=exp.Paren(this=match), expressions=[exp.Literal.number(index)])


def _split_index(args: list) -> exp.Expr:
    index = _literal_index(args[2]) if len(args) == 3 else None
    if index is None:
        return exp.Anonymous(this="SPLIT_INDEX", expressions=args)
    pieces = exp.Anonymous(this="string_to_array", expressions=[args[0], args[1]])
    return exp.Bracket(this=pieces, expressions=[exp.Literal.number(index)])


FLINK_FUNCTIONS = {
    "REGEXP_EXTRACT": _regexp_extract,
    "SPLIT_INDEX": _split_index,
    "DATE_FORMAT": _date_format,
    "HOUR": _extract("HOUR"),
    "MINUTE": _extract("MINUTE"),
    "SECOND": _extract("SECOND"),
}
