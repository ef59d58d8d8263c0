"""benchmarks/small_logs_bench.py's proxies: users drawn, rare items dropped, and one per-user
split whose parts are disjoint and add up (synthetic LightGCN files, no training)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from bench_loader import load_benchmark


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("small_logs_bench")


def _write_lightgcn(folder: Path) -> None:
    """40 users; user u has items u % 7 .. u % 7 + 9 (train) and item 50 + u (valid): items
    50.. are each seen once, so a minimum item count of 2 drops them."""
    folder.mkdir()
    train = [f"{u} " + " ".join(str(u % 7 + i) for i in range(10)) for u in range(40)]
    (folder / "train.txt").write_text("\n".join(train) + "\n")
    (folder / "valid.txt").write_text("\n".join(f"{u} {50 + u}" for u in range(40)) + "\n")


def test_proxy_draws_users_drops_rare_items_and_splits_per_user(bench, tmp_path, monkeypatch):
    _write_lightgcn(tmp_path / "toy")
    monkeypatch.setattr(bench, "SHARED", tmp_path)
    monkeypatch.setitem(bench.DATASETS, "toy", ("toy", 30, 2))
    train, valid, test, shape = bench.load("toy")
    assert (shape["users"], shape["items"], shape["interactions"]) == (30, 16, 300)
    # the three parts are disjoint and together every interaction of the drawn users
    rest = test.history
    assert (rest.multiply(test.heldout)).nnz == 0 and (train.multiply(valid.heldout)).nnz == 0
    assert train.nnz + valid.heldout.nnz + test.heldout.nnz == 300
    assert np.allclose((train + valid.heldout).toarray(), rest.toarray())
    # 10 items each: 2 to test (20%), then 2 of the 8 left to valid (round half up of 1.6)
    assert set(np.diff(test.heldout.indptr)) == {2} and set(np.diff(valid.heldout.indptr)) == {2}
    assert valid.history is train or np.array_equal(valid.history.indptr, train.indptr)
    # the same seed gives the same proxy and split
    again = bench.load("toy")
    assert np.array_equal(again[2].heldout.indices, test.heldout.indices)


def test_paired_difference_is_the_mean_and_standard_error_of_per_user_gaps(bench):
    numbers = bench.paired(np.array([0.3, 0.5, 0.4]), np.array([0.1, 0.2, 0.4]))
    gaps = np.array([0.2, 0.3, 0.0])
    assert numbers["mean"] == pytest.approx(gaps.mean())
    assert numbers["stderr"] == pytest.approx(gaps.std(ddof=1) / np.sqrt(3))
