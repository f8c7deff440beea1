"""Where a pipeline may read and write files: ``allowed_paths`` (``--allow-paths DIR``).

Every file path a pipeline names goes through :func:`resolve_path`: file sources
(and each file a directory or glob matches), file sinks, the dead-letter file,
model files, and checkpoint directories. Without ``allowed_paths`` (the default:
a local tool run by its owner) a path is only made absolute. With it, a path must
stay inside one of the allowed directories once ``..`` and symbolic links are
resolved, or it is a :class:`~sqlstream.errors.ConnectorError` naming the path and
the allowed directories.

Once set, ``allowed_paths`` can only be narrowed (:meth:`AllowedPaths.narrowed_to`),
so SQL typed into a shared REPL cannot widen what the operator allowed.

>>> import tempfile
>>> root = tempfile.mkdtemp()
>>> os.mkdir(os.path.join(root, "data"))
>>> allowed = AllowedPaths.parse("data", root)
>>> resolve_path("data/in.jsonl", root, allowed, what="path") == os.path.join(allowed.roots[0], "in.jsonl")
True
>>> resolve_path("data/../../etc/passwd", root, allowed, what="path")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
sqlstream.errors.ConnectorError: error: path 'data/../../etc/passwd' is outside the allowed paths (.../data)
  hint: ...
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterable

from sqlstream.errors import ConnectorError, Location

__all__ = ["AllowedPaths", "resolve_path"]

_WILDCARDS = "*?["


@dataclass(frozen=True)
class AllowedPaths:
    """The directories file paths must stay inside, as real paths (symlinks resolved)."""

    roots: tuple[str, ...]

    @classmethod
    def parse(cls, value: str | Iterable[str], base_dir: str) -> "AllowedPaths":
        """Directories from a comma-separated string (or a list), relative ones against
        ``base_dir``; ValueError unless each is an existing directory."""
        items = value.split(",") if isinstance(value, str) else list(value)
        roots: list[str] = []
        for item in (str(i).strip() for i in items):
            if not item:
                continue
            real = os.path.realpath(os.path.join(base_dir, os.path.expanduser(item)))
            if not os.path.isdir(real):
                raise ValueError(f"'{item}' is not a directory")
            if real not in roots:
                roots.append(real)
        if not roots:
            raise ValueError("expected one or more directories, comma-separated")
        return cls(tuple(roots))

    def __str__(self) -> str:
        return ", ".join(self.roots)

    def allows(self, path: str) -> bool:
        """True if ``path``, with symlinks and ``..`` resolved, is inside a root."""
        real = os.path.realpath(path)
        return any(real == root or real.startswith(root.rstrip(os.sep) + os.sep) for root in self.roots)

    def narrowed_to(self, other: "AllowedPaths") -> "AllowedPaths":
        """``other``, if every one of its directories is inside these; ValueError if it
        would widen them."""
        outside = [root for root in other.roots if not self.allows(root)]
        if outside:
            raise ValueError(
                f"'{outside[0]}' is outside the allowed paths ({self}); once set, allowed_paths can only be narrowed"
            )
        return other


def resolve_path(
    path: str,
    base_dir: str,
    allowed: AllowedPaths | None,
    *,
    what: str,
    location: Location | None = None,
    pattern: bool = False,
    hint: str | None = None,
) -> str:
    """``path`` made absolute against ``base_dir`` (normalized), checked against
    ``allowed`` when it is set.

    With ``pattern`` (a source's file, directory or glob) only the part before the
    first wildcard is checked here; the reader checks every file it matches. ``what``
    starts the error message (``"source 'tx': path"``, ``"dead-letter file"``); ``hint``
    replaces the general advice in it.
    """
    absolute = os.path.normpath(os.path.join(base_dir, path))
    if allowed is None:
        return absolute
    checked = absolute
    if pattern and any(ch in absolute for ch in _WILDCARDS):
        fixed = absolute[: min(absolute.index(ch) for ch in _WILDCARDS if ch in absolute)]
        checked = fixed if fixed.endswith(os.sep) else os.path.dirname(fixed)
    if not allowed.allows(checked):
        real = os.path.realpath(checked)
        shown = f"it resolves to {real}; " if real not in (path, absolute) else ""
        raise ConnectorError(
            f"{what} '{path}' is outside the allowed paths ({allowed})",
            location=location,
            hint=shown + (hint or "allowed_paths (--allow-paths) confines every file a pipeline reads or writes"),
        )
    return absolute
