"""Top-K over score rows, and masking of items a user has already seen.

Written once, used by evaluation, export and benchmarks. Ranking is by score descending, ties
broken by the lower item index, so results are deterministic whatever the backend does with ties.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

from recvae.errors import RecvaeError


def mask_seen(scores: np.ndarray, history: sp.csr_matrix) -> np.ndarray:
    """Set the scores of each row's history items to -inf, in place, and return `scores`."""
    if scores.shape != history.shape:
        raise RecvaeError(f"scores {scores.shape} and history {history.shape} differ in shape")
    rows = np.repeat(np.arange(history.shape[0]), np.diff(history.indptr))
    scores[rows, history.indices] = -np.inf
    return scores


def top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices and scores of each row's k best items, best first; (n, k) int64 and float32.

    Items scored -inf (masked) are ranked last and still returned when a row has fewer than k
    finite scores; callers that must not emit them check `np.isfinite` on the returned scores.
    """
    n_items = scores.shape[1]
    if not 1 <= k <= n_items:
        raise RecvaeError(f"k must be between 1 and the number of items ({n_items}), got {k}")
    tensor = torch.from_numpy(np.ascontiguousarray(scores, dtype=np.float32))
    # One item more than asked: a row ties at the cut exactly when its (k+1)-th score equals its
    # k-th, which spares a full pass over the scores to count ties.
    extra = 1 if k < n_items else 0
    values, indices = torch.topk(tensor, k + extra, dim=1, largest=True, sorted=True)
    values, indices = values.numpy(), indices.numpy().astype(np.int64)
    at_cut = values[:, k] == values[:, k - 1] if extra else np.zeros(len(values), dtype=bool)
    values, indices = np.ascontiguousarray(values[:, :k]), np.ascontiguousarray(indices[:, :k])
    _break_ties_by_index(scores, values, indices, at_cut)
    return indices, values


def _break_ties_by_index(
    scores: np.ndarray, values: np.ndarray, indices: np.ndarray, at_cut: np.ndarray
) -> None:
    """Make tie order deterministic: equal scores rank by item index, inside and at the cut."""
    if values.size == 0:
        return
    # Rows where more items tie the k-th score than made the cut: re-rank the row's candidates
    # (every item scoring at least the k-th score; usually few) by (-score, index).
    k = values.shape[1]
    for row in np.flatnonzero(at_cut):
        candidates = np.flatnonzero(scores[row] >= values[row, k - 1])
        order = candidates[np.lexsort((candidates, -scores[row, candidates]))][:k]
        indices[row] = order
        values[row] = scores[row, order]
    # Ties inside the cut: order by (-score, index).
    tied_rows = np.flatnonzero((values[:, 1:] == values[:, :-1]).any(axis=1) & ~at_cut)
    for row in tied_rows:
        order = np.lexsort((indices[row], -values[row]))
        indices[row] = indices[row, order]
        values[row] = values[row, order]


def mask_seen_block(scores: np.ndarray, history: sp.csr_matrix, start: int) -> np.ndarray:
    """Like `mask_seen` for the item columns [start, start + width) of the scores, in place.

    Item-chunked scoring (recvae.scoring with `item_block`) masks each block as it arrives.
    """
    width = scores.shape[1]
    if scores.shape[0] != history.shape[0] or start < 0 or start + width > history.shape[1]:
        raise RecvaeError(
            f"score block {scores.shape} at item {start} does not fit history {history.shape}"
        )
    rows = np.repeat(np.arange(history.shape[0]), np.diff(history.indptr))
    inside = (history.indices >= start) & (history.indices < start + width)
    scores[rows[inside], history.indices[inside] - start] = -np.inf
    return scores


class RunningTopK:
    """Top-K over item blocks that arrive one after another, with `top_k`'s exact result.

    Each block keeps its own best k (by `top_k`, ties by index), merged with the best k so far
    and re-ranked by (-score, item index): the global top k of a row is always among those
    candidates, so the result equals `top_k` over the whole row, ties included, while only a
    (rows x block) score array is ever held.
    """

    def __init__(self, n_rows: int, k: int, n_items: int) -> None:
        if not 1 <= k <= n_items:
            raise RecvaeError(f"k must be between 1 and the number of items ({n_items}), got {k}")
        self.k, self.n_items, self.seen = k, n_items, 0
        self.indices = np.zeros((n_rows, 0), dtype=np.int64)
        self.values = np.zeros((n_rows, 0), dtype=np.float32)

    def add(self, start: int, scores: np.ndarray) -> None:
        """Merge the scores of items [start, start + width); blocks must come in item order."""
        if start != self.seen or scores.shape[0] != len(self.values):
            raise RecvaeError(
                f"score block of shape {scores.shape} at item {start}: expected {len(self.values)}"
                f" rows starting at item {self.seen}"
            )
        width = scores.shape[1]
        if width == 0:
            return
        indices, values = top_k(scores, min(self.k, width))
        indices = np.concatenate([self.indices, indices + start], axis=1)
        values = np.concatenate([self.values, values], axis=1)
        order = np.lexsort((indices, -values), axis=-1)[:, : self.k]
        self.indices = np.take_along_axis(indices, order, axis=1)
        self.values = np.take_along_axis(values, order, axis=1)
        self.seen += width

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """(indices, scores) as `top_k` returns them; every item must have been added."""
        if self.seen != self.n_items:
            raise RecvaeError(f"top-K saw {self.seen} of {self.n_items} items")
        return np.ascontiguousarray(self.indices), np.ascontiguousarray(self.values)
