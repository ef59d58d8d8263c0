"""Popularity: every user gets the items most users interacted with in training.

The floor every model must clear: a model that loses to it has learned nothing personal.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import scipy.sparse as sp

from recvae.data.split import Holdout, as_csr
from recvae.errors import RecvaeError
from recvae.models.base import (
    check_history,
    load_array,
    model_config,
    read_model_json,
    write_model_json,
)
from recvae.models.configs import PopularityConfig


class Popularity:
    """Scores each item by the number of training users who interacted with it."""

    name: ClassVar[str] = "popularity"

    def __init__(self, config: PopularityConfig | None = None, **overrides: Any) -> None:
        self.config = model_config(PopularityConfig, config, overrides, self.name)
        self.item_counts: np.ndarray | None = None

    def fit(self, train: sp.csr_matrix, valid: Holdout | None = None) -> Self:
        train = as_csr(train)
        # Count users, not summed weights, so repeated or weighted events do not dominate.
        self.item_counts = np.bincount(train.indices, minlength=train.shape[1]).astype(np.float32)
        return self

    def score(self, history: sp.csr_matrix) -> np.ndarray:
        counts = self._fitted_counts()
        history = check_history(history, len(counts), self.name)
        return np.tile(counts, (history.shape[0], 1))

    def save(self, path: Path) -> None:
        path = Path(path)
        write_model_json(path, self.name, asdict(self.config))
        np.save(path / "item_counts.npy", self._fitted_counts(), allow_pickle=False)

    @classmethod
    def load(cls, path: Path) -> Self:
        path = Path(path)
        model = cls(read_model_json(path, expect=cls.name).get("config", {}))
        model.item_counts = load_array(path / "item_counts.npy", ndim=1).astype(np.float32)
        return model

    def _fitted_counts(self) -> np.ndarray:
        if self.item_counts is None:
            raise RecvaeError("popularity: call fit before score or save")
        return self.item_counts
