"""GPU checks (`pytest -m gpu`), skipped where torch sees no CUDA; and checks of
benchmarks/gpu_bench.py that run anywhere (its refusal without CUDA, a tiny CPU dry run)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch

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
    path = Path(__file__).parents[1] / "benchmarks" / "gpu_bench.py"
    spec = importlib.util.spec_from_file_location("gpu_bench", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_bench"] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


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
