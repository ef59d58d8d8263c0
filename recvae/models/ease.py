"""EASE (Steck, WWW 2019): a closed-form item x item linear model.

B = argmin ||X - XB||^2 + l2 ||B||^2 subject to diag(B) = 0 has the solution
P = (X'X + l2 I)^-1, B = -P / diag(P) (column-wise), diag(B) = 0. Scores are history @ B.

The cost is dense n_items x n_items float32 matrices, so the model refuses up front, with the
numbers, when they would not fit in the memory available now (MemAvailable, and the headroom under
a cgroup memory limit, so a container's limit counts). Fit keeps at most two alive at once
(the Gram matrix and its Cholesky factor, then the factor and the inverse); a plain LU inverse
would need three and is only ~1.3x faster here. The factorisation runs in torch (MKL):
numpy/scipy with OpenBLAS has crashed on this machine above ~33k items.

Scoring runs on the model's device (`device`, or the run's --device; recvae.device): on a GPU
the matrix is copied there once, when it fits in the GPU's free memory (else scoring stays on
the CPU, said once in the log), and the scores stay there for masking and top-K.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import scipy.sparse as sp
import torch

from recvae.data.split import Holdout, as_csr
from recvae.device import model_device
from recvae.errors import RecvaeError
from recvae.models.base import (
    check_history,
    item_blocks,
    load_array,
    model_config,
    read_model_json,
    write_model_json,
)
from recvae.models.configs import EASEConfig
from recvae.models.memory import (  # noqa: F401  (moved there; importable from here as before)
    available_memory_bytes,
    cgroup_memory_headroom,
    meminfo_available,
)
from recvae.models.torch_sparse import sparse_times_dense

log = logging.getLogger(__name__)

DENSE_COPIES = 2  # fit keeps at most two dense n_items^2 float32 matrices alive at once
# scoring moves B to a GPU when it takes at most this share of the GPU's free memory (the rest
# is left for a chunk's scores and the top-K)
DEVICE_SHARE = 0.75


def check_fits_in_memory(n_items: int, available: int | None = None) -> None:
    """Raise before allocating when the dense item x item work would not fit in memory."""
    available = available_memory_bytes() if available is None else available
    needed = DENSE_COPIES * n_items * n_items * 4
    if available is not None and needed > available:
        raise RecvaeError(
            f"ease: {n_items} items need about {needed / 2**30:.1f} GiB for {DENSE_COPIES} dense "
            f"{n_items} x {n_items} float32 matrices, but only {available / 2**30:.1f} GiB is "
            "available (free memory, within any container memory limit); filter rare items at "
            "ingest (e.g. a minimum item count) or use ALS"
        )


class EASE:
    """Embarrassingly shallow autoencoder: one dense item-item weight matrix, fit in closed form."""

    name: ClassVar[str] = "ease"

    def __init__(self, config: EASEConfig | None = None, **overrides: Any) -> None:
        self.config: EASEConfig = model_config(EASEConfig, config, overrides, self.name)
        self.weights: np.ndarray | None = None
        self.device: str = self.config.device  # where scoring runs; a loaded model says "auto"
        self._on_device: torch.Tensor | None = None  # the weights' copy on a GPU, once made

    def fit(self, train: sp.csr_matrix, valid: Holdout | None = None) -> Self:
        train = as_csr(train)
        n_items = train.shape[1]
        check_fits_in_memory(n_items)
        gram = torch.from_numpy((train.T @ train).toarray().astype(np.float32, copy=False))
        gram.diagonal().add_(self.config.l2)
        # Cholesky then its inverse, freeing each input as soon as it is used: at most two dense
        # matrices are alive at once. X'X + l2 I is symmetric positive definite for l2 > 0.
        factor = torch.linalg.cholesky(gram)
        del gram
        precision = torch.cholesky_inverse(factor)
        del factor
        # LAPACK returns it column-major; P is symmetric (torch mirrors the triangle exactly), so
        # its transpose is the same matrix in row-major order, which `score` needs: the sparse x
        # dense product copies a column-major B (6.3 GiB on Gowalla) on every call.
        if not precision.is_contiguous():
            precision = precision.T
        # In place: column j divided by -P_jj gives B; then the diagonal constraint.
        precision.div_(-precision.diagonal().clone())
        precision.diagonal().zero_()
        self.weights = precision.numpy()
        self._on_device = None
        return self

    def score(self, history: sp.csr_matrix) -> np.ndarray:
        return self.score_tensor(history).cpu().numpy()

    def score_tensor(self, history: sp.csr_matrix) -> torch.Tensor:
        """history @ B on the scoring device (recvae.models.base.score_tensor)."""
        weights = self._scoring_weights()
        history = check_history(history, weights.shape[0], self.name)
        return sparse_times_dense(history, weights)

    def score_blocks(
        self, history: sp.csr_matrix, block_size: int
    ) -> Iterator[tuple[int, np.ndarray]]:
        """history @ B[:, block] for each item block (see recvae.models.base.score_blocks)."""
        for start, scores in self.score_tensor_blocks(history, block_size):
            yield start, scores.cpu().numpy()

    def score_tensor_blocks(
        self, history: sp.csr_matrix, block_size: int
    ) -> Iterator[tuple[int, torch.Tensor]]:
        """`score_blocks` with each block left on the scoring device."""
        weights = self._scoring_weights()
        history = check_history(history, weights.shape[0], self.name)
        for block in item_blocks(weights.shape[1], block_size):
            yield block.start, sparse_times_dense(history, weights[:, block].contiguous())

    def _scoring_weights(self) -> torch.Tensor:
        """B as a tensor where scoring runs: a view of the host array on the CPU, a copy made
        once on a GPU when it fits in the GPU's free memory (else the host view)."""
        weights = torch.from_numpy(self._fitted_weights())
        device = model_device(self.device)
        if device.type == "cpu":
            return weights
        if self._on_device is not None and self._on_device.device == device:
            return self._on_device
        free, _ = torch.cuda.mem_get_info(device)
        if weights.nbytes > DEVICE_SHARE * free:
            log.warning(
                "ease: the %d x %d weights (%.1f GiB) do not fit in %.1f GiB free on %s; "
                "scoring on the CPU", *weights.shape, weights.nbytes / 2**30, free / 2**30, device,
            )  # fmt: skip
            return weights
        self._on_device = weights.to(device)
        return self._on_device

    def save(self, path: Path) -> None:
        path = Path(path)
        write_model_json(path, self.name, asdict(self.config))
        np.save(path / "weights.npy", self._fitted_weights(), allow_pickle=False)

    @classmethod
    def load(cls, path: Path) -> Self:
        path = Path(path)
        model = cls(read_model_json(path, expect=cls.name).get("config", {}))
        weights = load_array(path / "weights.npy", ndim=2)
        if weights.shape[0] != weights.shape[1]:
            raise RecvaeError(
                f"{path / 'weights.npy'} has shape {weights.shape}; EASE weights are items x items"
            )
        # row-major for fast scoring (weights saved column-major by older versions are copied)
        model.weights = np.ascontiguousarray(weights, dtype=np.float32)
        model.device = "auto"  # a saved model scores wherever the loading run is: GPU if present
        return model

    def _fitted_weights(self) -> np.ndarray:
        if self.weights is None:
            raise RecvaeError("ease: call fit before score or save")
        return self.weights


