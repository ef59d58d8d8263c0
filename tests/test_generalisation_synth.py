"""benchmarks/generalisation_synth.py: its shapes, split, paired comparison and report on tiny
synthetic data (no model is trained here)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.sparse as sp
from bench_loader import load_benchmark


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("generalisation_synth")


def test_every_set_is_registered_with_the_generalisation_steps(bench):
    for name, spec in bench.SETS.items():
        assert bench.GEN.DATASETS[name]["ingest"] is spec["ingest"]
        assert bench.GEN.recall_name(name) == "recall@20"  # held-out users: the paper's recall
        assert bench.GEN.DATASETS[name].get("ease") is None  # no known settings: grid search


def test_shape_stats_by_hand(bench):
    # 3 users x 4 items; item 0 seen 3 times, item 1 twice, item 2 once, item 3 never
    matrix = sp.csr_matrix(np.array([[1, 1, 1, 0], [1, 1, 0, 0], [1, 0, 0, 0]], dtype=np.float32))
    stats = bench.shape_stats(matrix)
    assert stats["users"] == 3 and stats["items"] == 4 and stats["interactions"] == 6
    assert stats["density"] == 0.5
    assert stats["per_user_mean"] == 2.0 and stats["per_user_median"] == 2.0
    assert stats["per_item_median"] == 1.5 and stats["items_unseen"] == 1
    assert stats["top_1pct_items_share"] == 0.5  # the top item (1 of 4, at least one) has 3 of 6


def test_the_split_holds_test_users_out_whole_and_keeps_every_interaction(bench):
    rng = np.random.default_rng(0)
    matrix = sp.random(60, 40, density=0.25, random_state=rng, format="csr", dtype=np.float32)
    matrix.data[:] = 1.0
    matrix = sp.csr_matrix(matrix + sp.eye(60, 40, format="csr", dtype=np.float32))
    matrix.data[:] = 1.0
    dev, test, kept = bench.split(matrix, 10)
    assert dev.shape == (50, 40) and len(kept) == 50
    assert set(kept).isdisjoint(test.users)
    assert (dev != matrix[kept]).nnz == 0
    assert test.history.nnz + test.heldout.nnz == matrix[test.users].nnz
    assert test.history.multiply(test.heldout).nnz == 0  # history and held-out are disjoint
    assert bench.fingerprint(matrix) == bench.fingerprint(matrix.copy())
    assert bench.fingerprint(matrix) != bench.fingerprint(dev)


def test_the_synthetic_log_ingests_under_its_filter(bench, tmp_path, monkeypatch):
    monkeypatch.setattr(bench, "WORK", tmp_path / "work")
    monkeypatch.setattr(bench, "TEST_USERS", 20)
    tiny = {"mimics": "tiny", "ingest": bench.FILM,
            "synth": {"n_users": 200, "n_items": 80, "n_interactions": 6000,
                      "popularity_exponent": 1.2, "activity_sigma": 1.0,
                      "topic_concentration": 0.1}}  # fmt: skip
    monkeypatch.setitem(bench.SETS, "tiny", tiny)
    dev, test, shape = bench.load("tiny")
    assert (tmp_path / "work").is_dir() and len(list((tmp_path / "work").glob("*.parquet"))) == 1
    assert shape["users"] == shape["dev_users"] + 20 and shape["items"] <= 80
    assert shape["dev_interactions"] == dev.matrix.nnz
    assert shape["interactions"] == dev.matrix.nnz + test.history.nnz + test.heldout.nnz
    assert shape["interactions"] < 6000  # ratings <= 3.5 and repeats dropped
    per_user = np.diff(dev.matrix.indptr)
    assert per_user.min() >= 5  # min_user_count 5
    again = bench.load("tiny")[2]
    assert again["fingerprint"] == shape["fingerprint"]  # same settings and seed, same data


def _step(model, ndcg, recall, users=(0, 1, 2, 3), fingerprint="f", **fields):
    step = {"model": model, "per_user": {"recall@20": recall, "ndcg@20": ndcg},
            "test_user_ids": list(users), "data": {"fingerprint": fingerprint},
            "winner": "ease-l2-500"}  # fmt: skip
    return {**step, **fields}


def test_compare_pairs_users_and_says_where_auto_lost(bench):
    steps = {
        "auto": _step("auto", [0.5, 0.4, 0.3, 0.2], [1.0, 0.5, 0.5, 0.0]),
        # EASE: auto minus EASE is +0.1 for every user: a clear win (SE 0)
        "ease": _step("ease", [0.4, 0.3, 0.2, 0.1], [1.0, 0.5, 0.5, 0.0]),
        # ALS: auto below on ndcg by 0.05 on average
        "als": _step("als", [0.6, 0.4, 0.4, 0.2], [1.0, 0.5, 0.5, 0.0]),
    }
    paired, losses = bench.compare(steps)
    assert paired["auto vs ease ndcg@20"]["mean"] == pytest.approx(0.1)
    assert paired["auto vs als ndcg@20"]["mean"] == pytest.approx(-0.05)
    expected_se = np.std([-0.1, 0.0, -0.1, 0.0], ddof=1) / 2
    assert paired["auto vs als ndcg@20"]["stderr"] == pytest.approx(expected_se)
    assert paired["auto vs ease recall@20"]["mean"] == 0.0
    lost = [line for line in losses if "LOST" in line]
    assert any("tuned ALS on ndcg@20: auto LOST by 0.0500" in line for line in lost)
    assert any("tuned EASE on recall@20" in line for line in lost)  # a tie counts as lost
    assert not any("EASE on ndcg@20" in line for line in losses)


def test_compare_refuses_different_test_users_or_data(bench):
    auto = _step("auto", [0.5, 0.4], [1.0, 0.5], users=(0, 1))
    with pytest.raises(ValueError, match="different test users"):
        bench.compare({"auto": auto, "ease": _step("ease", [0.5, 0.4], [1.0, 0.5], users=(0, 2))})
    with pytest.raises(ValueError, match="different data"):
        bench.compare({"auto": auto, "als": _step("als", [0.5, 0.4], [1.0, 0.5], users=(0, 1),
                                                  fingerprint="g")})  # fmt: skip


def test_report_from_step_files(bench, tmp_path, monkeypatch):
    monkeypatch.setattr(bench, "REPORT", tmp_path)
    (tmp_path / "steps").mkdir()
    data = {"fingerprint": "f", "users": 10, "items": 5, "interactions": 30, "density": 0.6,
            "per_user_mean": 3.0, "per_user_median": 3.0, "top_1pct_items_share": 0.2}  # fmt: skip
    run = {"run_info": {"git_commit": "abcdef0123"}}
    steps = {
        "auto": _step("auto", [0.5, 0.4, 0.3, 0.2], [1.0, 0.5, 0.5, 0.0], data=data, **run,
                      seconds=100.0, selection_seconds=70.0, refit_seconds=30.0,
                      budget_seconds=300.0, budget="5m0s (scaled with the data)",
                      metric="ndcg@100", candidates=[{"label": "ease-l2-500", "status": "fitted",
                      "metrics": {"ndcg@100": 0.31}, "fit_seconds": 2.0}]),
        "ease": _step("ease", [0.4, 0.3, 0.2, 0.1], [1.0, 0.5, 0.5, 0.0], data=data, **run,
                      settings={"l2": 50.0}, seconds=1.5, grid_seconds=12.0),
    }  # fmt: skip
    for name, step in steps.items():
        step = {**step, "dataset": "msd-like", "step": name,
                "test": {m: float(np.mean(v)) for m, v in step["per_user"].items()}}  # fmt: skip
        (tmp_path / "steps" / f"msd-like-{name}.json").write_text(json.dumps(step))
    bench.report(None)
    text = (tmp_path / "report.md").read_text()
    assert "| msd-like | auto | ease-l2-500 | 0.5000 | 0.3500 | 100 (selection 70" in text
    assert '| msd-like | ease | {"l2": 50.0} | 0.5000 | 0.2500 | 1.5 refit + 12.0 grid |' in text
    assert "| msd-like | auto | ease | ndcg@20 | +0.1000 |" in text
    assert "| msd-like | als: not run |" in text
    assert "| ml20m-like | not run |" in text
    assert "auto LOST" in text  # recall@20 is a tie
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["sets"]["msd-like"]["paired"]["auto vs ease ndcg@20"]["mean"] == pytest.approx(
        0.1
    )
    assert "per_user" not in results["sets"]["msd-like"]["steps"]["auto"]
    assert (tmp_path / "paired-differences.png").stat().st_size > 0


def test_grid_edge_names_settings_at_the_end_of_their_range(bench):
    settings = {"factors": 512, "regularization": 100.0, "alpha": 3.0, "iterations": 15}
    assert bench.grid_edge("als", settings) == [
        "factors=512 (highest tried)",
        "alpha=3 (lowest tried)",
    ]
    assert bench.grid_edge("ease", {"l2": 500.0}) == []
    assert bench.grid_edge("ease", {"l2": 10.0}) == ["l2=10 (lowest tried)"]
