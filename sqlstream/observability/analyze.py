"""EXPLAIN ANALYZE: a plan annotated with what each of its operators did in a run to
the end of its input (rows in and out, micro-batches, own time, peak state), in the
manner of PostgreSQL's and DuckDB's profiler output.

Each plan node builds one operator, and a node's children feed that operator's input
ports in order (``PlanNode.build``), so the operator graph is read back along the plan.
"""

from __future__ import annotations

import pyarrow as pa

from sqlstream.connectors.base import SinkWriter
from sqlstream.hidden import OP_COLUMN, is_hidden
from sqlstream.operators.base import Operator
from sqlstream.operators.state_size import NO_STATE
from sqlstream.plan.nodes import PlanNode
from sqlstream.runtime.driver import Driver, RunSummary
from sqlstream.runtime.state_tracker import describe

__all__ = ["analyze_text", "DiscardWriter"]


class DiscardWriter(SinkWriter):
    """EXPLAIN ANALYZE of a bare query: the rows are counted by the sink, not kept."""

    def write(self, batch: pa.RecordBatch) -> None:
        pass


def _inputs(driver: Driver) -> dict[int, dict[int, Operator]]:
    """For every operator, the operator feeding each of its input ports."""
    inputs: dict[int, dict[int, Operator]] = {}
    seen: set[int] = set()
    stack = [op for stage in driver.sources for op, _ in stage.consumers]
    while stack:
        op = stack.pop()
        if id(op) in seen:
            continue
        seen.add(id(op))
        for downstream, port in op.outputs:
            inputs.setdefault(id(downstream), {})[port] = op
            stack.append(downstream)
    return inputs


def _ms(seconds: float) -> str:
    return f"{max(seconds, 0.0) * 1000:,.1f} ms"


def _annotation(op: Operator, driver: Driver, total_s: float) -> str:
    share = f" ({op.busy_s / total_s:.0%})" if total_s > 0 else ""
    text = (f"rows in {op.rows_in:,} -> out {op.rows_out:,}, {op.batches_in:,} batch"
            f"{'es' if op.batches_in != 1 else ''}, time {_ms(op.busy_s)}{share}")
    if op.state_hint is not None:
        text += f", peak state {describe(driver.state.peaks.get(id(op), NO_STATE), exact=True)}"
    return text


def _node_lines(node: PlanNode, op: Operator | None, inputs, driver: Driver, total_s: float, indent: int) -> list[str]:
    pad = "  " * indent
    columns = ", ".join(n for n in node.schema.names if not is_hidden(n) and n != OP_COLUMN)
    lines = [f"{pad}{node.describe()}{' [updating]' if node.updating else ''} -> ({columns})"]
    lines += [f"{pad}    {line}" for line in node.details()]
    if op is not None:
        lines.append(f"{pad}    >> {_annotation(op, driver, total_s)}")
    feeding = inputs.get(id(op), {}) if op is not None else {}
    for port, child in enumerate(node.children):
        lines += _node_lines(child, feeding.get(port), inputs, driver, total_s, indent + 1)
    return lines


def analyze_text(sinks: list[tuple[str, str, PlanNode]], driver: Driver, summary: RunSummary) -> str:
    """The plans of ``sinks`` (title, sink name, plan) as ``driver`` ran them, with each
    operator's counters, then the sources, dead letters and totals."""
    inputs = _inputs(driver)
    operators = [op for stage in driver.sources for root, _ in stage.consumers for op in root.walk()]
    total_s = sum(max(op.busy_s, 0.0) for op in {id(o): o for o in operators}.values())
    by_name = {s.sink_name: s for s in driver.sinks}
    parts = []
    for title, name, plan in sinks:
        sink = by_name[name]
        lines = [f"== {title} (EXPLAIN ANALYZE) ==",
                 f"Sink {name}: {sink.rows_out:,} rows out, time {_ms(sink.busy_s)}"]
        lines += _node_lines(plan, inputs.get(id(sink), {}).get(0), inputs, driver, total_s, 1)
        parts.append("\n".join(lines))
    footer = []
    for name, m in summary.sources.items():
        rejected = m["records_in"] - m["rows_in"]
        footer.append(f"source {name}: {m['rows_in']:,} rows in" + (f" ({m['records_in']:,} records)" if rejected > 0 else ""))
    dead = sum(summary.dead_letters.values())
    if dead:
        footer.append(f"dead letters: {dead:,} ("
                      + ", ".join(f"{r} {n:,}" for r, n in sorted(summary.dead_letters.items())) + ")")
    footer.append(f"peak state {describe(summary.peak_state, exact=True)}, "
                  f"operators {_ms(total_s)}, elapsed {summary.elapsed_s * 1000:,.1f} ms")
    return "\n\n".join(parts) + "\n\n" + "\n".join(footer)
