"""Function packs other distributions declare as entry points (group
``sqlstream.functions``).

Each entry point names a module (``package.functions``) or an object in one
(``package.functions:PACK``): a module's or object's attributes decorated with
``@udf`` are its functions; an object that is itself a ``@udf`` function, or a
list/tuple of them, is taken as it is. The functions' origin (SHOW FUNCTIONS) is the
distribution's ``package==version``.

The installed packs are imported once per process, the first time a session needs
them (see :class:`sqlstream.functions.FunctionCatalog`); a pack that fails to import
is a :class:`~sqlstream.errors.UdfError` naming the distribution, the entry point and
the exception text.
"""

from __future__ import annotations

import importlib.metadata
import inspect
from dataclasses import dataclass
from typing import Any, Callable

from sqlstream.connectors.plugins import (
    FUNCTION_GROUP,
    distribution_text,
    entry_point_text,
    group_entry_points,
    load_entry_point,
)
from sqlstream.errors import UdfError

__all__ = ["FunctionPack", "FunctionPacks", "FUNCTION_PACKS"]


@dataclass(frozen=True)
class FunctionPack:
    """One loaded entry point: its ``package==version`` and its @udf functions."""

    origin: str
    functions: tuple[Callable, ...]


class FunctionPacks:
    """The installed function packs, loaded once and shared by every session."""

    def __init__(self, group: str = FUNCTION_GROUP,
                 scan: Callable[[str], list[importlib.metadata.EntryPoint]] = group_entry_points):
        self.group = group
        self.scan = scan  # tests pass their own entry points
        self._packs: list[FunctionPack] | None = None

    def reset(self) -> None:
        """Forget what was loaded (tests that change the installed entry points)."""
        self._packs = None

    def packs(self) -> list[FunctionPack]:
        """Every installed pack, imported on the first call; UdfError if one fails."""
        if self._packs is None:
            self._packs = [_pack(ep) for ep in self.scan(self.group)]
        return self._packs


def _pack(ep: importlib.metadata.EntryPoint) -> FunctionPack:
    target = load_entry_point(ep, UdfError)
    if _is_udf(target):
        functions = [target]
    elif isinstance(target, (list, tuple)):
        functions = list(target)
    else:
        functions = [value for _, value in inspect.getmembers(target) if _is_udf(value)]
    bad = [f for f in functions if not _is_udf(f)]
    if bad:
        raise UdfError(f"plugin {entry_point_text(ep)} lists {bad[0]!r}, which is not a @udf function",
                       hint="decorate it with @sqlstream.udf")
    if not functions:
        raise UdfError(f"plugin {entry_point_text(ep)} has no @udf functions",
                       hint="name a module (or an object) whose functions are decorated with @sqlstream.udf")
    return FunctionPack(distribution_text(ep), tuple(functions))


def _is_udf(value: Any) -> bool:
    return callable(value) and getattr(value, "__sqlstream_udf__", None) is not None


#: the installed packs (one per process)
FUNCTION_PACKS = FunctionPacks()
