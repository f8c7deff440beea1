"""``sqlstream test [DIR]``: runs the pipeline tests under DIR (see
:mod:`sqlstream.pipeline_tests`) and reports one line per test, a diff per failure and
a summary line, as pytest does."""

from __future__ import annotations

import os
import sys
import time

from sqlstream.paths import AllowedPaths
from sqlstream.pipeline_tests import CaseResult, discover_cases, run_case
from sqlstream.pipeline_tests.cases import shown_path
from sqlstream.udf.discovery import loaded_text

__all__ = ["run_pipeline_tests", "cmd_test"]


def _rule(text: str, char: str = "=", width: int = 78) -> str:
    text = f" {text} " if text else ""
    side = max(3, (width - len(text)) // 2)
    return f"{char * side}{text}{char * side}"


def run_pipeline_tests(directory: str, udf_dirs: list[str] | None, verbose: bool = False, update: bool = False,
                       out=None, *, discover_udfs: bool = True, allow_paths: list[str] | None = None) -> int:
    """``sqlstream test [DIR]``: one line per test, a diff per failure, exit 1 on any failure.
    Each UDF file loaded is listed once on stderr."""
    out = out or sys.stdout
    if not os.path.exists(directory):
        print(f"error: {directory}: no such file or directory", file=sys.stderr)
        return 2
    for folder in allow_paths or []:
        if not os.path.isdir(folder):
            print(f"error: --allow-paths {folder}: no such directory", file=sys.stderr)
            return 2
    allowed = AllowedPaths.parse(allow_paths, os.getcwd()) if allow_paths else None
    listed: set[str] = set()

    def list_udf_file(path: str, names: list[str]) -> None:
        if path not in listed:
            listed.add(path)
            print(loaded_text(path, names), file=sys.stderr, flush=True)

    cases = discover_cases(directory)
    if not cases:
        print(f"error: no pipeline tests under {directory} (folders with pipeline.sql or test.toml, or *.toml files)",
              file=sys.stderr)
        return 2
    started = time.monotonic()
    failures: list[tuple[str, CaseResult]] = []
    width = max(len(shown_path(c)) for c in cases)
    for number, case in enumerate(cases, 1):
        result = run_case(case, udf_dirs, update=update, discover_udfs=discover_udfs, allowed_paths=allowed,
                          on_udf_file=list_udf_file)
        label = shown_path(case)
        status = ("UPDATED" if update else "PASSED") if result.passed else "FAILED"
        percent = f"[{100 * number // len(cases):3d}%]"
        print(f"{label.ljust(width)} {status:<7} {percent}", file=out, flush=True)
        if not result.passed:
            failures.append((label, result))
        elif verbose:
            for sink, rows in result.outputs.items():
                print(f"  {sink}: {len(rows)} rows", file=out)
    if failures:
        print(file=out)
        print(_rule("FAILURES"), file=out)
        for label, result in failures:
            print(_rule(label, "_"), file=out)
            for message in result.messages:
                print(message, file=out)
            print(file=out)
    passed = len(cases) - len(failures)
    elapsed = time.monotonic() - started
    parts = ([f"{len(failures)} failed"] if failures else []) + [f"{passed} {'updated' if update else 'passed'}"]
    print(_rule(f"{', '.join(parts)} in {elapsed:.2f}s"), file=out)
    return 1 if failures else 0


def cmd_test(args) -> int:
    """``sqlstream test``."""
    return run_pipeline_tests(
        args.dir, args.udfs, verbose=args.verbose, update=args.update, discover_udfs=not args.no_udfs,
        allow_paths=args.allow_paths,
    )
