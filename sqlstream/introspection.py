"""What SHOW, DESCRIBE and EXPLAIN answer: rows about a catalog and a running pipeline,
and the text of a plan."""

from __future__ import annotations

import sys
from datetime import datetime, timezone
from typing import Any, Callable, Mapping, Protocol

import pyarrow as pa
from sqlglot import exp

from sqlstream.catalog import FunctionEntry, SinkEntry, SourceEntry, ViewEntry
from sqlstream.connectors import SINK_CONNECTORS, SOURCE_CONNECTORS
from sqlstream.connectors.dead_letters import DEAD_LETTER_STREAM, DeadLetterOutput
from sqlstream.durations import format_duration_us
from sqlstream.errors import SqlAnalysisError, UnsupportedSqlError, did_you_mean
from sqlstream.hidden import is_real_watermark
from sqlstream.plan.nodes import PlanNode
from sqlstream.runtime.checkpointing import utc_text
from sqlstream.runtime.checkpoints import CheckpointStore
from sqlstream.runtime.driver import Driver
from sqlstream.settings import SETTING_DOCS
from sqlstream.sizes import format_bytes
from sqlstream.sql.statements import CreateSink, CreateView, ExplainStatement, InsertInto, QueryStatement, SourceText
from sqlstream.sql.types import sql_type_name
from sqlstream.udf.model_versions import VersionedModel, loaded_text

__all__ = ["IntrospectedCatalog", "show_rows", "connector_rows", "checkpoint_rows", "describe_rows", "watermark_rows", "metric_rows", "explain_plan", "explain_target",
           "rows_table"]


class IntrospectedCatalog(Protocol):
    """What SHOW reads (a :class:`~sqlstream.session.Session` is one)."""

    sources: Mapping[str, SourceEntry]
    views: Mapping[str, ViewEntry]
    sinks: Mapping[str, SinkEntry]
    functions: Mapping[str, FunctionEntry]
    settings: Mapping[str, Any]

    def watermark_rows(self) -> list[dict]: ...

    def metric_rows(self) -> list[dict]: ...


def show_rows(what: str, catalog: IntrospectedCatalog, location=None, name: str | None = None) -> list[dict]:
    """The rows of ``SHOW <what> [name]`` (``SHOW MODEL f``: the row of model ``f``)."""
    shows: dict[str, Callable[[], list[dict]]] = {
        "SOURCES": lambda: [
            {"name": e.name, "connector": e.connector.describe(), "watermark": _watermark_text(e)}
            for e in catalog.sources.values() if e.kind == "SOURCE"
        ],
        "TABLES": lambda: [
            {"name": e.name, "connector": e.connector.describe(),
             "columns": ", ".join(f"{f.name} {sql_type_name(f.type)}" for f in e.schema)}
            for e in catalog.sources.values() if e.kind == "TABLE"
        ],
        "VIEWS": lambda: [{"name": v.name, "query": v.statement.text} for v in catalog.views.values()],
        "SINKS": lambda: [
            {"name": s.name, "connector": s.connector.describe(), "query": s.query_text} for s in catalog.sinks.values()
        ],
        "FUNCTIONS": lambda: [
            {"name": f.name, "kind": f.kind, "signature": f.signature, "origin": f.origin, **_version_columns(f)}
            for f in sorted(catalog.functions.values(), key=lambda f: f.name)
        ],
        "MODELS": lambda: [
            f.impl.status() for f in sorted(catalog.functions.values(), key=lambda f: f.name)
            if isinstance(f.impl, VersionedModel)
        ],
        "MODEL": lambda: _model_row(catalog, name, location),
        "CONNECTORS": connector_rows,
        "CHECKPOINTS": lambda: checkpoint_rows(catalog.settings["checkpoint_dir"], location),
        "WATERMARKS": catalog.watermark_rows,
        "METRICS": catalog.metric_rows,
        "SETTINGS": lambda: [{"key": k, "value": str(v), "about": SETTING_DOCS[k]} for k, v in catalog.settings.items()],
    }
    shows["ALL"] = shows["SETTINGS"]
    if what in ("QUERIES", "WORKERS"):
        raise SqlAnalysisError(f"SHOW {what} is answered by the REPL", location=location,
                               hint="sqlstream repl" + (" (or sqlstream group FILE --group NAME --checkpoint ...)"
                                                        if what == "WORKERS" else ""))
    if what not in shows:
        raise SqlAnalysisError(
            f"cannot SHOW {what}",
            location=location,
            hint="SHOW SOURCES | SINKS | VIEWS | TABLES | FUNCTIONS | MODELS | MODEL f | CONNECTORS | CHECKPOINTS | WATERMARKS | METRICS "
                 "| SETTINGS",
        )
    return shows[what]()


def _model_row(catalog: IntrospectedCatalog, name: str | None, location) -> list[dict]:
    entry = catalog.functions.get(name) if name is not None else None
    if entry is None or not isinstance(entry.impl, VersionedModel):
        models = [f.name for f in catalog.functions.values() if isinstance(f.impl, VersionedModel)]
        raise SqlAnalysisError(
            f"SHOW MODEL: '{name}' is not a model function" if name else "SHOW MODEL needs a model function's name",
            location=location, hint=did_you_mean(name or "", models) or "SHOW MODELS lists them",
        )
    return [entry.impl.status()]


def _version_columns(entry: FunctionEntry) -> dict:
    """SHOW FUNCTIONS' version columns: the model version serving and when it loaded."""
    if isinstance(entry.impl, VersionedModel):  # a reload may have changed an unused model's signature
        return {"signature": entry.impl.signature(), "version": entry.impl.current.label,
                "loaded": loaded_text(entry.impl.current)}
    return {"version": "", "loaded": ""}


def checkpoint_rows(directory: str | None, location=None) -> list[dict]:
    """SHOW CHECKPOINTS / ``sqlstream checkpoints DIR``: the epochs in ``directory``."""
    if directory is None:
        raise SqlAnalysisError("SHOW CHECKPOINTS: no checkpoint_dir is set", location=location,
                               hint="SET checkpoint_dir = 'dir' (or run with --checkpoint DIR)")
    return [
        {"epoch": e.epoch,
         "taken": utc_text(e.created_at, "milliseconds"),
         "committed": e.committed, "state_rows": e.state_rows, "state_size": format_bytes(e.state_bytes),
         "duration_ms": round(e.duration_ms, 1)}
        for e in CheckpointStore(directory).list()
    ]


def connector_rows() -> list[dict]:
    """SHOW CONNECTORS: every connector, built-in or plugin (plugins load here), with
    its kind (``source``, ``sink`` or ``source, sink``), origin (``built-in`` or the
    plugin's ``package==version``) and the first line of its class docstring."""
    rows = []
    sources, sinks = set(SOURCE_CONNECTORS), set(SINK_CONNECTORS)
    for name in sorted(sources | sinks):
        registries = [r for r, names in ((SOURCE_CONNECTORS, sources), (SINK_CONNECTORS, sinks)) if name in names]
        rows.append({
            "name": name,
            "kind": ", ".join(r.kind for r in registries),
            "origin": registries[0].origin(name),
            "description": _description([r[name] for r in registries]),
        })
    return rows


def _description(classes: list[type]) -> str:
    """The first line of the class docstring, else of its package's (a connector in a
    package of its own, as ``file``), else of its module's."""
    docs = [cls.__doc__ for cls in classes]
    for cls in classes:
        package = cls.__module__.rpartition(".")[0]
        if package not in ("", "sqlstream.connectors"):
            docs.append(getattr(sys.modules.get(package), "__doc__", None))
        docs.append(getattr(sys.modules.get(cls.__module__), "__doc__", None))
    for doc in docs:
        lines = [line.strip() for line in (doc or "").strip().splitlines()]
        if lines and lines[0]:
            first = lines[0]
            if first.startswith("``connector = ") and "``: " in first:
                first = first.split("``: ", 1)[1]  # the built-ins' "``connector = 'x'``: what it does"
            return first[:1].upper() + first[1:]
    return ""


def explain_target(st: ExplainStatement) -> tuple[str, exp.Expr, SourceText]:
    """What ``EXPLAIN`` explains: a title, the query and where its text came from."""
    inner = st.statement
    if isinstance(inner, QueryStatement):
        return "query", inner.query, inner.source
    if isinstance(inner, CreateSink) and inner.query is not None:
        return f"sink {inner.name}", inner.query, inner.source
    if isinstance(inner, InsertInto):
        return f"sink {inner.sink}", inner.query, inner.source
    if isinstance(inner, CreateView):
        return f"view {inner.name}", inner.query, inner.source
    raise UnsupportedSqlError("EXPLAIN takes a query, CREATE SINK ... AS, INSERT INTO or CREATE VIEW", location=st.location)


def describe_rows(schema: pa.Schema) -> list[dict]:
    """The rows of ``DESCRIBE``: one per column."""
    return [{"column": f.name, "type": sql_type_name(f.type), "nullable": f.nullable} for f in schema]


def watermark_rows(sources: Mapping[str, SourceEntry], driver: Driver | None, dead_letters: DeadLetterOutput | None,
                   now_us: int, *, only_driver: bool) -> list[dict]:
    """SHOW WATERMARKS: each event-time source (``only_driver``: only those ``driver`` reads)."""
    rows = []
    stages = {s.name: s for s in (driver.sources if driver else [])}
    for entry in sources.values():
        if entry.rowtime is None or (only_driver and entry.name not in stages):
            continue
        if entry.name == DEAD_LETTER_STREAM and entry.name not in stages:
            continue  # the dead-letter stream, listed only while a query reads it
        stage = stages.get(entry.name)
        wm = stage.watermark if stage else None
        tracker = stage.tracker if stage else None
        valid = is_real_watermark(wm)
        rows.append(
            {
                "source": entry.name,
                "watermark": datetime.fromtimestamp(wm / 1e6, tz=timezone.utc).replace(tzinfo=None).isoformat() if valid else None,
                "lag_s": round((now_us - wm) / 1e6, 3) if valid else None,
                "idle": bool(tracker.idle) if tracker else False,
                "late": dead_letters.total(entry.name, "late") if dead_letters else 0,
                "future": dead_letters.total(entry.name, "future") if dead_letters else 0,
            }
        )
    return rows


def metric_rows(driver: Driver | None) -> list[dict]:
    """SHOW METRICS: rows in/out, dead letters and state of ``driver``; each source's
    ``SourceReader.status()`` counters (``source_status``, ``orders.requests``) and
    each refreshed TABLE's (``table``).

    State: ``rows`` and ``bytes`` (estimated) of the whole pipeline, then
    ``<operator> rows`` / ``<operator> bytes`` of each stateful operator."""
    rows = []
    if driver is None:
        return rows
    dead_letters = driver.dead_letters
    for stage in driver.sources:
        rows.append({"kind": "source", "name": stage.name, "rows": stage.metrics.rows_in,
                     "dead_letters": dead_letters.total(stage.name) if dead_letters else 0})
        rows += _counter_rows("source_status", stage.name, stage.reader.status())
    for table in getattr(driver, "tables", ()):
        rows += _counter_rows("table", table.name, table.status())
    for sink in driver.sinks:
        rows.append({"kind": "sink", "name": sink.sink_name, "rows": sink.rows_out, "dead_letters": 0})
    if dead_letters:
        for reason, n in sorted(dead_letters.by_reason().items()):
            rows.append({"kind": "dead_letter", "name": reason, "rows": n, "dead_letters": n})
    sizes = driver.state.sizes()
    rows.append({"kind": "state", "name": "rows", "rows": sum(s.rows for _, s in sizes), "dead_letters": 0})
    rows.append({"kind": "state", "name": "bytes", "rows": sum(s.bytes for _, s in sizes), "dead_letters": 0})
    for holder, size in sizes:
        rows.append({"kind": "state", "name": f"{holder.label} rows", "rows": size.rows, "dead_letters": 0})
        rows.append({"kind": "state", "name": f"{holder.label} bytes", "rows": size.bytes, "dead_letters": 0})
    if driver.checkpointer is not None:
        stats = driver.checkpointer.stats
        for name, value in (("taken", stats.taken), ("last epoch", stats.last_epoch),
                            ("last state rows", stats.last_state_rows), ("last state bytes", stats.last_state_bytes),
                            ("last duration ms", round(stats.last_duration_ms))):
            rows.append({"kind": "checkpoint", "name": name, "rows": value, "dead_letters": 0})
    return rows


def _counter_rows(kind: str, owner: str, status: dict) -> list[dict]:
    """A reader's (or TABLE's) ``status()`` counters as rows ``owner.counter``; values
    that are not whole numbers (URLs, seconds, flags) are left out of the table."""
    return [{"kind": kind, "name": f"{owner}.{key}", "rows": value, "dead_letters": 0}
            for key, value in status.items() if isinstance(value, int) and not isinstance(value, bool)]


def explain_plan(title: str, plan: PlanNode) -> str:
    lines = [f"== {title} =="] + plan.explain()
    return "\n".join(lines)


def rows_table(rows: list[dict]) -> pa.Table:
    if not rows:
        return pa.table({})
    return pa.Table.from_pylist(rows)


def _watermark_text(entry: SourceEntry) -> str:
    if entry.rowtime is None:
        return ""
    return f"{entry.rowtime} - {format_duration_us(entry.delay_us)}"
