"""Evaluation protocols as one function: a dataset plus a protocol spec gives a `Split`.

- "strong": the Mult-VAE paper's protocol (disjoint train / validation / test users, each held-out
  user's items split into fold-in history and held-out items);
- "weak": LightGCN's protocol, made here (random per user, or each user's latest items by time);
- "presplit": the split that came with the data (e.g. LightGCN's train.txt / valid.txt), read by
  ingest into `Dataset.split`.

The split CLI and the benchmark runner both call `make_split`, so a split made on the command line
and one made inside a benchmark are the same split for the same options.
"""

from __future__ import annotations

from dataclasses import dataclass

from recvae.data.dataset import Dataset
from recvae.data.split import Split, strong_generalization, weak_generalization
from recvae.errors import RecvaeError

PROTOCOLS = ("strong", "weak", "presplit")


@dataclass(frozen=True)
class ProtocolSpec:
    """How to split: the protocol's name and its options (unused options are ignored)."""

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


def make_split(dataset: Dataset, spec: ProtocolSpec) -> Split:
    """Split `dataset` by `spec`; 'presplit' returns the split stored with the dataset."""
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
