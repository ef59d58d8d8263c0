"""recvae tune: search spaces, studies (pruning, resume, interruption), outputs and the CLI."""

from __future__ import annotations

import dataclasses
import json
import tomllib
from pathlib import Path

import numpy as np
import optuna
import pytest
from typer.testing import CliRunner

from recvae.bench.data import synthetic_dataset
from recvae.cli import app
from recvae.config import config_from_dict, config_to_dict
from recvae.data.dataset import Dataset
from recvae.data.split import strong_generalization
from recvae.errors import RecvaeError
from recvae.evaluate import evaluate
from recvae.models.ease import EASE
from recvae.models.vae import MultVAEConfig
from recvae.tuning.report import best_trial, to_toml, write_outputs
from recvae.tuning.spaces import load_space, parse_space
from recvae.tuning.study import (
    STUDY_NAME,
    StudyOptions,
    count_trials,
    make_objective,
    open_storage,
    run_study,
)

# Tiny Mult-VAE trials: 2 epochs of a 16-32 unit network on 80 items take well under a second.
TINY_SPACE = """
[params.hidden_dim]
low = 16
high = 32
step = 16
[params.latent_dim]
low = 8
high = 16
step = 8
[fixed]
epochs = 2
patience = 0
threads = 1
batch_size = 100
"""


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory) -> Path:
    """300 synthetic users over 80 items, strong split: 60 validation and 60 test users."""
    dataset = synthetic_dataset(users=300, items=80, per_user=12, seed=1)
    split = strong_generalization(dataset.matrix, 60, 60, heldout_fraction=0.25, seed=0)
    path = tmp_path_factory.mktemp("tune") / "data"
    dataclasses.replace(dataset, split=split).save(path)
    return path


@pytest.fixture
def space_file(tmp_path) -> Path:
    path = tmp_path / "space.toml"
    path.write_text(TINY_SPACE)
    return path


def options(dataset_dir: Path, out: Path, space_file: Path | None, **changes) -> StudyOptions:
    values = dict(dataset_dir=dataset_dir, out=out, model="multvae", trials=2, sampler="random",
                  metric="ndcg@20", space_file=space_file, reference=False)  # fmt: skip
    return StudyOptions(**{**values, **changes})


# --- search spaces ----------------------------------------------------------------------------


def test_default_spaces_cover_the_required_settings():
    names = {model: {p.name for p in load_space(model).params}
             for model in ("multvae", "multdae", "als", "bpr", "ease")}  # fmt: skip
    assert names["multvae"] == {"lr", "hidden_dim", "latent_dim", "dropout", "beta_cap",
                                "anneal_steps", "batch_size", "l2", "likelihood"}  # fmt: skip
    assert names["als"] == {"factors", "regularization", "alpha", "iterations"}
    assert names["bpr"] == {"factors", "learning_rate", "regularization", "iterations"}
    assert names["ease"] == {"l2"}
    assert {"lr", "hidden_dim", "per_user_beta", "gamma", "beta", "n_enc_epochs"} <= {
        p.name for p in load_space("recvae").params
    }
    (l2,) = load_space("ease").params
    assert l2.kind == "float" and l2.log


def test_space_file_overrides_ranges_and_fixed_settings_leave_the_search():
    raw = tomllib.loads(
        """
        [params.lr]
        low = 0.001
        high = 0.01
        [params.batch_size]
        choices = [200, 400]
        [fixed]
        likelihood = "multinomial"
        epochs = 7
        """
    )
    space = parse_space("multvae", raw, "space.toml")
    by_name = {p.name: p for p in space.params}
    assert (by_name["lr"].low, by_name["lr"].high, by_name["lr"].log) == (0.001, 0.01, False)
    assert by_name["batch_size"].choices == (200, 400)
    assert by_name["hidden_dim"].kind == "int"  # untouched default
    assert "likelihood" not in by_name  # fixed, so no longer searched
    assert space.fixed == {"epochs": 7, "patience": 10, "likelihood": "multinomial"}
    settings = space.settings({"hidden_dim": 800, "lr": 0.002})
    assert settings["hidden_dims"] == [800] and "hidden_dim" not in settings
    assert settings["lr"] == 0.002 and settings["epochs"] == 7


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[params.nope]\nlow = 1\nhigh = 2", "[params.nope]: not a setting"),
        ("[params.lr]\nlow = 0.0\nhigh = 0.1\nlog = true", "a log range needs low > 0"),
        ("[params.lr]\nlow = 0.1\nhigh = 0.1", "must be below high"),
        ("[params.latent_dim]\nlow = 10.5\nhigh = 20", "integer setting"),
        ("[params.likelihood]\nlow = 1\nhigh = 2", "not numeric; give choices"),
        ("[params.lr]\nchoices = []", "non-empty list"),
        ("[params.lr]\nlow = 0.1\nhigh = 0.2\nspan = 3", "unknown key(s) ['span']"),
        ("[fixed]\nwidth = 3", "[fixed] 'width' is not a multvae setting"),
        ("[other]\nx = 1", "unknown table(s) ['other']"),
    ],
)
def test_bad_space_files_name_the_problem(tmp_path, text, message):
    path = tmp_path / "space.toml"
    path.write_text(text)
    with pytest.raises(RecvaeError) as error:
        load_space("multvae", path)
    assert message in str(error.value) and "space.toml" in str(error.value)


def test_grid_values():
    raw = tomllib.loads(
        """
        [params.l2]
        low = 1.0
        high = 10000.0
        log = true
        """
    )
    (l2,) = parse_space("ease", raw, "s").params
    assert l2.grid_values() == pytest.approx([1.0, 100.0, 10000.0])
    als = {p.name: p for p in load_space("als").params}
    assert als["iterations"].grid_values() == [5, 18, 30]  # int: rounded middle
    vae = {p.name: p for p in load_space("multvae").params}
    assert vae["hidden_dim"].grid_values() == [400, 800, 1200]  # on the step
    assert vae["batch_size"].grid_values() == [100, 250, 500, 1000]


def test_toml_writer_round_trips_a_config():
    config = MultVAEConfig(hidden_dims=(64, 32), l2=1e-7, likelihood="logistic")
    text = to_toml(config_to_dict(config))
    assert config_from_dict(MultVAEConfig, tomllib.loads(text)) == config


# --- studies ------------------------------------------------------------------------------------


def test_resume_reaches_the_total_without_repeating_points(dataset_dir, space_file, tmp_path):
    out = tmp_path / "study"
    first = run_study(options(dataset_dir, out, space_file, trials=2))
    assert first.ran == 2
    second = run_study(options(dataset_dir, out, space_file, trials=4))
    assert second.ran == 2
    trials = second.study.trials
    assert [t.number for t in trials] == [0, 1, 2, 3]
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    points = {tuple(sorted(t.params.items())) for t in trials}
    assert len(points) == 4  # the resumed random sampler did not replay trials 0 and 1
    third = run_study(options(dataset_dir, out, space_file, trials=4))
    assert third.ran == 0 and len(third.study.trials) == 4


def test_interrupted_trial_is_marked_and_does_not_count(dataset_dir, space_file, tmp_path):
    out = tmp_path / "study"
    run_study(options(dataset_dir, out, space_file, trials=1))
    # A crash mid-trial leaves it RUNNING in the storage:
    study = optuna.load_study(study_name=STUDY_NAME, storage=open_storage(out))
    study.ask()
    run = run_study(options(dataset_dir, out, space_file, trials=2))
    states = [t.state for t in run.study.trials]
    assert states[1] == optuna.trial.TrialState.FAIL
    assert run.study.trials[1].user_attrs["interrupted"] is True
    assert count_trials(run.study.trials) == 2 and len(states) == 3


def test_resuming_with_another_metric_is_refused(dataset_dir, space_file, tmp_path):
    out = tmp_path / "study"
    run_study(options(dataset_dir, out, space_file, trials=1))
    with pytest.raises(RecvaeError, match="different metric"):
        run_study(options(dataset_dir, out, space_file, trials=2, metric="recall@20"))


def test_weak_trials_are_pruned_on_their_epoch_metric(dataset_dir):
    dataset = Dataset.load(dataset_dir)
    raw = tomllib.loads(TINY_SPACE.replace("epochs = 2", "epochs = 3"))
    raw["params"]["lr"] = {"choices": [0.01, 1e-6]}
    space = parse_space("multvae", raw, "test")
    objective = make_objective("multvae", space, "ndcg@20", dataset.split.train,
                               dataset.split.valid, seed=0)  # fmt: skip
    pruner = optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=0)
    study = optuna.create_study(direction="maximize", pruner=pruner)
    fixed = {"hidden_dim": 32, "latent_dim": 16, "dropout": 0.5, "beta_cap": 0.2,
             "anneal_steps": 1000, "batch_size": 100, "l2": 1e-8,
             "likelihood": "multinomial"}  # fmt: skip
    study.enqueue_trial({**fixed, "lr": 0.01})
    study.enqueue_trial({**fixed, "lr": 1e-6})  # learns nothing in an epoch: below the median
    study.optimize(objective, n_trials=2)
    good, weak = study.trials
    assert good.state == optuna.trial.TrialState.COMPLETE
    assert sorted(good.intermediate_values) == [1, 2, 3]  # one report per epoch
    assert good.value == pytest.approx(max(good.intermediate_values.values()))
    assert weak.state == optuna.trial.TrialState.PRUNED
    assert sorted(weak.intermediate_values) == [1] and weak.user_attrs["epochs"] == 1


def test_baseline_trials_score_the_validation_part(dataset_dir, tmp_path):
    space = tmp_path / "ease.toml"
    space.write_text("[params.l2]\nlow = 1.0\nhigh = 1000.0\nlog = true\ngrid = [10.0, 300.0]")
    out = tmp_path / "ease"
    run = run_study(options(dataset_dir, out, space, model="ease", sampler="grid", trials=5,
                            reference=True))  # fmt: skip
    assert len(run.study.trials) == 2  # the grid ran out before --trials
    write_outputs(run)
    dataset = Dataset.load(dataset_dir)
    for trial in run.study.trials:
        model = EASE(l2=trial.params["l2"]).fit(dataset.split.train)
        expected = evaluate(model, dataset.split.valid, ks=[20])["ndcg@20"]
        assert trial.value == pytest.approx(expected)  # validation, not test
    best = best_trial(run.study)
    # the full config: EASE's settings are l2 and the scoring device
    assert tomllib.loads((out / "best.toml").read_text()) == {"l2": best.params["l2"],
                                                               "device": "cpu"}  # fmt: skip
    reference = json.loads((out / "defaults.json").read_text())
    default_model = EASE().fit(dataset.split.train)
    assert reference["metrics"]["ndcg@20"] == pytest.approx(
        evaluate(default_model, dataset.split.valid, ks=[20])["ndcg@20"]
    )
    rows = (out / "trials.csv").read_text().splitlines()
    assert rows[0].startswith("number,state,value,param_l2,valid_")
    assert len(rows) == 3
    report = (out / "report.md").read_text()
    assert "validation ndcg@20" in report and "| defaults |" in report


# --- command line -------------------------------------------------------------------------------


def test_cli_tune_then_train_with_best_toml(dataset_dir, space_file, tmp_path):
    runner = CliRunner()
    out = tmp_path / "study"
    args = ["tune", str(dataset_dir), "--model", "multvae", "--trials", "3", "--space",
            str(space_file), "--metric", "ndcg@20", "--seed", "3", "--no-reference", "--out",
            str(out)]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    for name in ("best.toml", "report.md", "trials.csv", "trials.json", "study.journal",
                 "history.png", "curves.png"):  # fmt: skip
        assert (out / name).is_file(), name
    assert not (out / "defaults.json").exists()  # --no-reference
    assert (
        f"Command: `recvae tune {dataset_dir} --model multvae --trials 3"
        in (out / "report.md").read_text()
    )
    best = tomllib.loads((out / "best.toml").read_text())
    loop = best["loop"]  # one config shape: the model's settings plus the [loop] table
    assert loop["metric"] == "ndcg@20" and loop["seed"] == 3 and loop["epochs"] == 2
    nightly = tomllib.loads((out / "nightly-train.toml").read_text())
    assert nightly == {"train": {"model": "multvae", "config": best}}
    trials = json.loads((out / "trials.json").read_text())
    assert len(trials) == 3 and all(len(t["intermediate_values"]) == 2 for t in trials)
    top = max(trials, key=lambda t: t["value"])
    assert best["hidden_dims"] == [top["params"]["hidden_dim"]]
    assert loop["lr"] == top["params"]["lr"]

    model_dir = tmp_path / "model"
    args = ["train", str(dataset_dir), "--model", "multvae", "--config", str(out / "best.toml"),
            "--out", str(model_dir), "--no-progress"]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    saved = json.loads((model_dir / "metadata.json").read_text())
    assert saved["config"] == best
    # Same data, settings and seed: training again reproduces the trial's validation value.
    assert saved["training"]["best_metrics"]["ndcg@20"] == pytest.approx(top["value"], rel=1e-5)

    args = ["tune", str(dataset_dir), "--model", "multvae", "--trials", "3", "--metric",
            "ndcg@20", "--seed", "3", "--out", str(out)]  # fmt: skip
    result = runner.invoke(app, args)
    # (RecvaeError becomes exit code 2 in `recvae`'s main; CliRunner sees the exception.)
    assert isinstance(result.exception, RecvaeError)
    assert "different space" in str(result.exception)


def test_cli_rejects_unknown_model_and_sampler(dataset_dir, tmp_path):
    runner = CliRunner()
    base = ["tune", str(dataset_dir), "--out", str(tmp_path / "s"), "--trials", "1"]
    result = runner.invoke(app, [*base, "--model", "easy"])
    assert isinstance(result.exception, RecvaeError)
    known = "multvae, multdae, recvae, als, bpr, ease, sparse_ease, popularity, blend"
    assert f"supports {known}" in str(result.exception)
    result = runner.invoke(app, [*base, "--model", "ease", "--sampler", "cmaes"])
    assert "unknown sampler" in str(result.exception)


def test_sampler_seeds_differ_per_resume():
    from recvae.tuning.study import derived_seed

    assert derived_seed(0, 0) != derived_seed(0, 2)
    assert derived_seed(0, 2) == derived_seed(0, 2)
    assert isinstance(derived_seed(5, 1), int) and np.uint32(derived_seed(5, 1)) >= 0


def test_recvae_trials_are_scored_per_round_and_keep_their_own_hidden_dim(dataset_dir):
    dataset = Dataset.load(dataset_dir)
    fixed = {"epochs": 2, "n_layers": 2, "latent_dim": 8, "batch_size": 100, "threads": 1,
             "n_enc_epochs": 1}  # fmt: skip
    space = parse_space("recvae", {"params": {"hidden_dim": {"choices": [16]},
                                              "lr": {"choices": [0.01]}}, "fixed": fixed},
                        "test")  # fmt: skip
    assert space.settings({"hidden_dim": 16, "lr": 0.01})["hidden_dim"] == 16  # no hidden_dims
    objective = make_objective("recvae", space, "ndcg@20", dataset.split.train,
                               dataset.split.valid, seed=0)  # fmt: skip
    study = optuna.create_study(direction="maximize")
    study.optimize(objective, n_trials=1)
    (trial,) = study.trials
    assert trial.state == optuna.trial.TrialState.COMPLETE
    assert sorted(trial.intermediate_values) == [1, 2]  # one report per round: prunable
    assert trial.value == pytest.approx(max(trial.intermediate_values.values()))


BLEND_SPACE = """
[params."ease.l2"]
low = 1.0
high = 100.0
log = true
grid = [1.0, 100.0]
[fixed]
normalise = "zscore"
weight_step = 0.5
metric = "ndcg@20"
[[fixed.members]]
model = "popularity"
[[fixed.members]]
model = "ease"
"""


def test_tune_accepts_a_blend_and_popularity(dataset_dir, tmp_path):
    space = tmp_path / "blend-space.toml"
    space.write_text(BLEND_SPACE)
    run = run_study(options(dataset_dir, tmp_path / "blend", space, model="blend", sampler="grid"))
    trials = [t for t in run.study.trials if t.value is not None]
    assert sorted(t.params["ease.l2"] for t in trials) == [1.0, 100.0]
    for trial in trials:
        members = trial.user_attrs["settings"]["members"]
        ease = {"model": "ease", "l2": trial.params["ease.l2"]}
        assert members == [{"model": "popularity"}, ease]
    write_outputs(run)
    best = tomllib.loads((tmp_path / "blend" / "best.toml").read_text())
    assert best["members"][1]["model"] == "ease" and best["weights"] == "tune"  # re-tuned by train
    pop = options(dataset_dir, tmp_path / "pop", None, model="popularity", trials=1)
    popularity = run_study(pop)
    (trial,) = popularity.study.trials
    assert trial.value == pytest.approx(trial.user_attrs["metrics"]["ndcg@20"])
