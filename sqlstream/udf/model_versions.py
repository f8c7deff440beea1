"""Model functions that change while queries run: versions, hot swap, reload and shadow.

A model function in the catalog is a :class:`VersionedModel`: the handle plans hold
(instead of the :class:`~sqlstream.udf.model.ModelUdf` itself). It serves one
:class:`ModelVersion` at a time; the UDF step *pins* the version once per micro-batch
(:meth:`VersionedModel.pin`), so a batch is scored by one version only, and
``model_version(f)`` in the same query names that version. A new version comes from

* ``CREATE OR REPLACE FUNCTION f AS MODEL 'v2.onnx'`` (:meth:`VersionedModel.replace`):
  refused with a UdfError, the old version serving on, if the new model does not
  accept the argument types or return the type of a query, view or sink planned with
  ``f`` (those would break); a function no query uses may change its signature;
* ``WITH (reload = 'on_change')``: the file is watched
  (:mod:`sqlstream.udf.model_reload`) and a changed file loaded in the background; a
  file that does not load or has another signature is refused the same way, logged
  as a warning and counted (``reload_failures``).

A version is numbered per function, from 1, and carries the first hex digits of the
file's sha256: ``v2 (sha 3f9a1c)``. ``WITH (shadow = 'candidate.onnx')`` scores every
batch with a second model as well (:mod:`sqlstream.udf.shadow`), output unchanged.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import os
import threading
import weakref
from dataclasses import dataclass
from datetime import datetime, timezone

import pyarrow as pa

from sqlstream.durations import parse_duration_us
from sqlstream.errors import SqlStreamError, UdfError
from sqlstream.sql.types import sql_type_name
from sqlstream.udf.model import MODEL_OPTIONS, ModelUdf
from sqlstream.udf.model_reload import SHORT_SHA, FileChanging, ModelFileWatch, file_fingerprint, stat_key
from sqlstream.udf.shadow import ShadowedModel, ShadowStats

__all__ = ["ModelVersion", "VersionedModel", "ModelVersionFunction", "VERSION_OPTIONS", "MODEL_VERSION_FUNCTION",
           "ModelCounters", "loaded_text"]

LOG = logging.getLogger("sqlstream.udf")

#: option → what it does (with :data:`~sqlstream.udf.model.MODEL_OPTIONS`: every model option)
VERSION_OPTIONS = {
    "reload": "'on_change': watch the model file and serve a changed file once it loads and fits (default 'off')",
    "reload_interval": "how often reload = 'on_change' checks the file, at batch boundaries (default '1s')",
    "shadow": "a candidate .onnx scored on every batch beside the model, compared, never returned",
}
#: the SQL function naming the version that scored a row: ``model_version(f)``
MODEL_VERSION_FUNCTION = "model_version"


def _split_options(options: dict) -> tuple[dict, dict]:
    """(options for ModelUdf, version options); an unknown option lists every valid one."""
    options = {str(k).lower(): v for k, v in options.items()}
    valid = set(MODEL_OPTIONS) | set(VERSION_OPTIONS)
    unknown = sorted(set(options) - valid)
    if unknown:
        raise UdfError(f"unknown model option '{unknown[0]}'", hint="valid: " + ", ".join(sorted(valid)),
                       option=unknown[0])
    return ({k: v for k, v in options.items() if k in MODEL_OPTIONS},
            {k: v for k, v in options.items() if k in VERSION_OPTIONS})


def _reload_interval(versioning: dict) -> float | None:
    """Seconds between checks, or None without reload."""
    reload = str(versioning.get("reload", "off")).lower()
    if reload not in ("off", "on_change"):
        raise UdfError(f"reload = '{reload}' is not supported", hint="reload = 'on_change' or 'off'", option="reload")
    interval = versioning.get("reload_interval")
    if reload == "off":
        if interval is not None:
            raise UdfError("reload_interval needs reload = 'on_change'", option="reload_interval")
        return None
    try:
        us = parse_duration_us(interval if interval is not None else "1s")
    except (SqlStreamError, ValueError) as error:
        raise UdfError(f"reload_interval = '{interval}' is not a duration", hint="e.g. reload_interval = '1s'",
                       option="reload_interval") from error
    if us < 0:
        raise UdfError(f"reload_interval = '{interval}' is negative", option="reload_interval")
    return us / 1e6


@dataclass(frozen=True)
class ModelVersion:
    """One loaded model file: what a batch pinned to this version is scored with."""

    number: int
    sha: str  # sha256 of the file, hex
    loaded_at: datetime
    model: ModelUdf
    path: str
    shadow: ModelUdf | None = None
    shadow_path: str | None = None
    file_key: tuple[int, int, int] | None = None  # the file's (mtime, size, inode) when it was read

    @property
    def label(self) -> str:
        """``v2 (sha 3f9a1c)``: what ``model_version(f)`` and SHOW FUNCTIONS say."""
        return f"v{self.number} (sha {self.sha[:SHORT_SHA]})"


def loaded_text(version: ModelVersion) -> str:
    """When ``version`` was loaded, UTC to the millisecond (SHOW FUNCTIONS / MODELS)."""
    return version.loaded_at.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "Z"


@dataclass
class ModelCounters:
    swaps: int = 0  # versions installed after the first
    reload_failures: int = 0  # changed files refused (did not load, or another signature)
    last_failure: str = ""


class VersionedModel:
    """A model function whose model can be replaced while queries run (module docstring).

    Plans call :meth:`check_args` while planning and record each call site's types
    with :meth:`track`; :meth:`pin` gives the version for one batch and :meth:`bind`
    what scores it."""

    kind = "model"
    volatility = "immutable"
    is_async = False

    def __init__(self, name: str, version: ModelVersion, options: dict, versioning: dict):
        self.name = name
        self._lock = threading.Lock()
        self._uses: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # call site → (types, result)
        self.counters = ModelCounters()
        self.shadow_stats = ShadowStats()
        self.current = version
        self.options = options
        self.watch: ModelFileWatch | None = None
        self._configure(version, versioning)

    @classmethod
    def load(cls, name: str, path: str, options: dict) -> "VersionedModel":
        model_options, versioning = _split_options(options)
        return cls(name, _load_version(name, path, model_options, versioning, 1), model_options, versioning)

    # -- what the planner and the UDF step use ---------------------------------------------

    @property
    def path(self) -> str:
        return self.current.path

    @property
    def return_type(self) -> pa.DataType:
        return self.current.model.return_type

    @property
    def input_names(self) -> list[str]:
        """The model's input tensors' names (ML.PREDICT passes the columns so named)."""
        return [i.name for i in self.current.model.inputs]

    @property
    def output_fields(self) -> list[str]:
        """The model's outputs as SQL names (the fields of a STRUCT result)."""
        return [o.field for o in self.current.model.outputs]

    def signature(self) -> str:
        return self.current.model.signature()

    def check_args(self, types: list[pa.DataType]) -> pa.DataType:
        return self.current.model.check_args(types)

    def track(self, call_site: object, types: list[pa.DataType], result: pa.DataType) -> None:
        """Remember that ``call_site`` (alive as long as its plan) calls this function with
        ``types`` and expects ``result``: a new version must fit it."""
        with self._lock:
            self._uses[call_site] = (tuple(types), result)

    def prepare(self, args: list[pa.Array]) -> list[pa.Array]:
        return self.current.model.prepare(args)

    def call(self, args: list[pa.Array], length: int) -> pa.Array:
        """Score with the current version (the UDF step pins one per batch instead)."""
        return self.bind(self.pin()).call(args, length)

    def pin(self) -> ModelVersion:
        """The version for the next batch (a reload check may start here; see
        :mod:`sqlstream.udf.model_reload`)."""
        watch = self.watch
        if watch is not None:
            watch.poll()
        return self.current

    def bind(self, version: ModelVersion):
        """What scores a batch pinned to ``version``: its model, with its shadow if any."""
        if version.shadow is None:
            return version.model
        return ShadowedModel(version.model, version.shadow, self.shadow_stats, version.shadow_path or "")

    def status(self) -> dict:
        """One row of ``SHOW MODELS``: the version serving, reloads, the shadow's comparison."""
        version, counters, shadow = self.current, self.counters, self.shadow_stats
        watch = self.watch
        return {
            "name": self.name,
            "version": version.label,
            "loaded": loaded_text(version),
            "path": version.path,
            "reload": f"on_change every {watch.interval_s:g}s" if watch is not None else "off",
            "swaps": counters.swaps,
            "reload_failures": counters.reload_failures,
            "last_failure": counters.last_failure,
            "shadow": version.shadow_path or "",
            "shadow_rows": shadow.total.rows,
            "shadow_agreement": shadow.agreement,
            "shadow_mean_abs_diff": shadow.mean_abs_diff,
            "shadow_max_abs_diff": shadow.max_abs_diff,
            "shadow_failures": shadow.failures,
        }

    # -- new versions -------------------------------------------------------------------------

    def replace(self, path: str, options: dict) -> None:
        """``CREATE OR REPLACE FUNCTION``: load ``path`` with ``options`` and serve it from
        the next batch on; a UdfError (old version serving on) if it does not fit."""
        model_options, versioning = _split_options(options)
        with self._lock:
            number = self.current.number + 1
        version = _load_version(self.name, path, model_options, versioning, number)
        self._install(version, versioning)
        self.options = model_options

    def _reload(self, key: tuple[int, int, int]) -> bool:
        """Load the watched file (in the watch's thread); False: try again next check."""
        current = self.current
        try:
            _, sha = file_fingerprint(current.path)
            if sha == current.sha:
                return True  # touched, not changed
            version = _load_version(self.name, current.path, self.options, {}, current.number + 1,
                                    shadow=(current.shadow, current.shadow_path))
            if stat_key(current.path) != key:
                return False  # changed again while it loaded
            self._install(version, None)
        except (OSError, FileChanging):
            return False
        except SqlStreamError as error:
            try:
                if stat_key(current.path) != key:
                    return False  # still being written: try again once it settles
            except OSError:
                return False
            with self._lock:
                self.counters.reload_failures += 1
                self.counters.last_failure = error.message
            LOG.warning("model %s: the changed file %s is refused, %s keeps serving: %s%s", self.name,
                        current.path, self.current.label, error.message, f" ({error.hint})" if error.hint else "")
        return True

    def _install(self, version: ModelVersion, versioning: dict | None) -> None:
        problem = self._misfit(version.model)
        if problem is not None:
            gc.collect()  # plans no longer referenced may still sit in reference cycles
            problem = self._misfit(version.model)
        if problem is not None:
            raise UdfError(
                f"model {self.name}: {os.path.basename(version.path)} {problem}; "
                f"{self.current.label} keeps serving",
                hint=f"a new version must take and return the same types while queries, views or sinks use "
                     f"{self.name} (drop those first to change the signature)",
            )
        with self._lock:
            if version.number <= self.current.number:
                version = dataclasses.replace(version, number=self.current.number + 1)
            if versioning is not None:
                self._configure(version, versioning)
            self.current = version  # the next pin() serves it: one assignment, never half a batch
            self.counters.swaps += 1
            self.shadow_stats = ShadowStats()  # comparisons describe the pair now serving
        LOG.info("model %s now serves %s from %s", self.name, version.label, version.path)

    def _configure(self, version: ModelVersion, versioning: dict) -> None:
        """Watch ``version``'s file, from the state it was read in, if ``versioning`` says so."""
        interval = _reload_interval(versioning)
        self.watch = None if interval is None else ModelFileWatch(version.path, interval, version.file_key, self._reload)

    def _misfit(self, candidate: ModelUdf) -> str | None:
        with self._lock:
            uses = list(self._uses.values())
        for types, result in uses:
            try:
                got = candidate.check_args(list(types))
            except UdfError as error:
                return f"does not take the arguments a running query passes: {error.message}"
            if got != result:
                return f"returns {sql_type_name(got)}, where running queries expect {sql_type_name(result)}"
        return None


def _load_version(name: str, path: str, model_options: dict, versioning: dict, number: int,
                  shadow: tuple[ModelUdf | None, str | None] | None = None) -> ModelVersion:
    """Load ``path`` (and its shadow) as version ``number`` of function ``name``."""
    _reload_interval(versioning)  # a bad option is refused before anything loads
    if not os.path.isfile(path):  # a URL or a missing file: ModelUdf.load says which
        ModelUdf.load(name, path, model_options)
        raise UdfError(f"model file not found: {path}")
    try:
        key, sha = file_fingerprint(path)
        model = ModelUdf.load(name, path, model_options)
        if stat_key(path) != key:
            raise FileChanging(path)
    except (OSError, FileChanging) as error:
        raise UdfError(f"model file {path} changed while it was loaded", hint="load it again") from error
    if shadow is None:
        shadow_path = versioning.get("shadow")
        candidate = None
        if shadow_path is not None:
            candidate = ModelUdf.load(name, str(shadow_path), model_options)
            _check_shadow(model, candidate, str(shadow_path))
        shadow = (candidate, None if shadow_path is None else str(shadow_path))
    elif shadow[0] is not None:
        _check_shadow(model, shadow[0], shadow[1] or "")
    return ModelVersion(number, sha, datetime.now(timezone.utc), model, path, shadow[0], shadow[1], key)


def _check_shadow(model: ModelUdf, shadow: ModelUdf, path: str) -> None:
    same_inputs = [(i.dtype, i.width) for i in model.inputs] == [(i.dtype, i.width) for i in shadow.inputs]
    if not same_inputs or model.return_type != shadow.return_type:
        raise UdfError(
            f"shadow model {os.path.basename(path)} has another signature than the model: "
            f"{shadow.signature()} vs {model.signature()}",
            hint="a shadow takes the same inputs and returns the same type", option="shadow",
        )


class ModelVersionFunction:
    """``model_version(f)``: the label of the version that scores the batch's rows."""

    kind = "model version"
    volatility = "stable"
    is_async = False
    return_type = pa.string()

    def __init__(self, model: VersionedModel):
        self.model = model
        self.name = f"{MODEL_VERSION_FUNCTION}({model.name})"  # its calls are counted apart from f's

    def check_args(self, types: list[pa.DataType]) -> pa.DataType:
        return self.return_type

    def prepare(self, args: list[pa.Array]) -> list[pa.Array]:
        return args

    def bind(self, version: ModelVersion) -> "_VersionLabel":
        return _VersionLabel(version.label)

    def call(self, args: list[pa.Array], length: int) -> pa.Array:
        return self.bind(self.model.current).call(args, length)


class _VersionLabel:
    reports_row_failures = False

    def __init__(self, label: str):
        self.label = label

    def prepare(self, args: list[pa.Array]) -> list[pa.Array]:
        return args

    def call(self, args: list[pa.Array], length: int) -> pa.Array:
        return pa.repeat(pa.scalar(self.label, pa.string()), length)
