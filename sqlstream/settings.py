"""Session settings (``SET key = value`` in SQL, ``--set k=v`` on the command line)."""

from __future__ import annotations

import os
from typing import Any

from sqlstream.durations import parse_duration_us
from sqlstream.errors import Location, SqlAnalysisError, did_you_mean
from sqlstream.paths import AllowedPaths
from sqlstream.sizes import parse_bytes, parse_count

__all__ = ["DEFAULT_SETTINGS", "parse_setting", "SETTING_DOCS", "parse_http_address"]

DEFAULT_SETTINGS: dict[str, Any] = {
    "batch_size": 8192,
    "file_batch_size": 262_144,
    "batch_timeout": 10_000,  # µs
    "dead_letter_path": None,
    "join_state_ttl": None,  # µs, None = unbounded
    "dedup_state_ttl": None,  # µs of event time, None = unbounded
    "top_n_state_ttl": None,  # µs of event time, None = unbounded
    "on_error": "dead_letter",
    "max_state_rows": None,  # rows of state of the whole pipeline, None = no limit
    "max_state_bytes": None,  # estimated bytes of state, None = no limit
    "allowed_paths": None,  # AllowedPaths, None = unrestricted
    "checkpoint_dir": None,  # absolute path, None = no checkpoints
    "checkpoint_interval": 5_000_000,  # µs
    "checkpoint_keep": 3,  # committed epochs kept on disk
    "http": None,  # (host, port) of the metrics/console endpoint of a run, None = off
}

SETTING_DOCS = {
    "batch_size": "rows per micro-batch for live sources (default 8192)",
    "file_batch_size": "rows per micro-batch for bounded file sources (default 262144)",
    "batch_timeout": "the longest a live micro-batch waits for more rows (default 10ms)",
    "dead_letter_path": "JSON-lines file for rejected records",
    "join_state_ttl": "drop join state older than this (default: keep)",
    "dedup_state_ttl": "keep-first deduplication forgets a key this long (event time) after its row (default: keep)",
    "top_n_state_ttl": "Top-N and keep-last deduplication forget a key this long (event time) after its last row "
                       "(default: keep)",
    "on_error": "dead_letter | fail | skip, for errors inside queries",
    "max_state_rows": "stop the run when the pipeline's state passes this many rows, e.g. '10M' "
                      "(default off; a warning at 80%, or at 10M rows without a limit)",
    "max_state_bytes": "stop the run when the pipeline's state passes this size, e.g. '2GB', '500MB' "
                       "(default off; a warning at 80%, or at 1 GB without a limit)",
    "allowed_paths": "directories every file path must stay inside (default: unrestricted; can only narrow)",
    "checkpoint_dir": "directory of the pipeline's checkpoints: a run resumes from it and takes checkpoints "
                      "(default: none)",
    "checkpoint_interval": "how often a checkpoint is taken (default 5s)",
    "checkpoint_keep": "how many committed checkpoints stay on disk (default 3)",
    "http": "serve /metrics, /live, /ready and the console at 'host:port' while a pipeline runs "
            "(default off; 'port' alone binds 127.0.0.1)",
}


def parse_setting(key: str, value: Any, location: Location | None = None, *, base_dir: str | None = None) -> Any:
    """The typed value of setting ``key``; relative directories in ``allowed_paths``
    resolve against ``base_dir`` (default: the working directory)."""
    key = key.lower()
    if key not in DEFAULT_SETTINGS:
        raise SqlAnalysisError(
            f"unknown setting '{key}'",
            location=location,
            hint=(did_you_mean(key, DEFAULT_SETTINGS) or "") + " valid settings: " + ", ".join(DEFAULT_SETTINGS),
        )
    try:
        if key in ("batch_size", "file_batch_size", "checkpoint_keep"):
            what = "checkpoints" if key == "checkpoint_keep" else "rows"
            try:
                number = int(str(value).replace("_", ""))
            except ValueError:
                raise ValueError(f"expected a whole number of {what}") from None
            if number <= 0:
                raise ValueError(f"must be a positive number of {what}")
            return number
        if key in ("batch_timeout", "join_state_ttl", "dedup_state_ttl", "top_n_state_ttl",
                   "checkpoint_interval"):
            us = parse_duration_us(value, default_unit="ms" if key == "batch_timeout" else "s")
            if us < 0 or (us == 0 and key == "checkpoint_interval"):
                raise ValueError("must be positive" if key == "checkpoint_interval" else "must not be negative")
            return us
        if key == "checkpoint_dir":
            text = str(value)
            if text.lower() in ("", "off", "none"):
                return None
            return os.path.abspath(os.path.join(base_dir or os.getcwd(), os.path.expanduser(text)))
        if key == "max_state_rows":
            return parse_count(value)
        if key == "max_state_bytes":
            return parse_bytes(value)
        if key == "on_error":
            text = str(value).lower()
            if text not in ("dead_letter", "fail", "skip"):
                raise ValueError("expected dead_letter, fail or skip")
            return text
        if key == "http":
            return parse_http_address(value)
        if key == "allowed_paths":
            return value if isinstance(value, AllowedPaths) else AllowedPaths.parse(value, base_dir or os.getcwd())
        return str(value)
    except ValueError as error:
        raise SqlAnalysisError(
            f"invalid value {value!r} for setting '{key}': {error}", location=location, hint=SETTING_DOCS[key]
        ) from None


def parse_http_address(value: Any) -> tuple[str, int] | None:
    """``'host:port'`` (or ``'port'``, on 127.0.0.1) as ``(host, port)``; ``'off'``: None.

    >>> parse_http_address("127.0.0.1:9464"), parse_http_address("9464"), parse_http_address("[::1]:0")
    (('127.0.0.1', 9464), ('127.0.0.1', 9464), ('::1', 0))
    """
    if isinstance(value, tuple):
        return value
    text = str(value).strip()
    if text.lower() in ("", "off", "none"):
        return None
    host, _, port = text.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    if not port.isdigit() or int(port) > 65535:
        raise ValueError("expected 'host:port', e.g. '127.0.0.1:9464' (port 0: any free port)")
    return host, int(port)
