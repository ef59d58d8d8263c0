import json
import os
import subprocess
import sys

import polars as pl
import pytest

from recvae.errors import RecvaeError
from recvae.lock import JobLock
from recvae.registry import ModelStore, quality_gate, resolve_model_dir


def model_dir(tmp_path, name, metric, items=("a", "b")):
    """A real (popularity) model directory: `models add` loads what it adds."""
    import numpy as np
    import scipy.sparse as sp

    from recvae.models.popularity import Popularity

    path = tmp_path / "built" / name
    path.mkdir(parents=True)
    Popularity().fit(sp.csr_matrix(np.ones((2, len(items)), dtype=np.float32))).save(path)
    pl.DataFrame({"item": list(items)}).write_parquet(path / "items.parquet")
    (path / "metadata.json").write_text(json.dumps({"metrics": {"ndcg@100": metric}}))
    return path


def test_add_promote_rollback_and_current_pointer(tmp_path):
    store = ModelStore(tmp_path / "store")
    v1 = store.add(model_dir(tmp_path, "m1", 0.1))
    v2 = store.add(model_dir(tmp_path, "m2", 0.2), metadata={"note": "second"})
    assert [v1.name, v2.name] == ["v0001", "v0002"]
    assert store.current_name() is None
    with pytest.raises(RecvaeError, match="no current model"):
        resolve_model_dir(store.root)
    store.promote("v0001")
    store.promote("v0002")
    assert os.readlink(store.root / "current") == "versions/v0002"
    path, version = resolve_model_dir(store.root)
    assert (path, version) == (store.root / "versions" / "v0002", "v0002")
    assert store.get("v0002").metadata["note"] == "second"
    assert store.get("v0002").metadata["version"] == "v0002"
    assert store.rollback() == "v0001"
    assert store.current_name() == "v0001"
    with pytest.raises(RecvaeError, match="nothing to roll back to"):
        store.rollback()
    assert [e["action"] for e in store.promotions()["events"]] == ["promote"] * 2 + ["rollback"]


def test_prune_keeps_newest_current_and_rollback_target(tmp_path):
    store = ModelStore(tmp_path / "store")
    for i in range(6):
        store.add(model_dir(tmp_path, f"m{i}", 0.1))
    store.promote("v0001")
    store.promote("v0002")
    removed = store.prune(keep=2)
    assert removed == ["v0003", "v0004"]
    assert store.version_names() == ["v0001", "v0002", "v0005", "v0006"]


def test_unknown_version_is_named_in_error(tmp_path):
    store = ModelStore(tmp_path / "store")
    store.add(model_dir(tmp_path, "m1", 0.1))
    with pytest.raises(RecvaeError, match=r"no model version 'v0009'.*versions: v0001"):
        store.promote("v0009")


def test_quality_gate():
    assert quality_gate("ndcg@100", 0.30, None, 0.0).promote
    assert quality_gate("ndcg@100", 0.295, 0.30, 0.01).promote
    assert not quality_gate("ndcg@100", 0.28, 0.30, 0.01).promote
    assert not quality_gate("ndcg@100", 0.30, 0.30, -0.001).promote  # strict improvement needed
    assert not quality_gate("ndcg@100", float("nan"), 0.30, 0.5).promote
    assert "worse than current 0.3000" in quality_gate("ndcg@100", 0.2, 0.3, 0.0).reason


def test_lock_refuses_live_holder_and_replaces_dead_one(tmp_path):
    lock_path = tmp_path / "job.lock"
    with JobLock(lock_path), pytest.raises(RecvaeError, match="another run is in progress"):
        JobLock(lock_path).acquire()
    assert not lock_path.exists()
    # A lock taken by a process that has since died is stale and gets replaced.
    code = f"from recvae.lock import JobLock; JobLock({str(lock_path)!r}).acquire()"
    subprocess.run([sys.executable, "-c", code], check=True)
    dead_holder = json.loads(lock_path.read_text())
    assert dead_holder["pid"] != os.getpid()
    with JobLock(lock_path) as lock:
        assert lock.holder()["pid"] == os.getpid()


def test_lock_from_another_host_is_not_broken(tmp_path):
    lock_path = tmp_path / "job.lock"
    lock_path.write_text(json.dumps({"pid": 1, "hostname": "elsewhere", "started_at": "x"}))
    with pytest.raises(RecvaeError, match="on host elsewhere"):
        JobLock(lock_path).acquire()


def test_models_cli_list_show_promote_rollback_prune(tmp_path):
    from typer.testing import CliRunner

    from recvae.cli import app

    store = ModelStore(tmp_path / "store")
    for i in range(2):
        store.add(model_dir(tmp_path, f"m{i}", 0.1 * (i + 1)))
    runner = CliRunner()
    root = str(store.root)
    added = runner.invoke(app, ["models", "add", root, str(model_dir(tmp_path, "m2", 0.3))])
    assert added.exit_code == 0 and "added v0003" in added.output
    assert runner.invoke(app, ["models", "promote", root, "v0002"]).exit_code == 0
    assert runner.invoke(app, ["models", "promote", root, "v0003"]).exit_code == 0
    listing = runner.invoke(app, ["models", "list", root])
    assert listing.exit_code == 0
    assert "ndcg@100=0.3000" in listing.output
    shown = runner.invoke(app, ["models", "show", root])
    assert json.loads(shown.output)["version"] == "v0003"
    result = runner.invoke(app, ["models", "rollback", root])
    assert result.exit_code == 0 and "current -> v0002" in result.output
    assert runner.invoke(app, ["models", "prune", root, "--keep", "1"]).exit_code == 0
    assert store.version_names() == ["v0002", "v0003"]
    bad = runner.invoke(app, ["models", "promote", root, "v0001"])
    assert bad.exit_code != 0 and "no model version 'v0001'" in str(bad.exception)


def test_revert_promotion_restores_previous_or_no_current(tmp_path):
    store = ModelStore(tmp_path / "store")
    store.add(model_dir(tmp_path, "m1", 0.1))
    store.add(model_dir(tmp_path, "m2", 0.2))
    store.promote("v0001")
    store.revert_promotion(None)
    assert store.current_name() is None
    store.promote("v0001")
    store.promote("v0002")
    store.revert_promotion("v0001")
    assert store.current_name() == "v0001"
    assert store.promotions()["stack"] == ["v0001"]


def test_headline_metrics_read_both_metadata_shapes():
    from recvae.cli.models import _headline_metrics

    nightly = {"metrics": {"ndcg@100": 0.41, "recall@20": 0.35}}
    trained = {"training": {"best_metrics": {"recall@20": 0.25, "ndcg@100": 0.3, "epoch": 7}}}
    assert _headline_metrics(nightly) == "ndcg@100=0.4100 recall@20=0.3500"
    assert _headline_metrics(trained) == "ndcg@100=0.3000 recall@20=0.2500"
    assert _headline_metrics({"validation": {"source": "split"}}) == ""
