"""Blend: per-user normalisation by hand, mixing, fit/save/load, reuse of fitted members."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from recvae.errors import RecvaeError
from recvae.models import load_model
from recvae.models.blend import Blend, BlendConfig, mix, normalise_scores
from recvae.models.ease import EASE
from recvae.models.popularity import Popularity


def _train() -> sp.csr_matrix:
    rng = np.random.default_rng(0)
    dense = (rng.random((40, 12)) < 0.3).astype(np.float32)
    dense[:, 0] = 1.0  # item 0 is the most popular
    return sp.csr_matrix(dense)


def test_zscore_rows_by_hand():
    scores = np.array([[1.0, 2.0, 3.0], [5.0, 5.0, 5.0]], dtype=np.float32)
    out = normalise_scores(scores, "zscore")
    np.testing.assert_allclose(out[0], [-np.sqrt(1.5), 0.0, np.sqrt(1.5)], rtol=1e-6)
    np.testing.assert_array_equal(out[1], [0.0, 0.0, 0.0])  # constant row: no division by 0


def test_softmax_rows_are_log_probabilities():
    scores = np.array([[0.0, np.log(3.0)]], dtype=np.float32)
    out = normalise_scores(scores, "softmax")
    np.testing.assert_allclose(np.exp(out), [[0.25, 0.75]], rtol=1e-6)
    with pytest.raises(ValueError, match="zscore or softmax"):
        normalise_scores(scores, "rank")


def test_mix_is_the_weighted_sum():
    a, b = np.ones((1, 2), np.float32), np.array([[0.0, 4.0]], np.float32)
    np.testing.assert_allclose(mix([a, b], (0.25, 0.75)), [[0.25, 3.25]])


def test_blend_with_all_weight_on_one_member_ranks_like_that_member(tmp_path):
    train = _train()
    members = ({"model": "ease", "l2": 10.0}, {"model": "popularity"})
    blend = Blend(members=members, weights=(1.0, 0.0))
    blend.fit(train)
    ease = EASE(l2=10.0).fit(train)
    history = train[:5]
    expected = np.argsort(-ease.score(history), axis=1, kind="stable")
    got = np.argsort(-blend.score(history), axis=1, kind="stable")
    np.testing.assert_array_equal(got, expected)
    blend.save(tmp_path / "b")
    loaded = load_model(tmp_path / "b")
    assert isinstance(loaded, Blend) and loaded.config == blend.config
    np.testing.assert_array_equal(loaded.score(history), blend.score(history))


def test_from_members_reuses_fitted_models_without_refitting():
    train = _train()
    ease, popularity = EASE(l2=10.0).fit(train), Popularity().fit(train)
    blend = Blend.from_members([ease, popularity], (0.7, 0.3), n_items=12)
    expected = 0.7 * normalise_scores(ease.score(train), "zscore") + 0.3 * normalise_scores(
        popularity.score(train), "zscore"
    )
    np.testing.assert_allclose(blend.score(train), expected, rtol=1e-5, atol=1e-6)


def test_bad_configs_and_unfitted_use_are_refused():
    with pytest.raises(ValueError, match="equal length"):
        BlendConfig(members=({"model": "ease"},), weights=(0.5, 0.5))
    with pytest.raises(ValueError, match=r"members\[0\].model must be one of"):
        BlendConfig(members=({"model": "blend"},))
    with pytest.raises(RecvaeError, match=r"members\[1\] \(ease\): unknown key\(s\) l3"):
        BlendConfig(members=({"model": "popularity"}, {"model": "ease", "l3": 1.0}))
    with pytest.raises(RecvaeError, match="before score"):
        Blend().score(_train())
    with pytest.raises(RecvaeError, match='"tune" needs validation users'):
        Blend().fit(_train())
