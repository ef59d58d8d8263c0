"""Warm start across catalogue growth: seed a new model with a trained one, item by item id.

Yesterday's model knows yesterday's items; today's data has a few new items, may have lost some,
and its vocabulary may order them differently. Only the layers with an item axis differ: the
first layer (one row per item: the item's input embedding) and the last (one column per item
and its bias: the item's output embedding). So:

- every item both models know gets its old row / column / bias, found by item id, not by position;
- a new item keeps the fresh initialisation of the new model (the same seeded init a cold
  model gets), except its output bias, which starts at the mean of the known items' biases: an
  "average" item, neither buried under the catalogue nor pushed above it before it has data;
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
import torch

from recvae.errors import RecvaeError


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


def warm_state(
    fresh: dict[str, torch.Tensor],
    trained: dict[str, torch.Tensor],
    item_axes: dict[str, int],
    rows: np.ndarray,
) -> dict[str, torch.Tensor]:
    """The new module's state: `fresh` (its seeded init) with `trained`'s values copied in.

    `rows[i]` is the trained model's index of new item i (-1: new). Tensors named in
    `item_axes` are copied item by item along that axis; the others whole.
    """
    if set(fresh) != set(trained):
        raise WarmStartError("the warm-start model has other layers; it cannot seed these weights")
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
                    f"the warm-start model's {name} is {tuple(old.shape)}, this model's is "
                    f"{tuple(init.shape)} (hidden_dims / latent_dim differ); it cannot seed it"
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
        if init.dim() == 1 and len(known) < len(rows) and len(known):
            new = torch.from_numpy(np.flatnonzero(rows < 0))
            value[new] = old.index_select(0, source_index).mean()  # an output bias
        state[name] = value
    return state


def load_source(source: Any, cls: type) -> Any:
    """The trained model a WarmStart names (loaded when given as a directory)."""
    model = cls.load(Path(source)) if isinstance(source, Path | str) else source
    if getattr(model, "module", None) is None:
        raise WarmStartError(f"{cls.name}: the warm-start model has not been trained")
    if not isinstance(model, cls):
        raise WarmStartError(f"{cls.name}: cannot warm start from a {type(model).__name__}")
    return model
