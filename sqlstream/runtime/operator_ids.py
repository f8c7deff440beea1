"""A name for every operator of a built pipeline that is the same in every build of the
same plan, so a checkpoint's state finds its operator again after a restart."""

from __future__ import annotations

from collections import deque

from sqlstream.operators.base import Operator
from sqlstream.runtime.source_stage import SourceStage

__all__ = ["checkpoint_operators"]


def checkpoint_operators(sources: list[SourceStage]) -> list[tuple[str, Operator]]:
    """``(id, operator)`` for each operator reachable from a run's ``sources``, breadth
    first from the sources in order and along each operator's outputs in the order they
    were connected; ids are ``<index>-<class name>``."""
    queue: deque[Operator] = deque(op for stage in sources for op, _ in stage.consumers)
    seen: set[int] = set()
    ordered: list[tuple[str, Operator]] = []
    while queue:
        op = queue.popleft()
        if id(op) in seen:
            continue
        seen.add(id(op))
        ordered.append((f"{len(ordered)}-{type(op).__name__}", op))
        queue.extend(downstream for downstream, _ in op.outputs)
    return ordered
