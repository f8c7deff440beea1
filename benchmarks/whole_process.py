"""Whole-process timing, as a user experiences it: ``sqlstream run p.sql`` reading Parquet
and writing Parquet, against a baseline that is also a whole process (DuckDB reading the
same file and writing the same result with ``COPY ... TO``).

Each side is timed twice: on the real input and on a 10-row input of the same schema;
the difference is the work, the 10-row time is start-up (imports, planning, opening
files), which this subtracts. Both sides get the best of ``repeat`` runs, alternated so
that a burst of background load hits both.

Every process's peak resident memory (its process tree's, read from ``/proc`` every
0.1 s: :class:`TreePeak`) and CPU time (user + system, all threads) are recorded too: the report gives the largest peak RSS
over the runs on the real input, and the net CPU seconds (best full run minus best
10-row run), which a busy machine distorts much less than wall time.

``--base-tree PATH`` (a checkout of another commit, e.g. ``git archive HEAD | tar -x -C
/tmp/base``) adds a third side: the same ``sqlstream run`` with ``PYTHONPATH`` at that
tree, so a change is measured against the code before it in the same run.

Used by ``stateless.py --whole-process`` and ``windowed_agg.py --whole-process``.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq

__all__ = ["Measured", "compare", "report", "write_tiny"]

DUCKDB_THREADS = min(os.cpu_count() or 1, 2)
SQLSTREAM = [sys.executable, "-m", "sqlstream.cli.main"]
DUCKDB_SCRIPT = """
import os, sys, duckdb
threads, source, query, out = sys.argv[1:]
con = duckdb.connect()
con.execute(f"SET threads TO {threads}")
if os.path.isdir(source):  # a folder of Parquet files: a view per file, named by its stem
    for name in sorted(os.listdir(source)):
        con.execute(f"CREATE VIEW {name[:-8]} AS SELECT * FROM read_parquet('{source}/{name}')")
else:
    con.execute(f"CREATE VIEW data AS SELECT * FROM read_parquet('{source}')")
con.execute(f"COPY ({query}) TO '{out}' (FORMAT parquet)")
"""


@dataclass(frozen=True)
class Measured:
    """One side's best wall times (seconds) on the real and the 10-row input, and the
    largest peak RSS (bytes) of its runs on the real input."""

    full_s: float
    startup_s: float
    rows_out: int
    peak_rss: int
    cpu_s: float  # CPU seconds of the work: best full run minus best 10-row run
    median_net_s: float = 0.0  # median full run minus median 10-row run


    @property
    def net_s(self) -> float:
        return max(self.full_s - self.startup_s, 1e-9)


def write_tiny(source: Path, tiny: Path) -> None:
    """The first 10 rows of ``source`` (Parquet), same schema: the start-up input."""
    table = pq.ParquetFile(source).read_row_group(0).slice(0, 10)
    pq.write_table(table, tiny)


def _wall(command: list[str], cwd: Path, env: dict[str, str] | None = None) -> tuple[float, int, float]:
    """Wall time (s), peak RSS (bytes, :class:`TreePeak`) and CPU time (s) of one process."""
    with tempfile.TemporaryFile("w+") as err:
        started = time.perf_counter()
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=err, text=True)
        peak = TreePeak(process.pid)
        while True:
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                break
            peak.poll()
            time.sleep(POLL_S)
        elapsed = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        if process.returncode != 0:
            err.seek(0)
            raise SystemExit(f"{' '.join(command[:4])} ... failed ({process.returncode}):\n{err.read()[-2000:]}")
    return elapsed, peak.peak, usage.ru_utime + usage.ru_stime


POLL_S = 0.1  # how often a running process's memory is read


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                ppid = int(f.read().rsplit(b")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        tree.setdefault(ppid, []).append(int(entry.name))
    return tree


def _memory(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of ``pid`` in bytes; zeros once it is gone."""
    rss = hwm = 0
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmRSS:"):
                    rss = int(line.split()[1]) * 1024
                elif line.startswith(b"VmHWM:"):
                    hwm = int(line.split()[1]) * 1024
    except (OSError, IndexError, ValueError):
        pass
    return rss, hwm


class TreePeak:
    """The peak memory of a process tree, polled: the largest sum of its processes' RSS
    at one moment, or one process's own high-water mark where that is larger (it catches
    a peak between two polls).

    Not ``ru_maxrss`` from ``wait4``: Linux carries the high-water mark of the memory a
    child had before ``exec`` (the parent's, with ``vfork``) into it, so a harness holding
    the generated tables would be counted in every run."""

    def __init__(self, root: int) -> None:
        self.root = root
        self.peak = 0

    def poll(self) -> None:
        tree, todo, total = _children(), [self.root], 0
        while todo:
            pid = todo.pop()
            todo.extend(tree.get(pid, ()))
            rss, hwm = _memory(pid)
            total += rss
            self.peak = max(self.peak, hwm)
        self.peak = max(self.peak, total)


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


def _tree_env(tree: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": tree}


def compare(work: Path, source_sql: str, ours: str, theirs: str, source: Path, tiny: Path,
            repeat: int, base_tree: str | None = None) -> dict[str, Measured]:
    """sqlstream and DuckDB (and sqlstream of ``base_tree``), each on ``source`` and on
    ``tiny``, best of ``repeat``, by side name (``sqlstream``, ``duckdb``, ``base``).

    ``source_sql`` is the CREATE SOURCE statement with ``{path}`` for the Parquet file;
    ``theirs`` reads the view ``data``, or, where ``source`` is a folder of Parquet
    files, a view per file named by its stem."""
    sides = {
        "sqlstream": (lambda path, out: _sqlstream_command(work, source_sql, ours, path, out), None),
        "duckdb": (lambda path, out: _duckdb_command(theirs, path, out), None),
    }
    if base_tree is not None:
        sides["base"] = (sides["sqlstream"][0], _tree_env(base_tree))
    best: dict[tuple[str, str], float] = {}
    walls: dict[tuple[str, str], list[float]] = {}
    cpu: dict[tuple[str, str], float] = {}
    peak: dict[str, int] = {}
    rows: dict[str, int] = {}
    for _ in range(repeat):
        for side, (command, env) in sides.items():
            for size, path in (("full", source), ("tiny", tiny)):
                out = work / f"{side}-{size}.parquet"
                wall, rss, seconds = _wall(command(path, out), work, env)
                best[side, size] = min(best.get((side, size), wall), wall)
                walls.setdefault((side, size), []).append(wall)
                cpu[side, size] = min(cpu.get((side, size), seconds), seconds)
                if size == "full":
                    rows[side] = _rows(out)
                    peak[side] = max(peak.get(side, 0), rss)
    return {s: Measured(best[s, "full"], best[s, "tiny"], rows[s], peak[s], cpu[s, "full"] - cpu[s, "tiny"],
                        statistics.median(walls[s, "full"]) - statistics.median(walls[s, "tiny"]))
            for s in sides}


def report(name: str, events: int, measured: dict[str, Measured]) -> str:
    """A line per side: net time, events/s, start-up, peak RSS, and the time ratio to
    DuckDB (of wall and of CPU time); then whether the outputs agree in size."""
    duckdb = measured["duckdb"]
    lines = [f"{name} (load average {' '.join(f'{x:.2f}' for x in os.getloadavg())})"]
    for side, m in measured.items():
        ratio = "" if side == "duckdb" else (f"   time ratio {m.net_s / duckdb.net_s:5.2f}x"
                                             f" (median {m.median_net_s / max(duckdb.median_net_s, 1e-9):5.2f}x)"
                                             f"   CPU ratio {m.cpu_s / max(duckdb.cpu_s, 1e-9):5.2f}x")
        lines.append(
            f"  {side:9s} {m.net_s:6.2f}s net (median {m.median_net_s:6.2f}s; {events / m.net_s / 1e6:5.2f} M events/s, start-up "
            f"{m.startup_s:.2f}s, CPU {m.cpu_s:5.2f}s net, peak RSS {m.peak_rss / 2**30:.2f} GB){ratio}"
        )
    counts = {side: m.rows_out for side, m in measured.items()}
    same = len(set(counts.values())) == 1
    lines.append(f"  {duckdb.rows_out:,} rows out: " + ("ok" if same else f"MISMATCH {counts}"))
    return "\n".join(lines)
