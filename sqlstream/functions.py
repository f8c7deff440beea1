"""The SQL functions a catalog holds: Python UDFs (``@udf``, ``udfs/`` directories) and
ONNX models, made into :class:`~sqlstream.catalog.FunctionEntry` s."""

from __future__ import annotations

from typing import Callable, Mapping

from sqlstream.catalog import FunctionEntry
from sqlstream.errors import SqlStreamError, UdfError
from sqlstream.udf.discovery import discover_files, origin_location
from sqlstream.udf.model import ModelUdf
from sqlstream.udf.names import check_function_name
from sqlstream.udf.python import PythonUdf

__all__ = ["python_function", "model_function", "load_udf_directory"]


def python_function(fn, origin: str, functions: Mapping[str, FunctionEntry]) -> FunctionEntry:
    """The entry of a function decorated with :func:`sqlstream.udf` (or a plain function
    with type hints); another function of the same name in ``functions`` is refused."""
    udf = PythonUdf.from_function(fn)
    check_function_name(udf.name)
    existing = functions.get(udf.name)
    same_function = existing is not None and isinstance(existing.impl, PythonUdf) and existing.impl.fn is fn
    if existing is not None and existing.impl is not udf and not same_function:
        raise UdfError(
            f"function '{udf.name}' is defined twice: {existing.origin or 'earlier'} and {origin or 'here'}",
            hint="rename one of them (@udf(name='...'))",
        )
    return FunctionEntry(udf.name, "python", udf, udf.signature(), origin or udf.origin)


def model_function(name: str, path: str, options: dict, origin: str) -> FunctionEntry:
    """The entry of the ONNX model at local ``path`` (a URL is refused) as function ``name``."""
    check_function_name(name)
    model = ModelUdf.load(name, path, options)
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
