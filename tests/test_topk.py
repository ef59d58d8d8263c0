import numpy as np
import pytest
import scipy.sparse as sp

from recvae.errors import RecvaeError
from recvae.topk import mask_seen, top_k


def test_top_k_orders_best_first():
    scores = np.array([[0.1, 0.9, 0.5, 0.7]], dtype=np.float32)
    indices, values = top_k(scores, 3)
    assert indices.tolist() == [[1, 3, 2]]
    assert values[0].tolist() == pytest.approx([0.9, 0.7, 0.5])


def test_ties_are_broken_by_lower_item_index_inside_and_at_the_cut():
    scores = np.array([[1.0, 2.0, 2.0, 2.0, 0.0], [3.0, 3.0, 1.0, 3.0, 3.0]], dtype=np.float32)
    indices, _ = top_k(scores, 2)
    assert indices.tolist() == [[1, 2], [0, 1]]
    indices, _ = top_k(scores, 4)
    assert indices.tolist() == [[1, 2, 3, 0], [0, 1, 3, 4]]


def test_mask_seen_sets_history_to_minus_infinity():
    scores = np.ones((2, 3), dtype=np.float32)
    history = sp.csr_matrix(np.array([[1, 0, 1], [0, 0, 0]], dtype=np.float32))
    masked = mask_seen(scores, history)
    assert np.isneginf(masked[0, [0, 2]]).all() and masked[0, 1] == 1
    assert (masked[1] == 1).all()
    indices, values = top_k(masked, 3)
    assert indices[0, 0] == 1 and np.isneginf(values[0, 1:]).all()


def test_k_out_of_range():
    with pytest.raises(RecvaeError, match="number of items"):
        top_k(np.zeros((1, 3), dtype=np.float32), 4)


def test_top_k_matches_a_stable_sort_on_many_ties_and_minus_inf():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 4, size=(50, 30)).astype(np.float32)
    scores[rng.random(scores.shape) < 0.3] = -np.inf
    for k in (1, 5, 29, 30):
        indices, values = top_k(scores.copy(), k)
        expected = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        assert (indices == expected).all()
        assert (values == np.take_along_axis(scores, expected, axis=1)).all()
