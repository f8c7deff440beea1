"""Start-up time of the ``sqlstream`` command: ``--help``, ``check queries/hello.sql`` and
the first output row of ``run queries/hello.sql`` (best of N wall times, in seconds).

    python benchmarks/startup.py [--runs 5] [--no-pandas]

``--no-pandas`` runs each command as if pandas were not installed: pyarrow imports pandas,
when it is, on its first conversion of a Python value (~0.3 s). ``check`` makes none
(tests/integration/test_startup.py checks it); ``run`` does with its first batch.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HELLO = str(ROOT / "queries" / "hello.sql")
WORK = tempfile.mkdtemp(prefix="sqlstream-startup-")  # not the checkout: ``-m`` puts the working directory first
NO_PANDAS = """
import sys
class NoPandas:
    def find_spec(self, name, path=None, target=None):
        if name == "pandas" or name.startswith("pandas."):
            raise ModuleNotFoundError("No module named 'pandas'", name=name)
sys.meta_path.insert(0, NoPandas())
from sqlstream.cli.main import main
sys.exit(main(sys.argv[1:]))
"""


def _command(args: list[str], no_pandas: bool) -> list[str]:
    if no_pandas:
        return [sys.executable, "-c", NO_PANDAS, *args]
    return [sys.executable, "-m", "sqlstream.cli.main", *args]


def best_wall(args: list[str], runs: int, no_pandas: bool) -> float:
    times = []
    for _ in range(runs):
        began = time.perf_counter()
        subprocess.run(_command(args, no_pandas), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True,
                       cwd=WORK)
        times.append(time.perf_counter() - began)
    return min(times)


def best_first_row(runs: int, no_pandas: bool) -> float:
    times = []
    for _ in range(runs):
        began = time.perf_counter()
        proc = subprocess.Popen(_command(["run", HELLO], no_pandas), stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, text=True, cwd=WORK)
        proc.stdout.readline()  # piped: JSON lines, the first line is the first row
        times.append(time.perf_counter() - began)
        proc.kill()
        proc.wait()
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--no-pandas", action="store_true")
    args = parser.parse_args()
    print(f"--help              {best_wall(['--help'], args.runs, args.no_pandas):.3f}s")
    print(f"check hello.sql     {best_wall(['check', HELLO], args.runs, args.no_pandas):.3f}s")
    print(f"run: first row      {best_first_row(args.runs, args.no_pandas):.3f}s")


if __name__ == "__main__":
    main()
