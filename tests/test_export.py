import duckdb
import polars as pl
import pytest

from recvae.errors import RecvaeError
from recvae.export import infer_format, write_export
from recvae.scoring import empty_frame

SCHEMA = empty_frame(pl.Int64, pl.String).schema


def frames(n_chunks=3):
    for chunk in range(n_chunks):
        yield pl.DataFrame(
            {
                "user_id": [chunk, chunk],
                "rank": [1, 2],
                "item_id": ["x", "y"],
                "score": [0.5, 0.25],
                "model_version": ["v0001", "v0001"],
                "fallback": [False, True],
            },
            schema=SCHEMA,
        )


def expected():
    return pl.concat(list(frames()))


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_file_exports_round_trip(tmp_path, suffix):
    dest = tmp_path / f"recs{suffix}"
    summary = write_export(frames(), dest, SCHEMA)
    assert summary.rows == 6
    read = pl.read_parquet(dest) if suffix == ".parquet" else pl.read_csv(dest, schema=SCHEMA)
    assert read.equals(expected())
    assert [p.name for p in tmp_path.iterdir()] == [dest.name]  # no temporary files left


def test_duckdb_export_replaces_only_its_table(tmp_path):
    dest = tmp_path / "out.duckdb"
    with duckdb.connect(str(dest)) as con:
        con.execute("CREATE TABLE other AS SELECT 42 AS answer")
    write_export(frames(1), dest, SCHEMA, table="recs")
    write_export(frames(), dest, SCHEMA, table="recs")
    with duckdb.connect(str(dest)) as con:
        assert con.execute("SELECT count(*) FROM recs").fetchone() == (6,)
        assert con.execute("SELECT answer FROM other").fetchone() == (42,)
        tables = {row[0] for row in con.execute("SHOW TABLES").fetchall()}
    assert tables == {"recs", "other"}


def failing_frames():
    yield from frames(1)
    raise RuntimeError("scoring crashed")


@pytest.mark.parametrize("suffix", [".parquet", ".csv", ".duckdb"])
def test_crash_midway_leaves_the_previous_export_untouched(tmp_path, suffix):
    dest = tmp_path / f"recs{suffix}"
    write_export(frames(), dest, SCHEMA)
    with pytest.raises(RuntimeError, match="scoring crashed"):
        write_export(failing_frames(), dest, SCHEMA)
    if suffix == ".duckdb":
        with duckdb.connect(str(dest)) as con:
            assert con.execute("SELECT count(*) FROM recommendations").fetchone() == (6,)
            assert len(con.execute("SHOW TABLES").fetchall()) == 1  # staging table dropped
    else:
        read = pl.read_parquet(dest) if suffix == ".parquet" else pl.read_csv(dest, schema=SCHEMA)
        assert read.equals(expected())
        assert [p.name for p in tmp_path.iterdir()] == [dest.name]


def test_empty_export_is_a_valid_file_with_the_schema(tmp_path):
    dest = tmp_path / "none.parquet"
    assert write_export(iter([]), dest, SCHEMA).rows == 0
    assert pl.read_parquet(dest).schema == SCHEMA


def test_format_errors_say_what_to_do(tmp_path):
    with pytest.raises(RecvaeError, match=r"use \.parquet, \.csv, or \.duckdb"):
        infer_format(tmp_path / "recs.txt")
    with pytest.raises(RecvaeError, match="letters, digits and underscores"):
        write_export(frames(), tmp_path / "x.duckdb", SCHEMA, table="drop table;")


# ---- `recvae recommend` end to end ---------------------------------------------------------


def make_model_and_dataset(tmp_path):
    """An EASE model on 30 users x 12 items, saved as an artifact, and its dataset directory."""
    import numpy as np
    import scipy.sparse as sp

    from recvae.artifact import Artifact, save_artifact
    from recvae.data.dataset import Dataset
    from recvae.data.vocab import Vocabulary
    from recvae.models.ease import EASE

    rng = np.random.default_rng(3)
    dense = (rng.random((30, 12)) < 0.3).astype(np.float32)
    dense[5] = 0  # a user with no history -> popularity fallback
    matrix = sp.csr_matrix(dense)
    items = Vocabulary([f"item{j}" for j in range(12)], name="item")
    users = Vocabulary(np.arange(100, 130), name="user")
    Dataset(matrix, users, items).save(tmp_path / "ds")
    model_dir = tmp_path / "model"
    artifact = Artifact(EASE(l2=10.0).fit(matrix), items, {"version": "v0042"})
    save_artifact(artifact, model_dir, train=matrix)
    return model_dir, tmp_path / "ds", dense


def test_recommend_cli_writes_top_k_without_seen_items(tmp_path):
    from typer.testing import CliRunner

    from recvae.cli import app

    model_dir, ds, dense = make_model_and_dataset(tmp_path)
    (tmp_path / "deny.txt").write_text("item0\nnot_an_item\n")
    out = tmp_path / "recs.parquet"
    args = ["recommend", str(model_dir), "--history", str(ds), "--out", str(out), "--k", "3"]
    result = CliRunner().invoke(app, [*args, "--deny-items", str(tmp_path / "deny.txt")])
    assert result.exit_code == 0, result.output
    assert "users/s" in result.output
    recs = pl.read_parquet(out)
    assert recs.columns == ["user_id", "rank", "item_id", "score", "model_version", "fallback"]
    assert recs["user_id"].n_unique() == 30
    assert set(recs["model_version"]) == {"v0042"}
    assert "item0" not in set(recs["item_id"])
    for row in recs.iter_rows(named=True):
        user, item = row["user_id"] - 100, int(row["item_id"][4:])
        assert dense[user, item] == 0, "a seen item was recommended"
    assert recs.filter(pl.col("fallback"))["user_id"].unique().to_list() == [105]


def test_shards_together_equal_the_unsharded_export(tmp_path):
    from typer.testing import CliRunner

    from recvae.cli import app

    model_dir, ds, _ = make_model_and_dataset(tmp_path)
    base = ["recommend", str(model_dir), "--history", str(ds), "--k", "4", "--chunk-size", "7"]
    runner = CliRunner()
    assert runner.invoke(app, [*base, "--out", str(tmp_path / "all.csv")]).exit_code == 0
    for shard in range(3):
        shard_args = ["--shard", str(shard), "--num-shards", "3"]
        out = ["--out", str(tmp_path / f"part{shard}.csv")]
        assert runner.invoke(app, [*base, *shard_args, *out]).exit_code == 0
    parts = [pl.read_csv(tmp_path / f"part{shard}.csv") for shard in range(3)]
    assert all(part.height > 0 for part in parts)
    assert pl.concat(parts).equals(pl.read_csv(tmp_path / "all.csv"))


def test_item_block_export_has_the_same_rows_as_the_unblocked_one(tmp_path):
    from typer.testing import CliRunner

    from recvae.cli import app

    model_dir, ds, _ = make_model_and_dataset(tmp_path)
    base = ["recommend", str(model_dir), "--history", str(ds), "--k", "4"]
    runner = CliRunner()
    assert runner.invoke(app, [*base, "--out", str(tmp_path / "all.csv")]).exit_code == 0
    blocked = [*base, "--item-block", "5", "--out", str(tmp_path / "blocked.csv")]
    result = runner.invoke(app, blocked)
    assert result.exit_code == 0, result.output
    whole, chunked = pl.read_csv(tmp_path / "all.csv"), pl.read_csv(tmp_path / "blocked.csv")
    assert chunked.drop("score").equals(whole.drop("score"))
    assert (chunked["score"] - whole["score"]).abs().max() < 1e-5
    bad = runner.invoke(app, [*base, "--item-block", "0", "--out", str(tmp_path / "x.csv")])
    assert bad.exit_code == 2


def test_recommend_for_listed_users_includes_unknown_user_as_fallback(tmp_path):
    from typer.testing import CliRunner

    from recvae.cli import app

    model_dir, ds, _ = make_model_and_dataset(tmp_path)
    (tmp_path / "users.txt").write_text("101\n999\n")
    out = tmp_path / "recs.duckdb"
    args = ["recommend", str(model_dir), "--history", str(ds), "--out", str(out), "--k", "2"]
    result = CliRunner().invoke(app, [*args, "--users", str(tmp_path / "users.txt")])
    assert result.exit_code == 0, result.output
    with duckdb.connect(str(out)) as con:
        rows = con.execute(
            "SELECT user_id, bool_and(fallback), count(*) FROM recommendations "
            "GROUP BY 1 ORDER BY 1"
        ).fetchall()
    assert rows == [(101, False, 2), (999, True, 2)]


def test_recommend_from_a_log_maps_items_and_flags_users_without_known_items(tmp_path):
    from typer.testing import CliRunner

    from recvae.cli import app

    model_dir, _, _ = make_model_and_dataset(tmp_path)
    log = tmp_path / "today.csv"
    log.write_text("customer,sku\nalice,item1\nalice,item2\nbob,brand_new_item\n")
    out = tmp_path / "recs.csv"
    args = ["recommend", str(model_dir), "--history", str(log), "--out", str(out), "--k", "2"]
    result = CliRunner().invoke(app, [*args, "--user-col", "customer", "--item-col", "sku"])
    assert result.exit_code == 0, result.output
    recs = pl.read_csv(out)
    alice = recs.filter(pl.col("user_id") == "alice")
    assert not alice["fallback"].any()
    assert not set(alice["item_id"]) & {"item1", "item2"}  # seen items excluded
    bob = recs.filter(pl.col("user_id") == "bob")
    assert bob["fallback"].all() and bob.height == 2  # only an unknown item: popularity
