"""Batch top-N: users in chunks -> model.score -> mask seen and filtered items -> top-K -> frames.

Scoring streams: only one chunk of users is ever held as a dense (chunk x items) score matrix, so
memory is bounded by `chunk_size` whatever the number of users. The matrix stays where the model
scored it (a GPU for a torch model or EASE on CUDA): masking and the top-K run there
(recvae.topk) and only the k ids and scores per user come back to the host. With `item_block`,
a chunk is scored item block by item block into a running top-K (recvae.topk.RunningTopK) and only a
(chunk x block) array is held; the rows are the same. Each chunk becomes a Polars frame
of rows (user_id, rank, item_id, score, model_version, fallback) with the ORIGINAL ids, ready for
a writer in `recvae.export`.

Users with no usable history (none of their items are known to the model, or they are not in the
history at all) get the item-popularity ranking instead of a fold-in score, flagged by
`fallback = True`: a fold-in of an empty history says nothing about the user. The popularity is
stored beside the model (recvae.artifact.item_popularity).

Sharding (`shard_users`) splits the users into contiguous, disjoint slices; exporting every shard
and concatenating the outputs in shard order gives exactly the unsharded export.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import scipy.sparse as sp
import torch

from recvae.data.split import as_csr
from recvae.data.vocab import Vocabulary
from recvae.device import to_device
from recvae.errors import RecvaeError
from recvae.models.base import Recommender, score_tensor, score_tensor_blocks, slice_blocks
from recvae.topk import RunningTopK, as_tensor, mask_seen_tensor, top_k_tensor

OUTPUT_COLUMNS = ("user_id", "rank", "item_id", "score", "model_version", "fallback")


@dataclass(frozen=True)
class ScoringOptions:
    """What to recommend: how many items, which ones may appear, and how many users per chunk."""

    k: int = 100
    exclude_seen: bool = True
    allow_items: np.ndarray | None = None  # dense item indices that may be recommended
    deny_items: np.ndarray | None = None  # dense item indices that must never be recommended
    chunk_size: int = 1000
    # items per block for item-chunked top-K (None: score all items at once). With a block,
    # a chunk's scores are held as (chunk x block), not (chunk x items); the result is the same.
    item_block: int | None = None

    def __post_init__(self) -> None:
        if self.item_block is not None and self.item_block < 1:
            raise RecvaeError(f"item block must be at least 1, got {self.item_block}")
        if self.k < 1:
            raise RecvaeError(f"k must be at least 1, got {self.k}")
        if self.chunk_size < 1:
            raise RecvaeError(f"chunk size must be at least 1, got {self.chunk_size}")


@dataclass(frozen=True)
class UsersToScore:
    """The users to export, row-aligned with their histories over the model's items."""

    ids: pl.Series  # original user ids, one per row
    history: sp.csr_matrix  # (n_users, n_model_items)

    def __post_init__(self) -> None:
        if len(self.ids) != self.history.shape[0]:
            raise RecvaeError(
                f"{len(self.ids)} user ids for a history of {self.history.shape[0]} rows"
            )

    def __len__(self) -> int:
        return len(self.ids)

    def take(self, rows: np.ndarray) -> UsersToScore:
        return UsersToScore(self.ids.gather(rows), self.history[rows])


def shard_users(n_users: int, shard: int, num_shards: int) -> np.ndarray:
    """Row indices of shard `shard` of `num_shards`: contiguous, disjoint, covering all rows.

    Contiguous ranges (not `row % n`) keep each shard's output in the unsharded order, so the
    shards' outputs concatenated in shard order are the unsharded export, row for row.
    """
    if num_shards < 1:
        raise RecvaeError(f"--num-shards must be at least 1, got {num_shards}")
    if not 0 <= shard < num_shards:
        raise RecvaeError(f"--shard must be between 0 and {num_shards - 1}, got {shard}")
    bounds = np.linspace(0, n_users, num_shards + 1).round().astype(np.int64)
    return np.arange(bounds[shard], bounds[shard + 1], dtype=np.int64)


def align_items(matrix: sp.csr_matrix, source: Vocabulary, target: Vocabulary) -> sp.csr_matrix:
    """Re-index the columns of `matrix` (over `source` items) onto `target` items.

    Items unknown to `target` are dropped: a model cannot score or learn from items it never saw.
    """
    matrix = as_csr(matrix)
    if source == target:
        return matrix
    known = target.lookup(source.ids)
    column_map = np.zeros(len(source), dtype=np.int64)
    column_map[known.found] = known.indices
    coo = matrix.tocoo()
    keep = known.found[coo.col]
    aligned = sp.csr_matrix(
        (coo.data[keep], (coo.row[keep], column_map[coo.col[keep]])),
        shape=(matrix.shape[0], len(target)),
        dtype=np.float32,
    )
    aligned.sum_duplicates()
    return aligned


def select_users(ids: pl.Series, history: sp.csr_matrix, wanted: pl.Series | None) -> UsersToScore:
    """All users of `history`, or only `wanted` (in the given order; unknown ones get no history).

    Users not found in the history are kept with an empty row: they get the popularity fallback.
    """
    everyone = UsersToScore(ids, as_csr(history))
    if wanted is None:
        return everyone
    if wanted.dtype != ids.dtype:
        try:
            wanted = wanted.cast(ids.dtype, strict=True)
        except pl.exceptions.PolarsError as error:
            raise RecvaeError(
                f"user list ids of type {wanted.dtype} cannot be read as the history's user id "
                f"type {ids.dtype}: {error}"
            ) from error
    wanted = wanted.unique(maintain_order=True)
    known = Vocabulary(ids, name="user").lookup(wanted)
    # Unknown users point at an extra empty row: they have no history we can use.
    padded = sp.vstack([everyone.history, sp.csr_matrix((1, history.shape[1]), dtype=np.float32)])
    rows = np.full(len(wanted), len(ids), dtype=np.int64)
    rows[known.found] = known.indices
    return UsersToScore(wanted.rename(ids.name), as_csr(as_csr(padded)[rows]))


def candidate_mask(n_items: int, options: ScoringOptions) -> np.ndarray | None:
    """Boolean mask of recommendable items, or None when every item may be recommended."""
    if options.allow_items is None and options.deny_items is None:
        return None
    allowed = np.zeros(n_items, dtype=bool) if options.allow_items is not None else None
    if allowed is not None:
        allowed[np.asarray(options.allow_items, dtype=np.int64)] = True
    else:
        allowed = np.ones(n_items, dtype=bool)
    if options.deny_items is not None:
        allowed[np.asarray(options.deny_items, dtype=np.int64)] = False
    return allowed


def recommend_chunks(
    model: Recommender,
    users: UsersToScore,
    items: Vocabulary,
    options: ScoringOptions,
    model_version: str,
    popularity: np.ndarray,
    on_chunk: Callable[[int], None] | None = None,
) -> Iterator[pl.DataFrame]:
    """Yield one frame of top-K rows per chunk of users, in user order then rank order.

    Rows whose score would be -inf (every remaining item is seen or filtered out) are not
    emitted, so a user may get fewer than k rows but never a seen or forbidden item.
    """
    n_items = len(items)
    if users.history.shape[1] != n_items:
        raise RecvaeError(
            f"history has {users.history.shape[1]} items but the model has {n_items}; "
            "align it with the model's item vocabulary first"
        )
    if popularity.shape != (n_items,):
        raise RecvaeError(f"popularity has shape {popularity.shape}, expected ({n_items},)")
    k = min(options.k, n_items)
    allowed = candidate_mask(n_items, options)
    blocked = None if allowed is None else ~allowed
    for start in range(0, len(users), options.chunk_size):
        chunk = users.take(np.arange(start, min(start + options.chunk_size, len(users))))
        yield _chunk_frame(
            model, chunk, items, k, options, blocked, model_version, popularity
        )
        if on_chunk is not None:
            on_chunk(len(chunk))


def _chunk_frame(
    model: Recommender,
    chunk: UsersToScore,
    items: Vocabulary,
    k: int,
    options: ScoringOptions,
    blocked: np.ndarray | None,
    model_version: str,
    popularity: np.ndarray,
) -> pl.DataFrame:
    history = chunk.history
    fallback = np.diff(history.indptr) == 0
    if options.item_block is None:
        indices, values = _chunk_top_k(model, history, fallback, k, options, blocked, popularity)
    else:
        indices, values = _chunk_top_k_by_blocks(
            model, history, fallback, k, options, blocked, popularity
        )
    keep = np.isfinite(values)
    user_rows, ranks = np.nonzero(keep)
    return pl.DataFrame(
        {
            "user_id": chunk.ids.gather(user_rows),
            "rank": (ranks + 1).astype(np.int32),
            "item_id": items.original(indices[keep]),
            "score": values[keep].astype(np.float32),
            "model_version": pl.Series([model_version] * len(user_rows), dtype=pl.String),
            "fallback": fallback[user_rows],
        }
    )


def _chunk_top_k(
    model: Recommender,
    history: sp.csr_matrix,
    fallback: np.ndarray,
    k: int,
    options: ScoringOptions,
    blocked: np.ndarray | None,
    popularity: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-K of one chunk of users, scored over all items at once (chunk x items floats, on the
    model's scoring device; only the k ids and scores per user come back)."""
    with_history = np.flatnonzero(~fallback)
    if len(with_history) == len(fallback):  # the common case: score in place, no second copy
        scores = _checked_scores(model, history)
    else:  # fallback users take the popularity ranking, beside the others' scores
        model_scores = _checked_scores(model, history[with_history]) if len(with_history) else None
        device = model_scores.device if model_scores is not None else torch.device("cpu")
        scores = torch.empty(history.shape, dtype=torch.float32, device=device)
        if model_scores is not None:
            scores[to_device(with_history, device)] = model_scores
        scores[to_device(np.flatnonzero(fallback), device)] = to_device(
            popularity.astype(np.float32), device
        )
    _mask_block(scores, history, 0, options, blocked)
    indices, values = top_k_tensor(scores, k)
    return indices.cpu().numpy(), values.cpu().numpy()


def _chunk_top_k_by_blocks(
    model: Recommender,
    history: sp.csr_matrix,
    fallback: np.ndarray,
    k: int,
    options: ScoringOptions,
    blocked: np.ndarray | None,
    popularity: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """The same top-K, scored item block by item block with a running top-K (chunk x block
    floats at a time, for models that score a block on their own; see `score_blocks`)."""
    assert options.item_block is not None
    n_items = history.shape[1]
    with_history = np.flatnonzero(~fallback)
    model_blocks = (
        score_tensor_blocks(model, history[with_history], options.item_block)
        if len(with_history)
        else (
            (start, torch.from_numpy(block))
            for start, block in slice_blocks(
                np.empty((0, n_items), dtype=np.float32), options.item_block
            )
        )
    )
    running = RunningTopK(history.shape[0], k, n_items)
    everyone = len(with_history) == len(fallback)
    for start, block_scores in model_blocks:
        width = block_scores.shape[1]
        block_scores = _checked_block(block_scores, len(with_history), start, width, n_items)
        if everyone:
            scores = block_scores
        else:
            device = block_scores.device
            scores = torch.empty((history.shape[0], width), dtype=torch.float32, device=device)
            scores[to_device(with_history, device)] = block_scores
            scores[to_device(np.flatnonzero(fallback), device)] = to_device(
                np.ascontiguousarray(popularity[start : start + width], dtype=np.float32), device
            )
        _mask_block(scores, history, start, options, blocked)
        running.add(start, scores)
    return running.result()


def _mask_block(
    scores: torch.Tensor,
    history: sp.csr_matrix,
    start: int,
    options: ScoringOptions,
    blocked: np.ndarray | None,
) -> None:
    """Rule out, in the block of items from `start`, the users' seen items (unless asked to keep
    them) and the items the allow/deny lists block, in place on the scores' device: one rule for
    full and block-wise scoring."""
    if options.exclude_seen:
        mask_seen_tensor(scores, history, start)
    if blocked is not None:
        columns = np.flatnonzero(blocked[start : start + scores.shape[1]])
        if len(columns):
            scores[:, to_device(columns, scores.device)] = -torch.inf


def _checked_block(
    scores: torch.Tensor, rows: int, start: int, width: int, n_items: int
) -> torch.Tensor:
    """One block of a model's scores, refusing a wrong shape or non-finite values."""
    if scores.shape[0] != rows or width < 1 or start + width > n_items:
        raise RecvaeError(
            f"model returned a score block {tuple(scores.shape)} at item {start} for {rows} "
            f"users and {n_items} items"
        )
    return _finite(scores)


def _checked_scores(model: Recommender, history: sp.csr_matrix) -> torch.Tensor:
    """The model's scores for `history` on its scoring device, refusing a wrong shape or
    non-finite values. Masking writes into them: models hand over scores they do not keep."""
    scores = score_tensor(model, history)
    if tuple(scores.shape) != history.shape:
        raise RecvaeError(
            f"model returned scores {tuple(scores.shape)} for {history.shape[0]} users"
        )
    return _finite(scores)


def _finite(scores: torch.Tensor) -> torch.Tensor:
    scores = as_tensor(scores)
    if not bool(torch.isfinite(scores).all()):
        raise RecvaeError("model returned NaN or infinite scores; the model is broken")
    return scores


def empty_frame(user_dtype: pl.DataType, item_dtype: pl.DataType) -> pl.DataFrame:
    """A zero-row frame with the export schema (for writing an empty but valid output)."""
    return pl.DataFrame(
        schema={
            "user_id": user_dtype,
            "rank": pl.Int32,
            "item_id": item_dtype,
            "score": pl.Float32,
            "model_version": pl.String,
            "fallback": pl.Boolean,
        }
    )


def read_ids(path: Path, what: str) -> pl.Series:
    """Ids from a file: one per line (.txt), or the first column of a .csv or .parquet file."""
    path = Path(path)
    if not path.is_file():
        raise RecvaeError(f"{what} file {path} does not exist")
    if path.suffix.lower() == ".parquet":
        series = pl.read_parquet(path).to_series(0)
    elif path.suffix.lower() == ".csv":
        series = pl.read_csv(path, infer_schema=False).to_series(0)
    else:  # read as text: an id like "00123" must not become the number 123
        series = pl.read_csv(path, has_header=False, new_columns=["id"], infer_schema=False)
        series = series.to_series(0)
    if series.null_count():
        raise RecvaeError(f"{what} file {path} has empty ids")
    return series


def item_indices(ids: pl.Series, items: Vocabulary) -> tuple[np.ndarray, int]:
    """Dense indices of the known ids among `ids`, and how many were unknown to the model."""
    known = items.lookup(ids)
    return known.indices, len(known.unknown)


def load_history(
    source: Path, items: Vocabulary, ingest_options: object | None = None
) -> tuple[pl.Series, sp.csr_matrix, dict]:
    """Users' histories over the model's items from a dataset directory or a raw log.

    A dataset directory (from `recvae ingest`) gives every interaction it holds, re-indexed onto
    the model's items; anything else is ingested as a log and its items mapped onto the model's.
    Items the model does not know are dropped and counted. Returns (user ids, history, notes).
    """
    source = Path(source)
    if (source / "manifest.json").is_file():
        from recvae.data.dataset import Dataset

        dataset = Dataset.load(source)
        history = align_items(dataset.matrix, dataset.items, items)
        dropped = int(dataset.matrix.nnz - history.nnz)
        notes = {"history": str(source), "kind": "dataset", "dropped_interactions": dropped}
        return dataset.users.ids, history, notes
    from recvae.data.ingest import describe_reading, ingest

    # Ingest with the log's own items, then align: a user whose every item is unknown to the
    # model keeps an (empty) row and gets the popularity fallback instead of vanishing.
    dataset = ingest([source], ingest_options)  # type: ignore[arg-type]
    history = align_items(dataset.matrix, dataset.items, items)
    dropped = int(dataset.matrix.nnz - history.nnz)
    notes = {"history": str(source), "kind": "log", "dropped_interactions": dropped}
    notes["read_as"] = describe_reading(dataset.manifest)
    return dataset.users.ids, history, notes


def scorer_over_items(
    model: Recommender, model_items: Vocabulary, target_items: Vocabulary
) -> Callable[[sp.csr_matrix], np.ndarray]:
    """A history -> scores function over `target_items` for a model trained on `model_items`.

    Lets yesterday's model be evaluated on today's validation split: histories are mapped onto
    the model's items, and items the model never saw score -inf (it cannot recommend them).
    """
    if model_items == target_items:
        return model.score
    lookup = model_items.lookup(target_items.ids)
    known = np.flatnonzero(lookup.found)

    def score(history: sp.csr_matrix) -> np.ndarray:
        scores = model.score(align_items(history, target_items, model_items))
        out = np.full((history.shape[0], len(target_items)), -np.inf, dtype=np.float32)
        out[:, known] = scores[:, lookup.indices]
        return out

    return score
