"""Damaged or mismatched model files stop with one RecvaeError line, never a traceback; the model
store refuses vocabulary-losing promotions and paths that are not stores; tune's exit code."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import scipy.sparse as sp
from typer.testing import CliRunner

from recvae.artifact import Artifact, load_artifact, save_artifact
from recvae.cli import app
from recvae.data.vocab import Vocabulary
from recvae.errors import RecvaeError
from recvae.models import model_class
from recvae.registry import ModelStore

runner = CliRunner()
MATRIX = sp.csr_matrix((np.random.default_rng(0).random((40, 12)) < 0.3).astype(np.float32))
ITEMS = Vocabulary([f"i{j}" for j in range(12)], name="item")
SETTINGS = {
    "multvae": {"epochs": 1, "hidden_dims": (8,), "latent_dim": 4, "metric": "ndcg@5"},
    "recvae": {"epochs": 1, "hidden_dim": 8, "latent_dim": 4, "metric": "ndcg@5"},
    "ease": {},
    "als": {"factors": 4, "iterations": 1},
    "popularity": {},
}
WEIGHTS = {
    "multvae": "weights.safetensors",
    "recvae": "weights.safetensors",
    "ease": "weights.npy",
    "als": "item_factors.npy",
    "popularity": "item_counts.npy",
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    for name, settings in SETTINGS.items():
        model = model_class(name)(**settings).fit(MATRIX)
        save_artifact(Artifact(model, ITEMS, {"version": name}), root / name, train=MATRIX)
    return root


def edit_json(path, change):
    meta = json.loads(path.read_text())
    change(meta)
    path.write_text(json.dumps(meta))


def truncate(d, weights):
    data = (d / weights).read_bytes()
    (d / weights).write_bytes(data[: len(data) // 2])


def scramble(d, weights):
    (d / weights).write_bytes(np.random.default_rng(1).bytes((d / weights).stat().st_size))


def wrong_n_items(d, _weights):
    def change(meta):
        if "n_items" in meta:
            meta["n_items"] = 99
        elif "factors" in meta["config"]:
            meta["config"]["factors"] = 7
        else:
            meta["model"] = "multvae"  # a popularity/EASE directory claiming to be Mult-VAE

    edit_json(d / "model.json", change)


def more_items(d, _weights):
    Vocabulary([f"i{j}" for j in range(15)], name="item").save(d / "items.parquet")


DAMAGE = {
    "truncated weights": (truncate, "weights"),
    "random weights": (scramble, "weights"),
    "missing weights": (lambda d, w: (d / w).unlink(), "is missing"),
    "empty model.json": (lambda d, w: (d / "model.json").write_text(""), "it is empty"),
    "model.json a list": (lambda d, w: (d / "model.json").write_text("[1]"), "does not name"),
    "unknown model name": (
        lambda d, w: edit_json(d / "model.json", lambda m: m.update(model="nosuch")),
        "unknown model 'nosuch'",
    ),
    "shapes differ from model.json": (wrong_n_items, "model.json"),
    "items.parquet of another size": (more_items, "items.parquet"),
    "corrupt items.parquet": (
        lambda d, w: (d / "items.parquet").write_bytes(b"junk"),
        "not a readable item vocabulary",
    ),
    "corrupt metadata.json": (
        lambda d, w: (d / "metadata.json").write_text("{"),
        "metadata.json is not valid JSON",
    ),
    "corrupt popularity.npy": (
        lambda d, w: (d / "popularity.npy").write_bytes(b"\x93NUMPY junk"),
        "popularity.npy is not a readable array",
    ),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
@pytest.mark.parametrize("name", list(SETTINGS))
def test_damaged_model_directories_give_one_line(trained, tmp_path, name, damage):
    import shutil

    directory = tmp_path / name
    shutil.copytree(trained / name, directory)
    apply, words = DAMAGE[damage]
    apply(directory, WEIGHTS[name])
    if damage in ("truncated weights", "random weights"):
        words = WEIGHTS[name]
    with pytest.raises(RecvaeError) as error:
        load_artifact(directory)
    message = str(error.value)
    assert "\n" not in message and words in message, message


def test_the_intact_models_still_load_and_score(trained):
    for name in SETTINGS:
        artifact = load_artifact(trained / name)
        assert artifact.model.score(MATRIX[:3]).shape == (3, 12)


def test_evaluate_and_recommend_print_one_red_line_and_exit_2(trained, tmp_path):
    import shutil

    from recvae.data.dataset import Dataset

    directory = tmp_path / "m"
    shutil.copytree(trained / "multvae", directory)
    truncate(directory, "weights.safetensors")
    Dataset(MATRIX, Vocabulary(list(range(40)), name="user"), ITEMS).save(tmp_path / "ds")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for args in (
        ["evaluate", str(directory), "--dataset", str(tmp_path / "ds")],
        ["recommend", str(directory), "--history", str(tmp_path / "ds"), "--out", "r.parquet"],
    ):
        done = subprocess.run(
            [sys.executable, "-m", "recvae", *args],
            capture_output=True, text=True, env=env, cwd=tmp_path,
        )  # fmt: skip
        assert done.returncode == 2, done.stderr
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and "weights.safetensors" in lines[0], done.stderr
        assert "Traceback" not in done.stderr
    assert not (tmp_path / "r.parquet").exists()


def test_models_add_refuses_a_damaged_model(trained, tmp_path):
    import shutil

    directory = tmp_path / "m"
    shutil.copytree(trained / "ease", directory)
    (directory / "weights.npy").unlink()
    result = runner.invoke(app, ["models", "add", str(tmp_path / "store"), str(directory)])
    assert isinstance(result.exception, RecvaeError) and "weights.npy is missing" in str(
        result.exception
    )
    assert not (tmp_path / "store" / "versions").exists()


# ---- the model store ------------------------------------------------------------------------


def popularity_dir(tmp_path, name, items):
    model = model_class("popularity")().fit(sp.csr_matrix(np.ones((2, len(items)), np.float32)))
    save_artifact(Artifact(model, Vocabulary(list(items), name="item"), {}), tmp_path / name)
    return tmp_path / name


def test_promoting_a_version_that_loses_items_needs_force(tmp_path):
    store = tmp_path / "store"
    first = popularity_dir(tmp_path, "a", ["x", "y", "z"])
    smaller = popularity_dir(tmp_path, "b", ["x", "y"])
    larger = popularity_dir(tmp_path, "c", ["x", "y", "z", "w"])
    assert runner.invoke(app, ["models", "add", str(store), str(first), "--promote"]).exit_code == 0
    refused = runner.invoke(app, ["models", "add", str(store), str(smaller), "--promote"])
    message = str(refused.exception)
    assert isinstance(refused.exception, RecvaeError)
    assert "v0002 does not know 1 items of the current model v0001 (e.g. z)" in message
    assert "--force" in message
    assert ModelStore(store).current_name() == "v0001"
    forced = runner.invoke(app, ["models", "promote", str(store), "v0002", "--force"])
    assert forced.exit_code == 0 and "current -> v0002" in forced.output
    grown = runner.invoke(app, ["models", "add", str(store), str(larger), "--promote"])
    assert grown.exit_code == 0, grown.output
    assert "warning" in grown.output and "knows 2 items the current model v0002 does not" in (
        grown.output
    )
    events = ModelStore(store).promotions()["events"]
    assert events[1]["items"] == {"added": 0, "removed": 1, "forced": True}


@pytest.mark.parametrize("command", ["list", "prune", "show", "rollback", "promote"])
def test_store_commands_refuse_a_path_that_is_not_a_store(tmp_path, command):
    extra = ["v0001"] if command == "promote" else []
    missing = runner.invoke(app, ["models", command, str(tmp_path / "nope"), *extra])
    assert isinstance(missing.exception, RecvaeError), missing.output
    assert "does not exist" in str(missing.exception)
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.txt").write_text("x")
    foreign = runner.invoke(app, ["models", command, str(tmp_path / "docs"), *extra])
    assert "is not a model store" in str(foreign.exception)


def test_tune_exits_nonzero_when_no_trial_completed(tmp_path, monkeypatch):
    import optuna

    import recvae.tuning.report as report
    import recvae.tuning.study as study

    class FakeRun:
        def __init__(self):
            self.study = optuna.create_study(direction="maximize")
            trial = self.study.ask()
            self.study.tell(trial, state=optuna.trial.TrialState.FAIL)

    monkeypatch.setattr(study, "run_study", lambda options, **_: FakeRun())
    monkeypatch.setattr(report, "write_outputs", lambda run: [])
    (tmp_path / "ds").mkdir()
    result = runner.invoke(app, ["tune", str(tmp_path / "ds"), "--out", str(tmp_path / "s")])
    assert result.exit_code == 1
    assert "no trial completed" in result.output


def test_reading_a_store_tolerates_a_damaged_version(tmp_path):
    store = tmp_path / "store"
    runner.invoke(app, ["models", "add", str(store), str(popularity_dir(tmp_path, "a", ["x"]))])
    (store / "versions" / "v0001" / "model.json").write_text("")
    (store / "versions" / "v0001" / "metadata.json").write_text("{")
    listing = runner.invoke(app, ["models", "list", str(store)])
    assert listing.exit_code == 0, listing.output
    assert "v0001" in listing.output and "?" in listing.output
