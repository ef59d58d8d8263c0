"""The nightly job end to end, as cron runs it: a subprocess on a small synthetic log."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parents[1]
NIGHTLY = ROOT / "jobs" / "nightly_train.py"
EXPORT = ROOT / "jobs" / "export_topn.py"


def synth_log(path: Path, n_users: int = 400, n_items: int = 120, seed: int = 0) -> None:
    """Users in 4 taste groups over Zipf-popular items, so a model has something to learn."""
    rng = np.random.default_rng(seed)
    groups = rng.integers(0, 4, n_users)
    popularity = 1 / np.arange(1, n_items + 1) ** 0.7
    rows = []
    for user in range(n_users):
        taste = popularity.copy()
        taste[groups[user] :: 4] *= 6
        items = rng.choice(n_items, size=rng.integers(8, 25), replace=False, p=taste / taste.sum())
        rows += [(f"u{user}", int(item), 1_700_000_000 + user) for item in items]
    schema = ["user_id", "item_id", "timestamp"]
    pl.DataFrame(rows, schema=schema, orient="row").write_parquet(path)


def write_config(
    tmp: Path, epochs: int = 3, tolerance: float = 0.01, log: str = "log.parquet", extra: str = ""
):
    config = tmp / "nightly.toml"
    config.write_text(
        f"""
[paths]
store = "store"
work_dir = "work"
export = "out/recs.parquet"
[data]
sources = ["{log}"]
[split]
valid_users = 80
[train.config]
epochs = {epochs}
batch_size = 100
anneal_steps = 20
hidden_dims = [32]
latent_dim = 8
threads = 1
{extra}
[gate]
tolerance = {tolerance}
[export]
k = 10
"""
    )
    return config


def run_job(config: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(NIGHTLY), "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=300,
    )


def last_report(tmp: Path) -> dict:
    reports = sorted((tmp / "work" / "runs").glob("*/report.json"), key=os.path.getmtime)
    return json.loads(reports[-1].read_text())


def check_first_run_promoted_exported_and_reported(tmp: Path) -> None:
    assert os.readlink(tmp / "store" / "current") == "versions/v0001"
    recs = pl.read_parquet(tmp / "out" / "recs.parquet")
    assert recs.columns == ["user_id", "rank", "item_id", "score", "model_version", "fallback"]
    assert recs["user_id"].n_unique() == 400 and recs.height == 4000
    assert set(recs["model_version"]) == {"v0001"}
    assert recs["user_id"].dtype == pl.String and recs["user_id"][0].startswith("u")
    report = last_report(tmp)
    assert report["status"] == "promoted"
    assert set(report["timings"]) >= {"ingest", "train", "evaluate", "promote and export"}
    assert report["metrics_new"]["ndcg@100"] > 0
    markdown = next((tmp / "work" / "runs").iterdir()) / "report.md"
    assert markdown.read_text().startswith("# Nightly run: promoted")
    metadata = json.loads((tmp / "store" / "versions" / "v0001" / "metadata.json").read_text())
    assert metadata["data_fingerprint"] == report["dataset"]["fingerprint"]
    assert metadata["version"] == "v0001" and "git_commit" in metadata["run"]
    assert (tmp / "store" / "versions" / "v0001" / "popularity.npy").is_file()
    assert not (tmp / "work" / "nightly.lock").exists()


def check_quality_gate_refuses_and_changes_nothing(tmp: Path, export_before: bytes) -> None:
    # A negative tolerance demands an impossible improvement of 1.0 in NDCG@100.
    done = run_job(write_config(tmp, tolerance=-1.0))
    assert done.returncode == 3, done.stderr
    assert "not promoted" in done.stderr
    report = last_report(tmp)
    assert report["status"] == "refused"
    assert report["warm_start"] == "from v0001"
    # The current model was evaluated on the same validation users as the new one.
    assert report["metrics_current"]["ndcg@100"] > 0
    assert os.readlink(tmp / "store" / "current") == "versions/v0001"
    assert (tmp / "out" / "recs.parquet").read_bytes() == export_before
    assert (tmp / "store" / "versions" / "v0002").is_dir()  # kept for inspection, not current


def check_bad_logs_fail_clearly_and_change_nothing(tmp: Path, export_before: bytes) -> None:
    pl.DataFrame({"who": ["a"], "what": [1]}).write_parquet(tmp / "bad.parquet")
    done = run_job(write_config(tmp, log="bad.parquet"))
    assert done.returncode == 1
    assert "nightly job failed" in done.stderr and "bad.parquet" in done.stderr
    assert "current model and last export are unchanged" in done.stderr
    assert last_report(tmp)["status"] == "failed"
    assert os.readlink(tmp / "store" / "current") == "versions/v0001"
    assert (tmp / "out" / "recs.parquet").read_bytes() == export_before


def check_nan_loss_fails_clearly_and_changes_nothing(tmp: Path, export_before: bytes) -> None:
    done = run_job(write_config(tmp, extra="lr = 1e30"))  # diverges in the first update
    assert done.returncode == 1
    assert "training loss became nan" in done.stderr
    assert last_report(tmp)["status"] == "failed"
    assert os.readlink(tmp / "store" / "current") == "versions/v0001"
    assert (tmp / "out" / "recs.parquet").read_bytes() == export_before


def check_killed_run_leaves_current_untouched_and_rerun_resumes(tmp: Path, export_before: bytes):
    config = write_config(tmp, epochs=60, tolerance=1.0)
    job = subprocess.Popen(
        [sys.executable, str(NIGHTLY), "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    for line in job.stdout:
        if line.startswith("epoch 3 done"):
            job.send_signal(signal.SIGKILL)  # mid-training: 57 epochs to go
            break
    job.wait(timeout=60)
    assert job.returncode == -signal.SIGKILL
    assert os.readlink(tmp / "store" / "current") == "versions/v0001"
    assert (tmp / "out" / "recs.parquet").read_bytes() == export_before
    lock = json.loads((tmp / "work" / "nightly.lock").read_text())
    assert lock["pid"] == job.pid  # left behind by the dead process: stale

    done = run_job(config)
    assert done.returncode == 0, done.stderr
    report = last_report(tmp)
    assert report["status"] == "promoted"
    assert report["resumed_from_epoch"] >= 3
    assert report["epochs_trained_this_run"] == 60 - report["resumed_from_epoch"]
    assert os.readlink(tmp / "store" / "current") == f"versions/{report['new_version']}"
    recs = pl.read_parquet(tmp / "out" / "recs.parquet")
    assert set(recs["model_version"]) == {report["new_version"]}


def test_nightly_job_end_to_end(tmp_path):
    """Promote, refuse at the gate, fail on bad logs, get killed, resume: as cron would see it."""
    synth_log(tmp_path / "log.parquet")
    done = run_job(write_config(tmp_path))
    assert done.returncode == 0, done.stderr
    check_first_run_promoted_exported_and_reported(tmp_path)
    export_before = (tmp_path / "out" / "recs.parquet").read_bytes()
    check_quality_gate_refuses_and_changes_nothing(tmp_path, export_before)
    check_bad_logs_fail_clearly_and_change_nothing(tmp_path, export_before)
    check_nan_loss_fails_clearly_and_changes_nothing(tmp_path, export_before)
    check_killed_run_leaves_current_untouched_and_rerun_resumes(tmp_path, export_before)
    check_sharded_export_job_equals_nightly_export(tmp_path)


def check_sharded_export_job_equals_nightly_export(tmp: Path) -> None:
    config = tmp / "export.toml"
    config.write_text(
        """
[paths]
model = "store"
history = "work/dataset"
export = "shards/recs-{shard}.parquet"
[export]
k = 10
chunk_size = 64
"""
    )
    for shard in range(2):
        args = ["--config", str(config), "--shard", str(shard), "--num-shards", "2"]
        done = subprocess.run([sys.executable, str(EXPORT), *args], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
    parts = [pl.read_parquet(tmp / "shards" / f"recs-{shard}.parquet") for shard in range(2)]
    assert parts[0].height > 0 and parts[1].height > 0
    assert pl.concat(parts).equals(pl.read_parquet(tmp / "out" / "recs.parquet"))


def test_live_lock_refuses_a_second_run(tmp_path):
    synth_log(tmp_path / "log.parquet")
    config = write_config(tmp_path)
    (tmp_path / "work").mkdir()
    holder = {"pid": os.getpid(), "hostname": os.uname().nodename, "started_at": "now"}
    (tmp_path / "work" / "nightly.lock").write_text(json.dumps(holder))
    done = run_job(config)
    assert done.returncode == 1
    assert "another run is in progress" in done.stderr
    assert not (tmp_path / "store").exists()


def test_config_typo_is_reported_before_any_work(tmp_path):
    config = write_config(tmp_path)
    config.write_text(config.read_text().replace("tolerance", "tolerence"))
    done = run_job(config)
    assert done.returncode == 1
    assert "unknown key 'tolerence' in [gate]" in done.stderr
