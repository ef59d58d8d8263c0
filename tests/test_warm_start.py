"""Warm start across catalogue growth: known items keep their weights by id, new items start
fresh, and the nightly job keeps warm-starting when the catalogue grows."""

import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp
import torch

from recvae.models.recvae_model import RecVAE
from recvae.models.vae import MultDAE, MultVAE
from recvae.models.warm_start import WarmStart, WarmStartError, item_rows

SMALL = {"epochs": 1, "batch_size": 8, "threads": 1, "latent_dim": 2}


def trained(cls, n_items: int, **settings):
    rng = np.random.default_rng(0)
    matrix = sp.csr_matrix((rng.random((40, n_items)) < 0.4).astype(np.float32))
    size = {"hidden_dim": 4} if cls is RecVAE else {"hidden_dims": [4]}
    return cls(**SMALL, **size, **settings).fit(matrix)


def seeded_fresh(model_like, n_items: int):
    """A model built and initialised exactly as `fit` does before warm start."""
    from recvae.models.torch_autoencoder import INIT
    from recvae.train import epoch_seed

    model = type(model_like)(model_like.config)
    model.n_items = n_items
    model.module = model._build_module(n_items)
    model.module.reset_parameters(
        torch.Generator().manual_seed(epoch_seed(model.config.loop.seed, 0, INIT))
    )
    fresh = {k: v.clone() for k, v in model.module.state_dict().items()}
    return model, fresh


def test_item_rows_match_by_id_whatever_the_order_and_dtype():
    old = pl.Series(["a", "b", "c", "d"])
    assert item_rows(old, pl.Series(["c", "x", "a"])).tolist() == [2, -1, 0]
    assert item_rows(pl.Series([1, 2, 3]), pl.Series(["3", "9", "1"])).tolist() == [2, -1, 0]


@pytest.mark.parametrize(
    ("cls", "first", "last_weight", "last_bias", "copies"),
    [
        (MultVAE, "encoder.0", "decoder.2", "decoder.3", []),
        (MultDAE, "encoder.0", "decoder.2", "decoder.3", []),
        (RecVAE, "encoder.weights.0", "decoder_weight", "decoder_bias", ["old_encoder.weights.0"]),
    ],
)
def test_known_items_keep_their_rows_by_id_and_new_items_start_fresh(
    cls, first, last_weight, last_bias, copies
):
    old = trained(cls, n_items=4)  # items a b c d
    theirs = old.module.state_dict()
    # Today: c, a new item x, a (b and d are gone), in another order.
    rows = np.array([2, -1, 0])
    model, fresh = seeded_fresh(old, n_items=3)
    model._warm_start(WarmStart(old, rows))
    mine = model.module.state_dict()
    for name in [first, *copies]:  # input embeddings: rows
        assert torch.equal(mine[name][0], theirs[name][2])
        assert torch.equal(mine[name][2], theirs[name][0])
        assert torch.equal(mine[name][1], fresh[name][1])
    assert torch.equal(mine[last_weight][:, 0], theirs[last_weight][:, 2])  # output: columns
    assert torch.equal(mine[last_weight][:, 2], theirs[last_weight][:, 0])
    assert torch.equal(mine[last_weight][:, 1], fresh[last_weight][:, 1])
    assert mine[last_bias][0] == theirs[last_bias][2] and mine[last_bias][2] == theirs[last_bias][0]
    expected_bias = (theirs[last_bias][0] + theirs[last_bias][2]) / 2  # mean of the known items
    assert torch.allclose(mine[last_bias][1], expected_bias)
    item_tensors = {first, last_weight, last_bias, *copies}
    for name in set(mine) - item_tensors:  # every other layer: copied as is
        assert torch.equal(mine[name], theirs[name]), name


def test_same_vocabulary_is_an_exact_copy_and_a_grown_one_needs_item_rows():
    old = trained(MultVAE, n_items=4)
    model, _ = seeded_fresh(old, n_items=4)
    model._warm_start(old)
    for name, value in model.module.state_dict().items():
        assert torch.equal(value, old.module.state_dict()[name])
    grown, _ = seeded_fresh(old, n_items=5)
    with pytest.raises(WarmStartError, match="give the item rows"):
        grown._warm_start(old)


def test_another_architecture_is_refused_with_the_layer_named():
    old = trained(MultVAE, n_items=4)
    other = MultVAE(**{**SMALL, "latent_dim": 3}, hidden_dims=[4])
    model, _ = seeded_fresh(other, n_items=4)
    with pytest.raises(WarmStartError, match="hidden_dims / latent_dim differ"):
        model._warm_start(WarmStart(old, np.arange(4)))


def test_fit_with_a_grown_catalogue_trains_from_the_copied_weights():
    old = trained(MultVAE, n_items=4)
    rng = np.random.default_rng(1)
    matrix = sp.csr_matrix((rng.random((40, 5)) < 0.4).astype(np.float32))
    rows = np.array([-1, 0, 1, 2, 3])  # a new first item, then the four known ones
    model = MultVAE(**SMALL, hidden_dims=[4]).fit(matrix, warm_start=WarmStart(old, rows))
    assert model.n_items == 5 and model.score(matrix[:2]).shape == (2, 5)


def test_a_new_item_starts_from_the_items_its_users_also_took():
    old = trained(MultVAE, n_items=4)
    theirs = old.module.state_dict()
    # Today: c, new item x, a, new item y (nobody took y). Cosine of x with c: 2 / sqrt(2 * 2)
    # = 1, with a: 1 / sqrt(2 * 2) = 0.5, so x starts at 2/3 of c plus 1/3 of a.
    rows = np.array([2, -1, 0, -1])
    train = sp.csr_matrix(np.array([[1, 1, 0, 0], [1, 1, 1, 0], [0, 0, 1, 0]], dtype=np.float32))
    model, fresh = seeded_fresh(old, n_items=4)
    model._warm_start(WarmStart(old, rows), train)
    mine = model.module.state_dict()
    expected_row = (2 * theirs["encoder.0"][2] + theirs["encoder.0"][0]) / 3
    assert torch.allclose(mine["encoder.0"][1], expected_row)
    expected_column = (2 * theirs["decoder.2"][:, 2] + theirs["decoder.2"][:, 0]) / 3
    assert torch.allclose(mine["decoder.2"][:, 1], expected_column)
    expected_bias = (2 * theirs["decoder.3"][2] + theirs["decoder.3"][0]) / 3
    assert torch.allclose(mine["decoder.3"][1], expected_bias)
    # y: the fresh seeded init, and the mean output bias of the two known items
    assert torch.equal(mine["encoder.0"][3], fresh["encoder.0"][3])
    assert torch.equal(mine["decoder.2"][:, 3], fresh["decoder.2"][:, 3])
    assert torch.allclose(
        mine["decoder.3"][3], (theirs["decoder.3"][2] + theirs["decoder.3"][0]) / 2
    )
    assert torch.equal(mine["encoder.0"][0], theirs["encoder.0"][2])  # known items: copied
