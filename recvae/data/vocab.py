"""Stable id vocabularies: original user or item ids <-> dense indices 0..n-1.

A model trained yesterday keeps its item vocabulary, so today's logs are mapped through it:
unknown ids map to -1 (reported and dropped by the caller), never to a wrong index.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from recvae.errors import RecvaeError


class Vocabulary:
    """An ordered list of original ids; position i is dense index i."""

    def __init__(self, ids: pl.Series | np.ndarray | list, name: str = "id") -> None:
        series = ids if isinstance(ids, pl.Series) else pl.Series(name, ids)
        series = series.rename(name)
        if series.null_count():
            raise RecvaeError(f"{name} vocabulary contains null ids")
        if series.n_unique() != len(series):
            raise RecvaeError(f"{name} vocabulary contains duplicate ids")
        self.ids = series
        self.name = name

    def __len__(self) -> int:
        return len(self.ids)

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Vocabulary)
            and self.ids.dtype == other.ids.dtype
            and self.ids.equals(other.ids)
        )

    def index_of(self, ids: pl.Series | np.ndarray | list) -> np.ndarray:
        """Dense indices of `ids` (int64), -1 where an id is not in the vocabulary."""
        query = ids if isinstance(ids, pl.Series) else pl.Series(self.name, ids)
        query = query.rename(self.name)
        if query.dtype != self.ids.dtype:
            query = query.cast(pl.String).rename(self.name)
            table = self.ids.cast(pl.String)
        else:
            table = self.ids
        lookup = pl.DataFrame({self.name: table, "__index": np.arange(len(table), dtype=np.int64)})
        joined = pl.DataFrame({self.name: query}).join(
            lookup, on=self.name, how="left", maintain_order="left"
        )
        return joined["__index"].fill_null(-1).to_numpy().astype(np.int64)

    def original(self, indices: np.ndarray) -> pl.Series:
        """Original ids at the given dense indices."""
        return self.ids.gather(np.asarray(indices, dtype=np.int64))

    def save(self, path: Path) -> None:
        pl.DataFrame({self.name: self.ids}).write_parquet(path)

    @classmethod
    def load(cls, path: Path) -> Vocabulary:
        frame = pl.read_parquet(path)
        return cls(frame.to_series(0), name=frame.columns[0])
