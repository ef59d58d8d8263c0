"""Baseline-specific behaviour: numbers checked against direct computations, refusals, threads."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.sparse as sp

from recvae.errors import RecvaeError
from recvae.models.als import ALS
from recvae.models.bpr import BPR, ridge_fold_in
from recvae.models.ease import EASE, check_fits_in_memory
from recvae.models.popularity import Popularity


def _random_matrix(n_users: int = 60, n_items: int = 25, seed: int = 0) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    dense = (rng.random((n_users, n_items)) < 0.2).astype(np.float32)
    return sp.csr_matrix(dense)


def test_popularity_counts_users_not_weights():
    train = sp.csr_matrix(np.array([[5, 1, 0], [1, 0, 0], [0, 0, 2]], np.float32))
    scores = Popularity().fit(train).score(sp.csr_matrix((1, 3), dtype=np.float32))
    np.testing.assert_array_equal(scores, [[2, 1, 1]])


def test_ease_matches_the_closed_form():
    train = _random_matrix()
    l2 = 3.0
    x = train.toarray().astype(np.float64)
    p = np.linalg.inv(x.T @ x + l2 * np.eye(x.shape[1]))
    expected = -p / np.diag(p)
    np.fill_diagonal(expected, 0.0)
    model = EASE(l2=l2).fit(train)
    np.testing.assert_allclose(model.weights, expected, atol=1e-4)
    np.testing.assert_allclose(model.score(train[:4]), x[:4] @ expected, atol=1e-4)
    # row-major: the sparse x dense product copies a column-major B on every score call
    assert model.weights.flags.c_contiguous


def test_ease_loads_column_major_weights_of_older_saves_as_row_major(tmp_path):
    model = EASE(l2=3.0).fit(_random_matrix())
    expected = model.weights.copy()
    model.weights = np.asfortranarray(model.weights)
    model.save(tmp_path / "ease")
    loaded = EASE.load(tmp_path / "ease")
    assert loaded.weights.flags.c_contiguous
    np.testing.assert_array_equal(loaded.weights, expected)


def test_ease_refuses_before_allocating_when_items_do_not_fit():
    with pytest.raises(RecvaeError, match=r"100000 items need about 74\.5 GiB"):
        check_fits_in_memory(100_000, available=8 * 2**30)
    check_fits_in_memory(1000, available=8 * 2**30)  # 12 MB: fine


def test_ease_fit_refuses_when_memory_is_short(monkeypatch):
    monkeypatch.setattr("recvae.models.ease.available_memory_bytes", lambda: 1000)
    with pytest.raises(RecvaeError, match=r"only 0\.0 GiB is available"):
        EASE().fit(_random_matrix())


def test_als_fold_in_of_training_rows_reproduces_its_training_scores():
    train = _random_matrix()
    model = ALS(factors=6, iterations=30, regularization=0.1, alpha=5, num_threads=1).fit(train)
    # The last half-step of ALS solved user factors exactly as fold-in does; after many iterations
    # the item factors barely move, so fold-in reproduces the trained users' scores closely.
    trained = model._model.user_factors @ model.item_factors.T
    np.testing.assert_allclose(model.score(train), trained, atol=2e-2)


def test_als_and_bpr_are_deterministic_for_a_seed_with_one_thread():
    train = _random_matrix()
    for make in (
        lambda seed: ALS(factors=4, iterations=3, num_threads=1, seed=seed),
        lambda seed: BPR(factors=4, iterations=5, num_threads=1, seed=seed),
    ):
        first, again, other = (make(s).fit(train).score(train) for s in (1, 1, 2))
        np.testing.assert_array_equal(first, again)
        assert not np.array_equal(first, other)


def test_implicit_runs_without_its_blas_threadpool_warning():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ALS(factors=4, iterations=2, num_threads=1).fit(_random_matrix())
    assert not [w for w in caught if "threadpool" in str(w.message).lower()]


def test_ridge_fold_in_solves_the_weighted_normal_equations():
    items = np.random.default_rng(3).normal(size=(6, 3)).astype(np.float32)
    history = sp.csr_matrix(np.array([[1, 0, 1, 0, 0, 0]], np.float32))
    user = ridge_fold_in(history, items, confidence=4.0, regularization=0.5)[0]
    weights = np.array([4, 1, 4, 1, 1, 1], np.float64)
    targets = np.array([1, 0, 1, 0, 0, 0], np.float64)
    y = items.astype(np.float64)
    expected = np.linalg.solve(
        y.T @ (weights[:, None] * y) + 0.5 * np.eye(3), y.T @ (weights * targets)
    )
    np.testing.assert_allclose(user, expected, rtol=1e-4)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: EASE(l2=0), "l2 must be positive"),
        (lambda: ALS(factors=0), "factors and iterations"),
        (lambda: ALS(alpha=-1), "alpha must be positive"),
        (lambda: BPR(learning_rate=0), "learning_rate"),
    ],
)
def test_bad_settings_are_refused(make, message):
    with pytest.raises(RecvaeError, match=message):
        make()


@pytest.mark.parametrize("model", [Popularity(), EASE(), ALS(), BPR()])
def test_score_before_fit_is_a_clear_error(model):
    with pytest.raises(RecvaeError, match="call fit"):
        model.score(sp.csr_matrix((1, 3), dtype=np.float32))
