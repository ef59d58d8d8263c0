"""Optional experiment tracking in MLflow: parameters, per-epoch metrics, reports and models.

    from recvae import tracking

    with tracking.start_run(uri, experiment="recvae-nightly", run_name="nightly") as sink:
        sink.log_params({"job": "nightly", "model": "multvae"})
        ...                                   # train, save, publish: tracked by themselves
        sink.log_artifact("runs/2026-12-02/report.json", "report")

While a run is open it follows the library's log events (see recvae.logs), so `recvae train`,
the nightly job and the Python API are tracked without handing the sink around:

- `epoch`: the epoch's numbers (loss, beta, ndcg@100, ...) as metrics at step = epoch;
- `model_saved`: the model directory as artifacts under `model/`, and its metadata's model name,
  config, seed and data fingerprint as parameters, its best validation metrics as `best_*`;
- `report`: the report file as an artifact under `report/`.

mlflow is not a dependency (`pip install 'recvae[mlflow]'`). Without a tracking URI (the `uri`
argument, `recvae --mlflow-uri`, or MLFLOW_TRACKING_URI) or without mlflow installed,
`start_run` returns a `NullSink` that does nothing. A failing tracking server never fails the
job: the error is logged as a warning and the run goes on.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from pathlib import Path
from types import ModuleType, TracebackType
from typing import Any, Self

from recvae.errors import RecvaeError
from recvae.logs import LOGGER_NAME

log = logging.getLogger(__name__)

ENV_URI = "MLFLOW_TRACKING_URI"
ENV_EXPERIMENT = "MLFLOW_EXPERIMENT_NAME"
DEFAULT_EXPERIMENT = "recvae"
_PARAM_CHARS = 500  # MLflow's limit on a parameter value before 2.x raised it; safe everywhere


class TrackingSink:
    """Where a run's parameters, metrics and artifacts go. This base class drops everything."""

    def log_params(self, params: dict[str, Any]) -> None:
        """Record settings (nested dicts are flattened to dotted keys); a key keeps its first
        value."""

    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        """Record numbers (non-numeric and non-finite values are skipped); `ndcg@100` is
        recorded as `ndcg_at_100` (MLflow refuses `@` in names)."""

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        """Attach one file (a report, a plot)."""

    def log_artifacts(self, directory: str | Path, artifact_path: str | None = None) -> None:
        """Attach every file of a directory (a model directory)."""

    def end(self, failed: bool = False) -> None:
        """Close the run, as FAILED when `failed`."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.end(failed=exc_type is not None)


class NullSink(TrackingSink):
    """No tracking: no URI was given or mlflow is not installed."""


class MlflowSink(TrackingSink):
    """An open MLflow run that also follows recvae's log events (see the module docstring)."""

    def __init__(
        self,
        mlflow: ModuleType,
        uri: str,
        experiment: str,
        run_name: str | None = None,
        tags: dict[str, str] | None = None,
    ) -> None:
        self.mlflow = mlflow
        mlflow.set_tracking_uri(uri)
        mlflow.set_experiment(experiment)
        self.run = mlflow.start_run(run_name=run_name, tags=tags)
        self.params: dict[str, str] = {}
        self.closed = False
        self._handler = _EventHandler(self)
        logger = logging.getLogger(LOGGER_NAME)
        self._previous_level = logger.level
        if logger.getEffectiveLevel() > logging.INFO:  # events are INFO records
            logger.setLevel(logging.INFO)
        logger.addHandler(self._handler)
        log.info("tracking in MLflow at %s, experiment %s", uri, experiment,
                 extra={"event": "tracking", "uri": uri, "experiment": experiment})  # fmt: skip

    def log_params(self, params: dict[str, Any]) -> None:
        fresh = {}
        for key, value in _flatten(params).items():
            text = str(value)[:_PARAM_CHARS]
            if key not in self.params:
                fresh[key] = self.params[key] = text
        if fresh:
            self._call("log_params", fresh)

    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        numbers = {
            metric_name(key): float(value)
            for key, value in _flatten(metrics).items()
            if isinstance(value, int | float) and not isinstance(value, bool)
            and math.isfinite(value)
        }  # fmt: skip
        if numbers:
            self._call("log_metrics", numbers, step=step)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self._call("log_artifact", str(path), artifact_path=artifact_path)

    def log_artifacts(self, directory: str | Path, artifact_path: str | None = None) -> None:
        self._call("log_artifacts", str(directory), artifact_path=artifact_path)

    def log_model_dir(self, directory: str | Path) -> None:
        """A saved model: its files, and from its metadata.json the settings and best metrics."""
        directory = Path(directory)
        metadata_file = directory / "metadata.json"
        if metadata_file.is_file():
            metadata = json.loads(metadata_file.read_text())
            dataset = metadata.get("dataset") or {}
            self.log_params({
                "model": metadata.get("model"), "config": metadata.get("config") or {},
                "seed": metadata.get("seed"), "dataset.fingerprint": dataset.get("fingerprint"),
            })  # fmt: skip
            # validation metrics: `metrics` (recvae.workflow.fit's layout), else the older
            # `training.best_metrics`
            best = metadata.get("metrics") or (metadata.get("training") or {}).get("best_metrics")
            self.log_metrics({f"best_{key}": value for key, value in (best or {}).items()})
        self.log_artifacts(directory, "model")

    def end(self, failed: bool = False) -> None:
        if self.closed:
            return
        self.closed = True
        logger = logging.getLogger(LOGGER_NAME)
        logger.removeHandler(self._handler)
        logger.setLevel(self._previous_level)
        self._call("end_run", status="FAILED" if failed else "FINISHED")

    def _call(self, method: str, *args: Any, **kwargs: Any) -> None:
        """Call mlflow; a tracking failure is a warning, never the job's failure."""
        try:
            getattr(self.mlflow, method)(*args, **kwargs)
        except Exception as error:  # mlflow raises many types (HTTP, MlflowException, OSError)
            log.warning("MLflow %s failed: %s", method, error,
                        extra={"event": "tracking_error", "method": method})  # fmt: skip


class _EventHandler(logging.Handler):
    """Turns recvae's log events into tracking calls while a run is open."""

    def __init__(self, sink: MlflowSink) -> None:
        super().__init__(level=logging.INFO)
        self.sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        event = getattr(record, "event", None)
        if event == "epoch":
            self.sink.log_metrics(getattr(record, "metrics", {}), step=record.epoch)
        elif event == "model_saved":
            self.sink.log_model_dir(record.path)
        elif event == "report":
            self.sink.log_artifact(record.path, "report")


def start_run(
    uri: str | None = None,
    experiment: str | None = None,
    run_name: str | None = None,
    tags: dict[str, str] | None = None,
) -> TrackingSink:
    """Open an MLflow run and return its sink, or a `NullSink` when there is nothing to do.

    `uri` defaults to $MLFLOW_TRACKING_URI and `experiment` to $MLFLOW_EXPERIMENT_NAME, else
    "recvae". A URI given explicitly without mlflow installed is an error (the user asked for
    tracking); one that only comes from the environment is a warning.
    """
    chosen = uri or os.environ.get(ENV_URI)
    if not chosen:
        return NullSink()
    try:
        import mlflow
    except ImportError as error:
        if uri:
            raise RecvaeError(
                "--mlflow-uri needs the mlflow package: pip install 'recvae[mlflow]'"
            ) from error
        log.warning("%s is set but mlflow is not installed; not tracking", ENV_URI)
        return NullSink()
    name = experiment or os.environ.get(ENV_EXPERIMENT) or DEFAULT_EXPERIMENT
    return MlflowSink(mlflow, chosen, name, run_name, tags)


def metric_name(key: str) -> str:
    """An MLflow-safe metric name: `ndcg@100` -> `ndcg_at_100`, other odd characters -> `_`."""
    return re.sub(r"[^0-9A-Za-z_\-. /]", "_", key.replace("@", "_at_"))


def _flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"config": {"l2": 1}} -> {"config.l2": 1}; None values are dropped."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{name}."))
        elif value is not None:
            flat[name] = value
    return flat
