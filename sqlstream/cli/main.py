"""``sqlstream`` command line: run, check, explain, repl, test.

Exit codes: 0 ok, 1 runtime failure, 2 invalid input (SQL, options, files).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import traceback

from sqlstream.errors import SqlStreamError

__all__ = ["main", "make_session"]


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
):
    """A Session configured as the CLI does for ``path`` (None: working directory).

    ``allow_paths`` (directories, relative to the working directory) confines every file
    path before ``sets`` apply; ``discover_udfs=False`` (``--no-udfs``) loads only
    ``udf_dirs``. Each UDF file loaded is listed on stderr."""
    from sqlstream.session import Session
    from sqlstream.udf.discovery import loaded_text

    base_dir = os.path.dirname(os.path.abspath(path)) if path else os.getcwd()
    if path:
        stem = os.path.splitext(os.path.basename(path))[0]
        dead_letter = os.path.join(base_dir, f"{stem}.dead_letter.jsonl")
    else:
        dead_letter = os.path.join(os.getcwd(), "sqlstream.dead_letter.jsonl")
    session = Session(clock=clock, base_dir=base_dir, dead_letter_path=dead_letter)
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
        session.load_udfs(directory, on_file=lambda file, names: print(loaded_text(file, names), file=sys.stderr))
    return session


def _allow_paths(session, directories: list[str]) -> None:
    """``--allow-paths DIR`` (repeatable): the widest ``allowed_paths`` of the session."""
    from sqlstream.paths import AllowedPaths

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


def _load(args) -> "object":
    session = make_session(args.file, args.udfs, args.set, discover_udfs=not args.no_udfs, allow_paths=args.allow_paths)
    text = read_sql_file(args.file)
    session.execute(text, path=args.file, base_dir=os.path.dirname(os.path.abspath(args.file)))
    return session


def cmd_run(args) -> int:
    from sqlstream.cli.render import Progress, install_renderer

    session = _load(args)
    install_renderer(session)
    sinks = session.pending_sinks()
    if not sinks:  # invalid input (exit 2), not a failure while running
        raise SqlStreamError(
            f"{args.file}: nothing to run", hint="add CREATE SINK ... AS SELECT, INSERT INTO, or a SELECT"
        )
    progress = Progress(sys.stderr) if sys.stderr.isatty() and not any(s.implicit for s in sinks) else None

    def on_signal(signum, frame):
        session.stop()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        summary = session.run(progress=progress.update if progress else None, warn=progress.note if progress else None)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if progress:
            progress.clear()
    print(f"sqlstream: {summary.line()}", file=sys.stderr)
    return 0


def cmd_check(args) -> int:
    session = _load(args)
    sinks = session.pending_sinks()
    sources = [s for s in session.sources.values() if s.statement is not None]
    print(
        f"{args.file}: ok ({len(sources)} source(s)/table(s), {len(session.views)} view(s), "
        f"{len(sinks)} query(ies), {len(session.functions)} function(s))"
    )
    return 0


def cmd_explain(args) -> int:
    from sqlstream.session import explain_plan

    session = _load(args)
    parts = []
    for sink in session.pending_sinks():
        parts.append(explain_plan(f"sink {sink.name} [{sink.connector.describe()}]", sink.plan))
    print("\n\n".join(parts) if parts else "(no queries)")
    return 0


def cmd_repl(args) -> int:
    from sqlstream.cli.repl import run_repl

    return run_repl(args)


def cmd_test(args) -> int:
    from sqlstream.pipeline_tests import run_cli

    return run_cli(
        args.dir, args.udfs, verbose=args.verbose, update=args.update, discover_udfs=not args.no_udfs,
        allow_paths=args.allow_paths,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sqlstream", description="SQL-first stream processing over Arrow micro-batches")
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
    p.set_defaults(handler=cmd_run)
    p = sub.add_parser("check", help="parse, resolve and plan a pipeline without running it")
    common(p)
    p.set_defaults(handler=cmd_check)
    p = sub.add_parser("explain", help="show the streaming plan of each query")
    common(p)
    p.set_defaults(handler=cmd_explain)
    p = sub.add_parser("repl", help="interactive SQL against live streams")
    p.add_argument("file", nargs="?", help="run this file's statements first")
    p.add_argument("-e", dest="execute", action="append", default=[], metavar="SQL", help="run SQL and exit")
    p.add_argument("-f", dest="script", metavar="FILE", help="run a SQL file and exit")
    udfs_and_paths(p)
    p.add_argument("--set", action="append", default=[], metavar="K=V")
    p.add_argument("--json", dest="format", action="store_const", const="json", help="results as JSON lines")
    p.add_argument("--csv", dest="format", action="store_const", const="csv", help="results as CSV")
    p.set_defaults(handler=cmd_repl)
    p = sub.add_parser("test", help="run pipeline tests (fixtures in, expected rows out)")
    p.add_argument("dir", nargs="?", default="tests/sql")
    udfs_and_paths(p)
    p.add_argument("-v", "--verbose", action="store_true")
    p.add_argument("--update", action="store_true", help="write expected/<sink>.jsonl from the actual output")
    p.set_defaults(handler=cmd_test)
    from sqlstream.cli.produce import add_parser as add_produce

    add_produce(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except SqlStreamError as error:
        print(error.render(), file=sys.stderr)
        return error.exit_code
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
