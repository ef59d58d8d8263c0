"""A blend of recommenders: per-user normalised scores, mixed with weights tuned on validation.

Different models' scores live on different scales (a VAE's logits, EASE's item-item sums), so each
member's scores are first normalised per user, then summed with `weights`:

- "zscore": (s - mean over items) / std over items, per user row;
- "softmax": log-softmax over items per row (log-probabilities; only their shift-free scale
  matters for ranking, so this is the log of a product of experts).

A blend is configured like any model (`BlendConfig`, recvae.models.configs): its members, each a
model name with that model's own settings, the normalisation, and either fixed weights or
`weights = "tune"`. Tuning tries every weight vector on a grid (steps of `weight_step`, summing
to 1, a member alone included) on the validation users and keeps the best by `metric`; every
grid point is scored by the shared `recvae.evaluate.evaluate_candidates`, each member scoring a
batch of users once for the whole grid. Already-fitted members can be reused through
`Blend.from_members` (e.g. an EASE that took minutes to fit, loaded from disk).
"""

from __future__ import annotations

import itertools
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import scipy.sparse as sp

from recvae.config import config_from_dict, config_to_dict
from recvae.data.split import Holdout
from recvae.errors import RecvaeError
from recvae.models.base import (
    Recommender,
    check_history,
    model_config,
    model_size,
    read_model_json,
    write_model_json,
)
from recvae.models.configs import BlendConfig, Normalise, uses_loop

__all__ = ["Blend", "BlendConfig", "mix", "normalise_scores", "tune_weights", "weight_grid"]


def normalise_scores(scores: np.ndarray, how: str) -> np.ndarray:
    """Per-row normalisation of a (users x items) float32 score matrix (new array)."""
    scores = np.asarray(scores, dtype=np.float32)
    if how == "zscore":
        mean = scores.mean(axis=1, keepdims=True)
        std = scores.std(axis=1, keepdims=True)
        std[std == 0] = 1.0  # a constant row (e.g. an empty history under EASE) stays all zeros
        return (scores - mean) / std
    if how == "softmax":
        shifted = scores - scores.max(axis=1, keepdims=True)
        return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    raise ValueError(f"unknown normalisation {how!r}: expected zscore or softmax")


def mix(normalised: list[np.ndarray], weights: tuple[float, ...] | list[float]) -> np.ndarray:
    """Weighted sum of already-normalised member scores."""
    out = np.zeros_like(normalised[0])
    for scores, weight in zip(normalised, weights, strict=True):
        out += np.float32(weight) * scores
    return out


def weight_grid(n_members: int, step: float) -> list[tuple[float, ...]]:
    """Every weight vector of `n_members` non-negative multiples of `step` that sum to 1
    (two members, step 0.1: (0.0, 1.0), (0.1, 0.9), ..., (1.0, 0.0))."""
    parts = round(1.0 / step)
    if n_members == 1:
        return [(1.0,)]
    grid = []
    for cut in itertools.combinations(range(parts + n_members - 1), n_members - 1):
        counts = np.diff([-1, *cut, parts + n_members - 1]) - 1  # stars and bars
        grid.append(tuple(round(float(c) / parts, 10) for c in counts))
    return sorted(grid, reverse=True)


def tune_weights(
    models: list[Recommender],
    holdout: Holdout,
    normalise: str,
    metric: str,
    step: float,
    batch_size: int = 1000,
) -> tuple[tuple[float, ...], list[dict[str, Any]]]:
    """The weight vector of `weight_grid` with the best validation `metric`, and every grid
    point's metrics (from `recvae.evaluate.evaluate_candidates`, the shared evaluation)."""
    from recvae.evaluate import evaluate_candidates
    from recvae.train import validation_ks

    grid = weight_grid(len(models), step)

    def score_grid(history: sp.csr_matrix) -> dict[tuple[float, ...], np.ndarray]:
        parts = [normalise_scores(model.score(history), normalise) for model in models]
        return {weights: mix(parts, weights) for weights in grid}

    ks = validation_ks(metric, holdout.n_items)
    results = evaluate_candidates(score_grid, holdout, ks=ks, batch_size=batch_size)
    table = [{"weights": list(w), **results[w].means} for w in grid]
    best = max(grid, key=lambda w: results[w].means[metric])  # first best in grid order
    return best, table


class Blend:
    """Fits its members and ranks by the weighted sum of their per-user normalised scores."""

    name: ClassVar[str] = "blend"
    config_class: ClassVar[type] = BlendConfig

    def __init__(self, config: BlendConfig | None = None, **overrides: Any) -> None:
        self.config: BlendConfig = model_config(BlendConfig, config, overrides, self.name)
        self.models: list[Recommender] = []
        self.n_items = 0
        self.weights: tuple[float, ...] | None = (
            None if self.config.weights == "tune" else tuple(self.config.weights)
        )
        self.candidates: list[dict[str, Any]] = []  # per member: settings, fit seconds
        self.tuning: list[dict[str, Any]] = []  # per weight vector tried: its validation metrics

    @classmethod
    def from_members(
        cls,
        models: list[Recommender],
        weights: tuple[float, ...],
        n_items: int,
        normalise: Normalise = "zscore",
    ) -> Self:
        """A blend of models that are already fitted (nothing is refitted)."""
        members = tuple({"model": m.name, **config_to_dict(m.config)} for m in models)  # type: ignore[attr-defined]
        blend = cls(BlendConfig(members, tuple(weights), normalise))
        blend.models, blend.n_items = list(models), n_items
        return blend

    def fit(
        self,
        train: sp.csr_matrix,
        valid: Holdout | None = None,
        *,
        callback: Any = None,
        progress: bool = False,
    ) -> Self:
        """Fit each member on `train` (members trained by the epoch loop validate on `valid` and
        report to `callback(epoch, record)` with a `member` key), then tune the weights on
        `valid` when the config says "tune"."""
        from recvae.models import build_model

        config = self.config
        if config.weights == "tune" and valid is None:
            raise RecvaeError(
                'blend: weights = "tune" needs validation users to tune on; train with '
                "validation or give fixed weights, e.g. weights = [0.5, 0.5]"
            )
        self.n_items = train.shape[1]
        self.models, self.candidates = [], []
        for index, name in enumerate(config.member_names):
            settings = config.member_settings(index)
            if uses_loop(name) and "metric" not in {**settings, **settings.get("loop", {})}:
                settings["metric"] = config.metric  # members pick epochs by the blend's metric
            model: Any = build_model(name, settings)
            started = time.perf_counter()
            if uses_loop(name):
                member_callback = _tagged(callback, index, name) if callback else None
                model.fit(train, valid, callback=member_callback, progress=progress)
            else:
                model.fit(train, valid)
            self.candidates.append(
                {
                    "member": index,
                    "model": name,
                    "config": config_to_dict(model.config),
                    "fit_seconds": round(time.perf_counter() - started, 3),
                }
            )
            self.models.append(model)
        if config.weights == "tune":
            assert valid is not None
            self.weights, self.tuning = tune_weights(
                self.models, valid, config.normalise, config.metric, config.weight_step
            )
        return self

    def score(self, history: sp.csr_matrix) -> np.ndarray:
        if not self.models or self.weights is None:
            raise RecvaeError("blend: call fit (or load a trained blend) before score")
        history = check_history(history, self.n_items, self.name)
        parts = [normalise_scores(m.score(history), self.config.normalise) for m in self.models]
        return mix(parts, self.weights)

    @property
    def fitted_config(self) -> BlendConfig:
        """The config with the weights in use (the tuned ones after tuning)."""
        if self.weights is None:
            return self.config
        return replace(self.config, weights=self.weights)

    def save(self, path: Path) -> None:
        if not self.models or self.weights is None:
            raise RecvaeError("blend: nothing to save, the blend has not been fitted")
        path = Path(path)
        for index, model in enumerate(self.models):
            model.save(path / f"member-{index}")
        write_model_json(
            path,
            self.name,
            config_to_dict(self.fitted_config),
            n_items=self.n_items,
            tuned=self.config.weights == "tune",
            tuning=self.tuning,
        )

    @classmethod
    def load(cls, path: Path) -> Self:
        from recvae.models import load_model

        path = Path(path)
        meta = read_model_json(path, expect=cls.name)
        blend = cls(config_from_dict(BlendConfig, meta.get("config", {}), source=str(path)))
        blend.n_items = model_size(meta, "n_items", path)
        blend.tuning = list(meta.get("tuning", []))
        count = len(blend.config.members)
        blend.models = [load_model(path / f"member-{i}") for i in range(count)]
        return blend


def _tagged(callback: Any, index: int, name: str) -> Any:
    def report(epoch: int, record: dict[str, Any]) -> Any:
        return callback(epoch, {**record, "member": index, "member_model": name})

    return report
