"""Row-wise (lazy) Adam for the autoencoders' item-sized matrices (recvae.models.lazy_adam)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from safetensors.numpy import load_file
from typer.testing import CliRunner

from recvae.cli import app
from recvae.data.dataset import Dataset
from recvae.data.vocab import Vocabulary
from recvae.device import set_run_device
from recvae.errors import RecvaeError
from recvae.models.lazy_adam import LazyAdam, RowGradients
from recvae.models.torch_autoencoder import INIT
from recvae.models.vae import MultDAE, MultVAE
from recvae.train import epoch_seed

SMALL = {"hidden_dims": (8,), "latent_dim": 4, "threads": 1, "seed": 2}


def _initial_state(model) -> dict[str, torch.Tensor]:
    module = model._build_module(model.n_items)
    module.reset_parameters(
        torch.Generator().manual_seed(epoch_seed(model.config.loop.seed, 0, INIT))
    )
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_lazy_step_on_every_row_is_dense_adam(weight_decay):
    generator = torch.Generator().manual_seed(0)
    start = torch.randn(7, 3, generator=generator)
    dense, lazy = torch.nn.Parameter(start.clone()), torch.nn.Parameter(start.clone())
    row_grads = RowGradients()
    adam = torch.optim.Adam([dense], lr=0.01, weight_decay=weight_decay)
    lazy_adam = LazyAdam([lazy], row_grads, lr=0.01, weight_decay=weight_decay, fused=True)
    for _ in range(5):
        grad = torch.randn(7, 3, generator=generator)
        dense.grad = grad.clone()
        adam.step()
        lazy_adam.zero_grad()
        row_grads.add(lazy, 0, torch.arange(7), grad.clone())
        lazy_adam.step()
    torch.testing.assert_close(lazy, dense, atol=1e-6, rtol=0)


def test_lazy_step_moves_only_the_given_columns_and_their_moments():
    weight = torch.nn.Parameter(torch.ones(3, 6))
    row_grads = RowGradients()
    optimizer = LazyAdam([weight], row_grads, lr=0.1, weight_decay=0.5, fused=True)
    columns = torch.tensor([1, 4])
    row_grads.add(weight, 1, columns, torch.full((3, 2), 2.0))
    optimizer.step()
    untouched = [0, 2, 3, 5]
    assert (weight.detach()[:, untouched] == 1.0).all()
    # first Adam step: each touched entry moves by lr against the gradient's sign
    torch.testing.assert_close(weight.detach()[:, [1, 4]], torch.full((3, 2), 0.9))
    state = optimizer.state[weight]
    assert (state["exp_avg"][:, untouched] == 0).all() and (
        state["exp_avg_sq"][:, untouched] == 0
    ).all()
    assert not row_grads.by_param  # the step consumed them


def test_row_gradients_of_two_slice_sets_are_merged_and_summed():
    param = torch.zeros(5, 2)
    row_grads = RowGradients()
    row_grads.add(param, 0, torch.tensor([1, 3]), torch.ones(2, 2))
    row_grads.add(param, 0, torch.tensor([3, 4]), 2 * torch.ones(2, 2))
    merged = row_grads.by_param[param]
    assert merged.index.tolist() == [1, 3, 4]
    assert merged.values[:, 0].tolist() == [1.0, 3.0, 2.0]


def _every_item_every_user(n_users: int = 24, n_items: int = 10) -> sp.csr_matrix:
    values = np.random.default_rng(0).integers(1, 4, (n_users, n_items)).astype(np.float32)
    return sp.csr_matrix(values)


@pytest.mark.parametrize("model_class", [MultVAE, MultDAE])
def test_lazy_adam_equals_dense_adam_when_every_item_is_in_every_batch(model_class):
    """Every user has every item and every item is a candidate: the row-wise gradients and
    steps are the dense ones (l2 on, so the weight decay of the touched rows counts too)."""
    train = _every_item_every_user()
    settings = {**SMALL, "epochs": 3, "batch_size": 8, "l2": 0.01, "dropout": 0.0}
    dense = model_class(optimizer="adam", **settings).fit(train)
    lazy = model_class(softmax="sampled", negatives=10, optimizer="lazy_adam", **settings)
    lazy.fit(train)
    for key, value in dense.module.state_dict().items():
        torch.testing.assert_close(lazy.module.state_dict()[key], value, atol=1e-6, rtol=0)


def test_rows_of_items_never_in_a_batch_stay_exactly_unchanged():
    """Items 8-11 never occur in training: with the popularity proposal they are never drawn
    either, so their first-layer rows and output columns keep their initial values (l2 on:
    lazy weight decay touches only seen rows), while every other item's moved."""
    rng = np.random.default_rng(1)
    dense = (rng.random((40, 12)) < 0.4).astype(np.float32)
    dense[:, 0] = 1.0
    dense[:, 8:] = 0.0
    train = sp.csr_matrix(dense)
    model = MultVAE(softmax="sampled", negatives=3, epochs=3, batch_size=10, l2=0.01, **SMALL)
    model.fit(train)
    assert model.module.first_grad is None and model.module.output_grad is None
    initial = _initial_state(model)
    state = model.module.state_dict()
    unseen, seen = slice(8, 12), slice(0, 8)
    assert torch.equal(state["encoder.0"][unseen], initial["encoder.0"][unseen])
    assert torch.equal(state["decoder.2"][:, unseen], initial["decoder.2"][:, unseen])
    assert torch.equal(state["decoder.3"][unseen], initial["decoder.3"][unseen])
    assert (state["encoder.0"][seen] != initial["encoder.0"][seen]).all(dim=1).all()
    assert (state["decoder.3"][seen] != initial["decoder.3"][seen]).all()


@pytest.mark.parametrize("model_class", [MultVAE, MultDAE])
def test_sampled_fit_with_row_wise_adam_lowers_the_loss(model_class):
    rng = np.random.default_rng(3)
    rows = [(u, i) for u in range(200) for i in (u % 4) * 50 + rng.choice(50, 10, replace=False)]
    users, items = zip(*rows, strict=True)
    train = sp.csr_matrix((np.ones(len(rows), np.float32), (users, items)), shape=(200, 200))
    model = model_class(softmax="sampled", negatives=20, epochs=20, batch_size=50, lr=0.01, **SMALL)
    assert model.config.optimizer == "auto"  # lazy_adam under sampled softmax
    model.fit(train)
    losses = [record["nll"] for record in model.history]
    assert losses[-1] < 0.9 * losses[0], losses


def test_auto_is_lazy_adam_only_under_sampled_softmax():
    from recvae.models.configs import resolved_optimizer

    assert resolved_optimizer(MultVAE(softmax="sampled").config) == "lazy_adam"
    assert resolved_optimizer(MultVAE().config) == "adam"
    assert resolved_optimizer(MultDAE(optimizer="lazy_adam").config) == "lazy_adam"
    assert resolved_optimizer(MultDAE(softmax="sampled", optimizer="adam").config) == "adam"


def test_a_bad_optimizer_is_one_clear_error():
    with pytest.raises(RecvaeError, match="optimizer: expected one of 'auto', 'adam', 'lazy_adam'"):
        MultVAE(optimizer="sgd")


def test_lazy_adam_with_full_softmax_updates_the_first_layer_row_wise():
    """Full softmax: the output layer's gradient covers every item (dense table and step);
    only the first layer's rows of unseen items stay put."""
    dense = np.zeros((30, 9), np.float32)
    dense[:, :6] = np.random.default_rng(4).random((30, 6)) < 0.5
    dense[:, 0] = 1.0
    model = MultDAE(optimizer="lazy_adam", epochs=2, batch_size=10, **SMALL).fit(
        sp.csr_matrix(dense)
    )
    initial = _initial_state(model)
    state = model.module.state_dict()
    assert torch.equal(state["encoder.0"][6:], initial["encoder.0"][6:])
    assert not torch.equal(state["decoder.1"][6:], initial["decoder.1"][6:])


def test_a_resumed_lazy_adam_run_ends_with_the_uninterrupted_weights(tmp_path):
    """The row-wise moments and step counts are checkpointed like Adam's own state."""
    train = sp.csr_matrix((np.random.default_rng(6).random((40, 30)) < 0.2).astype("f4"))
    settings = {**SMALL, "softmax": "sampled", "negatives": 5, "batch_size": 10}

    def stop_after_two(epoch, record):
        return epoch == 2

    whole = MultVAE(epochs=4, **settings).fit(train)
    MultVAE(epochs=4, **settings).fit(train, checkpoint_dir=tmp_path, callback=stop_after_two)
    resumed = MultVAE(epochs=4, **settings).fit(train, checkpoint_dir=tmp_path)
    assert [r["epoch"] for r in resumed.history] == [1, 2, 3, 4]
    for key, value in whole.module.state_dict().items():
        assert torch.equal(resumed.module.state_dict()[key], value), key


# --- under torchrun -----------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory):
    """150 users over 60 items, 3 taste groups (items 55-59 never occur)."""
    rng = np.random.default_rng(0)
    rows, cols = [], []
    for user in range(150):
        items = rng.choice(18, size=6, replace=False) + 18 * (user % 3)
        rows += [user] * 6
        cols += items.tolist()
    matrix = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(150, 60))
    path = tmp_path_factory.mktemp("lazy") / "ds"
    Dataset(matrix, Vocabulary([f"u{i}" for i in range(150)], name="user"),
            Vocabulary(list(range(60)), name="item")).save(path)  # fmt: skip
    return path


def test_two_ranks_with_row_wise_adam_give_the_one_process_weights(dataset_dir, tmp_path):
    """Batches of 45 over 150 users: the last batch of 15 splits 7/8; every rank declares the
    whole batch's slices, so the row-wise sums across ranks are the one-process gradients."""
    args = ["train", str(dataset_dir), "--model", "multdae", "--threads", "1", "--seed", "3",
            "--batch-size", "45", "--set", "latent_dim=8", "--set", "softmax=sampled",
            "--set", "negatives=10", "--set", "dropout=0", "--epochs", "2", "--no-validation",
            "--device", "cpu", "--no-progress"]  # fmt: skip
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
               "--master-addr", "127.0.0.1", "--master-port", str(_free_port()),
               "-m", "recvae", *args, "--out", str(tmp_path / "two")]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS="1", RECVAE_LOG_LEVEL="warning")
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    try:
        one = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "one")])
    finally:
        set_run_device(None)
    assert one.exit_code == 0, one.output
    two_weights = load_file(tmp_path / "two" / "weights.safetensors")
    one_weights = load_file(tmp_path / "one" / "weights.safetensors")
    for key in one_weights:
        np.testing.assert_allclose(two_weights[key], one_weights[key], atol=1e-5, err_msg=key)
