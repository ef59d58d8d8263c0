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
