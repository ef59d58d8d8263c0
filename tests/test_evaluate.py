import numpy as np
import pytest
import scipy.sparse as sp

from recvae.data.split import Holdout
from recvae.errors import RecvaeError
from recvae.evaluate import evaluate


def test_evaluate_masks_history_and_averages_over_users_with_heldout():
    history = sp.csr_matrix(np.array([[1, 0, 0, 0], [0, 1, 0, 0], [1, 1, 0, 0]], np.float32))
    heldout = sp.csr_matrix(np.array([[0, 1, 0, 0], [0, 0, 0, 1], [0, 0, 0, 0]], np.float32))

    def scorer(h):  # prefers item 0, then 1, then 2, then 3: history items must be skipped
        return np.tile(np.array([4, 3, 2, 1], np.float32), (h.shape[0], 1))

    result = evaluate(scorer, Holdout(history, heldout, np.arange(3)), ks=[1, 2])
    assert result.users == 2  # the third user has nothing held out
    # user 0: ranking [1, 2, 3] -> hit at rank 1; user 1: ranking [0, 2, 3] -> hit at rank 3
    assert result["recall@1"] == pytest.approx(0.5)
    assert result["recall@2"] == pytest.approx(0.5)
    assert result["ndcg@1"] == pytest.approx(0.5)


def test_evaluate_refuses_split_without_heldout_and_too_large_k():
    history = sp.csr_matrix(np.eye(3, dtype=np.float32))
    empty = Holdout(history, sp.csr_matrix((3, 3), dtype=np.float32), np.arange(3))
    with pytest.raises(RecvaeError, match="no users with held-out items"):
        evaluate(lambda h: np.zeros(h.shape, np.float32), empty)
    holdout = Holdout(history, sp.csr_matrix(np.roll(np.eye(3), 1, axis=1)), np.arange(3))
    with pytest.raises(RecvaeError, match="number of items"):
        evaluate(lambda h: np.zeros(h.shape, np.float32), holdout, ks=[5])
