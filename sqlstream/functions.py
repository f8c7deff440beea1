"""The SQL functions a catalog holds: Python UDFs (``@udf``, ``udfs/`` directories,
function packs installed as plugins) and ONNX models, made into
:class:`~sqlstream.catalog.FunctionEntry` s."""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from typing import Callable, Mapping

from sqlstream.catalog import FunctionEntry
from sqlstream.errors import SqlStreamError, UdfError
from sqlstream.udf.aggregate import PythonAggregate, is_udaf
from sqlstream.udf.discovery import discover_files, origin_location
from sqlstream.udf.model_aggregate import ModelAggregate, is_aggregate_model
from sqlstream.udf.model_versions import VersionedModel
from sqlstream.udf.names import check_function_name
from sqlstream.udf.plugins import FUNCTION_PACKS, FunctionPacks
from sqlstream.udf.python import PythonUdf

__all__ = ["FunctionCatalog", "python_function", "model_function", "load_udf_directory"]


def python_function(fn, origin: str, functions: Mapping[str, FunctionEntry]) -> FunctionEntry:
    """The entry of a function decorated with :func:`sqlstream.udf` (or a plain function
    with type hints), or of a :func:`sqlstream.udaf` aggregate; another function of the
    same name in ``functions`` is refused."""
    udf = PythonAggregate.from_object(fn) if is_udaf(fn) else PythonUdf.from_function(fn)
    check_function_name(udf.name)
    existing = functions.get(udf.name)
    same_function = existing is not None and getattr(existing.impl, "fn", getattr(existing.impl, "target", None)) is fn
    if existing is not None and existing.impl is not udf and not same_function:
        raise UdfError(
            f"function '{udf.name}' is defined twice: {existing.origin or 'earlier'} and {origin or 'here'}",
            hint="rename one of them (@udf(name='...'))",
        )
    kind = "aggregate" if isinstance(udf, PythonAggregate) else "python"
    return FunctionEntry(udf.name, kind, udf, udf.signature(), origin or udf.origin)


def model_function(name: str, path: str, options: dict, origin: str,
                   replacing: FunctionEntry | None = None) -> FunctionEntry:
    """The entry of the ONNX model at local ``path`` (a URL is refused) as function ``name``
    (an aggregate over a group's rows with ``aggregate = true``). ``replacing`` a model
    function, its model is swapped in place (running queries score the next batch with
    it) if it fits the queries that use it; see :mod:`sqlstream.udf.model_versions`."""
    check_function_name(name)
    if is_aggregate_model(options):
        aggregate = ModelAggregate.load(name, path, options)
        return FunctionEntry(aggregate.name, "model aggregate", aggregate, aggregate.signature(), origin)
    options = {k: v for k, v in options.items() if str(k).lower() != "aggregate"}  # aggregate = false
    if replacing is not None and isinstance(replacing.impl, VersionedModel):
        model = replacing.impl
        model.replace(path, options)
    else:
        model = VersionedModel.load(name, path, options)
    return FunctionEntry(model.name, "model", model, model.signature(), origin)


def load_udf_directory(directory: str, register: Callable[[object, str], None],
                       on_file: Callable[[str, list[str]], None] | None = None) -> list[str]:
    """Import every ``*.py`` under ``directory`` (code that runs) and ``register(fn, origin)``
    its @udf functions; ``on_file(path, names)`` is told of each file once it is loaded."""
    names = []
    for udf_file in discover_files(directory):
        file_names = []
        for fn, origin in udf_file.functions:
            try:
                register(fn, origin)
            except SqlStreamError as error:
                raise error.with_location(origin_location(origin))
            file_names.append(fn.__sqlstream_udf__.name)
        if on_file is not None:
            on_file(udf_file.path, file_names)
        names += file_names
    return names


class FunctionCatalog(MutableMapping[str, FunctionEntry]):
    """A session's functions by name: a dict that registers the installed function packs
    (entry points, :mod:`sqlstream.udf.plugins`) the first time it is read — a lookup or
    a listing — so ``Session()`` itself imports no plugin. Their origin is the
    distribution's ``package==version``; a name a pack shares with another function is
    refused, as for any two functions."""

    def __init__(self, packs: FunctionPacks = FUNCTION_PACKS):
        self._entries: dict[str, FunctionEntry] = {}
        self._packs: FunctionPacks | None = packs  # None once registered

    def _load_packs(self) -> None:
        packs, self._packs = self._packs, None
        if packs is None:
            return
        try:
            for pack in packs.packs():
                for fn in pack.functions:
                    entry = python_function(fn, pack.origin, self._entries)
                    self._entries[entry.name] = entry
        except SqlStreamError:
            self._packs = packs  # asked again, it fails again: never a silent skip
            raise

    def __getitem__(self, name: str) -> FunctionEntry:
        if name not in self._entries:
            self._load_packs()
        return self._entries[name]

    def __contains__(self, name: object) -> bool:
        if name not in self._entries:
            self._load_packs()
        return name in self._entries

    def __setitem__(self, name: str, entry: FunctionEntry) -> None:
        self._entries[name] = entry

    def __delitem__(self, name: str) -> None:
        self._load_packs()
        del self._entries[name]

    def __iter__(self) -> Iterator[str]:
        self._load_packs()
        return iter(list(self._entries))

    def __len__(self) -> int:
        self._load_packs()
        return len(self._entries)
