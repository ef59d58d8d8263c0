"""Ingest on tiny logs whose results were worked out by hand."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from recvae.cli import app
from recvae.data.dataset import Dataset
from recvae.data.ingest import IngestOptions, ingest
from recvae.data.vocab import Vocabulary
from recvae.errors import RecvaeError

# u1 keeps i1,i2 (> 3.5); u2 keeps only i1 (then fails min-user-count 2); u3 keeps i2,i3,i4;
# u4 keeps nothing. With --min-rating 3.5 --min-user-count 2: 5 interactions, users u1,u3,
# items i1..i4.
RATINGS = """user,item,rating,ts
1,1,5,100
1,2,4,110
1,3,2,120
2,1,4,130
2,2,3,140
3,2,5,150
3,3,4,160
3,4,5,170
4,1,1,180
"""


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def dense(dataset: Dataset) -> dict[tuple, float]:
    coo = dataset.matrix.tocoo()
    users, items = dataset.users.ids.to_list(), dataset.items.ids.to_list()
    return {
        (users[r], items[c]): float(v) for r, c, v in zip(coo.row, coo.col, coo.data, strict=True)
    }


def test_paper_filters_on_a_hand_checked_log(tmp_path: Path) -> None:
    log = write(tmp_path / "log.csv", RATINGS)
    dataset = ingest([log], IngestOptions(min_rating=3.5, min_user_count=5 - 3))
    assert dense(dataset) == {(1, 1): 1, (1, 2): 1, (3, 2): 1, (3, 3): 1, (3, 4): 1}
    assert dataset.users.ids.to_list() == [1, 3]
    assert dataset.items.ids.to_list() == [1, 2, 3, 4]
    steps = [(s["step"], s["rows_before"], s["rows_after"]) for s in dataset.manifest["filters"]]
    assert steps == [("min_rating", 9, 6), ("dedupe", 6, 6), ("min_user_count", 6, 5)]
    assert dataset.manifest["sources"][0]["fingerprint"]["sha256_scope"] == "full"
    assert dataset.manifest["counts"] == {"interactions": 5, "users": 2, "items": 4}


def test_min_rating_is_strict(tmp_path: Path) -> None:
    log = write(tmp_path / "log.csv", RATINGS)
    assert ingest([log], IngestOptions(min_rating=4)).matrix.nnz == 3  # only the 5s
    assert ingest([log], IngestOptions(min_rating=3.9)).matrix.nnz == 6


def test_items_then_users_once_versus_k_core(tmp_path: Path) -> None:
    log = write(tmp_path / "log.csv", RATINGS)
    # after > 3.5: items i1 (u1,u2), i2 (u1,u3) have 2; i3, i4 have 1 -> rows u1i1,u1i2,u2i1,
    # u3i2; then users with 2: only u1.
    once = ingest([log], IngestOptions(min_rating=3.5, min_item_count=2, min_user_count=2))
    assert dense(once) == {(1, 1): 1, (1, 2): 1}
    # a 2-core must also give each item 2 users, and u1 alone cannot: nothing is left.
    with pytest.raises(RecvaeError, match="min_item_count"):
        ingest([log], IngestOptions(min_rating=3.5, k_core=2))


def test_k_core_reaches_a_fixed_point(tmp_path: Path) -> None:
    # a 2x2 block (users 1,2 x items 1,2) plus a pendant user 3 on item 1 and item 3 on user 1
    log = write(tmp_path / "log.csv", "user,item\n1,1\n1,2\n2,1\n2,2\n3,1\n1,3\n")
    dataset = ingest([log], IngestOptions(k_core=2))
    assert dense(dataset) == {(1, 1): 1, (1, 2): 1, (2, 1): 1, (2, 2): 1}


def test_dedupe_rules_weights_and_times(tmp_path: Path) -> None:
    log = write(tmp_path / "log.csv", "user,item,rating,ts\n1,1,5,100\n1,1,2,200\n1,2,4,50\n")
    last = ingest([log], IngestOptions(weights="rating"))
    assert dense(last) == {(1, 1): 2.0, (1, 2): 4.0}
    assert last.manifest["dedupe_rule"] == "last"
    assert dense(ingest([log], IngestOptions(weights="rating", dedupe="max"))) == {
        (1, 1): 5.0,
        (1, 2): 4.0,
    }
    assert dense(ingest([log], IngestOptions(weights="count"))) == {(1, 1): 2.0, (1, 2): 1.0}
    # the threshold judges events: the 5 of pair (1, 1) passes, its later 2 does not
    assert dense(ingest([log], IngestOptions(min_rating=3.5))) == {(1, 1): 1.0, (1, 2): 1.0}
    kept = ingest([log], IngestOptions(min_rating=3.5, weights="rating"))
    assert dense(kept) == {(1, 1): 5.0, (1, 2): 4.0}
    assert last.times is not None
    assert last.times.toarray().tolist() == [[200, 50]]


def test_time_window(tmp_path: Path) -> None:
    log = write(tmp_path / "log.csv", RATINGS)
    dataset = ingest([log], IngestOptions(since=120, until=160))
    # ts 120, 130, 140, 150 kept (until is exclusive)
    assert sorted(dense(dataset)) == [(1, 3), (2, 1), (2, 2), (3, 2)]
    iso = ingest([log], IngestOptions(since="1970-01-01T00:02:00", until="1970-01-01T00:02:40"))
    assert dense(iso) == dense(dataset)


def test_headerless_tsv_and_movielens_dat_gz(tmp_path: Path) -> None:
    import gzip

    write(tmp_path / "u.data", "1\t10\t5\t881250949\n2\t10\t3\t881250950\n")
    dataset = ingest([tmp_path / "u.data"])
    assert dense(dataset) == {(1, 10): 1, (2, 10): 1}
    assert dataset.manifest["sources"][0]["format"] == "movielens"
    with gzip.open(tmp_path / "ratings.dat.gz", "wt") as handle:
        handle.write("1::1193::5::978300760\n1::661::3::978302109\n2::1193::4::978298413\n")
    ml = ingest([tmp_path / "ratings.dat.gz"], IngestOptions(min_rating=3.5))
    assert dense(ml) == {(1, 1193): 1, (2, 1193): 1}


def test_recbole_style_header_is_detected(tmp_path: Path) -> None:
    text = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n1\t2\t4\t10\n"
    dataset = ingest([write(tmp_path / "ratings.tsv", text)], IngestOptions(weights="rating"))
    assert dense(dataset) == {(1, 2): 4.0}


def test_string_ids_parquet_ndjson_and_duckdb_agree(tmp_path: Path) -> None:
    frame = pl.DataFrame(
        {"visitor": ["a", "b", "a"], "sku": ["x", "x", "y"], "stars": [5.0, 4.0, 3.0]}
    )
    frame.write_parquet(tmp_path / "log.parquet")
    frame.write_ndjson(tmp_path / "log.ndjson")
    con = duckdb.connect(str(tmp_path / "log.duckdb"))
    con.execute("CREATE TABLE events AS SELECT * FROM frame")
    con.execute("CREATE TABLE other AS SELECT 1 AS x")
    con.close()
    options = IngestOptions(user_col="visitor", item_col="sku", min_rating=3.5)
    expected = {("a", "x"): 1, ("b", "x"): 1}
    assert dense(ingest([tmp_path / "log.parquet"], options)) == expected
    assert dense(ingest([tmp_path / "log.ndjson"], options)) == expected
    table = IngestOptions(user_col="visitor", item_col="sku", min_rating=3.5, table="events")
    assert dense(ingest([tmp_path / "log.duckdb"], table)) == expected
    query = IngestOptions(
        user_col="visitor", item_col="sku", query="SELECT * FROM events WHERE visitor = 'a'"
    )
    assert dense(ingest([tmp_path / "log.duckdb"], query)) == {("a", "x"): 1, ("a", "y"): 1}
    with pytest.raises(RecvaeError, match="holds 2 tables"):
        ingest([tmp_path / "log.duckdb"], options)


def test_lightgcn_presplit(tmp_path: Path) -> None:
    train = write(tmp_path / "train.txt", "0 0 1\n1 1 2\n2 0\n")
    valid = write(tmp_path / "valid.txt", "0 2\n1 3\n")
    dataset = ingest([train, valid], IngestOptions(split_sources=["train", "valid"]))
    assert dataset.items.ids.to_list() == [0, 1, 2, 3]  # item 3 is only in valid
    assert dataset.matrix.nnz == 7
    split = dataset.split
    assert split.protocol == "presplit"
    assert split.train.toarray().tolist() == [[1, 1, 0, 0], [0, 1, 1, 0], [1, 0, 0, 0]]
    assert split.valid.users.tolist() == [0, 1]
    assert split.valid.heldout.toarray().tolist() == [[0, 0, 1, 0], [0, 0, 0, 1]]
    assert split.valid.history.toarray().tolist() == [[1, 1, 0, 0], [0, 1, 1, 0]]
    assert split.test is None
    dataset.save(tmp_path / "ds")
    loaded = Dataset.load(tmp_path / "ds")
    assert loaded.split.valid.users.tolist() == [0, 1]


def test_item_vocab_drops_unknown_items_and_keeps_columns(tmp_path: Path) -> None:
    log = write(tmp_path / "log.csv", "user,item\n1,10\n1,40\n2,30\n2,40\n3,50\n")
    vocab = Vocabulary([30, 10, 20], name="item")
    dataset = ingest([log], item_vocab=vocab)
    assert dataset.items == vocab
    assert dataset.matrix.shape == (2, 3)
    assert dense(dataset) == {(1, 10): 1, (2, 30): 1}
    dropped = dataset.manifest["dropped_unknown_items"]
    assert dropped == {"events": 3, "distinct_items": 2, "examples": ["40", "50"]}


def test_item_vocab_of_strings_matches_integer_log(tmp_path: Path) -> None:
    log = write(tmp_path / "log.csv", "user,item\n1,10\n1,11\n")
    dataset = ingest([log], item_vocab=Vocabulary(["11", "x"], name="item"))
    assert dense(dataset) == {(1, "11"): 1}


def test_cli_ingest_writes_dataset_and_prints_summary(tmp_path: Path) -> None:
    log = write(tmp_path / "log.csv", RATINGS)
    out = tmp_path / "ds"
    result = CliRunner().invoke(
        app, ["ingest", str(log), "--out", str(out), "--min-rating", "3.5", "--min-user-count", "2"]
    )
    assert result.exit_code == 0, result.output
    assert "min_user_count" in result.output and "nnz" in result.output
    dataset = Dataset.load(out)
    assert dataset.matrix.nnz == 5
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["options"]["min_rating"] == 3.5
    assert np.array_equal(dataset.times.toarray()[0, :2], [100, 110])


def test_cli_ingest_reuses_item_vocab_of_a_dataset(tmp_path: Path) -> None:
    first = write(tmp_path / "a.csv", "user,item\n1,1\n1,2\n")
    second = write(tmp_path / "b.csv", "user,item\n7,2\n7,9\n")
    runner = CliRunner()
    assert runner.invoke(app, ["ingest", str(first), "--out", str(tmp_path / "a")]).exit_code == 0
    result = runner.invoke(
        app,
        ["ingest", str(second), "--out", str(tmp_path / "b"), "--item-vocab", str(tmp_path / "a")],
    )
    assert result.exit_code == 0, result.output
    assert "dropped 1 events on 1 items" in result.output
    assert Dataset.load(tmp_path / "b").matrix.toarray().tolist() == [[0, 1]]


def test_date_time_column_becomes_unix_seconds(tmp_path: Path) -> None:
    text = "user,item,when\n1,2,2024-01-01 10:00:00\n1,3,2024-02-01 00:00:00\n2,3,2024-03-01\n"
    log = write(tmp_path / "log.csv", text)
    dataset = ingest([log], IngestOptions(time_col="when", since="2024-01-15"))
    assert dense(dataset) == {(1, 3): 1, (2, 3): 1}
    assert dataset.times.toarray().ravel().tolist() == [1706745600, 1709251200]


def test_cli_presplit_lightgcn_and_duckdb_query(tmp_path: Path) -> None:
    write(tmp_path / "train.txt", "0 0 1\n1 1 2\n")
    write(tmp_path / "valid.txt", "0 2\n1 3\n")
    runner = CliRunner()
    out = tmp_path / "ds"
    args = ["ingest", str(tmp_path / "train.txt"), str(tmp_path / "valid.txt"), "--out", str(out)]
    result = runner.invoke(app, [*args, "--split-sources", "train,valid"])
    assert result.exit_code == 0, result.output
    loaded = Dataset.load(out)
    assert loaded.split.protocol == "presplit" and loaded.split.valid.heldout.nnz == 2

    db = tmp_path / "log.duckdb"
    synth = ["synth", "--users", "50", "--items", "20", "--interactions", "400", "--out", str(db)]
    assert runner.invoke(app, synth).exit_code == 0
    query = "SELECT * FROM events WHERE rating >= 4"
    result = runner.invoke(app, ["ingest", str(db), "--out", str(out), "--query", query])
    assert result.exit_code == 0, result.output
    con = duckdb.connect(str(db), read_only=True)
    pairs = con.execute(
        "SELECT count(*) FROM (SELECT DISTINCT user_id, item_id FROM events WHERE rating >= 4)"
    ).fetchall()[0][0]
    con.close()
    assert Dataset.load(out).matrix.nnz == pairs
