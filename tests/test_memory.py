"""The memory estimate logged at a run's start and the refusal of runs that would not fit
(recvae.models.memory), with the available memory injected."""

from __future__ import annotations

import logging
import sys

import numpy as np
import pytest
import scipy.sparse as sp

from recvae.cli import main
from recvae.data.dataset import Dataset
from recvae.data.vocab import Vocabulary
from recvae.errors import RecvaeError
from recvae.models.memory import GIB, MemoryEstimate, check_fits
from recvae.models.recvae_model import RecVAE
from recvae.models.vae import MultDAE, MultVAE

FLOAT = 4


def _train(n_users: int = 20, n_items: int = 10) -> sp.csr_matrix:
    dense = np.zeros((n_users, n_items), np.float32)
    for user in range(n_users):
        dense[user, [user % n_items, (user + 3) % n_items]] = 1.0
    return sp.csr_matrix(dense)  # 2 items per user, 40 interactions


def _parts(estimate: MemoryEstimate) -> dict[str, int]:
    return dict(estimate.parts)


def test_dense_adam_full_softmax_estimate_by_hand():
    """Mult-DAE 10 -> 4 -> 10: 10*4 + 4 + 4*10 + 10 = 94 floats; batches of 5 users."""
    parts = _parts(MultDAE(latent_dim=4, batch_size=5).memory_estimate(_train()))
    assert parts["weights"] == 94 * FLOAT
    assert parts["Adam state"] == 2 * 94 * FLOAT
    assert parts["gradients"] == 94 * FLOAT
    assert parts["batch"] == 2 * 5 * 10 * FLOAT  # logits and log-softmax, 5 users x 10 items
    assert parts["validation"] == 0 and parts["best weights"] == 0
    assert parts["data"] == 40 * (4 + 8) + 21 * 8


def test_sampled_lazy_adam_estimate_counts_rows_and_candidates_only():
    """1000 items, batches of 5 users with 2 items each: at most 10 distinct items, plus 3
    negatives = 13 candidates; the gradients are the 10 first-layer rows, the 13 output
    columns and their biases, and the small first-layer bias."""
    train = _train(20, 1000)
    model = MultDAE(latent_dim=4, batch_size=5, softmax="sampled", negatives=3)
    parts = _parts(model.memory_estimate(train))
    assert parts["gradients"] == (10 * 4 + 4 + 13 * (4 + 1)) * FLOAT
    assert parts["batch"] == (3 * 5 * 13 + 4 * 13) * FLOAT
    dense = _parts(
        MultDAE(latent_dim=4, batch_size=5, softmax="sampled", negatives=3, optimizer="adam")
        .memory_estimate(train)
    )  # fmt: skip
    assert dense["gradients"] == parts["weights"]  # every parameter's gradient, dense


def test_a_million_item_mult_vae_estimate_without_allocating_it():
    train = sp.csr_matrix(
        (np.ones(4, np.float32), ([0, 1, 2, 3], [0, 5, 999_999, 7])), shape=(4, 1_000_000)
    )
    parts = _parts(MultVAE(softmax="sampled").memory_estimate(train))
    floats = 1_000_000 * 600 + 600 + 600 * 400 + 400 + 200 * 600 + 600 + 600 * 1_000_000 + 10**6
    assert parts["weights"] == floats * FLOAT  # about 4.5 GiB
    assert parts["Adam state"] == 2 * floats * FLOAT


def test_validation_and_the_best_weights_copy_are_counted():
    from recvae.data.split import weak_generalization

    split = weak_generalization(_train(40, 10), 0.25, seed=0)
    model = MultDAE(latent_dim=4, eval_batch_size=3)
    parts = _parts(model.memory_estimate(split.train, split.valid))
    assert parts["validation"] == 2 * 3 * 10 * FLOAT
    assert parts["best weights"] == parts["weights"]


def test_the_estimate_is_logged_as_one_line_at_the_start_of_a_fit(caplog):
    with caplog.at_level(logging.INFO, logger="recvae.models.memory"):
        MultDAE(latent_dim=4, epochs=1, threads=1).fit(_train())
    lines = [r.getMessage() for r in caplog.records if "memory estimate" in r.getMessage()]
    assert len(lines) == 1
    assert lines[0].startswith("multdae: memory estimate 0.00 GiB (weights 0.00, Adam state")


@pytest.mark.parametrize(
    ("model", "advice"),
    [
        (MultVAE(epochs=1), 'softmax = "sampled"'),
        (MultVAE(epochs=1, softmax="sampled", optimizer="adam"), 'optimizer = "lazy_adam"'),
        (RecVAE(epochs=1), "smaller hidden and latent sizes"),
    ],
)
def test_a_fit_that_does_not_fit_is_refused_before_allocating(monkeypatch, model, advice):
    monkeypatch.setattr("recvae.models.memory.available_memory_bytes", lambda: 1000)
    with pytest.raises(RecvaeError) as error:
        model.fit(_train())
    message = str(error.value)
    assert f"{model.name}: memory estimate" in message
    assert "only 0.00 GiB is available" in message and advice in message
    assert "filter rare items" in message or "fewer items" in message
    assert model.module is None  # refused before the module was built


def test_als_estimate_by_hand_and_refusal(monkeypatch):
    from recvae.models.als import ALS

    train = _train(20, 10)  # 40 interactions
    model = ALS(factors=3, iterations=1, num_threads=1)
    parts = _parts(model.memory_estimate(train))
    assert parts == {"factors": (20 + 10) * 3 * FLOAT, "data": 2 * (40 * 8 + 21 * 4)}
    monkeypatch.setattr("recvae.models.memory.available_memory_bytes", lambda: 100)
    with pytest.raises(RecvaeError, match=r"als: memory estimate .* fewer factors"):
        model.fit(train)


def test_skip_memory_check_runs_anyway(monkeypatch):
    monkeypatch.setattr("recvae.models.memory.available_memory_bytes", lambda: 1000)
    monkeypatch.setenv("RECVAE_SKIP_MEMORY_CHECK", "1")
    assert MultDAE(latent_dim=4, epochs=1, threads=1).fit(_train()).module is not None


def test_check_fits_compares_with_the_injected_available_memory():
    estimate = MemoryEstimate("m", (("weights", 3 * GIB), ("batch", GIB)), "to need less: x")
    check_fits(estimate, available=4 * GIB)  # exactly fits
    with pytest.raises(RecvaeError, match=r"m: memory estimate 4\.00 GiB \(weights 3\.00, "
                       r"batch 1\.00 GiB\), but only 3\.50 GiB is available .*to need less: x"):
        check_fits(estimate, available=int(3.5 * GIB))


def test_cli_train_refusal_is_one_clear_error_with_exit_2(monkeypatch, tmp_path, capsys):
    matrix = _train(30, 12)
    Dataset(matrix, Vocabulary([f"u{i}" for i in range(30)], name="user"),
            Vocabulary(list(range(12)), name="item")).save(tmp_path / "ds")  # fmt: skip
    monkeypatch.setattr("recvae.models.memory.available_memory_bytes", lambda: 1000)
    monkeypatch.setenv("RECVAE_LOG_LEVEL", "warning")
    monkeypatch.setattr(sys, "argv", ["recvae", "train", str(tmp_path / "ds"), "--out",
                        str(tmp_path / "m"), "--model", "multvae", "--epochs", "1",
                        "--threads", "1", "--no-progress"])  # fmt: skip
    with pytest.raises(SystemExit) as exited:
        main()
    assert exited.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(errors) == 1 and errors[0].startswith("error: multvae: memory estimate"), errors
    assert "GiB is available" in errors[0] and 'softmax = "sampled"' in errors[0]
    assert not (tmp_path / "m").exists()


def test_export_scoring_estimate_is_chunk_by_block():
    from recvae.export import scoring_estimate

    assert dict(scoring_estimate(50, 1000, 7, None).parts) == {"scores": 2 * 7 * 1000 * FLOAT}
    assert dict(scoring_estimate(50, 1000, 7, 100).parts) == {"scores": 2 * 7 * 100 * FLOAT}
    assert dict(scoring_estimate(3, 1000, 7, 5000).parts) == {"scores": 2 * 3 * 1000 * FLOAT}


def test_an_export_that_does_not_fit_is_refused_naming_item_block(tmp_path, monkeypatch):
    from test_export import make_model_and_dataset

    from recvae.export import ExportRequest, export_top_n

    model_dir, ds, _ = make_model_and_dataset(tmp_path)
    monkeypatch.setattr("recvae.models.memory.available_memory_bytes", lambda: 1000)
    request = ExportRequest(model=model_dir, history=ds, dest=tmp_path / "recs.csv", k=3)
    with pytest.raises(RecvaeError, match=r"recommend: memory estimate .* --item-block N"):
        export_top_n(request)
    assert not (tmp_path / "recs.csv").exists()
    # 2 x 30 users x 1 item x 4 bytes = 240 bytes: fits in 1000
    blocked = ExportRequest(model=model_dir, history=ds, dest=tmp_path / "recs.csv", k=3,
                            item_block=1)  # fmt: skip
    assert export_top_n(blocked).summary.rows > 0


def test_under_torchrun_every_local_rank_counts(monkeypatch):
    estimate = MemoryEstimate("m", (("weights", GIB),), processes=3)
    assert estimate.total == 3 * GIB
    assert estimate.line() == (
        "m: memory estimate 3.00 GiB (weights 1.00 GiB x 3 processes on this machine)"
    )
    seen = []
    monkeypatch.setattr("recvae.models.torch_autoencoder.check_fits", seen.append)
    monkeypatch.setattr("recvae.distributed.launched", lambda: True)
    monkeypatch.setattr("recvae.distributed.init_from_env", lambda device: None)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    MultDAE(latent_dim=4, epochs=1, threads=1).fit(_train())
    assert seen[0].processes == 2 and seen[0].total == 2 * sum(size for _, size in seen[0].parts)


def test_loading_a_saved_autoencoder_keeps_the_loaded_tensors_without_a_copy(
    tmp_path, monkeypatch
):
    """The module takes the tensors safetensors read (one copy of the weights in memory)."""
    import torch

    import recvae.models.torch_autoencoder as autoencoder

    model = MultDAE(latent_dim=4, epochs=1, threads=1).fit(_train())
    model.save(tmp_path / "m")
    original, read = autoencoder.load_tensors, {}

    def spy(path):
        read.update(original(path))
        return read

    monkeypatch.setattr(autoencoder, "load_tensors", spy)
    loaded = MultDAE.load(tmp_path / "m")
    for name, param in loaded.module.state_dict().items():
        assert param.data_ptr() == read[name].data_ptr(), name
        assert torch.equal(param, model.module.state_dict()[name])
    assert all(p.requires_grad for p in loaded.module.parameters())
    np.testing.assert_array_equal(loaded.score(_train()), model.score(_train()))
