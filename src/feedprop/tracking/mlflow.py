"""``MLflowTracker``: a run's scores, tokens and seconds as MLflow metrics, its parameters and report as artifacts.

It needs the ``tracking`` extra (``pip install 'feedprop[tracking]'``); mlflow is imported only
when a run starts, so ``import feedprop`` never imports it. ``fp.train(..., tracker="mlflow")``
uses an ``MLflowTracker()`` with the defaults.

What a run leaves in MLflow:

- params: the run's options, nested ones with dotted names (``batch_size``, ``budget.tokens``);
- metrics, per step (MLflow's ``step`` is the training step): ``train_score``, ``val_score``,
  ``accepted`` (1 or 0), ``calls``, ``prompt_tokens``, ``completion_tokens``, ``tokens`` and
  ``seconds`` of the step; at step 0 the ``val_score`` and ``test_score`` before training. A joint
  run logs one step per phase (``val_score``, ``test_score``, ``kept``, usage, ``seconds``). At the
  end: ``val_before``, ``val_after``, ``test_before``, ``test_after`` and the run's usage as
  ``total_calls``, ``total_tokens``, ..., and by model as ``by_model/<model>/calls``,
  ``by_model/<model>/tokens``, ... (:func:`usage_metrics`);
- artifacts: ``initial_parameters/`` and ``parameters/`` (the best parameters), each as
  ``params.json`` plus one ``.txt`` per parameter; ``report.md``; and the run page ``run.html``
  and the plot ``curve.png`` when the run directory holds them at the end;
- tags ``feedprop.run_dir`` and ``feedprop.stop_reason``; the status ``FINISHED``, ``FAILED`` (the
  run raised; tag ``feedprop.error``) or ``KILLED`` (Ctrl-C).

Where: ``tracking_uri`` if given, else ``$MLFLOW_TRACKING_URI``, else a SQLite store (no server)
in the file ``mlflow.db`` of the run's checkpoint directory, or of ``$FEEDPROP_HOME`` for a run
without one; the artifacts of a SQLite store go next to its file, in ``mlflow-artifacts/``. Look
at it with ``mlflow ui --backend-store-uri sqlite:///<dir>/mlflow.db``; pass one ``tracking_uri``
to every run to see them side by side.

Resume: the run directory's ``mlflow.json`` records the store and the MLflow run id, so
``resume=True`` continues the same MLflow run (in the store it started in).

Speed: step metrics go to the store from a thread of the tracker's own, batched, so the training
loop never waits for it. Starting (importing mlflow, and creating the store the first time: a few
seconds) and finishing (flushing, artifacts) happen in the caller, so that a store that cannot be
reached fails the run before it trains, and the run is complete in MLflow when ``train`` returns.

Example:
    >>> store_uri("/tmp/run")
    'sqlite:////tmp/run/mlflow.db'
    >>> [m[:2] for m in event_metrics({"event": "evaluate", "step": 0, "time": 2.0, "val_score": 0.5})]
    [('val_score', 0.5)]
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from importlib.util import find_spec
from pathlib import Path
from typing import Any, TypeVar

from feedprop._files import atomic_write
from feedprop._text import truncate_middle
from feedprop.errors import CheckpointError, ConfigurationError, InvalidInputError
from feedprop.llm.home import home_dir
from feedprop.tracking.tracker import RunResult, Tracker, flatten, parameter_files

__all__ = ["INSTALL_HINT", "STATE_FILE", "MLflowTracker", "event_metrics", "store_uri", "usage_metrics"]

#: What to run when mlflow is missing.
INSTALL_HINT = "pip install 'feedprop[tracking]'"
#: The file in a run directory that names the MLflow store and run of the run.
STATE_FILE = "mlflow.json"
STORE_FILE = "mlflow.db"
ARTIFACTS_DIR = "mlflow-artifacts"
#: Files of the run directory logged as artifacts when present at the end.
PAGE_FILES = ("run.html", "curve.png")
_FORMAT = "feedprop.mlflow/1"
#: Step metrics are sent in batches, at most one write to the store this often (the end of a run sends the rest).
FLUSH_SECONDS = 1.0
# MLflow's limits: values per log_batch call, and lengths (params as older stores allow).
_METRICS_PER_BATCH = 1000
_PARAMS_PER_BATCH = 100
_PARAM_LENGTH = 500
_TAG_LENGTH = 5000

# Which field of which event becomes which metric ("a.b" reads event["a"]["b"]); the step is event["step"].
_METRICS: dict[str, tuple[tuple[str, str], ...]] = {
    "evaluate": (("val_score", "val_score"), ("test_score", "test_score")),
    "step": (
        ("train_score", "train_score"),
        ("val_score", "val_score"),
        ("accepted", "accepted"),
        ("usage.calls", "calls"),
        ("usage.prompt_tokens", "prompt_tokens"),
        ("usage.completion_tokens", "completion_tokens"),
        ("seconds", "seconds"),
    ),
    "phase": (
        ("val", "val_score"),
        ("test", "test_score"),
        ("kept", "kept"),
        ("calls", "calls"),
        ("prompt_tokens", "prompt_tokens"),
        ("completion_tokens", "completion_tokens"),
        ("seconds", "seconds"),
    ),
}

Value = tuple[str, float, int, int]  # metric name, value, timestamp (ms), step
T = TypeVar("T")


def store_uri(directory: str | os.PathLike[str]) -> str:
    """The tracking URI of the SQLite store ``mlflow.db`` in ``directory`` (an absolute path).

    Example:
        >>> store_uri("/tmp/run")
        'sqlite:////tmp/run/mlflow.db'
    """
    return "sqlite:///" + (Path(directory).expanduser().absolute() / STORE_FILE).as_posix()


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, int | float):
        return float(value)
    return None


def _field(event: Mapping[str, Any], path: str) -> Any:
    value: Any = event
    for key in path.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return value


def event_metrics(event: Mapping[str, Any]) -> list[Value]:
    """The metrics one event becomes: ``(name, value, timestamp in ms, step)``; none for other events.

    ``tokens`` is added wherever both token counts are known.

    Example:
        >>> step = {"event": "step", "step": 3, "time": 1.5, "train_score": 0.5, "val_score": None,
        ...         "accepted": True, "usage": {"calls": 2, "prompt_tokens": 10, "completion_tokens": 5}}
        >>> [(name, value, step) for name, value, _, step in event_metrics(step)]  # doctest: +NORMALIZE_WHITESPACE
        [('train_score', 0.5, 3), ('accepted', 1.0, 3), ('calls', 2.0, 3), ('prompt_tokens', 10.0, 3),
         ('completion_tokens', 5.0, 3), ('tokens', 15.0, 3)]
        >>> event_metrics({"event": "items", "step": 3, "time": 1.5, "items": []})
        []
    """
    fields = _METRICS.get(str(event.get("event")))
    step = _number(event.get("step"))
    if not fields or step is None:
        return []
    stamp = int(float(event.get("time") or time.time()) * 1000)
    values = {name: _number(_field(event, path)) for path, name in fields}
    if values.get("prompt_tokens") is not None and values.get("completion_tokens") is not None:
        values["tokens"] = values["prompt_tokens"] + values["completion_tokens"]  # type: ignore[operator]
    return [(name, value, stamp, int(step)) for name, value in values.items() if value is not None]


# The counters each model gets a metric of, and how long a model's name may be in one.
_MODEL_COUNTERS = ("calls", "cache_hits", "prompt_tokens", "completion_tokens", "tokens", "seconds")
_MODEL_NAME_LENGTH = 200


def _metric_name_part(model: str, taken: set[str]) -> str:
    """``model`` as one segment of a metric name: characters MLflow refuses on some system become ``_``, and a
    name that another model's already became gets a number."""
    part = re.sub(r"[^\w.\-]", "_", model)[:_MODEL_NAME_LENGTH].strip(".") or "_"
    unique, n = part, 2
    while unique in taken:
        unique, n = f"{part}_{n}", n + 1
    taken.add(unique)
    return unique


def usage_metrics(usage: Mapping[str, Any]) -> dict[str, float]:
    """A run's usage as end-of-run metrics: ``total_<counter>``, and ``by_model/<model>/<counter>`` per model.

    Example:
        >>> usage = {"total": {"calls": 3, "tokens": 70},
        ...          "by_model": {"Qwen/Qwen2.5-1.5B": {"calls": 3, "tokens": 70, "phases": {}}}}
        >>> usage_metrics(usage)  # doctest: +NORMALIZE_WHITESPACE
        {'total_calls': 3.0, 'total_tokens': 70.0, 'by_model/Qwen_Qwen2.5-1.5B/calls': 3.0,
         'by_model/Qwen_Qwen2.5-1.5B/tokens': 70.0}
    """
    metrics: dict[str, float] = {}
    for name, value in (usage.get("total") or {}).items():
        number = _number(value)
        if number is not None:
            metrics[f"total_{name}"] = number
    by_model = usage.get("by_model")
    taken: set[str] = set()
    for model, counts in sorted((by_model if isinstance(by_model, Mapping) else {}).items()):
        part = _metric_name_part(str(model), taken)
        for counter in _MODEL_COUNTERS:
            number = _number(counts.get(counter)) if isinstance(counts, Mapping) else None
            if number is not None:
                metrics[f"by_model/{part}/{counter}"] = number
    return metrics


def _artifact_location(uri: str) -> str | None:
    """Next to the file of a SQLite store (MLflow's own default is ``./mlruns`` in the working directory)."""
    prefix = "sqlite:///"
    path = uri[len(prefix) :] if uri.startswith(prefix) else ""
    if not path or path.startswith(":memory:"):
        return None
    return (Path(path).absolute().parent / ARTIFACTS_DIR).as_uri()


def _report(result: RunResult) -> str:
    """The result's markdown: a TrainResult's report, a JointResult's table."""
    for name in ("report", "table"):
        method = getattr(result, name, None)
        if callable(method):
            return str(method())
    return ""


@contextlib.contextmanager
def _quiet(*names: str) -> Iterator[None]:
    """Keep these loggers' INFO lines (MLflow creating its database) off the terminal for a while."""
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(max(logger.getEffectiveLevel(), logging.WARNING))
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def _import_mlflow() -> Any:
    try:
        import mlflow
    except ImportError as exc:
        raise ConfigurationError(f"MLflow tracking needs the package 'mlflow': {INSTALL_HINT}") from exc
    return mlflow


class MLflowTracker(Tracker):
    """Logs a run to MLflow: options as params, per-step metrics, parameters and report as artifacts.

    Args:
        tracking_uri: the MLflow store (``"sqlite:///path/mlflow.db"``, ``"http://host:5000"``,
            ...); ``None`` uses ``$MLFLOW_TRACKING_URI``, else ``mlflow.db`` in the run's
            checkpoint directory (or in ``$FEEDPROP_HOME`` for a run without one).
        experiment: the MLflow experiment, created when missing.
        run_name: the MLflow run's name (default: the checkpoint directory's name).
        tags: extra tags for the run.

    After a run starts, ``run_id`` and ``store`` name the MLflow run and the tracking URI it is
    in. One tracker tracks one run at a time; a second ``train`` call with it starts a new run.
    See the module's documentation for what is logged; the example is in ``fp.train``'s terms::

        fp.train(model, train_set, guide, optimizer, val_set=val_set, checkpoint="runs/a", tracker="mlflow")
        fp.train(..., tracker=MLflowTracker("sqlite:///runs/mlflow.db", experiment="extractor"))

    Raises:
        ConfigurationError: mlflow is not installed (``pip install 'feedprop[tracking]'``), or,
            when the run starts, the store cannot be reached.
    """

    def __init__(
        self,
        tracking_uri: str | None = None,
        experiment: str = "feedprop",
        *,
        run_name: str | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> None:
        for name, value in (("tracking_uri", tracking_uri), ("run_name", run_name)):
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise InvalidInputError(f"{name} must be a non-empty string or None, got {value!r}")
        if not isinstance(experiment, str) or not experiment.strip():
            raise InvalidInputError(
                f"experiment must be a non-empty string (an MLflow experiment name), got {experiment!r}"
            )
        if tags is not None and (
            not isinstance(tags, Mapping) or not all(isinstance(k, str) and isinstance(v, str) for k, v in tags.items())
        ):
            raise InvalidInputError(f"tags must map strings to strings, got {tags!r}")
        if find_spec("mlflow") is None:
            raise ConfigurationError(
                f"MLflow tracking needs the package 'mlflow', which is not installed: {INSTALL_HINT}"
            )
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self.run_name = run_name
        self.tags = dict(tags or {})
        self.run_id: str | None = None
        self.store: str | None = None
        self._client: Any = None
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self._pending: list[Value] = []
        self._flushing = False
        self._last_step = 0
        self._wake = threading.Event()
        self._last_flush = 0.0

    def __repr__(self) -> str:
        return f"MLflowTracker(tracking_uri={self.tracking_uri!r}, experiment={self.experiment!r})"

    # -- the hooks (training thread) --------------------------------------------------------------

    def on_start(self, config: Mapping[str, Any], parameters: Mapping[str, Any], *, run_dir: Path | None) -> None:
        self._begin()
        self._call(self._open, dict(config), dict(parameters), run_dir, False)

    def on_resume(self, *, run_dir: Path | None) -> None:
        self._begin()
        self._call(self._reopen, run_dir)

    def on_event(self, event: Mapping[str, Any]) -> None:
        if self._pool is None or self.run_id is None:
            return
        values = event_metrics(event)
        if not values:
            return
        with self._lock:
            self._pending.extend(values)
            self._last_step = max(self._last_step, values[0][3])
            if self._flushing:
                return  # the flush already queued takes these too
            self._flushing = True
        self._pool.submit(self._flush_quietly)

    def on_finish(self, result: RunResult, *, run_dir: Path | None) -> None:
        if self._pool is None:
            return
        self._wake.set()  # a flush waiting for its interval goes now
        try:
            self._call(self._close, result, run_dir)
        finally:
            self._end()

    def on_error(self, error: BaseException) -> None:
        if self._pool is None:
            return
        status = "KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED"
        self._wake.set()
        try:
            self._call(self._fail, status, f"{type(error).__name__}: {error}")
        except Exception as exc:  # the run's own error is the one to see
            warnings.warn(f"MLflow could not record that the run ended {status}: {exc}", RuntimeWarning, stacklevel=2)
        finally:
            self._end()

    # -- the worker thread ------------------------------------------------------------------------

    def _begin(self) -> None:
        self._end()
        self.run_id = None
        self._pending = []
        self._flushing = False
        self._last_step = 0
        self._wake = threading.Event()
        self._last_flush = 0.0
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="feedprop-mlflow")

    def _end(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def _call(self, fn: Callable[..., T], *args: Any) -> T:
        assert self._pool is not None
        return self._pool.submit(fn, *args).result()

    def _uri(self, run_dir: Path | None) -> str:
        if self.tracking_uri is not None:
            return self.tracking_uri
        from_env = os.environ.get("MLFLOW_TRACKING_URI")
        if from_env:
            return from_env
        directory = run_dir if run_dir is not None else home_dir()
        directory.mkdir(parents=True, exist_ok=True)
        return store_uri(directory)

    def _connect(self, uri: str) -> Any:
        mlflow = _import_mlflow()
        try:
            with _quiet("mlflow", "alembic"):
                client = mlflow.MlflowClient(tracking_uri=uri)
                client.search_experiments(max_results=1)  # creates a new store now, quietly
        except Exception as exc:
            raise ConfigurationError(
                f"MLflow tracking cannot use the store {uri!r} ({type(exc).__name__}: {exc}); pass "
                "MLflowTracker(tracking_uri=...) a reachable store, e.g. 'sqlite:///path/mlflow.db', or train without "
                "tracker="
            ) from exc
        self._client, self.store = client, uri
        return client

    def _experiment(self, client: Any, uri: str) -> str:
        found = client.get_experiment_by_name(self.experiment)
        if found is None:
            return str(client.create_experiment(self.experiment, artifact_location=_artifact_location(uri)))
        if found.lifecycle_stage == "deleted":
            raise ConfigurationError(
                f"the MLflow experiment {self.experiment!r} in {uri} is deleted; restore it or pass another experiment="
            )
        return str(found.experiment_id)

    def _open(self, config: dict[str, Any], parameters: dict[str, Any], run_dir: Path | None, resumed: bool) -> None:
        from mlflow.entities import Param

        client = self._connect(self._uri(run_dir))
        experiment_id = self._experiment(client, self.store or "")
        tags = dict(self.tags)
        if run_dir is not None:
            tags["feedprop.run_dir"] = str(run_dir.absolute())
        if resumed:
            tags["feedprop.resumed"] = "true"
        name = self.run_name or (run_dir.absolute().name if run_dir is not None else None)
        self.run_id = str(client.create_run(experiment_id, run_name=name, tags=tags).info.run_id)
        params = [
            Param(key, truncate_middle(value if isinstance(value, str) else json.dumps(value), _PARAM_LENGTH))
            for key, value in flatten(config).items()
        ]
        for i in range(0, len(params), _PARAMS_PER_BATCH):
            client.log_batch(self.run_id, params=params[i : i + _PARAMS_PER_BATCH])
        if parameters:
            self._log_files({f"initial_parameters/{n}": text for n, text in parameter_files(parameters).items()})
        if run_dir is not None:
            state = {
                "format": _FORMAT,
                "tracking_uri": self.store,
                "experiment_id": experiment_id,
                "run_id": self.run_id,
            }
            atomic_write(run_dir / STATE_FILE, json.dumps(state, indent=1, sort_keys=True) + "\n")

    def _reopen(self, run_dir: Path | None) -> None:
        from mlflow.exceptions import MlflowException

        saved = _read_state(run_dir)
        if saved is None:  # the run was started without tracking: from now on it is tracked
            self._open({}, {}, run_dir, True)
            return
        uri, run_id = saved["tracking_uri"], saved["run_id"]
        if self.tracking_uri is not None and self.tracking_uri != uri:
            warnings.warn(
                f"this run is tracked in {uri}, so it continues there (tracking_uri={self.tracking_uri!r} is ignored)",
                RuntimeWarning,
                stacklevel=2,
            )
        client = self._connect(uri)
        try:
            run = client.get_run(run_id)
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise
            run = None
        if run is None or run.info.lifecycle_stage == "deleted":
            warnings.warn(
                f"MLflow run {run_id} is gone from {uri}; tracking in a new run", RuntimeWarning, stacklevel=2
            )
            self._open({}, {}, run_dir, True)
            return
        self.run_id = run_id
        client.update_run(run_id, status="RUNNING")
        client.set_tag(run_id, "feedprop.resumed", "true")

    def _flush(self) -> None:
        from mlflow.entities import Metric

        with self._lock:
            pending, self._pending = self._pending, []
            self._flushing = False
        if not pending or self.run_id is None:
            return
        for i in range(0, len(pending), _METRICS_PER_BATCH):
            batch = [
                Metric(name, value, stamp, step) for name, value, stamp, step in pending[i : i + _METRICS_PER_BATCH]
            ]
            self._client.log_batch(self.run_id, metrics=batch)

    def _flush_quietly(self) -> None:
        # At most one write to the store every FLUSH_SECONDS: a step of a few milliseconds would
        # otherwise pay a database write each; the events that arrive meanwhile join this flush.
        wait = FLUSH_SECONDS - (time.monotonic() - self._last_flush)
        if wait > 0:
            self._wake.wait(wait)
        self._last_flush = time.monotonic()
        try:
            self._flush()
        except Exception as exc:  # a lost metric must not stop training; the end of the run reports the rest
            message = f"MLflow did not record some step metrics: {type(exc).__name__}: {exc}"
            warnings.warn(message, RuntimeWarning, stacklevel=1)

    def _log_files(self, files: Mapping[str, str]) -> None:
        """Write ``files`` (artifact path -> text) to a temporary directory and log it in one call."""
        with tempfile.TemporaryDirectory(prefix="feedprop-mlflow-") as tmp:
            for name, text in files.items():
                path = Path(tmp, name)
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text, encoding="utf-8")
            self._client.log_artifacts(self.run_id, tmp)

    def _close(self, result: RunResult, run_dir: Path | None) -> None:
        from mlflow.entities import Metric, RunTag

        if self.run_id is None:
            return
        self._flush()
        stamp = int(time.time() * 1000)
        summary: dict[str, Any] = {
            "val_before": result.val_before,
            "val_after": result.val_after,
            "test_before": result.test_before,
            "test_after": result.test_after,
        }
        metrics = [
            Metric(name, value, stamp, self._last_step)
            for name, value in ((n, _number(v)) for n, v in summary.items())
            if value is not None
        ]
        metrics += [Metric(name, value, stamp, self._last_step) for name, value in usage_metrics(result.usage).items()]
        tags = [RunTag("feedprop.stop_reason", truncate_middle(result.stop_reason, _TAG_LENGTH))]
        self._client.log_batch(self.run_id, metrics=metrics, tags=tags)
        files = {f"parameters/{name}": text for name, text in parameter_files(result.best_state).items()}
        files["report.md"] = _report(result)
        self._log_files(files)
        for name in PAGE_FILES:
            if run_dir is not None and (run_dir / name).is_file():
                self._client.log_artifact(self.run_id, str(run_dir / name))
        self._client.set_terminated(self.run_id, "FINISHED")

    def _fail(self, status: str, message: str) -> None:
        if self.run_id is None:
            return
        self._flush_quietly()
        self._client.set_tag(self.run_id, "feedprop.error", truncate_middle(message, _TAG_LENGTH))
        self._client.set_terminated(self.run_id, status)


def _read_state(run_dir: Path | None) -> dict[str, Any] | None:
    """The MLflow store and run recorded in ``run_dir`` (``None`` if there is none)."""
    if run_dir is None or not (run_dir / STATE_FILE).is_file():
        return None
    path = run_dir / STATE_FILE
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(state, dict) or state.get("format") != _FORMAT:
            raise ValueError(f"not a {_FORMAT} file")
        if not isinstance(state.get("tracking_uri"), str) or not isinstance(state.get("run_id"), str):
            raise ValueError("tracking_uri or run_id missing")
    except (OSError, ValueError) as exc:
        raise CheckpointError(
            f"{path} cannot be read ({exc}); delete it to track the resumed run as a new MLflow run"
        ) from exc
    return state
