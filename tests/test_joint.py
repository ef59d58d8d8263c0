"""The joint model: the restricted EASE start, each path on its own, learning, files, errors."""

import json

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from recvae.errors import RecvaeError
from recvae.models import build_model, load_model
from recvae.models.configs import JointConfig
from recvae.models.joint import Joint, check_graph
from recvae.models.neighbour_ease import default_l2, neighbour_ease, neighbour_sets

N_GROUPS, ITEMS_PER_GROUP, USERS_PER_GROUP = 4, 10, 40
FAST = dict(hidden_dims=(16,), latent_dim=4, batch_size=32, lr=1e-2, threads=1, neighbours=6)


def block_matrix(seed: int = 0) -> sp.csr_matrix:
    """Users of group g take 6 of the 10 items of block g."""
    rng = np.random.default_rng(seed)
    rows, cols = [], []
    for user in range(N_GROUPS * USERS_PER_GROUP):
        group = user % N_GROUPS
        items = rng.choice(ITEMS_PER_GROUP, size=6, replace=False) + group * ITEMS_PER_GROUP
        rows += [user] * len(items)
        cols += items.tolist()
    shape = (N_GROUPS * USERS_PER_GROUP, N_GROUPS * ITEMS_PER_GROUP)
    return sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=shape)


def dense_ease(x: sp.csr_matrix, l2: float) -> np.ndarray:
    """Steck's closed form, the reference the restricted one must equal with all neighbours."""
    g = (x.T @ x).toarray().astype(np.float64) + l2 * np.eye(x.shape[1])
    p = np.linalg.inv(g)
    b = -p / np.diag(p)
    np.fill_diagonal(b, 0.0)
    return b


def test_neighbour_ease_with_every_item_is_ease():
    rng = np.random.default_rng(3)  # dense enough that every pair of items co-occurs
    x = sp.csr_matrix((rng.random((60, 12)) < 0.5).astype(np.float32))
    assert ((x.T @ x).toarray() > 0).all()
    graph = neighbour_ease(x, m=x.shape[1], l2=5.0)
    np.testing.assert_allclose(graph.matrix().toarray(), dense_ease(x, 5.0), atol=1e-5)


def test_neighbour_sets_keep_m_most_similar_and_never_the_item_itself():
    x = block_matrix()
    gram = (x.T @ x).tocsr()
    sets = neighbour_sets(gram, 3)
    for j, cols in enumerate(sets):
        assert len(cols) == 3 and j not in cols
        assert set(cols // ITEMS_PER_GROUP) == {j // ITEMS_PER_GROUP}  # co-occurring items only


def test_default_l2_is_six_times_interactions_per_item():
    x = block_matrix()
    assert default_l2(x) == pytest.approx(6.0 * x.nnz / x.shape[1])


def test_linear_logits_equal_history_times_weights():
    x = block_matrix()
    model = Joint(**FAST, epochs=1, deep=False, item_bias="train_only").fit(x)
    weights = sp.csr_matrix(
        (
            model.module.edge_weight.detach().numpy(),
            model.module.targets.numpy(),
            model.module.indptr.numpy(),
        ),
        shape=(x.shape[1], x.shape[1]),
    )
    expected = (x[:7] @ weights).toarray()  # the item bias is left out of the scores
    np.testing.assert_allclose(model.score(x[:7]), expected, rtol=1e-5, atol=1e-5)
    scored = Joint(**FAST, epochs=1, deep=False, item_bias="scored").fit(x)
    bias = scored.module.item_bias.detach().numpy()
    assert np.abs(bias).max() > 0
    np.testing.assert_allclose(
        scored.score(x[:7]) - (x[:7] @ weights).toarray(), np.tile(bias, (7, 1)), atol=1e-4
    )


def test_start_bias_matches_item_counts():
    """The start's bias makes the expected count of every item equal to its observed count."""
    from recvae.models.joint import fit_start

    x = block_matrix()
    x = x.tolil()
    x[:40, 0] = 1.0  # item 0 more popular than the rest of its block
    x = sp.csr_matrix(x)
    scale, bias = fit_start(x, None, seed=0)
    assert scale == 0.0
    probs = np.exp(bias) / np.exp(bias).sum()
    counts = np.asarray(x.sum(axis=0)).ravel()
    np.testing.assert_allclose(probs, counts / counts.sum(), rtol=1e-3)


def test_start_is_the_scaled_closed_form():
    x = block_matrix()
    model = Joint(**FAST, epochs=1, deep=False, train_linear=False).fit(x)
    graph = neighbour_ease(x, 6, default_l2(x))
    assert model.linear_scale > 1.0  # regression outputs are too flat as logits
    np.testing.assert_allclose(
        model.module.edge_weight.detach().numpy(), graph.weights * model.linear_scale, rtol=1e-6
    )


@pytest.mark.parametrize(
    "settings",
    [{}, {"deep": False}, {"linear": False}, {"train_linear": False}, {"variational": False}],
    ids=["joint", "linear-only", "deep-only", "fixed-linear", "dae"],
)
def test_each_variant_learns_the_blocks(settings):
    x = block_matrix()
    model = Joint(**FAST, epochs=15, **settings).fit(x)
    losses = [r["loss"] for r in model.history]
    assert losses[-1] < losses[0]
    scores = model.score(x[:8])
    scores[x[:8].toarray() > 0] = -np.inf
    top = scores.argmax(axis=1) // ITEMS_PER_GROUP
    np.testing.assert_array_equal(top, np.arange(8) % N_GROUPS)


def test_switched_off_paths_have_no_weights():
    x = block_matrix()
    linear_only = Joint(**FAST, epochs=1, deep=False).fit(x)
    assert linear_only.module.deep is None
    deep_only = Joint(**FAST, epochs=1, linear=False).fit(x)
    names = dict(deep_only.module.named_parameters())
    assert "edge_weight" not in names
    assert all(n.startswith("deep.") for n in names if n != "item_bias")


def test_fixed_linear_path_does_not_move():
    x = block_matrix()
    model = Joint(**FAST, epochs=3, train_linear=False).fit(x)
    start = neighbour_ease(x, 6, default_l2(x)).weights * model.linear_scale
    np.testing.assert_allclose(model.module.edge_weight.detach().numpy(), start, rtol=1e-6)


def test_deep_output_lr_scales_the_output_layers_steps():
    """Adam steps are about lr whatever the gradient, so from the zero start the output layer's
    weights grow in proportion to its learning rate (measured: 0.0270 / 0.0030 / 0.0003 mean
    |w| at 1 / 0.1 / 0.01); the encoder keeps lr (its mean |w| stays near 0.15)."""
    x = block_matrix()
    output, encoder = {}, {}
    for scale in (1.0, 0.01):
        deep = Joint(**FAST, epochs=2, deep_output_lr=scale).fit(x).module.deep
        output[scale] = float(deep.output_layer()[0].detach().abs().mean())
        encoder[scale] = float(deep.encoder[0].detach().abs().mean())
    assert 0.007 < output[0.01] / output[1.0] < 0.015
    assert encoder[0.01] == pytest.approx(encoder[1.0], rel=0.05)


def test_same_seed_same_model():
    x = block_matrix()
    a = Joint(**FAST, epochs=2).fit(x).score(x[:5])
    b = Joint(**FAST, epochs=2).fit(x).score(x[:5])
    np.testing.assert_array_equal(a, b)


def test_save_load_round_trip(tmp_path):
    x = block_matrix()
    model = build_model("joint", {**FAST, "epochs": 2})
    model.fit(x)
    model.save(tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    assert meta["model"] == "joint" and meta["linear_scale"] == model.linear_scale
    loaded = load_model(tmp_path / "m")
    np.testing.assert_array_equal(loaded.score(x[:9]), model.score(x[:9]))


def test_damaged_graph_is_refused(tmp_path):
    from safetensors.torch import load_file, save_file

    x = block_matrix()
    Joint(**FAST, epochs=1).fit(x).save(tmp_path / "m")
    file = tmp_path / "m" / "weights.safetensors"
    tensors = load_file(str(file))
    tensors["targets"] = tensors["targets"] + 1000
    save_file(tensors, str(file))
    with pytest.raises(RecvaeError, match="item graph is inconsistent"):
        load_model(tmp_path / "m")


def test_check_graph_accepts_a_good_graph():
    check_graph(torch.tensor([0, 1, 2]), torch.tensor([1, 0]), 2, "w")


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"deep": False, "linear": False}, "deep and linear are both off"),
        ({"neighbours": 0}, "neighbours must be a positive number"),
        ({"linear_l2": -1.0}, "linear_l2 must be positive"),
        ({"linear_init": "random"}, "linear_init"),
        ({"dropout": 1.0}, "dropout must be in"),
        ({"deep_output_lr": 0.0}, "deep_output_lr must be > 0"),
    ],
)
def test_bad_settings_give_one_clear_error(settings, message):
    with pytest.raises(RecvaeError, match=message):
        build_model("joint", settings)


def test_warm_start_is_refused():
    with pytest.raises(RecvaeError, match="warm start is not supported"):
        Joint(**FAST, epochs=1).fit(block_matrix(), warm_start="somewhere")


def test_defaults():
    config = JointConfig()
    assert config.deep and config.linear and config.variational and config.train_linear
    assert config.neighbours == 100 and config.linear_l2 is None
