"""Whole-process timing, as a user experiences it: ``sqlstream run p.sql`` reading Parquet
and writing Parquet, against a baseline that is also a whole process (DuckDB reading the
same file and writing the same result with ``COPY ... TO``).

Each side is timed twice: on the real input and on a 10-row input of the same schema;
the difference is the work, the 10-row time is start-up (imports, planning, opening
files), which this subtracts. Both sides get the best of ``repeat`` runs, alternated so
that a burst of background load hits both.

Used by ``stateless.py --whole-process`` and ``windowed_agg.py --whole-process``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq

__all__ = ["Measured", "compare", "report", "write_tiny"]

DUCKDB_THREADS = min(os.cpu_count() or 1, 2)
SQLSTREAM = [sys.executable, "-m", "sqlstream.cli.main"]
DUCKDB_SCRIPT = """
import sys, duckdb
threads, source, query, out = sys.argv[1:]
con = duckdb.connect()
con.execute(f"SET threads TO {threads}")
con.execute(f"CREATE VIEW data AS SELECT * FROM read_parquet('{source}')")
con.execute(f"COPY ({query}) TO '{out}' (FORMAT parquet)")
"""


@dataclass(frozen=True)
class Measured:
    """One side's best wall times (seconds) on the real and the 10-row input."""

    full_s: float
    startup_s: float
    rows_out: int

    @property
    def net_s(self) -> float:
        return max(self.full_s - self.startup_s, 1e-9)


def write_tiny(source: Path, tiny: Path) -> None:
    """The first 10 rows of ``source`` (Parquet), same schema: the start-up input."""
    table = pq.ParquetFile(source).read_row_group(0).slice(0, 10)
    pq.write_table(table, tiny)


def _wall(command: list[str], cwd: Path) -> float:
    started = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command[:4])} ... failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return elapsed


def _rows(path: Path) -> int:
    if path.is_dir():
        return sum(pq.ParquetFile(p).metadata.num_rows for p in path.glob("*.parquet"))
    return pq.ParquetFile(path).metadata.num_rows


def _sqlstream_command(work: Path, source_sql: str, query: str, source: Path, out: Path) -> list[str]:
    pipeline = work / f"{out.stem}.sql"
    pipeline.write_text(
        source_sql.format(path=source)
        + f";\nCREATE SINK out AS {query} WITH (connector = 'file', path = '{out}', format = 'parquet');\n"
    )
    return [*SQLSTREAM, "run", "--quiet", "--no-udfs", str(pipeline)]


def _duckdb_command(query: str, source: Path, out: Path) -> list[str]:
    return [sys.executable, "-c", DUCKDB_SCRIPT, str(DUCKDB_THREADS), str(source), query, str(out)]


def compare(work: Path, source_sql: str, ours: str, theirs: str, source: Path, tiny: Path,
            repeat: int) -> tuple[Measured, Measured]:
    """sqlstream and DuckDB, each on ``source`` and on ``tiny``, best of ``repeat``.

    ``source_sql`` is the CREATE SOURCE statement with ``{path}`` for the Parquet file;
    ``theirs`` reads the view ``data``."""
    sides = {
        "sqlstream": lambda path, out: _sqlstream_command(work, source_sql, ours, path, out),
        "duckdb": lambda path, out: _duckdb_command(theirs, path, out),
    }
    best: dict[tuple[str, str], float] = {}
    rows: dict[str, int] = {}
    for _ in range(repeat):
        for side, command in sides.items():
            for size, path in (("full", source), ("tiny", tiny)):
                out = work / f"{side}-{size}.parquet"
                wall = _wall(command(path, out), work)
                best[side, size] = min(best.get((side, size), wall), wall)
                if size == "full":
                    rows[side] = _rows(out)
    ours_m, theirs_m = (Measured(best[s, "full"], best[s, "tiny"], rows[s]) for s in sides)
    return ours_m, theirs_m


def report(name: str, events: int, ours: Measured, theirs: Measured) -> str:
    """One line: net times, events/s, the time ratio, and whether the outputs agree in size."""
    status = "ok" if ours.rows_out == theirs.rows_out else f"MISMATCH (duckdb {theirs.rows_out:,} rows)"
    return (
        f"{name:9s} sqlstream {ours.net_s:6.2f}s net ({events / ours.net_s / 1e6:5.2f} M events/s, "
        f"start-up {ours.startup_s:.2f}s)   duckdb {theirs.net_s:6.2f}s net "
        f"({events / theirs.net_s / 1e6:5.2f} M events/s, start-up {theirs.startup_s:.2f}s)   "
        f"time ratio {ours.net_s / theirs.net_s:5.2f}x   {ours.rows_out:,} rows {status}"
    )
