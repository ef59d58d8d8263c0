"""Sparse EASE: exact EASE when nothing is pruned, bounded non-zeros and memory when pruned."""

from __future__ import annotations

import json
import tracemalloc

import numpy as np
import pytest
import scipy.sparse as sp

from recvae.errors import RecvaeError
from recvae.models import build_model, load_model
from recvae.models.ease import EASE
from recvae.models.memory import check_fits
from recvae.models.sparse_ease import WEIGHTS_FILE, SparseEASE, estimate_fit_bytes


def _random_matrix(n_users: int = 60, n_items: int = 25, seed: int = 0) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    return sp.csr_matrix((rng.random((n_users, n_items)) < 0.2).astype(np.float32))


def _closed_form(train: sp.csr_matrix, l2: float) -> np.ndarray:
    x = train.toarray().astype(np.float64)
    p = np.linalg.inv(x.T @ x + l2 * np.eye(x.shape[1]))
    expected = -p / np.diag(p)
    np.fill_diagonal(expected, 0.0)
    return expected


@pytest.mark.parametrize("dense_items", [0, 10, 8192])  # lists only, part dense, all dense
def test_nothing_pruned_gives_exact_ease(dense_items):
    train = _random_matrix()
    model = SparseEASE(l2=3.0, neighbours=24, min_cooccurrence=0, dense_items=dense_items)
    model.fit(train)
    weights = model.columns.T.toarray()  # B
    np.testing.assert_allclose(weights, _closed_form(train, 3.0), atol=1e-4)
    np.testing.assert_allclose(weights, EASE(l2=3.0).fit(train).weights, atol=1e-4)
    np.testing.assert_allclose(model.score(train[:5]), train[:5].toarray() @ weights, atol=1e-4)
    assert model.stats["larger_ridge_items"] == 0


def test_more_neighbours_than_items_is_the_same_exact_fit():
    train = _random_matrix(n_items=12, seed=1)
    model = SparseEASE(l2=2.0, neighbours=500, min_cooccurrence=0).fit(train)
    assert model.stats["neighbours"] == 11
    np.testing.assert_allclose(model.columns.T.toarray(), _closed_form(train, 2.0), atol=1e-4)


def test_pruned_columns_hold_at_most_m_top_cooccurring_items_and_no_diagonal():
    train = _random_matrix(n_users=80, n_items=30, seed=2)
    m = 4
    model = SparseEASE(l2=5.0, neighbours=m).fit(train)
    columns = model.columns
    assert np.diff(columns.indptr).max() <= m
    assert not columns.diagonal().any()
    gram = (train.T @ train).toarray()
    np.fill_diagonal(gram, 0)
    for j in range(30):
        kept = columns.indices[columns.indptr[j] : columns.indptr[j + 1]]
        # every kept neighbour co-occurs at least as often as the m-th best of item j
        assert gram[kept, j].min(initial=np.inf) >= np.sort(gram[:, j])[-m]
    # each column is the ridge regression on its own neighbours (the dense block holds all 30)
    j = 7
    kept = columns.indices[columns.indptr[j] : columns.indptr[j + 1]]
    full = (train.T @ train).toarray().astype(np.float64)
    expected = np.linalg.solve(full[np.ix_(kept, kept)] + 5.0 * np.eye(len(kept)), full[kept, j])
    np.testing.assert_allclose(columns.data[columns.indptr[j] : columns.indptr[j + 1]], expected,
                               rtol=1e-5)  # fmt: skip


def test_ties_at_the_cut_go_to_the_more_popular_item():
    # item 0 co-occurs once with each of items 1, 2, 3; item 3 is the most popular, then 2
    rows = [[0, 1], [0, 2], [0, 3], [3], [3], [2]]
    train = sp.csr_matrix(
        (np.ones(sum(map(len, rows)), np.float32),
         (np.repeat(np.arange(len(rows)), [len(r) for r in rows]), np.concatenate(rows))),
        shape=(len(rows), 4),
    )  # fmt: skip
    model = SparseEASE(l2=1.0, neighbours=2).fit(train)
    assert model.columns.indices[: model.columns.indptr[1]].tolist() == [2, 3]


def test_min_cooccurrence_drops_rare_pairs():
    train = _random_matrix(n_users=100, n_items=20, seed=3)
    gram = (train.T @ train).toarray()
    model = SparseEASE(l2=5.0, neighbours=19, min_cooccurrence=3).fit(train)
    rows = np.repeat(np.arange(20), np.diff(model.columns.indptr))
    assert (gram[model.columns.indices, rows] >= 3).all()


def test_score_blocks_equal_the_full_scores():
    train = _random_matrix()
    model = SparseEASE(l2=3.0, neighbours=6).fit(train)
    full = model.score(train[:9])
    blocks = list(model.score_blocks(train[:9], 7))
    assert [start for start, _ in blocks] == [0, 7, 14, 21]
    np.testing.assert_allclose(np.concatenate([b for _, b in blocks], axis=1), full, atol=1e-6)


def test_fitted_memory_follows_the_kept_nonzeros_not_items_squared():
    n_items, m = 4000, 5
    rng = np.random.default_rng(4)
    rows = np.repeat(np.arange(3000), 8)
    cols = rng.integers(0, n_items, len(rows))
    train = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(3000, n_items))
    tracemalloc.start()
    model = SparseEASE(l2=10.0, neighbours=m, dense_items=100).fit(train)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    dense_bytes = n_items * n_items * 4  # 64 MB: what one items x items float32 matrix takes
    assert peak < dense_bytes / 8
    nnz = model.columns.nnz
    assert nnz <= n_items * m
    assert model.memory_bytes() == nnz * 8 + (n_items + 1) * model.columns.indptr.itemsize


def test_save_and_load_round_trip(tmp_path):
    train = _random_matrix()
    model = build_model("sparse_ease", {"l2": 3.0, "neighbours": 6}).fit(train)
    model.save(tmp_path / "m")
    assert (tmp_path / "m" / WEIGHTS_FILE).is_file()
    loaded = load_model(tmp_path / "m")
    assert isinstance(loaded, SparseEASE) and loaded.config == model.config
    np.testing.assert_array_equal(loaded.score(train[:4]), model.score(train[:4]))
    assert json.loads((tmp_path / "m" / "model.json").read_text())["n_items"] == 25


def test_damaged_weights_are_one_clear_error(tmp_path):
    model = SparseEASE(l2=3.0, neighbours=6).fit(_random_matrix())
    model.save(tmp_path / "m")
    weights = tmp_path / "m" / WEIGHTS_FILE
    weights.write_bytes(weights.read_bytes()[:40])
    with pytest.raises(RecvaeError, match=r"weights\.safetensors does not hold 25 x 25"):
        load_model(tmp_path / "m")
    weights.unlink()
    with pytest.raises(RecvaeError, match=r"weights\.safetensors is missing"):
        load_model(tmp_path / "m")


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"neighbours": 0}, "neighbours must be a positive number of items, got 0"),
        ({"l2": -1.0}, "l2 must be positive, got -1.0"),
        ({"min_cooccurrence": -2}, "min_cooccurrence must be >= 0, got -2"),
        ({"dense_items": -1}, "dense_items must be a number of items >= 0, got -1"),
        ({"neighbors": 10}, "neighbors"),
    ],
)
def test_bad_settings_are_one_clear_error(settings, message):
    with pytest.raises(RecvaeError, match=message):
        build_model("sparse_ease", settings)


def test_refuses_before_fitting_when_memory_is_short(monkeypatch):
    monkeypatch.setattr("recvae.models.memory.available_memory_bytes", lambda: 1000)
    with pytest.raises(RecvaeError, match=r"sparse_ease: memory estimate .* fewer neighbours"):
        SparseEASE(neighbours=6).fit(_random_matrix())


def test_memory_estimate_is_linear_in_items_times_neighbours():
    small = estimate_fit_bytes(200_000, 100_000, 20_000_000, 100, dense_items=0)
    large = estimate_fit_bytes(200_000, 1_000_000, 20_000_000, 100, dense_items=0)
    table_and_weights = 28  # bytes per kept neighbour: table 8, solved 4, CSR 8 ... (< 28)
    assert large - small < 900_000 * 100 * table_and_weights + 900_000 * 16
    # a million items x 100 neighbours, 20M interactions: within the 16 GB the scale run allows
    assert estimate_fit_bytes(200_000, 1_000_000, 20_000_000, 100) < 8 * 2**30
    model = SparseEASE(neighbours=100)
    train = sp.csr_matrix((200_000, 1_000_000), dtype=np.float32)  # shape and nnz are what count
    estimate = model.memory_estimate(train)
    assert estimate.total == estimate_fit_bytes(200_000, 1_000_000, 0, 100)
    with pytest.raises(RecvaeError, match=r"2\.44 GiB \(.*neighbour table 0\.75, weights 1\.13"):
        check_fits(estimate, available=2**30)


def test_a_system_pruning_left_without_a_factor_gets_a_larger_ridge():
    # lists only (no dense block), few neighbours, a tiny ridge: zeroed pairs among popular
    # neighbours leave some G_NN + l2 I indefinite; those items are solved with more ridge
    rng = np.random.default_rng(4)
    popularity = rng.random(40) ** 3
    train = sp.csr_matrix((rng.random((300, 40)) < popularity).astype(np.float32))
    model = SparseEASE(l2=1.0, neighbours=6, dense_items=0).fit(train)
    assert model.stats["larger_ridge_items"] > 0
    assert np.isfinite(model.columns.data).all()
    exact_block = SparseEASE(l2=1.0, neighbours=6).fit(train)  # every pair exact: no fallback
    assert exact_block.stats["larger_ridge_items"] == 0
