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
from recvae.models.base import Recommender

POPULARITY_FILE = "popularity.npy"


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


def load_artifact(path: Path) -> Artifact:
    path = Path(path)
    if not (path / "items.parquet").is_file():
        raise RecvaeError(
            f"{path} is not a recvae model directory (no items.parquet); "
            "train one with `recvae train`"
        )
    metadata_file = path / "metadata.json"
    metadata = json.loads(metadata_file.read_text()) if metadata_file.is_file() else {}
    return Artifact(load_model(path), Vocabulary.load(path / "items.parquet"), metadata)


def item_popularity(model_dir: Path) -> np.ndarray | None:
    """Interaction count per item of the training data, stored beside the model, or None."""
    path = Path(model_dir) / POPULARITY_FILE
    if not path.is_file():
        return None
    return np.load(path, allow_pickle=False).astype(np.float32)


def write_item_popularity(model_dir: Path, train: sp.csr_matrix) -> None:
    """Store the training matrix's per-item interaction counts (the popularity fallback)."""
    counts = np.asarray((as_csr(train) > 0).sum(axis=0), dtype=np.float32).ravel()
    np.save(Path(model_dir) / POPULARITY_FILE, counts, allow_pickle=False)
