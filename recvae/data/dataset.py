"""A dataset directory: the one on-disk form of ingested interactions.

    DATASET_DIR/
      manifest.json       source fingerprint, filters applied, counts before and after each step
      interactions.npz    CSR user x item matrix, float32, users as rows (scipy, no pickle)
      users.parquet       original user ids; row i of the matrix is user i
      items.parquet       original item ids; column j of the matrix is item j
      times.npz           optional: latest event time (unix seconds) per (user, item), same pattern
      split/              optional: train.npz, valid_*.npz, test_*.npz, split.json

Written atomically (temporary directory, then rename), so a failed ingest leaves nothing behind
and an existing dataset untouched.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from recvae.data.split import Split, as_csr
from recvae.data.vocab import Vocabulary
from recvae.errors import RecvaeError
from recvae.io import atomic_dir


@dataclass
class Dataset:
    """Interactions as a matrix with the vocabularies that give rows and columns their ids."""

    matrix: sp.csr_matrix
    users: Vocabulary
    items: Vocabulary
    manifest: dict = field(default_factory=dict)
    split: Split | None = None
    times: sp.csr_matrix | None = None

    def __post_init__(self) -> None:
        self.matrix = as_csr(self.matrix)
        if self.matrix.shape != (len(self.users), len(self.items)):
            raise RecvaeError(
                f"matrix shape {self.matrix.shape} does not match "
                f"{len(self.users)} users x {len(self.items)} items"
            )

    @property
    def train_matrix(self) -> sp.csr_matrix:
        """What a model trains on: the split's train part when there is one, else everything."""
        return self.split.train if self.split is not None else self.matrix

    def fingerprint(self) -> str:
        """A content hash of the matrix and vocabularies, recorded beside every result."""
        digest = hashlib.sha256()
        for array in (self.matrix.indptr, self.matrix.indices, self.matrix.data):
            digest.update(np.ascontiguousarray(array).tobytes())
        for vocab in (self.users, self.items):
            digest.update(vocab.ids.cast(str).str.join("\x1f").item().encode())
        return digest.hexdigest()[:16]

    def save(self, directory: Path) -> None:
        # Uncompressed .npz: zlib made saving 8M interactions take ~30 s; load_npz reads either.
        with atomic_dir(Path(directory)) as tmp:
            sp.save_npz(tmp / "interactions.npz", self.matrix, compressed=False)
            self.users.save(tmp / "users.parquet")
            self.items.save(tmp / "items.parquet")
            if self.split is not None:
                self.split.save(tmp / "split")
            if self.times is not None:
                sp.save_npz(tmp / "times.npz", self.times, compressed=False)
            manifest = dict(self.manifest)
            manifest.setdefault("format", "recvae-dataset/1")
            manifest["shape"] = list(self.matrix.shape)
            manifest["nnz"] = int(self.matrix.nnz)
            manifest["fingerprint"] = self.fingerprint()
            (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, default=str))

    @classmethod
    def load(cls, directory: Path) -> Dataset:
        directory = Path(directory)
        manifest_path = directory / "manifest.json"
        if not manifest_path.is_file():
            raise RecvaeError(
                f"{directory} is not a recvae dataset directory (no manifest.json); "
                "create one with `recvae ingest`"
            )
        split_dir = directory / "split"
        times_path = directory / "times.npz"
        return cls(
            matrix=as_csr(sp.load_npz(directory / "interactions.npz")),
            users=Vocabulary.load(directory / "users.parquet"),
            items=Vocabulary.load(directory / "items.parquet"),
            manifest=json.loads(manifest_path.read_text()),
            split=Split.load(split_dir) if split_dir.is_dir() else None,
            times=sp.csr_matrix(sp.load_npz(times_path)) if times_path.is_file() else None,
        )
