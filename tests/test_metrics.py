"""Metrics against values computed by hand, including ties and short held-out lists."""

import math

import numpy as np
import pytest
import scipy.sparse as sp

from recvae.errors import RecvaeError
from recvae.metrics import (
    hit_matrix,
    mean_and_stderr,
    ndcg_at_k,
    parse_metric,
    recall_at_k,
    recall_lightgcn_at_k,
)


def csr(rows: list[list[int]], n_items: int = 10) -> sp.csr_matrix:
    dense = np.zeros((len(rows), n_items), dtype=np.float32)
    for r, items in enumerate(rows):
        dense[r, items] = 1
    return sp.csr_matrix(dense)


def test_hit_matrix_marks_heldout_items_at_each_rank():
    ranked = np.array([[3, 1, 4], [0, 9, 2]])
    heldout = csr([[1, 5], [2]])
    assert hit_matrix(ranked, heldout).tolist() == [[False, True, False], [False, False, True]]


def test_recall_divides_by_min_of_k_and_heldout():
    ranked = np.array([[0, 1, 2, 3]])
    heldout = csr([[0, 2, 5, 6, 7]])  # 5 held out, 2 of them in the top 4
    assert recall_at_k(ranked, heldout, 2)[0] == pytest.approx(1 / 2)  # hits {0} / min(2, 5)
    assert recall_at_k(ranked, heldout, 4)[0] == pytest.approx(2 / 4)
    assert recall_lightgcn_at_k(ranked, heldout, 4)[0] == pytest.approx(2 / 5)


def test_user_with_fewer_heldout_than_k_can_reach_recall_one():
    ranked = np.array([[7, 0, 1, 2, 3]])
    heldout = csr([[7]])
    assert recall_at_k(ranked, heldout, 5)[0] == 1.0
    assert recall_lightgcn_at_k(ranked, heldout, 5)[0] == 1.0
    assert ndcg_at_k(ranked, heldout, 5)[0] == 1.0


def test_ndcg_by_hand():
    ranked = np.array([[4, 0, 8]])
    heldout = csr([[0, 8]])  # hits at ranks 2 and 3
    dcg = 1 / math.log2(3) + 1 / math.log2(4)
    idcg = 1 / math.log2(2) + 1 / math.log2(3)
    assert ndcg_at_k(ranked, heldout, 3)[0] == pytest.approx(dcg / idcg)
    # At k=1 nothing is hit.
    assert ndcg_at_k(ranked, heldout, 1)[0] == 0.0


def test_users_without_heldout_items_are_nan_and_skipped_in_means():
    ranked = np.array([[0, 1], [0, 1]])
    heldout = csr([[0], []])
    values = recall_at_k(ranked, heldout, 2)
    assert values[0] == 1.0 and math.isnan(values[1])
    mean, stderr = mean_and_stderr(values)
    assert mean == 1.0 and stderr == 0.0


def test_mean_and_stderr_by_hand():
    mean, stderr = mean_and_stderr(np.array([0.0, 1.0, 0.5, np.nan]))
    assert mean == pytest.approx(0.5)
    assert stderr == pytest.approx(0.5 / math.sqrt(3))


def test_k_larger_than_ranked_list_is_an_error():
    with pytest.raises(RecvaeError, match="k=5"):
        recall_at_k(np.array([[0, 1]]), csr([[0]]), 5)


@pytest.mark.parametrize("name", ["ndcg", "ndcg@", "ndcg@0", "mrr@10", "recall@x"])
def test_parse_metric_rejects_bad_names(name):
    with pytest.raises(RecvaeError, match="unknown metric"):
        parse_metric(name)


def test_parse_metric():
    assert parse_metric("recall_lightgcn@20") == ("recall_lightgcn", 20)
