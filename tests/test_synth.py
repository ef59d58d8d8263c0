"""Synthetic logs: shape, determinism, realism, and a structure a model can learn."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import polars as pl
import scipy.sparse as sp
from typer.testing import CliRunner

from recvae.cli import app
from recvae.data.ingest import IngestOptions, ingest
from recvae.data.synth import (
    SynthConfig,
    _build_model,
    _topic_item_cdf,
    synthetic_log,
    write_synthetic_log,
)


def test_shape_ranges_and_determinism() -> None:
    config = SynthConfig(n_users=300, n_items=100, n_interactions=5000, seed=3, chunk_rows=1500)
    log = synthetic_log(config)
    assert log.columns == ["user_id", "item_id", "rating", "timestamp"]
    assert len(log) == 5000
    assert log["user_id"].min() >= 1 and log["user_id"].max() <= 300
    assert log["item_id"].min() >= 1 and log["item_id"].max() <= 100
    assert set(log["rating"].unique().to_list()) <= {1, 2, 3, 4, 5}
    assert synthetic_log(config).equals(log)
    assert not synthetic_log(SynthConfig(300, 100, 5000, seed=4)).equals(log)


def test_popularity_is_skewed_and_activity_spread() -> None:
    log = synthetic_log(SynthConfig(n_users=2000, n_items=1000, n_interactions=60_000, seed=0))
    item_counts = np.sort(log["item_id"].value_counts()["count"].to_numpy())[::-1]
    assert item_counts[:10].sum() > 0.08 * len(log)  # 1% of items take > 8% of events
    user_counts = log["user_id"].value_counts()["count"].to_numpy()
    assert user_counts.max() > 8 * np.median(user_counts)


def test_ratings_follow_affinity() -> None:
    # a user's repeated topics make their items co-occur; ratings should be higher on items
    # the user meets often (high affinity) than on items met once
    log = synthetic_log(SynthConfig(n_users=1000, n_items=300, n_interactions=40_000, seed=2))
    pairs = log.group_by(["user_id", "item_id"]).agg(
        pl.len().alias("events"), pl.col("rating").mean().alias("rating")
    )
    often = pairs.filter(pl.col("events") >= 3)["rating"].mean()
    once = pairs.filter(pl.col("events") == 1)["rating"].mean()
    assert often > once + 0.3


def _recall_at_20(scores: np.ndarray, train: np.ndarray, test: np.ndarray) -> float:
    scores = np.where(train > 0, -np.inf, scores)
    top = np.argsort(-scores, axis=1)[:, :20]
    hits = np.take_along_axis(test, top, axis=1).sum(axis=1)
    relevant = np.minimum(test.sum(axis=1), 20)
    keep = relevant > 0
    return float((hits[keep] / relevant[keep]).mean())


def test_item_knn_clearly_beats_popularity() -> None:
    n_users, n_items = 2000, 500
    log = synthetic_log(SynthConfig(n_users, n_items, n_interactions=60_000, seed=1))
    rows, cols = log["user_id"].to_numpy() - 1, log["item_id"].to_numpy() - 1
    matrix = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(n_users, n_items))
    matrix.data[:] = 1.0
    coo = matrix.tocoo()
    held = np.random.default_rng(0).random(coo.nnz) < 0.2
    train = sp.csr_matrix((coo.data[~held], (coo.row[~held], coo.col[~held])), matrix.shape)
    test = sp.csr_matrix((coo.data[held], (coo.row[held], coo.col[held])), matrix.shape)
    dense_train, dense_test = train.toarray(), test.toarray()
    popularity = np.tile(dense_train.sum(axis=0), (n_users, 1))
    norms = np.sqrt(dense_train.sum(axis=0)) + 1e-9
    similarity = (dense_train.T @ dense_train) / norms[:, None] / norms[None, :]
    np.fill_diagonal(similarity, 0.0)
    knn = _recall_at_20(dense_train @ similarity, dense_train, dense_test)
    pop = _recall_at_20(popularity, dense_train, dense_test)
    assert knn > 1.5 * pop, (knn, pop)


def test_writes_csv_parquet_duckdb_that_ingest_reads(tmp_path: Path) -> None:
    config = SynthConfig(n_users=200, n_items=50, n_interactions=3000, seed=0, chunk_rows=1000)
    expected = synthetic_log(config)
    for name in ("log.csv", "log.parquet", "log.duckdb"):
        assert write_synthetic_log(config, tmp_path / name) == 3000
        options = IngestOptions(weights="count", table="events" if "duckdb" in name else None)
        dataset = ingest([tmp_path / name], options)
        assert dataset.matrix.sum() == 3000
        assert dataset.matrix.nnz == expected.select(["user_id", "item_id"]).n_unique()


def test_cli_synth(tmp_path: Path) -> None:
    out = tmp_path / "log.csv"
    result = CliRunner().invoke(
        app,
        ["synth", "--users", "100", "--items", "30", "--interactions", "500", "--out", str(out)],
    )
    assert result.exit_code == 0, result.output
    assert "wrote 500 interactions" in result.output
    assert pl.read_csv(out).shape == (500, 4)


def test_topic_item_cdf_matches_the_direct_formula() -> None:
    rng = np.random.default_rng(0)
    item_topics = rng.dirichlet(np.full(4, 0.5), size=30)
    popularity = rng.random(30)
    direct = item_topics.T * np.sqrt(popularity)[None, :]
    direct = np.cumsum(direct / direct.sum(axis=1, keepdims=True), axis=1)
    cdf = _topic_item_cdf(item_topics, popularity)
    assert cdf.shape == (4, 30)
    np.testing.assert_allclose(cdf, direct, rtol=1e-12)
    np.testing.assert_allclose(cdf[:, -1], 1.0)


def test_model_memory_is_two_items_x_topics_tables() -> None:
    # the 1M-item scale benchmark relies on this: item topics + the per-topic CDF, not a third
    # items x topics temporary (0.8 GB each at 1M items and 100 topics)
    config = SynthConfig(n_users=100, n_items=20_000, n_interactions=100, n_topics=100)
    table = config.n_items * config.topics * 8
    tracemalloc.start()
    try:
        _build_model(config, np.random.default_rng(0))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2.3 * table, peak / table
