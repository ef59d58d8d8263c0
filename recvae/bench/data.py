"""The one place a benchmark gets its data: a data set spec in, a `Dataset` out.

A path to a dataset directory (written by `recvae ingest`) is loaded as is; any other path (a
log file, or a directory with the files named in `ingest.sources`) is read by
`recvae.data.ingest.ingest` with the spec's other ingest options (`IngestOptions` fields);
a spec with `synthetic = {...}` generates a small structured data set, for tests and for
machines without the real data.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import scipy.sparse as sp

from recvae.bench.config import DatasetSpec
from recvae.data.dataset import Dataset
from recvae.data.vocab import Vocabulary
from recvae.errors import RecvaeError


def load_dataset(spec: DatasetSpec) -> Dataset:
    """Read, ingest or generate the data set a spec describes."""
    if spec.synthetic is not None and spec.path is None:
        return synthetic_dataset(**spec.synthetic)
    path = Path(spec.path) if spec.path is not None else None
    if path is None or not path.exists():
        raise RecvaeError(
            f"data set {spec.name!r}: {path} does not exist; pass --data {spec.name}=PATH"
        )
    if (path / "manifest.json").is_file():
        return Dataset.load(path)
    return ingest_spec(spec.name, path, spec.ingest)


def ingest_spec(name: str, path: Path, options: dict[str, Any]) -> Dataset:
    """Ingest a raw log: `path` is the file, or a directory holding `options["sources"]`."""
    from recvae.data.ingest import IngestOptions, ingest

    options = dict(options)
    sources = options.pop("sources", None)
    if path.is_dir():
        if not sources:
            raise RecvaeError(
                f"data set {name!r}: {path} is a directory but not a recvae dataset; list the "
                'files to read in ingest.sources, e.g. sources = ["train.txt", "valid.txt"]'
            )
        files = [path / source for source in sources]
    else:
        files = [path]
    try:
        ingest_options = IngestOptions(**options)
    except TypeError as error:
        raise RecvaeError(f"data set {name!r}: bad ingest option: {error}") from error
    return ingest(files, ingest_options)


def synthetic_dataset(
    users: int = 300, items: int = 120, tastes: int = 4, per_user: int = 12, seed: int = 0
) -> Dataset:
    """Users drawn from `tastes` groups, each preferring its own slice of the items.

    Each user takes most of their items from their group's slice and a few popular ones, so a
    model that learns anything personal beats popularity. Small and fast; not a realism claim.
    """
    if items < tastes * 4 or per_user < 3 or per_user - 2 > items // tastes:
        raise RecvaeError(
            f"synthetic data: need items >= 4 * tastes and 3 <= per_user <= items / tastes + 2, "
            f"got items={items}, tastes={tastes}, per_user={per_user}"
        )
    rng = np.random.default_rng(seed)
    slice_size = items // tastes
    popularity = 1.0 / np.arange(1, items + 1)
    popularity /= popularity.sum()
    rows, cols = [], []
    for user in range(users):
        group = rng.integers(tastes)
        own = group * slice_size + rng.choice(slice_size, per_user - 2, replace=False)
        popular = rng.choice(items, 2, replace=False, p=popularity)
        chosen = np.unique(np.concatenate([own, popular]))
        rows.append(np.full(len(chosen), user))
        cols.append(chosen)
    row, col = np.concatenate(rows), np.concatenate(cols)
    matrix = sp.csr_matrix((np.ones(len(row), np.float32), (row, col)), shape=(users, items))
    manifest = {
        "source": "synthetic",
        "params": {"users": users, "items": items, "tastes": tastes, "per_user": per_user,
                   "seed": seed},
    }  # fmt: skip
    return Dataset(
        matrix,
        Vocabulary(pl.Series(np.arange(users))),
        Vocabulary(pl.Series(np.arange(items))),
        manifest=manifest,
    )
