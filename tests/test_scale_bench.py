"""benchmarks/scale_bench.py's report: numbers land in the right cells, growth slopes are the
log-log ones, and cells without a measurement say why (no training here: fake step results)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from bench_loader import load_benchmark


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("scale_bench")


def _history(seconds: float, ndcgs: list[float]) -> list[dict]:
    return [
        {"epoch": e, "train_seconds": seconds, "train_cpu_seconds": 2 * seconds,
         "ndcg@20": v, "recall@20": 2 * v}
        for e, v in enumerate(ndcgs, start=1)
    ]  # fmt: skip


def test_slope_is_the_log_log_growth(bench) -> None:
    assert bench.slope([1e4, 1e6], [10.0, 1000.0]) == pytest.approx(1.0)
    assert bench.slope([1e4, 1e5, 1e6], [3.0, 5.0, 3.0]) == pytest.approx(0.0)
    assert bench.slope([1e4], [1.0]) is None


def test_best_within_a_time_budget(bench) -> None:
    history = _history(10.0, [0.1, 0.3, 0.2])
    assert bench.best_within(history, 25.0) == (0.3, 2)
    assert bench.best_within(history, 9.0) is None


def test_report_cells(bench, tmp_path: Path) -> None:
    results = {
        "synth-10k": {"wall_seconds": 30.0, "peak_rss_gib": 1.0},
        "ingest-10k": {"wall_seconds": 12.0, "peak_rss_gib": 2.0, "shape": [200, 10000],
                       "nnz": 1234},
        "train-als-10k": {"fit_seconds": 10.0, "peak_rss_gib": 1.0, "exit_code": 0},
        "train-als-1M": {"fit_seconds": 1000.0, "peak_rss_gib": 4.0, "exit_code": 0},
        "export-als-1M": {"users_per_second": 50.0, "peak_rss_gib": 3.0, "users": 2000,
                          "item_block": 50000, "exit_code": 0},
        "train-multvae-full-100k": {"partial": True, "full_epoch_seconds_extrapolated": 800.0,
                                    "seconds_per_batch": 2.0, "batches_timed": 40,
                                    "peak_rss_gib": 3.0},
        "estimates": {"estimate_gib": {"multvae-full-1M": 21.85}},
        "gowalla-full-e6-seed0": {"data": "g", "epochs": 2, "settings": ["softmax=full"],
                                  "history": _history(20.0, [0.05, 0.07])},
        "gowalla-sampled-e6-seed0": {"data": "g", "epochs": 2, "settings": ["softmax=sampled"],
                                     "history": _history(10.0, [0.06, 0.08])},
    }  # fmt: skip
    bench.write_report(results, tmp_path)
    report = (tmp_path / "report.md").read_text()
    assert "| 10,000 | 30.0 | 1.00 | 12.0 | 2.00 | 200 x 10,000 | 1,234 |" in report
    als_1m = "| ALS (implicit) | 1,000,000 | 1,000.0 | fit | 4.00 |  | 50 | 2,000 | 50,000 | 3.00 |"
    assert als_1m in report
    assert "epoch = 2.00 s/batch measured over 40 batches x 400" in report
    assert "not run: its own memory estimate, 21.9 GiB, is over the 16 GiB target" in report
    assert "| ALS (implicit) | 10k, 1M | 1.00 | 0.30 |" in report  # 100x time, 4x memory
    assert "sampled is **2.0x faster per epoch**" in report
    assert "At equal epochs (2): NDCG@20 full 0.0700, sampled 0.0800." in report
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["steps"]["train-als-1M"]["fit_seconds"] == 1000.0
    assert (tmp_path / "scale.png").stat().st_size > 0
