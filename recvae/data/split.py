"""Splits of a user x item matrix into what a model trains on and what it is scored on.

Two protocols, one shape:
- strong generalization (the Mult-VAE paper): whole users are held out; each held-out user's
  items are split into a fold-in history and held-out items;
- weak generalization (LightGCN): every user trains on part of their items and is scored on the
  rest, so the history of an evaluated user is their training row.

Either way evaluation sees a `Holdout`: row-aligned `history` and `heldout` matrices plus the
dataset row of each evaluated user. Models score histories, so both protocols run the same code.

The split policy lives here too, once: `ProtocolSpec` + `make_split`: a dataset and a protocol
give a `Split`. `recvae split`, `recvae train`, `recvae tune`, the benchmarks and the nightly job
all split this way ("auto" is the training default: the dataset's own split, else held-out
users).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from recvae.errors import RecvaeError


@dataclass(frozen=True)
class Holdout:
    """Evaluation users: what the model may see (history) and what it must find (heldout)."""

    history: sp.csr_matrix
    heldout: sp.csr_matrix
    users: np.ndarray  # dataset row index of each evaluated user (int64)

    def __post_init__(self) -> None:
        if self.history.shape != self.heldout.shape:
            raise RecvaeError(
                f"holdout history {self.history.shape} and heldout {self.heldout.shape} "
                "must have the same shape"
            )
        if len(self.users) != self.history.shape[0]:
            raise RecvaeError(
                f"holdout has {len(self.users)} user ids for {self.history.shape[0]} rows"
            )

    @property
    def n_items(self) -> int:
        return self.history.shape[1]

    def with_heldout_users_only(self) -> Holdout:
        """Drop users with nothing held out: they carry no signal for ranking metrics."""
        keep = np.flatnonzero(self.heldout.getnnz(axis=1) > 0)
        return Holdout(self.history[keep], self.heldout[keep], self.users[keep])

    def save(self, directory: Path, name: str) -> None:
        sp.save_npz(directory / f"{name}_history.npz", self.history, compressed=False)
        sp.save_npz(directory / f"{name}_heldout.npz", self.heldout, compressed=False)
        np.save(directory / f"{name}_users.npy", self.users, allow_pickle=False)

    @classmethod
    def load(cls, directory: Path, name: str) -> Holdout:
        return cls(
            as_csr(sp.load_npz(directory / f"{name}_history.npz")),
            as_csr(sp.load_npz(directory / f"{name}_heldout.npz")),
            np.load(directory / f"{name}_users.npy", allow_pickle=False),
        )


@dataclass(frozen=True)
class Split:
    """Training matrix plus optional validation and test holdouts over the same items."""

    train: sp.csr_matrix
    valid: Holdout | None = None
    test: Holdout | None = None
    protocol: str = "weak"
    params: dict | None = None

    def __post_init__(self) -> None:
        for name, part in (("valid", self.valid), ("test", self.test)):
            if part is not None and part.n_items != self.train.shape[1]:
                raise RecvaeError(
                    f"{name} holdout has {part.n_items} items, train has {self.train.shape[1]}"
                )

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        sp.save_npz(directory / "train.npz", self.train, compressed=False)
        parts = []
        for name, part in (("valid", self.valid), ("test", self.test)):
            if part is not None:
                part.save(directory, name)
                parts.append(name)
        meta = {"protocol": self.protocol, "params": self.params or {}, "parts": parts}
        (directory / "split.json").write_text(json.dumps(meta, indent=2))

    @classmethod
    def load(cls, directory: Path) -> Split:
        meta = json.loads((directory / "split.json").read_text())
        parts = {name: Holdout.load(directory, name) for name in meta["parts"]}
        return cls(
            train=as_csr(sp.load_npz(directory / "train.npz")),
            valid=parts.get("valid"),
            test=parts.get("test"),
            protocol=meta["protocol"],
            params=meta["params"],
        )


def as_csr(matrix: sp.spmatrix | sp.sparray) -> sp.csr_matrix:
    """CSR, float32, canonical (sorted indices, no duplicates): what every model expects."""
    csr = sp.csr_matrix(matrix, dtype=np.float32)
    csr.sum_duplicates()
    csr.sort_indices()
    return csr


def split_rows(
    matrix: sp.csr_matrix, fraction: float, rng: np.random.Generator
) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """Split each row's items at random: about `fraction` of them go to the second matrix.

    Every row with at least one item keeps at least one item in the first (history) matrix, and a
    row with two or more items gives at least one to the second, as in the paper's 80/20 fold-in.
    """
    if not 0.0 < fraction < 1.0:
        raise RecvaeError(f"holdout fraction must be between 0 and 1, got {fraction}")
    matrix = as_csr(matrix)
    counts = np.diff(matrix.indptr)
    n_out = np.where(counts >= 2, np.maximum(1, np.floor(counts * fraction + 0.5)), 0)
    n_out = np.minimum(n_out, np.maximum(counts - 1, 0)).astype(np.int64)
    # Random order within each row: sort by (row, random key), then the first n_out are held out.
    rows = np.repeat(np.arange(matrix.shape[0]), counts)
    order = np.lexsort((rng.random(matrix.nnz), rows))
    position_in_row = np.arange(matrix.nnz) - np.repeat(matrix.indptr[:-1], counts)
    out_mask = np.empty(matrix.nnz, dtype=bool)
    out_mask[order] = position_in_row < np.repeat(n_out, counts)
    return _mask_entries(matrix, ~out_mask), _mask_entries(matrix, out_mask)


def split_rows_by_time(
    matrix: sp.csr_matrix, times: sp.csr_matrix, fraction: float
) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """Like `split_rows`, but each row's latest `fraction` of items (by `times`) is held out."""
    matrix, times = as_csr(matrix), sp.csr_matrix(times, dtype=np.float64)
    times.sort_indices()
    if matrix.shape != times.shape or not np.array_equal(matrix.indices, times.indices):
        raise RecvaeError("time matrix must have the same nonzero pattern as the interactions")
    counts = np.diff(matrix.indptr)
    n_out = np.where(counts >= 2, np.maximum(1, np.floor(counts * fraction + 0.5)), 0)
    n_out = np.minimum(n_out, np.maximum(counts - 1, 0)).astype(np.int64)
    rows = np.repeat(np.arange(matrix.shape[0]), counts)
    order = np.lexsort((-times.data, rows))  # newest first within each row
    position_in_row = np.arange(matrix.nnz) - np.repeat(matrix.indptr[:-1], counts)
    out_mask = np.empty(matrix.nnz, dtype=bool)
    out_mask[order] = position_in_row < np.repeat(n_out, counts)
    return _mask_entries(matrix, ~out_mask), _mask_entries(matrix, out_mask)


def _mask_entries(matrix: sp.csr_matrix, keep: np.ndarray) -> sp.csr_matrix:
    coo = matrix.tocoo()
    return as_csr(
        sp.csr_matrix((coo.data[keep], (coo.row[keep], coo.col[keep])), shape=matrix.shape)
    )


def weak_generalization(
    matrix: sp.csr_matrix,
    valid_fraction: float = 0.2,
    seed: int = 0,
    times: sp.csr_matrix | None = None,
) -> Split:
    """Every user trains on most of their items; the rest (random, or latest by time) validate."""
    rng = np.random.default_rng(seed)
    if times is None:
        train, valid = split_rows(matrix, valid_fraction, rng)
    else:
        train, valid = split_rows_by_time(matrix, times, valid_fraction)
    users = np.arange(matrix.shape[0], dtype=np.int64)
    holdout = Holdout(train, valid, users).with_heldout_users_only()
    params = {"valid_fraction": valid_fraction, "seed": seed, "by_time": times is not None}
    return Split(train=train, valid=holdout, protocol="weak", params=params)


def strong_generalization(
    matrix: sp.csr_matrix,
    n_valid_users: int,
    n_test_users: int,
    heldout_fraction: float = 0.2,
    seed: int = 0,
    valid_block: int = 0,
) -> Split:
    """The Mult-VAE paper's protocol: disjoint train / validation / test users.

    Validation and test users' items are split into fold-in history and held-out items. As in the
    paper, items that no training user interacted with are kept in the item space but a model
    cannot learn them; callers that want the paper's exact item filter apply it at ingest.

    The validation users are block `valid_block` (0: the first) of `n_valid_users` users in the
    seeded user order after the test users, and every other non-test user trains: the blocks are
    disjoint hold-outs of one draw (`recvae.workflow.folds`, auto's validation folds).
    """
    matrix = as_csr(matrix)
    n_users = matrix.shape[0]
    if n_valid_users + n_test_users >= n_users:
        raise RecvaeError(
            f"cannot hold out {n_valid_users} validation and {n_test_users} test users "
            f"from {n_users} users: leave some to train on"
        )
    rng = np.random.default_rng(seed)
    order = rng.permutation(n_users)
    test_users = np.sort(order[:n_test_users])
    start = n_test_users + valid_block * n_valid_users
    valid_users = np.sort(order[start : start + n_valid_users])
    train_users = np.sort(np.concatenate([order[n_test_users:start],
                                          order[start + n_valid_users :]]))  # fmt: skip

    def holdout(users: np.ndarray) -> Holdout | None:
        if len(users) == 0:
            return None
        history, heldout = split_rows(matrix[users], heldout_fraction, rng)
        return Holdout(history, heldout, users.astype(np.int64)).with_heldout_users_only()

    params = {
        "n_valid_users": n_valid_users,
        "n_test_users": n_test_users,
        "heldout_fraction": heldout_fraction,
        "seed": seed,
        "train_users": len(train_users),
    }
    return Split(
        train=matrix[train_users],
        valid=holdout(valid_users),
        test=holdout(test_users),
        protocol="strong",
        params=params,
    )


# --- split policy: a dataset and a protocol give a Split --------------------------------------

PROTOCOLS = ("strong", "weak", "presplit", "auto", "none")


@dataclass(frozen=True)
class ProtocolSpec:
    """How to split: the protocol's name and its options (unused options are ignored).

    - "strong", "weak", "presplit": the evaluation protocols above / the dataset's own split;
    - "auto": what training uses by default: the dataset's own split when it has one, else a
      strong-generalisation slice of `valid_users` users (0: 10% of users, at most 10,000;
      `heldout_fraction` of their items held out) and no test users;
    - "none": train on every interaction, validate on nothing.
    """

    protocol: str = "presplit"
    valid_users: int = 0
    test_users: int = 0
    heldout_fraction: float = 0.2
    by_time: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise RecvaeError(
                f"unknown protocol {self.protocol!r}: expected one of {', '.join(PROTOCOLS)}"
            )
        if self.protocol == "strong" and self.valid_users < 1:
            raise RecvaeError("the strong protocol needs valid_users >= 1 (e.g. 10000 for ML-20M)")
        if self.valid_users < 0 or self.test_users < 0:
            raise RecvaeError("valid_users and test_users must be >= 0")


def default_valid_users(n_users: int) -> int:
    """Users held out for validation when none is asked for: 10%, at least 1, at most 10,000."""
    return max(1, min(10_000, n_users // 10))


def make_split(dataset: Any, spec: ProtocolSpec) -> Split:
    """Split `dataset` by `spec`; 'presplit' returns the split stored with the dataset."""
    if spec.protocol == "none":
        return Split(train=as_csr(dataset.matrix), protocol="none", params={})
    if spec.protocol == "auto":
        if dataset.split is not None:
            if dataset.split.valid is None:
                raise RecvaeError(
                    "the dataset's split has no validation part; add one with `recvae split` "
                    "or train with --no-validation"
                )
            return dataset.split
        count = spec.valid_users or default_valid_users(dataset.matrix.shape[0])
        spec = replace(spec, protocol="strong", valid_users=count, test_users=0)
    if spec.protocol == "presplit":
        if dataset.split is None:
            raise RecvaeError(
                "protocol 'presplit' needs a dataset that carries its own split (ingest train and "
                "valid files together), or choose protocol 'strong' or 'weak'"
            )
        return dataset.split
    if spec.protocol == "strong":
        return strong_generalization(
            dataset.matrix,
            n_valid_users=spec.valid_users,
            n_test_users=spec.test_users,
            heldout_fraction=spec.heldout_fraction,
            seed=spec.seed,
        )
    times = None
    if spec.by_time:
        if dataset.times is None:
            raise RecvaeError(
                "a split by time needs event times, but this dataset has none "
                "(ingest a log with a timestamp column)"
            )
        times = dataset.times
    return weak_generalization(
        dataset.matrix, valid_fraction=spec.heldout_fraction, seed=spec.seed, times=times
    )


def describe_split(dataset: Any, spec: ProtocolSpec, split: Split) -> dict[str, Any]:
    """What a model's metadata records about the users it trained and validated on."""
    source = {"none": "none", "auto": "held out by recvae"}.get(spec.protocol, spec.protocol)
    if split is dataset.split:
        source = "dataset split"
    return {
        "source": source,
        "protocol": split.protocol,
        "params": dict(split.params or {}),
        "train_users": int(split.train.shape[0]),
        "valid_users": int(split.valid.history.shape[0]) if split.valid is not None else 0,
    }


def check_split(split: Split, n_items: int) -> None:
    """Refuse a split that cannot be evaluated: no validation part, or items that do not line up."""
    if split.valid is None:
        raise RecvaeError("the split has no validation part: nothing to tune or evaluate on")
    if split.train.shape[1] != n_items:
        raise RecvaeError(
            f"the split's train matrix has {split.train.shape[1]} items, the dataset {n_items}"
        )
    if split.valid.heldout.nnz == 0:
        raise RecvaeError("the split's validation part has no held-out items")
