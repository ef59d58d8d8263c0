"""The ingest filters, each one SQL statement over the previous step's table.

Order (fixed, recorded in the manifest):
  1. time window      keep events with since <= time < until
  2. dedupe           collapse repeated (user, item) events into one interaction by a stated rule
  3. rating threshold keep interactions whose (deduplicated) rating is strictly above the value
  4. counts           items with fewer than N interactions, then users with fewer than M, once
                      (the Mult-VAE paper's order), or both repeated until stable (k-core)

The time window comes first because it decides which events exist at all; the threshold comes
after dedupe so that it judges a pair by its collapsed rating (e.g. the latest one) rather than by
any single event. On logs without repeated pairs (MovieLens) the order of 2 and 3 changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import duckdb

from recvae.errors import RecvaeError

DEDUPE_RULES = ("auto", "last", "first", "max")


@dataclass
class Pipeline:
    """A chain of temporary tables, one per step, with the row counts before and after each."""

    con: duckdb.DuckDBPyConnection
    table: str
    rows: int
    steps: list[dict] = field(default_factory=list)
    _counter: int = 0

    def apply(self, step: str, select: str, **detail: object) -> int:
        """Run `select` (with {prev} for the current table) into a new table and record it.

        The previous table is dropped at once, so at most two steps' rows are in memory.
        """
        self._counter += 1
        name = f"recvae_step{self._counter}"
        self.con.execute(f"CREATE TEMP TABLE {name} AS {select.format(prev=self.table)}")
        after = self.con.execute(f"SELECT count(*) FROM {name}").fetchall()[0][0]
        before = self.rows
        self.con.execute(f"DROP TABLE IF EXISTS {self.table}")
        self.table, self.rows = name, after
        self.steps.append({"step": step, **detail, "rows_before": before, "rows_after": after})
        if after == 0:
            described = ", ".join(f"{key}={value}" for key, value in detail.items())
            raise RecvaeError(
                f"no interactions left after the '{step}' filter ({described}); "
                f"{before:,} rows went into it. Loosen that option."
            )
        return after


def time_window(pipeline: Pipeline, since: int | None, until: int | None) -> None:
    conditions = []
    if since is not None:
        conditions.append(f"time >= {int(since)}")
    if until is not None:
        conditions.append(f"time < {int(until)}")
    pipeline.apply(
        "time_window",
        f"SELECT * FROM {{prev}} WHERE {' AND '.join(conditions)}",
        since=since,
        until=until,
        rule="keep events with since <= time < until (unix seconds)",
    )


def rating_rule_sql(rule: str, has_rating: bool) -> str:
    """The aggregate that gives a (user, item) pair its rating; ties on time go to the higher."""
    if not has_rating:
        return "CAST(NULL AS DOUBLE)"
    if rule == "last":
        return "arg_max(rating, struct_pack(t := time, r := rating))"
    if rule == "first":
        return "arg_min(rating, struct_pack(t := time, r := -rating))"
    return "max(rating)"


def dedupe(pipeline: Pipeline, rule: str, has_rating: bool, by_role: bool) -> None:
    """One row per (user, item) [per split role]: rating by `rule`, latest time, event count."""
    keys = "user, item, role" if by_role else "user, item"
    role = "role" if by_role else "CAST(0 AS UTINYINT) AS role"
    pipeline.apply(
        "dedupe",
        f"SELECT {keys if by_role else keys + ', ' + role}, "
        f"{rating_rule_sql(rule, has_rating)} AS rating, max(time) AS time, "
        f"count(*) AS events FROM {{prev}} GROUP BY {keys}",
        rule=rule,
        description=DEDUPE_DESCRIPTIONS[rule],
    )


DEDUPE_DESCRIPTIONS = {
    "last": "repeated (user, item) events become one; its rating is the latest event's",
    "first": "repeated (user, item) events become one; its rating is the earliest event's",
    "max": "repeated (user, item) events become one; its rating is the highest",
}


def rating_threshold(pipeline: Pipeline, min_rating: float) -> None:
    pipeline.apply(
        "min_rating",
        f"SELECT * FROM {{prev}} WHERE rating > {float(min_rating)!r}",
        min_rating=min_rating,
        rule="keep interactions with rating strictly greater than min_rating",
    )


def min_count(pipeline: Pipeline, key: str, k: int, iteration: int | None = None) -> None:
    """Keep rows whose `key` (user or item) has at least k interactions in the current table."""
    detail: dict[str, object] = {"min_count": k}
    if iteration is not None:
        detail["iteration"] = iteration
    pipeline.apply(
        f"min_{key}_count",
        f"SELECT * FROM {{prev}} WHERE {key} IN "
        f"(SELECT {key} FROM {{prev}} GROUP BY {key} HAVING count(*) >= {int(k)})",
        **detail,
    )


def counts_once(pipeline: Pipeline, min_item_count: int, min_user_count: int) -> None:
    """The paper's order: items first, then users, each applied once."""
    if min_item_count > 1:
        min_count(pipeline, "item", min_item_count)
    if min_user_count > 1:
        min_count(pipeline, "user", min_user_count)


def k_core(pipeline: Pipeline, min_item_count: int, min_user_count: int) -> int:
    """Repeat the item and user filters until neither removes a row; returns the rounds run."""
    rounds = 0
    while True:
        rounds += 1
        before = pipeline.rows
        if min_item_count > 1:
            min_count(pipeline, "item", min_item_count, iteration=rounds)
        if min_user_count > 1:
            min_count(pipeline, "user", min_user_count, iteration=rounds)
        if pipeline.rows == before:
            return rounds
