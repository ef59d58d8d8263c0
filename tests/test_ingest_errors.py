"""Bad input: a clear RecvaeError naming file, row or column, and nothing written."""

from __future__ import annotations

import gzip
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from recvae.cli import app
from recvae.data.ingest import IngestOptions, ingest
from recvae.errors import RecvaeError


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(RecvaeError, match=r"nope\.csv: no such file"):
        ingest([tmp_path / "nope.csv"])


def test_unknown_format(tmp_path: Path) -> None:
    with pytest.raises(RecvaeError, match="cannot tell the format"):
        ingest([write(tmp_path / "log.xlsx", "a,b\n1,2\n")])
    with pytest.raises(RecvaeError, match="unknown format 'excel'"):
        ingest([write(tmp_path / "log.csv", "a,b\n1,2\n")], IngestOptions(format="excel"))


def test_misnamed_and_undetectable_columns_list_what_was_found(tmp_path: Path) -> None:
    log = write(tmp_path / "log.csv", "customer_ref,product_ref,score\n1,2,3\n")
    with pytest.raises(RecvaeError, match=r"no column 'uid'.*columns found: customer_ref, product"):
        ingest([log], IngestOptions(user_col="uid"))
    with pytest.raises(RecvaeError, match=r"cannot find the user id column.*--user-col"):
        ingest([log])
    with pytest.raises(RecvaeError, match="--min-rating needs a rating column"):
        ingest([write(tmp_path / "pairs.csv", "user,item\n1,2\n")], IngestOptions(min_rating=3))


def test_non_numeric_rating_names_line_and_column(tmp_path: Path) -> None:
    log = write(tmp_path / "log.csv", "user,item,rating\n1,2,5\n1,3,five\n2,3,4\n")
    with pytest.raises(RecvaeError, match=r"log\.csv: line 3, column 'rating': expected a number"):
        ingest([log])
    dataset = ingest([log], IngestOptions(on_bad_rows="skip"))
    assert dataset.matrix.nnz == 2
    bad = dataset.manifest["bad_rows"]
    assert bad["count"] == 1 and "line 3" in bad["examples"][0]["problem"]
    assert bad["examples"][0]["text"] == "1,3,five"


def test_non_numeric_timestamp(tmp_path: Path) -> None:
    log = write(tmp_path / "log.csv", "user,item,ts\n1,2,100\n1,3,yesterday\n")
    with pytest.raises(RecvaeError, match=r"line 3, column 'ts': expected unix seconds"):
        ingest([log])


def test_wrong_field_count(tmp_path: Path) -> None:
    log = write(tmp_path / "log.csv", "user,item,rating\n1,2,5\n1,3\n2,3,4\n")
    with pytest.raises(RecvaeError, match=r"line 3: .*Expected Number of Columns"):
        ingest([log])


def test_null_ids(tmp_path: Path) -> None:
    log = write(tmp_path / "log.csv", "user,item\n1,2\n,3\n2,\n")
    with pytest.raises(RecvaeError, match=r"empty user id \(column user\).*1 more bad row"):
        ingest([log])
    assert ingest([log], IngestOptions(on_bad_rows="skip")).manifest["bad_rows"]["count"] == 2


def test_parquet_bad_values_name_the_row(tmp_path: Path) -> None:
    pl.DataFrame({"user": [1, 2], "item": [1, 2], "rating": ["4", "good"]}).write_parquet(
        tmp_path / "log.parquet"
    )
    with pytest.raises(RecvaeError, match=r"row 2: rating 'good' is not a number"):
        ingest([tmp_path / "log.parquet"])


def test_lightgcn_bad_token_names_the_line(tmp_path: Path) -> None:
    log = write(tmp_path / "train.txt", "0 1 2 3\n1 2 x\n")
    with pytest.raises(RecvaeError, match=r"line 2: item id 'x' is not an integer"):
        ingest([log], IngestOptions(format="lightgcn"))


def test_empty_log(tmp_path: Path) -> None:
    with pytest.raises(RecvaeError, match="the file is empty"):
        ingest([write(tmp_path / "empty.csv", "")])
    with pytest.raises(RecvaeError, match=r"no interaction rows|no rows"):
        ingest([write(tmp_path / "header.csv", "user,item\n")])


def test_empty_after_filtering_names_the_filter(tmp_path: Path) -> None:
    log = write(tmp_path / "log.csv", "user,item,rating\n1,2,3\n")
    with pytest.raises(RecvaeError, match=r"after the 'min_rating' filter"):
        ingest([log], IngestOptions(min_rating=3.5))
    with pytest.raises(RecvaeError, match=r"after the 'min_user_count' filter"):
        ingest([log], IngestOptions(min_user_count=2))


def test_truncated_gzip(tmp_path: Path) -> None:
    data = gzip.compress(("".join(f"{u}::{u % 7}::4::1\n" for u in range(20000))).encode())
    (tmp_path / "ratings.dat.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(RecvaeError, match=r"ratings\.dat\.gz.*(GZIP|gzip)"):
        ingest([tmp_path / "ratings.dat.gz"])


def test_cli_error_is_one_line_and_writes_nothing(tmp_path: Path) -> None:
    log = write(tmp_path / "log.csv", "user,item,rating\n1,2,x\n")
    out = tmp_path / "ds"
    result = CliRunner().invoke(app, ["ingest", str(log), "--out", str(out)])
    assert result.exit_code != 0
    assert isinstance(result.exception, RecvaeError)
    assert not out.exists()
    assert list(tmp_path.iterdir()) == [log]


def test_bad_split_roles(tmp_path: Path) -> None:
    log = write(tmp_path / "log.csv", "user,item\n1,2\n")
    with pytest.raises(RecvaeError, match="one role per source"):
        ingest([log], IngestOptions(split_sources=["train", "valid"]))
    with pytest.raises(RecvaeError, match="unknown split role 'dev'"):
        ingest([log, log], IngestOptions(split_sources=["train", "dev"]))


def test_malformed_ndjson_names_the_line(tmp_path: Path) -> None:
    log = write(tmp_path / "log.ndjson", '{"user": 1, "item": 2}\n{"user": 1, "item": \n')
    with pytest.raises(RecvaeError, match=r"log\.ndjson: cannot read: .*Malformed JSON"):
        ingest([log])
