"""Stable id vocabularies: original user or item ids <-> dense indices 0..n-1.

A model trained yesterday keeps its item vocabulary, so today's logs are mapped through it.
An unknown id never gets an index: `index_of` stops with an error naming it, and `lookup` returns
the indices of the known ids together with a mask saying which ones were known. (An earlier
version returned -1 for unknown ids, and `matrix[-1]` then silently read the last row.)
"""

from __future__ import annotations

from dataclasses import dataclass
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

    def lookup(self, ids: pl.Series | np.ndarray | list) -> Lookup:
        """Which of `ids` the vocabulary knows, and the dense indices of those (in query order).

        There is no sentinel index: `indices` holds only the known ids' positions, so an unknown
        id cannot index a row by accident. Ids are compared as text when the dtypes differ
        (a vocabulary of integers answers the query "20").
        """
        query = ids if isinstance(ids, pl.Series) else pl.Series(self.name, ids)
        query = original = query.rename(self.name)
        if query.dtype != self.ids.dtype:
            query = query.cast(pl.String).rename(self.name)
            table = self.ids.cast(pl.String)
        else:
            table = self.ids
        lookup = pl.DataFrame({self.name: table, "__index": np.arange(len(table), dtype=np.int64)})
        joined = pl.DataFrame({self.name: query}).join(
            lookup, on=self.name, how="left", maintain_order="left"
        )
        found = joined["__index"].is_not_null().to_numpy()
        indices = joined["__index"].drop_nulls().to_numpy().astype(np.int64)
        return Lookup(found=found, indices=indices, unknown=original.filter(pl.Series(~found)))

    def index_of(self, ids: pl.Series | np.ndarray | list) -> np.ndarray:
        """Dense indices of `ids` (int64); an unknown id is an error that names it.

        Use `lookup` when unknown ids are expected and are to be dropped or counted.
        """
        result = self.lookup(ids)
        if len(result.unknown):
            shown = ", ".join(repr(x) for x in result.unknown.head(5).to_list())
            more = f" and {len(result.unknown) - 5:,} more" if len(result.unknown) > 5 else ""
            raise RecvaeError(
                f"{len(result.unknown):,} {self.name} id(s) not in the {self.name} vocabulary "
                f"of {len(self):,} ids: {shown}{more}"
            )
        return result.indices

    def original(self, indices: np.ndarray) -> pl.Series:
        """Original ids at the given dense indices."""
        return self.ids.gather(np.asarray(indices, dtype=np.int64))

    def save(self, path: Path) -> None:
        pl.DataFrame({self.name: self.ids}).write_parquet(path)

    @classmethod
    def load(cls, path: Path) -> Vocabulary:
        frame = pl.read_parquet(path)
        return cls(frame.to_series(0), name=frame.columns[0])


@dataclass
class Lookup:
    """The answer of `Vocabulary.lookup`: known ids' indices, and which query ids were known."""

    found: np.ndarray  # bool, one per query id
    indices: np.ndarray  # int64, one per known query id, in query order
    unknown: pl.Series  # the query ids the vocabulary lacks, in query order
