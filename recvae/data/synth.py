"""Synthetic interaction logs that look like real ones and can be learned from.

The generative story (a topic model with popularity), chosen because each part mirrors a property
that makes real recommendation data hard or easy:
- item popularity follows a power law (a few blockbusters, a long tail);
- user activity is lognormal (most users rate a little, a few rate a lot);
- taste is latent: each user mixes a few of K topics, each item belongs mostly to a few topics,
  and an event picks a topic from the user's mix, then an item from that topic weighted by
  popularity; a share of events ignore taste and follow popularity alone (noise);
- ratings 1-5 rise with the user-item affinity, plus noise; timestamps span two years.
So a model that learns co-occurrence (item-kNN, MF, Mult-VAE) clearly beats popularity, and the
gap is a check that training works. Generation is vectorised in chunks so that 20M rows take
seconds to a minute and bounded memory.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from recvae.errors import RecvaeError
from recvae.io import atomic_file

START_TIME = 1_577_836_800  # 2020-01-01 UTC
TIME_SPAN = 2 * 365 * 86_400


@dataclass(frozen=True)
class SynthConfig:
    n_users: int = 10_000
    n_items: int = 2_000
    n_interactions: int = 500_000
    seed: int = 0
    n_topics: int = 0  # 0: one topic per 50 items, between 5 and 100
    popularity_exponent: float = 1.0  # Zipf exponent of item popularity
    activity_sigma: float = 1.0  # lognormal spread of user activity
    topic_concentration: float = 0.05  # Dirichlet: small = users/items focus on few topics
    popularity_share: float = 0.1  # share of events drawn from popularity alone
    chunk_rows: int = 1_000_000

    def validate(self) -> None:
        if min(self.n_users, self.n_items, self.n_interactions) < 1:
            raise RecvaeError("users, items and interactions must all be at least 1")
        if not 0 <= self.popularity_share <= 1:
            raise RecvaeError("popularity_share must be between 0 and 1")

    @property
    def topics(self) -> int:
        return self.n_topics or int(np.clip(self.n_items // 50, 5, 100))


@dataclass
class _Model:
    user_topics: np.ndarray  # n_users x K, rows sum to 1
    item_topics: np.ndarray  # n_items x K, rows sum to 1
    topic_item_cdf: np.ndarray  # K x n_items cumulative p(item | topic)
    popularity_cdf: np.ndarray  # n_items cumulative p(item)
    events_per_user: np.ndarray  # n_users ints summing to n_interactions


def _build_model(config: SynthConfig, rng: np.random.Generator) -> _Model:
    k = config.topics
    ranks = rng.permutation(config.n_items) + 1
    popularity = ranks.astype(np.float64) ** -config.popularity_exponent
    popularity /= popularity.sum()
    user_topics = rng.dirichlet(np.full(k, config.topic_concentration), size=config.n_users)
    item_topics = rng.dirichlet(np.full(k, config.topic_concentration), size=config.n_items)
    activity = rng.lognormal(0.0, config.activity_sigma, size=config.n_users)
    counts = rng.multinomial(config.n_interactions, activity / activity.sum())
    return _Model(
        user_topics=user_topics,
        item_topics=item_topics,
        topic_item_cdf=_topic_item_cdf(item_topics, popularity),
        popularity_cdf=np.cumsum(popularity),
        events_per_user=counts,
    )


def _topic_item_cdf(item_topics: np.ndarray, popularity: np.ndarray) -> np.ndarray:
    """K x n_items cumulative p(item | topic), built one topic at a time so that the peak is
    the result plus one row (at 1M items and 100 topics: 0.8 GB, not three such tables).

    Inside a topic popularity still matters, but damped, so that taste and not only popularity
    decides which items a user meets."""
    damped = np.sqrt(popularity)
    cdf = np.empty((item_topics.shape[1], item_topics.shape[0]), dtype=np.float64)
    for topic in range(item_topics.shape[1]):
        row = item_topics[:, topic] * damped
        np.cumsum(row / row.sum(), out=cdf[topic])
    return cdf


def _sample_rows(cdf: np.ndarray, rows: np.ndarray, uniforms: np.ndarray) -> np.ndarray:
    """Per-row categorical draws: the first column where row `rows[i]` of `cdf` exceeds u."""
    out = np.empty(len(rows), dtype=np.int64)
    for row in np.unique(rows):
        mask = rows == row
        out[mask] = np.searchsorted(cdf[row], uniforms[mask] * cdf[row, -1], side="right")
    return np.minimum(out, cdf.shape[1] - 1)


def _chunks(config: SynthConfig, model: _Model, rng: np.random.Generator) -> Iterator[pl.DataFrame]:
    users = np.repeat(np.arange(config.n_users, dtype=np.int64), model.events_per_user)
    users = users[rng.permutation(len(users))]
    user_cdf = np.cumsum(model.user_topics, axis=1)
    rating_scale = None
    # the topic draw compares a rows x topics array: bound it to ~20M cells per chunk
    step = max(10_000, min(config.chunk_rows, 20_000_000 // config.topics))
    for start in range(0, len(users), step):
        chunk_users = users[start : start + step]
        n = len(chunk_users)
        topic_u = rng.random(n)
        topics = np.minimum(
            (topic_u[:, None] > user_cdf[chunk_users]).sum(axis=1), config.topics - 1
        )
        items = _sample_rows(model.topic_item_cdf, topics, rng.random(n))
        from_popularity = rng.random(n) < config.popularity_share
        items[from_popularity] = np.minimum(
            np.searchsorted(model.popularity_cdf, rng.random(from_popularity.sum()), side="right"),
            config.n_items - 1,
        )
        affinity = np.log(
            np.einsum("ij,ij->i", model.user_topics[chunk_users], model.item_topics[items]) + 1e-4
        )
        if rating_scale is None:
            rating_scale = (float(affinity.mean()), float(affinity.std()) or 1.0)
        z = (affinity - rating_scale[0]) / rating_scale[1]
        ratings = np.clip(np.rint(3.2 + 1.1 * z + rng.normal(0.0, 0.7, n)), 1, 5)
        times = START_TIME + rng.integers(0, TIME_SPAN, n)
        yield pl.DataFrame(
            {
                "user_id": chunk_users + 1,
                "item_id": items + 1,
                "rating": ratings.astype(np.int8),
                "timestamp": times.astype(np.int64),
            }
        )


def generate(config: SynthConfig) -> Iterator[pl.DataFrame]:
    """The log as polars chunks of at most config.chunk_rows rows (user_id, item_id, rating,
    timestamp); ids start at 1. Same config and seed, same rows."""
    config.validate()
    model_rng, sample_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence(config.seed).spawn(2)
    )
    model = _build_model(config, model_rng)
    yield from _chunks(config, model, sample_rng)


def synthetic_log(config: SynthConfig) -> pl.DataFrame:
    """The whole log in memory (for tests and small demos)."""
    return pl.concat(list(generate(config)))


def write_synthetic_log(
    config: SynthConfig,
    out: Path,
    table: str = "events",
    on_rows: Callable[[int], None] | None = None,
) -> int:
    """Write the log to .csv, .parquet or .duckdb (table `table`) atomically; returns rows.

    `on_rows(n)` is called after each chunk of n rows is written (for a progress bar).
    """
    out = Path(out)
    report = on_rows or (lambda n: None)
    suffix = out.suffix.lower()
    if suffix not in {".csv", ".parquet", ".duckdb"}:
        raise RecvaeError(f"{out}: synth writes .csv, .parquet or .duckdb files")
    rows = 0
    with atomic_file(out) as tmp:
        if suffix == ".csv":
            with open(tmp, "wb") as handle:
                for index, chunk in enumerate(generate(config)):
                    chunk.write_csv(handle, include_header=index == 0)
                    rows += len(chunk)
                    report(len(chunk))
        elif suffix == ".parquet":
            import pyarrow.parquet as pq

            writer = None
            for chunk in generate(config):
                arrow = chunk.to_arrow()
                writer = writer or pq.ParquetWriter(tmp, arrow.schema)
                writer.write_table(arrow)
                rows += len(chunk)
                report(len(chunk))
            writer.close()
        else:
            import duckdb

            tmp.unlink()
            con = duckdb.connect(str(tmp))
            try:
                for index, chunk in enumerate(generate(config)):
                    con.register("recvae_chunk", chunk.to_arrow())
                    verb = "CREATE TABLE {} AS" if index == 0 else "INSERT INTO {}"
                    con.execute(f"{verb.format(_quote(table))} SELECT * FROM recvae_chunk")
                    con.unregister("recvae_chunk")
                    rows += len(chunk)
                    report(len(chunk))
            finally:
                con.close()
    return rows


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'
