"""``\\save_test NAME``: the REPL session's DDL, its last query and that query's result,
written as a pipeline test folder that ``sqlstream test NAME`` runs.

What the query read from each source was recorded while it ran, so the test replays
exactly those rows from ``inputs/<source>.jsonl`` (a NATS or generator source becomes a
fixture). When the query ended by itself (a bounded input, or LIMIT) the expected rows are
the result the user saw; when it was stopped, they are what the recorded input gives at
its end (every window closed), computed by replaying it.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
from dataclasses import dataclass

import orjson
from sqlglot import exp

from sqlstream.changelog import fold_changelog
from sqlstream.connectors.dead_letters import DEAD_LETTER_STREAM
from sqlstream.connectors.encode import encode_json_lines
from sqlstream.durations import format_duration_us
from sqlstream.errors import SqlStreamError
from sqlstream.pipeline_tests import run_case
from sqlstream.settings import DEFAULT_SETTINGS
from sqlstream.sql.statements import CreateFunction, QueryStatement, normalize_name

__all__ = ["LastQuery", "save_test"]

_SINK = "query_1"  # what the test runner calls the bare SELECT


@dataclass
class LastQuery:
    statement: QueryStatement
    outcome: "object"  # cli.live.QueryOutcome


def _relations(query: exp.Expr) -> list[str]:
    names = []
    for table in query.find_all(exp.Table):
        if isinstance(table.this, exp.Identifier):
            name = normalize_name(table.this)
            if name not in names:
                names.append(name)
    return names


def _dependencies(session, query: exp.Expr) -> tuple[list[str], list[str]]:
    """(sources, views) the query reads, directly or through views, in catalog order."""
    sources: set[str] = set()
    views: set[str] = set()
    pending = list(_relations(query))
    while pending:
        name = pending.pop()
        if name in session.views and name not in views:
            views.add(name)
            pending.extend(_relations(session.views[name].query))
        elif name in session.sources:
            sources.add(name)
    ordered_sources = [n for n in session.sources if n in sources]
    ordered_views = [n for n in session.views if n in views]
    return ordered_sources, ordered_views


def _setting_text(key: str, value) -> str | int:
    if key in ("batch_timeout", "join_state_ttl") and isinstance(value, int):
        return format_duration_us(value)
    return value


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    return orjson.dumps(str(value)).decode()


def save_test(path: str, session, last: LastQuery | None, functions: dict[str, CreateFunction]) -> str:
    """Write the test folder ``path``; returns a line saying what was written."""
    if last is None:
        raise SqlStreamError("no query to save yet", hint="run a SELECT first; \\save_test saves the last one")
    outcome = last.outcome
    sources, views = _dependencies(session, last.statement.query)
    if DEAD_LETTER_STREAM in sources:
        raise SqlStreamError(f"a query over {DEAD_LETTER_STREAM} cannot be saved as a test",
                             hint="its rows come from other sources' bad records")
    if outcome.inputs is None:
        raise SqlStreamError(
            "the last query read too many rows to record them as test fixtures",
            hint="add a LIMIT or a narrower WHERE (a test replays at most 100,000 rows per source)",
        )
    if os.path.exists(path) and (not os.path.isdir(path) or os.listdir(path)):
        raise SqlStreamError(f"'{path}' already exists", hint="choose another name, or delete it first")
    os.makedirs(os.path.join(path, "inputs"), exist_ok=True)
    os.makedirs(os.path.join(path, "expected"), exist_ok=True)

    parts = [f"-- saved by \\save_test in the sqlstream REPL, {dt.datetime.now().replace(microsecond=0).isoformat(sep=' ')}"]
    for name, statement in functions.items():
        if name in session.functions:
            parts.append(_function_text(statement, path) + ";")
    _copy_udf_files(session, path)
    toml_lines = []
    for name in sources:
        entry = session.sources[name]
        parts.append(entry.statement.text.strip() + ";")
        batches = outcome.inputs.get(name, [])
        with open(os.path.join(path, "inputs", f"{name}.jsonl"), "wb") as handle:
            for batch in batches:
                handle.write(encode_json_lines(batch))
        if entry.statement.options.get("timestamp_format") is not None:
            toml_lines += [f"[inputs.{name}]", f'file = "inputs/{name}.jsonl"', 'timestamp_format = "iso"', ""]
    for name in views:
        parts.append(session.views[name].statement.text.strip() + ";")
    parts.append(last.statement.text.strip() + ";")
    with open(os.path.join(path, "pipeline.sql"), "w", encoding="utf-8") as handle:
        handle.write("\n".join(parts) + "\n")

    settings = {k: v for k, v in session.settings.items() if k != "dead_letter_path" and v != DEFAULT_SETTINGS.get(k)}
    if settings:
        toml_lines = ["[settings]", *(f"{k} = {_toml_value(_setting_text(k, v))}" for k, v in settings.items()), "",
                      *toml_lines]
    if toml_lines:
        with open(os.path.join(path, "test.toml"), "w", encoding="utf-8") as handle:
            handle.write("\n".join(toml_lines))

    shown = outcome.ended and outcome.result is not None
    if shown:
        rows = []
        for batch in outcome.result:
            rows.extend(orjson.loads(line) for line in encode_json_lines(batch).splitlines())
        rows = fold_changelog(rows)
        with open(os.path.join(path, "expected", f"{_SINK}.jsonl"), "wb") as handle:
            for row in rows:
                handle.write(orjson.dumps(row) + b"\n")
    else:
        replay = run_case(path, update=True)
        if not replay.passed:
            raise SqlStreamError(f"wrote {path}, but replaying it failed:\n" + "\n".join(replay.messages))
        rows = replay.outputs.get(_SINK, [])
    check = run_case(path)
    inputs = sum(sum(b.num_rows for b in outcome.inputs.get(n, [])) for n in sources)
    what = f"wrote {path}/: pipeline.sql, {len(sources)} input fixture(s) ({inputs:,} rows), {len(rows):,} expected rows"
    if not shown:
        what += " (the query was stopped, so expected rows are the recorded input's result at its end)"
    if not check.passed:
        raise SqlStreamError(what + "; but the saved test does not pass:\n" + "\n".join(check.messages),
                             hint="the query may not be deterministic (random(), now(), processing time)")
    return what + f"; `sqlstream test {path}` passes"


def _function_text(statement: CreateFunction, path: str) -> str:
    """CREATE FUNCTION with the model copied into the test folder."""
    source = statement.model_path
    if not os.path.isabs(source):
        source = os.path.join(statement.source.base_dir or os.getcwd(), source)
    os.makedirs(os.path.join(path, "models"), exist_ok=True)
    target = os.path.join("models", os.path.basename(source))
    try:
        shutil.copyfile(source, os.path.join(path, target))
    except OSError as error:
        raise SqlStreamError(f"cannot copy model {source} into the test: {error.strerror}") from error
    options = ""
    if statement.options:
        options = " WITH (" + ", ".join(f"{k} = {_sql_literal(v.value)}" for k, v in statement.options.items()) + ")"
    return f"CREATE FUNCTION {statement.name} AS MODEL '{target}'{options}"


def _sql_literal(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    return "'" + str(value).replace("'", "''") + "'"


def _copy_udf_files(session, path: str) -> None:
    """Python UDFs: their modules go to ``udfs/`` in the test (the runner loads that)."""
    files = set()
    for entry in session.functions.values():
        if entry.kind == "python" and entry.origin:
            file_path = entry.origin.rsplit(":", 1)[0]
            if os.path.isfile(file_path):
                files.add(file_path)
    if files:
        os.makedirs(os.path.join(path, "udfs"), exist_ok=True)
        for file_path in sorted(files):
            shutil.copyfile(file_path, os.path.join(path, "udfs", os.path.basename(file_path)))
