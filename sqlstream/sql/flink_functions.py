"""Flink SQL functions that have a RisingWave/DataFusion equivalent, parsed into it.

* ``DATE_FORMAT(ts, 'yyyy-MM-dd HH:mm')`` — a Java date pattern — is ``TO_CHAR`` with
  the same pattern in strftime form (what DataFusion's ``to_char`` reads);
* ``HOUR(ts)``, ``MINUTE(ts)``, ``SECOND(ts)`` are ``EXTRACT(... FROM ts)``.

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


FLINK_FUNCTIONS = {
    "DATE_FORMAT": _date_format,
    "HOUR": _extract("HOUR"),
    "MINUTE": _extract("MINUTE"),
    "SECOND": _extract("SECOND"),
}
