"""Mult-VAE / Mult-DAE: the maths of each piece, "did it learn", determinism, resume, files."""

import json

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from recvae.data.split import Holdout, weak_generalization
from recvae.errors import RecvaeError
from recvae.models import load_model
from recvae.models import vae as vae_module
from recvae.models.torch_autoencoder import INIT
from recvae.models.torch_sparse import MultinomialNLL, SparseInputLinear, torch_csr, transpose_csr
from recvae.models.vae import (
    AutoencoderModule,
    MultDAE,
    MultDAEConfig,
    MultVAE,
    MultVAEConfig,
    resolve_anneal_steps,
)
from recvae.train import epoch_seed

N_GROUPS, ITEMS_PER_GROUP, USERS_PER_GROUP = 4, 10, 40


def block_matrix(seed: int = 0) -> sp.csr_matrix:
    """Users of group g interact with 6 of the 10 items of block g: the answer is known."""
    rng = np.random.default_rng(seed)
    rows, cols = [], []
    for user in range(N_GROUPS * USERS_PER_GROUP):
        group = user % N_GROUPS
        items = rng.choice(ITEMS_PER_GROUP, size=6, replace=False) + group * ITEMS_PER_GROUP
        rows += [user] * len(items)
        cols += items.tolist()
    shape = (N_GROUPS * USERS_PER_GROUP, N_GROUPS * ITEMS_PER_GROUP)
    return sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=shape)


SMALL = dict(
    hidden_dims=(32,), latent_dim=8, batch_size=32, lr=1e-2, metric="ndcg@5", eval_batch_size=64
)


def small_vae(**overrides) -> MultVAE:
    return MultVAE(**{**SMALL, "epochs": 3, "anneal_steps": 50, **overrides})


@pytest.fixture(scope="module")
def split():
    return weak_generalization(block_matrix(), valid_fraction=0.3, seed=1)


def test_paper_defaults():
    vae, dae = MultVAEConfig(), MultDAEConfig()
    assert (vae.hidden_dims, vae.latent_dim, vae.dropout, vae.activation) == (
        (600,),
        200,
        0.5,
        "tanh",
    )
    assert (vae.loop.lr, vae.loop.batch_size, vae.beta_cap, vae.anneal_steps) == (
        1e-3,
        500,
        0.2,
        None,
    )
    assert (vae.likelihood, vae.loop.metric) == ("multinomial", "ndcg@100")
    assert (dae.hidden_dims, dae.latent_dim, dae.l2) == ((), 200, 0.01 / 500)  # lam / batch
    module = MultVAE()._build_module(1000)
    shapes = [tuple(p.shape) for p in module.weights()]
    assert shapes == [(1000, 600), (600, 400), (200, 600), (600, 1000)]
    shapes = [tuple(p.shape) for p in MultDAE()._build_module(1000).weights()]
    assert shapes == [(1000, 200), (200, 1000)]
    with pytest.raises(ValueError, match="dropout"):
        MultVAEConfig(dropout=1.0)


def test_default_anneal_spans_the_epoch_budget():
    # ml-1m-lightgcn: 6,039 users in batches of 500 = 13 updates per epoch, 200 epochs
    assert resolve_anneal_steps(MultVAEConfig(), 6_039) == 2_600
    assert resolve_anneal_steps(MultVAE(epochs=10, batch_size=100).config, 1_000) == 100
    assert resolve_anneal_steps(MultVAEConfig(anneal_steps=200_000), 6_039) == 200_000
    with pytest.raises(ValueError, match="anneal_steps"):
        MultVAEConfig(anneal_steps=-1)


def test_default_anneal_reaches_the_cap_after_a_fifth_of_the_budget(split):
    # 160 training users in batches of 32: 5 updates per epoch, 10 epochs -> 50 updates;
    # the beta logged for epoch e is that of its last update (number 5e - 1): min(0.2, that / 50)
    model = MultVAE(**{**SMALL, "epochs": 10}).fit(split.train)
    assert split.train.shape[0] == 160
    betas = [record["beta"] for record in model.history]
    assert betas == pytest.approx([min(0.2, (5 * e - 1) / 50) for e in range(1, 11)])


def test_sparse_first_layer_matches_dense_in_value_and_gradient():
    rng = np.random.default_rng(0)
    batch = sp.random(7, 12, density=0.3, format="csr", dtype=np.float32, random_state=1)
    values = torch.from_numpy(batch.data.copy())
    weight = torch.randn(12, 5, generator=torch.Generator().manual_seed(0), requires_grad=True)
    bias = torch.tensor(rng.normal(size=5), dtype=torch.float32, requires_grad=True)
    x = torch_csr(batch.indptr, batch.indices, values, batch.shape)
    out = SparseInputLinear.apply(weight, bias, x, transpose_csr(batch, values))
    (out * torch.arange(5.0)).sum().backward()
    dense_w, dense_b = (
        weight.detach().clone().requires_grad_(),
        bias.detach().clone().requires_grad_(),
    )
    expected = torch.from_numpy(batch.toarray()) @ dense_w + dense_b
    (expected * torch.arange(5.0)).sum().backward()
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(weight.grad, dense_w.grad)
    torch.testing.assert_close(bias.grad, dense_b.grad)


def test_fused_multinomial_loss_matches_log_softmax_in_value_and_gradient():
    batch = sp.csr_matrix(np.array([[1, 0, 2, 0], [0, 0, 0, 1], [1, 1, 1, 1]], np.float32))
    logits = torch.randn(3, 4, generator=torch.Generator().manual_seed(0), requires_grad=True)
    rows = torch.from_numpy(np.repeat(np.arange(3), np.diff(batch.indptr)))
    cols = torch.from_numpy(batch.indices.astype(np.int64))
    loss = MultinomialNLL.apply(logits, rows, cols, torch.from_numpy(batch.data))
    loss.backward()
    reference = logits.detach().clone().requires_grad_()
    expected = -(torch.log_softmax(reference, 1) * torch.from_numpy(batch.toarray())).sum(1).mean()
    expected.backward()
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(logits.grad, reference.grad)


def test_input_is_normalised_then_dropped_with_scaling(monkeypatch):
    """The paper's order: L2-normalise the row, then dropout keeping 1 - p scaled by 1 / (1 - p)."""
    captured = {}
    original = AutoencoderModule.encode

    def spy(self, x, xt):
        captured.setdefault("x", x.to_dense())
        return original(self, x, xt)

    monkeypatch.setattr(AutoencoderModule, "encode", spy)
    row = sp.csr_matrix(np.array([[0, 3, 4, 0, 0, 0, 0, 0, 0, 0]], np.float32))
    model = MultDAE(hidden_dims=(), latent_dim=2, epochs=1, batch_size=1, dropout=0.5)
    model.fit(row)
    nonzero = captured["x"][0, [1, 2]].numpy()
    # each of 3/5 and 4/5 is either dropped (0) or doubled
    assert all(
        v == 0 or v == pytest.approx(2 * n) for v, n in zip(nonzero, (0.6, 0.8), strict=True)
    )
    captured.clear()
    MultDAE(hidden_dims=(), latent_dim=2, epochs=1, batch_size=1, dropout=0.0).fit(row)
    assert captured["x"][0, [1, 2]].numpy() == pytest.approx([0.6, 0.8])


def test_one_step_changes_every_parameter_and_scoring_changes_none():
    matrix = block_matrix()
    settings = {**SMALL, "epochs": 1, "batch_size": matrix.shape[0]}  # exactly one update
    model = MultVAE(**settings).fit(matrix)
    initial = model._build_module(matrix.shape[1])
    initial.reset_parameters(
        torch.Generator().manual_seed(epoch_seed(0, 0, INIT))
    )
    after = {k: v.clone() for k, v in model.module.state_dict().items()}
    for key, value in initial.state_dict().items():
        assert not torch.equal(value, after[key]), f"{key} did not change in one update"
    model.score(matrix)
    for key, value in model.module.state_dict().items():
        assert torch.equal(value, after[key]), f"scoring changed {key}"


@pytest.mark.parametrize("cls", [MultVAE, MultDAE])
def test_learns_the_block_structure(split, cls):
    extra = {"anneal_steps": 50} if cls is MultVAE else {}
    model = cls(**{**SMALL, "epochs": 25, **extra}).fit(split.train, split.valid)
    best = model.best_metrics
    # random ranking of the 34 unseen items would give recall@5 around 0.15
    assert best["recall@5"] > 0.8, best
    assert model.best_epoch >= 1 and len(model.history) == 25
    scores = model.score(split.valid.history)
    assert scores.dtype == np.float32 and scores.shape == split.valid.history.shape
    # a brand-new user who likes items 0 and 1 is folded in: block-0 items rank first
    new_user = sp.csr_matrix(([1.0, 1.0], ([0, 0], [0, 1])), shape=(1, 40), dtype=np.float32)
    ranked = np.argsort(-model.score(new_user)[0])
    assert set(ranked[:8]) <= set(range(10))


def test_same_seed_same_result_and_another_seed_differs(split):
    first = small_vae(seed=7).fit(split.train, split.valid)
    second = small_vae(seed=7).fit(split.train, split.valid)
    other = small_vae(seed=8).fit(split.train, split.valid)
    keys = ["loss", "kl", "ndcg@5", "recall@20"]
    assert [[r[k] for k in keys] for r in first.history] == [
        [r[k] for k in keys] for r in second.history
    ]
    np.testing.assert_array_equal(first.score(split.train), second.score(split.train))
    assert first.history[-1]["loss"] != other.history[-1]["loss"]


def test_resume_after_crash_gives_the_uninterrupted_result(split, tmp_path):
    uninterrupted = small_vae(epochs=5).fit(split.train, split.valid)

    def crash(epoch, record):
        if epoch == 2:
            raise RuntimeError("simulated crash")

    with pytest.raises(RuntimeError, match="simulated crash"):
        small_vae(epochs=5).fit(split.train, split.valid, callback=crash, checkpoint_dir=tmp_path)
    state = json.loads((tmp_path / "last" / "state.json").read_text())
    assert state["loop"]["epoch"] == 2 and (tmp_path / "best" / "weights.safetensors").is_file()
    resumed = small_vae(epochs=5).fit(split.train, split.valid, checkpoint_dir=tmp_path)
    drop = {"train_seconds", "train_cpu_seconds", "valid_seconds", "examples_per_second"}
    clean = [{k: v for k, v in r.items() if k not in drop} for r in resumed.history]
    assert clean == [{k: v for k, v in r.items() if k not in drop} for r in uninterrupted.history]
    np.testing.assert_array_equal(resumed.score(split.train), uninterrupted.score(split.train))
    with pytest.raises(RecvaeError, match="different model config"):
        small_vae(epochs=5, lr=0.5).fit(split.train, split.valid, checkpoint_dir=tmp_path)


def test_a_finished_run_can_be_extended_with_more_epochs(split, tmp_path):
    """The epoch budget is not part of the run key: 3 epochs, then 2 more = 5 in one go."""
    uninterrupted = small_vae(epochs=5).fit(split.train, split.valid)
    small_vae(epochs=3).fit(split.train, split.valid, checkpoint_dir=tmp_path)
    extended = small_vae(epochs=5).fit(split.train, split.valid, checkpoint_dir=tmp_path)
    assert [r["loss"] for r in extended.history] == [r["loss"] for r in uninterrupted.history]


def test_nan_loss_stops_with_clear_error_and_keeps_last_good_checkpoint(
    split, tmp_path, monkeypatch
):
    calls = {"n": 0}
    original = vae_module.likelihood_nll

    def poisoned(likelihood, logits, batch):
        calls["n"] += 1
        value = original(likelihood, logits, batch)
        return value * float("nan") if calls["n"] > 6 else value  # 5 batches per epoch

    monkeypatch.setattr(vae_module, "likelihood_nll", poisoned)
    model = small_vae(epochs=4)
    with pytest.raises(RecvaeError, match=r"nan in epoch 2 at update 6.*checkpoint \(epoch 1\)"):
        model.fit(split.train, split.valid, checkpoint_dir=tmp_path)
    state = json.loads((tmp_path / "last" / "state.json").read_text())
    assert state["loop"]["epoch"] == 1


def test_callback_stops_and_patience_stops(split):
    model = small_vae(epochs=10).fit(split.train, split.valid, callback=lambda e, r: e == 2)
    assert model.stopped == "callback" and len(model.history) == 2
    model = small_vae(epochs=30, patience=2, lr=1e-5).fit(split.train, split.valid)
    assert model.stopped == "early_stopping" and len(model.history) < 30


def test_find_mode_reports_beta_of_best_epoch(split):
    model = small_vae(epochs=4, beta_mode="find", anneal_steps=10).fit(split.train, split.valid)
    betas = [r["beta"] for r in model.history]
    assert betas == pytest.approx([0.4, 0.9, 1.0, 1.0])  # 5 updates/epoch, beta from step
    assert model.best_beta == model.history[model.best_epoch - 1]["beta"]


@pytest.mark.parametrize("likelihood", ["gaussian", "logistic"])
def test_other_likelihoods_train(split, likelihood):
    model = small_vae(likelihood=likelihood, epochs=2).fit(split.train, split.valid)
    assert np.isfinite([r["loss"] for r in model.history]).all()


def test_save_load_round_trip_and_registry(split, tmp_path):
    model = small_vae(epochs=2).fit(split.train, split.valid)
    model.save(tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    assert meta["model"] == "multvae" and meta["config"]["hidden_dims"] == [32]
    assert meta["best_epoch"] == model.best_epoch and len(meta["history"]) == 2
    loaded = load_model(tmp_path / "m")
    assert isinstance(loaded, MultVAE) and loaded.config == model.config
    np.testing.assert_array_equal(loaded.score(split.train), model.score(split.train))
    with pytest.raises(RecvaeError, match="not 'multdae'"):
        MultDAE.load(tmp_path / "m")
    with pytest.raises(RecvaeError, match="trained on 40"):
        loaded.score(sp.csr_matrix((1, 39), dtype=np.float32))
    with pytest.raises(RecvaeError, match="before score"):
        MultVAE().score(split.train)


def test_warm_start_uses_the_other_models_weights(split, tmp_path):
    trained = small_vae(epochs=10).fit(split.train, split.valid)
    trained.save(tmp_path / "m")
    cold = small_vae(epochs=1).fit(split.train, split.valid)
    warm = small_vae(epochs=1).fit(split.train, split.valid, warm_start=tmp_path / "m")
    assert warm.history[0]["loss"] < cold.history[0]["loss"]
    narrow = split.train[:, :30]
    with pytest.raises(RecvaeError, match="give the item rows"):
        small_vae(epochs=1).fit(narrow, warm_start=trained)
    with pytest.raises(RecvaeError, match="different architecture"):
        small_vae(epochs=1, latent_dim=4).fit(split.train, warm_start=trained)


def test_validation_with_users_outside_training(split):
    """Strong generalization: held-out users are scored by folding in their history."""
    matrix = block_matrix(seed=3)
    train, heldout_users = matrix[:120], matrix[120:]
    rng = np.random.default_rng(0)
    from recvae.data.split import split_rows

    history, heldout = split_rows(heldout_users, 0.3, rng)
    valid = Holdout(history, heldout, np.arange(120, 160))
    model = MultDAE(**{**SMALL, "epochs": 15}).fit(train, valid)
    assert model.best_metrics["recall@5"] > 0.7
