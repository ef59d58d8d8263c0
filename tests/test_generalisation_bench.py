"""benchmarks/generalisation.py's rotated test folds: disjoint, covering every user, each
fold's test users absent from its development part (synthetic data, no training)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from bench_loader import load_benchmark

from recvae.data.dataset import Dataset
from recvae.data.vocab import Vocabulary


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("generalisation")


def test_rotated_test_folds_are_disjoint_and_cover_every_user(bench):
    folds = [bench.rotated_users(938, fold) for fold in range(bench.ROTATE_FOLDS)]
    assert sorted(len(f) for f in folds) == [187, 187, 188, 188, 188]
    assert np.array_equal(np.sort(np.concatenate(folds)), np.arange(938))


def test_a_rotated_fold_holds_its_users_out_of_the_development_part(bench):
    rng = np.random.default_rng(0)
    matrix = sp.random(50, 30, density=0.3, random_state=rng, format="csr", dtype=np.float32)
    matrix.data[:] = 1.0
    matrix = sp.csr_matrix(matrix + sp.eye(50, 30, format="csr", dtype=np.float32))
    matrix.data[:] = 1.0
    full = Dataset(matrix, Vocabulary([f"u{i}" for i in range(50)], name="user"),
                   Vocabulary(list(range(30)), name="item"))  # fmt: skip
    dev, test, shape = bench._rotated("toy", full, 2, {})
    held = set(full.users.original(test.users).to_list())
    assert held == set(full.users.original(bench.rotated_users(50, 2)).to_list())
    assert held.isdisjoint(dev.users.original(np.arange(len(dev.users))).to_list())
    assert len(dev.users) + len(held) == 50
    assert test.history.nnz + test.heldout.nnz == matrix[np.sort(test.users)].nnz
    assert shape["fold"] == 2 and shape["test_users"] == len(held)
