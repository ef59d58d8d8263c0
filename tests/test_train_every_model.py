"""One config shape, one factory, one fit path: every model trains through `recvae train`.

Each model is configured by a TOML file of its own settings plus a `[loop]` table (a blend: its
`[[members]]`), trained by the CLI on a tiny synthetic dataset, and saved with the one metadata
layout. The blend's tuned weights must be the grid point `recvae.evaluate` scores best.
"""

from __future__ import annotations

import tomllib

import numpy as np
import pytest
import scipy.sparse as sp
from typer.testing import CliRunner

from recvae.artifact import load_artifact
from recvae.cli import app
from recvae.config import config_to_dict, load_config, to_toml
from recvae.data.dataset import Dataset
from recvae.data.split import weak_generalization
from recvae.data.vocab import Vocabulary
from recvae.errors import RecvaeError
from recvae.evaluate import evaluate
from recvae.models import MODEL_CLASSES, build_model, model_class
from recvae.models.blend import Blend, weight_grid
from recvae.models.configs import CONFIG_CLASSES, LoopConfig, MultVAEConfig, config_class

runner = CliRunner()
LOOP = '[loop]\nepochs = 2\nbatch_size = 32\nthreads = 1\nmetric = "ndcg@5"\n'
CONFIGS = {
    "multvae": "hidden_dims = [16]\nlatent_dim = 4\n" + LOOP,
    "multdae": "latent_dim = 8\n" + LOOP,
    "recvae": "hidden_dim = 16\nlatent_dim = 4\nn_layers = 1\n" + LOOP,
    "ease": "l2 = 10.0\n",
    "sparse_ease": "l2 = 10.0\nneighbours = 5\n",
    "gfcf": "rank = 4\n",
    "als": "factors = 4\niterations = 3\nnum_threads = 1\n",
    "bpr": "factors = 4\niterations = 5\nnum_threads = 1\n",
    "popularity": "",
    "joint": "hidden_dims = [16]\nlatent_dim = 4\nneighbours = 5\n" + LOOP,
    "blend": (
        'weights = "tune"\nweight_step = 0.25\nmetric = "ndcg@5"\nnormalise = "zscore"\n'
        '[[members]]\nmodel = "multdae"\nlatent_dim = 8\n[members.loop]\nepochs = 2\n'
        'batch_size = 32\nthreads = 1\n[[members]]\nmodel = "ease"\nl2 = 10.0\n'
    ),
}


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory):
    """120 users in 3 groups, each group on its own 8 of 24 items; a weak split validates."""
    rng = np.random.default_rng(0)
    rows, cols = [], []
    for user in range(120):
        items = rng.choice(8, size=5, replace=False) + 8 * (user % 3)
        rows += [user] * 5
        cols += items.tolist()
    matrix = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(120, 24))
    users = Vocabulary([f"u{i}" for i in range(120)], name="user")
    items = Vocabulary(list(range(100, 124)), name="item")
    path = tmp_path_factory.mktemp("every") / "ds"
    Dataset(matrix, users, items, split=weak_generalization(matrix, 0.2, seed=0)).save(path)
    return path


def train(dataset_dir, model: str, config_text: str, out, *extra: str):
    config = out.parent / f"{model}.toml"
    config.write_text(config_text)
    args = ["train", str(dataset_dir), "--model", model, "--config", str(config),
            "--metric", "ndcg@5", "--out", str(out), "--no-progress", *extra]  # fmt: skip
    return runner.invoke(app, args, catch_exceptions=False)


@pytest.mark.parametrize("model", sorted(CONFIGS))
def test_every_model_trains_through_recvae_train(dataset_dir, tmp_path, model):
    assert set(CONFIGS) == set(MODEL_CLASSES)  # a newly registered model must be listed here
    result = train(dataset_dir, model, CONFIGS[model], tmp_path / "m", "--seed", "2")
    assert result.exit_code == 0, result.output
    artifact = load_artifact(tmp_path / "m")
    meta = artifact.metadata
    assert isinstance(artifact.model, model_class(model)) and meta["model"] == model
    assert set(meta) == {"model", "config", "seed", "dataset", "split", "training",
                         "candidates", "evaluation", "metrics", "run"}  # fmt: skip
    assert meta["split"]["source"] == "dataset split"
    assert meta["evaluation"]["metric"] == "ndcg@5" and meta["evaluation"]["users"] > 0
    assert meta["metrics"]["ndcg@5"] == meta["evaluation"]["means"]["ndcg@5"]
    # the saved config holds the file's settings (and the defaults of the rest)
    written = tomllib.loads(CONFIGS[model])
    assert set(meta["config"]) == set(config_to_dict(config_class(model)()))
    for key, value in written.items():
        if key not in ("loop", "members", "weights"):
            assert meta["config"][key] == value
    if "loop" in written:
        assert meta["config"]["loop"]["epochs"] == 2 and meta["seed"] == 2
        assert meta["training"]["epochs_run"] == 2
    history = Dataset.load(dataset_dir).split.valid.history
    assert artifact.model.score(history[:3]).shape == (3, 24)


def test_blend_toml_tunes_its_weights_by_the_shared_evaluation(dataset_dir, tmp_path):
    result = train(dataset_dir, "blend", CONFIGS["blend"], tmp_path / "b")
    assert result.exit_code == 0, result.output
    artifact = load_artifact(tmp_path / "b")
    blend = artifact.model
    chosen = tuple(artifact.metadata["config"]["weights"])
    grid = weight_grid(2, 0.25)
    assert len(grid) == 5 and chosen in grid
    valid = Dataset.load(dataset_dir).split.valid
    scores = {
        weights: evaluate(Blend.from_members(blend.models, weights, 24), valid, ks=[5])["ndcg@5"]
        for weights in grid
    }
    assert scores[chosen] == pytest.approx(max(scores.values()))
    tried = {tuple(row["weights"]): row["ndcg@5"] for row in blend.tuning}
    assert tried == pytest.approx(scores)
    kinds = [row["kind"] for row in artifact.metadata["candidates"]]
    assert kinds == ["member", "member"] + ["weights"] * 5


def test_blend_with_fixed_weights_needs_no_validation(dataset_dir, tmp_path):
    text = CONFIGS["blend"].replace('weights = "tune"', "weights = [0.5, 0.5]")
    result = train(dataset_dir, "blend", text, tmp_path / "b", "--no-validation")
    assert result.exit_code == 0, result.output
    meta = load_artifact(tmp_path / "b").metadata
    assert meta["config"]["weights"] == [0.5, 0.5] and meta["evaluation"] is None
    with pytest.raises(RecvaeError, match='"tune" needs validation users'):
        train(dataset_dir, "blend", CONFIGS["blend"], tmp_path / "c", "--no-validation")


@pytest.mark.parametrize("model", sorted(CONFIG_CLASSES))
def test_configs_round_trip_through_toml(tmp_path, model):
    config = build_model(model, tomllib.loads(CONFIGS[model])).config  # type: ignore[attr-defined]
    path = tmp_path / "c.toml"
    path.write_text(to_toml(config_to_dict(config)))
    assert load_config(config_class(model), path) == config


def test_loop_keys_may_be_given_flat_and_nest_into_the_loop_table():
    flat = build_model("multvae", {"epochs": 7, "latent_dim": 10}).config  # type: ignore[attr-defined]
    nested = MultVAEConfig(latent_dim=10, loop=LoopConfig(epochs=7))
    assert flat == nested
    assert model_class("recvae")(lr=1e-2).config.loop.epochs == 50  # the model's own loop default
    with pytest.raises(RecvaeError, match=r"unknown key\(s\) epoch .*\[loop\] keys: epochs"):
        build_model("multvae", {"epoch": 3})
    with pytest.raises(RecvaeError, match="ease: unknown key"):
        build_model("ease", {"epochs": 3})  # EASE is not trained by the epoch loop


@pytest.mark.parametrize("device", ["mps", "tpu", "cuda:x", "gpu"])
def test_device_key_accepts_auto_cpu_cuda_and_refuses_other_names(device, dataset_dir, tmp_path):
    for ok in ("auto", "cpu", "cuda", "cuda:1"):
        assert LoopConfig(device=ok).device == ok
    with pytest.raises(RecvaeError, match=f"device must be auto, cpu, cuda or cuda:N .*'{device}'"):
        build_model("multdae", {"device": device})
    text = CONFIGS["multdae"] + f'device = "{device}"\n'
    with pytest.raises(RecvaeError, match="device must be auto, cpu, cuda or cuda:N"):
        train(dataset_dir, "multdae", text, tmp_path / "m")
    assert not (tmp_path / "m").exists()


def test_factory_builds_every_registered_model_and_refuses_unknown_names():
    for name in MODEL_CLASSES:
        model = build_model(name)
        assert isinstance(model, model_class(name)) and model.name == name
        assert model.config == config_class(name)()
    with pytest.raises(RecvaeError, match="unknown model 'vae'"):
        build_model("vae")
    with pytest.raises(RecvaeError, match=r"ease: l2 must be positive"):
        build_model("ease", {"l2": 0.0})
