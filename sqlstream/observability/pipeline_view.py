"""``/api/pipeline``: the running pipeline as JSON for the console, read from the same
counters as ``/metrics`` (the browser turns successive counters into rows/s).

>>> pipeline_view(None, "demo")["ready"]
False
"""

from __future__ import annotations

import time
from datetime import datetime, timezone

from sqlstream.hidden import is_real_watermark
from sqlstream.observability.metrics import function_stats, operator_labels
from sqlstream.runtime.driver import Driver
from sqlstream.runtime.sink import SinkOperator

__all__ = ["pipeline_view"]


def _iso(us: int) -> str:
    return datetime.fromtimestamp(us / 1e6, tz=timezone.utc).replace(tzinfo=None).isoformat(timespec="milliseconds")


def pipeline_view(driver: Driver | None, pipeline: str) -> dict:
    """``{pipeline, ready, nodes, edges, sources, dead_letters, checkpoints, functions}``;
    nodes carry ``layer`` (longest path from a source) so the console can lay them out."""
    view: dict = {"pipeline": pipeline, "ready": False, "time": time.time(), "nodes": [], "edges": [],
                  "sources": [], "dead_letters": {"by_reason": {}, "latest": []}, "checkpoints": None,
                  "functions": []}
    if driver is None:
        return view
    view["ready"] = driver.ready and not driver.finished
    operators = operator_labels(driver)
    ids = {id(op): (f"sink:{op.sink_name}" if isinstance(op, SinkOperator) else f"op:{label}") for label, op in operators}
    layer: dict[str, int] = {}
    now_us = int(time.time() * 1e6)
    for stage in driver.sources:
        node = f"source:{stage.name}"
        layer[node] = 0
        view["nodes"].append({"id": node, "kind": "source", "label": stage.name, "rows_in": stage.metrics.rows_in,
                              "rows_out": stage.metrics.rows_in})
        for op, _ in stage.consumers:
            view["edges"].append([node, ids[id(op)]])
        wm = stage.tracker.watermark if stage.tracker is not None else None  # the data's, also once ended
        real = wm is not None and is_real_watermark(wm)
        view["sources"].append({
            "name": stage.name, "rows": stage.metrics.rows_in, "records": stage.metrics.records_in,
            "watermark": _iso(wm) if real else None, "lag_s": round((now_us - wm) / 1e6, 3) if real else None,
            "idle": bool(stage.tracker.idle) if stage.tracker is not None else False,
            "dead_letters": driver.dead_letters.total(stage.name),
        })
    for label, op in operators:  # breadth first from the sources: a node's inputs come earlier
        node = ids[id(op)]
        sink = isinstance(op, SinkOperator)
        state = op.state_size() if op.state_hint is not None else None
        view["nodes"].append({
            "id": node, "kind": "sink" if sink else "operator", "label": op.sink_name if sink else label,
            "rows_in": op.rows_in, "rows_out": op.rows_out, "busy_s": round(op.busy_s, 6),
            "state_rows": state.rows if state else None, "state_bytes": state.bytes if state else None,
        })
        for downstream, _ in op.outputs:
            view["edges"].append([node, ids[id(downstream)]])
    for source, target in _ordered(view["edges"], layer):
        layer[target] = max(layer.get(target, 0), layer[source] + 1)
    for node in view["nodes"]:
        node["layer"] = layer.get(node["id"], 0)
    dead_letters = driver.dead_letters
    view["dead_letters"] = {"by_reason": dict(sorted(dead_letters.by_reason().items())),
                            "latest": list(dead_letters.recent)[-5:][::-1]}
    view["functions"] = [{"name": name, "calls": s.calls, "rows": s.rows, "seconds": round(s.seconds, 6),
                          "failed_rows": s.failed_rows} for name, s in sorted(function_stats(operators).items())]
    if driver.checkpointer is not None:
        stats = driver.checkpointer.stats
        view["checkpoints"] = {"taken": stats.taken, "last_epoch": stats.last_epoch,
                               "last_state_rows": stats.last_state_rows, "last_state_bytes": stats.last_state_bytes,
                               "last_duration_ms": round(stats.last_duration_ms, 1),
                               "resumed_from": stats.resumed_from}
    return view


def _ordered(edges: list[list[str]], known: dict[str, int]) -> list[list[str]]:
    """Edges in an order where each edge's source has its layer already (the graph has no cycles)."""
    out, pending, placed = [], list(edges), set(known)
    while pending:
        ready = [e for e in pending if e[0] in placed]
        if not ready:
            break
        for edge in ready:
            out.append(edge)
            pending.remove(edge)
        # a node is placed once every edge into it is
        incoming = {e[1] for e in pending}
        placed |= {e[1] for e in ready if e[1] not in incoming}
    return out
