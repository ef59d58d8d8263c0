"""Ranking metrics exactly as the Mult-VAE paper's code defines them, plus LightGCN's recall.

All functions take `ranked`, an (n_users, K') array of item indices best first (K' >= k), and
`heldout`, a CSR matrix of the same users' held-out items, and return one value per user.
Relevance is binary. Users with nothing held out get NaN; averages skip them.

- recall@k (paper): hits in the top k / min(k, number held out)
- recall_lightgcn@k: hits in the top k / number held out
- ndcg@k: DCG with gains 1/log2(rank + 1) over the top k, divided by the DCG of
  min(k, number held out) hits at the top
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from recvae.errors import RecvaeError

METRIC_NAMES = ("recall", "recall_lightgcn", "ndcg")


def hit_matrix(ranked: np.ndarray, heldout: sp.csr_matrix) -> np.ndarray:
    """Boolean (n_users, K'): whether the item at each rank is among the user's held-out items."""
    if ranked.shape[0] != heldout.shape[0]:
        raise RecvaeError(
            f"ranked lists for {ranked.shape[0]} users but held-out items for {heldout.shape[0]}"
        )
    heldout = sp.csr_matrix(heldout)
    heldout.sort_indices()
    n_items = np.int64(heldout.shape[1])
    rows = np.repeat(np.arange(heldout.shape[0], dtype=np.int64), np.diff(heldout.indptr))
    true_keys = rows * n_items + heldout.indices  # sorted: CSR rows in order, indices sorted
    pred_keys = np.arange(ranked.shape[0], dtype=np.int64)[:, None] * n_items + ranked
    if true_keys.size == 0:
        return np.zeros(ranked.shape, dtype=bool)
    pos = np.searchsorted(true_keys, pred_keys)
    pos = np.minimum(pos, true_keys.size - 1)
    return true_keys[pos] == pred_keys


def _n_heldout(heldout: sp.csr_matrix) -> np.ndarray:
    return np.diff(sp.csr_matrix(heldout).indptr).astype(np.float64)


def _check_k(ranked: np.ndarray, k: int) -> None:
    if k < 1 or k > ranked.shape[1]:
        raise RecvaeError(f"k={k} needs ranked lists of at least k items, got {ranked.shape[1]}")


def _safe_divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, numerator / denominator, np.nan)


def recall_at_k(ranked: np.ndarray, heldout: sp.csr_matrix, k: int) -> np.ndarray:
    """The paper's Recall@k: hits / min(k, number held out)."""
    _check_k(ranked, k)
    hits = hit_matrix(ranked[:, :k], heldout).sum(axis=1)
    return _safe_divide(hits, np.minimum(k, _n_heldout(heldout)))


def recall_lightgcn_at_k(ranked: np.ndarray, heldout: sp.csr_matrix, k: int) -> np.ndarray:
    """LightGCN's Recall@k: hits / number held out."""
    _check_k(ranked, k)
    hits = hit_matrix(ranked[:, :k], heldout).sum(axis=1)
    return _safe_divide(hits, _n_heldout(heldout))


def ndcg_at_k(ranked: np.ndarray, heldout: sp.csr_matrix, k: int) -> np.ndarray:
    """NDCG@k with binary relevance and min(k, number held out) ideal hits."""
    _check_k(ranked, k)
    gains = 1.0 / np.log2(np.arange(2, k + 2))
    dcg = (hit_matrix(ranked[:, :k], heldout) * gains).sum(axis=1)
    ideal_cumulative = np.concatenate([[0.0], np.cumsum(gains)])
    n_ideal = np.minimum(k, _n_heldout(heldout)).astype(np.int64)
    return _safe_divide(dcg, ideal_cumulative[n_ideal])


METRIC_FUNCTIONS = {
    "recall": recall_at_k,
    "recall_lightgcn": recall_lightgcn_at_k,
    "ndcg": ndcg_at_k,
}


def parse_metric(name: str) -> tuple[str, int]:
    """'ndcg@100' -> ('ndcg', 100), with a clear error for anything else."""
    metric, sep, k = name.partition("@")
    if not sep or metric not in METRIC_FUNCTIONS or not k.isdigit() or int(k) < 1:
        known = ", ".join(f"{m}@K" for m in METRIC_FUNCTIONS)
        raise RecvaeError(f"unknown metric {name!r}: expected one of {known} (e.g. ndcg@100)")
    return metric, int(k)


def mean_and_stderr(values: np.ndarray) -> tuple[float, float]:
    """Mean over users with a defined value, and its standard error (as the paper reports)."""
    defined = values[~np.isnan(values)]
    if defined.size == 0:
        return float("nan"), float("nan")
    stderr = defined.std(ddof=1) / np.sqrt(defined.size) if defined.size > 1 else 0.0
    return float(defined.mean()), float(stderr)
