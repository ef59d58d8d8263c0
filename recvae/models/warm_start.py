"""Warm start across catalogue growth: seed a new model with a trained one, item by item id.

Yesterday's model knows yesterday's items; today's data has a few new items, may have lost some,
and its vocabulary may order them differently. Only the layers with an item axis differ: the
first layer (one row per item: the item's input embedding) and the last (one column per item
and its bias: the item's output embedding). So:

- every item both models know gets its old row / column / bias, found by item id, not by position;
- a new item starts where the items most like it are: its row, column and bias are the average
  of its 10 most similar known items' (cosine of the sets of training users who took them, the
  weights; `new_item_neighbours`).
  A fresh random column would leave it far below the trained catalogue: in a simulated week
  (benchmarks/warm_start_week.py) 10 warm epochs then brought almost none of the day's new
  items into anyone's top-20, where a cold retrain brought all of them. A new item that no
  training user took keeps the fresh seeded initialisation, with the mean of the known items'
  output biases;
- an item that disappeared is dropped with its row;
- every other tensor (hidden layers, layer norms) is copied as is; their shapes must match.

The module says which of its tensors have an item axis (`item_axes()`: name -> axis), so nothing
here guesses from shapes (a hidden layer may well be as wide as a small catalogue).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import scipy.sparse as sp
import torch

from recvae.errors import RecvaeError

NEIGHBOURS = 10  # known items a new item starts from


class WarmStartError(RecvaeError):
    """The warm-start model cannot seed this one (another architecture, untrained, ...)."""


@dataclass(frozen=True)
class WarmStart:
    """A trained model to start from, and for each of today's items its index in that model
    (-1 for a new item). Without `item_rows` the two item vocabularies must be identical."""

    source: Any  # a trained TorchAutoencoder, or the directory of a saved one
    item_rows: np.ndarray | None = None

    @classmethod
    def by_item_ids(cls, source: Any, old_items: Any, new_items: Any) -> WarmStart:
        """Match today's items (`new_items`, a Vocabulary) to the source model's by id."""
        return cls(source, item_rows(old_items.ids, new_items.ids))

    def describe(self) -> dict[str, int]:
        """Counts for a run report: items copied from the source, new items."""
        if self.item_rows is None:
            return {}
        known = int((self.item_rows >= 0).sum())
        return {"known_items": known, "new_items": int(len(self.item_rows) - known)}


def item_rows(old_ids: pl.Series, new_ids: pl.Series) -> np.ndarray:
    """For each id of `new_ids`, its position in `old_ids`, or -1 when it is new."""
    old, new = old_ids.rename("id"), new_ids.rename("id")
    if old.dtype != new.dtype:  # e.g. Int64 yesterday, String today: compare as text
        old, new = old.cast(pl.String), new.cast(pl.String)
    table = pl.DataFrame({"id": old, "row": np.arange(len(old), dtype=np.int64)})
    joined = pl.DataFrame({"id": new}).join(table, on="id", how="left", maintain_order="left")
    return joined["row"].fill_null(-1).to_numpy().astype(np.int64)


def new_item_neighbours(
    train: sp.csr_matrix, rows: np.ndarray, n_old: int, k: int = NEIGHBOURS
) -> sp.csr_matrix | None:
    """(new items x the trained model's n_old items) weights: row i spreads over the `k` known
    items most similar to new item i (cosine of their user sets, the weights), summing to 1; an
    all-zero row for a new item that no training user took. None when there is no new item.

    The k most similar items, not every co-occurring one: an average over everything the item's
    users took is dominated by the popular items and shrinks towards the catalogue's mean, and
    the new item would start below the items its users actually share it with.
    """
    new = np.flatnonzero(rows < 0)
    if len(new) == 0:
        return None
    known = np.flatnonzero(rows >= 0)
    binary = train.tocsc(copy=True)
    binary.data[:] = 1.0
    counts = np.asarray(binary.sum(axis=0)).ravel()
    together = (binary[:, new].T @ binary[:, known]).toarray()
    cosine = together / np.sqrt(np.maximum(counts[new][:, None] * counts[known][None, :], 1))
    top = np.argsort(-cosine, axis=1, kind="stable")[:, :k]
    weights = np.zeros_like(cosine)
    np.put_along_axis(weights, top, np.take_along_axis(cosine, top, axis=1), axis=1)
    totals = weights.sum(axis=1, keepdims=True)
    weights = np.divide(weights, totals, out=np.zeros_like(weights), where=totals > 0)
    # Columns in the trained model's order, so the weights multiply its tensors directly.
    out = np.zeros((len(new), n_old))
    out[:, rows[known]] = weights
    return sp.csr_matrix(out)


def warm_state(
    fresh: dict[str, torch.Tensor],
    trained: dict[str, torch.Tensor],
    item_axes: dict[str, int],
    rows: np.ndarray,
    neighbours: sp.csr_matrix | None = None,
) -> dict[str, torch.Tensor]:
    """The new module's state: `fresh` (its seeded init) with `trained`'s values copied in.

    `rows[i]` is the trained model's index of new item i (-1: new). Tensors named in
    `item_axes` are copied item by item along that axis; the others whole. With `neighbours`
    (see `new_item_neighbours`) a new item's slices are its neighbours' weighted average.
    """
    if set(fresh) != set(trained):
        raise WarmStartError(
            "the warm-start model has a different architecture (other layers); it cannot seed "
            "these weights"
        )
    known = np.flatnonzero(rows >= 0)
    source_index = torch.from_numpy(rows[known])
    target_index = torch.from_numpy(known)
    state: dict[str, torch.Tensor] = {}
    for name, init in fresh.items():
        old = trained[name]
        axis = item_axes.get(name)
        if axis is None:
            if old.shape != init.shape:
                raise WarmStartError(
                    f"the warm-start model has a different architecture: its {name} is "
                    f"{tuple(old.shape)}, this model's {tuple(init.shape)} (hidden_dims / "
                    "latent_dim differ); it cannot seed these weights"
                )
            state[name] = old.clone()
            continue
        kept_shape = [size for dim, size in enumerate(init.shape) if dim != axis]
        if [size for dim, size in enumerate(old.shape) if dim != axis] != kept_shape:
            raise WarmStartError(
                f"the warm-start model's {name} is {tuple(old.shape)}, this model's is "
                f"{tuple(init.shape)}: they differ beyond the item axis; it cannot seed it"
            )
        if len(rows) and rows.max(initial=-1) >= old.shape[axis]:
            raise WarmStartError(f"item index beyond the warm-start model's {old.shape[axis]}")
        value = init.clone()
        value.index_copy_(axis, target_index, old.index_select(axis, source_index))
        if len(known) < len(rows):
            _init_new_items(value, old, axis, rows, source_index, neighbours)
        state[name] = value
    return state


def _init_new_items(
    value: torch.Tensor,
    old: torch.Tensor,
    axis: int,
    rows: np.ndarray,
    source_index: torch.Tensor,
    neighbours: sp.csr_matrix | None,
) -> None:
    """New items' slices of one item-axis tensor: their neighbours' average where they have
    neighbours; else the fresh init (a bias: the mean of the known items' biases)."""
    new = np.flatnonzero(rows < 0)
    alone = new
    if neighbours is not None:
        has = np.asarray(neighbours.sum(axis=1)).ravel() > 0
        moved = old.movedim(axis, 0).reshape(old.shape[axis], -1).double().numpy()
        averaged = torch.from_numpy(neighbours[has] @ moved).to(value.dtype)
        target = value.movedim(axis, 0)  # a view: writing into it writes into `value`
        target[torch.from_numpy(new[has])] = averaged.reshape(-1, *target.shape[1:])
        alone = new[~has]
    if value.dim() == 1 and len(alone) and len(source_index):
        value[torch.from_numpy(alone)] = old.index_select(0, source_index).mean()


def load_source(source: Any, cls: type) -> Any:
    """The trained model a WarmStart names (loaded when given as a directory)."""
    model = cls.load(Path(source)) if isinstance(source, Path | str) else source
    if getattr(model, "module", None) is None:
        raise WarmStartError(f"{cls.name}: the warm-start model has not been trained")
    if not isinstance(model, cls):
        raise WarmStartError(f"{cls.name}: cannot warm start from a {type(model).__name__}")
    return model
