"""Nexmark through sqlstream and through Flink SQL, whole processes, same files, same run.

Issue 21's target row: every Nexmark query at 10M events at ≥ 2× Flink SQL's events/s
with a peak RSS ≤ ¼ of Flink's. This script measures both sides as a user runs them:

* the events come from the project's generator (``tests/generators/nexmark.py``), written
  once per ``--events`` to headerless CSV files, one per table (``person``, ``auction``,
  ``bid``), in ``--data`` (cached: a rerun skips generation). Timestamps are cut to
  milliseconds (Flink's rowtime is ``TIMESTAMP(3)``); bids are out of order within the
  watermark delay, so neither engine drops a late row;
* sqlstream: each query is a ``.sql`` pipeline (``CREATE SOURCE`` over the CSV files,
  ``CREATE SINK`` into a CSV file) run as ``sqlstream run``;
* Flink: each query is a generated PyFlink Table API program (the same CSV files as
  ``filesystem`` tables with watermarks, ``CREATE TABLE ... AS SELECT`` into a
  ``filesystem`` CSV sink; streaming mode, parallelism 1, the local mini-cluster) run
  with the Python of a separate venv holding ``apache-flink==2.3.0``, made on first use
  (``--flink-venv``);
* every process is timed whole and its peak memory is the largest sum of the RSS of its
  process tree (``/proc`` polled every 0.1 s: Flink's JVM is a child of the PyFlink
  Python process), or one process's ``VmHWM`` where larger (see ``TreePeak``: not
  ``ru_maxrss``, which counts the harness's own memory); start-up is subtracted by
  running the same job on a 10-row input (best of ``--repeat`` for each, alternated);
* the two outputs are compared as multisets of rows (numbers rounded to millionths,
  timestamps spelled one way, empty and NULL alike) before a ratio is printed; a
  mismatch is printed as such.

Queries whose result is an updating changelog in Flink (q4, q9, q15–q19: unwindowed
aggregations, Top-N) are not here: Flink's filesystem sink takes inserts only. q13 and
q14 need a side file and a UDF. Not part of the test suite (it needs Java and Flink).

    python benchmarks/nexmark_flink.py --events 10000000 --repeat 2
    python benchmarks/nexmark_flink.py --events 200000 --queries q0,q1,q2,q5
"""

from __future__ import annotations

import argparse
import functools
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the generator is in tests/
from benchmarks import whole_process  # noqa: E402
from benchmarks.whole_process import SQLSTREAM, TreePeak  # noqa: E402
from tests.generators.nexmark import generate  # noqa: E402

FLINK_VERSION = "2.3.0"
CACHE = Path.home() / ".cache" / "sqlstream-bench"
DELAY_MS = 200
INTERVAL_US = 10_000  # event time between two events: 10M events span ~28 hours
# out of order by at most this: cut to milliseconds a time moves back by up to 999 µs more,
# still within the watermark delay, so neither engine sees a late row
MAX_JITTER_US = (DELAY_MS - 1) * 1000
TABLES = ("person", "auction", "bid")
TINY_ROWS = 10

# (name, sqlstream type, Flink type) per column, in file order
COLUMNS = {
    "person": [("id", "BIGINT", "BIGINT"), ("name", "VARCHAR", "STRING"), ("email_address", "VARCHAR", "STRING"),
               ("credit_card", "VARCHAR", "STRING"), ("city", "VARCHAR", "STRING"), ("state", "VARCHAR", "STRING"),
               ("date_time", "TIMESTAMP", "TIMESTAMP(3)"), ("extra", "VARCHAR", "STRING")],
    "auction": [("id", "BIGINT", "BIGINT"), ("item_name", "VARCHAR", "STRING"), ("description", "VARCHAR", "STRING"),
                ("initial_bid", "BIGINT", "BIGINT"), ("reserve", "BIGINT", "BIGINT"),
                ("date_time", "TIMESTAMP", "TIMESTAMP(3)"), ("expires", "TIMESTAMP", "TIMESTAMP(3)"),
                ("seller", "BIGINT", "BIGINT"), ("category", "BIGINT", "BIGINT"), ("extra", "VARCHAR", "STRING")],
    "bid": [("auction", "BIGINT", "BIGINT"), ("bidder", "BIGINT", "BIGINT"), ("price", "BIGINT", "BIGINT"),
            ("channel", "VARCHAR", "STRING"), ("url", "VARCHAR", "STRING"),
            ("date_time", "TIMESTAMP", "TIMESTAMP(3)"), ("extra", "VARCHAR", "STRING")],
}


@dataclass(frozen=True)
class Query:
    """One Nexmark query in each engine's spelling; ``flink`` is None where the text is the same.
    ``differs`` says why the outputs may differ where the engines' semantics do."""

    sqlstream: str
    flink: str | None = None
    differs: str = ""

    @property
    def flink_sql(self) -> str:
        return self.flink or self.sqlstream


def _hop(spelling: str) -> str:
    return {"sqlstream": "HOP(bid, date_time, INTERVAL '2' SECOND, INTERVAL '10' SECOND)",
            "flink": "TABLE(HOP(TABLE bid, DESCRIPTOR(date_time), INTERVAL '2' SECOND, INTERVAL '10' SECOND))"}[spelling]


def _tumble(table: str, spelling: str) -> str:
    return {"sqlstream": f"TUMBLE({table}, date_time, INTERVAL '10' SECOND)",
            "flink": f"TABLE(TUMBLE(TABLE {table}, DESCRIPTOR(date_time), INTERVAL '10' SECOND))"}[spelling]


def _q5(spelling: str) -> str:
    """Hot items, the classic form of tests/differential/test_nexmark_joins.py."""
    hop = _hop(spelling)
    return f"""SELECT AuctionBids.auction, AuctionBids.num, AuctionBids.starttime
FROM (SELECT auction, count(*) AS num, window_start AS starttime, window_end AS endtime
      FROM {hop} GROUP BY auction, window_start, window_end) AS AuctionBids
JOIN (SELECT max(CountBids.num) AS maxn, CountBids.starttime, CountBids.endtime
      FROM (SELECT count(*) AS num, window_start AS starttime, window_end AS endtime
            FROM {hop} GROUP BY auction, window_start, window_end) AS CountBids
      GROUP BY CountBids.starttime, CountBids.endtime) AS MaxBids
ON AuctionBids.starttime = MaxBids.starttime AND AuctionBids.endtime = MaxBids.endtime
   AND AuctionBids.num >= MaxBids.maxn"""


def _q7(spelling: str) -> str:
    return f"""SELECT B.auction, B.price, B.bidder, B.date_time
FROM bid B
JOIN (SELECT MAX(price) AS maxprice, window_end AS date_time
      FROM {_tumble('bid', spelling)} GROUP BY window_start, window_end) B1
ON B.price = B1.maxprice
WHERE B.date_time BETWEEN B1.date_time - INTERVAL '10' SECOND AND B1.date_time"""


def _q8(spelling: str) -> str:
    return f"""SELECT P.id, P.name, P.starttime
FROM (SELECT id, name, window_start AS starttime, window_end AS endtime
      FROM {_tumble('person', spelling)} GROUP BY id, name, window_start, window_end) P
JOIN (SELECT seller, window_start AS starttime, window_end AS endtime
      FROM {_tumble('auction', spelling)} GROUP BY seller, window_start, window_end) A
ON P.id = A.seller AND P.starttime = A.starttime AND P.endtime = A.endtime"""


QUERIES: dict[str, Query] = {
    "q0": Query("SELECT auction, bidder, price, date_time, extra FROM bid"),
    "q1": Query("SELECT auction, bidder, 0.908 * price AS price, date_time FROM bid"),
    "q2": Query("SELECT auction, price FROM bid WHERE auction % 123 = 0",
                "SELECT auction, price FROM bid WHERE MOD(auction, 123) = 0"),
    "q3": Query("""SELECT P.name, P.city, P.state, A.id
FROM auction AS A INNER JOIN person AS P ON A.seller = P.id
WHERE A.category = 10 AND (P.state = 'OR' OR P.state = 'ID' OR P.state = 'CA')"""),
    "q5": Query(_q5("sqlstream"), _q5("flink")),
    "q7": Query(_q7("sqlstream"), _q7("flink")),
    "q8": Query(_q8("sqlstream"), _q8("flink")),
    "q10": Query("""SELECT auction, bidder, price, date_time, extra,
  DATE_FORMAT(date_time, 'yyyy-MM-dd') AS dt, DATE_FORMAT(date_time, 'HH:mm') AS hm FROM bid"""),
    "q11": Query(
        """SELECT bidder, count(*) AS bid_count, window_start AS starttime, window_end AS endtime
FROM SESSION(bid, date_time, INTERVAL '3' SECOND) GROUP BY bidder, window_start, window_end""",
        """SELECT bidder, count(*) AS bid_count, window_start AS starttime, window_end AS endtime
FROM TABLE(SESSION(TABLE bid PARTITION BY bidder, DESCRIPTOR(date_time), INTERVAL '3' SECOND))
GROUP BY bidder, window_start, window_end""",
        "Flink merges two sessions exactly one gap apart (its windows' intersection includes the end); "
        "sqlstream and DuckDB keep them apart"),
    "q12": Query(
        f"""SELECT bidder, count(*) AS bid_count, window_start, window_end
FROM {_tumble('bid', 'sqlstream')} GROUP BY bidder, window_start, window_end""",
        f"""SELECT bidder, count(*) AS bid_count, window_start, window_end
FROM {_tumble('bid', 'flink')} GROUP BY bidder, window_start, window_end"""),
    "q21": Query("""SELECT auction, bidder, price, channel,
  CASE WHEN lower(channel) = 'apple' THEN '0' WHEN lower(channel) = 'google' THEN '1'
       WHEN lower(channel) = 'facebook' THEN '2' WHEN lower(channel) = 'baidu' THEN '3'
       ELSE REGEXP_EXTRACT(url, '(&|^|\\?)channel_id=([^&]*)', 2) END AS channel_id
FROM bid
WHERE REGEXP_EXTRACT(url, '(&|^|\\?)channel_id=([^&]*)', 2) IS NOT NULL
   OR lower(channel) IN ('apple', 'google', 'facebook', 'baidu')"""),
    "q22": Query("""SELECT auction, bidder, price, channel,
  SPLIT_INDEX(url, '/', 3) AS dir1, SPLIT_INDEX(url, '/', 4) AS dir2, SPLIT_INDEX(url, '/', 5) AS dir3
FROM bid"""),
}

FLINK_PROGRAM = """
import sys
from pyflink.table import EnvironmentSettings, TableEnvironment

env = TableEnvironment.create(EnvironmentSettings.in_streaming_mode())
env.get_config().set("parallelism.default", "1")
statements = sys.stdin.read().split(";\\n--\\n")
for statement in statements[:-1]:
    env.execute_sql(statement)
env.execute_sql(statements[-1]).wait()
"""


# ---------------------------------------------------------------- data


def _write_csv(table: pa.Table, path: Path) -> None:
    times = [i for i, f in enumerate(table.schema) if pa.types.is_timestamp(f.type)]
    for i in times:  # Flink's rowtime is TIMESTAMP(3)
        table = table.set_column(i, table.schema[i].name, pc.cast(table.column(i), pa.timestamp("ms"), safe=False))
    pcsv.write_csv(table, path, write_options=pcsv.WriteOptions(include_header=False))


def ensure_data(root: Path, events: int) -> tuple[Path, Path]:
    """The directories of the full and the 10-row CSV files for ``events`` events, made once."""
    full, tiny = root / f"nexmark-{events}", root / f"nexmark-{events}-tiny"
    if (full / "done").exists() and (tiny / "done").exists():
        return full, tiny
    started = time.perf_counter()
    tables = dict(zip(TABLES, generate(events, seed=21, interval_us=INTERVAL_US, max_delay_us=MAX_JITTER_US),
                      strict=True))
    for directory, size in ((full, None), (tiny, TINY_ROWS)):
        directory.mkdir(parents=True, exist_ok=True)
        for name, table in tables.items():
            _write_csv(table if size is None else table.slice(0, size), directory / f"{name}.csv")
        (directory / "done").write_text(f"{events}\n")
    print(f"generated {events:,} events in {time.perf_counter() - started:.1f}s into {full}", flush=True)
    return full, tiny


# ---------------------------------------------------------------- the two engines' jobs


def sqlstream_pipeline(query: Query, data: Path, out: Path) -> str:
    """The ``.sql`` pipeline: a file source per table, a CSV file sink."""
    sources = []
    for name, columns in COLUMNS.items():
        cols = ", ".join(f"{c} {t}" for c, t, _ in columns)
        sources.append(
            f"CREATE SOURCE {name} ({cols},\n  WATERMARK FOR date_time AS date_time - INTERVAL '{DELAY_MS}' MILLISECOND)\n"
            f"  WITH (connector = 'file', path = '{data / (name + '.csv')}', format = 'csv', header = false);"
        )
    return "\n".join(sources) + f"\nCREATE SINK out AS {query.sqlstream}\n" \
        f"  WITH (connector = 'file', path = '{out}', format = 'csv');\n"


def flink_statements(query: Query, data: Path, out: Path) -> str:
    """The Flink SQL the generated program executes, statements split by ``;\\n--\\n``."""
    statements = []
    for name, columns in COLUMNS.items():
        cols = ", ".join(f"`{c}` {t}" for c, _, t in columns)
        statements.append(
            f"CREATE TABLE {name} ({cols},\n  WATERMARK FOR date_time AS date_time - INTERVAL '{DELAY_MS / 1000}' SECOND)\n"
            f"  WITH ('connector' = 'filesystem', 'path' = 'file://{data / (name + '.csv')}', 'format' = 'csv')"
        )
    statements.append(f"CREATE TABLE query_result WITH ('connector' = 'filesystem', 'path' = 'file://{out}', 'format' = 'csv')\n"
                      f"AS {query.flink_sql}")
    return ";\n--\n".join(statements)


def flink_python(venv: Path) -> Path:
    """The Python of a venv holding apache-flink, installed on first use."""
    python = venv / "bin" / "python"
    probe = [str(python), "-c", "import pyflink.version as v; print(v.__version__)"]
    if python.exists() and subprocess.run(probe, capture_output=True, text=True).stdout.strip() == FLINK_VERSION:
        return python
    print(f"installing apache-flink=={FLINK_VERSION} into {venv} (once) ...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", f"apache-flink=={FLINK_VERSION}"], check=True)
    return python


# ---------------------------------------------------------------- whole processes, time and peak RSS


@dataclass(frozen=True)
class Run:
    wall_s: float
    peak_rss: int


def run_process(command: list[str], cwd: Path, log: Path, stdin: str = "", env: dict | None = None) -> Run:
    """Run ``command`` whole; its wall time and the peak RSS of its process tree."""
    with open(log, "w") as out:
        started = time.perf_counter()
        proc = subprocess.Popen(command, cwd=cwd, stdin=subprocess.PIPE, stdout=out, stderr=subprocess.STDOUT, env=env)
        proc.stdin.write(stdin.encode())
        proc.stdin.close()
        peak = TreePeak(proc.pid)
        while True:
            pid, status = os.waitpid(proc.pid, os.WNOHANG)
            if pid:
                break
            peak.poll()
            time.sleep(whole_process.POLL_S)
        wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(command[:4])} ... failed ({proc.returncode}):\n{log.read_text()[-3000:]}")
    return Run(wall, peak.peak)


# ---------------------------------------------------------------- outputs compared


_TIMESTAMP = r"^(\d{4}-\d\d-\d\d)[ T](\d\d:\d\d:\d\d(?:\.\d*[1-9])?)\.?0*$"


def read_output(path: Path, names: list[str] | None) -> pa.Table:
    """A CSV output (a file with a header, or Flink's directory of headerless part files)
    with every column normalized to text that compares across the engines."""
    files = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")) \
        if path.is_dir() else [path]
    if path.is_dir() and not files:  # parts not committed: Flink keeps them hidden
        files = sorted(p for p in path.rglob(".*") if p.is_file() and not p.name.endswith(".crc"))
    read = pcsv.ReadOptions(column_names=names) if names else pcsv.ReadOptions()
    probe = pcsv.read_csv(files[0], read_options=read) if files and files[0].stat().st_size else None
    columns = names or (probe.column_names if probe is not None else [])
    convert = pcsv.ConvertOptions(column_types={c: pa.string() for c in columns}, null_values=[""],
                                  strings_can_be_null=True, quoted_strings_can_be_null=True)
    parts = [pcsv.read_csv(f, read_options=read, convert_options=convert) for f in files if f.stat().st_size]
    table = pa.concat_tables(parts) if parts else pa.table({c: pa.array([], pa.string()) for c in columns})
    normalized = {}
    for name in table.column_names:
        column = table.column(name)
        try:
            # millionths, rounded to whole numbers: exact where rounding to 6 places in binary is not
            normalized[name] = pc.round(pc.multiply(pc.cast(column, pa.float64()), 1e6))
        except pa.ArrowInvalid:
            normalized[name] = pc.replace_substring_regex(column, _TIMESTAMP, r"\1 \2")
    return pa.table(normalized)


def same_rows(ours: pa.Table, theirs: pa.Table) -> str:
    """'ok', or what differs between the two outputs as multisets of rows."""
    if ours.num_columns != theirs.num_columns:
        return f"MISMATCH: {ours.num_columns} vs {theirs.num_columns} columns"
    if ours.num_rows != theirs.num_rows:
        return f"MISMATCH: {ours.num_rows:,} vs {theirs.num_rows:,} rows"
    theirs = theirs.rename_columns(ours.column_names)
    if any(ours.schema.field(i).type != theirs.schema.field(i).type for i in range(ours.num_columns)):
        return f"MISMATCH: column types {ours.schema.types} vs {theirs.schema.types}"
    keys = [(c, "ascending") for c in ours.column_names]
    a, b = ours.sort_by(keys), theirs.sort_by(keys)
    if a.equals(b):
        return "ok"
    equal = [pc.fill_null(pc.equal(a.column(i), b.column(i)), True) for i in range(a.num_columns)]
    differing = a.num_rows - pc.sum(pc.cast(functools.reduce(pc.and_, equal), pa.int64())).as_py()
    return f"MISMATCH: {differing:,} of {a.num_rows:,} sorted rows differ"


# ---------------------------------------------------------------- one query, both engines


@dataclass(frozen=True)
class Side:
    full: Run
    tiny: Run
    rows: int

    @property
    def net_s(self) -> float:
        return max(self.full.wall_s - self.tiny.wall_s, 1e-9)


def measure(name: str, query: Query, full: Path, tiny: Path, work: Path, flink: Path | None,
            repeat: int) -> tuple[Side, Side | None, str]:
    """Both engines on ``full`` and ``tiny``, best of ``repeat`` each, alternated."""
    best: dict[tuple[str, str], Run] = {}
    engines = ["sqlstream"] + (["flink"] if flink else [])
    ours_env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    for _ in range(repeat):
        for engine in engines:
            for size, data in (("full", full), ("tiny", tiny)):
                out = work / f"{name}-{engine}-{size}"
                shutil.rmtree(out, ignore_errors=True)
                out.unlink(missing_ok=True)
                log = work / f"{name}-{engine}-{size}.log"
                if engine == "sqlstream":
                    pipeline = work / f"{name}-{size}.sql"
                    pipeline.write_text(sqlstream_pipeline(query, data, out.with_suffix(".csv")))
                    run = run_process([*SQLSTREAM, "run", "--quiet", "--no-udfs", str(pipeline)], work, log,
                                      env=ours_env)
                else:
                    statements = flink_statements(query, data, out)
                    (work / f"{name}-{size}.flink.sql").write_text(statements)
                    run = run_process([str(flink), "-c", FLINK_PROGRAM], work, log, stdin=statements)
                if (engine, size) not in best or run.wall_s < best[engine, size].wall_s:
                    best[engine, size] = run
    ours_rows = read_output(work / f"{name}-sqlstream-full.csv", None)
    ours = Side(best["sqlstream", "full"], best["sqlstream", "tiny"], ours_rows.num_rows)
    if not flink:
        return ours, None, "flink not run"
    theirs_rows = read_output(work / f"{name}-flink-full", ours_rows.column_names)
    theirs = Side(best["flink", "full"], best["flink", "tiny"], theirs_rows.num_rows)
    status = same_rows(ours_rows, theirs_rows)
    if status != "ok" and query.differs:
        status += f" (known: {query.differs})"
    return ours, theirs, status


def _gb(n: int) -> str:
    return f"{n / 1e9:5.2f} GB"


def _rate(events: int, side: Side) -> str:
    """Events/s net of start-up, or a note where the input is too small to tell them apart."""
    if side.full.wall_s <= side.tiny.wall_s:
        return "  (< start-up)"
    return f"{events / side.net_s / 1e3:8.0f}k ev/s"


def _ratio(ours: Side, theirs: Side) -> str:
    """sqlstream's events/s ÷ Flink's, where both are above their start-up."""
    if ours.full.wall_s <= ours.tiny.wall_s or theirs.full.wall_s <= theirs.tiny.wall_s:
        return "  n/a"
    return f"{theirs.net_s / ours.net_s:5.2f}x"


def report(name: str, events: int, ours: Side, theirs: Side | None, status: str) -> str:
    line = (f"{name:4s} {events:>11,} | sqlstream {_rate(events, ours)} "
            f"(net {ours.net_s:6.2f}s, start-up {ours.tiny.wall_s:4.2f}s) {_gb(ours.full.peak_rss)} "
            f"(start-up {_gb(ours.tiny.peak_rss).strip()})")
    if theirs is None:
        return f"{line} | {status}"
    return (f"{line} | flink {_rate(events, theirs)} (net {theirs.net_s:6.2f}s, "
            f"start-up {theirs.tiny.wall_s:4.2f}s) {_gb(theirs.full.peak_rss)} (start-up {_gb(theirs.tiny.peak_rss).strip()}) | "
            f"throughput {_ratio(ours, theirs)}  RSS {ours.full.peak_rss / theirs.full.peak_rss:4.2f}x | "
            f"{ours.rows:,} rows {status}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--queries", default=",".join(QUERIES), help="comma-separated, of: " + ", ".join(QUERIES))
    parser.add_argument("--repeat", type=int, default=1, help="best of this many runs per engine and input")
    parser.add_argument("--data", type=Path, default=CACHE, help="where the generated CSV files are kept")
    parser.add_argument("--flink-venv", type=Path, default=CACHE / "flink-venv")
    parser.add_argument("--no-flink", action="store_true", help="sqlstream only (no Java or Flink needed)")
    parser.add_argument("--work", type=Path, default=None, help="pipelines, outputs and logs (default: a temp dir)")
    args = parser.parse_args()
    names = [q.strip() for q in args.queries.split(",") if q.strip()]
    unknown = [n for n in names if n not in QUERIES]
    if unknown:
        parser.error(f"unknown queries {unknown}; known: {', '.join(QUERIES)}")
    full, tiny = ensure_data(args.data, args.events)
    flink = None if args.no_flink else flink_python(args.flink_venv)
    work = args.work or Path(os.environ.get("TMPDIR", "/tmp")) / f"nexmark-flink-{os.getpid()}"
    work.mkdir(parents=True, exist_ok=True)
    print(f"{args.events:,} events, best of {args.repeat}, load average {os.getloadavg()[0]:.2f} "
          f"(cpus {os.cpu_count()}); throughput = sqlstream events/s ÷ Flink's, RSS = sqlstream peak ÷ Flink's; "
          f"work in {work}", flush=True)
    for name in names:
        try:
            ours, theirs, status = measure(name, QUERIES[name], full, tiny, work, flink, args.repeat)
        except RuntimeError as failure:
            print(f"{name:4s} FAILED: {failure}", flush=True)
            continue
        print(report(name, args.events, ours, theirs, status), flush=True)
    print(f"load average now {os.getloadavg()[0]:.2f}", flush=True)


if __name__ == "__main__":
    main()
