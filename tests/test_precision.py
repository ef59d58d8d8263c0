"""The `precision` loop setting: bf16 autocast trains and scores, the loss stays float32."""

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from typer.testing import CliRunner

from recvae.cli import app
from recvae.data.dataset import Dataset
from recvae.data.split import weak_generalization
from recvae.data.vocab import Vocabulary
from recvae.errors import RecvaeError
from recvae.models import build_model, torch_sparse
from recvae.models.configs import LoopConfig
from recvae.models.vae import MultDAE, MultVAE

SMALL = dict(hidden_dims=(16,), latent_dim=4, batch_size=32, lr=1e-2, epochs=2, threads=1)


def block_matrix() -> sp.csr_matrix:
    """90 users in 3 groups, each group on its own 8 of 24 items."""
    rng = np.random.default_rng(0)
    rows, cols = [], []
    for user in range(90):
        rows += [user] * 5
        cols += (rng.choice(8, size=5, replace=False) + 8 * (user % 3)).tolist()
    return sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(90, 24))


@pytest.mark.parametrize("model_class", [MultVAE, MultDAE])
def test_bf16_trains_and_scores_finite_numbers_with_a_float32_loss(model_class, monkeypatch):
    seen: list[torch.dtype] = []
    apply = torch_sparse.MultinomialNLL.apply

    def recording_apply(logits, *rest):
        seen.append(logits.dtype)
        return apply(logits, *rest)

    monkeypatch.setattr(torch_sparse.MultinomialNLL, "apply", recording_apply)
    matrix = block_matrix()
    options = dict(SMALL) if model_class is MultVAE else {**SMALL, "hidden_dims": ()}
    model = model_class(precision="bf16", **options).fit(matrix)
    assert seen and set(seen) == {torch.float32}  # the fused NLL got float32 logits
    assert all(np.isfinite(r["loss"]) for r in model.history)
    # the weights (and so the optimizer state) stay float32; autocast computes on copies
    assert {p.dtype for p in model.module.parameters()} == {torch.float32}
    scores = model.score(matrix[:10])
    assert scores.dtype == np.float32 and np.isfinite(scores).all()


def test_bf16_dense_layers_really_run_in_bfloat16(monkeypatch):
    """The decoder's logits come out of autocast in bfloat16 before the float32 cast."""
    from recvae.models import vae

    seen: list[torch.dtype] = []
    decode = vae.AutoencoderModule.decode

    def recording_decode(self, z, out=None):
        logits = decode(self, z, out=out)
        seen.append(logits.dtype)
        return logits

    monkeypatch.setattr(vae.AutoencoderModule, "decode", recording_decode)
    MultVAE(precision="bf16", **SMALL).fit(block_matrix())
    assert torch.bfloat16 in seen
    seen.clear()
    MultVAE(precision="fp32", **SMALL).fit(block_matrix())
    assert set(seen) == {torch.float32}


def test_tf32_on_the_cpu_trains_exactly_as_fp32():
    matrix = block_matrix()
    fp32 = MultVAE(**SMALL).fit(matrix).score(matrix[:10])
    tf32 = MultVAE(precision="tf32", **SMALL).fit(matrix).score(matrix[:10])
    np.testing.assert_array_equal(fp32, tf32)


def test_an_unknown_precision_is_one_clear_error(tmp_path):
    for ok in ("fp32", "tf32", "bf16"):
        assert LoopConfig(precision=ok).precision == ok
    with pytest.raises(RecvaeError, match=r"precision: expected one of .*, got 'fp16'"):
        build_model("multvae", {"precision": "fp16"})
    with pytest.raises(RecvaeError, match="precision bf16 is for multvae and multdae"):
        build_model("recvae", {"precision": "bf16"})
    assert build_model("recvae", {"precision": "tf32"}).config.loop.precision == "tf32"


def test_cli_set_precision_trains_in_bf16_and_refuses_a_bad_value(tmp_path):
    matrix = block_matrix()
    users = Vocabulary([f"u{i}" for i in range(90)], name="user")
    items = Vocabulary(list(range(24)), name="item")
    Dataset(matrix, users, items, split=weak_generalization(matrix, 0.2, seed=0)).save(
        tmp_path / "ds"
    )
    config = tmp_path / "multdae.toml"
    config.write_text("latent_dim = 8\n[loop]\nepochs = 1\nbatch_size = 32\nthreads = 1\n")
    base = ["train", str(tmp_path / "ds"), "--model", "multdae", "--config", str(config),
            "--metric", "ndcg@5", "--no-progress"]  # fmt: skip
    runner = CliRunner()
    result = runner.invoke(app, [*base, "--out", str(tmp_path / "m"), "--set", "precision=bf16"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "m").exists()
    with pytest.raises(RecvaeError, match="precision: expected one of 'fp32', 'tf32', 'bf16'"):
        runner.invoke(app, [*base, "--out", str(tmp_path / "bad"), "--set", "precision=half"],
                      catch_exceptions=False)  # fmt: skip
    assert not (tmp_path / "bad").exists()


def test_loop_config_built_directly_refuses_an_unknown_precision():
    with pytest.raises(ValueError, match="precision must be fp32, tf32 or bf16, got 'fp16'"):
        LoopConfig(precision="fp16")


def test_bf16_with_the_sampled_softmax_trains_finite_numbers():
    model = MultVAE(precision="bf16", softmax="sampled", negatives=8, **SMALL).fit(block_matrix())
    assert all(np.isfinite(r["loss"]) for r in model.history)
    assert np.isfinite(model.score(block_matrix()[:5])).all()
