"""Validation folds for `recvae train --model auto`: disjoint held-out user sets, how many of
them the budget affords, and metrics pooled over them.

Why: on a small data set auto chooses among candidates whose validation scores differ by less
than one standard error of a few hundred held-out users (ml-100k: 184), so one hold-out leaves
the choice to chance. When one selection pass is cheap next to the selection time, auto repeats
it on other held-out users and chooses by the metric over all of them, each user counted once.

Fold 0 is exactly the hold-out a single run uses (`strong_generalization` with the same seed);
fold f takes the f-th block of `n_valid` users of the same seeded permutation, so the folds are
disjoint and fold 0 stays what it was.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp

from recvae.data.split import Split, strong_generalization
from recvae.metrics import mean_and_stderr

MAX_FOLDS = 5  # more folds cost selection time for ever smaller gains in certainty


def max_folds(n_users: int, n_valid: int, limit: int = MAX_FOLDS) -> int:
    """How many disjoint hold-outs of `n_valid` users `n_users` users give (at most `limit`)."""
    if n_valid < 1:
        return 1
    return max(1, min(limit, n_users // n_valid))


def fold_count(
    first_pass_seconds: float, selection_seconds: float, n_users: int, n_valid: int,
    limit: int = MAX_FOLDS,
) -> int:  # fmt: skip
    """Folds to run in all: as many passes as fit in the selection time at the first pass's
    pace (1 when the first pass used half or more of it), at most `max_folds`.

    Gowalla (2026-12-02): first pass 523 s of 428 s -> 1; gowalla-2k 91 s of 139 s -> 1;
    ml-1m-lightgcn 90 s of 374 s -> 4; ml-100k 11 s of 144 s -> 4 (738 users / 184 held out).
    """
    by_users = max_folds(n_users, n_valid, limit)
    if first_pass_seconds <= 0:
        return by_users
    by_time = int(selection_seconds // first_pass_seconds)
    return max(1, min(by_users, by_time))


def fold_split(
    matrix: sp.csr_matrix, n_valid: int, fold: int, heldout_fraction: float = 0.2, seed: int = 0
) -> Split:
    """The `fold`-th disjoint hold-out of `n_valid` users: `strong_generalization`'s validation
    block `fold` of the same seeded user order (fold 0 is its usual validation part), each user
    with `heldout_fraction` of their items to find; everyone else trains."""
    n_users = matrix.shape[0]
    if (fold + 1) * n_valid > n_users:
        raise ValueError(f"fold {fold} of {n_valid} users needs {(fold + 1) * n_valid} users, "
                         f"there are {n_users}")  # fmt: skip
    split = strong_generalization(matrix, n_valid, 0, heldout_fraction, seed, valid_block=fold)
    if fold:
        split.params["fold"] = fold
    return split


def pooled(per_user: Sequence[Mapping[str, np.ndarray]]) -> tuple[dict[str, float],
                                                                    dict[str, float]]:
    """Means and standard errors of every metric over the union of the folds' users (their
    per-user values concatenated: each user counts once, whatever the fold sizes)."""
    keys = [key for key in per_user[0] if all(key in fold for fold in per_user)]
    stats = {key: mean_and_stderr(np.concatenate([np.asarray(f[key]) for f in per_user]))
             for key in keys}  # fmt: skip
    return ({k: m for k, (m, _) in stats.items()}, {k: e for k, (_, e) in stats.items()})


def pooled_table(tables: Sequence[list[dict[str, Any]]], users: Sequence[int]
                 ) -> list[dict[str, Any]]:  # fmt: skip
    """Blend weight tables (`recvae.models.blend.tune_weights`, the same grid on every fold)
    pooled over the folds: each entry's metric means weighted by the fold's users, which is
    the per-user mean over the union of the folds' users."""
    total = float(sum(users))
    rows = []
    for entries in zip(*tables, strict=True):
        weights = entries[0]["weights"]
        if any(list(entry["weights"]) != list(weights) for entry in entries):
            raise ValueError("the folds' blend tables have different weight grids")
        metrics = [key for key in entries[0] if key != "weights"]
        row: dict[str, Any] = {"weights": list(weights)}
        for key in metrics:
            row[key] = float(sum(e[key] * n for e, n in zip(entries, users, strict=True)) / total)
        rows.append(row)
    return rows
