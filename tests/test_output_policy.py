"""The output policy (recvae.io.check_output) through every command that writes a user-named path,
plus durable atomic writes and the removal of stale temporaries of dead processes."""

import json
import os
import subprocess
import sys

import duckdb
import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest
import scipy.sparse as sp
from typer.testing import CliRunner

from recvae.cli import app
from recvae.errors import RecvaeError
from recvae.io import (
    atomic_dir,
    atomic_file,
    check_output,
    owned_temp_dir,
    remove_stale_temps,
    temp_name,
)

runner = CliRunner()


def write_log(path):
    rows = [f"u{u},i{(u * 7 + j) % 15}" for u in range(40) for j in range(4)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("user_id,item_id\n" + "\n".join(rows) + "\n")
    return path


def refused(result, *words):
    """The command stopped with one RecvaeError line containing `words`."""
    assert isinstance(result.exception, RecvaeError), result.output
    message = str(result.exception)
    assert "\n" not in message
    for word in words:
        assert word in message, message
    return message


def dead_pid():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


# ---- ingest ---------------------------------------------------------------------------------


def test_ingest_refuses_out_that_holds_its_input_and_keeps_the_users_files(tmp_path):
    log = write_log(tmp_path / "sb1" / "log.csv")
    (tmp_path / "sb1" / "notes.txt").write_text("mine")
    result = runner.invoke(app, ["ingest", str(log), "--out", str(tmp_path / "sb1")])
    refused(result, "lies inside it", "log.csv")
    assert sorted(p.name for p in (tmp_path / "sb1").iterdir()) == ["log.csv", "notes.txt"]


def test_ingest_refuses_a_directory_recvae_did_not_write(tmp_path):
    log = write_log(tmp_path / "log.csv")
    (tmp_path / "mydocs").mkdir()
    (tmp_path / "mydocs" / "report.docx").write_text("mine")
    result = runner.invoke(app, ["ingest", str(log), "--out", str(tmp_path / "mydocs")])
    refused(result, "did not write", "report.docx")
    assert (tmp_path / "mydocs" / "report.docx").read_text() == "mine"


def test_ingest_refuses_to_write_over_its_input_file(tmp_path):
    log = write_log(tmp_path / "sb3" / "log.csv")
    result = runner.invoke(app, ["ingest", str(log), "--out", str(log)])
    refused(result, "it is the input")
    assert log.is_file()


def test_ingest_replaces_its_own_dataset_and_says_so(tmp_path):
    log = write_log(tmp_path / "log.csv")
    out = tmp_path / "ds"
    first = runner.invoke(app, ["ingest", str(log), "--out", str(out)])
    assert first.exit_code == 0, first.output
    assert "replaced" not in first.output
    second = runner.invoke(app, ["ingest", str(log), "--out", str(out)])
    assert second.exit_code == 0, second.output
    assert "replaced the existing dataset" in second.output
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_ingest_into_an_empty_directory_is_allowed(tmp_path):
    log = write_log(tmp_path / "log.csv")
    (tmp_path / "empty").mkdir()
    result = runner.invoke(app, ["ingest", str(log), "--out", str(tmp_path / "empty")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "empty" / "manifest.json").is_file()


# ---- train ----------------------------------------------------------------------------------

TRAIN_FAST = ["--model", "multvae", "--epochs", "1", "--set", "hidden_dims=[8]"]
TRAIN_FAST += ["--set", "latent_dim=4"]
TRAIN_FAST += ["--set", "metric='ndcg@5'", "--no-progress"]


def test_train_refuses_foreign_directory_before_training(tmp_path):
    log = write_log(tmp_path / "log.csv")
    assert runner.invoke(app, ["ingest", str(log), "--out", str(tmp_path / "ds")]).exit_code == 0
    (tmp_path / "mydocs").mkdir()
    (tmp_path / "mydocs" / "report.docx").write_text("mine")
    args = ["train", str(tmp_path / "ds"), "--out", str(tmp_path / "mydocs"), *TRAIN_FAST]
    refused(runner.invoke(app, args), "did not write", "report.docx")
    assert (tmp_path / "mydocs" / "report.docx").read_text() == "mine"
    # a dataset is not a model: training onto it is refused too
    args = ["train", str(tmp_path / "ds"), "--out", str(tmp_path / "ds"), *TRAIN_FAST]
    refused(runner.invoke(app, args), "it is the input")


def test_train_refuses_a_log_path_that_is_not_a_training_log(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n")
    args = ["train", str(tmp_path / "ds"), "--out", str(tmp_path / "m"), "--log", str(notes),
            "--model", "multvae"]
    refused(runner.invoke(app, [*args, *TRAIN_FAST]), "not a recvae training log")
    assert notes.read_text() == "my notes\n"


def test_train_replaces_its_own_model_and_says_so(tmp_path):
    log = write_log(tmp_path / "log.csv")
    assert runner.invoke(app, ["ingest", str(log), "--out", str(tmp_path / "ds")]).exit_code == 0
    args = ["train", str(tmp_path / "ds"), "--out", str(tmp_path / "m"), *TRAIN_FAST]
    assert runner.invoke(app, args).exit_code == 0
    second = runner.invoke(app, args)
    assert second.exit_code == 0, second.output
    assert "replaced the existing model" in second.output
    other = ["train", str(tmp_path / "ds"), "--out", str(tmp_path / "ds2"), *TRAIN_FAST]
    (tmp_path / "ds2").mkdir()
    (tmp_path / "ds2" / "manifest.json").write_text(json.dumps({"format": "recvae-dataset/1"}))
    refused(runner.invoke(app, other), "recvae dataset directory", "not a recvae model directory")


# ---- recommend / export ---------------------------------------------------------------------


@pytest.fixture
def model_and_history(tmp_path):
    from recvae.artifact import Artifact, save_artifact
    from recvae.data.dataset import Dataset
    from recvae.data.vocab import Vocabulary
    from recvae.models.popularity import Popularity

    matrix = sp.csr_matrix((np.random.default_rng(0).random((10, 6)) < 0.4).astype(np.float32))
    items = Vocabulary([f"i{j}" for j in range(6)], name="item")
    Dataset(matrix, Vocabulary(list(range(10)), name="user"), items).save(tmp_path / "ds")
    save_artifact(Artifact(Popularity().fit(matrix), items, {"version": "v0007"}), tmp_path / "m")
    return tmp_path / "m", tmp_path / "ds"


def recommend(model, history, out, *extra):
    args = ["recommend", str(model), "--history", str(history), "--out", str(out), "--k", "2"]
    return runner.invoke(app, [*args, *extra])


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_recommend_refuses_a_user_file_unless_overwrite(tmp_path, model_and_history, suffix):
    out = tmp_path / f"mine{suffix}"
    if suffix == ".csv":
        out.write_text("name,phone\nann,123\n")
    else:
        pl.DataFrame({"name": ["ann"]}).write_parquet(out)
    before = out.read_bytes()
    refused(recommend(*model_and_history, out), "--overwrite", "cannot tell it wrote")
    assert out.read_bytes() == before
    result = recommend(*model_and_history, out, "--overwrite")
    assert result.exit_code == 0, result.output
    again = recommend(*model_and_history, out)  # now an export recvae wrote: replaced freely
    assert again.exit_code == 0, again.output


def test_recommend_never_overwrites_an_input(tmp_path, model_and_history):
    model, history = model_and_history
    users = tmp_path / "users.csv"
    users.write_text("0\n1\n")
    refused(recommend(model, history, users, "--users", str(users), "--overwrite"), "the input")
    assert users.read_text() == "0\n1\n"


def test_parquet_export_records_its_model_version(tmp_path, model_and_history):
    out = tmp_path / "recs.parquet"
    assert recommend(*model_and_history, out).exit_code == 0
    marker = json.loads(pq.read_schema(out).metadata[b"recvae"])
    assert marker["kind"] == "recommendations"
    assert marker["model_version"] == "v0007"


def test_duckdb_export_refuses_a_foreign_table_unless_overwrite(tmp_path, model_and_history):
    out = tmp_path / "shop.duckdb"
    with duckdb.connect(str(out)) as con:
        con.execute("CREATE TABLE recommendations AS SELECT 1 AS customer, 'x' AS note")
    refused(recommend(*model_and_history, out), "refusing to replace table recommendations")
    with duckdb.connect(str(out)) as con:
        assert con.execute("SELECT customer FROM recommendations").fetchall() == [(1,)]
    assert recommend(*model_and_history, out, "--overwrite").exit_code == 0
    assert recommend(*model_and_history, out).exit_code == 0  # its own table: replaced
    not_duckdb = tmp_path / "notes.duckdb"
    not_duckdb.write_text("hello")
    refused(recommend(*model_and_history, not_duckdb, "--overwrite"), "not a DuckDB database")
    assert not_duckdb.read_text() == "hello"


# ---- tune, models add, demo, bench ----------------------------------------------------------


def test_tune_models_add_and_demo_refuse_foreign_directories(tmp_path, model_and_history):
    model, history = model_and_history
    foreign = tmp_path / "docs"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("mine")
    tune = ["tune", str(history), "--out", str(foreign), "--trials", "1", "--model", "ease"]
    refused(runner.invoke(app, tune), "not a recvae tuning study")
    refused(runner.invoke(app, ["models", "add", str(foreign), str(model)]), "model store")
    refused(runner.invoke(app, ["demo", "--workdir", str(foreign)]), "not a recvae demo")
    assert [p.name for p in foreign.iterdir()] == ["thesis.tex"]


def test_bench_report_directory_of_another_kind_is_refused(tmp_path):
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "a.txt").write_text("x")
    with pytest.raises(RecvaeError, match="not a recvae bench report"):
        check_output(tmp_path / "r", "bench report")


# ---- check_output itself --------------------------------------------------------------------


def test_check_output_rules(tmp_path):
    assert check_output(tmp_path / "new", "model") is False
    (tmp_path / "empty").mkdir()
    assert check_output(tmp_path / "empty", "dataset") is False
    (tmp_path / "file").write_text("x")
    with pytest.raises(RecvaeError, match="a file recvae cannot tell it wrote"):
        check_output(tmp_path / "file", "dataset", overwrite=True)  # never a file for a dir
    (tmp_path / "link").symlink_to(tmp_path / "gone")
    with pytest.raises(RecvaeError, match="broken symbolic link"):
        check_output(tmp_path / "link", "export")
    (tmp_path / "empty" / "in.csv").write_text("x")
    with pytest.raises(RecvaeError, match="lies inside it"):
        check_output(tmp_path / "empty", "dataset", [tmp_path / "empty" / "in.csv"])
    with pytest.raises(ValueError):
        check_output(tmp_path / "new", "nonsense")


# ---- stale temporaries and durability -------------------------------------------------------


def test_temp_names_carry_the_pid_and_dead_ones_are_removed(tmp_path):
    dest = tmp_path / "recs.parquet"
    assert f".recs.parquet.tmp-{os.getpid()}-" in temp_name(dest).name
    pid = dead_pid()
    stale_file = tmp_path / f".recs.parquet.tmp-{pid}-ab12cd34"
    stale_file.write_bytes(b"x" * 1000)
    stale_dir = tmp_path / f".recs.parquet.old-{pid}-0a1b2c3d"
    stale_dir.mkdir()
    live = tmp_path / f".recs.parquet.tmp-{os.getppid()}-ab12cd34"  # a live process's
    live.write_text("busy")
    # another destination's, never written again (a staged file named after a version)
    other = tmp_path / f"..recs.parquet.publish-v0002.tmp-{pid}-ab12cd34"
    other.write_text("x")
    users = tmp_path / ".notes.tmp-backup"  # not a recvae temporary name
    users.write_text("mine")
    with atomic_file(dest) as tmp:
        tmp.write_text("new")
    assert not stale_file.exists() and not stale_dir.exists() and not other.exists()
    assert live.exists() and users.exists()
    assert dest.read_text() == "new"
    assert remove_stale_temps(dest) == []


def test_a_killed_checkpoint_write_is_cleaned_by_the_next_one(tmp_path):
    pid = dead_pid()
    stale = tmp_path / f".best.tmp-{pid}-00ff00ff"
    stale.mkdir()
    (stale / "weights.safetensors").write_bytes(b"half")
    with atomic_dir(tmp_path / "best") as tmp:
        (tmp / "state.json").write_text("{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best"]


def test_owned_temp_dir_removes_dead_processes_scratch(tmp_path, monkeypatch):
    import tempfile

    monkeypatch.setattr(tempfile, "gettempdir", lambda: str(tmp_path))
    stale = tmp_path / f"recvae-test-{dead_pid()}-0a0b0c0d"
    stale.mkdir()
    with owned_temp_dir("recvae-test-") as scratch:
        assert scratch.name.startswith(f"recvae-test-{os.getpid()}-")
        assert not stale.exists()
    assert not scratch.exists()


def test_atomic_writes_fsync_the_file_and_its_directory(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync

    def spy(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", spy)
    with atomic_file(tmp_path / "a.txt") as tmp:
        tmp.write_text("a")
    assert any(".a.txt.tmp-" in path for path in synced)  # the file, before the rename
    assert str(tmp_path) in synced  # the directory, after it
    synced.clear()
    with atomic_dir(tmp_path / "d") as tmp:
        (tmp / "f").write_text("f")
    assert any(path.endswith("/f") for path in synced)
    assert str(tmp_path) in synced


def test_synth_never_replaces_an_existing_file_without_overwrite(tmp_path):
    log = write_log(tmp_path / "log.csv")
    before = log.read_text()
    args = ["synth", "--out", str(log), "--users", "5", "--items", "5", "--interactions", "20"]
    refused(runner.invoke(app, args), "--overwrite")
    assert log.read_text() == before
    assert runner.invoke(app, [*args, "--overwrite"]).exit_code == 0
    assert log.read_text() != before


def test_promotion_is_durable_and_cleans_a_killed_switch(tmp_path, monkeypatch):
    from recvae.artifact import Artifact, save_artifact
    from recvae.data.vocab import Vocabulary
    from recvae.models.popularity import Popularity
    from recvae.registry import ModelStore

    model = Popularity().fit(sp.csr_matrix(np.ones((2, 3), np.float32)))
    save_artifact(Artifact(model, Vocabulary(["a", "b", "c"], name="item")), tmp_path / "m")
    store = ModelStore(tmp_path / "store")
    store.add(tmp_path / "m")
    stale = store.root / f".current.tmp-{dead_pid()}-0badc0de"
    stale.symlink_to("versions/v0001")
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(
        os, "fsync", lambda fd: (synced.append(os.readlink(f"/proc/self/fd/{fd}")), real_fsync(fd))
    )
    store.promote("v0001")
    assert str(store.root) in synced
    assert not stale.is_symlink()
    assert store.current_name() == "v0001"


def test_an_export_is_recognised_by_content_not_suffix(tmp_path, model_and_history):
    out = tmp_path / "recs.txt"
    assert recommend(*model_and_history, out, "--format", "csv").exit_code == 0
    again = recommend(*model_and_history, out, "--format", "csv")  # its own export: replaced
    assert again.exit_code == 0, again.output
    parquet = tmp_path / "recs.data"
    assert recommend(*model_and_history, parquet, "--format", "parquet").exit_code == 0
    assert recommend(*model_and_history, parquet, "--format", "parquet").exit_code == 0
