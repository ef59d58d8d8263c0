"""The ingest filters: per-event ones as SQL in the read pass, count ones in numpy on the pairs.

Order (fixed, recorded in the manifest with the rows before and after each step):
  1. bad rows         drop rows a reader flagged (only with --on-bad-rows skip)
  2. known items      with a reused item vocabulary, drop events on items it lacks
  3. time window      keep events with since <= time < until
  4. rating threshold keep events whose rating is strictly above the value (the paper: > 3.5)
  5. dedupe           collapse repeated (user, item) events into one interaction by a stated rule
  6. counts           items with fewer than N interactions, then users with fewer than M, once
                      (the Mult-VAE paper's order), or both repeated until stable (k-core);
                      a bincount over the pairs' dense indices per step

Steps 1-5 run in the one pass that reads the log (see recvae.data.ingest): each event gets the
number of the first of steps 1-4 it fails (stage_sql), and a single group-by both collapses the
kept events into (user, item) pairs and counts the dropped ones per step, so 20 million raw
events are never written to a table. Step 6 runs on the pairs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from recvae.errors import RecvaeError

DEDUPE_RULES = ("auto", "last", "first", "max")


@dataclass
class StepLog:
    """The row count as the steps go, and each step's record (rows before and after)."""

    rows: int
    steps: list[dict] = field(default_factory=list)

    def record(self, step: str, before: int, after: int, detail: dict) -> None:
        """Book a step; stop with an error naming it when it leaves nothing."""
        self.steps.append({"step": step, **detail, "rows_before": before, "rows_after": after})
        self.rows = after
        if after == 0:
            described = ", ".join(f"{key}={value}" for key, value in detail.items())
            raise RecvaeError(
                f"no interactions left after the '{step}' filter ({described}); "
                f"{before:,} rows went into it. Loosen that option."
            )


def _since(start: float) -> float:
    return round(time.perf_counter() - start, 3)


def time_window_condition(since: int | None, until: int | None) -> tuple[str, str, dict]:
    conditions = []
    if since is not None:
        conditions.append(f"time >= {int(since)}")
    if until is not None:
        conditions.append(f"time < {int(until)}")
    detail = {
        "since": since,
        "until": until,
        "rule": "keep events with since <= time < until (unix seconds)",
    }
    return "time_window", " AND ".join(conditions), detail


def rating_condition(min_rating: float) -> tuple[str, str, dict]:
    detail = {
        "min_rating": min_rating,
        "rule": "keep events with rating strictly greater than min_rating",
    }
    return "min_rating", f"rating > {float(min_rating)!r}", detail


def stage_sql(conditions: list[tuple[str, str, dict]]) -> str:
    """Per event: 0 when it passes every per-event filter, else 1 + the first filter it fails.

    The stage lets one group-by both dedupe the kept events and count what each filter dropped.
    Nested CASEs send a NULL condition to the ELSE (dropped), as a WHERE would.
    """
    stage = "0"
    for index, (_, cond, _) in reversed(list(enumerate(conditions))):
        stage = f"CASE WHEN {cond} THEN {stage} ELSE {index + 1} END"
    return stage


@dataclass
class RatingPick:
    """How a (user, item) pair gets its rating by a dedupe rule, as SQL.

    `events` aggregates raw events into a `pick`; `picks` combines picks from several sources
    (the same rule, so sources can be deduped apart and then together); `rating` reads the
    rating out of a pick. Ties on time go to the higher rating.
    """

    events: str
    picks: str
    rating: str


def rating_pick(rule: str, has_rating: bool) -> RatingPick:
    if not has_rating:
        return RatingPick("CAST(NULL AS DOUBLE)", "CAST(NULL AS DOUBLE)", "CAST(NULL AS DOUBLE)")
    if rule == "last":
        return RatingPick("max(struct_pack(t := time, r := rating))", "max(pick)", "pick.r")
    if rule == "first":
        return RatingPick("min(struct_pack(t := time, r := -rating))", "min(pick)", "-pick.r")
    return RatingPick("max(rating)", "max(pick)", "pick")


def record_event_filters(
    log: StepLog,
    conditions: list[tuple[str, str, dict]],
    dropped: list[int],
    kept_events: int,
    pairs: int,
    rule: str,
    need_rating: bool,
) -> None:
    """Record the per-event filters and the dedupe from the counts of the one read pass.

    `dropped[i]` is the number of events the i-th condition removed (first failing condition).
    The pass already wrote one row per (user, item) [per role]; this only books the counts, and
    stops with the usual error at the first step that leaves nothing.
    """
    for (step, _, detail), removed in zip(conditions, dropped, strict=True):
        log.record(step, log.rows, log.rows - removed, {**detail, "seconds": None})
    description = DEDUPE_DESCRIPTIONS[rule if need_rating else "none"]
    detail = {"rule": rule if need_rating else "none (no rating used)", "description": description}
    log.record("dedupe", kept_events, pairs, {**detail, "seconds": None})


DEDUPE_DESCRIPTIONS = {
    "last": "repeated (user, item) events become one; its rating is the latest event's",
    "first": "repeated (user, item) events become one; its rating is the earliest event's",
    "max": "repeated (user, item) events become one; its rating is the highest",
    "none": "repeated (user, item) events become one interaction",
}


def min_count(
    log: StepLog,
    keep: np.ndarray,
    index: np.ndarray,
    size: int,
    key: str,
    k: int,
    iteration: int | None = None,
) -> None:
    """Keep pairs whose `key` (user or item, by dense `index`) has at least k kept pairs.

    Works in place on the boolean mask `keep` over the deduplicated pairs: one bincount.
    """
    start = time.perf_counter()
    counts = np.bincount(index[keep], minlength=size)
    before = log.rows
    keep &= counts[index] >= k
    detail: dict[str, object] = {"min_count": k}
    if iteration is not None:
        detail["iteration"] = iteration
    log.record(f"min_{key}_count", before, int(keep.sum()), {**detail, "seconds": _since(start)})


def count_filters(
    log: StepLog,
    users: np.ndarray,
    items: np.ndarray,
    shape: tuple[int, int],
    min_item_count: int,
    min_user_count: int,
    k_core: bool,
) -> np.ndarray:
    """Items with fewer than N pairs, then users with fewer than M: once (the paper's order) or
    repeated until neither removes a pair (k-core). Returns the mask of pairs kept."""
    keep = np.ones(len(users), dtype=bool)
    rounds = 0
    while True:
        rounds += 1
        before = log.rows
        iteration = rounds if k_core else None
        if min_item_count > 1:
            min_count(log, keep, items, shape[1], "item", min_item_count, iteration)
        if min_user_count > 1:
            min_count(log, keep, users, shape[0], "user", min_user_count, iteration)
        if not k_core or log.rows == before:
            return keep
