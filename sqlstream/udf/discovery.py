"""Finding ``@udf`` functions: every ``*.py`` under a directory is imported."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
import traceback
from typing import Callable, Iterator

from sqlstream.errors import UdfError

__all__ = ["discover"]


def _module_name(path: str) -> str:
    digest = hashlib.sha1(os.path.abspath(path).encode()).hexdigest()[:10]
    stem = os.path.splitext(os.path.basename(path))[0]
    return f"sqlstream_udfs_{digest}.{stem}"


def _import(path: str):
    name = _module_name(path)
    if name in sys.modules:
        return sys.modules[name]
    package = name.split(".")[0]
    if package not in sys.modules:
        import types

        sys.modules[package] = types.ModuleType(package)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except SyntaxError as error:
        del sys.modules[name]
        raise UdfError(f"{path}:{error.lineno}: syntax error in UDF module: {error.msg}") from error
    except Exception as error:  # noqa: BLE001 - any import failure is the user's to fix
        del sys.modules[name]
        frames = [f for f in traceback.extract_tb(error.__traceback__) if os.path.abspath(f.filename) == os.path.abspath(path)]
        line = frames[-1].lineno if frames else 1
        raise UdfError(f"{path}:{line}: importing UDF module failed: {type(error).__name__}: {error}") from error
    return module


def discover(directory: str) -> Iterator[tuple[Callable, str]]:
    """(function, origin) for every @udf in ``directory``'s ``*.py`` files (sorted)."""
    seen: dict[str, str] = {}
    for root, dirs, files in os.walk(directory):
        dirs[:] = sorted(d for d in dirs if not d.startswith((".", "_")))
        for filename in sorted(files):
            if not filename.endswith(".py") or filename.startswith("_"):
                continue
            path = os.path.join(root, filename)
            module = _import(path)
            for attribute in vars(module).values():
                spec = getattr(attribute, "__sqlstream_udf__", None)
                if spec is None or not callable(attribute):
                    continue
                if getattr(attribute, "__module__", None) != module.__name__:
                    continue  # imported from elsewhere
                origin = f"{path}:{_line(attribute)}"
                if spec.name in seen:
                    raise UdfError(
                        f"function '{spec.name}' is defined twice: {seen[spec.name]} and {origin}",
                        hint="rename one of them (@udf(name='...'))",
                    )
                seen[spec.name] = origin
                yield attribute, origin


def _line(fn: Callable) -> int:
    code = getattr(fn, "__code__", None)
    return code.co_firstlineno if code is not None else 1
