"""ALS for implicit feedback (Hu, Koren & Volinsky 2008) via `implicit`'s CPU solver.

Each observed (user, item) gets confidence `alpha * value` (implicit's convention: unobserved
pairs have confidence 1 and preference 0). Fold-in solves each history row's least squares
against the fixed item factors with implicit's exact Cholesky solver (`recalculate_user`), so
training users, held-out users and new users are scored by the same code.

implicit runs its own thread pool; a multi-threaded BLAS underneath it oversubscribes the CPU
(implicit warns about OpenBLAS), so every call into implicit runs with BLAS limited to 1 thread.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from recvae.data.split import Holdout, as_csr
from recvae.errors import RecvaeError
from recvae.models.base import (
    check_history,
    item_blocks,
    load_array,
    model_config,
    read_model_json,
    write_model_json,
)
from recvae.models.configs import ALSConfig
from recvae.models.memory import FLOAT, MemoryEstimate, check_fits


def resolve_threads(num_threads: int) -> int:
    return num_threads if num_threads > 0 else (os.cpu_count() or 1)


class ALS:
    """Matrix factorisation by alternating least squares with confidence weighting."""

    name: ClassVar[str] = "als"

    def __init__(self, config: ALSConfig | None = None, **overrides: Any) -> None:
        self.config: ALSConfig = model_config(ALSConfig, config, overrides, self.name)
        self._model = None

    def _implicit_model(self):  # -> implicit.cpu.als.AlternatingLeastSquares
        from implicit.cpu.als import AlternatingLeastSquares

        config = self.config
        with threadpool_limits(limits=1, user_api="blas"):
            return AlternatingLeastSquares(
                factors=config.factors,
                regularization=config.regularization,
                alpha=config.alpha,
                iterations=config.iterations,
                num_threads=resolve_threads(config.num_threads),
                random_state=config.seed,
            )

    def memory_estimate(self, train: sp.csr_matrix) -> MemoryEstimate:
        """implicit's fit: float32 user and item factors, and its copies of the matrix (the
        confidence-weighted user x item CSR and its item x user transpose)."""
        n_users, n_items = train.shape
        matrix = train.nnz * (4 + 4) + (max(n_users, n_items) + 1) * 4  # float32, int32 indices
        parts = (
            ("factors", (n_users + n_items) * self.config.factors * FLOAT),
            ("data", 2 * matrix),
        )
        advice = "to need less: fewer factors, or fewer users or items (filter at ingest)"
        return MemoryEstimate(self.name, parts, advice)

    def fit(self, train: sp.csr_matrix, valid: Holdout | None = None) -> Self:
        check_fits(self.memory_estimate(train))
        model = self._implicit_model()
        with threadpool_limits(limits=1, user_api="blas"):
            model.fit(as_csr(train), show_progress=False)
        self._model = model
        return self

    @property
    def item_factors(self) -> np.ndarray:
        if self._model is None:
            raise RecvaeError("als: call fit before score or save")
        return self._model.item_factors

    def user_factors(self, history: sp.csr_matrix) -> np.ndarray:
        """Fold-in: the least-squares user factors for each history row (items fixed)."""
        items = self.item_factors
        history = check_history(history, items.shape[0], self.name)
        with threadpool_limits(limits=1, user_api="blas"):
            return self._model.recalculate_user(np.arange(history.shape[0]), history)

    def score(self, history: sp.csr_matrix) -> np.ndarray:
        return (self.user_factors(history) @ self.item_factors.T).astype(np.float32, copy=False)

    def score_blocks(
        self, history: sp.csr_matrix, block_size: int
    ) -> Iterator[tuple[int, np.ndarray]]:
        """User factors once, then user factors @ item_factors[block].T per item block."""
        users, items = self.user_factors(history), self.item_factors
        for block in item_blocks(items.shape[0], block_size):
            yield block.start, (users @ items[block].T).astype(np.float32, copy=False)

    def save(self, path: Path) -> None:
        path = Path(path)
        write_model_json(path, self.name, asdict(self.config))
        np.save(path / "item_factors.npy", self.item_factors, allow_pickle=False)

    @classmethod
    def load(cls, path: Path) -> Self:
        path = Path(path)
        model = cls(read_model_json(path, expect=cls.name).get("config", {}))
        factors = load_array(path / "item_factors.npy", ndim=2).astype(np.float32, copy=False)
        if factors.shape[1] != model.config.factors:
            raise RecvaeError(
                f"{path / 'item_factors.npy'} has {factors.shape[1]} factors but model.json says "
                f"{model.config.factors}; they come from different models"
            )
        model._model = model._implicit_model()
        model._model.item_factors = factors
        return model
