"""The two inputs of a join and its condition over them.

:class:`JoinInputs` gives both inputs' columns their names after the join (``alias.column``),
resolves the ``ON`` conjuncts (and, for inner joins, the ``WHERE`` conjuncts relating
the sides) over them, and splits them into key equalities (cast to a common type per
pair), filters of one side (applied to that side before the join where SQL allows it)
and a residual condition. It then prepares each input (filters applied, computed keys
added, on DataFusion) and lays out the join's output (:class:`~sqlstream.operators.joins.JoinLayout`).
The strategies built on it are in :mod:`sqlstream.plan.joins`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pyarrow as pa
from sqlglot import exp

from sqlstream.errors import SqlAnalysisError, SqlStreamError, UnknownFunctionError, UnsupportedSqlError
from sqlstream.hidden import OP_COLUMN, is_hidden
from sqlstream.operators.datafusion_program import DataFusionProgram, plan_error
from sqlstream.operators.join_layout import JoinLayout, JoinSide
from sqlstream.plan.join_conditions import ColumnReferences, and_all, common_type, conjuncts
from sqlstream.plan.join_using import UsingColumn, using_inputs, using_names
from sqlstream.plan.lowering import to_datafusion_sql
from sqlstream.plan.nodes import PlanNode
from sqlstream.plan.relation import PendingWindow, PlannerContext, Relation, SelectItem
from sqlstream.plan.scope import Scope, ScopeColumn, column_ref
from sqlstream.plan.windows import expand_window, reject_virtual
from sqlstream.sql.dialect import SqlStream
from sqlstream.sql.types import sql_type_name

__all__ = ["SUPPORTED_JOINS", "JoinContext", "JoinInput", "Conjunct", "JoinInputs", "sql_text", "shown"]

SUPPORTED_JOINS = (
    "supported joins: stream JOIN table (lookup join, INNER or LEFT); two windowed inputs ON l.window_start = "
    "r.window_start AND l.window_end = r.window_end (window join); two streams with "
    "r.ts BETWEEN l.ts - INTERVAL 'x' AND l.ts + INTERVAL 'y' (interval join); two streams ON an equality "
    "l.k = r.k (regular join, INNER/LEFT/RIGHT/FULL)"
)


def sql_text(node: exp.Expr) -> str:
    """An expression as users write it (for EXPLAIN and messages)."""
    return node.sql(dialect=SqlStream)


@dataclass
class JoinContext:
    """What the joins of one SELECT share."""

    planner: PlannerContext
    select: exp.Select
    where: list[exp.Expr]
    all_inner: bool
    pushed: set[int] = field(default_factory=set)  # WHERE conjuncts already pushed into a side


@dataclass
class JoinInput:
    """One input of the join being planned."""

    rel: Relation
    index: int
    names: dict[str, str]  # input column -> output column, for the columns the output carries
    qualifiers: set[str]
    window: tuple[str, str] | None = None  # input columns
    time: str | None = None  # input column: event time (rowtime, or a final window's end)
    columns: list[tuple[str, ScopeColumn, bool]] = field(default_factory=list)  # (input column, its ScopeColumn, named after the join?)
    filters: list[exp.Expr] = field(default_factory=list)  # over input columns
    keys: list[exp.Expr] = field(default_factory=list)  # over input columns

    @property
    def node(self) -> PlanNode:
        return self.rel.node


@dataclass
class Conjunct:
    """One conjunct of the join condition."""

    text: exp.Expr  # as written (for EXPLAIN)
    resolved: exp.Expr  # over output columns
    sides: frozenset[int]
    origin: str  # on | where


class JoinInputs:
    """A join's inputs and condition; :meth:`plan` (in a subclass) picks the strategy."""

    sides: tuple[JoinInput, JoinInput]
    conjuncts: list[Conjunct]
    out_to_input: dict[str, tuple[int, str]]  # output column -> (side, input column)
    virtual: list[ScopeColumn]  # window columns of a pending window TVF passed through
    condition_scope: Scope  # what the join's condition may name
    scope: Scope  # what the query may name after the join

    def __init__(self, context: JoinContext, join: exp.Join, kind: str, left: Relation, right: Relation):
        self.context = context
        self.planner = context.planner
        self.join = join
        self.kind = kind
        self.inputs = (left, right)
        self.one_sided_bound = False
        self.references = ColumnReferences.of(context.select, join)

    def _unsupported(self, message: str, hint: str | None = SUPPORTED_JOINS, node=None) -> UnsupportedSqlError:
        return self.planner.unsupported(message, node if node is not None else self.join, hint)

    def _condition_node(self) -> exp.Expr:
        """Where condition errors point: the ON condition, else the joined relation."""
        return self.join.args.get("on") or self.join

    def _materialize(self, rel: Relation) -> Relation:
        """A window TVF without aggregation joins as rows with window columns."""
        if rel.window is None:
            return rel
        node, scope = expand_window(self.planner, rel, self.context.select)
        return Relation(node, scope, None, rel.label)

    def _combine(self, left: Relation, right: Relation) -> tuple[JoinInput, JoinInput]:
        """Output names for both inputs' columns, and the scope conditions resolve in."""
        used: set[str] = set()
        sides = []
        every: list[ScopeColumn] = []  # what the join's condition may name
        self.out_to_input = {}
        self.virtual = []
        named = using_names(self.planner, self.join, left.scope, right.scope)
        merged_inputs = [{c.internal for c in using_inputs(self.planner, rel.scope, named)} for rel in (left, right)]
        outs: list[dict[str, str]] = [{}, {}]  # per side: input column -> output column
        for index, rel in enumerate((left, right)):
            side = JoinInput(rel, index, {}, set(), rel.node.window, rel.node.rowtime or rel.node.window_end)
            types = {f.name: f.type for f in rel.node.schema}
            for column in rel.scope.columns:
                side.qualifiers |= column.qualifiers
                if column.virtual:  # window columns of a window TVF passed through a lookup join
                    virtual = ScopeColumn(column.name, column.internal, column.type, set(column.qualifiers), True)
                    self.virtual.append(virtual)
                    every.append(virtual)
                    continue
                out = outs[index].get(column.internal)
                if out is None:  # (a column merged by an earlier USING shares its input column)
                    prefix = sorted(column.qualifiers)[0] if column.qualifiers else (rel.label or f"input{index}")
                    out = f"{prefix}.{column.name}"
                    while out in used:
                        out += "_"
                    used.add(out)
                    self.out_to_input[out] = (index, column.internal)
                    outs[index][column.internal] = out
                qualified_only = column.qualified_only or column.internal in merged_inputs[index]
                scoped = ScopeColumn(column.name, out, types.get(column.internal, column.type), set(column.qualifiers),
                                     qualified_only=qualified_only)
                every.append(scoped)
                side.columns.append((column.internal, scoped, self._wanted(index, column)))
            sides.append(side)
        clash = sides[0].qualifiers & sides[1].qualifiers
        if clash:
            name = sorted(clash)[0]
            raise SqlAnalysisError(
                f"'{name}' names both sides of the join",
                location=self.planner.loc(self.join),
                hint=f"give one side an alias: JOIN {name} AS {name}2 ON ...",
            )
        self.using = []
        for node, name in named:
            pair = [using_inputs(self.planner, rel.scope, [(node, name)])[0] for rel in (left, right)]
            column_outs = tuple(outs[i][c.internal] for i, c in enumerate(pair))
            types = tuple(sides[i].node.schema.field(c.internal).type for i, c in enumerate(pair))
            self.using.append(UsingColumn(node, name, column_outs, types))
        self.condition_scope = Scope(self._merged() + every)
        return sides[0], sides[1]

    def _wanted(self, index: int, column: ScopeColumn) -> bool:
        """Whether the query may name ``column`` of side ``index`` after the join."""
        return self.references.wanted(column)

    def _merged(self, carried: set[str] | None = None) -> list[ScopeColumn]:
        """The columns ``USING``/``NATURAL`` merges, named without a qualifier: the left
        side's (INNER, LEFT) or the right side's (RIGHT) column; for FULL, a column
        ``COALESCE(l.k, r.k)`` that :meth:`_result` adds after the join. Only those
        whose inputs are in ``carried`` (all when None)."""
        out = []
        for u in self.using:
            if carried is not None and not set(u.outputs) <= carried:
                continue
            if self.kind == "full":
                out.append(ScopeColumn(u.name, f"USING.{u.name}", common_type(*u.types) or u.types[0], set()))
            else:
                side = 1 if self.kind == "right" else 0
                out.append(ScopeColumn(u.name, u.outputs[side], u.types[side], set()))
        return out

    def _carry(self, left: set = frozenset(), right: set = frozenset()) -> None:
        """The columns the join's output carries: those the query names after it, plus
        ``left``/``right`` input columns its strategy needs (event time, windows)."""
        scope = list(self.virtual)
        carried: set[str] = set()
        for side, required in zip(self.sides, (left, right), strict=True):
            side.names = {}
            wanted = {internal for internal, _, want in side.columns if want or internal in required}
            for internal, scoped, _ in side.columns:
                if internal in wanted:
                    side.names[internal] = scoped.internal
                    carried.add(scoped.internal)
                    scope.append(scoped)
        self.scope = Scope(self._merged(carried) + scope)

    def _out(self, side: JoinInput, column: str) -> str:
        """The output name of an input column (carried or not)."""
        return next(scoped.internal for internal, scoped, _ in side.columns if internal == column)

    def _sides_of(self, resolved: exp.Expr) -> frozenset[int]:
        return frozenset(
            self.out_to_input[c.name][0] for c in resolved.find_all(exp.Column) if c.name in self.out_to_input
        )

    def _conditions(self) -> list[Conjunct]:
        source = self.planner.source
        out = [Conjunct(u.text(), u.equality(), frozenset((0, 1)), "on") for u in self.using]
        on = self.join.args.get("on")
        for node in conjuncts(on):
            resolved = self.condition_scope.resolve(node, source)
            self._reject_unsupported(resolved, node)
            reject_virtual(self.planner.source, resolved)
            out.append(Conjunct(node, resolved, self._sides_of(resolved), "on"))
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
                out.append(Conjunct(node, resolved, sides, "where"))
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
        equalities: list[tuple[exp.Expr, exp.Expr, Conjunct]] = []
        residual: list[Conjunct] = []
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

    def _equality(self, conjunct: Conjunct):
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
                    f"cannot join on {sql_text(conjunct.text)}: the sides have types {sql_type_name(types[0])} and {sql_type_name(types[1])}",
                    location=self.planner.loc(conjunct.text),
                    hint="CAST one side to the other's type",
                )
            for side, expr, t in zip(self.sides, (left_expr, right_expr), types, strict=True):
                if t != common:
                    expr = exp.Cast(this=expr, to=exp.DataType.build(sql_type_name(common)))
                side.keys.append(expr)

    def _type_of(self, side: JoinInput, expression: exp.Expr) -> pa.DataType:
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

    def _prepare(self, side: JoinInput, label: str):
        """The side's input with its filters applied and key expressions computed; the
        key column names."""
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
        items = [SelectItem(column_ref(f.name), f.name) for f in side.node.schema if not is_hidden(f.name) and f.name != OP_COLUMN]
        items += [SelectItem(key, name) for key, name in extra]
        return self.planner.stateless(side.node, items, condition, label=label), key_names

    def _layout(self, kind: str, key_names, residual: list[Conjunct], hidden: list[pa.Field],
                window_columns=(None, None), times=(None, None), null_aware: bool = False) -> JoinLayout:
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
        return JoinLayout(kind, sides[0], sides[1], tuple(output), pa.schema(fields + hidden), program, null_aware)

    def _condition_text(self) -> str:
        on = self.join.args.get("on")
        parts = [sql_text(on)] if on is not None else []
        if self.using:
            parts.append(("NATURAL " if self.join.args.get("method") else "") + f"USING ({', '.join(u.name for u in self.using)})")
        parts += [f"{sql_text(c.text)} (from WHERE)" for c in self.conjuncts if c.origin == "where" and len(c.sides) == 2]
        return " AND ".join(parts)

    def _post_filter(self, node: PlanNode, residual: list[Conjunct]):
        """Inner joins: the residual condition filters joined rows (UDFs allowed)."""
        if not residual:
            return node
        items = [SelectItem(column_ref(f.name), f.name) for f in node.schema if not is_hidden(f.name) and f.name != OP_COLUMN]
        return self.planner.stateless(node, items, and_all([c.resolved for c in residual]), label=self._label())

    def _label(self) -> str:
        return f"{self.sides[0].rel.label} JOIN {self.sides[1].rel.label}"

    def _result(self, node: PlanNode, window: PendingWindow | None = None) -> Relation:
        merged = [c for c in self.scope.columns if c.internal.startswith("USING.")]
        if merged:  # FULL JOIN ... USING: the merged columns are computed after the join
            items = [SelectItem(column_ref(f.name), f.name) for f in node.schema if not is_hidden(f.name) and f.name != OP_COLUMN]
            for column in merged:
                u = next(u for u in self.using if u.name == column.name)
                parts = [column_ref(o) if t == column.type else exp.Cast(this=column_ref(o), to=exp.DataType.build(sql_type_name(column.type)))
                         for o, t in zip(u.outputs, u.types, strict=True)]
                items.append(SelectItem(exp.Coalesce(this=parts[0], expressions=[parts[1]]), column.internal))
            node = self.planner.stateless(node, items, None, label=self._label())
        scope = self.scope
        if self.kind in ("semi", "anti"):  # only the left side's rows (and columns) come out
            scope = Scope([c for c in scope.columns if self.out_to_input.get(c.internal, (0,))[0] == 0])
            return Relation(node, scope, window, self.sides[0].rel.label)
        return Relation(node, scope, window, self._label())


def shown(expression: exp.Expr) -> str:
    """An expression over a side's input columns as users wrote it (no quoting)."""
    if isinstance(expression, exp.Column):
        return expression.name
    return sql_text(expression).replace('"', "")


def _plain(schema: pa.Schema) -> pa.Schema:
    return pa.schema([f for f in schema if not is_hidden(f.name)])
