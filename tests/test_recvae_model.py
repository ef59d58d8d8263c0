"""RecVAE: did-it-learn, switches, determinism, save/load, the composite prior's maths."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from recvae.data.split import Holdout
from recvae.errors import RecvaeError
from recvae.models.recvae_model import (
    RecVAE,
    RecVAEConfig,
    _RecVAETrainer,
    composite_log_prior,
    log_normal,
)

N_USERS, N_ITEMS = 60, 24
SMALL = {"hidden_dim": 16, "latent_dim": 4, "n_layers": 3, "batch_size": 20, "threads": 1}


def _blocks(n_users: int = N_USERS, seed: int = 0) -> sp.csr_matrix:
    """Two tastes: even users take items of the first half, odd users of the second."""
    rng = np.random.default_rng(seed)
    half = N_ITEMS // 2
    rows, cols = [], []
    for user in range(n_users):
        items = (user % 2) * half + rng.choice(half, 6, replace=False)
        rows += [user] * len(items)
        cols += list(items)
    data = np.ones(len(rows), dtype=np.float32)
    return sp.csr_matrix((data, (rows, cols)), shape=(n_users, N_ITEMS))


def _snapshot(model: RecVAE) -> dict[str, torch.Tensor]:
    assert model.module is not None
    return {k: v.detach().clone() for k, v in model.module.state_dict().items()}


def _trainer(**settings) -> _RecVAETrainer:
    model = RecVAE(**{**SMALL, "epochs": 1, **settings})
    model.fit(_blocks())  # builds the module; we then drive the trainer by hand
    return _RecVAETrainer(model, _blocks())


def test_log_normal_matches_the_formula():
    value = log_normal(torch.tensor(1.0), torch.tensor(0.0), torch.tensor(0.0))
    assert value.item() == pytest.approx(-0.5 * (math.log(2 * math.pi) + 1.0))


def test_composite_prior_is_the_weighted_mixture_density():
    z, mu, logvar = torch.tensor([0.3]), torch.tensor([1.0]), torch.tensor([-0.5])
    weights = (0.15, 0.75, 0.1)
    expected = (
        0.15 * math.exp(log_normal(z, torch.tensor(0.0), torch.tensor(0.0)).item())
        + 0.75 * math.exp(log_normal(z, mu, logvar).item())
        + 0.1 * math.exp(log_normal(z, torch.tensor(0.0), torch.tensor(10.0)).item())
    )
    got = composite_log_prior(z, mu, logvar, weights, 10.0).item()
    assert got == pytest.approx(math.log(expected), rel=1e-5)


def test_encoder_pass_changes_every_encoder_parameter_and_no_decoder_parameter():
    trainer = _trainer()
    before = _snapshot(trainer.model)
    noise = torch.Generator().manual_seed(0)
    trainer._pass(np.arange(N_USERS), "encoder", noise, 0, 0, lambda n, m: None)
    after = _snapshot(trainer.model)
    for key in before:
        changed = not torch.equal(before[key], after[key])
        assert changed == key.startswith("encoder."), key


def test_decoder_pass_changes_only_the_decoder():
    trainer = _trainer()
    before = _snapshot(trainer.model)
    noise = torch.Generator().manual_seed(0)
    trainer._pass(np.arange(N_USERS), "decoder", noise, 0, 0, lambda n, m: None)
    after = _snapshot(trainer.model)
    for key in before:
        changed = not torch.equal(before[key], after[key])
        assert changed == key.startswith("decoder_"), key


def test_a_round_refreshes_the_old_encoder_to_the_new_encoder():
    trainer = _trainer()
    trainer.train_epoch(1, 0, lambda n, m: None)
    module = trainer.model.module
    for key, value in module.encoder.state_dict().items():
        assert torch.equal(value, module.old_encoder.state_dict()[key]), key


def test_scoring_changes_no_parameter():
    model = RecVAE(**SMALL, epochs=2).fit(_blocks())
    before = _snapshot(model)
    model.score(_blocks(10, seed=3))
    after = _snapshot(model)
    assert all(torch.equal(before[k], after[k]) for k in before)


def _block_accuracy(model: RecVAE) -> float:
    history = _blocks(20, seed=5)
    scores = model.score(history)
    scores[history.nonzero()] = -np.inf
    top = np.argsort(-scores, axis=1)[:, :3] // (N_ITEMS // 2)
    return float((top == (np.arange(20) % 2)[:, None]).mean())


@pytest.mark.parametrize(
    "switch",
    [
        {},
        {"composite_prior": False},
        {"per_user_beta": True},
        {"n_enc_epochs": 3},
        {"alternating": False},
        {"swish": False},
        {"layer_norm": False},
        {"dense_skips": False},
    ],
)
def test_each_switch_off_still_learns_the_two_tastes(switch):
    model = RecVAE(**SMALL, epochs=15, lr=1e-2, **switch).fit(_blocks())
    losses = [record["loss"] for record in model.history]
    assert np.isfinite(losses).all()
    assert _block_accuracy(model) == 1.0


def test_validation_keeps_the_best_epoch_and_records_metrics():
    train = _blocks()
    history, heldout = _blocks(10, seed=1), _blocks(10, seed=2)
    valid = Holdout(history=history, heldout=heldout, users=np.arange(10))
    model = RecVAE(**SMALL, epochs=3, metric="ndcg@5").fit(train, valid)
    assert len(model.history) == 3
    assert 1 <= model.best_epoch <= 3
    assert "ndcg@5" in model.best_metrics and "decoder_nll" in model.best_metrics


def test_same_seed_same_scores_and_different_seed_differs():
    history = _blocks(8, seed=4)
    first = RecVAE(**SMALL, epochs=2, seed=3).fit(_blocks()).score(history)
    second = RecVAE(**SMALL, epochs=2, seed=3).fit(_blocks()).score(history)
    other = RecVAE(**SMALL, epochs=2, seed=4).fit(_blocks()).score(history)
    np.testing.assert_array_equal(first, second)
    assert not np.array_equal(first, other)


def test_resume_from_checkpoint_equals_an_uninterrupted_run(tmp_path):
    history = _blocks(8, seed=4)
    straight = RecVAE(**SMALL, epochs=3).fit(_blocks()).score(history)
    # "interrupted" after round 2 (the callback stops it), then resumed from `last`
    RecVAE(**SMALL, epochs=3).fit(
        _blocks(), checkpoint_dir=tmp_path, callback=lambda epoch, record: epoch == 2
    )
    resumed = RecVAE(**SMALL, epochs=3).fit(_blocks(), checkpoint_dir=tmp_path)
    assert len(resumed.history) == 3
    np.testing.assert_array_equal(resumed.score(history), straight)


def test_save_load_round_trip(tmp_path):
    model = RecVAE(**SMALL, epochs=2).fit(_blocks())
    model.save(tmp_path / "m")
    loaded = RecVAE.load(tmp_path / "m")
    assert loaded.config == model.config
    history = _blocks(8, seed=4)
    np.testing.assert_array_equal(loaded.score(history), model.score(history))
    assert loaded.history == model.history


def test_warm_start_starts_from_the_other_models_weights():
    source = RecVAE(**SMALL, epochs=2).fit(_blocks())
    warm = RecVAE(**SMALL, epochs=1, lr=1e-12).fit(_blocks(), warm_start=source)
    history = _blocks(8, seed=4)
    np.testing.assert_allclose(warm.score(history), source.score(history), atol=1e-4)


def test_bad_settings_and_inputs_are_refused():
    with pytest.raises(ValueError, match="mixture_weights"):
        RecVAEConfig(mixture_weights=(0.5, 0.5))
    with pytest.raises(RecvaeError, match="unknown key"):
        RecVAE(hiden_dim=3)
    with pytest.raises(RecvaeError, match="before score"):
        RecVAE().score(_blocks())
    model = RecVAE(**SMALL, epochs=1).fit(_blocks())
    with pytest.raises(RecvaeError, match=f"{N_ITEMS}"):
        model.score(sp.csr_matrix((1, N_ITEMS + 1), dtype=np.float32))


def test_cli_trains_recvae_on_everything_for_fixed_epochs(tmp_path):
    """The final-model path: `recvae train --model recvae --no-validation --epochs N`."""
    import polars as pl
    from typer.testing import CliRunner

    from recvae.artifact import load_artifact
    from recvae.cli import app
    from recvae.data.dataset import Dataset
    from recvae.data.vocab import Vocabulary

    matrix = _blocks()
    users = Vocabulary(pl.Series([f"u{i}" for i in range(N_USERS)]), name="user")
    items = Vocabulary(pl.Series(list(range(N_ITEMS))), name="item")
    Dataset(matrix, users, items).save(tmp_path / "ds")
    settings = [f"--set={k}={v}" for k, v in SMALL.items()]
    args = ["train", str(tmp_path / "ds"), "--out", str(tmp_path / "m"), "--model", "recvae"]
    args += ["--no-validation", "--epochs", "2", "--no-progress", *settings]
    result = CliRunner().invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    artifact = load_artifact(tmp_path / "m")
    assert isinstance(artifact.model, RecVAE)
    assert artifact.metadata["training"]["epochs_run"] == 2
    assert artifact.metadata["split"]["source"] == "none"
