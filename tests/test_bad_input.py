"""Bad input, one row per case: it stops with exit code 2 and ONE line naming what is wrong, and
nothing is written (no --out, no temporary file or directory left behind).

Each row runs through the real command line twice: `recvae.cli.main` (the console script: exit
code, the one line on stderr) and typer's CliRunner on `recvae.cli.app` (the RecvaeError itself).
Progress lines (INFO logs, e.g. "ingested 2 users ...") also go to stderr; the runs use
RECVAE_LOG_LEVEL=warning, as a scheduler that wants only problems would, so that stderr must be
exactly the error line: no warning, no traceback, no wrapped continuation.
Rows are grouped by command: ingest, evaluate (--history/--heldout logs) and recommend (a log as
--history). The files of a row are written into an empty directory, which must hold exactly
those files afterwards.
"""

from __future__ import annotations

import gzip
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp
from typer.testing import CliRunner

from recvae.cli import app, main
from recvae.errors import RecvaeError

PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00"


def gzipped(text: str, cut: int = 0) -> bytes:
    data = gzip.compress(text.encode())
    return data[: len(data) - cut] if cut else data


def parquet_bytes(frame: pl.DataFrame) -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "x.parquet"
        frame.write_parquet(path)
        return path.read_bytes()


def duckdb_bytes(*tables: str) -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "x.duckdb"
        con = duckdb.connect(str(path))
        for name in tables:
            con.execute(f"CREATE TABLE {name} AS SELECT 1 AS user_id, 2 AS item_id, 4.0 AS rating")
        con.close()
        return path.read_bytes()


@dataclass
class Case:
    """A bad input: files to write, the command (paths relative to the row's directory), and
    words the one-line error must hold. {model} is a small trained model, {out} the output."""

    name: str
    files: dict[str, str | bytes]
    args: list[str]
    words: tuple[str, ...]
    code: int = 2
    dirs: list[str] = field(default_factory=list)


def ingest(name: str, content: str | bytes, words: tuple[str, ...], *extra: str,
           file: str = "log.csv") -> Case:
    return Case(name, {file: content}, ["ingest", file, "--out", "{out}", *extra], words)


GOOD = "user,item,rating\n1,2,5\n1,3,4\n2,3,4\n"
DB_ONE = duckdb_bytes("events")
QUERY = ["log.duckdb", "--out", "{out}", "--query"]

INGEST = [
    ingest("empty file", "", ("log.csv", "the file is empty")),
    ingest("header only", "user,item,rating\n", ("log.csv", "no interaction rows")),
    ingest("blank lines only", "\n  \n\n", ("log.csv", "only blank lines")),
    Case("missing file", {}, ["ingest", "nope.csv", "--out", "{out}"],
         ("nope.csv", "no such file")),
    Case("a directory", {}, ["ingest", "logs", "--out", "{out}"], ("logs", "is a directory"),
         dirs=["logs"]),
    ingest("PNG named .png", PNG, ("cannot tell the format", "log.png"), file="log.png"),
    ingest("PNG named .csv", PNG, ("log.csv", "not a text file")),
    ingest("not UTF-8", b"user,item\n\xff\xfe,1\n", ("log.csv", "not UTF-8")),
    ingest("truncated gzip", gzipped(GOOD, cut=8), ("log.csv.gz", "cannot read"),
           file="log.csv.gz"),
    ingest("BOM + bad rating", "\ufeffuser,item,rating\n1,2,five\n", ("line 2", "'rating'")),
    ingest("CRLF + bad rating", "user,item,rating\r\n1,2,5\r\n1,3,five\r\n",
           ("line 3", "'rating'")),
    ingest("mixed delimiters", "user,item\n1,2\n3;4\n5,6\n", ("mixed delimiters", "line 3")),
    ingest("one field per line", "1\n2\n3\n", ("cannot find a field delimiter",)),
    ingest("non-numeric rating", "user,item,rating\n1,2,5\n1,3,five\n",
           ("line 3", "column 'rating'", "expected a number")),
    ingest("missing column", GOOD, ("no column 'uid'", "columns found: user, item, rating"),
           "--user-col", "uid"),
    ingest("undetectable user column", "customer_ref,product_ref\n1,2\n",
           ("cannot find the user id column", "--user-col")),
    ingest("header or not, unknown", "a,b\nx,y\n", ("is a header", "--no-header")),
    ingest("empty user id", "user,item\n1,2\n,3\n", ("empty user id", "data row 2")),
    ingest("too many fields", "user,item,rating\n1,2,5\n1,2,3,4\n", ("line 3",)),
    ingest("NaN rating, --weights rating", "user,item,rating\n1,2,5\n1,3,nan\n",
           ("data row 2", "rating nan", "not a finite number", "column rating"),
           "--weights", "rating"),
    ingest("NaN rating, --min-rating", "user,item,rating\n1,2,nan\n1,3,4\n",
           ("data row 1", "not a finite number"), "--min-rating", "3.5"),
    ingest("inf rating, --min-rating", "user,item,rating\n1,2,5\n1,3,inf\n",
           ("rating inf", "not a finite number"), "--min-rating", "3.5"),
    ingest("-inf rating", "user,item,rating\n1,2,-inf\n", ("rating -inf", "not a finite")),
    ingest("NaN rating in Parquet",
           parquet_bytes(pl.DataFrame({"user": [1, 2], "item": [3, 4], "rating": [4.0, np.nan]})),
           ("log.parquet", "row 2", "not a finite number"), "--weights", "rating",
           file="log.parquet"),
    ingest("inf time in a CSV", "user,item,ts\n1,2,100\n1,3,inf\n",
           ("timestamp", "neither unix seconds nor a date-time")),
    ingest("--min-rating, no rating column", "user,item\n1,2\n",
           ("--min-rating needs a rating column",), "--min-rating", "3"),
    ingest("non-numeric timestamp", "user,item,ts\n1,2,100\n1,3,yesterday\n",
           ("line 3", "column 'ts'", "unix seconds")),
    ingest("bad --since", GOOD, ("--since", "neither unix seconds nor an ISO date"),
           "--since", "last tuesday"),
    ingest("everything filtered out", GOOD, ("no interactions left", "min_rating"),
           "--min-rating", "10"),
    ingest("unknown format", GOOD, ("unknown format 'excel'",), "--format", "excel"),
    ingest("bad delimiter", GOOD, ("--delimiter must be",), "--delimiter", ",,,,,"),
    ingest("bad --weights", GOOD, ("weights must be one of",), "--weights", "stars"),
    ingest("bad --on-bad-rows", GOOD, ("on_bad_rows must be",), "--on-bad-rows", "ignore"),
    ingest("LightGCN forced on text", "0 a b\n1 c\n", ("line 1", "not an integer"),
           "--format", "lightgcn", file="train.txt"),
    # one short line in 20 (95% have 3 fields) is a bad row of a table, not LightGCN evidence
    ingest("space table with a ragged line", "0 17 1\n" * 19 + "2 9\n",
           ("train.txt", "line 20"), file="train.txt"),
    ingest("corrupt Parquet", b"garbage", ("log.parquet", "cannot read"), file="log.parquet"),
    ingest("malformed NDJSON", '{"user": 1, "item": 2}\n{"user": 1, "item"',
           ("log.ndjson", "cannot read"), file="log.ndjson"),
    ingest("not a DuckDB file", "not a db", ("log.duckdb", "not a readable DuckDB database"),
           file="log.duckdb"),
    ingest("DuckDB with two tables", duckdb_bytes("a", "b"), ("holds 2 tables", "--table"),
           file="log.duckdb"),
    ingest("--table on a CSV", GOOD, ("only apply to DuckDB",), "--table", "events"),
    Case("--query COPY", {"log.duckdb": DB_ONE},
         ["ingest", *QUERY, "COPY events TO 'stolen.csv'"], ("one read-only SELECT", "COPY")),
    Case("--query two statements", {"log.duckdb": DB_ONE},
         ["ingest", *QUERY, "SELECT * FROM events) ; COPY (SELECT 1) TO 'x.csv'; SELECT (1"],
         ("--query",)),
    Case("--query SELECT then COPY", {"log.duckdb": DB_ONE},
         ["ingest", *QUERY, "SELECT * FROM events; COPY events TO 'x.csv'"],
         ("exactly one SELECT", "2 statements")),
    Case("--query ATTACH", {"log.duckdb": DB_ONE},
         ["ingest", *QUERY, "ATTACH 'other.duckdb' AS o"], ("read-only SELECT", "ATTACH")),
    Case("--query INSERT", {"log.duckdb": DB_ONE},
         ["ingest", *QUERY, "INSERT INTO events VALUES (1, 2, 3)"], ("INSERT",)),
    Case("--query PRAGMA", {"log.duckdb": DB_ONE},
         ["ingest", *QUERY, "PRAGMA database_list"], ("PRAGMA",)),
    Case("--query SET", {"log.duckdb": DB_ONE},
         ["ingest", *QUERY, "SET threads = 1"], ("SET",)),
    Case("--query unparsable", {"log.duckdb": DB_ONE},
         ["ingest", *QUERY, "SELEC * FROM events"], ("does not parse",)),
    Case("--split-sources count", {"a.csv": GOOD},
         ["ingest", "a.csv", "--out", "{out}", "--split-sources", "train,valid"],
         ("--split-sources names 2 roles",)),
    Case("--item-vocab missing", {"log.csv": GOOD},
         ["ingest", "log.csv", "--out", "{out}", "--item-vocab", "nowhere"],
         ("no items.parquet",)),
]

EVAL = ["evaluate", "{model}", "--history", "h.csv", "--heldout", "t.csv"]
HISTORY = "user,item\n100,item1\n101,item2\n"

EVALUATE = [
    Case("evaluate: history missing", {"t.csv": HISTORY}, EVAL, ("h.csv", "no such file")),
    Case("evaluate: heldout empty", {"h.csv": HISTORY, "t.csv": ""}, EVAL,
         ("t.csv", "the file is empty")),
    Case("evaluate: heldout is a PNG", {"h.csv": HISTORY, "t.csv": PNG}, EVAL,
         ("t.csv", "not a text file")),
    Case("evaluate: heldout header only", {"h.csv": HISTORY, "t.csv": "user,item\n"}, EVAL,
         ("t.csv", "no interaction rows")),
    Case("evaluate: NaN rating in history", {"h.csv": "user,item,rating\n100,item1,nan\n",
         "t.csv": HISTORY}, EVAL, ("h.csv", "not a finite number")),
    Case("evaluate: header or not, unknown", {"h.csv": "u,i\nx,y\n", "t.csv": HISTORY}, EVAL,
         ("h.csv", "--header or --no-header")),
    Case("evaluate: --user-col not there", {"h.csv": HISTORY, "t.csv": HISTORY},
         [*EVAL, "--user-col", "customer"], ("no column 'customer'",)),
    Case("evaluate: mixed delimiters", {"h.csv": "user,item\n100,item1\n101;item2\n",
         "t.csv": HISTORY}, EVAL, ("h.csv", "mixed delimiters")),
    Case("evaluate: heldout is a directory", {"h.csv": HISTORY}, EVAL, ("is a directory",),
         dirs=["t.csv"]),
    Case("evaluate: no logs", {}, ["evaluate", "{model}"], ("give --history FILE",)),
]

RECOMMEND = ["recommend", "{model}", "--history", "log.csv", "--out", "{out}"]

RECOMMEND_CASES = [
    Case("recommend: history missing", {}, RECOMMEND, ("log.csv", "no such file")),
    Case("recommend: history header only", {"log.csv": "user,item\n"}, RECOMMEND,
         ("no interaction rows",)),
    Case("recommend: history is a PNG", {"log.csv": PNG}, RECOMMEND, ("not a text file",)),
    Case("recommend: mixed delimiters", {"log.csv": "user,item\n1,item1\n2;item2\n"},
         RECOMMEND, ("mixed delimiters",)),
    Case("recommend: LightGCN forced on text ids", {"log.csv": "100 item1 item2\n"},
         [*RECOMMEND, "--history-format", "lightgcn"], ("line 1", "not an integer")),
    Case("recommend: --item-col not there", {"log.csv": HISTORY},
         [*RECOMMEND, "--item-col", "sku"], ("no column 'sku'",)),
    Case("recommend: NaN rating", {"log.csv": "user,item,rating\n1,item1,nan\n"}, RECOMMEND,
         ("not a finite number",)),
]

CASES = INGEST + EVALUATE + RECOMMEND_CASES


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small EASE model over items item0..item11, saved as recvae saves models."""
    from recvae.artifact import Artifact, save_artifact
    from recvae.data.vocab import Vocabulary
    from recvae.models.ease import EASE

    rng = np.random.default_rng(0)
    matrix = sp.csr_matrix((rng.random((20, 12)) < 0.3).astype(np.float32))
    items = Vocabulary([f"item{j}" for j in range(12)], name="item")
    model_dir = tmp_path_factory.mktemp("bad-input-model") / "model"
    save_artifact(Artifact(EASE(l2=10.0).fit(matrix), items, {"version": "v1"}), model_dir, matrix)
    return model_dir


def test_the_table_is_big_enough() -> None:
    assert len(CASES) >= 40
    assert len({case.name for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_bad_input_gives_one_line_and_writes_nothing(
    case: Case,
    model: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    for name in case.dirs:
        (work / name).mkdir()
    for name, content in case.files.items():
        target = work / name
        target.write_bytes(content if isinstance(content, bytes) else content.encode())
    scratch = tmp_path / "tmp"  # where ingest's DuckDB spill directory goes
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    monkeypatch.setenv("RECVAE_LOG_LEVEL", "warning")
    monkeypatch.chdir(work)
    out = work / ("recs.parquet" if case.args[0] == "recommend" else "out")
    args = [a.format(model=model, out=out) for a in case.args]
    before = sorted(p.name for p in work.iterdir())

    monkeypatch.setattr(sys, "argv", ["recvae", *args])
    with pytest.raises(SystemExit) as exited:
        main()
    printed = capsys.readouterr()
    assert exited.value.code == case.code, printed
    lines = printed.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), printed.err
    for word in case.words:
        assert word in lines[0], lines[0]
    assert "Traceback" not in printed.err + printed.out

    result = CliRunner().invoke(app, args)
    assert isinstance(result.exception, RecvaeError), result.output
    assert str(result.exception).strip() in lines[0]

    assert not out.exists()
    assert sorted(p.name for p in work.iterdir()) == before  # no temp file or directory left
    assert list(scratch.iterdir()) == []
