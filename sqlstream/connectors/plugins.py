"""Plugins the Python way: connectors and function packs that other distributions
declare as entry points.

Two groups:

``sqlstream.connectors``
    each entry point names one connector class: its name is the connector name and its
    value ``package.module:Class``; the class's base (:class:`SourceConnector` or
    :class:`SinkConnector`) says whether it is a source or a sink. A value naming a
    module (no ``:Class``) is imported, and the connectors it registers with
    ``@register_source`` / ``@register_sink`` count (for a source and a sink of one name).
``sqlstream.functions``
    each entry point names a module, or an object in one, whose ``@udf`` functions a
    session registers (see :mod:`sqlstream.udf.plugins`).

Nothing is imported up front: the connector registries ask :class:`ConnectorPlugins`
the first time a name is not among the built-ins, and when every name is listed (SHOW
CONNECTORS, completion, the "available: ..." hint). A plugin that fails to load is a
:class:`~sqlstream.errors.ConnectorError` naming the distribution (package and
version), the entry point and the exception text; a plugin may not take a built-in
connector's name.
"""

from __future__ import annotations

import importlib.metadata
import inspect
from typing import Any, Callable

from sqlstream.connectors.base import SinkConnector, SourceConnector
from sqlstream.connectors.registry import SINK_CONNECTORS, SOURCE_CONNECTORS, ConnectorRegistry
from sqlstream.errors import ConnectorError, SqlStreamError

__all__ = [
    "CONNECTOR_GROUP",
    "FUNCTION_GROUP",
    "ConnectorPlugins",
    "CONNECTOR_PLUGINS",
    "distribution_text",
    "entry_point_text",
    "group_entry_points",
    "load_entry_point",
]

CONNECTOR_GROUP = "sqlstream.connectors"
FUNCTION_GROUP = "sqlstream.functions"


def group_entry_points(group: str) -> list[importlib.metadata.EntryPoint]:
    """The entry points installed in ``group`` (one scan of the installed metadata)."""
    return list(importlib.metadata.entry_points(group=group))


def distribution_text(ep: importlib.metadata.EntryPoint) -> str:
    """``package==version`` of the distribution declaring ``ep`` (``?`` when unknown)."""
    dist = getattr(ep, "dist", None)
    if dist is None:
        return "an unknown distribution"
    return f"{dist.metadata['Name']}=={dist.version}"


def entry_point_text(ep: importlib.metadata.EntryPoint) -> str:
    """How an error names ``ep``: ``'name = value' (group, from package==version)``."""
    return f"entry point '{ep.name} = {ep.value}' ({ep.group}, from {distribution_text(ep)})"


def load_entry_point(ep: importlib.metadata.EntryPoint, error: type[SqlStreamError]) -> Any:
    """What ``ep`` names, imported; ``error`` (e.g. ConnectorError) with the distribution,
    the entry point and the exception text if that fails. Never a traceback."""
    try:
        return ep.load()
    except Exception as cause:  # noqa: BLE001 - a plugin can fail any way; the user needs to know which
        raise error(
            f"plugin {entry_point_text(ep)} failed to load: {type(cause).__name__}: {cause}",
            hint=f"fix or reinstall {distribution_text(ep)}, or uninstall it",
        ) from cause


class ConnectorPlugins:
    """The ``sqlstream.connectors`` entry points, loaded into the registries on demand."""

    def __init__(self, group: str = CONNECTOR_GROUP,
                 scan: Callable[[str], list[importlib.metadata.EntryPoint]] = group_entry_points):
        self.group = group
        self.scan = scan  # tests pass their own entry points
        self._pending: dict[str, importlib.metadata.EntryPoint] | None = None  # name → not loaded yet
        #: connector name → ``package==version`` of each plugin loaded
        self.origins: dict[str, str] = {}

    def reset(self) -> None:
        """Forget what was scanned (tests that change the installed entry points)."""
        self._pending = None

    def _entry_points(self) -> dict[str, importlib.metadata.EntryPoint]:
        if self._pending is None:
            found: dict[str, importlib.metadata.EntryPoint] = {}
            for ep in self.scan(self.group):
                name = ep.name.lower()
                if SOURCE_CONNECTORS.is_builtin(name) or SINK_CONNECTORS.is_builtin(name):
                    raise ConnectorError(
                        f"plugin {entry_point_text(ep)} takes the name of the built-in connector '{name}'",
                        hint=f"the plugin is refused; ask its authors to rename it, or uninstall {distribution_text(ep)}",
                    )
                other = found.get(name)
                if other is not None and distribution_text(other) != distribution_text(ep):
                    raise ConnectorError(
                        f"two plugins declare connector '{name}': {entry_point_text(other)} and {entry_point_text(ep)}",
                        hint="uninstall one of them",
                    )
                found[name] = ep
            self._pending = found
        return self._pending

    def load(self, name: str | None) -> None:
        """Load the plugin connector ``name`` (None: every plugin connector), if any."""
        pending = self._entry_points()
        names = list(pending) if name is None else [name] if name in pending else []
        for key in names:
            ep = pending.pop(key)
            try:
                self._register(key, ep)
            except SqlStreamError:
                pending[key] = ep  # asked again, it fails again: never a silent skip
                raise

    def _register(self, name: str, ep: importlib.metadata.EntryPoint) -> None:
        target = load_entry_point(ep, ConnectorError)
        origin = distribution_text(ep)
        if inspect.ismodule(target):
            registered = [r for r in (SOURCE_CONNECTORS, SINK_CONNECTORS) if r.has_loaded(name)]
            if not registered:
                raise ConnectorError(
                    f"plugin {entry_point_text(ep)} registers no connector named '{name}'",
                    hint="name a connector class (package.module:Class) in the entry point",
                )
            for registry in registered:
                registry.set_origin(name, origin)
            self.origins[name] = origin
            return
        registry = _registry_for(target, ep)
        declared = str(getattr(target, "name", "") or "").lower()
        if declared != name:
            raise ConnectorError(
                f"plugin {entry_point_text(ep)} names class {target.__qualname__}, whose name is '{declared}'",
                hint=f"the entry point's name and the class's name must agree: name = '{name}'",
            )
        registry.register(target, origin=origin)
        self.origins[name] = origin


def _registry_for(target: Any, ep: importlib.metadata.EntryPoint) -> ConnectorRegistry:
    if inspect.isclass(target) and issubclass(target, SourceConnector):
        return SOURCE_CONNECTORS
    if inspect.isclass(target) and issubclass(target, SinkConnector):
        return SINK_CONNECTORS
    raise ConnectorError(
        f"plugin {entry_point_text(ep)} names {target!r}, which is neither a SourceConnector nor a SinkConnector class",
        hint="subclass sqlstream.connectors.SourceConnector or SinkConnector",
    )


#: the one table the registries consult (installed by :mod:`sqlstream.connectors`)
CONNECTOR_PLUGINS = ConnectorPlugins()
