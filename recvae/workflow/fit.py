"""Fit: a dataset, a model spec and a protocol give a fitted model, its validation evaluation and
the one metadata layout every artifact carries.

    result = fit_model(dataset, TrainSpec.of("ease", {"l2": 300.0}), ProtocolSpec("auto"))
    result.save("models/ease")          # the artifact: model, items, metadata, popularity

`recvae train`, `recvae demo`, the nightly job and benchmarks/beyond.py call `fit_model`; none of
them splits, fits or writes model metadata itself. Every model trains the same way: the ones
trained by the epoch loop also take the epoch callback, the checkpoint directory (resume after a
crash) and a warm-start source; the others train in one call and the metadata says so.

Metadata layout (metadata.json of the artifact):

    model, config        the model's name and its full config (a blend: with the tuned weights)
    seed                 the run's seed (the loop's, or the model's own), or null
    dataset              path, fingerprint, shape, nnz
    split                source, protocol, params, train_users, valid_users
    training             seconds, epochs_run, best_epoch, stopped, warm_start, checkpoint_dir
    candidates           what was fitted or tried: one row per model fitted (a blend's members)
                         and per blend weight vector tried, with its seconds or scores
    evaluation           metric, users, means, stderrs on the validation users (null without)
    metrics              evaluation.means again: what `recvae models list` and gates read
    run                  time, git commit, package versions, machine
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recvae.artifact import Artifact, save_artifact
from recvae.config import config_to_dict, load_config
from recvae.data.split import ProtocolSpec, Split, describe_split, make_split
from recvae.data.vocab import Vocabulary
from recvae.errors import RecvaeError
from recvae.evaluate import Evaluation, evaluate
from recvae.models import build_model
from recvae.models.base import Recommender
from recvae.models.configs import config_class, make_config, setting_types, uses_loop
from recvae.provenance import run_info

# Called after every epoch of an epoch-trained model (a blend's members too, with a "member" key
# in the record): (1-based epoch, the epoch's record). Return True to stop training.
EpochCallback = Callable[[int, dict[str, Any]], bool | None]

DEFAULT_METRIC = "ndcg@100"


@dataclass(frozen=True)
class TrainSpec:
    """Which model to fit and its typed config (recvae.models.configs)."""

    model: str
    config: Any

    @classmethod
    def of(cls, model: str, settings: Any = None, source: str = "") -> TrainSpec:
        """From a config, a dict of settings (flat loop keys allowed) or None (defaults)."""
        return cls(model, make_config(model, settings, source or model))

    @classmethod
    def from_toml(
        cls, model: str, path: Path | str | None = None, overrides: dict[str, Any] | None = None
    ) -> TrainSpec:
        """The model's defaults, then a TOML file (`recvae train --config`), then overrides."""
        return cls(model, load_config(config_class(model), path, overrides))

    @property
    def metric(self) -> str:
        """The validation metric the model picks by (best epoch, blend weights)."""
        loop = getattr(self.config, "loop", None)
        return getattr(loop, "metric", None) or getattr(self.config, "metric", DEFAULT_METRIC)

    @property
    def seed(self) -> int | None:
        loop = getattr(self.config, "loop", None)
        return getattr(loop, "seed", getattr(self.config, "seed", None))


@dataclass
class FitResult:
    """The fitted model with what it was fitted on and how well it did on validation."""

    model: Recommender
    items: Vocabulary
    split: Split
    evaluation: Evaluation | None
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def artifact(self) -> Artifact:
        return Artifact(self.model, self.items, self.metadata)

    def save(self, out: Path | str) -> None:
        """Write the artifact atomically, with the training matrix's item popularity."""
        save_artifact(self.artifact, Path(out), train=self.split.train)


def fit_model(
    dataset: Any,
    spec: TrainSpec | str,
    split_settings: ProtocolSpec | None = None,
    *,
    on_epoch: EpochCallback | None = None,
    warm_start: Recommender | Path | str | None = None,
    checkpoint_dir: Path | str | None = None,
    log_path: Path | str | None = None,
    progress: bool = False,
    metric: str | None = None,
    dataset_path: Path | str | None = None,
) -> FitResult:
    """Split `dataset` (a recvae Dataset) by `split_settings` (default "auto": its own split,
    else held-out users), fit `spec`'s model on the training part, evaluate it on the
    validation users and describe the run in one metadata layout.

    `warm_start` (a saved model directory or a fitted model of the same kind) and
    `checkpoint_dir` (best/last checkpoints; a crashed run resumes from `last`) apply to the
    models trained by the epoch loop; `metric` (default: the model's own validation metric)
    is what the evaluation leads with.
    """
    spec = TrainSpec.of(spec) if isinstance(spec, str) else spec
    protocol = split_settings or ProtocolSpec("auto", seed=spec.seed or 0)
    split = make_split(dataset, protocol)
    if split.train.shape[1] != dataset.matrix.shape[1]:
        raise RecvaeError(
            f"the split has {split.train.shape[1]} items but the dataset {dataset.matrix.shape[1]}"
        )
    model: Any = build_model(spec.model, spec.config)
    started = time.perf_counter()
    training = _fit(model, spec.model, split, on_epoch, warm_start, checkpoint_dir, log_path,
                    progress)  # fmt: skip
    training["seconds"] = round(time.perf_counter() - started, 3)
    if metric is None and "metric" not in setting_types(spec.model) and split.valid is not None:
        metric = _fitting_metric(spec.metric, split.valid.n_items)  # a small catalogue
    metric = metric or spec.metric
    evaluation = _evaluate(model, split, metric)
    metadata = fit_metadata(
        spec.model, model, dataset, describe_split(dataset, protocol, split), training,
        evaluation, metric, dataset_path,
    )  # fmt: skip
    if metadata["seed"] is None:  # a model without randomness: the seed is the split's
        metadata["seed"] = protocol.seed
    return FitResult(model, dataset.items, split, evaluation, metadata)


def _fit(
    model: Any,
    name: str,
    split: Split,
    on_epoch: EpochCallback | None,
    warm_start: Any,
    checkpoint_dir: Path | str | None,
    log_path: Path | str | None,
    progress: bool,
) -> dict[str, Any]:
    """Fit with the options the model takes; say in the record which ones it used."""
    record: dict[str, Any] = {"warm_start": None, "checkpoint_dir": None}
    if uses_loop(name):
        model.fit(
            split.train, split.valid, callback=on_epoch, checkpoint_dir=checkpoint_dir,
            warm_start=warm_start, log_path=log_path, progress=progress,
        )  # fmt: skip
        record["warm_start"] = _describe_source(warm_start)
        record["checkpoint_dir"] = str(checkpoint_dir) if checkpoint_dir is not None else None
        record.update(
            epochs_run=len(model.history), best_epoch=model.best_epoch, stopped=model.stopped,
            best_metrics=model.best_metrics,
        )  # fmt: skip
    elif name == "blend":
        model.fit(split.train, split.valid, callback=on_epoch, progress=progress)
    else:
        model.fit(split.train, split.valid)
    if warm_start is not None and record["warm_start"] is None:
        record["warm_start"] = f"not used: {name} does not warm start"
    return record


def _describe_source(source: Any) -> str | None:
    if source is None:
        return None
    if isinstance(source, Path | str):
        return str(source)
    described = getattr(source, "describe", None)  # e.g. a warm start across catalogue growth
    return described() if callable(described) else f"a {type(source).__name__}"


def _fitting_metric(metric: str, n_items: int) -> str:
    """`metric`, or the same metric at K = n_items when the catalogue has fewer items than K (a
    model without a metric setting of its own should not fail over the default's K)."""
    from recvae.metrics import parse_metric

    name, k = parse_metric(metric)
    return metric if k <= n_items else f"{name}@{n_items}"


def _evaluate(model: Recommender, split: Split, metric: str) -> Evaluation | None:
    from recvae.train import validation_ks

    if split.valid is None:
        return None
    batch = getattr(getattr(model.config, "loop", None), "eval_batch_size", 1000)  # type: ignore[attr-defined]
    return evaluate(model, split.valid, ks=validation_ks(metric, split.valid.n_items),
                    batch_size=batch)  # fmt: skip


def fit_metadata(
    name: str,
    model: Any,
    dataset: Any,
    split: dict[str, Any],
    training: dict[str, Any],
    evaluation: Evaluation | None,
    metric: str,
    dataset_path: Path | str | None = None,
) -> dict[str, Any]:
    """The one metadata layout (see the module docstring); also used by a benchmark that
    assembles an artifact from models fitted earlier, so every artifact reads the same."""
    config = getattr(model, "fitted_config", model.config)
    loop = getattr(config, "loop", None)
    evaluated = None
    if evaluation is not None:
        evaluated = {"metric": metric, "users": evaluation.users, "means": evaluation.means,
                     "stderrs": evaluation.stderrs}  # fmt: skip
    return {
        "model": name,
        "config": config_to_dict(config),
        "seed": getattr(loop, "seed", getattr(config, "seed", None)),
        "dataset": {
            "path": str(dataset_path) if dataset_path is not None else None,
            "fingerprint": dataset.fingerprint(),
            "shape": list(dataset.matrix.shape),
            "nnz": int(dataset.matrix.nnz),
        },
        "split": split,
        "training": training,
        "candidates": candidates(name, model, training, evaluation),
        "evaluation": evaluated,
        "metrics": dict(evaluation.means) if evaluation is not None else {},
        "run": run_info(),
    }


def candidates(
    name: str, model: Any, training: dict[str, Any], evaluation: Evaluation | None
) -> list[dict[str, Any]]:
    """One row per model fitted (a blend: each member) and per blend weight vector tried."""
    if name != "blend":
        metrics = dict(evaluation.means) if evaluation is not None else {}
        return [{"kind": "model", "model": name, "fit_seconds": training.get("seconds"),
                 "metrics": metrics}]  # fmt: skip
    rows = [{"kind": "member", **member} for member in model.candidates]
    rows += [{"kind": "weights", **row} for row in model.tuning]
    return rows
