"""GF-CF (Shen et al., CIKM 2021, "How Powerful is Graph Convolution for Recommendation?"):
a closed-form graph filter, no training loop.

With R the training matrix, D_u and D_i its user and item degrees and R~ = D_u^-1/2 R D_i^-1/2
(the symmetric normalisation of LightGCN's graph), a history x (items) is scored by

    s(x) = x R~' R~  +  alpha * x D_i^-1/2 V V' D_i^1/2

- the first term is a linear low-pass filter: normalised item-item co-occurrence, with popular
  items and heavy users damped by their degrees (what EASE's ridge does with its l2);
- the second is the ideal low-pass filter: the projection on R~'s top `rank` right singular
  vectors V, the global, low-rank structure a latent factor model would learn.

Why it is here: it is cheap (one truncated SVD, scoring is two sparse products and two thin dense
ones), memory grows with the data, not with items^2, and its errors differ from EASE's: a
blend of the two beat either alone on both LightGCN splits (benchmarks/reports/
generalisation-2026-12-02). `recvae train --model auto` fits it as a linear candidate.

The model keeps R~ (the normalised training matrix) to score with, like a neighbourhood model:
a saved GF-CF holds one float per training interaction, plus V and the item degrees.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import scipy.sparse as sp
import torch

from recvae.data.split import Holdout, as_csr
from recvae.errors import RecvaeError
from recvae.models.base import (
    check_history,
    load_array,
    model_config,
    read_model_json,
    write_model_json,
)
from recvae.models.configs import GFCFConfig
from recvae.models.torch_sparse import sparse_times_dense

OVERSAMPLE = 64  # extra random directions for the randomised SVD (Halko et al. 2011)


class GFCF:
    """Graph-filter CF: a normalised item-item filter plus the ideal low-pass filter."""

    name: ClassVar[str] = "gfcf"

    def __init__(self, config: GFCFConfig | None = None, **overrides: Any) -> None:
        self.config: GFCFConfig = model_config(GFCFConfig, config, overrides, self.name)
        self.normalised: sp.csr_matrix | None = None  # R~ (users x items)
        self.vectors: np.ndarray | None = None  # V' (rank x items)
        self.item_degrees: np.ndarray | None = None
        self._normalised_t: sp.csr_matrix | None = None  # R~', made on first use

    def fit(self, train: sp.csr_matrix, valid: Holdout | None = None) -> Self:
        train = as_csr(train).astype(np.float32)
        train.data[:] = 1.0  # a graph filter on the interaction graph: repeats count once
        user_degrees = np.asarray(train.sum(axis=1), dtype=np.float64).ravel()
        item_degrees = np.asarray(train.sum(axis=0), dtype=np.float64).ravel()
        normalised = sp.diags(_inverse_sqrt(user_degrees)) @ train @ sp.diags(
            _inverse_sqrt(item_degrees)
        )
        self.normalised = sp.csr_matrix(normalised, dtype=np.float32)
        self.item_degrees = item_degrees.astype(np.float32)
        rank = min(self.config.rank, *train.shape)
        self._normalised_t = None
        self.vectors = top_right_singular_vectors(self.normalised, rank, self.config.seed)
        return self

    def score(self, history: sp.csr_matrix) -> np.ndarray:
        normalised, vectors, degrees = self._fitted()
        history = check_history(history, normalised.shape[1], self.name)
        dense = torch.from_numpy(history.toarray().astype(np.float32, copy=False))
        # x R~' R~ as two sparse x dense products (MKL, all threads): users x batch in between
        per_user = sparse_times_dense(normalised, dense.T.contiguous())
        scores = sparse_times_dense(self._transposed(), per_user).T.contiguous()
        if self.config.alpha > 0 and vectors.shape[0] > 0:
            basis = torch.from_numpy(vectors)
            inverse_sqrt = torch.from_numpy(_inverse_sqrt(degrees).astype(np.float32))
            ideal = ((dense * inverse_sqrt) @ basis.T) @ basis  # x D_i^-1/2 V V'
            scores += self.config.alpha * ideal * torch.from_numpy(np.sqrt(degrees))
        return scores.numpy()

    def _transposed(self) -> sp.csr_matrix:
        """R~' as CSR (items x users), made once: the second product of `score`."""
        if self._normalised_t is None:
            normalised, _, _ = self._fitted()
            self._normalised_t = normalised.T.tocsr()
        return self._normalised_t

    def save(self, path: Path) -> None:
        normalised, vectors, degrees = self._fitted()
        path = Path(path)
        write_model_json(path, self.name, asdict(self.config))
        np.save(path / "indptr.npy", normalised.indptr, allow_pickle=False)
        np.save(path / "indices.npy", normalised.indices, allow_pickle=False)
        np.save(path / "data.npy", normalised.data, allow_pickle=False)
        np.save(path / "vectors.npy", vectors, allow_pickle=False)
        np.save(path / "item_degrees.npy", degrees, allow_pickle=False)

    @classmethod
    def load(cls, path: Path) -> Self:
        path = Path(path)
        model = cls(read_model_json(path, expect=cls.name).get("config", {}))
        degrees = load_array(path / "item_degrees.npy", ndim=1).astype(np.float32)
        vectors = load_array(path / "vectors.npy", ndim=2).astype(np.float32)
        indptr = load_array(path / "indptr.npy", ndim=1)
        indices = load_array(path / "indices.npy", ndim=1)
        data = load_array(path / "data.npy", ndim=1).astype(np.float32)
        n_items = len(degrees)
        if vectors.shape[1] != n_items or len(indices) != len(data) or indptr[-1] != len(data):
            raise RecvaeError(
                f"{path}: GF-CF arrays do not agree ({n_items} item degrees, vectors "
                f"{vectors.shape}, {len(data)} values, {len(indices)} indices); the model "
                "directory is damaged: fit and save it again"
            )
        model.normalised = sp.csr_matrix(
            (data, indices, indptr), shape=(len(indptr) - 1, n_items)
        )
        model.vectors, model.item_degrees = vectors, degrees
        return model

    def _fitted(self) -> tuple[sp.csr_matrix, np.ndarray, np.ndarray]:
        if self.normalised is None or self.vectors is None or self.item_degrees is None:
            raise RecvaeError("gfcf: call fit before score or save")
        return self.normalised, self.vectors, self.item_degrees


def _inverse_sqrt(degrees: np.ndarray) -> np.ndarray:
    """1 / sqrt(d), 0 where d is 0 (an item or user with no interactions contributes nothing)."""
    out = np.zeros_like(degrees, dtype=np.float64)
    positive = degrees > 0
    out[positive] = degrees[positive] ** -0.5
    return out


def top_right_singular_vectors(
    matrix: sp.csr_matrix, rank: int, seed: int, power_iterations: int = 4
) -> np.ndarray:
    """The top `rank` right singular vectors of a sparse matrix, as rows (rank x columns), by a
    randomised range finder with power iterations (Halko, Martinsson and Tropp 2011): only
    sparse x thin-dense products and QR of thin matrices, so it costs O(nnz x rank), where a
    dense SVD of an items x items Gram matrix would cost items^3. The small dense
    factorisations run in torch (numpy's OpenBLAS has crashed on this project's machines)."""
    if rank <= 0:
        return np.zeros((0, matrix.shape[1]), dtype=np.float32)
    width = min(rank + OVERSAMPLE, *matrix.shape)
    generator = np.random.default_rng(seed)
    probe = generator.standard_normal((matrix.shape[1], width)).astype(np.float32)
    basis = _orthonormal(matrix @ probe)
    for _ in range(power_iterations):
        basis = _orthonormal(matrix @ _orthonormal(matrix.T @ basis))
    small = torch.from_numpy(np.ascontiguousarray((matrix.T @ basis).T, dtype=np.float32))
    _, _, right = torch.linalg.svd(small, full_matrices=False)
    return right[:rank].numpy().copy()


def _orthonormal(columns: np.ndarray) -> np.ndarray:
    q, _ = torch.linalg.qr(torch.from_numpy(np.ascontiguousarray(columns, dtype=np.float32)))
    return q.numpy()
