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

import pyarrow as pa
from sqlglot import exp

from sqlstream.durations import format_duration_us
from sqlstream.errors import UnsupportedSqlError
from sqlstream.hidden import OP_COLUMN, WM_COLUMN
from sqlstream.operators.datafusion_program import DataFusionProgram, plan_error
from sqlstream.plan.join_conditions import and_all, conjuncts, interval_bounds
from sqlstream.plan.join_inputs import SUPPORTED_JOINS, JoinContext, JoinInput, JoinInputs, shown
from sqlstream.plan.join_nodes import IntervalJoin, LookupJoin, RegularJoin, TableRef, WindowJoin
from sqlstream.plan.lowering import to_datafusion_sql
from sqlstream.plan.ranking import reject_pending_rank
from sqlstream.plan.relation import PendingWindow, PlannerContext, Relation
from sqlstream.plan.scope import Scope, column_ref
from sqlstream.plan.subqueries import SubqueryFilter, subquery_join
from sqlstream.plan.unnest import plan_unnest
from sqlstream.sql.statements import normalize_name

__all__ = ["plan_joins", "plan_subquery_filters", "lookup_table_relation", "SUPPORTED_JOINS"]


# -- entry points (called by the planner) ---------------------------------------------------------


def lookup_table_relation(planner: PlannerContext, info, alias: str, node: exp.Expr) -> Relation:
    """A ``CREATE TABLE`` in FROM (``info``: its catalog entry): only valid as a side of a join."""
    if not _is_join_operand(node):
        raise UnsupportedSqlError(
            f"'{info.name}' is a TABLE (bounded lookup data); it can only be joined to a stream",
            location=planner.loc(node),
            hint=f"FROM <stream> s JOIN {info.name} t ON s.<key> = t.<key>",
        )
    return Relation(TableRef(info.name, info.schema, info.connector), Scope.of_schema(info.schema, alias), None, info.name)


def plan_joins(planner: PlannerContext, rel: Relation, joins: list[exp.Join], select: exp.Select) -> Relation:
    """``rel`` joined with each of ``joins`` in turn."""
    kinds = [_join_kind(planner, join) for join in joins]
    where = select.args.get("where")
    where_conjuncts = conjuncts(where.this) if where is not None else []
    context = JoinContext(planner, select, where_conjuncts, all(k == "inner" for k in kinds))
    for join, kind in zip(joins, kinds, strict=True):
        if isinstance(join.this, exp.Unnest):  # stateless: rows repeated per array element
            rel = plan_unnest(planner, rel, join)
            continue
        right = planner.plan_factor(join.this)
        reject_pending_rank(planner, right)
        rel = _JoinPlanner(context, join, kind, rel, right).plan()
    return rel


def plan_subquery_filters(planner: PlannerContext, rel: Relation, select: exp.Select, filters: list[SubqueryFilter]) -> Relation:
    """``rel`` semi/anti joined with the subquery of each ``[NOT] IN``/``[NOT] EXISTS``
    conjunct of WHERE (``select``: the query as written, for the columns it names)."""
    reject_pending_rank(planner, rel)
    context = JoinContext(planner, select, [], False)
    taken = {q for c in rel.scope.columns for q in c.qualifiers}
    for sub in filters:
        join, right = subquery_join(planner, rel, sub, taken)
        reject_pending_rank(planner, right)
        rel = _JoinPlanner(context, join, sub.kind, rel, right, null_aware=sub.null_aware, written=sub.node).plan()
    return rel


# -- helpers ---------------------------------------------------------------------------------------


def _is_join_operand(node: exp.Expr) -> bool:
    parent = node.parent
    if isinstance(parent, exp.Join):
        return True
    if isinstance(parent, exp.From) and isinstance(parent.parent, exp.Select):
        return bool(parent.parent.args.get("joins"))
    return False


def _join_kind(planner: PlannerContext, join: exp.Join) -> str:
    method = (join.args.get("method") or "").upper()
    kind = (join.args.get("kind") or "").upper()
    side = (join.args.get("side") or "").upper()
    if method and method != "NATURAL":
        raise planner.unsupported(f"{method} JOIN is not supported", join, "write the join condition: JOIN ... ON a.k = b.k")
    if kind in ("SEMI", "ANTI"):
        raise planner.unsupported(f"{kind} JOIN is not supported", join,
                                  "write WHERE [NOT] EXISTS (SELECT ... WHERE b.k = a.k) or WHERE a.k [NOT] IN (SELECT k FROM b)")
    if kind not in ("", "INNER", "OUTER", "CROSS"):
        raise planner.unsupported(f"{kind} JOIN is not supported", join, SUPPORTED_JOINS)
    merging = bool(join.args.get("using")) or method == "NATURAL"
    if merging and join.args.get("on") is not None:
        raise planner.unsupported("a join has either ON or USING/NATURAL, not both", join.args["on"])
    if side in ("LEFT", "RIGHT", "FULL"):
        if join.args.get("on") is None and not merging:
            raise planner.unsupported(f"{side} JOIN needs an ON condition", join, "e.g. LEFT JOIN b ON a.k = b.k")
        return side.lower()
    return "inner"


def _preserved(kind: str) -> set[int]:
    """The sides whose rows appear whether or not they match (anti: the left side)."""
    return {"full": {0, 1}, "left": {0}, "right": {1}, "anti": {0}}.get(kind, set())


class _JoinPlanner(JoinInputs):
    """Picks the strategy of one join and builds its node."""

    def __init__(self, context, join, kind, left, right, null_aware: bool = False, written: exp.Expr | None = None):
        super().__init__(context, join, kind, left, right)
        self.null_aware = null_aware  # NOT IN
        self.written = written  # the WHERE conjunct a semi/anti join was written as
        self.semi = kind in ("semi", "anti")
        self.passed_window: PendingWindow | None = None  # the left side's window TVF, after a semi/anti join

    def _wanted(self, index: int, column) -> bool:
        if self.semi and index == 1:  # the subquery's columns: only its condition reads them
            on = self.join.args.get("on")
            return on is not None and column.name in {normalize_name(c.this) for c in on.find_all(exp.Column)}
        return super()._wanted(index, column)

    def _carry(self, left: set = frozenset(), right: set = frozenset()) -> None:
        tvf = self.passed_window
        if tvf is not None:  # its time and SESSION partition columns
            left = {*left, tvf.time_column, *(c.name for p in tvf.partition for c in p.find_all(exp.Column))}
        super()._carry(left, right)

    def _result(self, node, window: PendingWindow | None = None) -> Relation:
        tvf = self.passed_window
        if tvf is not None:
            names = self.sides[0].names
            window = PendingWindow(tvf.spec, names[tvf.time_column], tvf.label,
                                   tuple(_over_output(p, names) for p in tvf.partition))
        return super()._result(node, window)

    # -- the join ------------------------------------------------------------------------------

    def plan(self):
        left, right = self.inputs
        tables = [isinstance(r.node, TableRef) for r in (left, right)]
        if all(tables):
            raise self._unsupported("joining two TABLEs is not supported: a TABLE is lookup data for a stream",
                                    "join a stream with the table: FROM <stream> s JOIN <table> t ON ...")
        if not any(tables):
            if not self.semi or left.window is None:
                left = self._materialize(left)
            else:  # a semi/anti join's rows are the left side's: its window TVF applies after the join
                self.passed_window = left.window
            right = self._materialize(right)
        if self.semi and (left.node.updating or right.node.updating):
            raise self._unsupported("IN/EXISTS over an updating result (changelog) is not supported",
                                    "aggregate with a window, or join the changelog instead", node=self.written)
        self.sides = self._combine(left, right)
        self.conjuncts = self._conditions()
        if any(tables):
            return self._plan_lookup(0 if tables[1] else 1)
        return self._plan_streams()

    # -- lookup join ------------------------------------------------------------------------------

    def _plan_lookup(self, stream_index: int):
        stream, table = self.sides[stream_index], self.sides[1 - stream_index]
        preserved = _preserved(self.kind)
        if table.index in preserved:
            raise self._unsupported(
                f"the TABLE '{table.rel.label}' cannot be the preserved side of a {self.kind.upper()} JOIN "
                "(its unmatched rows would never be final on a stream)",
                f"keep the stream's rows instead: FROM {stream.rel.label} LEFT JOIN {table.rel.label} ON ...",
            )
        equalities, residual = self._split(preserved)
        self._uncorrelated_not_in(equalities, residual)
        if not equalities:
            raise self._unsupported(
                f"a lookup join needs an equality between the stream and the table '{table.rel.label}'",
                f"e.g. ON {_example_column(stream)} = {_example_column(table)}",
                node=self._condition_node(),
            )
        self._key_columns(equalities)
        tvf = stream.rel.window
        required = {stream.node.rowtime, stream.node.window_end, *(stream.node.window or ())}
        if tvf is not None:  # the pending window's time and SESSION partition columns
            required |= {tvf.time_column, *(c.name for p in tvf.partition for c in p.find_all(exp.Column))}
        self._carry(**{("left" if stream.index == 0 else "right"): required})
        node, stream_keys = self._prepare(stream, stream.rel.label)
        table_program, table_keys = self._table_program(table)
        key_names = [None, None]
        key_names[stream.index], key_names[table.index] = stream_keys, table_keys
        hidden = [f for f in node.schema if f.name in (WM_COLUMN, OP_COLUMN)]
        outer_residual = residual if preserved or self.semi else []
        layout = self._layout(self.kind, key_names, outer_residual, hidden, null_aware=self.null_aware)
        names = stream.names
        rowtime = names.get(stream.node.rowtime) if stream.node.rowtime else None
        window = tuple(names[w] for w in stream.node.window) if stream.node.window and all(w in names for w in stream.node.window) else None
        reason = (
            f"'{table.rel.label}' is a TABLE: its rows are loaded once when the query starts and an index on "
            f"({', '.join(shown(k) for k in table.keys)}) is built once; each micro-batch of "
            f"'{stream.rel.label}' probes it (no per-event state)"
        )
        window_end = names.get(stream.node.window_end) if stream.node.window_end else None
        join = LookupJoin(node, stream.index, table.node, table_program, layout, self._condition_text(), reason,
                          rowtime=rowtime, window=window, window_end=window_end)
        result = self._post_filter(join, [] if preserved or self.semi else residual)
        if tvf is not None:  # a window TVF passes through: aggregate it after the join
            partition = tuple(_over_output(p, names) for p in tvf.partition)
            tvf = PendingWindow(tvf.spec, names[tvf.time_column], tvf.label, partition)
        return self._result(result, tvf)

    def _uncorrelated_not_in(self, equalities, residual) -> None:
        """NOT IN's NULL rules are those of one subquery result for every row: no correlation."""
        if self.null_aware and (len(equalities) != 1 or residual):
            raise self._unsupported("NOT IN needs an uncorrelated subquery (its WHERE names only its own columns)",
                                    "write NOT EXISTS (SELECT 1 FROM r WHERE r.k = x.k AND ...)", node=self.written)

    def _table_program(self, table: JoinInput):
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
        preserved = _preserved(self.kind)
        equalities, residual = self._split(preserved)
        self._uncorrelated_not_in(equalities, residual)
        if self.null_aware:  # uncorrelated: no window or time bound relates the sides
            return self._plan_regular(equalities, residual, preserved)
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
        outer_residual = residual if preserved or self.semi else []
        layout = self._layout(self.kind, key_names, outer_residual, [pa.field(WM_COLUMN, pa.int64())],
                              window_columns=tuple(side.window for side in self.sides))
        left = self.sides[0]
        window = (left.names[left.window[0]], left.names[left.window[1]])
        reason = (
            "both inputs are windowed and the condition equates their window_start and window_end: each window is "
            "joined once when the watermark passes its end (final rows, no retractions) and its rows are freed"
        )
        node = WindowJoin(tuple(nodes), layout, self._condition_text(), reason, rowtime=None, window=window,
                          window_end=window[1])
        return self._result(self._post_filter(node, [] if preserved or self.semi else residual))

    def _plan_interval(self, equalities, residual, preserved, lower, upper, used):
        residual = [c for c in residual if all(c is not u for u in used)]
        self._key_columns(equalities)
        left, right = self.sides
        if self.kind in ("inner", "left", "semi", "anti"):
            self._carry(left={left.time})
        elif self.kind == "right":
            self._carry(right={right.time})
        else:
            self._carry()
        nodes, key_names = zip(*(self._prepare(side, side.rel.label) for side in self.sides), strict=True)
        outer_residual = residual if preserved or self.semi else []
        times = tuple(side.time for side in self.sides)
        layout = self._layout(self.kind, key_names, outer_residual, [pa.field(WM_COLUMN, pa.int64())], times=times)
        if self.kind in ("inner", "left", "semi", "anti"):
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
        return self._result(self._post_filter(node, [] if preserved or self.semi else residual))

    def _plan_regular(self, equalities, residual, preserved):
        self._key_columns(equalities)
        self._carry()
        nodes, key_names = zip(*(self._prepare(side, side.rel.label) for side in self.sides), strict=True)
        updating = any(n.updating for n in nodes) or self.kind not in ("inner", "semi")
        hidden = [pa.field(OP_COLUMN, pa.string())] if updating else []
        outer_residual = residual if preserved or self.semi else []
        times = tuple(side.time if side.node.rowtime else None for side in self.sides)
        layout = self._layout(self.kind, key_names, outer_residual, hidden, times=times, null_aware=self.null_aware)
        ttl = self.planner.settings.get("join_state_ttl")
        why = []
        if any(n.updating for n in nodes):
            why.append("an input is an updating result, so the join follows its changes (changelog output)")
        else:
            why.append("no window or time bound relates the inputs")
            if self.one_sided_bound:
                why.append("(the time condition bounds one direction only; bound both for an interval join)")
        if self.kind == "anti":
            why.append("a row without a match is emitted at once and retracted when its first match arrives (changelog output)")
            if self.null_aware:
                why.append("NOT IN: the first subquery row retracts rows with a NULL value, the first NULL in the "
                           "subquery retracts every row (nothing comes after it)")
        elif self.kind == "semi":
            why.append("a row is emitted once, when its first match is seen (append-only output)")
        elif self.kind != "inner" and not any(n.updating for n in nodes):
            why.append(f"a {self.kind.upper()} join's padded rows are retracted when a match arrives (changelog output)")
        why.append("keyed state of both inputs, " + (f"dropped {format_duration_us(ttl)} after storing (join_state_ttl)"
                                                     if ttl else "kept for ever (SET join_state_ttl = '1h' bounds it)"))
        node = RegularJoin(tuple(nodes), layout, self._condition_text(), "; ".join(why), ttl, updating=updating)
        return self._result(self._post_filter(node, [] if preserved or self.semi else residual))


def _signed(us: int) -> str:
    return ("-" if us < 0 else "+") + format_duration_us(abs(us))


def _example_column(side: JoinInput) -> str:
    """``alias.column`` of a side's first column, for hints."""
    return side.columns[0][1].internal if side.columns else "t.k"


def _over_output(expression: exp.Expr, names: dict[str, str]) -> exp.Expr:
    """An expression over a side's input columns rewritten over the join's output columns."""

    def rewrite(node: exp.Expr) -> exp.Expr:
        if isinstance(node, exp.Column) and node.name in names:
            ref = column_ref(names[node.name])
            ref.meta.update(node.meta)
            return ref
        return node

    return expression.copy().transform(rewrite)
