"""Which connector a ``connector = '...'`` option names: the source and sink registries.

A connector class registers itself by name with :func:`register_source` or
:func:`register_sink` (as a class decorator). Names are case-insensitive: they are
lower-cased once, when registered and when looked up, so a connector registered as
``'Kafka'`` is found as ``'kafka'`` or ``'KAFKA'``. A name belongs to one class:
registering another class under a taken name raises :class:`ConnectorError`
(registering the same class again, as a re-import does, is a no-op).

The built-in connectors are known by name and module path and imported only when
needed: when one is looked up, or when every name is listed (the "available: ..."
hint, completion). So ``import sqlstream`` does not import nats-py, and a pipeline
that never names ``nats`` never loads it.

Plugins: a third-party connector only has to be imported once to register itself.
Connectors that other distributions declare as entry points (group
``sqlstream.connectors``) are loaded by a plugin loader the registry asks when a name
is not among the built-ins, and before listing every name (:meth:`ConnectorRegistry.
use_plugins`; :mod:`sqlstream.connectors.plugins` is that loader): the lookup, listing
and duplicate rules below then hold for them unchanged, and a plugin may not take a
built-in's name. Each name has an origin: ``built-in``, the plugin's
``package==version``, or the module of a class registered by hand.

This module knows connectors only by what every connector class declares: ``name``
and, for sources, ``metadata_columns``; the classes themselves live in
:mod:`sqlstream.connectors.base`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from sqlstream.errors import ConnectorError, Location, did_you_mean

__all__ = [
    "ConnectorRegistry",
    "SOURCE_CONNECTORS",
    "SINK_CONNECTORS",
    "register_source",
    "register_sink",
    "source_connector",
    "sink_connector",
    "metadata_column_fillers",
]


def _qualified_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _normalised(name: Any) -> str:
    return str(name).lower()


class ConnectorRegistry(Mapping[str, type]):
    """Connector classes of one kind (sources or sinks) by lower-case name.

    A read-only mapping: ``in``, ``[]`` and ``get`` import a built-in connector's
    module when its name is asked for; iterating imports all of them first."""

    def __init__(self, kind: str, lazy: Mapping[str, str]):
        self.kind = kind  # "source" | "sink": for error texts
        #: name → module that registers it when imported (built-ins, later entry points)
        self._lazy: dict[str, str] = {_normalised(n): module for n, module in lazy.items()}
        self._builtin = frozenset(self._lazy)
        self._classes: dict[str, type] = {}
        self._origins: dict[str, str] = {}
        #: ``load(name)`` / ``load(None)`` (all): loads plugin connectors (see use_plugins)
        self._plugins: Callable[[str | None], None] | None = None

    def use_plugins(self, load: Callable[[str | None], None]) -> None:
        """Ask ``load(name)`` for a name that is not a built-in, and ``load(None)`` before
        listing every name; ``load`` registers what it finds (with its origin)."""
        self._plugins = load

    def is_builtin(self, name: str) -> bool:
        """Whether ``name`` is one of the built-in connectors (nothing is imported)."""
        return _normalised(name) in self._builtin

    def has_loaded(self, name: str) -> bool:
        """Whether a class is registered under ``name`` now (nothing is imported)."""
        return _normalised(name) in self._classes

    def origin(self, name: str) -> str:
        """``built-in``, ``package==version`` of a plugin, or the module that registered ``name``."""
        key = _normalised(name)
        cls = self[key]
        if key in self._origins:
            return self._origins[key]
        return "built-in" if key in self._builtin or cls.__module__.startswith("sqlstream.") else cls.__module__

    def set_origin(self, name: str, origin: str) -> None:
        self._origins[_normalised(name)] = origin

    def add_lazy(self, name: str, module: str) -> None:
        """Know ``name`` as registered by ``module``, imported on first use."""
        self._lazy[_normalised(name)] = module

    def register(self, cls: type, origin: str | None = None) -> type:
        """Add ``cls`` under ``cls.name`` (class decorator). Raises ConnectorError when
        another class has that name."""
        name = _normalised(cls.name)
        if not name:
            raise ConnectorError(f"{self.kind} connector {_qualified_name(cls)} has no name")
        module = self._lazy.get(name)
        if module is not None and not _defined_in(cls, module):
            self._load(name)  # a built-in goes first, so taking its name is refused
        existing = self._classes.get(name)
        # the same class again (a re-import, or a reload that made a new class object) is a no-op
        if existing is not None and _qualified_name(existing) != _qualified_name(cls):
            raise ConnectorError(
                f"{self.kind} connector '{name}' is already registered ({_qualified_name(existing)})",
                hint=f"choose another name for {_qualified_name(cls)}",
            )
        self._classes[name] = cls
        if origin is not None:
            self._origins[name] = origin
        return cls

    def _load(self, name: str) -> None:
        module = self._lazy.pop(name, None)
        if module is not None and name not in self._classes:
            importlib.import_module(module)  # the one lazy import: registers the connector
        elif module is None and name not in self._classes and self._plugins is not None:
            self._plugins(name)

    def _load_all(self) -> None:
        for name in list(self._lazy):
            self._load(name)
        if self._plugins is not None:
            self._plugins(None)

    # -- Mapping ---------------------------------------------------------------------------------

    def __getitem__(self, name: str) -> type:
        key = _normalised(name)
        self._load(key)
        return self._classes[key]

    def __contains__(self, name: object) -> bool:
        key = _normalised(name)
        self._load(key)
        return key in self._classes

    def __iter__(self) -> Iterator[str]:
        self._load_all()
        return iter(list(self._classes))

    def __len__(self) -> int:
        self._load_all()
        return len(self._classes)

    # -- lookup with errors ------------------------------------------------------------------------

    def lookup(self, name: Any, where: Location | None = None) -> type:
        """The class ``name`` names; ConnectorError (with the names available) if none,
        or from a plugin that fails to load (located at ``where``)."""
        try:
            return self._lookup(name, where)
        except ConnectorError as error:
            raise error.with_location(where) from error.__cause__

    def _lookup(self, name: Any, where: Location | None) -> type:
        if name is None:
            raise ConnectorError(
                f"a {self.kind} needs a connector",
                location=where,
                hint=f"add WITH (connector = '...'); available: {', '.join(sorted(self))}",
            )
        cls = self.get(_normalised(name))
        if cls is None:
            hint = did_you_mean(str(name), self)
            raise ConnectorError(
                f"unknown {self.kind} connector '{name}'",
                location=where,
                hint=f"{hint + ' ' if hint else ''}available: {', '.join(sorted(self))}",
            )
        return cls


def _defined_in(cls: type, module: str) -> bool:
    """Whether ``cls`` comes from ``module`` or a module of that package."""
    return cls.__module__ == module or cls.__module__.startswith(module + ".")


#: the built-in connectors: name → the module that registers them
SOURCE_CONNECTORS = ConnectorRegistry(
    "source",
    {
        "file": "sqlstream.connectors.file",
        "generator": "sqlstream.connectors.generator",
        "http": "sqlstream.connectors.http",
        "memory": "sqlstream.connectors.memory",
        "mqtt": "sqlstream.connectors.mqtt",
        "nats": "sqlstream.connectors.nats",
        "postgres": "sqlstream.connectors.postgres",
    },
)
SINK_CONNECTORS = ConnectorRegistry(
    "sink",
    {
        "file": "sqlstream.connectors.file",
        "memory": "sqlstream.connectors.memory",
        "mqtt": "sqlstream.connectors.mqtt",
        "nats": "sqlstream.connectors.nats",
        "postgres": "sqlstream.connectors.postgres",
        "stdout": "sqlstream.connectors.stdout",
    },
)


def register_source(cls: type) -> type:
    """Class decorator: make a ``SourceConnector`` subclass available by its ``name``."""
    for column in cls.metadata_columns:
        if not column.startswith("_"):
            raise ConnectorError(
                f"source connector '{cls.name}' declares metadata column '{column}'",
                hint="metadata column names start with '_'",
            )
    return SOURCE_CONNECTORS.register(cls)


def register_sink(cls: type) -> type:
    """Class decorator: make a ``SinkConnector`` subclass available by its ``name``."""
    return SINK_CONNECTORS.register(cls)


def source_connector(name: Any, where: Location | None = None) -> type:
    """The source connector class ``connector = name`` names (ConnectorError if none)."""
    return SOURCE_CONNECTORS.lookup(name, where)


def sink_connector(name: Any, where: Location | None = None) -> type:
    """The sink connector class ``connector = name`` names (ConnectorError if none)."""
    return SINK_CONNECTORS.lookup(name, where)


def metadata_column_fillers(column: str) -> list[str]:
    """Names of the source connectors that fill metadata column ``column`` (all loaded)."""
    return sorted(name for name, cls in SOURCE_CONNECTORS.items() if column in cls.metadata_columns)
