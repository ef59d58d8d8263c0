"""The device setting: one resolver, one error line when CUDA is asked for but absent (exit 2
through the CLI, before any work), `--device` on train/evaluate/recommend/tune, the TOML key,
and artifacts that load wherever the loading run is."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from typer.testing import CliRunner

from recvae import device as devices
from recvae.cli import app, main
from recvae.data.dataset import Dataset
from recvae.data.split import weak_generalization
from recvae.data.vocab import Vocabulary
from recvae.errors import RecvaeError
from recvae.models import load_model
from recvae.models.vae import MultDAE

NO_CUDA = "requested but this torch build/machine has no CUDA (torch.cuda.is_available() is False)"


@pytest.fixture(autouse=True)
def own_run_device():
    """`--device` sets the process's run device: leave none behind for later tests."""
    yield
    devices.set_run_device(None)


@pytest.fixture
def no_cuda(monkeypatch):
    """A machine without CUDA, whatever this one has."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory):
    rng = np.random.default_rng(0)
    rows, cols = [], []
    for user in range(60):
        items = rng.choice(6, size=4, replace=False) + 6 * (user % 3)
        rows += [user] * 4
        cols += items.tolist()
    matrix = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(60, 18))
    path = tmp_path_factory.mktemp("device") / "ds"
    Dataset(
        matrix, Vocabulary([f"u{i}" for i in range(60)], name="user"),
        Vocabulary(list(range(18)), name="item"), split=weak_generalization(matrix, 0.2, seed=0),
    ).save(path)  # fmt: skip
    return path


def test_resolve_device_names_cpu_auto_and_refuses_cuda_without_it(no_cuda):
    assert devices.resolve_device("cpu") == torch.device("cpu")
    assert devices.resolve_device("auto") == torch.device("cpu")
    for setting in ("cuda", "cuda:1"):
        with pytest.raises(RecvaeError) as error:
            devices.resolve_device(setting)
        assert str(error.value) == f"device '{setting}' {NO_CUDA}; use --device cpu or auto"
    with pytest.raises(RecvaeError, match="device must be auto, cpu, cuda or cuda:N"):
        devices.resolve_device("gpu")


def test_run_device_overrides_each_models_own_setting(no_cuda):
    assert devices.model_device("cpu") == torch.device("cpu")
    with pytest.raises(RecvaeError, match="no CUDA"):
        devices.model_device("cuda")
    devices.set_run_device("cpu")
    assert devices.model_device("cuda") == torch.device("cpu")  # --device cpu wins


@pytest.mark.parametrize("command", ["train", "evaluate", "recommend", "tune"])
def test_device_cuda_without_cuda_is_one_line_and_exit_2(command, no_cuda, dataset_dir, tmp_path,
                                                         monkeypatch, capsys):  # fmt: skip
    out = tmp_path / "out"
    args = {
        "train": ["train", str(dataset_dir), "--out", str(out)],
        "evaluate": ["evaluate", str(tmp_path / "model"), "--dataset", str(dataset_dir)],
        "recommend": ["recommend", str(tmp_path / "model"), "--history", str(dataset_dir),
                      "--out", str(out)],
        "tune": ["tune", str(dataset_dir), "--out", str(out)],
    }[command]  # fmt: skip
    monkeypatch.setenv("RECVAE_LOG_LEVEL", "warning")
    monkeypatch.setattr(sys, "argv", ["recvae", *args, "--device", "cuda"])
    with pytest.raises(SystemExit) as exited:
        main()
    printed = capsys.readouterr()
    assert exited.value.code == 2
    assert printed.err.strip().splitlines() == [
        f"error: device 'cuda' {NO_CUDA}; use --device cpu or auto"
    ]
    assert not out.exists()


def test_train_on_cpu_and_auto_give_the_same_model_and_record_the_device(dataset_dir, tmp_path):
    runner = CliRunner()
    common = ["--model", "multdae", "--epochs", "2", "--threads", "1", "--no-progress",
              "--metric", "ndcg@5"]  # fmt: skip
    for name in ("cpu", "auto"):
        result = runner.invoke(
            app, ["train", str(dataset_dir), "--out", str(tmp_path / name), *common,
                  "--device", name], catch_exceptions=False,
        )  # fmt: skip
        assert result.exit_code == 0, result.output
    a, b = load_model(tmp_path / "cpu"), load_model(tmp_path / "auto")
    for (key, left), right in zip(a.module.state_dict().items(), b.module.state_dict().values(),
                                  strict=True):  # fmt: skip
        assert torch.equal(left, right), key
    config = json.loads((tmp_path / "auto" / "model.json").read_text())["config"]
    assert config["loop"]["device"] == "auto"


def test_toml_loop_device_is_honoured_and_checked(dataset_dir, tmp_path, no_cuda):
    config = tmp_path / "dae.toml"
    config.write_text('[loop]\nepochs = 1\nthreads = 1\ndevice = "cuda"\n')
    result = CliRunner().invoke(
        app, ["train", str(dataset_dir), "--model", "multdae", "--config", str(config),
              "--out", str(tmp_path / "m"), "--no-progress", "--metric", "ndcg@5"],
    )  # fmt: skip
    assert isinstance(result.exception, RecvaeError)
    assert NO_CUDA in str(result.exception)
    assert not (tmp_path / "m").exists()


def test_a_saved_model_loads_on_the_cpu_and_runs_where_the_loading_run_says(tmp_path):
    train = sp.random(40, 12, density=0.3, format="csr", dtype=np.float32, random_state=1)
    train.data[:] = 1.0
    model = MultDAE(epochs=1, threads=1, latent_dim=4).fit(train)
    model.save(tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    assert loaded.device == "auto"  # not the device it was trained on
    assert all(p.device.type == "cpu" for p in loaded.module.parameters())
    np.testing.assert_allclose(loaded.score(train), model.score(train), rtol=1e-6)


def test_ease_has_a_device_key_checked_and_honoured_when_scoring(no_cuda, tmp_path):
    from recvae.models import build_model

    with pytest.raises(RecvaeError, match="device must be auto, cpu, cuda or cuda:N"):
        build_model("ease", {"device": "gpu"})
    train = sp.random(30, 12, density=0.3, format="csr", random_state=0, dtype=np.float32)
    model = build_model("ease", {"device": "cuda", "l2": 10.0}).fit(train)  # fit: on the CPU
    with pytest.raises(RecvaeError) as error:
        model.score(train)
    assert str(error.value) == f"device 'cuda' {NO_CUDA}; use --device cpu or auto"
    devices.set_run_device("cpu")  # --device cpu wins over the model's own setting
    scores = model.score_tensor(train)
    assert scores.device == torch.device("cpu")
    np.testing.assert_allclose(scores.numpy(), train @ model.weights, rtol=1e-5, atol=1e-6)
    model.save(tmp_path / "ease")
    assert json.loads((tmp_path / "ease" / "model.json").read_text())["config"]["device"] == "cuda"
    assert load_model(tmp_path / "ease").device == "auto"  # a saved model runs where the run is


def test_train_ease_with_device_records_it(dataset_dir, tmp_path):
    result = CliRunner().invoke(
        app, ["train", str(dataset_dir), "--model", "ease", "--out", str(tmp_path / "e"),
              "--device", "cpu", "--no-progress", "--metric", "ndcg@5"], catch_exceptions=False,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    config = json.loads((tmp_path / "e" / "model.json").read_text())["config"]
    assert config["device"] == "cpu"
