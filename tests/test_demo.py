"""`recvae demo` end to end on a small log (the full-size demo is `make demo`)."""

import json
import os

import polars as pl
import pytest
from typer.testing import CliRunner

from recvae.cli import app

SMALL = [
    "--users", "800", "--items", "300", "--interactions", "30000",
    "--epochs", "3", "--heldout-users", "100", "--threads", "1",
]  # fmt: skip


def test_demo_runs_the_whole_pipeline_and_prints_a_summary(tmp_path):
    workdir = tmp_path / "demo"
    result = CliRunner().invoke(app, ["demo", "--workdir", str(workdir), *SMALL])
    assert result.exit_code == 0, result.output
    for step in ("1. log", "2. ingest", "3. split", "4. train", "5. evaluate", "6. registry"):
        assert step in result.output
    assert "Mult-VAE" in result.output and "ALS" in result.output
    assert "Popularity" in result.output and "done in" in result.output
    assert (workdir / "logs" / "events.duckdb").is_file()
    assert os.readlink(workdir / "models" / "current") == "versions/v0001"
    recs = pl.read_parquet(workdir / "recommendations.parquet")
    assert recs.group_by("user_id").len()["len"].max() == 20
    assert set(recs["model_version"]) == {"v0001"}
    summary = json.loads((workdir / "summary.json").read_text())
    metrics = summary["test_metrics"]
    assert metrics["Mult-VAE"]["ndcg@100"] > metrics["Popularity"]["ndcg@100"]
    # the gate compared validation with validation, and the model's metadata has the one layout
    meta = json.loads((workdir / "models" / "versions" / "v0001" / "metadata.json").read_text())
    assert summary["gate"]["valid_new"] == meta["metrics"]["ndcg@100"]
    assert summary["gate"]["valid_current"] is None  # the first run has no current model
    assert meta["split"]["valid_users"] == meta["evaluation"]["users"] > 0
    assert meta["model"] == "multvae" and meta["candidates"][0]["model"] == "multvae"


def test_demo_gate_scores_the_current_model_on_the_new_models_validation_users(tmp_path):
    workdir = tmp_path / "demo"
    tiny = [*SMALL, "--epochs", "1"]
    for _ in range(2):
        result = CliRunner().invoke(app, ["demo", "--workdir", str(workdir), *tiny])
        assert result.exit_code == 0, result.output
    summary = json.loads((workdir / "summary.json").read_text())
    first = json.loads((workdir / "models" / "versions" / "v0001" / "metadata.json").read_text())
    # Same log, split and seed: the current model (v0001) scored on this run's validation users
    # gets exactly the validation score it was registered with.
    assert summary["gate"]["valid_current"] == pytest.approx(first["metrics"]["ndcg@100"])
    assert summary["version"] == "v0002" and summary["promoted"]


@pytest.mark.slow
def test_full_size_demo_as_make_demo_runs_it(tmp_path):
    result = CliRunner().invoke(app, ["demo", "--workdir", str(tmp_path / "demo")])
    assert result.exit_code == 0, result.output
