"""SQL that applies a staged changelog (``__seq``, ``__op`` and the result's columns) to a
PostgreSQL table, set-based: a few statements per flush or epoch, never one per row.

* :func:`keyed_statements` — the last change of each key wins (``DISTINCT ON (key) …
  ORDER BY key, __seq DESC``): ``DELETE`` for ``-U``/``-D``, ``INSERT … ON CONFLICT
  (key) DO UPDATE`` for ``+I``/``+U``;
* :func:`keyless_statements` — the table as a multiset: rows the changelog adds are
  inserted, each row it takes back deletes one equal row.

``source`` is any relation with those columns: a table name or a parenthesized query.
"""

from __future__ import annotations

import pyarrow as pa

from sqlstream.connectors.postgres.table import TableName
from sqlstream.connectors.postgres.types import quote_ident

__all__ = ["keyed_statements", "keyless_statements", "SIGN_OF_OP"]

#: +1 for a change that adds a row, -1 for one that takes it back, from ``__op``
SIGN_OF_OP = "CASE WHEN __op IN ('+I', '+U') THEN 1 ELSE -1 END"


def keyed_statements(target: TableName, source: str, columns: pa.Schema, key: list[str]) -> list[str]:
    """Statements applying a staged keyed changelog: the last change of each key wins."""
    keys = ", ".join(quote_ident(k) for k in key)
    column_list = ", ".join(quote_ident(f.name) for f in columns)
    last = f"(SELECT DISTINCT ON ({keys}) * FROM {source} AS s ORDER BY {keys}, __seq DESC) AS l"
    match = " AND ".join(f"t.{quote_ident(k)} = l.{quote_ident(k)}" for k in key)
    rest = [quote_ident(f.name) for f in columns if f.name not in key]
    update = f"DO UPDATE SET {', '.join(f'{c} = EXCLUDED.{c}' for c in rest)}" if rest else "DO NOTHING"
    values = ", ".join(f"l.{quote_ident(f.name)}" for f in columns)
    return [
        f"DELETE FROM {target.sql} AS t USING {last} WHERE l.__op IN ('-U', '-D') AND {match}",
        f"INSERT INTO {target.sql} ({column_list}) SELECT {values} FROM {last}"
        f" WHERE l.__op IN ('+I', '+U') ON CONFLICT ({keys}) {update}",
    ]


def keyless_statements(target: TableName, source: str, columns: pa.Schema, sign: str) -> list[str]:
    """Statements applying a staged changelog without a key (``sign``: +1/-1 per row, an
    expression over ``source``'s columns): the table as a multiset."""
    cols = ", ".join(quote_ident(f.name) for f in columns)
    same = " AND ".join(f"t.{quote_ident(f.name)} IS NOT DISTINCT FROM d.{quote_ident(f.name)}" for f in columns)
    net = f"SELECT {cols}, sum({sign}) AS __n FROM {source} AS c GROUP BY {cols}"
    return [
        f"DELETE FROM {target.sql} WHERE ctid IN (SELECT __ctid FROM (SELECT t.ctid AS __ctid, d.__n, row_number() "
        f"OVER (PARTITION BY d.__g ORDER BY t.ctid) AS __rn FROM {target.sql} AS t JOIN (SELECT row_number() OVER () "
        f"AS __g, -__n AS __n, {cols} FROM ({net}) AS s WHERE __n < 0) AS d ON {same}) AS x WHERE x.__rn <= x.__n)",
        f"INSERT INTO {target.sql} ({cols}) SELECT {cols} FROM ({net}) AS s, generate_series(1, s.__n) WHERE s.__n > 0",
    ]
