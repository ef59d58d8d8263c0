"""A model artifact: a saved model plus what is needed to use it on real ids.

    MODEL_DIR/
      model.json, weights ...   the model's own files (see recvae.models.base)
      items.parquet             the item vocabulary the model's columns follow
      metadata.json             training metrics, data fingerprint, seed, versions, git commit
      popularity.npy            optional: interactions per item in the training data (fallback)

Written to a temporary directory and renamed into place, so a failed job never leaves a
half-written model where the last good one was.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from recvae.data.split import as_csr
from recvae.data.vocab import Vocabulary
from recvae.errors import RecvaeError
from recvae.io import atomic_dir
from recvae.models import load_model
from recvae.models.base import DAMAGED, Recommender, load_array

POPULARITY_FILE = "popularity.npy"
log = logging.getLogger(__name__)


@dataclass
class Artifact:
    model: Recommender
    items: Vocabulary
    metadata: dict[str, Any] = field(default_factory=dict)


def save_artifact(artifact: Artifact, dest: Path, train: sp.csr_matrix | None = None) -> None:
    """Write the model directory atomically; with `train`, also its item popularity.

    `popularity.npy` (interactions per item in `train`) is what `recvae recommend` ranks by for
    users with no usable history (see recvae.scoring).
    """
    with atomic_dir(Path(dest)) as tmp:
        artifact.model.save(tmp)
        artifact.items.save(tmp / "items.parquet")
        (tmp / "metadata.json").write_text(json.dumps(artifact.metadata, indent=2, default=str))
        if train is not None:
            write_item_popularity(tmp, train)
    name = getattr(artifact.model, "name", type(artifact.model).__name__)
    log.info("saved %s model to %s", name, dest,
             extra={"event": "model_saved", "model": name, "path": str(dest)})  # fmt: skip


def load_artifact(path: Path) -> Artifact:
    """Load a model directory, checking that its files agree (one RecvaeError line if not).

    Beyond each model's own checks (recvae.models.base), the model must score exactly the
    items of items.parquet, and popularity.npy, when present, must count those items.
    """
    path = Path(path)
    if not path.is_dir():
        raise RecvaeError(f"{path} is not a recvae model directory (it does not exist)")
    if not (path / "items.parquet").is_file():
        raise RecvaeError(
            f"{path} is not a recvae model directory (no items.parquet); "
            "train one with `recvae train`"
        )
    metadata = _read_metadata(path / "metadata.json")
    model = load_model(path)
    items = _read_items(path / "items.parquet")
    try:
        model.score(sp.csr_matrix((0, len(items)), dtype=np.float32))
    except RecvaeError as error:
        raise RecvaeError(
            f"{path}: the model does not score the {len(items):,} items of its items.parquet "
            f"({str(error).split(';')[0]}); {DAMAGED}"
        ) from error
    item_popularity(path, len(items))
    return Artifact(model, items, metadata)


def _read_metadata(file: Path) -> dict[str, Any]:
    if not file.is_file():
        return {}
    try:
        metadata = json.loads(file.read_text())
    except (UnicodeDecodeError, ValueError) as error:
        raise RecvaeError(f"{file} is not valid JSON ({error}); {DAMAGED}") from error
    if not isinstance(metadata, dict):
        raise RecvaeError(f"{file} must hold a JSON object; {DAMAGED}")
    return metadata


def _read_items(file: Path) -> Vocabulary:
    try:
        return Vocabulary.load(file)
    except Exception as error:  # polars/arrow raise many types for a damaged Parquet file
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise RecvaeError(f"{file} is not a readable item vocabulary ({first}); {DAMAGED}") from (
            error
        )


def item_popularity(model_dir: Path, n_items: int | None = None) -> np.ndarray | None:
    """Interaction count per item of the training data, stored beside the model, or None."""
    path = Path(model_dir) / POPULARITY_FILE
    if not path.is_file():
        return None
    return load_array(path, ndim=1, rows=n_items).astype(np.float32)


def write_item_popularity(model_dir: Path, train: sp.csr_matrix) -> None:
    """Store the training matrix's per-item interaction counts (the popularity fallback)."""
    counts = np.asarray((as_csr(train) > 0).sum(axis=0), dtype=np.float32).ravel()
    np.save(Path(model_dir) / POPULARITY_FILE, counts, allow_pickle=False)
