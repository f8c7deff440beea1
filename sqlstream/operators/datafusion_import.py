"""DataFusion's ``SessionContext`` and ``SessionConfig``, imported without running
``datafusion.functions`` until someone uses it.

``datafusion/__init__.py`` imports ``datafusion.functions``, whose code calls ``pa.scalar``
at import time; pyarrow's first conversion of a Python value imports pandas when it is
installed (~0.3 s, which was 40% of ``sqlstream check``). sqlstream plans with SQL text
and needs none of those expression functions. ``datafusion.functions`` stays an ordinary
module in ``sys.modules``: its code runs, pandas with it, on the first lookup of any of
its names (``from datafusion import functions as F; F.abs(...)``).
``importlib.util.LazyLoader`` does not do here: on Python 3.11 the import statement reads
the module's ``__spec__``, and any attribute read loads a lazy module at once.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
import threading
import types

__all__ = ["SessionConfig", "SessionContext"]


class _DeferredModule(types.ModuleType):
    """A module whose code runs when a name not yet set on it is first looked up."""

    _lock = threading.RLock()  # a second thread waits for the first to finish running the code
    _running: set[str] = set()  # modules whose code runs now: their own lookups fail, as in any import

    def __getattr__(self, name: str):
        with _DeferredModule._lock:  # (the class: it changes once the code has run)
            if type(self) is _DeferredModule and self.__name__ not in _DeferredModule._running:
                _DeferredModule._running.add(self.__name__)
                try:
                    self.__spec__.loader.exec_module(self)
                    self.__class__ = types.ModuleType
                except BaseException:
                    sys.modules.pop(self.__name__, None)
                    raise
                finally:
                    _DeferredModule._running.discard(self.__name__)
        try:
            return self.__dict__[name]
        except KeyError:
            raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}") from None


def _defer(package: str, submodule: str) -> None:
    """Have ``package.submodule`` run on first use (nothing if either is imported already)."""
    name = f"{package}.{submodule}"
    if package in sys.modules or name in sys.modules:
        return
    locations = importlib.util.find_spec(package).submodule_search_locations  # finds, does not import
    module = importlib.util.module_from_spec(importlib.machinery.PathFinder.find_spec(name, locations))
    module.__class__ = _DeferredModule
    sys.modules[name] = module


_defer("datafusion", "functions")

from datafusion import SessionConfig, SessionContext  # noqa: E402  (after _defer)
