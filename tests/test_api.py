"""The Python API (recvae.api): ingest anything, fit every model, recommend with original ids.

The log is two disjoint blocks (as in the model contract tests): users u0..u39 touch only
items a0..a9, users u40..u69 only b0..b9, and block A has more users. Whatever a model learns,
a block-A user must be recommended unseen block-A items.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pytest
import scipy.sparse as sp
from typer.testing import CliRunner

import recvae
from recvae.cli import app

N_ITEMS = 10  # per block
# One torch thread: on a busy shared box, threads on a tiny matrix mostly wait for each other
# (30x slower measured at load 9 on 2 cores).
FAST: dict[str, dict] = {
    "multvae": {"epochs": 20, "batch_size": 16, "threads": 1},
    "multdae": {"epochs": 30, "batch_size": 16, "threads": 1},
    "recvae": {"epochs": 8, "batch_size": 16, "threads": 1},
    "joint": {"epochs": 20, "batch_size": 16, "threads": 1, "neighbours": 5},
    "ease": {"l2": 1.0},
    "sparse_ease": {"l2": 1.0, "neighbours": 5},
    "gfcf": {"rank": 4},
    "als": {"factors": 4, "iterations": 10, "num_threads": 1},
    "bpr": {"factors": 4, "iterations": 200, "learning_rate": 0.05, "num_threads": 1},
    "popularity": {},
    "blend": {
        "members": [
            {"model": "multdae", "epochs": 30, "batch_size": 16, "threads": 1},
            {"model": "ease", "l2": 1.0},
        ],
        "weights": [0.5, 0.5],
    },
}
PERSONALISED = set(FAST) - {"popularity"}


def block_log() -> pl.DataFrame:
    """40 block-A users (u0..u39) and 30 block-B users (u40..u69), 6 consecutive items each:
    every block-A item is taken by 24 users, every block-B item by 18."""
    users, items = [], []
    for u in range(70):
        block = "a" if u < 40 else "b"
        for j in range(6):
            users.append(f"u{u}")
            items.append(f"{block}{(u + j) % N_ITEMS}")
    return pl.DataFrame({"user_id": users, "item_id": items})


@pytest.fixture(scope="module")
def data():
    return recvae.ingest(block_log())


@pytest.fixture(scope="module")
def fitted(data) -> dict[str, recvae.Model]:
    return {name: recvae.api.MODELS[name](**settings).fit(data) for name, settings in FAST.items()}


# --- ingest -----------------------------------------------------------------------------------


def test_ingest_reads_polars_arrow_and_files_alike(tmp_path: Path) -> None:
    frame = block_log()
    path = tmp_path / "events.parquet"
    frame.write_parquet(path)
    from_polars = recvae.ingest(frame)
    assert from_polars.matrix.shape == (70, 20) and from_polars.matrix.nnz == 420
    for other in (recvae.ingest(frame.to_arrow()), recvae.ingest(path), recvae.ingest([path])):
        assert other.fingerprint() == from_polars.fingerprint()
    assert recvae.ingest(frame.lazy()).fingerprint() == from_polars.fingerprint()


def test_ingest_reads_pandas() -> None:
    pytest.importorskip("pandas")
    frame = block_log()
    assert recvae.ingest(frame.to_pandas()).fingerprint() == recvae.ingest(frame).fingerprint()


def test_ingest_passes_options_and_loads_dataset_directories(tmp_path: Path) -> None:
    frame = block_log().rename({"user_id": "customer", "item_id": "sku"})
    dataset = recvae.ingest(frame, user_col="customer", min_item_count=20)  # block B: 18 each
    assert dataset.matrix.shape == (40, 10)
    assert set(dataset.items.ids) == {f"a{j}" for j in range(10)}
    full = recvae.ingest(frame, user_col="customer")
    full.save(tmp_path / "ds")
    assert recvae.ingest(tmp_path / "ds").fingerprint() == full.fingerprint()


def test_ingest_matrix_keeps_given_ids() -> None:
    matrix = sp.csr_matrix(np.array([[1, 0, 2], [0, 1, 0]], dtype=np.float64))
    dataset = recvae.ingest(matrix, users=["x", "y"], items=[10, 20, 30])
    assert dataset.users.ids.to_list() == ["x", "y"]
    assert dataset.items.ids.to_list() == [10, 20, 30]
    assert dataset.matrix.dtype == np.float32 and dataset.matrix.nnz == 3
    assert recvae.ingest(matrix).users.ids.to_list() == [0, 1]


def test_ingest_refuses_what_it_cannot_read() -> None:
    with pytest.raises(recvae.RecvaeError, match=r"unknown ingest option.*min_ratin"):
        recvae.ingest(block_log(), min_ratin=3)
    with pytest.raises(recvae.RecvaeError, match="do not apply to a matrix"):
        recvae.ingest(sp.csr_matrix((2, 2)), min_user_count=2)
    with pytest.raises(recvae.RecvaeError, match="cannot ingest a dict"):
        recvae.ingest({"user": [1]})


# --- every model ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(FAST))
def test_every_model_recommends_unseen_items_of_the_users_block(fitted, name: str) -> None:
    model = fitted[name]
    recs = model.recommend(["u0", "u41"], k=3)
    assert recs.columns == ["user_id", "rank", "item_id", "score", "fallback"]
    assert recs["user_id"].to_list() == ["u0"] * 3 + ["u41"] * 3
    assert recs["rank"].to_list() == [1, 2, 3, 1, 2, 3]
    seen_u0 = {f"a{j}" for j in range(6)}
    assert not seen_u0 & set(recs.filter(pl.col("user_id") == "u0")["item_id"])
    if name in PERSONALISED:
        assert all(i.startswith("a") for i in recs.filter(pl.col("user_id") == "u0")["item_id"])
        assert all(i.startswith("b") for i in recs.filter(pl.col("user_id") == "u41")["item_id"])


@pytest.mark.parametrize("name", sorted(FAST))
def test_every_model_folds_in_a_new_user_and_finds_similar_items(fitted, name: str) -> None:
    model = fitted[name]
    recs = model.recommend_items(["b0", "b1", "b2"], k=4)
    assert recs.columns == ["rank", "item_id", "score"] and recs.height == 4
    assert not {"b0", "b1", "b2"} & set(recs["item_id"])
    similar = model.similar_items("a3", k=5)
    assert similar.columns == ["rank", "item_id", "score"] and similar.height == 5
    assert "a3" not in similar["item_id"].to_list()
    assert similar["score"].to_list() == sorted(similar["score"].to_list(), reverse=True)
    if name in PERSONALISED:  # the models' quality is the contract tests' business: top-1 only
        assert recs["item_id"][0].startswith("b") and similar["item_id"][0].startswith("a")


@pytest.mark.parametrize("name", sorted(FAST))
def test_every_model_saves_and_loads_with_its_histories(fitted, name: str, tmp_path: Path) -> None:
    model = fitted[name]
    model.save(tmp_path / "m")
    loaded = recvae.load(tmp_path / "m")
    assert type(loaded) is type(model)
    assert loaded.recommend(["u0", "u41"], k=5).equals(model.recommend(["u0", "u41"], k=5))
    assert loaded.similar_items("a3", k=4).equals(model.similar_items("a3", k=4))
    assert type(model).load(tmp_path / "m").name == name
    model.save(tmp_path / "m")  # a model directory may be replaced, anything else may not
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("mine")
    with pytest.raises(recvae.RecvaeError, match="refusing to write the model"):
        model.save(tmp_path / "notes")


def test_ease_similar_items_are_the_rows_of_b(fitted) -> None:
    model = fitted["ease"]
    index = int(model.items.index_of(["a3"])[0])
    row = model.recommender.weights[index].copy()
    row[index] = -np.inf
    expected = model.items.original(np.argsort(-row, kind="stable")[:5]).to_list()
    assert model.similar_items("a3", k=5)["item_id"].to_list() == expected


def test_als_similar_items_are_cosines_of_item_factors(fitted) -> None:
    model = fitted["als"]
    factors = model.recommender.item_factors
    index = int(model.items.index_of(["a3"])[0])
    unit = factors / np.linalg.norm(factors, axis=1, keepdims=True)
    cosine = unit @ unit[index]
    result = model.similar_items("a3", k=3)
    expected = cosine[model.items.index_of(result["item_id"])]
    np.testing.assert_allclose(result["score"].to_numpy(), expected, rtol=1e-5)


# --- options and errors -----------------------------------------------------------------------


def test_allow_deny_and_include_seen(fitted) -> None:
    model = fitted["ease"]
    allowed = model.recommend("u0", k=10, allow_items=["a7", "a8", "zz"])
    assert set(allowed["item_id"]) == {"a7", "a8"}
    denied = model.recommend("u0", k=10, deny_items=["a6", "a7"])
    assert not {"a6", "a7"} & set(denied["item_id"]) and denied.height == 10
    with_seen = model.recommend("u0", k=20, exclude_seen=False)
    assert with_seen.height == 20 and "a0" in with_seen["item_id"].to_list()
    assert "a1" not in model.recommend_items(["a0"], k=5, deny_items=["a1"])["item_id"].to_list()


def test_unknown_ids_are_named(fitted) -> None:
    model = fitted["ease"]
    with pytest.raises(recvae.RecvaeError, match=r"unknown user id\(s\) 'nobody' \(1 of 2.*"
                       r"recommend_items"):  # fmt: skip
        model.recommend(["u0", "nobody"])
    with pytest.raises(recvae.RecvaeError, match=r"unknown item id\(s\) 'zz', 'yy' \(2 of 3"):
        model.recommend_items(["a1", "zz", "yy"])
    with pytest.raises(recvae.RecvaeError, match=r"unknown item id\(s\) 'zz'"):
        model.similar_items("zz")
    with pytest.raises(recvae.RecvaeError, match=r"unknown user id\(s\) 7 "):
        model.recommend(["u0", 7])
    with pytest.raises(recvae.RecvaeError, match="call fit"):
        recvae.EASE().recommend(["u0"])
    with pytest.raises(recvae.RecvaeError, match=r"unknown key.*epoch"):
        recvae.MultVAE(epoch=3)
    with pytest.raises(recvae.RecvaeError, match=r"ease: unknown key\(s\) lambda_"):
        recvae.EASE(lambda_=3)


def test_users_without_history_get_the_marked_popularity_fallback(fitted, data) -> None:
    # A history with an extra user whose only item the model does not know.
    log = pl.concat([block_log(), pl.DataFrame({"user_id": ["new"], "item_id": ["c1"]})])
    recs = fitted["multdae"].recommend(["new", "u0"], k=3, history=log)
    assert recs.filter(pl.col("user_id") == "new")["fallback"].to_list() == [True] * 3
    assert recs.filter(pl.col("user_id") == "u0")["fallback"].to_list() == [False] * 3


# --- the CLI and the API read each other's models ------------------------------------------------


def test_cli_trained_model_loads_and_api_model_exports(fitted, tmp_path: Path) -> None:
    log = tmp_path / "events.parquet"
    block_log().write_parquet(log)
    result = CliRunner().invoke(app, ["ingest", str(log), "--out", str(tmp_path / "ds")])
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(
        app, ["train", str(tmp_path / "ds"), "--out", str(tmp_path / "cli-model"),
              "--model", "multvae", "--epochs", "3", "--no-validation", "--no-progress",
              "--threads", "1"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    from_cli = recvae.load(tmp_path / "cli-model")
    assert isinstance(from_cli, recvae.MultVAE)
    with pytest.raises(recvae.RecvaeError, match=r"no user histories.*history="):
        from_cli.recommend(["u0"])
    assert from_cli.recommend(["u0"], k=3, history=tmp_path / "ds").height == 3
    store = tmp_path / "store"
    result = CliRunner().invoke(app, ["models", "add", str(store), str(tmp_path / "cli-model"),
                                      "--promote"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert recvae.load(store).recommend_items(["a1"], k=2).height == 2  # a store: its current

    model = fitted["ease"]
    model.save(tmp_path / "api-model")
    out = tmp_path / "recs.parquet"
    result = CliRunner().invoke(
        app, ["recommend", str(tmp_path / "api-model"), "--history",
              str(tmp_path / "api-model" / "history"), "--k", "4", "--out", str(out)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    exported = pl.read_parquet(out).filter(pl.col("user_id").is_in(["u0", "u41"]))
    expected = model.recommend(["u0", "u41"], k=4)
    assert exported.select(expected.columns).equals(expected)


def test_import_recvae_is_light() -> None:
    code = "import sys, recvae; print(sorted({'torch', 'polars', 'duckdb'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_py_typed_ships_with_the_package() -> None:
    assert (Path(recvae.__file__).parent / "py.typed").is_file()
    text = (Path(__file__).parents[1] / "pyproject.toml").read_text()
    assert '"py.typed"' in text


def test_arrow_record_batch_is_accepted() -> None:
    batch = block_log().to_arrow().to_batches()[0]
    assert isinstance(batch, pa.RecordBatch)
    assert recvae.ingest(batch).matrix.nnz == 420
