"""How logs are read: format detection on evidence, the shared reader options, wide ids, --query.

Regression tests for issue #12 items 2, 4 and 9 (each failed on main before the fix).
"""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp
from typer.testing import CliRunner

from recvae.cli import app
from recvae.data.dialect import detect_header, detect_text
from recvae.data.ingest import IngestOptions, ingest
from recvae.data.reader import ReaderOptions
from recvae.errors import RecvaeError

runner = CliRunner()


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def cells(dataset) -> set[tuple[object, object, float]]:
    coo = dataset.matrix.tocoo()
    users, items = dataset.users.ids.to_list(), dataset.items.ids.to_list()
    entries = zip(coo.row, coo.col, coo.data, strict=True)
    return {(users[r], items[c], float(v)) for r, c, v in entries}


def test_space_separated_user_item_weight_files_are_tables(tmp_path: Path) -> None:
    # The case: `0 17 1` lines in train.txt/valid.txt were taken for LightGCN rows (the
    # weight became an item) or, alone, had their first row taken for a header.
    train = write(tmp_path / "train.txt", "0 17 1\n0 22 1\n1 5 1\n2 9 1\n")
    valid = write(tmp_path / "valid.txt", "0 3 1\n1 9 1\n")
    pair = ingest([train, valid], IngestOptions(split_sources=["train", "valid"]))
    assert pair.matrix.nnz == 6
    assert sorted(pair.items.ids.to_list()) == [3, 5, 9, 17, 22]  # no item "1"
    alone = ingest([train], IngestOptions(weights="rating"))
    assert cells(alone) == {(0, 17, 1.0), (0, 22, 1.0), (1, 5, 1.0), (2, 9, 1.0)}
    read_as = alone.manifest["sources"][0]["read_as"]
    assert read_as["format"] == "csv" and read_as["delimiter"] == " "
    assert read_as["header"] is False
    assert read_as["columns"] == ["column0", "column1", "column2"]
    assert "the first line holds data" in read_as["reason"]
    assert alone.manifest["sources"][0]["columns"]["rating"] == "column2"


def test_lightgcn_only_on_varying_field_counts(tmp_path: Path) -> None:
    rows = write(tmp_path / "train.txt", "0 1 2 3\n1 4\n2 5 6\n")
    dataset = ingest([rows])
    assert dataset.matrix.nnz == 6
    assert dataset.manifest["sources"][0]["read_as"]["format"] == "lightgcn"
    assert "vary from 2 to 4" in dataset.manifest["sources"][0]["read_as"]["reason"]
    # the same lines with a .csv name are never LightGCN: a ragged table is a bad row
    with pytest.raises(RecvaeError, match="line"):
        ingest([write(tmp_path / "rows.csv", "0 1 2 3\n1 4\n2 5 6\n")])


def test_a_constant_width_file_beside_a_lightgcn_file_is_lightgcn_too(tmp_path: Path) -> None:
    train = write(tmp_path / "train.txt", "0 1 2 3\n1 4\n2 5 6\n")
    valid = write(tmp_path / "valid.txt", "0 7 8\n1 9 10\n")  # alone: user, item, weight
    dataset = ingest([train, valid], IngestOptions(split_sources=["train", "valid"]))
    assert dataset.split.valid.heldout.nnz == 4
    reason = dataset.manifest["sources"][1]["read_as"]["reason"]
    assert "like train.txt" in reason


@pytest.mark.parametrize(
    ("text", "delimiter", "header"),
    [
        ("user,item\n1,2\n", ",", True),
        ("1\t2\t5\n2\t3\t4\n", "\t", False),
        ("u;i;r\nx;y;5\n", ";", True),  # numeric column under a text first line
        ("a|b\n1|2\n", "|", True),
        ("0 17 1\n0 22 1\n", " ", False),
        ('user,title\n1,"Hello, world"\n2,"Hi, there"\n', ",", True),  # quoted delimiters
        ("\ufeffuser,item\r\n1,2\r\n", ",", True),  # BOM and CRLF
    ],
)
def test_dialect_detection(tmp_path: Path, text: str, delimiter: str, header: bool) -> None:
    found = detect_text(write(tmp_path / "log.csv", text), "log.csv", None, None, [], False)
    assert (found.format, found.delimiter, found.header) == ("csv", delimiter, header)


def test_header_detection_refuses_to_guess() -> None:
    named_by_option = detect_header([["u1", "i1"], ["u2", "i2"]], ["u1"], "x")
    assert named_by_option[0] is True
    assert detect_header([["7", "apple"], ["8", "pear"]], [], "x")[0] is False
    with pytest.raises(RecvaeError, match="--header or --no-header"):
        detect_header([["u1", "i1"], ["u2", "i2"]], [], "x")


def test_bom_crlf_file_reads_with_clean_column_names(tmp_path: Path) -> None:
    log = tmp_path / "log.csv"
    log.write_bytes(b"\xef\xbb\xbfuser,item,rating\r\n1,2,5\r\n1,3,4\r\n")
    dataset = ingest([log], IngestOptions(weights="rating"))
    assert dataset.manifest["sources"][0]["columns"]["user"] == "user"
    assert cells(dataset) == {(1, 2, 5.0), (1, 3, 4.0)}


def test_explicit_reader_options_override_detection(tmp_path: Path) -> None:
    log = write(tmp_path / "log.txt", "a b\nx y\nz y\n")
    options = IngestOptions(delimiter="space", header=True, user_col="a", item_col="b")
    dataset = ingest([log], options)
    assert cells(dataset) == {("x", "y", 1.0), ("z", "y", 1.0)}
    assert "header given" in dataset.manifest["sources"][0]["read_as"]["reason"]
    headerless = ingest([log], IngestOptions(header=False))
    assert len(headerless.users) == 3  # 'a' is a user too


def test_ids_of_2_pow_63_and_more_from_csv_and_parquet(tmp_path: Path) -> None:
    big = [2**64 - 1, 2**63, 5]
    csv = write(tmp_path / "log.csv", "user,item\n" + "".join(f"{u},{i}\n" for u, i in
                                                               zip(big, [1, 2, 3], strict=True)))
    from_csv = ingest([csv])
    assert sorted(from_csv.users.ids.to_list()) == sorted(str(u) for u in big)  # kept as text
    frame = pl.DataFrame({"user": pl.Series(big, dtype=pl.UInt64), "item": [1, 2, 3]})
    frame.write_parquet(tmp_path / "log.parquet")
    from_parquet = ingest([tmp_path / "log.parquet"])
    assert from_parquet.users.ids.dtype == pl.UInt64
    assert from_parquet.users.ids.to_list() == sorted(big)
    assert from_parquet.items.ids.dtype == pl.Int64
    assert from_parquet.matrix.nnz == 3
    # a uint64 item vocabulary reused the next day
    again = ingest([tmp_path / "log.parquet"], item_vocab=from_parquet.items)
    assert again.matrix.nnz == 3


def test_query_with_cte_is_allowed_and_writes_nothing_else(tmp_path: Path) -> None:
    db = tmp_path / "log.duckdb"
    con = duckdb.connect(str(db))
    con.execute("CREATE TABLE events AS FROM (VALUES (1, 2), (1, 3), (2, 3)) t(user, item)")
    con.close()
    query = "WITH e AS (SELECT * FROM events WHERE item > 2) SELECT * FROM e;"
    assert ingest([db], IngestOptions(query=query)).matrix.nnz == 2
    with pytest.raises(RecvaeError, match="exactly one SELECT"):
        ingest([db], IngestOptions(query=f"SELECT * FROM events; COPY events TO '{tmp_path}/x'"))
    assert not (tmp_path / "x").exists()


def test_reader_options_validate_and_spell_delimiters() -> None:
    options = ReaderOptions(delimiter="tab")
    options.validate()
    assert options.delimiter == "\t"
    with pytest.raises(RecvaeError, match="unknown format"):
        ReaderOptions(format="xls").validate()


def test_every_command_that_reads_a_log_has_the_same_reader_options() -> None:
    group = ["--delimiter", "--header", "--no-header", "--user-col", "--item-col",
             "--rating-col", "--time-col"]
    for command, format_flag in [("ingest", "--format"), ("evaluate", "--format"),
                                 ("recommend", "--history-format")]:
        result = runner.invoke(app, [command, "--help"], env={"COLUMNS": "200"})
        assert result.exit_code == 0
        for flag in [format_flag, *group]:
            assert flag in result.output, (command, flag)
        assert "Reading the log" in result.output


def test_ingest_cli_says_how_it_read_each_file(tmp_path: Path) -> None:
    write(tmp_path / "train.txt", "0 17 1\n0 22 1\n1 5 1\n")
    result = runner.invoke(
        app, ["ingest", str(tmp_path / "train.txt"), "--out", str(tmp_path / "ds")],
        env={"COLUMNS": "300"},
    )
    assert result.exit_code == 0, result.output
    assert "read train.txt as a table, delimiter space, no header" in result.output
    assert "user=column0, item=column1, rating=column2" in result.output
    manifest = json.loads((tmp_path / "ds" / "manifest.json").read_text())
    assert manifest["sources"][0]["read_as"]["delimiter"] == " "


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    from recvae.artifact import Artifact, save_artifact
    from recvae.data.vocab import Vocabulary
    from recvae.models.ease import EASE

    rng = np.random.default_rng(0)
    matrix = sp.csr_matrix((rng.random((30, 10)) < 0.4).astype(np.float32))
    items = Vocabulary(np.arange(10, 20), name="item")
    path = tmp_path / "model"
    save_artifact(Artifact(EASE(l2=10.0).fit(matrix), items, {"version": "v1"}), path, matrix)
    return path


def test_evaluate_reads_space_separated_files_with_the_reader_options(
    tmp_path: Path, model_dir: Path
) -> None:
    # main's `recvae evaluate` had no --delimiter/--header/--user-col: such files were unreadable
    write(tmp_path / "h.txt", "who what w\n1 10 1\n1 11 1\n2 12 1\n2 13 1\n")
    write(tmp_path / "t.txt", "who what w\n1 14 1\n2 15 1\n2 99 1\n")
    args = ["evaluate", str(model_dir), "--history", str(tmp_path / "h.txt"), "--heldout",
            str(tmp_path / "t.txt"), "--k", "5", "--json"]
    refused = runner.invoke(app, args)
    assert isinstance(refused.exception, RecvaeError)  # no column is named like a user id
    result = runner.invoke(app, [*args, "--delimiter", "space", "--header", "--user-col", "who",
                                 "--item-col", "what"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)  # log lines go to stderr
    assert payload["users"] == 2 and payload["heldout_items_unknown_to_model"] == 1
    assert any("delimiter space given" in line for line in payload["read_as"])


def test_recommend_reads_a_log_with_the_reader_options(tmp_path: Path, model_dir: Path) -> None:
    write(tmp_path / "log.txt", "a|b\n1|10\n1|11\n2|12\n")
    out = tmp_path / "recs.csv"
    result = runner.invoke(app, [
        "recommend", str(model_dir), "--history", str(tmp_path / "log.txt"), "--out", str(out),
        "--k", "2", "--history-format", "csv", "--delimiter", "|", "--header", "--user-col", "a",
        "--item-col", "b",
    ], env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    assert "read log.txt as a table, delimiter '|', header" in result.output
    recs = pl.read_csv(out)
    assert sorted(set(recs["user_id"].to_list())) == [1, 2] and recs.height == 4


def test_a_job_config_sets_the_reader_options_by_name(tmp_path: Path) -> None:
    # The nightly job's [data.ingest] table maps onto IngestOptions, which extends ReaderOptions.
    import tomllib

    config = tomllib.loads(
        '[data.ingest]\nformat = "csv"\ndelimiter = "space"\nheader = false\nweights = "rating"\n'
    )
    log = write(tmp_path / "log.txt", "u1 i1 2\nu2 i1 3\n")  # text ids, no header: ambiguous
    dataset = ingest([log], IngestOptions(**config["data"]["ingest"]))
    assert cells(dataset) == {("u1", "i1", 2.0), ("u2", "i1", 3.0)}
