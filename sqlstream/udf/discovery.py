"""Finding ``@udf`` functions: every ``*.py`` under a directory is imported.

Files and folders starting with ``_`` or ``.`` are skipped (helpers, caches); the
directory itself is on ``sys.path`` while its files import, so a UDF file can import
a helper module next to it. An import error, a syntax error or a name defined twice
is a :class:`~sqlstream.errors.UdfError` located at ``file.py:line:col``.

A UDF file is code that runs, like a ``conftest.py``: the command line lists every
file it loads on stderr (:func:`loaded_text`), and ``--no-udfs`` turns the automatic
discovery of ``udfs/`` folders off.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
import traceback
import types
from dataclasses import dataclass
from typing import Callable, Iterator

from sqlstream.errors import Location, UdfError

__all__ = ["UdfFile", "discover", "discover_files", "loaded_text", "origin_location"]


@dataclass(frozen=True)
class UdfFile:
    """One imported ``*.py`` file and the ``(function, "path:line")`` pairs of its @udf functions."""

    path: str
    functions: tuple[tuple[Callable, str], ...]


def loaded_text(path: str, names: list[str]) -> str:
    """The line that tells a user a UDF file ran (its path relative to the working
    directory when inside it).

    >>> loaded_text("/nowhere/udfs/scoring.py", ["risk", "label"])
    'sqlstream: loaded UDFs from /nowhere/udfs/scoring.py (2 functions: risk, label)'
    >>> loaded_text("/nowhere/udfs/helpers.py", [])
    'sqlstream: loaded UDFs from /nowhere/udfs/helpers.py (no functions)'
    """
    cwd = os.getcwd()
    shown = os.path.relpath(path, cwd) if path.startswith(cwd.rstrip(os.sep) + os.sep) else path
    if not names:
        functions = "no functions"
    else:
        functions = f"{len(names)} function{'s' if len(names) > 1 else ''}: {', '.join(names)}"
    return f"sqlstream: loaded UDFs from {shown} ({functions})"


def _module_name(path: str) -> str:
    """A module name unique to the file and its current contents (edits re-import)."""
    stat = os.stat(path)
    key = f"{os.path.abspath(path)}:{stat.st_mtime_ns}:{stat.st_size}"
    digest = hashlib.sha1(key.encode()).hexdigest()[:12]
    stem = os.path.splitext(os.path.basename(path))[0]
    return f"sqlstream_udfs_{digest}.{stem}"


def _location(path: str, line: int, col: int = 1) -> Location:
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except (OSError, UnicodeDecodeError):
        text = None
    return Location(path, max(1, line), max(1, col), text)


def origin_location(origin: str) -> Location | None:
    """The Location of a ``path:line`` origin as :func:`discover` gives it."""
    path, _, line = origin.rpartition(":")
    if not path or not line.isdigit():
        return None
    return _location(path, int(line))


def _import(path: str, directory: str) -> types.ModuleType:
    name = _module_name(path)
    if name in sys.modules:
        return sys.modules[name]
    package = name.split(".")[0]
    if package not in sys.modules:
        sys.modules[package] = types.ModuleType(package)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    sys.path.insert(0, directory)
    try:
        spec.loader.exec_module(module)
    except SyntaxError as error:
        del sys.modules[name]
        raise UdfError(
            f"syntax error in UDF module: {error.msg}", location=_location(path, error.lineno or 1, error.offset or 1)
        ) from error
    except Exception as error:  # noqa: BLE001 - any import failure is the user's to fix
        del sys.modules[name]
        frames = [f for f in traceback.extract_tb(error.__traceback__) if os.path.abspath(f.filename) == os.path.abspath(path)]
        line = frames[-1].lineno if frames else 1
        raise UdfError(
            f"importing UDF module failed: {type(error).__name__}: {error}", location=_location(path, line)
        ) from error
    finally:
        sys.path.remove(directory)
    return module


def discover(directory: str) -> Iterator[tuple[Callable, str]]:
    """(function, ``path:line``) for every @udf in ``directory``'s ``*.py`` files, in
    sorted path order; a name defined twice is an error naming both places."""
    for udf_file in discover_files(directory):
        yield from udf_file.functions


def discover_files(directory: str) -> Iterator[UdfFile]:
    """Every ``*.py`` file under ``directory``, imported, with its @udf functions, in
    sorted path order; a name defined twice is an error naming both places."""
    directory = os.path.abspath(directory)
    seen: dict[str, str] = {}
    for root, dirs, files in os.walk(directory):
        dirs[:] = sorted(d for d in dirs if not d.startswith((".", "_")))
        for filename in sorted(files):
            if not filename.endswith(".py") or filename.startswith(("_", ".")):
                continue
            path = os.path.join(root, filename)
            module = _import(path, directory)
            functions = []
            for attribute in vars(module).values():
                spec = getattr(attribute, "__sqlstream_udf__", None)
                if spec is None or not callable(attribute):
                    continue
                if getattr(attribute, "__module__", None) != module.__name__:
                    continue  # imported from elsewhere
                line = _line(attribute)
                origin = f"{path}:{line}"
                if spec.name in seen:
                    raise UdfError(
                        f"function '{spec.name}' is defined twice: {seen[spec.name]} and {origin}",
                        location=_location(path, line),
                        hint="rename one of them (@udf(name='...'))",
                    )
                seen[spec.name] = origin
                functions.append((attribute, origin))
            yield UdfFile(path, tuple(functions))


def _line(fn: Callable) -> int:
    code = getattr(fn, "__code__", None)
    return code.co_firstlineno if code is not None else 1
