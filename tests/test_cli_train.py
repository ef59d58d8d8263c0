"""`recvae train` and `recvae evaluate` end to end on a tiny synthetic dataset."""

import json

import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp
from typer.testing import CliRunner

from recvae.artifact import load_artifact
from recvae.cli import app
from recvae.cli.train import parse_set_options
from recvae.data.dataset import Dataset
from recvae.data.split import weak_generalization
from recvae.data.vocab import Vocabulary
from recvae.errors import RecvaeError
from recvae.evaluate import evaluate

runner = CliRunner()
FAST = [
    "--epochs",
    "3",
    "--batch-size",
    "32",
    "--set",
    "hidden_dims=[16]",
    "--set",
    "latent_dim=4",
    "--set",
    "metric='ndcg@5'",
    "--no-progress",
]


def block_dataset(with_split: bool) -> Dataset:
    rng = np.random.default_rng(0)
    rows, cols = [], []
    for user in range(120):
        group = user % 3
        items = rng.choice(8, size=5, replace=False) + 8 * group
        rows += [user] * 5
        cols += items.tolist()
    matrix = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(120, 24))
    users = Vocabulary([f"u{i}" for i in range(120)], name="user")
    items = Vocabulary(list(range(100, 124)), name="item")
    split = weak_generalization(matrix, 0.2, seed=0) if with_split else None
    return Dataset(matrix, users, items, split=split)


def test_train_on_split_then_evaluate_the_split(tmp_path):
    block_dataset(with_split=True).save(tmp_path / "ds")
    result = runner.invoke(
        app,
        [
            "train",
            str(tmp_path / "ds"),
            "--out",
            str(tmp_path / "m"),
            "--seed",
            "3",
            "--model",
            "multvae",
            *FAST,
            "--checkpoint-dir",
            str(tmp_path / "ckpt"),
        ],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    artifact = load_artifact(tmp_path / "m")
    meta = artifact.metadata
    assert meta["seed"] == 3 and meta["config"]["hidden_dims"] == [16]
    assert meta["split"]["source"] == "dataset split"
    assert meta["training"]["epochs_run"] == 3 and meta["dataset"]["fingerprint"]
    assert meta["run"]["versions"]["torch"]
    log = (tmp_path / "ckpt" / "log.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in log] == [1, 2, 3]

    result = runner.invoke(
        app,
        [
            "evaluate",
            str(tmp_path / "m"),
            "--dataset",
            str(tmp_path / "ds"),
            "--part",
            "valid",
            "--k",
            "5,10",
            "--json",
        ],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)  # logs go to stderr
    expected = evaluate(artifact.model, Dataset.load(tmp_path / "ds").split.valid, ks=[5, 10])
    assert payload["ndcg@5"] == pytest.approx(expected["ndcg@5"])
    assert payload["users"] == expected.users
    assert {"recall@10", "recall_lightgcn@10", "stderr"} <= set(payload)


def test_train_without_split_holds_out_users_and_evaluate_reads_lightgcn_files(tmp_path):
    block_dataset(with_split=False).save(tmp_path / "ds")
    result = runner.invoke(
        app,
        [
            "train",
            str(tmp_path / "ds"),
            "--out",
            str(tmp_path / "m"),
            "--model",
            "multdae",
            "--valid-users",
            "20",
            *FAST,
        ],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    meta = load_artifact(tmp_path / "m").metadata
    assert meta["split"]["protocol"] == "strong" and meta["split"]["source"] == "held out by recvae"
    assert meta["split"]["params"]["n_valid_users"] == 20

    # LightGCN files over original item ids: user 0 likes block 0 (items 100..107); item 999 is
    # unknown to the model and user 7 has no history
    (tmp_path / "train.txt").write_text("0 100 101 102\n1 108 109\n")
    (tmp_path / "test.txt").write_text("0 103 104 999\n1 110\n7 100\n")
    result = runner.invoke(
        app,
        [
            "evaluate",
            str(tmp_path / "m"),
            "--history",
            str(tmp_path / "train.txt"),
            "--heldout",
            str(tmp_path / "test.txt"),
            "--format",
            "lightgcn",
            "--k",
            "5",
            "--json",
        ],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)  # logs go to stderr
    assert payload["users"] == 3
    assert payload["users_without_history"] == 1
    assert payload["heldout_items_unknown_to_model"] == 1
    assert 0.0 <= payload["recall_lightgcn@5"] <= 1.0
    # the unknown item counts as a miss: user 0 can find at most 2 of 3 held-out items
    result = runner.invoke(
        app,
        [
            "evaluate",
            str(tmp_path / "m"),
            "--history",
            str(tmp_path / "train.txt"),
            "--heldout",
            str(tmp_path / "test.txt"),
            "--format",
            "lightgcn",
            "--k",
            "5",
        ],
    )
    assert result.exit_code == 0 and "recall@5" in result.output


def test_train_refuses_unknown_settings_and_models(tmp_path):
    block_dataset(with_split=True).save(tmp_path / "ds")
    with pytest.raises(RecvaeError, match="unknown key"):
        runner.invoke(
            app,
            ["train", str(tmp_path / "ds"), "--out", str(tmp_path / "m"), "--model", "multvae",
             "--set", "hidden=[3]"],
            catch_exceptions=False,
        )
    with pytest.raises(RecvaeError, match="unknown model 'easy'"):
        runner.invoke(
            app,
            ["train", str(tmp_path / "ds"), "--out", str(tmp_path / "m"), "--model", "easy"],
            catch_exceptions=False,
        )
    assert not (tmp_path / "m").exists()


def test_parse_set_options():
    assert parse_set_options(["hidden_dims=[600, 200]", "likelihood=gaussian", "lr=1e-4"]) == {
        "hidden_dims": [600, 200],
        "likelihood": "gaussian",
        "lr": 1e-4,
    }
    with pytest.raises(RecvaeError, match="key=value"):
        parse_set_options(["oops"])


def test_items_vocabulary_travels_with_the_model(tmp_path):
    block_dataset(with_split=True).save(tmp_path / "ds")
    runner.invoke(
        app,
        ["train", str(tmp_path / "ds"), "--out", str(tmp_path / "m"), "--model", "multvae", *FAST],
        catch_exceptions=False,
    )
    items = load_artifact(tmp_path / "m").items
    assert items.ids.to_list() == list(range(100, 124))
    assert isinstance(items.ids, pl.Series)


def test_trained_model_carries_training_popularity_for_fallback_users(tmp_path):
    import numpy as np

    dataset = block_dataset(with_split=True)
    dataset.save(tmp_path / "ds")
    runner.invoke(
        app,
        ["train", str(tmp_path / "ds"), "--out", str(tmp_path / "m"), "--model", "multvae", *FAST],
        catch_exceptions=False,
    )
    popularity = np.load(tmp_path / "m" / "popularity.npy", allow_pickle=False)
    train = dataset.split.train
    assert np.array_equal(popularity, np.asarray((train > 0).sum(axis=0)).ravel())


def test_train_without_a_model_runs_auto(tmp_path):
    """The default model is auto: the best of its candidates on validation, refitted."""
    block_dataset(with_split=True).save(tmp_path / "ds")
    settings = tmp_path / "auto.toml"
    settings.write_text('candidates = ["ease-l2-100", "ease-l2-500"]\nbudget = "60s"\n')
    args = ["train", str(tmp_path / "ds"), "--out", str(tmp_path / "m"), "--config", str(settings)]
    result = runner.invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    meta = load_artifact(tmp_path / "m").metadata
    assert meta["auto"]["winner"] in ("ease-l2-100", "ease-l2-500", "blend")
    assert "the 60s budget" in " ".join(result.output.split())


def test_loop_flags_without_a_model_say_how_to_name_one(tmp_path, monkeypatch):
    monkeypatch.setenv("RECVAE_LOG_LEVEL", "warning")
    block_dataset(with_split=True).save(tmp_path / "ds")
    args = ["train", str(tmp_path / "ds"), "--out", str(tmp_path / "m"), "--epochs", "3"]
    with pytest.raises(RecvaeError, match=r"--model auto \(the default\).*--model multvae"):
        runner.invoke(app, args, catch_exceptions=False)
    assert not (tmp_path / "m").exists()
