"""Name resolution: which column a (possibly qualified) identifier in a query means.

Columns are rewritten to quoted references to the *internal* column name of the
relation that produces them, so the SQL handed to DataFusion is unambiguous.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pyarrow as pa
from sqlglot import exp

from sqlstream.errors import SqlAnalysisError, did_you_mean
from sqlstream.hidden import OP_COLUMN, is_hidden
from sqlstream.sql.statements import SourceText, normalize_name

__all__ = ["ScopeColumn", "Scope", "column_ref"]


def column_ref(name: str) -> exp.Column:
    return exp.Column(this=exp.Identifier(this=name, quoted=True))


@dataclass
class ScopeColumn:
    name: str  # as users write it (normalized)
    internal: str  # column name in the producing node's output
    type: pa.DataType
    qualifiers: set[str] = field(default_factory=set)
    virtual: bool = False  # window_start/window_end of a window TVF before aggregation
    qualified_only: bool = False  # named only as ``t.k`` (not ``k``, not in ``*``): a side's column merged by
    # JOIN ... USING / NATURAL JOIN, or the value of a scalar subquery


@dataclass
class Scope:
    columns: list[ScopeColumn]

    @classmethod
    def of_schema(cls, schema: pa.Schema, qualifier: str | None) -> "Scope":
        quals = {qualifier} if qualifier else set()
        return cls([ScopeColumn(f.name, f.name, f.type, set(quals)) for f in schema if not is_hidden(f.name) and f.name != OP_COLUMN])

    def requalified(self, qualifier: str) -> "Scope":
        return Scope([ScopeColumn(c.name, c.internal, c.type, {qualifier}, c.virtual)
                      for c in self.columns if not c.qualified_only])

    def lookup(self, column: exp.Column, source: SourceText) -> ScopeColumn:
        name = normalize_name(column.this)
        qualifier = normalize_name(column.args["table"]) if column.args.get("table") is not None else None
        matches = [c for c in self.columns if c.name == name and (
            qualifier in c.qualifiers if qualifier is not None else not c.qualified_only)]
        if len(matches) == 1:
            return matches[0]
        location = source.location(column)
        if not matches:
            if qualifier is not None and not any(qualifier in c.qualifiers for c in self.columns):
                known = sorted({q for c in self.columns for q in c.qualifiers})
                raise SqlAnalysisError(
                    f"unknown relation '{qualifier}' in {column.sql()}",
                    location=location,
                    hint=did_you_mean(qualifier, known) or (f"relations in scope: {', '.join(known)}" if known else None),
                )
            candidates = [c.name for c in self.columns if qualifier is None or qualifier in c.qualifiers]
            hint = did_you_mean(name, candidates)
            raise SqlAnalysisError(
                f"unknown column '{name}'",
                location=location,
                hint=hint or (f"columns: {', '.join(candidates)}" if candidates else None),
            )
        raise SqlAnalysisError(
            f"column reference '{name}' is ambiguous",
            location=location,
            hint="qualify it: " + " or ".join(f"{sorted(c.qualifiers)[0]}.{name}" for c in matches if c.qualifiers),
        )

    def star(self, qualifier: str | None, node: exp.Expr, source: SourceText) -> list[ScopeColumn]:
        if qualifier is None:
            return [c for c in self.columns if not c.qualified_only]
        out = [c for c in self.columns if qualifier in c.qualifiers]
        if not out:
            raise SqlAnalysisError(f"unknown relation '{qualifier}'", location=source.location(node))
        return out

    def resolve(self, expression: exp.Expr, source: SourceText) -> exp.Expr:
        """A copy of ``expression`` with every column rewritten to its internal name."""

        def rewrite(node: exp.Expr) -> exp.Expr:
            if isinstance(node, exp.Column) and not isinstance(node.this, exp.Star):
                field_access = self._struct_field(node, source)
                if field_access is not None:
                    return field_access
                target = self.lookup(node, source)
                ref = column_ref(target.internal)
                ref.meta.update(node.this.meta)
                ref.meta["scope_column"] = target
                return ref
            return node

        return expression.copy().transform(rewrite, copy=False)

    def _struct_field(self, column: exp.Column, source: SourceText) -> exp.Expr | None:
        """``d.label`` where ``d`` names no relation but a STRUCT column with a field
        ``label`` (an ``UNNEST`` alias, say): that field, as ``(d).label`` (PostgreSQL's
        rule: a relation of that name wins). None when ``column`` is not such a field."""
        table = column.args.get("table")
        if table is None or column.args.get("db") is not None:
            return None
        qualifier = normalize_name(table)
        if any(qualifier in c.qualifiers for c in self.columns):
            return None
        structs = [c for c in self.columns if c.name == qualifier and not c.qualified_only
                   and pa.types.is_struct(c.type)]
        name = normalize_name(column.this)
        if len(structs) != 1:
            return None
        fields = [f.name for f in structs[0].type]
        if name not in fields:
            raise SqlAnalysisError(f"column '{qualifier}' has no field '{name}'", location=source.location(column),
                                   hint=did_you_mean(name, fields) or f"fields: {', '.join(fields)}")
        inner = column_ref(structs[0].internal)
        inner.meta["scope_column"] = structs[0]
        return exp.Dot(this=exp.Paren(this=inner), expression=exp.Identifier(this=name, quoted=True))
