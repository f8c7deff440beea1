"""The Session every command starts from: the pipeline's folder as base directory, its
dead-letter file beside it, ``--allow-paths``, ``--set`` and the UDF folders loaded
(``udfs/`` next to the pipeline and in the working directory, and ``--udfs``)."""

from __future__ import annotations

import os
import sys

from sqlstream.connectors.base import Partition
from sqlstream.errors import SqlStreamError
from sqlstream.paths import AllowedPaths
from sqlstream.session import Session
from sqlstream.udf.discovery import loaded_text

__all__ = ["make_session", "read_sql_file"]


def _parse_sets(values: list[str]) -> dict[str, str]:
    out = {}
    for item in values or []:
        if "=" not in item:
            raise SqlStreamError(f"--set expects key=value, got '{item}'", hint="e.g. --set batch_size=1000")
        key, value = item.split("=", 1)
        out[key.strip().lower()] = value.strip()
    return out


def make_session(
    path: str | None,
    udf_dirs: list[str] | None,
    sets: list[str] | None,
    *,
    clock=None,
    discover_udfs: bool = True,
    allow_paths: list[str] | None = None,
    partition: Partition | None = None,
) -> Session:
    """A Session configured as the CLI does for ``path`` (None: working directory).

    ``allow_paths`` (directories, relative to the working directory) confines every file
    path before ``sets`` apply; ``discover_udfs=False`` (``--no-udfs``) loads only
    ``udf_dirs``. Each UDF file loaded is listed on stderr."""
    base_dir = os.path.dirname(os.path.abspath(path)) if path else os.getcwd()
    if path:
        stem = os.path.splitext(os.path.basename(path))[0]
        dead_letter = os.path.join(base_dir, f"{stem}.dead_letter.jsonl")
    else:
        dead_letter = os.path.join(os.getcwd(), "sqlstream.dead_letter.jsonl")
    session = Session(clock=clock, base_dir=base_dir, dead_letter_path=dead_letter, partition=partition)
    if allow_paths:
        _allow_paths(session, allow_paths)
    for key, value in _parse_sets(sets).items():
        session.apply_setting(key, value)
    directories = []
    automatic = (os.path.join(base_dir, "udfs"), os.path.join(os.getcwd(), "udfs")) if discover_udfs else ()
    for candidate in automatic:
        if os.path.isdir(candidate) and os.path.abspath(candidate) not in directories:
            directories.append(os.path.abspath(candidate))
    for directory in udf_dirs or []:
        if not os.path.isdir(directory):
            raise SqlStreamError(f"--udfs {directory}: no such directory")
        if os.path.abspath(directory) not in directories:
            directories.append(os.path.abspath(directory))
    for directory in directories:
        session.load_udfs(directory, on_file=None if partition else
                          lambda file, names: print(loaded_text(file, names), file=sys.stderr))
    return session


def _allow_paths(session: Session, directories: list[str]) -> None:
    """``--allow-paths DIR`` (repeatable): the widest ``allowed_paths`` of the session."""
    for directory in directories:
        if not os.path.isdir(directory):
            raise SqlStreamError(f"--allow-paths {directory}: no such directory")
    session.apply_setting("allowed_paths", AllowedPaths.parse(directories, os.getcwd()))


def read_sql_file(path: str) -> str:
    """The text of a .sql file, or a SqlStreamError saying why it cannot be read."""
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except OSError as error:
        raise SqlStreamError(f"cannot read {path}: {error.strerror}") from error


