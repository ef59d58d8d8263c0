"""BPR (Rendle et al. 2009) via `implicit`'s CPU SGD solver.

implicit cannot recalculate a BPR user (its `recalculate_user` is ALS-only), and BPR's pairwise
loss has no closed form. Fold-in here fits each history row's user factors by confidence-weighted
ridge regression against the fixed item factors, the same least squares ALS uses:
    (Y'Y + (confidence - 1) Y_h'Y_h + reg I) x = confidence Y_h'1
then scores x . y_i + b_i with BPR's learned item bias. Every evaluated user, training or not,
is scored this way, so the numbers measure BPR's item factors under a least-squares fold-in,
not BPR's own user factors; `fold_in_confidence` and `fold_in_regularization` tune it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from recvae.data.split import Holdout, as_csr
from recvae.errors import RecvaeError
from recvae.models.als import resolve_threads
from recvae.models.base import (
    check_history,
    item_blocks,
    load_array,
    model_config,
    read_model_json,
    write_model_json,
)
from recvae.models.configs import BPRConfig


def ridge_fold_in(
    history: sp.csr_matrix, items: np.ndarray, confidence: float, regularization: float
) -> np.ndarray:
    """Per-row weighted least squares of a user vector against fixed item vectors."""
    factors = items.shape[1]
    base = items.T @ items + regularization * np.eye(factors, dtype=np.float64)
    users = np.zeros((history.shape[0], factors), dtype=np.float32)
    for row in range(history.shape[0]):
        seen = history.indices[history.indptr[row] : history.indptr[row + 1]]
        if len(seen) == 0:
            continue
        seen_items = items[seen].astype(np.float64)
        lhs = base + (confidence - 1.0) * seen_items.T @ seen_items
        users[row] = np.linalg.solve(lhs, confidence * seen_items.sum(axis=0))
    return users


class BPR:
    """Bayesian personalised ranking matrix factorisation."""

    name: ClassVar[str] = "bpr"

    def __init__(self, config: BPRConfig | None = None, **overrides: Any) -> None:
        self.config: BPRConfig = model_config(BPRConfig, config, overrides, self.name)
        self.item_factors: np.ndarray | None = None  # (n_items, factors + 1); last column: bias

    def fit(self, train: sp.csr_matrix, valid: Holdout | None = None) -> Self:
        from implicit.cpu.bpr import BayesianPersonalizedRanking

        config = self.config
        with threadpool_limits(limits=1, user_api="blas"):
            model = BayesianPersonalizedRanking(
                factors=config.factors,
                learning_rate=config.learning_rate,
                regularization=config.regularization,
                iterations=config.iterations,
                num_threads=resolve_threads(config.num_threads),
                random_state=config.seed,
            )
            model.fit(as_csr(train), show_progress=False)
        self.item_factors = np.asarray(model.item_factors, dtype=np.float32)
        return self

    def score(self, history: sp.csr_matrix) -> np.ndarray:
        items = self._fitted_items()
        history = check_history(history, items.shape[0], self.name)
        vectors, bias = items[:, :-1], items[:, -1]
        users = ridge_fold_in(
            history, vectors, self.config.fold_in_confidence, self.config.fold_in_regularization
        )
        return (users @ vectors.T + bias).astype(np.float32, copy=False)

    def score_blocks(
        self, history: sp.csr_matrix, block_size: int
    ) -> Iterator[tuple[int, np.ndarray]]:
        """The fold-in once, then user vectors @ item vectors[block].T + bias per item block."""
        items = self._fitted_items()
        history = check_history(history, items.shape[0], self.name)
        vectors, bias = items[:, :-1], items[:, -1]
        users = ridge_fold_in(
            history, vectors, self.config.fold_in_confidence, self.config.fold_in_regularization
        )
        for block in item_blocks(items.shape[0], block_size):
            scores = users @ vectors[block].T + bias[block]
            yield block.start, scores.astype(np.float32, copy=False)

    def save(self, path: Path) -> None:
        path = Path(path)
        write_model_json(path, self.name, asdict(self.config))
        np.save(path / "item_factors.npy", self._fitted_items(), allow_pickle=False)

    @classmethod
    def load(cls, path: Path) -> Self:
        path = Path(path)
        model = cls(read_model_json(path, expect=cls.name).get("config", {}))
        model.item_factors = load_array(path / "item_factors.npy", ndim=2)
        return model

    def _fitted_items(self) -> np.ndarray:
        if self.item_factors is None:
            raise RecvaeError("bpr: call fit before score or save")
        return self.item_factors
