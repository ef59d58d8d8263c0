import numpy as np
import pytest
import scipy.sparse as sp

from recvae.data.split import (
    Holdout,
    Split,
    split_rows,
    split_rows_by_time,
    strong_generalization,
    weak_generalization,
)
from recvae.errors import RecvaeError


def random_matrix(n_users=50, n_items=30, density=0.3, seed=0) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    dense = (rng.random((n_users, n_items)) < density).astype(np.float32)
    dense[:, 0] = 1  # every user has at least one item
    return sp.csr_matrix(dense)


def test_split_rows_partitions_each_row_80_20():
    matrix = random_matrix()
    history, heldout = split_rows(matrix, 0.2, np.random.default_rng(1))
    assert (history + heldout - matrix).nnz == 0
    assert history.multiply(heldout).nnz == 0
    counts = np.diff(matrix.indptr)
    out = np.diff(heldout.indptr)
    expected = np.where(counts >= 2, np.maximum(1, np.floor(counts * 0.2 + 0.5)), 0)
    assert np.array_equal(out, np.minimum(expected, counts - 1))
    assert (np.diff(history.indptr) >= 1).all()


def test_split_rows_by_time_holds_out_latest():
    matrix = sp.csr_matrix(np.array([[1, 1, 1, 1, 1]], dtype=np.float32))
    times = sp.csr_matrix(np.array([[5, 1, 4, 2, 3]], dtype=np.float64))
    history, heldout = split_rows_by_time(matrix, times, 0.4)
    assert heldout.indices.tolist() == [0, 2]
    assert history.indices.tolist() == [1, 3, 4]


def test_strong_generalization_users_are_disjoint():
    matrix = random_matrix(100)
    split = strong_generalization(matrix, 10, 15, seed=3)
    assert split.train.shape == (75, 30)
    assert split.valid is not None and split.test is not None
    assert set(split.valid.users).isdisjoint(split.test.users)
    assert len(split.valid.users) == 10 and len(split.test.users) == 15
    rebuilt = split.valid.history + split.valid.heldout
    assert (rebuilt - matrix[split.valid.users]).nnz == 0


def test_strong_generalization_refuses_to_hold_out_everyone():
    with pytest.raises(RecvaeError, match="leave some to train on"):
        strong_generalization(random_matrix(10), 5, 5)


def test_split_round_trips(tmp_path):
    split = weak_generalization(random_matrix(), seed=2)
    split.save(tmp_path / "split")
    loaded = Split.load(tmp_path / "split")
    assert (loaded.train != split.train).nnz == 0
    assert loaded.valid is not None and np.array_equal(loaded.valid.users, split.valid.users)
    assert loaded.protocol == "weak" and loaded.params == split.params


def test_holdout_shape_mismatch_is_an_error():
    with pytest.raises(RecvaeError, match="same shape"):
        Holdout(sp.csr_matrix((2, 3)), sp.csr_matrix((2, 4)), np.arange(2))
