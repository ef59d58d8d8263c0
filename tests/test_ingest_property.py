"""Property: `recvae ingest` computes what docs/ingest.md says, on any small log.

Hypothesis draws small logs (ids of mixed types, uint64-sized ids, duplicates, ratings with ties,
optional event times) and options (rating threshold, weights, dedupe rule, min counts). Each log
goes through the real command, and its matrix and vocabularies must equal an independent Polars
computation of the documented rules:

- ids: a column stays integer when every id in it is an integer that fits int64, else text;
- threshold: keep events whose rating is strictly greater than --min-rating;
- dedupe: one interaction per (user, item); binary 1.0, count = events kept, rating by the rule
  (last: the latest event's, ties in time to the higher rating; first: the earliest's, ties to
  the higher rating; max; auto = last with a time column, else max);
- counts: items with fewer than N interactions go, then users with fewer than M, once;
- order: each vocabulary holds the ids that remain, sorted.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from recvae.cli import app
from recvae.data.dataset import Dataset
from recvae.errors import RecvaeError

INT64_MAX = 2**63 - 1

ids = st.one_of(
    st.integers(-20, 40),
    st.sampled_from(["a", "b", "x1", "Zed", "u-7"]),
    st.sampled_from([2**63, 2**64 - 1, 2**63 + 12345]),  # uint64 hashes
)
ratings = st.sampled_from([0.5, 1.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0])
times = st.integers(1_600_000_000, 1_600_000_020)  # a narrow range: many ties in time


@st.composite
def logs(draw: st.DrawFn) -> tuple[list[tuple], dict]:
    users = draw(st.lists(ids, min_size=1, max_size=6, unique_by=str))
    items = draw(st.lists(ids, min_size=1, max_size=8, unique_by=str))
    rows = draw(
        st.lists(
            st.tuples(st.sampled_from(users), st.sampled_from(items), ratings, times),
            min_size=1,
            max_size=40,
        )
    )
    has_time = draw(st.booleans())
    weights = draw(st.sampled_from(["binary", "count", "rating"]))
    dedupe = draw(st.sampled_from(["auto", "max", *(["last", "first"] if has_time else [])]))
    options = {
        "has_time": has_time,
        "weights": weights,
        "dedupe": dedupe,
        "min_rating": draw(st.sampled_from([None, 2.5, 3.5])),
        "min_user_count": draw(st.integers(0, 3)),
        "min_item_count": draw(st.integers(0, 3)),
    }
    return rows, options


def id_column(values: list) -> pl.Series:
    """Integers when every id is an integer that fits int64, else the ids as written."""
    if all(isinstance(v, int) and -INT64_MAX - 1 <= v <= INT64_MAX for v in values):
        return pl.Series(values, dtype=pl.Int64)
    return pl.Series([str(v) for v in values], dtype=pl.String)


def expected(rows: list[tuple], options: dict) -> tuple[list, list, dict] | None:
    """The documented rules in Polars: (user ids, item ids, {(user, item): value}), or None
    when nothing is left."""
    frame = pl.DataFrame(
        {
            "user": id_column([r[0] for r in rows]),
            "item": id_column([r[1] for r in rows]),
            "rating": [r[2] for r in rows],
            "time": [r[3] for r in rows],
        }
    )
    if options["min_rating"] is not None:
        frame = frame.filter(pl.col("rating") > options["min_rating"])
    if frame.is_empty():
        return None
    rule = options["dedupe"]
    if rule == "auto":
        rule = "last" if options["has_time"] else "max"
    ordered = {
        "last": frame.sort(["time", "rating"]).group_by("user", "item").agg(
            pl.col("rating").last().alias("value")
        ),
        "first": frame.sort(["time", "rating"], descending=[False, True])
        .group_by("user", "item")
        .agg(pl.col("rating").first().alias("value")),
        "max": frame.group_by("user", "item").agg(pl.col("rating").max().alias("value")),
    }
    if options["weights"] == "rating":
        pairs = ordered[rule]
    elif options["weights"] == "count":
        pairs = frame.group_by("user", "item").agg(pl.len().cast(pl.Float64).alias("value"))
    else:
        pairs = frame.group_by("user", "item").agg(pl.lit(1.0).alias("value"))
    for key, option in (("item", "min_item_count"), ("user", "min_user_count")):
        if options[option] > 1:
            counts = pairs.group_by(key).agg(pl.len().alias("n"))
            keep = counts.filter(pl.col("n") >= options[option])[key]
            pairs = pairs.filter(pl.col(key).is_in(keep.implode()))
            if pairs.is_empty():
                return None
    cells = {(u, i): float(v) for u, i, v in pairs.select("user", "item", "value").rows()}
    return sorted(pairs["user"].unique().to_list()), sorted(pairs["item"].unique().to_list()), cells


def run_ingest(tmp: Path, rows: list[tuple], options: dict) -> Dataset:
    header = "user_id,item_id,rating" + (",timestamp" if options["has_time"] else "")
    lines = [
        f"{u},{i},{r}" + (f",{t}" if options["has_time"] else "") for u, i, r, t in rows
    ]
    log = tmp / "log.csv"
    log.write_text("\n".join([header, *lines]) + "\n")
    out = tmp / "ds"
    args = ["ingest", str(log), "--out", str(out), "--weights", options["weights"],
            "--dedupe", options["dedupe"], "--min-user-count", str(options["min_user_count"]),
            "--min-item-count", str(options["min_item_count"])]
    if options["min_rating"] is not None:
        args += ["--min-rating", str(options["min_rating"])]
    result = CliRunner().invoke(app, args)
    if result.exception is not None:
        raise result.exception
    return Dataset.load(out)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(logs())
def test_ingest_matches_the_documented_rules(tmp_path_factory, log) -> None:
    rows, options = log
    tmp = tmp_path_factory.mktemp("prop")
    want = expected(rows, options)
    try:
        dataset = run_ingest(tmp, rows, options)
    except RecvaeError as error:
        assert want is None, f"ingest refused a log with a non-empty result: {error}"
        assert "no interactions left" in str(error)
        return
    assert want is not None, "ingest kept interactions the rules drop"
    users, items, cells = want
    assert dataset.users.ids.to_list() == users
    assert dataset.items.ids.to_list() == items
    coo = dataset.matrix.tocoo()
    entries = zip(coo.row, coo.col, coo.data, strict=True)
    got = {(users[r], items[c]): float(v) for r, c, v in entries}
    assert got == cells
