"""Joins in FROM: one strategy per join, chosen from the inputs and the condition.

=================  ==================================================  ==========================
strategy           when                                                output
=================  ==================================================  ==========================
lookup join        one side is a ``CREATE TABLE`` (bounded, loaded     like the stream (append-only
                   once, indexed once, probed per micro-batch)         or changelog), keeps its
                                                                       event time and windows
window join        both sides windowed, condition equates their        final rows per window,
                   ``window_start`` and ``window_end``                 window columns propagate
interval join      condition bounds ``b.ts - a.ts`` between two        append-only, keeps event
                   constants (``BETWEEN a.ts - x AND a.ts + y``)       time
regular join       anything else with an equality between the sides    append-only for INNER of
                                                                       append-only inputs, else a
                                                                       changelog; unbounded state
=================  ==================================================  ==========================

Conditions are split into conjuncts: equalities between the sides become keys
(computed per side on DataFusion when they are expressions, cast to a common type),
conditions on one side filter that side before the join where SQL allows it, and the
rest is a residual evaluated per joined pair (inner joins: after the join). For inner
joins, ``WHERE`` conjuncts relating both sides count as join conditions too, so
``FROM a, b WHERE a.k = b.k AND b.ts BETWEEN ...`` is planned like the ``ON`` form.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pyarrow as pa
from sqlglot import exp

from sqlstream.durations import format_duration_us
from sqlstream.errors import SqlAnalysisError, SqlStreamError, UnknownFunctionError, UnsupportedSqlError
from sqlstream.hidden import OP_COLUMN, WM_COLUMN, is_hidden
from sqlstream.operators.datafusion_program import DataFusionProgram, plan_error, to_datafusion_sql
from sqlstream.operators.joins import JoinLayout, JoinSide
from sqlstream.plan.join_conditions import ColumnReferences, and_all, common_type, conjuncts, interval_bounds
from sqlstream.plan.join_nodes import IntervalJoin, LookupJoin, RegularJoin, TableRef, WindowJoin
from sqlstream.plan.nodes import PlanNode
from sqlstream.plan.scope import Scope, ScopeColumn, column_ref
from sqlstream.sql.dialect import SqlStream

__all__ = ["plan_joins", "lookup_table_relation", "SUPPORTED_JOINS"]

SUPPORTED_JOINS = (
    "supported joins: stream JOIN table (lookup join, INNER or LEFT); two windowed inputs ON l.window_start = "
    "r.window_start AND l.window_end = r.window_end (window join); two streams with "
    "r.ts BETWEEN l.ts - INTERVAL 'x' AND l.ts + INTERVAL 'y' (interval join); two streams ON an equality "
    "l.k = r.k (regular join, INNER/LEFT/RIGHT/FULL)"
)


# -- entry points (called by the planner) ---------------------------------------------------------


def lookup_table_relation(planner, info, alias: str, node: exp.Expr):
    """A ``CREATE TABLE`` in FROM: only valid as a side of a join."""
    from sqlstream.plan.planner import _Rel

    if not _is_join_operand(node):
        raise UnsupportedSqlError(
            f"'{info.name}' is a TABLE (bounded lookup data); it can only be joined to a stream",
            location=planner.loc(node),
            hint=f"FROM <stream> s JOIN {info.name} t ON s.<key> = t.<key>",
        )
    return _Rel(TableRef(info.name, info.schema, info.connector), Scope.of_schema(info.schema, alias), None, info.name)


def plan_joins(planner, rel, joins: list[exp.Join], select: exp.Select):
    kinds = [_join_kind(planner, join) for join in joins]
    where = select.args.get("where")
    where_conjuncts = conjuncts(where.this) if where is not None else []
    context = _Context(planner, select, where_conjuncts, all(k == "inner" for k in kinds))
    for join, kind in zip(joins, kinds, strict=True):
        right = planner._plan_factor(join.this)
        rel = _JoinPlanner(context, join, kind, rel, right).plan()
    return rel


# -- helpers ---------------------------------------------------------------------------------------


def _is_join_operand(node: exp.Expr) -> bool:
    parent = node.parent
    if isinstance(parent, exp.Join):
        return True
    if isinstance(parent, exp.From) and isinstance(parent.parent, exp.Select):
        return bool(parent.parent.args.get("joins"))
    return False


def _join_kind(planner, join: exp.Join) -> str:
    method = (join.args.get("method") or "").upper()
    kind = (join.args.get("kind") or "").upper()
    side = (join.args.get("side") or "").upper()
    if method:
        raise planner._unsupported(f"{method} JOIN is not supported", join, "write the join condition: JOIN ... ON a.k = b.k")
    if kind in ("SEMI", "ANTI"):
        raise planner._unsupported(f"{kind} JOIN is not supported", join, "use JOIN (or LEFT JOIN ... WHERE b.k IS NULL)")
    if kind not in ("", "INNER", "OUTER", "CROSS"):
        raise planner._unsupported(f"{kind} JOIN is not supported", join, SUPPORTED_JOINS)
    if join.args.get("using"):
        names = ", ".join(u.name for u in join.args["using"])
        raise planner._unsupported(f"JOIN ... USING ({names}) is not supported", join, "write ON a.k = b.k")
    if side in ("LEFT", "RIGHT", "FULL"):
        if join.args.get("on") is None:
            raise planner._unsupported(f"{side} JOIN needs an ON condition", join, "e.g. LEFT JOIN b ON a.k = b.k")
        return side.lower()
    return "inner"


def _sql(node: exp.Expr) -> str:
    return node.sql(dialect=SqlStream)


@dataclass
class _Context:
    planner: object
    select: exp.Select
    where: list[exp.Expr]
    all_inner: bool
    pushed: set[int] = field(default_factory=set)  # WHERE conjuncts already pushed into a side


@dataclass
class _Side:
    """One input of the join being planned."""

    rel: object  # _Rel
    index: int
    names: dict[str, str]  # input column -> output column, for the columns the output carries
    qualifiers: set[str]
    window: tuple[str, str] | None = None  # input columns
    time: str | None = None  # input column: event time (rowtime, or a final window's end)
    columns: list = field(default_factory=list)  # (input column, its ScopeColumn, named after the join?)
    filters: list[exp.Expr] = field(default_factory=list)  # over input columns
    keys: list[exp.Expr] = field(default_factory=list)  # over input columns

    @property
    def node(self) -> PlanNode:
        return self.rel.node


@dataclass
class _Conjunct:
    text: exp.Expr  # as written (for EXPLAIN)
    resolved: exp.Expr  # over output columns
    sides: frozenset[int]
    origin: str  # on | where


class _JoinPlanner:
    def __init__(self, context: _Context, join: exp.Join, kind: str, left, right):
        self.context = context
        self.planner = context.planner
        self.join = join
        self.kind = kind
        self.inputs = (left, right)
        self.one_sided_bound = False
        self.references = ColumnReferences.of(context.select, join)

    def _unsupported(self, message: str, hint: str | None = SUPPORTED_JOINS, node=None) -> UnsupportedSqlError:
        return self.planner._unsupported(message, node if node is not None else self.join, hint)

    def _condition_node(self) -> exp.Expr:
        """Where condition errors point: the ON condition, else the joined relation."""
        return self.join.args.get("on") or self.join

    # -- the join ------------------------------------------------------------------------------

    def plan(self):
        left, right = self.inputs
        tables = [isinstance(r.node, TableRef) for r in (left, right)]
        if all(tables):
            raise self._unsupported("joining two TABLEs is not supported: a TABLE is lookup data for a stream",
                                    "join a stream with the table: FROM <stream> s JOIN <table> t ON ...")
        if not any(tables):
            left, right = self._materialize(left), self._materialize(right)
        self.sides = self._combine(left, right)
        self.conjuncts = self._conditions()
        if any(tables):
            return self._plan_lookup(0 if tables[1] else 1)
        return self._plan_streams()

    def _materialize(self, rel):
        """A window TVF without aggregation joins as rows with window columns."""
        from sqlstream.plan.planner import _Rel

        if rel.window is None:
            return rel
        node, scope = self.planner._expand_window(rel, self.context.select)
        out = _Rel(node, scope, None, rel.label)
        out.expanded_window = ("window_start", "window_end")  # type: ignore[attr-defined]
        return out

    def _combine(self, left, right) -> tuple[_Side, _Side]:
        """Output names for both inputs' columns, and the scope conditions resolve in."""
        used: set[str] = set()
        sides = []
        every: list[ScopeColumn] = []  # what the join's condition may name
        self.out_to_input = {}
        self.virtual: list[ScopeColumn] = []
        for index, rel in enumerate((left, right)):
            side = _Side(rel, index, {}, set(), getattr(rel, "expanded_window", None) or rel.node.window,
                         rel.node.rowtime or rel.node.window_end)
            types = {f.name: f.type for f in rel.node.schema}
            for column in rel.scope.columns:
                side.qualifiers |= column.qualifiers
                if column.virtual:  # window columns of a window TVF passed through a lookup join
                    virtual = ScopeColumn(column.name, column.internal, column.type, set(column.qualifiers), True)
                    self.virtual.append(virtual)
                    every.append(virtual)
                    continue
                prefix = sorted(column.qualifiers)[0] if column.qualifiers else (rel.label or f"input{index}")
                out = f"{prefix}.{column.name}"
                while out in used:
                    out += "_"
                used.add(out)
                self.out_to_input[out] = (index, column.internal)
                scoped = ScopeColumn(column.name, out, types.get(column.internal, column.type), set(column.qualifiers))
                every.append(scoped)
                side.columns.append((column.internal, scoped, self.references.wanted(column)))
            sides.append(side)
        clash = sides[0].qualifiers & sides[1].qualifiers
        if clash:
            name = sorted(clash)[0]
            raise SqlAnalysisError(
                f"'{name}' names both sides of the join",
                location=self.planner.loc(self.join),
                hint=f"give one side an alias: JOIN {name} AS {name}2 ON ...",
            )
        self.condition_scope = Scope(every)
        return sides[0], sides[1]

    def _carry(self, left: set = frozenset(), right: set = frozenset()) -> None:
        """The columns the join's output carries: those the query names after it, plus
        ``left``/``right`` input columns its strategy needs (event time, windows)."""
        scope = list(self.virtual)
        for side, required in zip(self.sides, (left, right), strict=True):
            side.names = {}
            for internal, scoped, wanted in side.columns:
                if wanted or internal in required:
                    side.names[internal] = scoped.internal
                    scope.append(scoped)
        self.scope = Scope(scope)

    def _out(self, side: _Side, column: str) -> str:
        """The output name of an input column (carried or not)."""
        return next(scoped.internal for internal, scoped, _ in side.columns if internal == column)

    def _sides_of(self, resolved: exp.Expr) -> frozenset[int]:
        return frozenset(
            self.out_to_input[c.name][0] for c in resolved.find_all(exp.Column) if c.name in self.out_to_input
        )

    def _conditions(self) -> list[_Conjunct]:
        source = self.planner.source
        out = []
        on = self.join.args.get("on")
        for node in conjuncts(on):
            resolved = self.condition_scope.resolve(node, source)
            self._reject_unsupported(resolved, node)
            self.planner._reject_virtual(resolved)
            out.append(_Conjunct(node, resolved, self._sides_of(resolved), "on"))
        if self.kind != "inner":
            return out
        for node in self.context.where:
            if node.find(exp.Subquery, exp.Window, exp.AggFunc) is not None:
                continue
            try:
                resolved = self.condition_scope.resolve(node, source)
            except SqlStreamError:
                continue  # names columns of a later join, or is wrong (reported by WHERE itself)
            if any(c.meta.get("scope_column") is not None and c.meta["scope_column"].virtual
                   for c in resolved.find_all(exp.Column)):
                continue
            sides = self._sides_of(resolved)
            if sides == frozenset((0, 1)) or (self.context.all_inner and len(sides) == 1 and id(node) not in self.context.pushed):
                out.append(_Conjunct(node, resolved, sides, "where"))
        return out

    def _reject_unsupported(self, resolved: exp.Expr, node: exp.Expr) -> None:
        for found in resolved.find_all(exp.Subquery, exp.Window, exp.AggFunc):
            raise self._unsupported("subqueries, window functions and aggregates are not allowed in a join condition",
                                    None, node=found)

    # -- pieces of the condition ----------------------------------------------------------------

    def _to_input(self, resolved: exp.Expr) -> exp.Expr:
        """An expression over output columns rewritten over its side's input columns."""

        def rewrite(node):
            if isinstance(node, exp.Column) and node.name in self.out_to_input:
                ref = column_ref(self.out_to_input[node.name][1])
                ref.meta.update(node.meta)
                return ref
            return node

        return resolved.copy().transform(rewrite)

    def _split(self, preserved: set[int]):
        """(equality pairs, residual conjuncts); filters go to the sides."""
        equalities: list[tuple[exp.Expr, exp.Expr, _Conjunct]] = []
        residual: list[_Conjunct] = []
        for conjunct in self.conjuncts:
            sides = conjunct.sides
            if len(sides) == 1:
                (index,) = sides
                if index in preserved:
                    residual.append(conjunct)  # decides matching, not which rows exist
                else:
                    self.sides[index].filters.append(self._to_input(conjunct.resolved))
                    if conjunct.origin == "where":
                        self.context.pushed.add(id(conjunct.text))
                continue
            if conjunct.origin == "where" and len(sides) < 2:
                continue
            pair = self._equality(conjunct)
            if pair is not None:
                equalities.append(pair)
            elif conjunct.origin == "on":
                residual.append(conjunct)
        return equalities, residual

    def _equality(self, conjunct: _Conjunct):
        node = conjunct.resolved
        if not isinstance(node, exp.EQ) or conjunct.sides != frozenset((0, 1)):
            return None
        a, b = node.this, node.expression
        sides_a, sides_b = self._sides_of(a), self._sides_of(b)
        if sides_a == {0} and sides_b == {1}:
            return self._to_input(a), self._to_input(b), conjunct
        if sides_a == {1} and sides_b == {0}:
            return self._to_input(b), self._to_input(a), conjunct
        return None

    def _key_columns(self, equalities) -> None:
        """Key expressions of both sides, cast to a common type per pair."""
        for left_expr, right_expr, conjunct in equalities:
            types = [self._type_of(side, e) for side, e in zip(self.sides, (left_expr, right_expr), strict=True)]
            common = common_type(*types)
            if common is None:
                raise SqlAnalysisError(
                    f"cannot join on {_sql(conjunct.text)}: the sides have types {_type_name(types[0])} and {_type_name(types[1])}",
                    location=self.planner.loc(conjunct.text),
                    hint="CAST one side to the other's type",
                )
            for side, expr, t in zip(self.sides, (left_expr, right_expr), types, strict=True):
                if t != common:
                    expr = exp.Cast(this=expr, to=exp.DataType.build(_type_name(common)))
                side.keys.append(expr)

    def _type_of(self, side: _Side, expression: exp.Expr) -> pa.DataType:
        schema = side.node.schema
        if isinstance(expression, exp.Column) and expression.name in schema.names:
            return schema.field(expression.name).type
        try:
            program = DataFusionProgram(f"SELECT {to_datafusion_sql(expression)} AS k FROM __input", _plain(schema))
        except Exception as error:  # DataFusion planning errors are plain exceptions
            err = plan_error(error)
            err.location = self.planner.loc(expression)
            raise err from error
        return program.schema.field(0).type

    def _prepare(self, side: _Side, label: str):
        """The side's input with its filters applied and key expressions computed; the
        key column names."""
        items = []
        key_names = []
        extra = []
        for number, key in enumerate(side.keys):
            if isinstance(key, exp.Column) and key.name in side.node.schema.names:
                key_names.append(key.name)
            else:
                name = f"__jk{side.index}_{number}"
                key_names.append(name)
                extra.append((key, name))
        condition = and_all(side.filters)
        if not extra and condition is None:
            return side.node, key_names
        from sqlstream.plan.planner import _Item

        items = [_Item(column_ref(f.name), f.name) for f in side.node.schema if not is_hidden(f.name) and f.name != OP_COLUMN]
        items += [_Item(key, name) for key, name in extra]
        return self.planner.stateless(side.node, items, condition, label=label), key_names

    def _layout(self, kind: str, key_names, residual: list[_Conjunct], hidden: list[pa.Field],
                window_columns=(None, None), times=(None, None)) -> JoinLayout:
        output = []
        fields = []
        for side in self.sides:
            types = {f.name: f.type for f in side.node.schema}
            for name, out in side.names.items():
                output.append((side.index, name))
                fields.append(pa.field(out, types[name]))
        visible = pa.schema(fields)
        program = None
        if residual:
            condition = and_all([c.resolved for c in residual])
            sql = f'SELECT ({to_datafusion_sql(condition)}) AS "__match" FROM __input'
            try:
                program = DataFusionProgram(sql, visible)
            except Exception as error:  # DataFusion planning errors are plain exceptions
                err = plan_error(error)
                err.location = self.planner.loc(residual[0].text)
                if isinstance(err, UnknownFunctionError):
                    err.hint = "functions in an outer join's condition run on DataFusion; move Python/model calls to WHERE or a subquery"
                raise err from error
        sides = []
        for side, keys, window, time in zip(self.sides, key_names, window_columns, times, strict=True):
            sides.append(JoinSide(tuple(side.names), tuple(keys), time, window, side.rel.label))
        return JoinLayout(kind, sides[0], sides[1], tuple(output), pa.schema(fields + hidden), program)

    def _condition_text(self) -> str:
        on = self.join.args.get("on")
        parts = [_sql(on)] if on is not None else []
        parts += [f"{_sql(c.text)} (from WHERE)" for c in self.conjuncts if c.origin == "where" and len(c.sides) == 2]
        return " AND ".join(parts)

    def _post_filter(self, node: PlanNode, residual: list[_Conjunct]):
        """Inner joins: the residual condition filters joined rows (UDFs allowed)."""
        if not residual:
            return node
        from sqlstream.plan.planner import _Item

        items = [_Item(column_ref(f.name), f.name) for f in node.schema if not is_hidden(f.name) and f.name != OP_COLUMN]
        return self.planner.stateless(node, items, and_all([c.resolved for c in residual]), label=self._label())

    def _label(self) -> str:
        return f"{self.sides[0].rel.label} JOIN {self.sides[1].rel.label}"

    def _result(self, node: PlanNode, window=None):
        from sqlstream.plan.planner import _Rel

        return _Rel(node, self.scope, window, self._label())

    # -- lookup join ------------------------------------------------------------------------------

    def _plan_lookup(self, stream_index: int):
        stream, table = self.sides[stream_index], self.sides[1 - stream_index]
        preserved = {0, 1} if self.kind == "full" else ({0} if self.kind == "left" else {1} if self.kind == "right" else set())
        if table.index in preserved:
            raise self._unsupported(
                f"the TABLE '{table.rel.label}' cannot be the preserved side of a {self.kind.upper()} JOIN "
                "(its unmatched rows would never be final on a stream)",
                f"keep the stream's rows instead: FROM {stream.rel.label} LEFT JOIN {table.rel.label} ON ...",
            )
        equalities, residual = self._split(preserved)
        if not equalities:
            raise self._unsupported(
                f"a lookup join needs an equality between the stream and the table '{table.rel.label}'",
                f"e.g. ON {_example_column(stream)} = {_example_column(table)}",
                node=self._condition_node(),
            )
        self._key_columns(equalities)
        tvf = stream.rel.window
        required = {stream.node.rowtime, stream.node.window_end, *(stream.node.window or ()),
                    tvf.time_column if tvf is not None else None}
        self._carry(**{("left" if stream.index == 0 else "right"): required})
        node, stream_keys = self._prepare(stream, stream.rel.label)
        table_program, table_keys = self._table_program(table)
        key_names = [None, None]
        key_names[stream.index], key_names[table.index] = stream_keys, table_keys
        hidden = [f for f in node.schema if f.name in (WM_COLUMN, OP_COLUMN)]
        outer_residual = residual if preserved else []
        layout = self._layout(self.kind, key_names, outer_residual, hidden)
        names = stream.names
        rowtime = names.get(stream.node.rowtime) if stream.node.rowtime else None
        window = tuple(names[w] for w in stream.node.window) if stream.node.window and all(w in names for w in stream.node.window) else None
        reason = (
            f"'{table.rel.label}' is a TABLE: its rows are loaded once when the query starts and an index on "
            f"({', '.join(_show(k) for k in table.keys)}) is built once; each micro-batch of "
            f"'{stream.rel.label}' probes it (no per-event state)"
        )
        join = LookupJoin(node, stream.index, table.node, table_program, layout, self._condition_text(), reason,
                          rowtime=rowtime, window=window)
        join.window_end = names.get(stream.node.window_end) if stream.node.window_end else None
        result = self._post_filter(join, [] if preserved else residual)
        if tvf is not None:  # a window TVF passes through: aggregate it after the join
            from sqlstream.plan.planner import _Window

            tvf = _Window(tvf.spec, names[tvf.time_column], tvf.label)
        return self._result(result, tvf)

    def _table_program(self, table: _Side):
        """Filters and computed keys of the table, run once on its rows at load time."""
        schema = table.node.schema
        key_names, extra = [], []
        for number, key in enumerate(table.keys):
            if isinstance(key, exp.Column) and key.name in schema.names:
                key_names.append(key.name)
            else:
                name = f"__jk{number}"
                key_names.append(name)
                extra.append(f"{to_datafusion_sql(key)} AS \"{name}\"")
        condition = and_all(table.filters)
        if not extra and condition is None:
            return None, key_names
        parts = [f'"{f.name}"' for f in schema] + extra
        sql = f"SELECT {', '.join(parts)} FROM __input"
        if condition is not None:
            sql += f" WHERE {to_datafusion_sql(condition)}"
        try:
            return DataFusionProgram(sql, schema), key_names
        except Exception as error:  # DataFusion planning errors are plain exceptions
            err = plan_error(error)
            err.location = self.planner.loc(self.join)
            raise err from error

    # -- stream-stream joins ---------------------------------------------------------------------

    def _plan_streams(self):
        left, right = self.sides
        preserved = {0, 1} if self.kind == "full" else ({0} if self.kind == "left" else {1} if self.kind == "right" else set())
        equalities, residual = self._split(preserved)
        updating = left.node.updating or right.node.updating
        window_pairs = self._window_equalities(equalities)
        if window_pairs is not None and not updating:
            equalities = [e for e in equalities if all(e[2] is not c for c in window_pairs)]
            return self._plan_window(equalities, residual, preserved)
        bounds = None if updating else self._time_bounds()
        if bounds is not None:
            return self._plan_interval(equalities, residual, preserved, *bounds)
        if not equalities:
            hint = SUPPORTED_JOINS
            if not self.conjuncts:
                message = "a join of two streams needs a condition relating them"
            else:
                message = "a join of two streams needs an equality between them, a time bound on both sides, or window columns"
            raise self._unsupported(message + " (a cross product of unbounded streams cannot be computed)", hint,
                                    node=self._condition_node())
        return self._plan_regular(equalities, residual, preserved)

    def _window_equalities(self, equalities):
        left, right = self.sides
        if left.window is None or right.window is None:
            return None
        found = {}
        for left_expr, right_expr, conjunct in equalities:
            if isinstance(left_expr, exp.Column) and isinstance(right_expr, exp.Column):
                for position in (0, 1):
                    if left_expr.name == left.window[position] and right_expr.name == right.window[position]:
                        found[position] = conjunct
        if len(found) < 2:
            return None
        return (found[0], found[1])

    def _time_bounds(self):
        """(lower, upper, conjuncts) bounding right.time - left.time, or None."""
        left, right = self.sides
        if left.time is None or right.time is None:
            return None
        if WM_COLUMN not in left.node.schema.names or WM_COLUMN not in right.node.schema.names:
            return None
        def time_side(column: str) -> int | None:
            hit = self.out_to_input.get(column)
            return hit[0] if hit is not None and hit[1] == self.sides[hit[0]].time else None

        lower = upper = None
        used = []
        for conjunct in self.conjuncts:
            if conjunct.sides != frozenset((0, 1)):
                continue
            found = interval_bounds(conjunct.resolved, time_side)
            if not found:
                continue
            used.append(conjunct)
            for kind, value in found:
                if kind == "lower":
                    lower = value if lower is None else max(lower, value)
                else:
                    upper = value if upper is None else min(upper, value)
        if lower is None or upper is None:
            self.one_sided_bound = lower is not None or upper is not None
            return None
        return lower, upper, used

    def _plan_window(self, equalities, residual, preserved):
        self._key_columns(equalities)
        self._carry(left=set(self.sides[0].window))
        nodes, key_names = zip(*(self._prepare(side, side.rel.label) for side in self.sides), strict=True)
        outer_residual = residual if preserved else []
        layout = self._layout(self.kind, key_names, outer_residual, [pa.field(WM_COLUMN, pa.int64())],
                              window_columns=tuple(side.window for side in self.sides))
        left = self.sides[0]
        window = (left.names[left.window[0]], left.names[left.window[1]])
        reason = (
            "both inputs are windowed and the condition equates their window_start and window_end: each window is "
            "joined once when the watermark passes its end (final rows, no retractions) and its rows are freed"
        )
        node = WindowJoin(tuple(nodes), layout, self._condition_text(), reason, rowtime=None, window=window)
        node.window_end = window[1]
        return self._result(self._post_filter(node, [] if preserved else residual))

    def _plan_interval(self, equalities, residual, preserved, lower, upper, used):
        residual = [c for c in residual if all(c is not u for u in used)]
        self._key_columns(equalities)
        left, right = self.sides
        if self.kind in ("inner", "left"):
            self._carry(left={left.time})
        elif self.kind == "right":
            self._carry(right={right.time})
        else:
            self._carry()
        nodes, key_names = zip(*(self._prepare(side, side.rel.label) for side in self.sides), strict=True)
        outer_residual = residual if preserved else []
        times = tuple(side.time for side in self.sides)
        layout = self._layout(self.kind, key_names, outer_residual, [pa.field(WM_COLUMN, pa.int64())], times=times)
        if self.kind in ("inner", "left"):
            rowtime, delay = left.names[left.time], max(upper, 0)
        elif self.kind == "right":
            rowtime, delay = right.names[right.time], max(-lower, 0)
        else:
            rowtime, delay = None, max(upper, -lower, 0)
        d = format_duration_us
        span = f"[{_signed(lower)}, {_signed(upper)}]"
        reason = (
            f"the condition bounds {self._out(right, right.time)} - {self._out(left, left.time)} to {span}: append-only output; "
            f"a row is kept until the other input's watermark passes its interval, and the output watermark is "
            f"held back by {d(delay)} so joined rows are never late downstream"
        )
        node = IntervalJoin(tuple(nodes), layout, self._condition_text(), reason, lower, upper, delay, rowtime=rowtime)
        return self._result(self._post_filter(node, [] if preserved else residual))

    def _plan_regular(self, equalities, residual, preserved):
        self._key_columns(equalities)
        self._carry()
        nodes, key_names = zip(*(self._prepare(side, side.rel.label) for side in self.sides), strict=True)
        updating = any(n.updating for n in nodes) or self.kind != "inner"
        hidden = [pa.field(OP_COLUMN, pa.string())] if updating else []
        outer_residual = residual if preserved else []
        times = tuple(side.time if side.node.rowtime else None for side in self.sides)
        layout = self._layout(self.kind, key_names, outer_residual, hidden, times=times)
        ttl = self.planner.settings.get("join_state_ttl")
        why = []
        if any(n.updating for n in nodes):
            why.append("an input is an updating result, so the join follows its changes (changelog output)")
        else:
            why.append("no window or time bound relates the inputs")
            if self.one_sided_bound:
                why.append("(the time condition bounds one direction only; bound both for an interval join)")
        if self.kind != "inner" and not any(n.updating for n in nodes):
            why.append(f"a {self.kind.upper()} join's padded rows are retracted when a match arrives (changelog output)")
        why.append("keyed state of both inputs, " + (f"dropped {format_duration_us(ttl)} after storing (join_state_ttl)"
                                                     if ttl else "kept for ever (SET join_state_ttl = '1h' bounds it)"))
        node = RegularJoin(tuple(nodes), layout, self._condition_text(), "; ".join(why), ttl, updating=updating)
        return self._result(self._post_filter(node, [] if preserved else residual))


def _show(expression: exp.Expr) -> str:
    """An expression over a side's input columns as users wrote it (no quoting)."""
    if isinstance(expression, exp.Column):
        return expression.name
    return _sql(expression).replace('"', "")


def _plain(schema: pa.Schema) -> pa.Schema:
    return pa.schema([f for f in schema if not is_hidden(f.name)])


def _type_name(t: pa.DataType) -> str:
    from sqlstream.sql.types import sql_type_name

    return sql_type_name(t)


def _signed(us: int) -> str:
    return ("-" if us < 0 else "+") + format_duration_us(abs(us))


def _example_column(side: _Side) -> str:
    """``alias.column`` of a side's first column, for hints."""
    return side.columns[0][1].internal if side.columns else "t.k"
