"""Top-K over score rows, and masking of items a user has already seen: written once, in torch,
on whatever device the scores are on.

Used by evaluation, export and benchmarks. A model that scores on a GPU hands its (users x items)
scores over as a device tensor; masking and the top-K run there and only the k ids and scores
per user come back to the host. NumPy scores (any model, on the CPU) take the very same code,
viewed as CPU tensors without a copy, so there is one rule, not one per device.

Ranking is by score descending, ties broken by the lower item index (inside the top k and at
the cut), so results are deterministic and equal on every device for equal scores.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

from recvae.errors import RecvaeError

Scores = np.ndarray | torch.Tensor


def as_tensor(scores: Scores) -> torch.Tensor:
    """float32 scores as a tensor where they are: a NumPy array is viewed (no copy) when it
    already is C-contiguous float32, so masking a tensor view masks the array too."""
    if isinstance(scores, torch.Tensor):
        return scores if scores.dtype == torch.float32 else scores.float()
    return torch.from_numpy(np.ascontiguousarray(scores, dtype=np.float32))


def seen_positions(
    history: sp.csr_matrix, start: int = 0, width: int | None = None,
    device: torch.device | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """(rows, columns - start) of the history's items in the item columns [start, start +
    width), as index tensors on `device`: what masking writes -inf to."""
    width = history.shape[1] - start if width is None else width
    rows = np.repeat(np.arange(history.shape[0], dtype=np.int64), np.diff(history.indptr))
    cols = history.indices.astype(np.int64, copy=False)
    if start != 0 or width != history.shape[1]:
        inside = (cols >= start) & (cols < start + width)
        rows, cols = rows[inside], cols[inside] - start
    device = device or torch.device("cpu")
    return torch.from_numpy(rows).to(device), torch.from_numpy(cols).to(device)


def mask_seen_tensor(scores: torch.Tensor, history: sp.csr_matrix, start: int = 0) -> torch.Tensor:
    """Set the scores of each row's history items in the item columns [start, start + width) to
    -inf, in place on the scores' device, and return `scores`."""
    width = scores.shape[1]
    if scores.shape[0] != history.shape[0] or start < 0 or start + width > history.shape[1]:
        raise RecvaeError(
            f"score block {tuple(scores.shape)} at item {start} does not fit history "
            f"{history.shape}"
        )
    rows, cols = seen_positions(history, start, width, scores.device)
    scores[rows, cols] = -torch.inf
    return scores


def mask_seen(scores: np.ndarray, history: sp.csr_matrix) -> np.ndarray:
    """Set the scores of each row's history items to -inf, in place, and return `scores`."""
    if scores.shape != history.shape:
        raise RecvaeError(f"scores {scores.shape} and history {history.shape} differ in shape")
    return mask_seen_block(scores, history, 0)


def mask_seen_block(scores: np.ndarray, history: sp.csr_matrix, start: int) -> np.ndarray:
    """Like `mask_seen` for the item columns [start, start + width) of the scores, in place.

    Item-chunked scoring (recvae.scoring with `item_block`) masks each block as it arrives.
    """
    view = as_tensor(scores)
    mask_seen_tensor(view, history, start)
    if view.data_ptr() != scores.ctypes.data:  # not a float32 C-contiguous array: a copy was
        scores[...] = view.numpy()  # masked, so write it back
    return scores


def top_k_tensor(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (int64) and scores of each row's k best items, best first, on the scores' device.

    Items scored -inf (masked) are ranked last and still returned when a row has fewer than k
    finite scores; callers that must not emit them check the returned scores are finite.
    """
    n_items = scores.shape[1]
    if not 1 <= k <= n_items:
        raise RecvaeError(f"k must be between 1 and the number of items ({n_items}), got {k}")
    if scores.shape[0] == 0:
        empty = torch.empty((0, k), device=scores.device)
        return empty.long(), empty
    # One item more than asked: a row ties at the cut exactly when its (k+1)-th score equals its
    # k-th, which spares a full pass over the scores to count ties.
    extra = 1 if k < n_items else 0
    values, indices = torch.topk(scores, k + extra, dim=1, largest=True, sorted=True)
    if extra:
        at_cut = torch.nonzero(values[:, k] == values[:, k - 1]).squeeze(1)
        values, indices = values[:, :k].contiguous(), indices[:, :k].contiguous()
        if len(at_cut):
            cut = _lowest_indices_at_cut(scores[at_cut], values[at_cut, k - 1], k)
            indices[at_cut] = cut
            values[at_cut] = scores[at_cut].gather(1, cut)
    return _ties_by_index(values, indices)


def _lowest_indices_at_cut(scores: torch.Tensor, kth: torch.Tensor, k: int) -> torch.Tensor:
    """For rows where more items tie the k-th score than made the cut: the k items that rank
    first by (-score, index), i.e. every item above the k-th score and the lowest-index ones of
    those equal to it (in no particular order; `_ties_by_index` orders them).

    A top-k over a key that is unique per item picks them in one pass: items above the k-th
    score come first, then the tied ones, lower index first, then the rest.
    """
    n_items = scores.shape[1]
    lower_first = torch.arange(n_items, 0, -1, device=scores.device)
    key = torch.where(scores == kth[:, None], lower_first, 0)
    key = torch.where(scores > kth[:, None], lower_first + n_items, key)
    return torch.topk(key, k, dim=1, sorted=False).indices


def _ties_by_index(
    values: torch.Tensor, indices: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Order each row by (-score, index): by index first, then a stable sort by score."""
    by_index = indices.argsort(dim=1)
    indices, values = indices.gather(1, by_index), values.gather(1, by_index)
    values, by_score = torch.sort(values, dim=1, descending=True, stable=True)
    return indices.gather(1, by_score), values


def top_k(scores: Scores, k: int) -> tuple[np.ndarray, np.ndarray]:
    """`top_k_tensor` brought to the host: (n, k) int64 indices and float32 scores, NumPy."""
    indices, values = top_k_tensor(as_tensor(scores), k)
    return indices.cpu().numpy(), values.cpu().numpy()


class RunningTopK:
    """Top-K over item blocks that arrive one after another, with `top_k`'s exact result.

    Each block keeps its own best k (by `top_k_tensor`, ties by index), merged with the best k
    so far and re-ranked by (-score, item index): the global top k of a row is always among
    those candidates, so the result equals `top_k` over the whole row, ties included, while
    only a (rows x block) score array is ever held. The running k stay on the blocks' device.
    """

    def __init__(self, n_rows: int, k: int, n_items: int) -> None:
        if not 1 <= k <= n_items:
            raise RecvaeError(f"k must be between 1 and the number of items ({n_items}), got {k}")
        self.k, self.n_items, self.seen, self.n_rows = k, n_items, 0, n_rows
        self.indices: torch.Tensor | None = None
        self.values: torch.Tensor | None = None

    def add(self, start: int, scores: Scores) -> None:
        """Merge the scores of items [start, start + width); blocks must come in item order."""
        scores = as_tensor(scores)
        if start != self.seen or scores.shape[0] != self.n_rows:
            raise RecvaeError(
                f"score block of shape {tuple(scores.shape)} at item {start}: expected "
                f"{self.n_rows} rows starting at item {self.seen}"
            )
        width = scores.shape[1]
        if width == 0:
            return
        indices, values = top_k_tensor(scores, min(self.k, width))
        indices = indices + start
        if self.indices is not None and self.values is not None:
            indices = torch.cat([self.indices, indices.to(self.indices.device)], dim=1)
            values = torch.cat([self.values, values.to(self.values.device)], dim=1)
            indices, values = _ties_by_index(values, indices)
        self.indices, self.values = indices[:, : self.k], values[:, : self.k]
        self.seen += width

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """(indices, scores) as `top_k` returns them, on the host; every item must be added."""
        if self.seen != self.n_items:
            raise RecvaeError(f"top-K saw {self.seen} of {self.n_items} items")
        if self.indices is None or self.values is None:
            return np.zeros((self.n_rows, 0), np.int64), np.zeros((self.n_rows, 0), np.float32)
        return (
            np.ascontiguousarray(self.indices.cpu().numpy()),
            np.ascontiguousarray(self.values.cpu().numpy()),
        )
