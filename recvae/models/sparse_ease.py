"""Sparse EASE ("neighbourhood EASE"): EASE with each item's regressors cut to its top neighbours.

EASE's column j is the ridge regression of item j on every other item (Steck 2019: the
diagonal-constrained closed form is, column by column, b_j = (G_-j,-j + l2 I)^-1 G_-j,j with
G = X'X). Here item j regresses on its `neighbours` (m) items of highest co-occurrence N(j) only:
b_j = (G_NN + l2 I)^-1 G_Nj, an m x m system. n small solves replace one n x n inverse, so fit
memory is the n x m neighbour table and B's n x m non-zeros (plus bounded work blocks), never an
items x items matrix: the Gram matrix is computed a block of items at a time and each row is
pruned to its top m before the next block.

G_NN's off-diagonal entries come from two exact sources: a dense block of the co-occurrences
among the `dense_items` most popular items (where most neighbours are: 256 MiB at 8192), and the
pruned lists (for a pair with an item a outside the block, G_ab is known when b is among a's
neighbours or, both outside, a among b's). A pair found in neither counts as 0: that and the
restricted regressors are the two approximations. (Lists alone
were not enough: on ml-1m with 50 neighbours a quarter of the pairs among popular neighbours
were missing, G_NN + l2 I lost its Cholesky factor for most items and NDCG@20 fell from 0.18
to 0.02.) With neighbours >= n_items - 1 and min_cooccurrence = 0 nothing is pruned and B is
exact EASE's. A system that still has no Cholesky factor gets a larger ridge (doubled until it
factors), counted in `stats["larger_ridge_items"]`.

The small systems are solved in torch (float64, batched Cholesky): numpy/scipy with OpenBLAS has
crashed on this machine on large factorisations, torch's (MKL) has not.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import scipy.sparse as sp
import torch

from recvae.data.split import Holdout, as_csr
from recvae.errors import RecvaeError
from recvae.models.base import (
    DAMAGED,
    check_history,
    item_blocks,
    model_config,
    model_size,
    read_model_json,
    write_model_json,
)
from recvae.models.configs import SparseEASEConfig
from recvae.models.memory import MemoryEstimate, check_fits

GRAM_BLOCK_ENTRIES = 2**23  # co-occurrence entries computed at once (~100 MB of work)
SOLVE_BLOCK_ENTRIES = 2**21  # batch x m x m entries per batched solve (~130 MB of work)
MAX_RIDGE_DOUBLINGS = 60
WEIGHTS_FILE = "weights.safetensors"


def effective_neighbours(neighbours: int, n_items: int) -> int:
    """Neighbours per item actually kept: an item has at most n_items - 1 others."""
    return max(1, min(neighbours, n_items - 1))


def fit_memory_parts(
    n_users: int, n_items: int, nnz: int, neighbours: int, dense_items: int = 8192
) -> tuple[tuple[str, int], ...]:
    """What `SparseEASE.fit` allocates, part by part, in bytes, from the data's shape alone.

    The training matrix's float32 copy and its item x user transpose (float32 values, int32
    indices), the padded n x m neighbour table (int32 item, float32 co-occurrence), the solved
    weights (float32) and B in CSR (int32 + float32), the dense float32 block among the most
    popular items, and the bounded Gram and solve blocks. Linear in n_items x neighbours.
    """
    m = effective_neighbours(neighbours, n_items)
    return (
        ("matrix copies", 2 * nnz * 8 + (n_users + n_items) * 8),
        ("neighbour table", (n_items + 1) * m * 8),
        ("weights", n_items * m * 4 + n_items * m * 8 + n_items * 8),
        ("dense block", min(dense_items, n_items) ** 2 * 4),
        ("work blocks", GRAM_BLOCK_ENTRIES * 24 + SOLVE_BLOCK_ENTRIES * 64),
    )


def estimate_fit_bytes(
    n_users: int, n_items: int, nnz: int, neighbours: int, dense_items: int = 8192
) -> int:
    """Peak memory `SparseEASE.fit` adds, in bytes (the sum of `fit_memory_parts`)."""
    return sum(size for _, size in fit_memory_parts(n_users, n_items, nnz, neighbours, dense_items))


class SparseEASE:
    """EASE restricted to each item's top co-occurring neighbours: memory ~ items x neighbours."""

    name: ClassVar[str] = "sparse_ease"

    def __init__(self, config: SparseEASEConfig | None = None, **overrides: Any) -> None:
        self.config: SparseEASEConfig = model_config(SparseEASEConfig, config, overrides, self.name)
        # B transposed: row j holds the weights that predict item j from its neighbours (at most
        # `neighbours` non-zeros, none on the diagonal). Scores are history @ columns.T.
        self.columns: sp.csr_matrix | None = None
        self.stats: dict[str, Any] = {}

    def fit(self, train: sp.csr_matrix, valid: Holdout | None = None) -> Self:
        train = as_csr(train)
        n_items = train.shape[1]
        m = effective_neighbours(self.config.neighbours, n_items)
        check_fits(self.memory_estimate(train))
        started = time.perf_counter()
        counts = np.asarray(train.multiply(train).sum(axis=0), dtype=np.float64).ravel()
        hood = neighbourhood(
            train, m, self.config.min_cooccurrence, self.config.dense_items, counts
        )
        pruned = time.perf_counter()
        weights, larger_ridge = solve_columns(hood, counts, self.config.l2)
        items = hood.items
        del hood
        kept = items[:n_items] < n_items
        indptr = np.concatenate([[0], np.cumsum(kept.sum(axis=1))]).astype(np.int64)
        self.columns = sp.csr_matrix(
            (weights[kept], items[:n_items][kept], indptr), shape=(n_items, n_items)
        )
        self.stats = {
            "neighbours": m,
            "nnz": int(self.columns.nnz),
            "larger_ridge_items": larger_ridge,
            "prune_seconds": round(pruned - started, 3),
            "solve_seconds": round(time.perf_counter() - pruned, 3),
        }
        return self

    def memory_estimate(self, train: sp.csr_matrix) -> MemoryEstimate:
        """What fitting `train` will allocate (`fit` checks it against the memory available)."""
        n_users, n_items = train.shape
        config = self.config
        parts = fit_memory_parts(n_users, n_items, train.nnz, config.neighbours, config.dense_items)
        advice = "to need less: fewer neighbours or dense_items, or filter rare items at ingest"
        return MemoryEstimate(self.name, parts, advice)

    def score(self, history: sp.csr_matrix) -> np.ndarray:
        columns = self._fitted_columns()
        history = check_history(history, columns.shape[0], self.name)
        return _dense(history @ columns.T.tocsr())

    def score_blocks(
        self, history: sp.csr_matrix, block_size: int
    ) -> Iterator[tuple[int, np.ndarray]]:
        """history @ B[:, block] for each item block (see recvae.models.base.score_blocks)."""
        columns = self._fitted_columns()
        history = check_history(history, columns.shape[0], self.name)
        for block in item_blocks(columns.shape[0], block_size):
            yield block.start, _dense(history @ columns[block].T.tocsr())

    def memory_bytes(self) -> int:
        """Bytes the fitted weights hold: proportional to their non-zeros, not to items^2."""
        columns = self._fitted_columns()
        return int(columns.data.nbytes + columns.indices.nbytes + columns.indptr.nbytes)

    def save(self, path: Path) -> None:
        from safetensors.numpy import save_file

        path = Path(path)
        columns = self._fitted_columns()
        write_model_json(
            path, self.name, asdict(self.config), n_items=columns.shape[0], stats=self.stats
        )
        tensors = {
            "indptr": columns.indptr.astype(np.int64),
            "indices": columns.indices.astype(np.int32),
            "data": columns.data.astype(np.float32),
        }
        save_file(tensors, str(path / WEIGHTS_FILE))

    @classmethod
    def load(cls, path: Path) -> Self:
        path = Path(path)
        meta = read_model_json(path, expect=cls.name)
        model = cls(meta.get("config", {}))
        n_items = model_size(meta, "n_items", path)
        model.columns = _read_columns(path / WEIGHTS_FILE, n_items, model.config.neighbours)
        model.stats = dict(meta.get("stats") or {})
        return model

    def _fitted_columns(self) -> sp.csr_matrix:
        if self.columns is None:
            raise RecvaeError("sparse_ease: call fit before score or save")
        return self.columns


def _dense(product: sp.spmatrix) -> np.ndarray:
    return np.asarray(product.toarray(), dtype=np.float32)


def _read_columns(file: Path, n_items: int, neighbours: int) -> sp.csr_matrix:
    """The saved weights as a checked n_items x n_items CSR, or one RecvaeError line."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    if not file.is_file():
        raise RecvaeError(f"{file} is missing; {DAMAGED}")
    try:
        tensors = load_file(str(file))
        columns = sp.csr_matrix(
            (tensors["data"], tensors["indices"], tensors["indptr"]), shape=(n_items, n_items)
        )
        columns.check_format(full_check=True)
    except (SafetensorError, OSError, ValueError, KeyError, TypeError) as error:
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise RecvaeError(
            f"{file} does not hold {n_items} x {n_items} sparse weights ({first}); {DAMAGED}"
        ) from error
    widest = int(np.diff(columns.indptr).max(initial=0))
    if widest > neighbours or not np.isfinite(columns.data).all():
        raise RecvaeError(
            f"{file} has rows of up to {widest} weights (model.json allows {neighbours}) or "
            f"non-finite values; {DAMAGED}"
        )
    return columns


# --- fit: the pruned neighbour table ------------------------------------------------------------


@dataclass
class Neighbourhood:
    """What the small systems are built from: each item's neighbour list and exact co-occurrences.

    items, values: (n_items + 1) x m; row j lists N(j) in ascending item order, padded with the
    sentinel n_items (value 0); the extra last row is all sentinel, so that looking up a padded
    slot's own list finds nothing. dense: exact co-occurrences among the most popular items
    (zero diagonal); dense_position: an item's row in `dense`, -1 outside it (and for the sentinel).
    """

    items: np.ndarray
    values: np.ndarray
    dense: torch.Tensor
    dense_position: torch.Tensor


def neighbourhood(
    train: sp.csr_matrix, m: int, min_cooccurrence: float, dense_items: int, counts: np.ndarray
) -> Neighbourhood:
    """Each item's top-m co-occurring items, from the Gram matrix computed a block of items at a
    time; the dense block among the `dense_items` most popular items is filled on the way.

    Ties in co-occurrence go to the more popular item; with min_cooccurrence = 0, items that never
    co-occur with j fill its free slots, most popular first.
    """
    n_items = train.shape[1]
    items = np.full((n_items + 1, m), n_items, dtype=np.int32)
    values = np.zeros((n_items + 1, m), dtype=np.float32)
    popular = np.argsort(-counts, kind="stable")
    rank = np.empty(n_items, dtype=np.int64)
    rank[popular] = np.arange(n_items)
    n_dense = min(dense_items, n_items)
    position = np.full(n_items + 1, -1, dtype=np.int64)
    position[popular[:n_dense]] = np.arange(n_dense)
    dense = np.zeros((n_dense, n_dense), dtype=np.float32)
    by_item = train.T.tocsr()
    floor = max(min_cooccurrence, float(np.finfo(np.float32).tiny))
    for block in gram_blocks(train, GRAM_BLOCK_ENTRIES):
        gram = (by_item[block] @ train).tocsr()  # rows: the block's items, exact co-occurrences
        for row in range(gram.shape[0]):
            j = block.start + row
            span = slice(gram.indptr[row], gram.indptr[row + 1])
            cols, vals = gram.indices[span], gram.data[span]
            if position[j] >= 0:
                inside = position[cols] >= 0
                dense[position[j], position[cols[inside]]] = vals[inside]
            keep = (cols != j) & (vals >= floor)
            cols, vals = top_neighbours(cols[keep], vals[keep], rank, m)
            if min_cooccurrence <= 0 and len(cols) < m:
                extra = popular[: m + len(cols) + 1]
                extra = extra[(extra != j) & ~np.isin(extra, cols)][: m - len(cols)]
                cols = np.concatenate([cols, extra])
                vals = np.concatenate([vals, np.zeros(len(extra), dtype=vals.dtype)])
            order = np.argsort(cols)
            items[j, : len(cols)] = cols[order]
            values[j, : len(cols)] = vals[order]
    np.fill_diagonal(dense, 0.0)
    return Neighbourhood(items, values, torch.from_numpy(dense), torch.from_numpy(position))


def gram_blocks(train: sp.csr_matrix, max_entries: int) -> Iterator[slice]:
    """Consecutive item blocks whose Gram rows hold at most ~max_entries non-zeros together.

    Item j's Gram row has at most min(n_items, sum of the degrees of j's users) non-zeros; a block
    takes items until that bound reaches max_entries (at least one item per block).
    """
    n_items = train.shape[1]
    degrees = np.diff(train.indptr).astype(np.float64)
    bound = np.bincount(train.indices, weights=np.repeat(degrees, np.diff(train.indptr)),
                        minlength=n_items)  # fmt: skip
    total = np.cumsum(np.minimum(bound, n_items))
    start = 0
    while start < n_items:
        before = total[start - 1] if start else 0.0
        end = int(np.searchsorted(total, before + max_entries, side="right"))
        end = max(end, start + 1)
        yield slice(start, min(end, n_items))
        start = end


def top_neighbours(
    cols: np.ndarray, vals: np.ndarray, rank: np.ndarray, m: int
) -> tuple[np.ndarray, np.ndarray]:
    """The m entries of largest co-occurrence; ties at the cut go to the lower popularity rank."""
    if len(cols) <= m:
        return cols, vals
    cut = np.partition(vals, len(vals) - m)[len(vals) - m]
    above = np.flatnonzero(vals > cut)
    tied = np.flatnonzero(vals == cut)
    tied = tied[np.argsort(rank[cols[tied]], kind="stable")[: m - len(above)]]
    chosen = np.concatenate([above, tied])
    return cols[chosen], vals[chosen]


# --- fit: the small ridge systems ---------------------------------------------------------------


def solve_columns(hood: Neighbourhood, counts: np.ndarray, l2: float) -> tuple[np.ndarray, int]:
    """b_j = (G_NN + l2 I)^-1 G_Nj for every item j, batched; (n_items x m weights, and how many
    items needed a larger ridge to factor)."""
    n_items, m = hood.items.shape[0] - 1, hood.items.shape[1]
    batch = max(1, SOLVE_BLOCK_ENTRIES // (m * m))
    weights = np.zeros((n_items, m), dtype=np.float32)
    table = torch.from_numpy(hood.items.astype(np.int64))
    values = torch.from_numpy(hood.values)
    diagonal = torch.from_numpy(np.append(counts, 1.0))  # the sentinel's "count" keeps pads at 1
    larger_ridge = 0
    for block in item_blocks(n_items, batch):
        slots = table[block]
        valid = slots < n_items
        gram = neighbour_gram(hood, table, values, slots)
        ridge = torch.where(valid, torch.as_tensor(l2, dtype=torch.float64), 0.0)
        gram.diagonal(dim1=1, dim2=2).copy_(diagonal[slots] + ridge)
        rhs = values[block].to(torch.float64).unsqueeze(-1)
        solution, shifted = ridge_solve(gram, rhs, valid, l2)
        larger_ridge += shifted
        weights[block] = solution.squeeze(-1).to(torch.float32).numpy()
    return weights, larger_ridge


def neighbour_gram(
    hood: Neighbourhood, table: torch.Tensor, values: torch.Tensor, slots: torch.Tensor
) -> torch.Tensor:
    """G_NN (off-diagonal, float64) for each item whose neighbours are a row of `slots`.

    Entry (s, t), G between the s-th and t-th neighbours, is read from the dense block when both
    are in it. Otherwise, for s outside the block, it is found where t is in s's own list (a
    sorted search of that list against the row), and the (t, s) entry is the same number; a pair
    that neither lookup finds stays 0. (A pair of a popular t and a rarer s is thus looked up in
    s's list only: that item's co-occurrences are the smaller ones.)
    """
    n_items, m = table.shape[0] - 1, table.shape[1]
    inside = hood.dense_position[slots]  # (b, m), -1 outside the dense block and for pads
    gram = torch.zeros(*inside.shape, m, dtype=torch.float64)
    if hood.dense.numel():
        rows = inside.clamp(min=0)
        both = (inside.unsqueeze(2) >= 0) & (inside.unsqueeze(1) >= 0)
        width = hood.dense.shape[0]
        dense = torch.take(hood.dense, rows.unsqueeze(2) * width + rows.unsqueeze(1))
        gram = torch.where(both, dense, 0.0).to(torch.float64)
    batch_row, slot = torch.nonzero((inside < 0) & (slots < n_items), as_tuple=True)
    if len(slot):
        neighbour = slots[batch_row, slot]
        lists = table[neighbour]  # (k, m): each outside neighbour's own list
        row = slots[batch_row]
        found = torch.searchsorted(row, lists).clamp_(max=m - 1)
        hit = (row.gather(1, found) == lists) & (lists < n_items)
        which = batch_row.unsqueeze(1).expand(-1, m)[hit]
        s = slot.unsqueeze(1).expand(-1, m)[hit]
        t = found[hit]
        found_values = values[neighbour][hit].to(torch.float64)
        gram[which, s, t] = found_values
        gram[which, t, s] = found_values
    return gram


def ridge_solve(
    gram: torch.Tensor, rhs: torch.Tensor, valid: torch.Tensor, l2: float
) -> tuple[torch.Tensor, int]:
    """Cholesky solves of a batch; systems without a factor get l2, 2 l2, 4 l2 ... more ridge."""
    factor, info = torch.linalg.cholesky_ex(gram)
    failed = torch.nonzero(info > 0).ravel()
    shifted_items, extra = len(failed), l2
    for _ in range(MAX_RIDGE_DOUBLINGS):
        if len(failed) == 0:
            break
        shifted = gram[failed] + torch.diag_embed(valid[failed] * extra)
        retry, retry_info = torch.linalg.cholesky_ex(shifted)
        done = retry_info == 0
        factor[failed[done]] = retry[done]
        failed, extra = failed[~done], extra * 2
    if len(failed):
        raise RecvaeError(f"sparse_ease: {len(failed)} item systems did not factor; raise l2")
    return torch.cholesky_solve(rhs, factor), shifted_items
