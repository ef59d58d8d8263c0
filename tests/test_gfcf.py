"""GF-CF (recvae.models.gfcf): the filter's numbers by hand, the randomised SVD against numpy's,
save/load, and the errors."""

import numpy as np
import pytest
import scipy.sparse as sp

from recvae.errors import RecvaeError
from recvae.models.gfcf import GFCF, top_right_singular_vectors


def two_users() -> sp.csr_matrix:
    # user degrees 2 and 2, item degrees 1, 2, 1
    return sp.csr_matrix(np.array([[1, 1, 0], [0, 1, 1]], dtype=np.float32))


def test_the_linear_filter_by_hand():
    # R~ = D_u^-1/2 R D_i^-1/2 = [[1/sqrt2, 1/2, 0], [0, 1/2, 1/sqrt2]], so R~'R~ is
    # [[1/2, 1/(2 sqrt2), 0], [1/(2 sqrt2), 1/2, 1/(2 sqrt2)], [0, 1/(2 sqrt2), 1/2]]
    model = GFCF(alpha=0.0).fit(two_users())
    scores = model.score(sp.csr_matrix(np.array([[1, 0, 0], [0, 1, 0]], dtype=np.float32)))
    c = 1 / (2 * np.sqrt(2))
    np.testing.assert_allclose(scores, [[0.5, c, 0.0], [c, 0.5, c]], rtol=1e-6)


def test_the_ideal_filter_is_the_projection_on_the_top_singular_vectors():
    rng = np.random.default_rng(0)
    dense = (rng.random((40, 12)) < 0.3).astype(np.float32)
    dense[0, :] = 1  # no empty rows or columns
    dense[:, 0] = 1
    train = sp.csr_matrix(dense)
    history = sp.csr_matrix((rng.random((5, 12)) < 0.4).astype(np.float32))
    alpha, rank = 0.7, 3
    model = GFCF(alpha=alpha, rank=rank).fit(train)
    dense = train.toarray()
    du, di = dense.sum(1), dense.sum(0)
    normalised = dense / np.sqrt(du)[:, None] / np.sqrt(di)[None, :]
    _, _, vt = np.linalg.svd(normalised)
    x = history.toarray()
    expected = x @ normalised.T @ normalised + alpha * (
        (x / np.sqrt(di)) @ vt[:rank].T @ vt[:rank] * np.sqrt(di)
    )
    np.testing.assert_allclose(model.score(history), expected, rtol=1e-4, atol=1e-5)


def test_randomised_svd_spans_the_same_subspace_as_numpy():
    rng = np.random.default_rng(1)
    low_rank = rng.standard_normal((300, 6)) @ rng.standard_normal((6, 80))
    noisy = sp.csr_matrix((low_rank + 0.01 * rng.standard_normal((300, 80))).astype(np.float32))
    vectors = top_right_singular_vectors(noisy, 6, seed=0)
    _, _, vt = np.linalg.svd(noisy.toarray())
    # the two orthogonal projections agree
    np.testing.assert_allclose(vectors.T @ vectors, vt[:6].T @ vt[:6], atol=1e-4)


def test_save_and_load_give_the_same_scores(tmp_path):
    rng = np.random.default_rng(2)
    train = sp.csr_matrix((rng.random((30, 10)) < 0.4).astype(np.float32))
    model = GFCF(rank=4).fit(train)
    model.save(tmp_path)
    loaded = GFCF.load(tmp_path)
    np.testing.assert_allclose(loaded.score(train[:5]), model.score(train[:5]), rtol=1e-6)
    np.save(tmp_path / "vectors.npy", np.zeros((4, 9), dtype=np.float32))
    with pytest.raises(RecvaeError, match=r"do not agree.*damaged"):
        GFCF.load(tmp_path)


def test_errors():
    with pytest.raises(RecvaeError, match="call fit before score"):
        GFCF().score(two_users())
    with pytest.raises(RecvaeError, match="gfcf: alpha must be >= 0"):
        GFCF(alpha=-1.0)
    with pytest.raises(RecvaeError, match="gfcf: rank must be a number of singular vectors"):
        GFCF(rank=-2)
    with pytest.raises(RecvaeError, match="3"):
        GFCF().fit(two_users()).score(sp.csr_matrix(np.ones((1, 4), dtype=np.float32)))
