"""Stable names for the operators of a built pipeline, for checkpoints.

A checkpoint stores one :class:`~sqlstream.operators.snapshot.OperatorSnapshot` per
operator and hands it back to the operator of a *fresh* build of the same plans. The
two builds share no objects, so an operator is named by where it sits in the graph:
a breadth-first walk from the driver's sources in their order, each source's
consumers and then each operator's outputs in the order they were connected, every
operator once. The ``i``-th operator of that walk is ``f"{i}-{type(op).__name__}"``;
the same plans built the same way give the same names and kinds. Sink operators are
included (their snapshot is their input watermarks).
"""

from __future__ import annotations

from collections import deque

from sqlstream.operators.base import Operator

__all__ = ["checkpoint_operators"]


def checkpoint_operators(driver) -> list[tuple[str, Operator]]:
    """``(id, operator)`` for every operator of ``driver`` reachable from its sources
    (a :class:`~sqlstream.runtime.driver.Driver`), in a deterministic order."""
    seen: set[int] = set()
    queue: deque[Operator] = deque()

    def visit(ops) -> None:
        for op, _ in ops:
            if id(op) not in seen:
                seen.add(id(op))
                queue.append(op)

    ordered: list[Operator] = []
    for stage in driver.sources:
        visit(stage.consumers)
        while queue:
            op = queue.popleft()
            ordered.append(op)
            visit(op.outputs)
    return [(f"{i}-{type(op).__name__}", op) for i, op in enumerate(ordered)]
