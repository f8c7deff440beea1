"""``sqlstream`` command line: run, check, explain, repl, test.

Exit codes: 0 finished, 1 runtime failure, 2 invalid input (SQL, options, files),
130 / 143 stopped by SIGINT / SIGTERM: gracefully (drained, sinks closed; the summary
says "stopped by SIGTERM"), before the pipeline was running, or by a second signal
during the drain.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import signal
import sys
import traceback
from typing import TYPE_CHECKING

from sqlstream import __version__
from sqlstream.errors import SqlStreamError

if TYPE_CHECKING:
    from sqlstream.runtime.driver import RunSummary
    from sqlstream.session import Session

# The commands import what they use when they run: ``--help`` and argument errors do not
# load pyarrow, DataFusion, sqlglot or rich (tests/integration/test_startup.py checks it).

__all__ = ["main", "build_parser", "Interrupted"]

_DEFAULT_URL = "nats://127.0.0.1:4222"


class Interrupted(BaseException):
    """A signal that stops ``sqlstream run`` at once, without draining: one that arrives
    before the run loop (start-up, planning, opening sources, listing files), or a
    second one while the first drains. A BaseException, so nothing on the way catches it."""

    def __init__(self, signum: int, during: str):
        self.signal_name = signal.Signals(signum).name
        self.exit_code = 128 + signum  # 130 SIGINT, 143 SIGTERM, as a shell reports a killed process
        super().__init__(f"stopped by {self.signal_name} {during}")


def _load(args) -> "Session":
    from sqlstream.cli.session_setup import make_session, read_sql_file

    session = make_session(args.file, args.udfs, args.set, discover_udfs=not args.no_udfs, allow_paths=args.allow_paths)
    text = read_sql_file(args.file)
    session.execute(text, path=args.file, base_dir=os.path.dirname(os.path.abspath(args.file)))
    return session


def cmd_run(args) -> int:
    from sqlstream.cli.progress import Progress
    from sqlstream.cli.render import install_renderer

    loaded = []  # the session, once the file is loaded
    draining = []  # signals the run loop took

    def on_signal(signum, frame):
        """In the run loop the first signal drains gracefully; before it (loading the file,
        planning, opening sources, listing files) and for a second signal, stop at once."""
        if loaded and loaded[0].stop(signal.Signals(signum).name):
            draining.append(signum)
        elif draining:
            raise Interrupted(signum, "again while draining (sinks not closed)")
        else:
            raise Interrupted(signum, "while starting (before the pipeline ran)")

    if args.workers is not None:  # a partitioned pipeline's group on this machine (sqlstream.cli.workers)
        from sqlstream.cli.workers import run_group

        if args.workers < 1:
            raise SqlStreamError(f"--workers {args.workers}: must be at least 1")
        return run_group(args)
    from sqlstream.runtime.checkpoint_mirror import is_bucket_url

    if is_bucket_url(args.checkpoint):
        raise SqlStreamError(f"--checkpoint {args.checkpoint}: checkpoints in a NATS object store are for "
                             "groups of workers", hint="use a checkpoint directory, or --workers N")
    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    progress = None
    try:
        flags = [f"checkpoint_dir={args.checkpoint}"] if args.checkpoint else []
        flags += [f"checkpoint_interval={args.checkpoint_interval}"] if args.checkpoint_interval else []
        flags += [f"http={args.http}"] if args.http else []
        args.set += flags  # before the file (CREATE SINK checks its inputs knowing of checkpoints) ...
        session = _load(args)
        for key, value in (flag.split("=", 1) for flag in flags):  # ... and after: the flags win over SET
            session.apply_setting(key, value)
        loaded.append(session)
        if session.partition_keys():
            raise SqlStreamError(
                f"{args.file}: a partitioned source (partitions = P) runs as a group of workers",
                hint="sqlstream run FILE --workers N --checkpoint DIR (N = 1 is fine), or sqlstream worker FILE --group NAME")
        sinks = session.pending_sinks()
        if not sinks:  # invalid input (exit 2), not a failure while running
            raise SqlStreamError(
                f"{args.file}: nothing to run", hint="add CREATE SINK ... AS SELECT, INSERT INTO, or a SELECT"
            )
        # the progress line stays at the bottom of the terminal, also under rows printed there; not
        # under an updating result (a table redrawn in place), with --quiet or --log-format json
        redrawn = sys.stdout.isatty() and any(s.implicit and s.plan.updating for s in sinks)
        shown = sys.stderr.isatty() and not redrawn and not args.quiet and args.log_format == "text"
        progress = Progress(sys.stderr) if shown else None
        install_renderer(session, progress.clear if progress else None)
        warn = progress.note if progress else None
        if args.log_format == "json":
            warn = lambda text: _log_json({"level": "warning", "message": text})  # noqa: E731
        summary = session.run(progress=progress.update if progress else None, warn=warn,
                              from_scratch=args.from_scratch,
                              pipeline=os.path.splitext(os.path.basename(args.file))[0])
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if progress:
            progress.clear()
    code = 128 + draining[0] if draining else 0  # 130 SIGINT, 143 SIGTERM: stopped, not finished
    if args.log_format == "json":
        if not args.quiet:
            _log_json(_summary_event(summary, code))
    elif not args.quiet:
        print(f"sqlstream: {summary.line()}", file=sys.stderr)
        for line in summary.target_lines():
            print(f"sqlstream: {line}", file=sys.stderr)
    return code


def _log_json(event: dict) -> None:
    """One JSON object per line on stderr (``--log-format json``)."""
    print(json.dumps(event, default=str), file=sys.stderr, flush=True)


def _summary_event(summary: "RunSummary", code: int) -> dict:
    """The run summary as one JSON log event."""
    return {
        "level": "info", "event": "summary", "status": "stopped" if summary.stopped_by else "finished",
        "stopped_by": summary.stopped_by, "exit_code": code, "elapsed_s": round(summary.elapsed_s, 3),
        "sources": {name: {"rows_in": m["rows_in"], "records_in": m["records_in"], "problems": m.get("problems") or []}
                    for name, m in summary.sources.items()},
        "sinks": {name: {"rows_out": rows, "path": summary.targets.get(name)} for name, rows in summary.sinks.items()},
        "dead_letters": dict(sorted(summary.dead_letters.items())), "dead_letter_path":
            summary.dead_letter_path if summary.dead_letters else None,
        "skipped": dict(sorted(summary.skipped.items())), "open_state_rows": summary.open_state_rows,
        "open_state": ("kept in the checkpoint" if summary.checkpoints is not None else "not emitted")
        if summary.open_state_rows else None,
        "peak_state": {"rows": summary.peak_state.rows, "bytes": summary.peak_state.bytes},
        "checkpoints": None if summary.checkpoints is None else {
            "taken": summary.checkpoints.taken, "last_epoch": summary.checkpoints.last_epoch,
            "resumed_from": summary.checkpoints.resumed_from},
    }


def cmd_checkpoints(args) -> int:
    from rich.console import Console

    from sqlstream.cli.render import render_table
    from sqlstream.introspection import checkpoint_rows, rows_table

    if not os.path.isdir(args.dir):
        raise SqlStreamError(f"{args.dir}: no such checkpoint directory")
    rows = checkpoint_rows(os.path.abspath(args.dir))
    if not rows:
        print(f"{args.dir}: no checkpoints")
        return 0
    console = Console() if sys.stdout.isatty() else None
    render_table(rows_table(rows), "table" if console else "csv", sys.stdout, console)
    return 0


def cmd_check(args) -> int:
    session = _load(args)
    sinks = session.pending_sinks()
    sources = [s for s in session.sources.values() if s.statement is not None]
    if session.settings["checkpoint_dir"] is not None:  # say now what checkpoints cannot cover
        read = set().union(*(sink.plan.sources() for sink in sinks))
        for source in sources:
            gap = source.connector.replay_gap() if source.name in read else None
            if gap:
                print(f"sqlstream: warning: {gap}", file=sys.stderr)
    print(
        f"{args.file}: ok ({len(sources)} source(s)/table(s), {len(session.views)} view(s), "
        f"{len(sinks)} query(ies), {len(session.functions)} function(s))"
    )
    return 0


def cmd_explain(args) -> int:
    from sqlstream.cli.render import install_renderer
    from sqlstream.introspection import explain_plan

    session = _load(args)
    if args.analyze:
        if not session.pending_sinks():
            raise SqlStreamError(f"{args.file}: nothing to run", hint="add CREATE SINK ... AS SELECT, INSERT INTO, or a SELECT")
        install_renderer(session)
        print(session.explain_analyze())
        return 0
    parts = []
    for sink in session.pending_sinks():
        parts.append(explain_plan(f"sink {sink.name} [{sink.connector.describe()}]", sink.plan))
    print("\n\n".join(parts) if parts else "(no queries)")
    return 0


def _later(module: str, function: str):
    """A subcommand whose module loads when it runs, so that ``sqlstream run`` does not
    pay for the REPL's prompt_toolkit or produce's NATS client at start-up."""

    def handler(args) -> int:
        return getattr(importlib.import_module(module), function)(args)

    return handler


def _add_produce(sub) -> None:
    p = sub.add_parser("produce", help="publish generated rows to a NATS subject at a given rate")
    p.add_argument("subject", help="subject to publish to; may name columns: 'sensors.{sensor_id}'")
    p.add_argument("--columns", required=True, metavar="'NAME TYPE, ...'",
                   help="the rows' columns, as in CREATE SOURCE (e.g. 'id BIGINT, ts TIMESTAMP, v DOUBLE')")
    p.add_argument("--url", default=_DEFAULT_URL, help=f"NATS server (default {_DEFAULT_URL})")
    p.add_argument("--rate", type=int, default=100, help="rows per second (0 = as fast as possible; default 100)")
    p.add_argument("--count", type=int, help="stop after this many rows (default: until Ctrl-C)")
    p.add_argument("--stream", help="publish through JetStream into this stream (created if missing)")
    p.add_argument("--format", choices=("json", "arrow"), default="json", help="payload format (default json)")
    p.add_argument("-o", "--option", action="append", default=[], metavar="K=V",
                   help="generator option, e.g. fields.temp.min=15, fields.k.values=a,b,c, seed=7")
    p.set_defaults(handler=_later("sqlstream.cli.produce", "cmd_produce"))


def _group_options(p, required: bool = False) -> None:
    p.add_argument("--group", metavar="NAME", required=required,
                   help="worker group (default for run --workers: the pipeline file's name)")
    p.add_argument("--lease-ttl", metavar="DURATION", default="10s",
                   help="a worker that stops renewing loses its partitions after this long (default 10s)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sqlstream", description="SQL-first stream processing over Arrow micro-batches",
                                     epilog="With no command (or only REPL options), sqlstream opens the REPL.")
    parser.add_argument("--version", action="version", version=f"sqlstream {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    def udfs_and_paths(p):
        p.add_argument("--udfs", action="append", default=[], metavar="DIR", help="also load @udf functions from DIR")
        p.add_argument("--no-udfs", action="store_true",
                       help="do not load udfs/ next to the pipeline or in the working directory (--udfs still loads)")
        p.add_argument("--allow-paths", action="append", default=[], metavar="DIR",
                       help="files read or written must be inside DIR (repeatable; default: anywhere)")

    def common(p):
        p.add_argument("file", help="pipeline .sql file")
        udfs_and_paths(p)
        p.add_argument("--set", action="append", default=[], metavar="K=V", help="setting applied before the file runs")

    p = sub.add_parser("run", help="run a pipeline until its sources end or Ctrl-C")
    common(p)
    p.add_argument("--checkpoint", metavar="DIR",
                   help="take checkpoints in DIR (relative to the pipeline file) and resume from the last one there")
    p.add_argument("--checkpoint-interval", metavar="DURATION", help="how often, e.g. 10s (default 5s)")
    p.add_argument("--from-scratch", action="store_true",
                   help="remove the checkpoint and read the sources from the start")
    p.add_argument("-q", "--quiet", action="store_true",
                   help="no progress line and no summary on stderr (warnings and errors still; the exit code says how it ended)")
    p.add_argument("--log-format", choices=("text", "json"), default="text",
                   help="json: warnings, errors and the summary as one JSON object per line on stderr, no progress line")
    p.add_argument("--http", metavar="HOST:PORT",
                   help="serve /metrics, /live, /ready and a web console while the pipeline runs "
                        "(e.g. 127.0.0.1:9464; a port alone binds 127.0.0.1; read-only, no authentication)")
    _group_options(p)
    p.add_argument("--workers", type=int, metavar="N",
                   help="partitioned source: run N worker processes on this machine (see docs/scale-out.md)")
    p.set_defaults(handler=cmd_run)
    p = sub.add_parser("worker", help="join a group of workers running a pipeline over a partitioned source")
    common(p)
    p.add_argument("--checkpoint", metavar="DIR|URL", required=True,
                   help="checkpoint directory every worker of the group can read (relative to the pipeline file), "
                        "or nats://host:port/BUCKET: an object store bucket (nothing shared but NATS)")
    p.add_argument("--checkpoint-interval", metavar="DURATION", help="how often, e.g. 10s (default 5s)")
    p.add_argument("--from-scratch", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--report", metavar="FILE", help=argparse.SUPPRESS)  # JSON for run --workers' summary
    _group_options(p, required=True)
    p.set_defaults(handler=_later("sqlstream.cli.workers", "cmd_worker"))
    p = sub.add_parser("group", help="a worker group: workers, partition owners, last checkpoints, lag")
    common(p)
    p.add_argument("--group", metavar="NAME", required=True, help="the worker group")
    p.add_argument("--checkpoint", metavar="DIR|URL", required=True,
                   help="the group's checkpoint directory or nats://host:port/BUCKET")
    p.set_defaults(handler=_later("sqlstream.cli.group_status", "cmd_group"))
    p = sub.add_parser("checkpoints", help="list the checkpoints in a checkpoint directory")
    p.add_argument("dir", help="checkpoint directory (--checkpoint of sqlstream run)")
    p.set_defaults(handler=cmd_checkpoints)
    p = sub.add_parser("check", help="parse, resolve and plan a pipeline without running it")
    common(p)
    p.set_defaults(handler=cmd_check)
    p = sub.add_parser("explain", help="show the streaming plan of each query")
    common(p)
    p.add_argument("--analyze", action="store_true",
                   help="run the pipeline to the end of its input (its sinks write as in run) and show rows in/out, "
                        "time and peak state per operator")
    p.set_defaults(handler=cmd_explain)
    p = sub.add_parser("repl", help="interactive SQL against live streams (also: sqlstream with no command)")
    p.add_argument("file", nargs="?", help="load this file first: its DDL runs, its SELECTs wait (see --run)")
    p.add_argument("--run", action="store_true", help="also run the file's SELECTs at start")
    p.add_argument("-e", dest="execute", action="append", default=[], metavar="SQL", help="run SQL and exit")
    p.add_argument("-f", dest="script", metavar="FILE", help="run a SQL file and exit")
    udfs_and_paths(p)
    p.add_argument("--set", action="append", default=[], metavar="K=V")
    p.add_argument("--json", dest="format", action="store_const", const="json", help="results as JSON lines")
    p.add_argument("--csv", dest="format", action="store_const", const="csv", help="results as CSV")
    p.set_defaults(handler=_later("sqlstream.cli.repl", "run_repl"))
    p = sub.add_parser("test", help="run pipeline tests (fixtures in, expected rows out)")
    p.add_argument("dir", nargs="?", default="tests/sql")
    udfs_and_paths(p)
    p.add_argument("-v", "--verbose", action="store_true")
    p.add_argument("--update", action="store_true", help="write expected/<sink>.jsonl from the actual output")
    p.set_defaults(handler=_later("sqlstream.cli.pipeline_test_report", "cmd_test"))
    _add_produce(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else argv
    if not argv or (argv[0].startswith("-") and argv[0] not in ("-h", "--help", "--version")):
        argv = ["repl", *argv]  # bare ``sqlstream`` (or ``sqlstream -e SQL``, ``--json``) is the REPL
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except SqlStreamError as error:
        if getattr(args, "log_format", "text") == "json":
            _log_json({"level": "error", "message": error.render(), "exit_code": error.exit_code})
        else:
            print(error.render(), file=sys.stderr)
        return error.exit_code
    except Interrupted as stop:
        if getattr(args, "log_format", "text") == "json":
            _log_json({"level": "error", "message": str(stop), "exit_code": stop.exit_code})
        else:
            print(f"sqlstream: {stop}", file=sys.stderr)
        return stop.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except Exception as error:  # a traceback in front of a user is a bug: say so plainly
        if os.environ.get("SQLSTREAM_DEBUG"):
            traceback.print_exc()
        print(f"error: internal error: {type(error).__name__}: {error}", file=sys.stderr)
        print("  hint: this is a bug in sqlstream; SQLSTREAM_DEBUG=1 shows the traceback", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
