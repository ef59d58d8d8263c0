"""A blend of recommenders: per-user normalised scores, mixed with fixed weights.

Different models' scores live on different scales (a VAE's logits, EASE's item-item sums), so each
member's scores are first normalised per user, then summed with `weights`:

- "zscore": (s - mean over items) / std over items, per user row;
- "softmax": log-softmax over items per row (log-probabilities; only their shift-free scale
  matters for ranking, so this is the log of a product of experts).

The weights are tuned on validation like any other setting. Members are fitted by the blend (each
with its own settings), or an already-fitted member is reused through `Blend.from_members`
(e.g. an EASE that took minutes to fit, loaded from disk).

    # blend.toml (recvae train ... --model blend --config blend.toml)
    members = ["recvae", "ease"]
    weights = [0.5, 0.5]
    [settings.recvae]
    epochs = 60
    [settings.ease]
    l2 = 500.0
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, Self

import numpy as np
import scipy.sparse as sp

from recvae.config import config_from_dict, config_to_dict
from recvae.data.split import Holdout
from recvae.errors import RecvaeError
from recvae.models.base import (
    Recommender,
    check_history,
    model_size,
    read_model_json,
    write_model_json,
)

Normalise = Literal["zscore", "softmax"]


@dataclass(frozen=True)
class BlendConfig:
    """Which models to blend, their weights, the per-user normalisation, members' settings."""

    members: tuple[str, ...] = ("recvae", "ease")
    weights: tuple[float, ...] = (0.5, 0.5)
    normalise: Normalise = "zscore"
    settings: dict[str, dict[str, Any]] = field(default_factory=dict)  # member name -> settings

    def __post_init__(self) -> None:
        if len(self.members) < 1 or len(self.members) != len(self.weights):
            raise ValueError(
                f"members and weights must be non-empty and of equal length, got "
                f"{len(self.members)} members and {len(self.weights)} weights"
            )
        if len(set(self.members)) != len(self.members):
            raise ValueError(f"members must be distinct, got {self.members}")
        unknown = sorted(set(self.settings) - set(self.members))
        if unknown:
            raise ValueError(f"settings for models that are not members: {', '.join(unknown)}")


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


class Blend:
    """Fits its members and ranks by the weighted sum of their per-user normalised scores."""

    name: ClassVar[str] = "blend"
    config_class: ClassVar[type] = BlendConfig

    def __init__(self, config: BlendConfig | None = None, **overrides: Any) -> None:
        base = config if config is not None else BlendConfig()
        if overrides:
            base = config_from_dict(BlendConfig, {**config_to_dict(base), **overrides})
        self.config: BlendConfig = base
        self.models: list[Recommender] = []
        self.n_items = 0

    @classmethod
    def from_members(
        cls,
        models: list[Recommender],
        weights: tuple[float, ...],
        n_items: int,
        normalise: Normalise = "zscore",
    ) -> Self:
        """A blend of models that are already fitted (nothing is refitted)."""
        blend = cls(
            BlendConfig(tuple(m.name for m in models), tuple(weights), normalise, settings={})
        )
        blend.models, blend.n_items = list(models), n_items
        return blend

    def fit(self, train: sp.csr_matrix, valid: Holdout | None = None) -> Self:
        """Fit each member on `train` (members that validate, e.g. RecVAE, get `valid`)."""
        from recvae.models import model_class

        self.n_items = train.shape[1]
        self.models = [
            model_class(name)(**self.config.settings.get(name, {})).fit(train, valid)
            for name in self.config.members
        ]
        return self

    def score(self, history: sp.csr_matrix) -> np.ndarray:
        if not self.models:
            raise RecvaeError("blend: call fit (or load a trained blend) before score")
        history = check_history(history, self.n_items, self.name)
        parts = [normalise_scores(m.score(history), self.config.normalise) for m in self.models]
        return mix(parts, self.config.weights)

    def save(self, path: Path) -> None:
        if not self.models:
            raise RecvaeError("blend: nothing to save, the blend has not been fitted")
        path = Path(path)
        for index, model in enumerate(self.models):
            model.save(path / f"member-{index}")
        write_model_json(path, self.name, config_to_dict(self.config), n_items=self.n_items)

    @classmethod
    def load(cls, path: Path) -> Self:
        from recvae.models import load_model

        path = Path(path)
        meta = read_model_json(path, expect=cls.name)
        blend = cls(config_from_dict(BlendConfig, meta.get("config", {}), source=str(path)))
        blend.n_items = model_size(meta, "n_items", path)
        blend.models = [load_model(path / f"member-{i}") for i in range(len(blend.config.members))]
        return blend
