"""Protocols, the split command, suite configs, the runner and the report, on synthetic data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from typer.testing import CliRunner

from recvae.bench import report as report_module
from recvae.bench.config import ModelSpec, load_suite, parse_suite
from recvae.bench.data import synthetic_dataset
from recvae.bench.report import write_report
from recvae.bench.runner import candidate_settings, run_suite
from recvae.bench.runs import execute_run
from recvae.cli import app
from recvae.data.dataset import Dataset
from recvae.data.split import Holdout, ProtocolSpec, Split, check_split, make_split
from recvae.data.vocab import Vocabulary
from recvae.errors import RecvaeError
from recvae.evaluate import evaluate
from recvae.models.popularity import Popularity

runner = CliRunner()


def _suite(**overrides) -> dict:
    raw = {
        "name": "tiny",
        "ks": [5, 10, 20],
        "seeds": [0, 1],
        "tune_metric": "ndcg@10",
        "isolate": False,
        "datasets": [
            {
                "name": "syn",
                "synthetic": {"users": 200, "items": 80, "seed": 1},
                "protocol": "strong",
                "valid_users": 40,
                "test_users": 40,
            }
        ],
        "models": [
            {"name": "popularity"},
            {"name": "ease", "grid": {"l2": [1.0, 30.0]}},
            {
                "name": "als",
                "settings": {"iterations": 4, "num_threads": 1},
                "grid": {"factors": [4, 8], "regularization": [0.01, 0.1, 1.0]},
                "search": "coordinate",
            },
        ],
    }
    raw.update(overrides)
    return raw


# --- protocols and the split command ---------------------------------------------------------


def test_strong_split_holds_out_whole_users():
    dataset = synthetic_dataset(users=100, items=40, seed=0)
    split = make_split(dataset, ProtocolSpec("strong", valid_users=10, test_users=15))
    assert split.train.shape == (75, 40)
    assert split.valid.history.shape[0] == 10 and split.test.history.shape[0] == 15
    assert not set(split.valid.users) & set(split.test.users)


def test_weak_split_by_time_holds_out_latest_items():
    matrix = sp.csr_matrix(np.ones((2, 5), np.float32))
    times = sp.csr_matrix(np.array([[1, 2, 3, 4, 5], [5, 4, 3, 2, 1]], np.float64))
    dataset = Dataset(matrix, Vocabulary(np.arange(2)), Vocabulary(np.arange(5)), times=times)
    split = make_split(dataset, ProtocolSpec("weak", heldout_fraction=0.4, by_time=True))
    np.testing.assert_array_equal(split.valid.heldout.toarray(), [[0, 0, 0, 1, 1], [1, 1, 0, 0, 0]])


def test_protocol_errors_are_clear():
    dataset = synthetic_dataset(users=50, items=40)
    with pytest.raises(RecvaeError, match="carries its own split"):
        make_split(dataset, ProtocolSpec("presplit"))
    with pytest.raises(RecvaeError, match="has none"):
        make_split(dataset, ProtocolSpec("weak", by_time=True))
    with pytest.raises(RecvaeError, match="unknown protocol"):
        ProtocolSpec("random")
    with pytest.raises(RecvaeError, match="valid_users"):
        ProtocolSpec("strong")


def test_split_without_heldout_items_is_refused():
    train = sp.csr_matrix(np.eye(4, dtype=np.float32))
    empty = Holdout(train, sp.csr_matrix((4, 4), dtype=np.float32), np.arange(4))
    with pytest.raises(RecvaeError, match="no held-out items"):
        check_split(Split(train=train, valid=empty), 4)
    with pytest.raises(RecvaeError, match="no validation part"):
        check_split(Split(train=train), 4)


def test_split_command_writes_a_split_into_the_dataset(tmp_path):
    synthetic_dataset(users=120, items=40).save(tmp_path / "data")
    args = ["split", str(tmp_path / "data"), "--protocol", "strong"]
    result = runner.invoke(app, [*args, "--valid-users", "20", "--test-users", "10"])
    assert result.exit_code == 0, result.output
    split = Dataset.load(tmp_path / "data").split
    assert split.protocol == "strong" and split.train.shape[0] == 90
    again = runner.invoke(app, [*args, "--valid-users", "20"])
    assert again.exit_code != 0 and "--overwrite" in str(again.exception)
    weak = ["split", str(tmp_path / "data"), "--protocol", "weak", "--overwrite"]
    assert runner.invoke(app, weak).exit_code == 0
    assert Dataset.load(tmp_path / "data").split.protocol == "weak"


# --- suite config -----------------------------------------------------------------------------


def test_unknown_model_setting_and_data_name_are_refused():
    with pytest.raises(RecvaeError, match="unknown model 'svd'"):
        parse_suite(_suite(models=[{"name": "svd"}]))
    with pytest.raises(RecvaeError, match="it accepts alpha, factors"):
        parse_suite(_suite(models=[{"name": "als", "grid": {"rank": [1, 2]}}]))
    with pytest.raises(RecvaeError, match="not data sets of this suite"):
        parse_suite(_suite(), data_paths={"other": Path("x")})
    with pytest.raises(RecvaeError, match="needs k=100"):
        parse_suite(_suite(tune_metric="ndcg@100"))
    with pytest.raises(RecvaeError, match="--data real=PATH"):
        parse_suite(_suite(datasets=[{"name": "real"}]))


def test_coordinate_search_tunes_one_axis_at_a_time():
    spec = ModelSpec("als", {"iterations": 1}, {"a": [1, 2, 3], "b": [10, 20]}, "coordinate")
    scores = {(1, 10): 0.1, (2, 10): 0.3, (3, 10): 0.5, (3, 20): 0.7}
    tried = [
        (settings["iterations"], settings["a"], settings["b"])
        for settings in candidate_settings(spec, lambda s: scores[(s["a"], s["b"])])
    ]
    # starts at each axis's (lower) middle value, a=2 and b=10; a=3 wins, then b=20 wins
    assert tried == [(1, 1, 10), (1, 2, 10), (1, 3, 10), (1, 3, 10), (1, 3, 20)]


# --- runner and report ------------------------------------------------------------------------


def test_suite_runs_tunes_and_reports(tmp_path):
    results = run_suite(parse_suite(_suite()), command="recvae bench tiny.toml")
    summaries = {s.model: s for s in results.summaries}
    assert set(summaries) == {"popularity", "ease", "als"}
    assert all(s.evaluated_on == "test" and not s.error for s in summaries.values())
    # personalised models beat the popularity floor on data with taste structure
    assert summaries["ease"].metrics["ndcg@20"] > summaries["popularity"].metrics["ndcg@20"]
    assert summaries["als"].metrics["ndcg@20"] > summaries["popularity"].metrics["ndcg@20"]
    # the chosen EASE setting is the one with the best validation ndcg@10 among its runs
    ease_runs = [r for r in results.runs if r.model == "ease"]
    assert summaries["ease"].settings == max(ease_runs, key=lambda r: r.valid["ndcg@10"]).settings
    assert summaries["ease"].tuning_runs == 2 and summaries["ease"].seeds == []
    assert summaries["als"].tuning_runs == 4  # coordinate: 2 + 3 - 1 distinct settings
    assert summaries["als"].seeds == [0, 1]

    dest = write_report(results, tmp_path)
    assert dest.name.startswith("tiny-") and len(dest.name) == len("tiny-YYYY-MM-DD")
    report = (dest / "report.md").read_text()
    for needed in ("Git commit", "cores", "fingerprint", "recvae bench tiny.toml", "l2=", "ease"):
        assert needed in report
    saved = json.loads((dest / "results.json").read_text())
    assert saved["datasets"][0]["fingerprint"] == results.datasets[0].fingerprint
    assert {p.name for p in dest.glob("*.png")} == {"syn-metrics.png", "syn-time-quality.png"}


def test_isolated_run_measures_memory_in_its_own_process():
    raw = _suite(isolate=True, seeds=[0], models=[{"name": "popularity"}])
    results = run_suite(parse_suite(raw))
    summary = results.summaries[0]
    assert summary.error is None and summary.metrics["recall@20"] > 0
    assert summary.peak_rss_mib > 0 and summary.added_rss_mib is not None


def test_failed_model_is_reported_not_raised(monkeypatch):
    monkeypatch.setattr("recvae.models.ease.available_memory_bytes", lambda: 1)
    raw = _suite(seeds=[0], models=[{"name": "ease"}, {"name": "popularity"}])
    summaries = run_suite(parse_suite(raw)).summaries
    assert "GiB" in summaries[0].error and summaries[1].error is None


def test_k_larger_than_the_item_count_is_refused():
    with pytest.raises(RecvaeError, match="at most that"):
        run_suite(parse_suite(_suite(ks=[10, 200], tune_metric="ndcg@10")))


def test_model_and_split_with_different_items_is_refused():
    model = Popularity().fit(sp.csr_matrix(np.ones((3, 5), np.float32)))
    history = sp.csr_matrix(np.ones((2, 6), np.float32))
    with pytest.raises(RecvaeError, match="trained on 5"):
        evaluate(model, Holdout(history, history, np.arange(2)), ks=[2])


def test_execute_run_records_valid_history_of_models_that_keep_one(monkeypatch):
    class Recorder(Popularity):
        def fit(self, train, valid=None):
            self.history = [{"epoch": 1, "ndcg@10": 0.1}, {"epoch": 2, "ndcg@10": 0.2}]
            return super().fit(train, valid)

    monkeypatch.setattr("recvae.bench.runs.build_model", lambda name, settings: Recorder())
    split = make_split(synthetic_dataset(), ProtocolSpec("weak"))
    result = execute_run(split, "syn", "popularity", {}, 0, [10])
    assert result.history[-1] == {"epoch": 2, "ndcg@10": 0.2}


def test_bench_command_end_to_end(tmp_path, monkeypatch):
    written = []
    real_write = report_module.write_report
    monkeypatch.setattr(
        report_module,
        "write_report",
        lambda results, out: written.append(results.complete) or real_write(results, out),
    )
    suite = tmp_path / "tiny.toml"
    suite.write_text(
        'name = "tiny"\nks = [10, 20]\nseeds = [0]\nisolate = false\ntune_metric = "ndcg@10"\n'
        '[[datasets]]\nname = "syn"\nprotocol = "weak"\n'
        "synthetic = { users = 100, items = 60 }\n"
        '[[models]]\nname = "popularity"\n'
        '[[models]]\nname = "ease"\ngrid = { l2 = [10.0] }\n'
    )
    result = runner.invoke(app, ["bench", str(suite), "--out", str(tmp_path / "reports")])
    assert result.exit_code == 0, result.output
    assert written == [False, False, True]  # a partial report after each model, then the final
    (report,) = (tmp_path / "reports").iterdir()
    assert (report / "report.md").is_file() and (report / "results.json").is_file()
    missing_data = ["bench", str(suite), "--data", "syn=/nonexistent", "--out", str(tmp_path)]
    missing = runner.invoke(app, missing_data)
    assert missing.exit_code != 0 and "does not exist" in str(missing.exception)
    skipped = runner.invoke(app, [*missing_data, "--skip-missing"])
    assert skipped.exit_code != 0 and "nothing to run" in str(skipped.exception)


def test_isolated_run_killed_by_a_signal_is_reported(monkeypatch, tmp_path):
    import subprocess

    from recvae.bench.runs import run_isolated

    def killed(*args, **kwargs):
        return subprocess.CompletedProcess(args, -9, stdout="", stderr="")

    monkeypatch.setattr("recvae.bench.runs.subprocess.run", killed)
    (tmp_path / "split").mkdir()
    result = run_isolated(tmp_path / "split", "syn", "ease", {"l2": 1.0}, 0, [10])
    assert result.error == "run process was killed by signal 9" and not result.valid


def test_keep_models_saves_every_fit_for_reuse(tmp_path):
    from recvae.bench.runs import model_dir
    from recvae.models import load_model

    raw = _suite(isolate=True, seeds=[0], models=[{"name": "ease", "grid": {"l2": [1.0, 30.0]}}])
    results = run_suite(parse_suite(raw), keep_models=tmp_path / "kept")
    assert results.summaries[0].error is None
    for run in results.runs:
        saved = load_model(model_dir(tmp_path / "kept", "syn", "ease", run.settings, 0))
        history = sp.random(3, 80, density=0.3, format="csr", dtype=np.float32, random_state=0)
        assert saved.score(history).shape == (3, 80)  # the synthetic data set has 80 items
    assert sorted(p.name for p in (tmp_path / "kept" / "syn" / "ease").iterdir()) == [
        "l2=1.0-seed0",
        "l2=30.0-seed0",
    ]


@pytest.mark.parametrize(
    "suite",
    sorted((Path(__file__).parent.parent / "benchmarks" / "suites").glob("*.toml")),
    ids=lambda path: path.stem,
)
def test_every_committed_suite_validates(suite):
    """A typo in a suite's model name or setting fails here, not an hour into a benchmark."""
    config = load_suite(suite)
    assert config.datasets and config.models
