"""GPU checks (`pytest -m gpu`), skipped where torch sees no CUDA; and checks of
benchmarks/gpu_bench.py that run anywhere (its refusal without CUDA, a tiny CPU dry run)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from bench_loader import load_benchmark

from recvae.device import resolve_device, set_run_device
from recvae.models import load_model
from recvae.models.recvae_model import RecVAE
from recvae.models.vae import MultDAE, MultVAE

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def toy_matrix() -> sp.csr_matrix:
    rng = np.random.default_rng(0)
    rows = np.repeat(np.arange(90), 6)
    cols = (rng.integers(0, 10, size=len(rows)) + 10 * (rows % 3)) % 30
    matrix = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(90, 30))
    matrix.sum_duplicates()
    matrix.data[:] = 1.0
    return matrix


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("cls", [MultVAE, MultDAE, RecVAE])
def test_training_and_scoring_on_cuda_match_the_cpu(cls, tmp_path):
    train = toy_matrix()
    settings = {"epochs": 3, "seed": 1, "threads": 1, "batch_size": 32}
    on_gpu = cls(**settings, device="cuda").fit(train)
    on_cpu = cls(**settings, device="cpu").fit(train)
    assert next(on_gpu.module.parameters()).device.type == "cuda"
    gpu_scores, cpu_scores = on_gpu.score(train), on_cpu.score(train)
    assert gpu_scores.dtype == np.float32 and gpu_scores.shape == train.shape
    # the same randomness (drawn on the CPU); only float rounding differs between devices
    np.testing.assert_allclose(gpu_scores, cpu_scores, atol=2e-3, rtol=1e-3)
    on_gpu.save(tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    set_run_device("cpu")
    try:
        np.testing.assert_allclose(loaded.score(train), gpu_scores, atol=1e-4, rtol=1e-4)
    finally:
        set_run_device(None)


@pytest.mark.gpu
@needs_cuda
def test_auto_picks_cuda_when_present():
    assert resolve_device("auto").type == "cuda"
    assert resolve_device("cuda:0") == torch.device("cuda", 0)


def load_bench():
    return load_benchmark("gpu_bench")


def test_gpu_bench_refuses_without_cuda_in_one_line(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    bench = load_bench()
    assert bench.main(["--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "error: device 'cuda' requested but this torch build/machine has no CUDA "
        "(torch.cuda.is_available() is False); use --device cpu or auto"
    ]
    assert bench.main(["--device", "cpu", "--out", str(tmp_path)]) == 2  # cpu only as a check
    assert list(tmp_path.iterdir()) == []


def test_gpu_bench_dry_run_on_the_cpu_writes_a_dated_report(tmp_path):
    bench = load_bench()
    args = ["--device", "cpu", "--scale", "0.0004", "--epochs", "1", "--threads", "1",
            "--chunk-size", "100", "--out", str(tmp_path)]  # fmt: skip
    try:
        assert bench.main(args) == 0
    finally:
        set_run_device(None)
    (report,) = tmp_path.iterdir()
    assert report.name.startswith("gpu-")
    results = json.loads((report / "results.json").read_text())["results"]
    assert [r["case"] for r in results] == ["ml20m", "1m"]
    for r in results:
        assert r["export_users"] == r["users"] and r["export_rows"] > 0
        assert r["epoch_seconds"] > 0 and r["matmul_flops_per_second"] > 0
    assert "| ml20m |" in (report / "report.md").read_text()


# ---- top-K and masking on the device -----------------------------------------------------------


@pytest.mark.gpu
@needs_cuda
def test_top_k_and_masking_on_cuda_equal_the_cpu_ties_included():
    from recvae.topk import mask_seen_tensor, top_k_tensor

    rng = np.random.default_rng(0)
    scores = rng.integers(0, 5, size=(300, 2000)).astype(np.float32)  # many ties at every cut
    history = sp.random(300, 2000, density=0.05, format="csr", random_state=0, dtype=np.float32)
    on_cpu = mask_seen_tensor(torch.from_numpy(scores.copy()), history)
    on_gpu = mask_seen_tensor(torch.from_numpy(scores.copy()).cuda(), history)
    for k in (1, 20, 100, 2000):
        cpu_indices, cpu_values = top_k_tensor(on_cpu, k)
        gpu_indices, gpu_values = top_k_tensor(on_gpu, k)
        assert gpu_indices.device.type == "cuda"
        assert torch.equal(gpu_indices.cpu(), cpu_indices)
        assert torch.equal(gpu_values.cpu(), cpu_values)


def _valid_top_k(export, full_scores, history, k, atol):
    """Each user's exported items score (on the CPU) within `atol` of the CPU's own top k."""
    import polars as pl

    scores = np.array(full_scores)
    scores[history.toarray() > 0] = -np.inf
    best = -np.sort(-scores, axis=1)[:, :k]
    for row in range(history.shape[0]):
        items = export.filter(pl.col("user_id") == f"u{row}")["item_id"].to_list()
        assert len(items) == k
        got = scores[row, [int(item[1:]) for item in items]]
        np.testing.assert_allclose(got, best[row], atol=atol)


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("name", ["multvae", "ease"])
@pytest.mark.parametrize("block", [None, 64])
def test_recommend_scores_masks_and_ranks_on_cuda(name, block, monkeypatch):
    """The scores stay on the GPU (score_tensor hands over a CUDA tensor), masking and top-K
    run there, and the export is a valid top-K of the CPU's scores up to float rounding."""
    import polars as pl

    from recvae.data.vocab import Vocabulary
    from recvae.models import build_model
    from recvae.scoring import ScoringOptions, UsersToScore, recommend_chunks

    train = toy_matrix()
    settings = {"epochs": 2, "threads": 1, "seed": 0} if name == "multvae" else {}
    model = build_model(name, {**settings, "device": "cuda"}).fit(train)
    devices = []
    whole, blocks = model.score_tensor, model.score_tensor_blocks

    def score_tensor(history):
        scores = whole(history)
        devices.append(scores.device.type)
        return scores

    def score_tensor_blocks(history, block_size):
        for start, part in blocks(history, block_size):
            devices.append(part.device.type)
            yield start, part

    monkeypatch.setattr(model, "score_tensor", score_tensor)
    monkeypatch.setattr(model, "score_tensor_blocks", score_tensor_blocks)
    items = Vocabulary([f"i{j}" for j in range(train.shape[1])], name="item")
    batch = UsersToScore(pl.Series("user", [f"u{i}" for i in range(90)]), train)
    options = ScoringOptions(k=10, chunk_size=32, item_block=block)
    popularity = np.zeros(train.shape[1], np.float32)
    export = pl.concat(list(recommend_chunks(model, batch, items, options, "v", popularity)))
    assert devices and set(devices) == {"cuda"}
    set_run_device("cpu")
    try:
        cpu_scores = model.score(train)
    finally:
        set_run_device(None)
    _valid_top_k(export, cpu_scores, train, 10, atol=2e-3)


@pytest.mark.gpu
@needs_cuda
def test_evaluate_on_cuda_matches_the_cpu():
    from recvae.data.split import Holdout
    from recvae.evaluate import evaluate

    train = toy_matrix().tocoo()
    shown = np.random.default_rng(0).random(train.nnz) < 0.5
    part = [
        sp.csr_matrix((train.data[m], (train.row[m], train.col[m])), shape=train.shape)
        for m in (shown, ~shown)
    ]
    holdout = Holdout(part[0], part[1], np.arange(train.shape[0], dtype=np.int64))
    model = MultVAE(epochs=2, threads=1, seed=0, device="cuda").fit(train.tocsr())
    on_gpu = evaluate(model, holdout, ks=[5])
    set_run_device("cpu")
    try:
        on_cpu = evaluate(model, holdout, ks=[5])
    finally:
        set_run_device(None)
    assert abs(on_gpu["ndcg@5"] - on_cpu["ndcg@5"]) < 0.02


@pytest.mark.gpu
@needs_cuda
def test_ease_weights_go_to_the_gpu_only_when_they_fit(monkeypatch):
    from recvae.models import ease as ease_module
    from recvae.models.ease import EASE

    train = toy_matrix()
    model = EASE(l2=10.0, device="cuda").fit(train)
    assert model.score_tensor(train).device.type == "cuda"
    np.testing.assert_allclose(model.score(train), train @ model.weights, rtol=1e-4, atol=1e-4)
    monkeypatch.setattr(ease_module, "DEVICE_SHARE", 0.0)  # as if the GPU were full
    model.fit(train)  # drops the device copy
    assert model.score_tensor(train).device.type == "cpu"
