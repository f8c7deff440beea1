"""Model and Python UDF throughput: sqlstream vs the same work done directly.

1. ``SELECT predict(features) AS p FROM src`` over ``--rows`` rows × 16 float32
   features (a ``FLOAT[16]`` column), for an MLP (16 → 64 → 32 → 1) and gradient-boosted
   trees (100 trees, depth 4) that this script trains with scikit-learn and exports with
   skl2onnx; the baseline is ``InferenceSession.run`` called directly on slices of the
   same numpy array, ``--batch-size`` rows each (the same batches sqlstream gets).
2. int8: the MLP again with ``WITH (quantize = 'int8')``: speed-up over fp32 and the
   max/mean absolute deviation of its outputs from fp32.
3. A vectorized Python UDF ``x * 2 + 1`` (numpy) vs DataFusion's built-in ``x * 2 + 1``.

sqlstream runs the real planner and runtime: a ``memory`` source fed the Arrow table in
``--batch-size`` batches (pushed before the clock starts) and a sink that counts rows.
Each measurement is the best of ``--repeat`` runs, baseline and sqlstream interleaved.

    python benchmarks/udf.py                  # 1M rows, batch 8192
    python benchmarks/udf.py --quick          # 200k rows
    python benchmarks/udf.py --batch-size 65536 --threads 1
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import warnings

import numpy as np
import pyarrow as pa

from sqlstream import udf
from sqlstream.connectors import SinkConnector, SinkWriter, register_sink
from sqlstream.testing import TestSession

FEATURES = 16


class _CountingWriter(SinkWriter):
    def __init__(self, target: list) -> None:
        self.target = target

    def write(self, batch: pa.RecordBatch) -> None:
        self.target.append(batch)


@register_sink
class _KeepingSink(SinkConnector):
    """``connector = 'udf_bench'``: keeps the result batches (references only)."""

    name = "udf_bench"
    batches: list = []

    def open(self, schema: pa.Schema, ctx) -> SinkWriter:
        return _CountingWriter(self.batches)


def build_models(directory: str, seed: int = 3) -> dict[str, str]:
    from skl2onnx import to_onnx
    from sklearn.ensemble import GradientBoostingRegressor
    from sklearn.neural_network import MLPRegressor

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(10_000, FEATURES)).astype(np.float32)
    y = x[:, 0] * 0.7 - x[:, 1] * x[:, 2] + np.sin(x[:, 3]) + 0.1 * rng.normal(size=len(x))
    paths = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        models = {
            "mlp": MLPRegressor(hidden_layer_sizes=(64, 32), max_iter=40, random_state=0),
            "trees": GradientBoostingRegressor(n_estimators=100, max_depth=4, random_state=0),
        }
        for name, model in models.items():
            t = time.perf_counter()
            model.fit(x, y)
            path = os.path.join(directory, f"{name}.onnx")
            with open(path, "wb") as handle:
                handle.write(to_onnx(model, x[:1], target_opset=17).SerializeToString())
            paths[name] = path
            print(f"trained and exported {name} in {time.perf_counter() - t:.1f}s -> {path}")
    return paths


class Timing:
    """Wall-clock and process CPU seconds of one run (CPU time counts every thread of
    this process, so it is less disturbed by other processes on a busy machine)."""

    def __init__(self) -> None:
        self.wall = time.perf_counter()
        self.cpu = time.process_time()

    def stop(self) -> "Timing":
        self.wall = time.perf_counter() - self.wall
        self.cpu = time.process_time() - self.cpu
        return self


class RawOnnxRuntime:
    """The baseline: ``InferenceSession.run`` on numpy slices, ``batch`` rows each."""

    def __init__(self, path: str, data: np.ndarray, batch: int, threads: int | None) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self.data = data
        self.batch = batch

    def run(self) -> tuple[Timing, np.ndarray]:
        name = self.session.get_inputs()[0].name
        outputs = []
        timing = Timing()
        for i in range(0, len(self.data), self.batch):
            outputs.append(self.session.run(None, {name: self.data[i : i + self.batch]})[0])
        timing.stop()
        return timing, np.concatenate(outputs).reshape(-1)


class Pipeline:
    """A session with the source ``src`` and one sink query, runnable repeatedly."""

    def __init__(self, base_dir: str, columns: str, setup: str, query: str, table: pa.Table, batch: int, udfs=()):
        self.table = table
        self.batch = batch
        self.session = TestSession(base_dir=base_dir)
        for fn in udfs:
            self.session.register_udf(fn)
        self.session.execute(f"CREATE SOURCE src ({columns}) WITH (connector = 'memory'); {setup}")
        self.session.execute(f"CREATE SINK out AS {query} WITH (connector = 'udf_bench')")

    def run(self) -> tuple[Timing, pa.Array]:
        _KeepingSink.batches.clear()
        self.session.stream("src").push(self.table, batch_size=self.batch).finish()
        timing = Timing()
        self.session.run()
        timing.stop()
        column = pa.chunked_array([b.column(0) for b in _KeepingSink.batches])
        _KeepingSink.batches.clear()
        return timing, column


def measure(repeat: int, *contenders) -> list[tuple[float, float, object]]:
    """Each contender's best wall time, best CPU time and output, over ``repeat``
    interleaved runs after one warm-up run each."""
    for c in contenders:
        c.run()
    runs: list[list] = [[] for _ in contenders]
    for _ in range(repeat):
        for i, c in enumerate(contenders):
            runs[i].append(c.run())
    return [(min(t.wall for t, _ in r), min(t.cpu for t, _ in r), r[-1][1]) for r in runs]


def rate(rows: int, seconds: float) -> str:
    return f"{rows / seconds / 1e6:6.2f}M rows/s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--quick", action="store_true", help="200k rows, 2 repeats")
    parser.add_argument("--batch-size", type=int, default=8192, help="rows per micro-batch (both sides)")
    parser.add_argument("--repeat", type=int, default=5, help="runs of each; the best counts")
    parser.add_argument("--threads", type=int, help="onnxruntime intra-op threads, both sides (default: its own choice)")
    parser.add_argument("--models", metavar="DIR", help="keep (and reuse) the trained models here")
    args = parser.parse_args()
    rows = 200_000 if args.quick else args.rows
    repeat = 2 if args.quick else args.repeat
    batch = args.batch_size
    threads = f" WITH (threads = {args.threads})" if args.threads else ""

    with tempfile.TemporaryDirectory() as tmp:
        directory = args.models or tmp
        os.makedirs(directory, exist_ok=True)
        paths = {n: os.path.join(directory, f"{n}.onnx") for n in ("mlp", "trees")}
        if not all(os.path.exists(p) for p in paths.values()):
            paths = build_models(directory)
        rng = np.random.default_rng(11)
        data = rng.normal(size=(rows, FEATURES)).astype(np.float32)
        features = pa.FixedSizeListArray.from_arrays(pa.array(data.reshape(-1)), FEATURES)
        table = pa.table({"features": features})
        print(
            f"{rows:,} rows x {FEATURES} float32 features, batches of {batch:,} rows, best of {repeat}, "
            f"onnxruntime threads: {args.threads or 'default'}, {os.cpu_count()} CPUs"
        )
        print()
        print("SELECT predict(features) AS p FROM src  vs  InferenceSession.run on the same numpy batches")
        print("(ratio = sqlstream throughput / onnxruntime throughput; wall clock, and process CPU time)")
        fp32 = {}
        for name, path in paths.items():
            pipeline = Pipeline(
                directory, f"features FLOAT[{FEATURES}]", f"CREATE FUNCTION predict AS MODEL '{os.path.basename(path)}'{threads}",
                "SELECT predict(features) AS p FROM src", table, batch,
            )
            (raw_wall, raw_cpu, raw_out), (wall, cpu, out) = measure(repeat, RawOnnxRuntime(path, data, batch, args.threads), pipeline)
            ours = out.to_numpy()
            fp32[name] = raw_cpu
            deviation = float(np.max(np.abs(ours - raw_out)))
            print(
                f"  {name:>6}: onnxruntime {rate(rows, raw_wall)}   sqlstream {rate(rows, wall)}"
                f"   ratio {raw_wall / wall:.2f}x wall, {raw_cpu / cpu:.2f}x CPU   (max |diff| {deviation:.1e})"
            )

        @udf(args=[pa.list_(pa.float32(), FEATURES)], returns=pa.list_(pa.float32(), FEATURES))
        def identity(features: pa.Array) -> pa.Array:
            return features

        noop = Pipeline(directory, f"features FLOAT[{FEATURES}]", "", "SELECT identity(features) AS p FROM src", table, batch, [identity])
        ((_, noop_cpu, _),) = measure(repeat, noop)
        batches = -(-rows // batch)
        per_batch = noop_cpu / batches
        print(
            f"  fixed cost of the sqlstream path (source, step, sink; a no-op UDF instead of the model): "
            f"{per_batch * 1e6:.0f} us CPU per batch of {batch:,}"
        )
        for name, raw_cpu in fp32.items():
            print(f"    = {per_batch / (raw_cpu / batches):.1%} of onnxruntime's CPU time per {name} batch")

        print()
        print("int8 dynamic quantization of the MLP (WITH (quantize = 'int8')) vs fp32, both through sqlstream")
        int8 = Pipeline(
            directory, f"features FLOAT[{FEATURES}]", "CREATE FUNCTION predict AS MODEL 'mlp.onnx' WITH (quantize = 'int8'"
            + (f", threads = {args.threads})" if args.threads else ")"),
            "SELECT predict(features) AS p FROM src", table, batch,
        )
        fp32_pipeline = Pipeline(
            directory, f"features FLOAT[{FEATURES}]", f"CREATE FUNCTION predict AS MODEL 'mlp.onnx'{threads}",
            "SELECT predict(features) AS p FROM src", table, batch,
        )
        (base_wall, base_cpu, base_out), (q_wall, q_cpu, q_out) = measure(repeat, fp32_pipeline, int8)
        base = base_out.to_numpy()
        diff = np.abs(q_out.to_numpy() - base)
        spread = float(np.std(base))
        print(
            f"     mlp: fp32 {rate(rows, base_wall)}   int8 {rate(rows, q_wall)}"
            f"   speed-up {base_wall / q_wall:.2f}x wall, {base_cpu / q_cpu:.2f}x CPU"
        )
        print(
            f"          |int8 - fp32|: max {diff.max():.4f}, mean {diff.mean():.4f}"
            f"   (fp32 outputs: std {spread:.3f}; mean deviation = {diff.mean() / spread:.1%} of it)"
        )

        print()
        print("Python UDF x * 2 + 1 (numpy, vectorized) vs DataFusion's x * 2 + 1, both through sqlstream")

        @udf(args=[pa.float64()], returns=pa.float64())
        def linear(x: pa.Array) -> np.ndarray:
            return x.to_numpy() * 2 + 1

        numbers = pa.table({"x": pa.array(rng.normal(size=rows))})
        python_udf = Pipeline(directory, "x DOUBLE", "", "SELECT linear(x) AS y FROM src", numbers, batch, [linear])
        builtin = Pipeline(directory, "x DOUBLE", "", "SELECT x * 2 + 1 AS y FROM src", numbers, batch)
        (df_wall, df_cpu, df_out), (py_wall, py_cpu, py_out) = measure(repeat, builtin, python_udf)
        if not py_out.equals(df_out):
            raise SystemExit("python UDF and DataFusion results differ")
        print(
            f"  DataFusion {rate(rows, df_wall)}   Python UDF {rate(rows, py_wall)}"
            f"   ratio UDF/DataFusion {df_wall / py_wall:.2f}x wall, {df_cpu / py_cpu:.2f}x CPU"
        )


if __name__ == "__main__":
    main()
