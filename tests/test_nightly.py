"""`recvae nightly` end to end, as cron runs it, on small synthetic logs.

Most runs call the command in this process (typer's CliRunner, fast); the kill test runs it as a
subprocess, as a scheduler would.
"""

import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from recvae.cli import app
from recvae.errors import RecvaeError

ROOT = Path(__file__).resolve().parents[1]
EXPORT_JOB = ROOT / "jobs" / "export_topn.py"
runner = CliRunner()


def synth_log(
    path: Path, n_users: int = 400, n_items: int = 120, seed: int = 0, new_items: int = 0
) -> None:
    """Users in 4 taste groups over Zipf-popular items, so a model has something to learn.
    With `new_items`, items n_items.. are added, each taken by 3 in 4 users of taste group 0."""
    rng = np.random.default_rng(seed)
    groups = rng.integers(0, 4, n_users)
    popularity = 1 / np.arange(1, n_items + 1) ** 0.7
    rows = []
    for user in range(n_users):
        taste = popularity.copy()
        taste[groups[user] :: 4] *= 6
        items = rng.choice(n_items, size=rng.integers(8, 25), replace=False, p=taste / taste.sum())
        rows += [(f"u{user}", int(item), 1_700_000_000 + user) for item in items]
        if groups[user] == 0 and user % 4 != 1:
            new = range(n_items, n_items + new_items)
            rows += [(f"u{user}", item, 1_700_000_001 + user) for item in new]
    schema = ["user_id", "item_id", "timestamp"]
    pl.DataFrame(rows, schema=schema, orient="row").write_parquet(path)


MULTVAE = """
[train]
model = "multvae"
[train.config]
epochs = {epochs}
batch_size = 100
anneal_steps = 20
hidden_dims = [32]
latent_dim = 8
threads = 1
{extra}
"""


def write_config(
    tmp: Path,
    epochs: int = 3,
    tolerance: float = 0.01,
    log: str = "log.parquet",
    extra: str = "",
    train: str | None = None,
    keep: int = 5,
    export: str = "out/recs.parquet",
) -> Path:
    config = tmp / "nightly.toml"
    train = train if train is not None else MULTVAE.format(epochs=epochs, extra=extra)
    config.write_text(
        f"""
[paths]
store = "store"
work_dir = "work"
export = "{export}"
[data]
sources = ["{log}"]
[split]
valid_users = 80
{train}
[gate]
tolerance = {tolerance}
[export]
k = 10
[registry]
keep = {keep}
"""
    )
    return config


@dataclass
class Outcome:
    exit_code: int
    output: str


def nightly(config: Path, *args: str) -> Outcome:
    """The command in this process; a RecvaeError becomes exit 2 and its line, as in
    `recvae.cli.main` (checked for real by a subprocess test below)."""
    result = runner.invoke(app, ["nightly", "--config", str(config), *args])
    if isinstance(result.exception, RecvaeError):
        return Outcome(2, f"error: {result.exception}")
    return Outcome(result.exit_code, result.output)


def run_subprocess(config: Path) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "recvae", "nightly", "--config", str(config)]
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


def last_report(tmp: Path) -> dict:
    return json.loads((tmp / "work" / "last-run.json").read_text())


def current(tmp: Path) -> str:
    return os.readlink(tmp / "store" / "current").split("/")[-1]


def export_versions(tmp: Path) -> set[str]:
    return set(pl.read_parquet(tmp / "out" / "recs.parquet")["model_version"])


def check_first_run_promoted_exported_and_reported(tmp: Path) -> None:
    assert current(tmp) == "v0001"
    recs = pl.read_parquet(tmp / "out" / "recs.parquet")
    assert recs.columns == ["user_id", "rank", "item_id", "score", "model_version", "fallback"]
    assert recs["user_id"].n_unique() == 400 and recs.height == 4000
    assert export_versions(tmp) == {"v0001"}
    report = last_report(tmp)
    assert report["status"] == "promoted" and report["exit_code"] == 0
    assert set(report["timings"]) >= {"recover", "ingest", "train", "publish", "total"}
    assert report["metrics_new"]["ndcg@100"] > 0
    assert report["volume_gate"]["accept"] and report["export"]["model_version"] == "v0001"
    markdown = next((tmp / "work" / "runs").iterdir()) / "report.md"
    assert markdown.read_text().startswith("# Nightly run: promoted (exit 0)")
    metadata = json.loads((tmp / "store" / "versions" / "v0001" / "metadata.json").read_text())
    # The workflow's one metadata layout, plus what the nightly run adds.
    assert metadata["dataset"]["fingerprint"] == report["dataset"]["fingerprint"]
    assert metadata["dataset"]["nnz"] == report["dataset"]["interactions"]
    assert metadata["evaluation"]["users"] == report["validation_users"]
    assert metadata["nightly"]["warm_start"] == "no current model"
    assert (tmp / "store" / "versions" / "v0001" / "popularity.npy").is_file()
    assert not (tmp / "work" / "nightly.lock").exists()
    assert not (tmp / "store" / "publish.json").exists()


def check_quality_gate_refuses_changes_nothing_and_prunes(tmp: Path, before: bytes) -> None:
    # A negative tolerance demands an impossible improvement of 1.0 in NDCG@100.
    for expected_versions in (["v0001", "v0002"], ["v0001", "v0003"]):
        done = nightly(write_config(tmp, tolerance=-1.0, keep=1))
        assert done.exit_code == 3, done.output
        assert "not promoted" in done.output
        report = last_report(tmp)
        assert report["status"] == "refused" and report["exit_code"] == 3
        assert report["warm_start"].startswith("from v0001: 120 items copied by id, 0 new")
        # The current model was evaluated on the same validation users as the new one.
        assert report["metrics_current"]["ndcg@100"] > 0
        assert current(tmp) == "v0001"
        assert (tmp / "out" / "recs.parquet").read_bytes() == before
        # keep = 1: the newest version (kept for inspection) and current survive the prune.
        assert sorted(p.name for p in (tmp / "store" / "versions").iterdir()) == expected_versions
    assert last_report(tmp)["pruned"] == ["v0002"]


def check_volume_gate_refuses_a_collapsed_log(tmp: Path, before: bytes) -> None:
    synth_log(tmp / "small.parquet", n_users=150)  # 400 -> 150 users: a 62.5% drop
    done = nightly(write_config(tmp, log="small.parquet"))
    assert done.exit_code == 4, done.output
    report = last_report(tmp)
    assert report["status"] == "refused_volume" and report["exit_code"] == 4
    gate = report["volume_gate"]
    assert (gate["users"], gate["last_users"], gate["max_drop"]) == (150, 400, 0.5)
    assert "fell by 62.5%, more than the allowed 50%" in gate["reason"]
    assert "train" not in report["timings"] and "pruned" in report
    assert current(tmp) == "v0001"
    assert (tmp / "out" / "recs.parquet").read_bytes() == before
    # The last good dataset (what the export job reads) is not replaced by the collapsed one.
    manifest = json.loads((tmp / "work" / "dataset" / "manifest.json").read_text())
    assert manifest["shape"][0] == 400


def check_bad_logs_fail_clearly_and_change_nothing(tmp: Path, before: bytes) -> None:
    pl.DataFrame({"who": ["a"], "what": [1]}).write_parquet(tmp / "bad.parquet")
    done = nightly(write_config(tmp, log="bad.parquet"))
    assert done.exit_code == 1
    assert "nightly job failed" in done.output and "bad.parquet" in done.output
    assert "current model and published export are unchanged" in done.output
    assert last_report(tmp)["status"] == "failed" and last_report(tmp)["exit_code"] == 1
    assert current(tmp) == "v0001"
    assert (tmp / "out" / "recs.parquet").read_bytes() == before


def check_nan_loss_fails_clearly_and_changes_nothing(tmp: Path, before: bytes) -> None:
    done = nightly(write_config(tmp, extra="lr = 1e30"))  # diverges in the first update
    assert done.exit_code == 1
    assert "training loss became nan" in done.output
    assert last_report(tmp)["status"] == "failed"
    assert current(tmp) == "v0001"
    assert (tmp / "out" / "recs.parquet").read_bytes() == before


def check_killed_run_leaves_current_untouched_and_rerun_resumes(tmp: Path, before: bytes):
    config = write_config(tmp, epochs=60, tolerance=1.0)
    command = [sys.executable, "-m", "recvae", "nightly", "--config", str(config)]
    job = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    for line in job.stdout:
        if line.startswith("epoch 3 done"):
            job.send_signal(signal.SIGKILL)  # mid-training: 57 epochs to go
            break
    job.wait(timeout=60)
    assert job.returncode == -signal.SIGKILL
    assert current(tmp) == "v0001"
    assert (tmp / "out" / "recs.parquet").read_bytes() == before
    lock = json.loads((tmp / "work" / "nightly.lock").read_text())
    assert lock["pid"] == job.pid  # left behind by the dead process: stale
    (tmp / "out" / ".recs.parquet.tmp-abc123").write_text("half an export of a dead run")
    staging = tmp / "out" / "..recs.parquet.publish-v0009.tmp-999999-abcd"
    staging.write_text("half a staged export of a dead run")

    done = run_subprocess(config)
    assert done.returncode == 0, done.stderr
    report = last_report(tmp)
    assert report["status"] == "promoted"
    assert report["resumed_from_epoch"] >= 3
    assert report["epochs_trained_this_run"] == 60 - report["resumed_from_epoch"]
    assert current(tmp) == report["new_version"]
    assert export_versions(tmp) == {report["new_version"]}
    assert not (tmp / "out" / ".recs.parquet.tmp-abc123").exists() and not staging.exists()
    assert any(".recs.parquet.tmp-abc123" in path for path in report["removed_temporary"])


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
        command = [sys.executable, str(EXPORT_JOB), *args]
        done = subprocess.run(command, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
    parts = [pl.read_parquet(tmp / "shards" / f"recs-{shard}.parquet") for shard in range(2)]
    assert parts[0].height > 0 and parts[1].height > 0
    assert pl.concat(parts).equals(pl.read_parquet(tmp / "out" / "recs.parquet"))


def test_nightly_end_to_end(tmp_path):
    """Promote, refuse at both gates, fail on bad logs, get killed, resume: as cron sees it."""
    synth_log(tmp_path / "log.parquet")
    done = nightly(write_config(tmp_path))
    assert done.exit_code == 0, done.output
    check_first_run_promoted_exported_and_reported(tmp_path)
    before = (tmp_path / "out" / "recs.parquet").read_bytes()
    check_quality_gate_refuses_changes_nothing_and_prunes(tmp_path, before)
    check_volume_gate_refuses_a_collapsed_log(tmp_path, before)
    check_bad_logs_fail_clearly_and_change_nothing(tmp_path, before)
    check_nan_loss_fails_clearly_and_changes_nothing(tmp_path, before)
    check_killed_run_leaves_current_untouched_and_rerun_resumes(tmp_path, before)
    check_sharded_export_job_equals_nightly_export(tmp_path)


def test_ease_trains_gates_and_publishes_to_duckdb(tmp_path):
    """A non-torch model through the same job; the export goes to a DuckDB table."""
    import duckdb

    synth_log(tmp_path / "log.parquet")
    train = '[train]\nmodel = "ease"\n[train.config]\nl2 = 50.0'
    config = write_config(tmp_path, train=train, export="out/recs.duckdb")
    for version in ("v0001", "v0002"):
        done = nightly(config)
        assert done.exit_code == 0, done.output
        report = last_report(tmp_path)
        assert report["model"] == "ease" and report["metrics_new"]["ndcg@100"] > 0
        assert current(tmp_path) == version
        with duckdb.connect(str(tmp_path / "out" / "recs.duckdb"), read_only=True) as con:
            tables = {row[0] for row in con.execute("SHOW TABLES").fetchall()}
            versions = con.execute("SELECT DISTINCT model_version FROM recommendations")
            assert tables == {"recommendations"}
            assert versions.fetchall() == [(version,)]
    # The second run compared EASE with the current EASE on the same validation users.
    assert last_report(tmp_path)["metrics_current"] == last_report(tmp_path)["metrics_new"]


def test_warm_start_survives_new_items_and_they_reach_recommendations(tmp_path):
    synth_log(tmp_path / "log.parquet")
    synth_log(tmp_path / "grown.parquet", new_items=3)  # items 120, 121, 122 appear
    assert nightly(write_config(tmp_path, epochs=30)).exit_code == 0
    done = nightly(write_config(tmp_path, epochs=30, tolerance=1.0, log="grown.parquet"))
    assert done.exit_code == 0, done.output
    report = last_report(tmp_path)
    assert report["warm_start"] == (
        "from v0001: 120 items copied by id, 3 new items initialised, 0 items gone"
    )
    recs = pl.read_parquet(tmp_path / "out" / "recs.parquet")
    items = recs["item_id"].cast(pl.Int64)
    recommended = set(items.filter(items >= 120))
    assert recommended == {120, 121, 122}
    assert set(recs["model_version"]) == {"v0002"}


BLEND = """
[train]
model = "blend"
[train.config]
weights = [0.7, 0.3]
[[train.config.members]]
model = "multdae"
hidden_dims = [32]
latent_dim = 8
[train.config.members.loop]
epochs = 3
threads = 1
[[train.config.members]]
model = "ease"
l2 = 50.0
"""


def test_a_blend_trains_and_publishes_through_the_same_job(tmp_path):
    synth_log(tmp_path / "log.parquet")
    done = nightly(write_config(tmp_path, train=BLEND))
    assert done.exit_code == 0, done.output
    report = last_report(tmp_path)
    assert report["model"] == "blend" and report["metrics_new"]["ndcg@100"] > 0
    assert export_versions(tmp_path) == {"v0001"} and current(tmp_path) == "v0001"
    model_json = json.loads((tmp_path / "store" / "current" / "model.json").read_text())
    assert model_json["model"] == "blend"


def test_live_lock_refuses_a_second_run(tmp_path):
    synth_log(tmp_path / "log.parquet")
    config = write_config(tmp_path)
    (tmp_path / "work").mkdir()
    holder = {"pid": os.getpid(), "hostname": os.uname().nodename, "started_at": "now"}
    (tmp_path / "work" / "nightly.lock").write_text(json.dumps(holder))
    done = nightly(config)
    assert done.exit_code == 1
    assert "another run is in progress" in done.output
    assert not (tmp_path / "store").exists()


@pytest.mark.parametrize(
    ("section", "old", "new", "words"),
    [
        ("export", "k = 10", 'k = "ten"', "[export] k = 'ten': expected an integer >= 1"),
        ("export", "k = 10", "k = 10\nchunk_size = 0", "[export] chunk_size = 0: expected an"),
        ("split", "valid_users = 80", 'valid_users = "200"', "[split] valid_users = '200'"),
        ("split", "valid_users = 80", "heldout_fraction = 1.0", "[split] heldout_fraction ="),
        ("gate", "tolerance = 0.01", "tolerence = 0.01", "unknown key 'tolerence' in [gate]"),
        ("gate", "tolerance = 0.01", 'metric = "ndgc@10"', "[gate] metric: unknown metric"),
        ("gate", "tolerance = 0.01", "max_volume_drop = 2", "[gate] max_volume_drop = 2"),
        ("train.config", "latent_dim = 8", 'latent_dim = "8"', "[train.config]: latent_dim"),
        ("data", "log.parquet", "missing.parquet", "[data] sources:"),
        ("train", 'model = "multvae"', 'model = "vae"', "[train] model ="),
        ("paths", "out/recs.parquet", "out/recs.xlsx", "[paths] export: cannot tell"),
    ],
)
def test_check_refuses_bad_values_in_one_line_before_any_work(tmp_path, section, old, new, words):
    synth_log(tmp_path / "log.parquet")
    config = write_config(tmp_path)
    config.write_text(config.read_text().replace(old, new))
    for args in (["--check"], []):
        done = nightly(config, *args)
        assert done.exit_code == 2, done.output
        assert words in done.output and len(done.output.strip().splitlines()) == 1
    assert not (tmp_path / "work").exists() and not (tmp_path / "store").exists()


def test_check_failure_is_exit_2_and_one_red_line_from_the_real_command(tmp_path):
    synth_log(tmp_path / "log.parquet")
    config = write_config(tmp_path)
    config.write_text(config.read_text().replace("k = 10", "k = 10\nchunk_size = 0"))
    command = [sys.executable, "-m", "recvae", "nightly", "--config", str(config), "--check"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"error: {config}: [export] chunk_size = 0: expected an integer >= 1"
    ]


def test_check_accepts_a_good_config_and_names_what_it_checked(tmp_path):
    synth_log(tmp_path / "log.parquet")
    done = nightly(write_config(tmp_path), "--check")
    assert done.exit_code == 0, done.output
    assert "config and 1 source(s) OK (model multvae" in done.output
    assert not (tmp_path / "work").exists()


def test_without_a_model_the_job_runs_auto_and_says_how_to_pin_one(tmp_path):
    """No [train] model: auto (the best of its candidates). A model's own settings in
    [train.config] without naming the model are refused with the way to name it."""
    synth_log(tmp_path / "log.parquet")
    done = nightly(write_config(tmp_path, train=""), "--check")
    assert done.exit_code == 0, done.output
    assert "(model auto" in done.output
    done = nightly(write_config(tmp_path, train="[train.config]\nlatent_dim = 8"), "--check")
    assert done.exit_code == 2 and 'model = "auto" takes only' in done.output
    assert "name the model" in done.output


def test_unreadable_source_is_refused_by_check(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root reads files whatever their mode")
    synth_log(tmp_path / "log.parquet")
    (tmp_path / "log.parquet").chmod(0)
    done = nightly(write_config(tmp_path), "--check")
    assert done.exit_code == 2 and "cannot be read" in done.output


def test_the_packaged_example_is_the_jobs_example_and_valid(tmp_path):
    from recvae.nightly_config import load_nightly_config

    packaged = (ROOT / "recvae" / "nightly_example.toml").read_text()
    assert (ROOT / "jobs" / "examples" / "nightly.toml").read_text() == packaged
    result = runner.invoke(app, ["nightly", "--example"])
    assert result.exit_code == 0 and result.output == packaged
    (tmp_path / "nightly.toml").write_text(packaged)
    config = load_nightly_config(tmp_path / "nightly.toml")  # every value passes the checks
    assert config.model == "auto" and config.max_volume_drop == 0.5
    assert config.store == tmp_path / "var" / "models"
    done = nightly(tmp_path / "nightly.toml", "--check")  # only the sources are missing
    assert done.exit_code == 2 and "[data] sources:" in done.output


def test_json_logs_carry_the_status_and_the_report(tmp_path):
    synth_log(tmp_path / "log.parquet")
    args = ["--log-format", "json", "nightly", "--config", str(write_config(tmp_path))]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.stderr.splitlines()]  # every line is JSON
    events = {record.get("event") for record in records}
    assert {"nightly.volume_gate", "nightly.gate", "nightly.promoted", "report"} <= events
    report = next(record for record in records if record.get("event") == "report")
    assert Path(report["path"]).parent.parent == tmp_path / "work" / "runs"
