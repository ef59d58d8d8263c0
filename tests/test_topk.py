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


# ---- item-chunked top-K ------------------------------------------------------------------------


def _blockwise(scores, k, block):
    from recvae.topk import RunningTopK

    running = RunningTopK(scores.shape[0], k, scores.shape[1])
    for start in range(0, scores.shape[1], block):
        running.add(start, scores[:, start : start + block].copy())
    return running.result()


@pytest.mark.parametrize("block", [1, 3, 7, 37, 100])
@pytest.mark.parametrize("k", [1, 4, 10, 37])
def test_running_top_k_equals_top_k_with_ties_and_masked_items(block, k):
    rng = np.random.default_rng(block * 100 + k)
    # few distinct values: many ties, inside the cut and across it; zeros become masked (-inf)
    scores = rng.integers(0, 4, size=(30, 37)).astype(np.float32)
    scores[scores == 0] = -np.inf
    scores[0] = -np.inf  # a row with nothing finite: every item ties at -inf
    indices, values = _blockwise(scores, k, block)
    expected_indices, expected_values = top_k(scores, k)
    np.testing.assert_array_equal(indices, expected_indices)
    np.testing.assert_array_equal(values, expected_values)
    assert indices.dtype == np.int64 and values.dtype == np.float32


def test_running_top_k_ties_rank_by_item_index_across_blocks():
    scores = np.array([[1, 2, 2, 0, 2, 2, 1]], np.float32)
    indices, values = _blockwise(scores, 3, 2)
    assert indices.tolist() == [[1, 2, 4]]
    assert values.tolist() == [[2, 2, 2]]


def test_running_top_k_refuses_blocks_out_of_order_or_missing():
    from recvae.topk import RunningTopK

    running = RunningTopK(2, 2, 6)
    running.add(0, np.zeros((2, 3), np.float32))
    with pytest.raises(RecvaeError, match="starting at item 3"):
        running.add(4, np.zeros((2, 2), np.float32))
    with pytest.raises(RecvaeError, match="saw 3 of 6 items"):
        running.result()


def test_mask_seen_block_masks_only_the_block_columns():
    from recvae.topk import mask_seen_block

    history = sp.csr_matrix(np.array([[1, 0, 0, 1, 0], [0, 0, 1, 0, 1]], np.float32))
    block = np.zeros((2, 2), np.float32)  # items 2 and 3
    mask_seen_block(block, history, 2)
    assert block.tolist() == [[0, -np.inf], [-np.inf, 0]]


# ---- the torch core: on the scores' device, only k per row come back ---------------------------


def test_top_k_tensor_stays_on_the_scores_device_and_equals_top_k():
    import torch

    from recvae.topk import top_k_tensor

    rng = np.random.default_rng(4)
    scores = rng.integers(0, 3, size=(20, 40)).astype(np.float32)
    scores[rng.random(scores.shape) < 0.2] = -np.inf
    indices, values = top_k_tensor(torch.from_numpy(scores.copy()), 7)
    assert isinstance(indices, torch.Tensor) and indices.dtype == torch.int64
    assert indices.shape == (20, 7) and values.device == torch.device("cpu")
    expected = np.argsort(-scores, axis=1, kind="stable")[:, :7]
    assert (indices.numpy() == expected).all()
    assert (values.numpy() == np.take_along_axis(scores, expected, axis=1)).all()


def test_ties_at_the_cut_keep_the_lowest_indices_hand_checked():
    import torch

    from recvae.topk import top_k_tensor

    # row 0: one item above the tie (index 4), then four items tie at 1.0; k=3 keeps 4, 0, 2
    # row 1: everything masked but item 3; the rest (-inf) fill the cut by lowest index
    scores = torch.tensor(
        [[1.0, 0.0, 1.0, 1.0, 2.0, 1.0], [-np.inf, -np.inf, -np.inf, 0.5, -np.inf, -np.inf]]
    )
    indices, values = top_k_tensor(scores, 3)
    assert indices.tolist() == [[4, 0, 2], [3, 0, 1]]
    assert values[0].tolist() == [2.0, 1.0, 1.0] and values[1, 0] == 0.5


def test_mask_seen_tensor_masks_in_place_and_numpy_views_share_it():
    import torch

    from recvae.topk import mask_seen_tensor

    history = sp.csr_matrix(np.array([[0, 1, 0, 1], [1, 0, 0, 0]], dtype=np.float32))
    array = np.ones((2, 4), dtype=np.float32)
    mask_seen_tensor(torch.from_numpy(array), history)
    assert np.isneginf(array).tolist() == [[False, True, False, True], [True, False, False, False]]
    strided = np.ones((2, 8), dtype=np.float32)[:, ::2]  # not contiguous: masked through a copy
    mask_seen(strided, history)
    assert np.isneginf(strided).sum() == 3
    with pytest.raises(RecvaeError, match="does not fit history"):
        mask_seen_tensor(torch.ones(3, 4), history)
