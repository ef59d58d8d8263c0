"""Interaction logs -> Dataset: read through DuckDB, filter in SQL, build the CSR with scipy.

    dataset = ingest(["ratings.dat.gz"], IngestOptions(min_rating=3.5, min_user_count=5))

Raw events are read once: one DuckDB group-by per file types and checks every row, applies the
per-event filters and collapses repeated (user, item) events into pairs, counting what each step
dropped (see _read_pass). The raw events are never written out, only the pairs (far fewer rows).
The pairs get dense indices by joins against small vocabulary tables and come to numpy once;
the count filters (bincounts) and one sort by (user, item) then give the CSR matrices. No Python
code runs per row.

A source may also be a MovieLens name (ml-100k, ml-1m, ml-20m, ml-25m, ml-32m), downloaded once
into the cache with its checksum checked (see recvae.data.movielens).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import polars as pl
import scipy.sparse as sp

from recvae.data import filters
from recvae.data.dataset import Dataset
from recvae.data.fingerprint import file_fingerprint
from recvae.data.reader import ReaderOptions
from recvae.data.sources import (
    IdTypes,
    Source,
    detect_source,
    first_line,
    id_type_of,
    lightgcn_siblings,
    resolve_source,
    rows_sql,
)
from recvae.data.split import Holdout, Split
from recvae.data.vocab import Vocabulary
from recvae.errors import RecvaeError
from recvae.io import owned_temp_dir

WEIGHTS = ("binary", "rating", "count")
SPLIT_ROLES = ("train", "valid", "test")
BAD_ROW_POLICIES = ("error", "skip")
log = logging.getLogger(__name__)


@dataclass
class IngestOptions(ReaderOptions):
    """Every ingest option; the defaults read a log as-is into a binary matrix.

    The reader fields (format, delimiter, header, user/item/rating/time columns) come from
    ReaderOptions, shared with `recvae evaluate` and `recvae recommend`.
    """

    min_rating: float | None = None  # keep ratings strictly greater (the paper: > 3.5)
    weights: str = "binary"  # binary: 1.0 per interaction | rating | count of events
    dedupe: str = "auto"  # auto (last with a time column, else max) | last | first | max
    since: str | int | None = None  # unix seconds or ISO date/time, inclusive
    until: str | int | None = None  # unix seconds or ISO date/time, exclusive
    min_user_count: int = 0  # keep users with at least this many interactions
    min_item_count: int = 0  # keep items with at least this many interactions
    k_core: int = 0  # > 0: repeat the user and item filters with at least this bound until stable
    on_bad_rows: str = "error"  # error: stop at the first bad row | skip: count and drop them
    table: str | None = None  # table in a DuckDB database source
    query: str | None = None  # SQL query against a DuckDB database source
    split_sources: Sequence[str] | None = None  # role of each source: train, valid, test
    cache_dir: Path | None = None  # where MovieLens downloads go (default ~/.cache/recvae)

    def validate(self) -> None:
        super().validate()
        checks = [
            (self.weights in WEIGHTS, f"weights must be one of {', '.join(WEIGHTS)}"),
            (self.dedupe in filters.DEDUPE_RULES, f"dedupe must be one of {filters.DEDUPE_RULES}"),
            (self.on_bad_rows in BAD_ROW_POLICIES, "on_bad_rows must be 'error' or 'skip'"),
            (self.min_user_count >= 0 and self.min_item_count >= 0, "counts must be >= 0"),
            (self.k_core >= 0, "k_core must be >= 0"),
            (not (self.table and self.query), "give either table or query, not both"),
        ]
        for ok, message in checks:
            if not ok:
                raise RecvaeError(message)

    def as_manifest(self) -> dict[str, object]:
        values = dataclasses.asdict(self)
        values["cache_dir"] = str(self.cache_dir) if self.cache_dir else None
        values["split_sources"] = list(self.split_sources) if self.split_sources else None
        return values


def parse_time_bound(value: str | int | None, option: str) -> int | None:
    """Unix seconds from an int, a numeric string or an ISO date/date-time (UTC when naive)."""
    if value is None or value == "":
        return None
    if isinstance(value, int | float):
        return int(value)
    text = str(value).strip()
    try:
        return int(float(text))
    except ValueError:
        pass
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError as error:
        raise RecvaeError(
            f"{option} '{value}' is neither unix seconds nor an ISO date like 2024-01-31"
        ) from error
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return int(moment.timestamp())


def assign_roles(sources: Sequence[str | Path], split_sources: Sequence[str] | None) -> list:
    """The split role of each source (None for all when the log is not pre-split)."""
    if not split_sources:
        return [None] * len(sources)
    roles = [role.strip() for role in split_sources]
    if len(roles) != len(sources):
        raise RecvaeError(
            f"--split-sources names {len(roles)} roles ({','.join(roles)}) for "
            f"{len(sources)} sources; give one role per source, e.g. train,valid"
        )
    for role in roles:
        if role not in SPLIT_ROLES:
            raise RecvaeError(f"unknown split role '{role}'; expected train, valid or test")
    if "train" not in roles:
        raise RecvaeError("--split-sources needs a 'train' source")
    if len(set(roles)) != len(roles):
        raise RecvaeError(f"--split-sources repeats a role: {','.join(roles)}")
    return roles


def locate(source: str | Path, options: IngestOptions) -> tuple[Path, str]:
    """A path and format for a source string: a file, or a MovieLens name to fetch."""
    from recvae.data import movielens

    path = Path(source).expanduser()
    if not path.exists() and str(source) in movielens.DATASETS:
        return movielens.fetch(str(source), options.cache_dir), "movielens"
    return path, options.format


def ingest(
    sources: Sequence[str | Path],
    options: IngestOptions | None = None,
    item_vocab: Vocabulary | None = None,
) -> Dataset:
    """Read `sources` as one log, filter it and return the user x item Dataset.

    With `item_vocab` (a trained model's items), the columns are exactly that vocabulary: events
    on unknown items are dropped and counted under manifest['dropped_unknown_items'], never given
    a new or a wrong index.
    """
    options = options or IngestOptions()
    options.validate()
    if not sources:
        raise RecvaeError("no sources given; pass at least one log file")
    roles = assign_roles(sources, options.split_sources)
    since = parse_time_bound(options.since, "--since")
    until = parse_time_bound(options.until, "--until")
    # DuckDB's spill directory: removed afterwards, and a killed run's is removed by the next
    with owned_temp_dir("recvae-ingest-") as spill:
        con = duckdb.connect(config={"temp_directory": str(spill)})
        con.execute("SET enable_progress_bar = false")
        try:
            dataset = _ingest(con, sources, roles, options, item_vocab, since, until)
        finally:
            con.close()
    n_users, n_items = dataset.matrix.shape
    log.info("ingested %d users x %d items, %d interactions", n_users, n_items, dataset.matrix.nnz,
             extra={"event": "ingest", "users": n_users, "items": n_items,
                    "interactions": int(dataset.matrix.nnz)})  # fmt: skip
    return dataset


def _ingest(
    con: duckdb.DuckDBPyConnection,
    raw_sources: Sequence[str | Path],
    roles: list,
    options: IngestOptions,
    item_vocab: Vocabulary | None,
    since: int | None,
    until: int | None,
) -> Dataset:
    located = [locate(raw, options) for raw in raw_sources]
    paths = [path for path, _ in located]
    detected = [detect_source(path, fmt, options) for path, fmt in located]
    lightgcn_siblings(paths, detected, options.format)  # (detect_sources without MovieLens names)
    sources: list[Source] = [
        resolve_source(con, path, found, role, options, options.table, options.query, index)
        for index, (path, found, role) in enumerate(zip(paths, detected, roles, strict=True))
    ]
    use_rating, use_time = _usable_columns(sources, options, since, until)
    id_types = id_type_of(sources)
    rule = options.dedupe if options.dedupe != "auto" else ("last" if use_time else "max")

    conditions: list[tuple[str, str, dict]] = [("bad_rows", "bad IS NULL", {})]
    if item_vocab is not None:
        _register_item_vocab(con, item_vocab, id_types.item)
        condition = "item IN (SELECT item FROM recvae_item_vocab)"
        conditions.append(("known_items", condition, {"vocabulary_items": len(item_vocab)}))
    if since is not None or until is not None:
        conditions.append(filters.time_window_condition(since, until))
    if options.min_rating is not None:
        conditions.append(filters.rating_condition(options.min_rating))
    need_rating = use_rating and options.weights == "rating"

    started = time.perf_counter()
    passed = _read_pass(
        con, sources, id_types, use_rating, use_time, conditions, rule, need_rating,
        known_stage=_stage_of(conditions, "known_items"),
    )  # fmt: skip
    timings = {"read_filter_dedupe": round(time.perf_counter() - started, 3)}
    if passed.rows_read == 0:
        raise RecvaeError(f"{', '.join(s.label for s in sources)}: the log has no rows")
    bad = passed.bad
    _handle_bad_rows(bad, options)

    log = filters.StepLog(passed.rows_read)
    dropped = list(passed.dropped)
    dropped[0] = bad["count"]  # parse rejects never reach the pass; they count as bad rows
    if not bad["count"]:
        conditions, dropped = conditions[1:], dropped[1:]
    filters.record_event_filters(
        log, conditions, dropped, passed.kept_events, passed.pairs, rule, need_rating
    )

    started = time.perf_counter()
    pairs = _index_pairs(con, item_vocab, options.weights, use_time, by_role=roles[0] is not None)
    timings["index_pairs"] = round(time.perf_counter() - started, 3)
    started = time.perf_counter()
    keep = filters.count_filters(
        log,
        pairs.users,
        pairs.items,
        pairs.shape,
        min_item_count=max(options.min_item_count, options.k_core),
        min_user_count=max(options.min_user_count, options.k_core),
        k_core=options.k_core > 0,
    )
    timings["count_filters"] = round(time.perf_counter() - started, 3)
    started = time.perf_counter()
    dataset = _build_dataset(pairs, keep, item_vocab, roles)
    timings["build_matrix"] = round(time.perf_counter() - started, 3)
    dataset.manifest = _manifest(
        sources, passed.records, options, rule, use_rating, use_time, passed.rows_read, bad,
        log.steps, passed.unknown_items, dataset,
    )  # fmt: skip
    dataset.manifest["seconds"] = timings
    return dataset


def _usable_columns(
    sources: list[Source], options: IngestOptions, since: int | None, until: int | None
) -> tuple[bool, bool]:
    """Rating and time are used only when every source has them; say so when an option needs one."""

    def require(role: str, reason: str) -> None:
        for source in sources:
            if getattr(source.columns, role) is None:
                found = ", ".join(source.types) or "(none)"
                raise RecvaeError(
                    f"{source.label}: {reason} needs a {role} column and none was found; "
                    f"columns found: {found}; name it with --{role}-col"
                )

    if options.min_rating is not None:
        require("rating", "--min-rating")
    if options.weights == "rating":
        require("rating", "--weights rating")
    if since is not None or until is not None:
        require("time", "--since/--until")
    if options.dedupe in ("last", "first"):
        require("time", f"--dedupe {options.dedupe}")
    use_rating = all(s.columns.rating is not None for s in sources)
    use_time = all(s.columns.time is not None for s in sources)
    return use_rating, use_time


@dataclass
class ReadPass:
    """What the one pass over the raw events leaves: the pairs table plus the counts per step."""

    records: list[dict]  # per source: rows_read, parse_rejects, bad_rows
    rows_read: int
    bad: dict  # count (parse rejects + bad rows) and the first examples
    dropped: list[int]  # events dropped by each per-event condition (first one failed)
    kept_events: int  # events that passed every condition
    pairs: int  # rows of recvae_pairs: one per (user, item) [per split role]
    unknown_items: dict | None  # with a reused item vocabulary: events on items it lacks


def _read_pass(
    con: duckdb.DuckDBPyConnection,
    sources: list[Source],
    id_types: IdTypes,
    use_rating: bool,
    use_time: bool,
    conditions: list[tuple[str, str, dict]],
    rule: str,
    need_rating: bool,
    known_stage: int | None,
) -> ReadPass:
    """Read, check, filter and dedupe every source in one scan of each file.

    Each event gets a stage (0: kept, else 1 + the first condition it fails; stage 1 is a bad
    row). One group-by per source writes, into recvae_partial, a row per kept (user, item,
    role) with its rating pick, latest time and event count, and for dropped events a row per
    stage (per item for unknown items) with their count: the counts every step reports, without
    writing the raw events anywhere. Only when there are bad rows is a file read again, as far
    as its first few bad rows, to quote them. Several sources are then merged into
    recvae_pairs by the same rule; a single source's kept rows are the pairs as they are.
    """
    pick = filters.rating_pick(rule, need_rating)
    con.execute(
        f"CREATE TEMP TABLE recvae_partial (user {id_types.user}, item {id_types.item}, "
        "role UTINYINT, "
        f"src USMALLINT, stage UTINYINT, pick {_pick_type(rule, need_rating)}, "
        "time BIGINT, events BIGINT)"
    )
    stage = filters.stage_sql(conditions)
    item_kept = "stage = 0" + (f" OR stage = {known_stage}" if known_stage else "")
    time_agg = "max(time)" if use_time else "CAST(NULL AS BIGINT)"
    records, examples = [], []
    for index, source in enumerate(sources):
        rejects = f"recvae_rejects_{index}"
        role = SPLIT_ROLES.index(source.role) if source.role else 0
        select = rows_sql(source, id_types, use_rating, use_time, rejects)
        with _in_database(con, source):
            con.execute(
                f"INSERT INTO temp.recvae_partial SELECT CASE WHEN stage = 0 THEN user END, "
                f"CASE WHEN {item_kept} THEN item END, {role}, {index}, stage, "
                f"{pick.events}, {time_agg}, count(*) "
                f"FROM (SELECT *, {stage} AS stage FROM ({select})) GROUP BY ALL"
            )
        parse_rejects, parse_examples = _parse_rejects(con, source, rejects)
        examples.extend(parse_examples)
        records.append({"rows_read": parse_rejects, "parse_rejects": parse_rejects})

    events = [[0] * len(sources) for _ in range(len(conditions) + 1)]  # [stage][source]
    groups = 0
    for src, stage_no, count, n_groups in con.execute(
        "SELECT src, stage, sum(events), count(*) FROM recvae_partial GROUP BY ALL"
    ).fetchall():
        events[stage_no][src] = int(count)
        groups += int(n_groups) if stage_no == 0 else 0
    for index, record in enumerate(records):
        record["rows_read"] += sum(by_source[index] for by_source in events)
    for source, record in zip(sources, records, strict=True):
        if record["rows_read"] == 0:
            raise RecvaeError(f"{source.label}: no interaction rows in the file")
    bad_rows = sum(events[1])
    if bad_rows:
        for index, record in enumerate(records):
            record["bad_rows"] = events[1][index]
        examples += _bad_row_examples(con, sources, events[1], id_types, use_rating, use_time)
    parse_total = sum(record["parse_rejects"] for record in records)
    unknown = _unknown_items(con, known_stage) if known_stage else None

    pairs = f"SELECT user, item, role, {pick.rating} AS rating, time, events FROM "
    if len(sources) == 1:  # its kept groups are the pairs already: a view, no copy
        con.execute(f"CREATE TEMP VIEW recvae_pairs AS {pairs} recvae_partial WHERE stage = 0")
    else:
        con.execute(
            f"CREATE TEMP TABLE recvae_pairs AS {pairs} (SELECT user, item, role, "
            f"{pick.picks} AS pick, max(time) AS time, sum(events) AS events "
            "FROM recvae_partial WHERE stage = 0 GROUP BY ALL)"
        )
        groups = con.execute("SELECT count(*) FROM recvae_pairs").fetchall()[0][0]
    return ReadPass(
        records=records,
        rows_read=sum(record["rows_read"] for record in records),
        bad={"count": int(parse_total + bad_rows), "examples": examples[:5]},
        dropped=[sum(by_source) for by_source in events[1:]],
        kept_events=sum(events[0]),
        pairs=int(groups),
        unknown_items=unknown,
    )


def _stage_of(conditions: list[tuple[str, str, dict]], step: str) -> int | None:
    """The stage number events dropped by `step` get (see filters.stage_sql), None if absent."""
    names = [name for name, _, _ in conditions]
    return names.index(step) + 1 if step in names else None


@contextlib.contextmanager
def _in_database(con: duckdb.DuckDBPyConnection, source: Source) -> Iterator[None]:
    """Run a source's SQL (a --query names its own tables) with its database as the default."""
    if source.use_database:
        con.execute(f"USE {source.use_database}")
    try:
        yield
    except duckdb.Error as error:
        raise RecvaeError(f"{source.label}: cannot read: {first_line(error)}") from error
    finally:
        if source.use_database:
            con.execute("USE memory")


def _bad_row_examples(
    con: duckdb.DuckDBPyConnection,
    sources: list[Source],
    bad_per_source: list[int],
    id_types: IdTypes,
    use_rating: bool,
    use_time: bool,
) -> list[dict]:
    """The first few bad rows in file order, read again from the sources that have any."""
    examples: list[dict] = []
    for index, source in enumerate(sources):
        if not bad_per_source[index] or len(examples) >= 5:
            continue
        rejects = f"recvae_rejects_again_{index}"
        select = rows_sql(source, id_types, use_rating, use_time, rejects, numbered=True)
        with _in_database(con, source):
            rows = con.execute(
                "SELECT bad, CAST(user AS VARCHAR), CAST(item AS VARCHAR) "
                f"FROM ({select}) WHERE bad IS NOT NULL LIMIT {5 - len(examples)}"
            ).fetchall()
        examples += [
            {"file": source.label, "problem": reason, "user": user, "item": item}
            for reason, user, item in rows
        ]
    return examples


def _pick_type(rule: str, need_rating: bool) -> str:
    """The column type of a rating pick (see filters.rating_pick)."""
    if need_rating and rule in ("last", "first"):
        return "STRUCT(t BIGINT, r DOUBLE)"
    return "DOUBLE"


def _unknown_items(con: duckdb.DuckDBPyConnection, stage: int) -> dict:
    """Events on items missing from a reused vocabulary: counted, a few quoted, never indexed."""
    unknown = f"FROM recvae_partial WHERE stage = {stage}"
    events, distinct = con.execute(
        f"SELECT coalesce(sum(events), 0), count(DISTINCT item) {unknown}"
    ).fetchall()[0]
    examples = [
        row[0]
        for row in con.execute(
            f"SELECT DISTINCT CAST(item AS VARCHAR) {unknown} ORDER BY 1 LIMIT 5"
        ).fetchall()
    ]
    return {"events": int(events), "distinct_items": int(distinct), "examples": examples}


def _parse_rejects(
    con: duckdb.DuckDBPyConnection, source: Source, rejects: str
) -> tuple[int, list[dict]]:
    """Rows DuckDB's CSV reader refused (wrong field count, a value not of the declared type)."""
    if source.format not in {"csv", "movielens"}:
        return 0, []
    count = con.execute(f"SELECT count(*) FROM {rejects}").fetchall()[0][0]
    rows = con.execute(
        f"SELECT line, column_name, error_type, csv_line, error_message FROM {rejects} "
        "ORDER BY line LIMIT 5"
    ).fetchall()
    expected = {
        source.columns.user: "a user id",
        source.columns.item: "an item id",
        source.columns.rating: "a number (rating)",
        source.columns.time: "unix seconds or a date-time (timestamp)",
    }
    examples = []
    for line, column, error_type, text, message in rows:
        if error_type == "CAST" and column in expected:
            problem = f"line {line}, column '{column}': expected {expected[column]}; {message}"
        else:
            problem = f"line {line}: {message}"
        examples.append({"file": source.label, "problem": problem, "text": text})
    return int(count), examples


def _handle_bad_rows(bad: dict, options: IngestOptions) -> None:
    if not bad["count"] or options.on_bad_rows == "skip":
        return
    first = bad["examples"][0]
    more = bad["count"] - 1
    text = f" (the row reads: {first['text']!r})" if first.get("text") else ""
    raise RecvaeError(
        f"{first['file']}: {first['problem']}{text}"
        + (f"; {more:,} more bad row(s)" if more else "")
        + ". Fix the input or pass --on-bad-rows skip to drop bad rows."
    )


def _register_item_vocab(con: duckdb.DuckDBPyConnection, vocab: Vocabulary, id_type: str) -> None:
    """Load the given vocabulary into DuckDB as recvae_item_vocab (item, item_index)."""
    frame = pl.DataFrame({"item": vocab.ids, "item_index": np.arange(len(vocab), dtype=np.int64)})
    con.register("recvae_vocab_arrow", frame.to_arrow())
    con.execute(
        f"CREATE TEMP TABLE recvae_item_vocab AS SELECT TRY_CAST(item AS {id_type}) AS item, "
        f"item_index FROM recvae_vocab_arrow WHERE TRY_CAST(item AS {id_type}) IS NOT NULL"
    )
    con.unregister("recvae_vocab_arrow")


@dataclass
class Pairs:
    """The deduplicated pairs as numpy arrays, ids replaced by dense indices.

    Indices are positions in `user_ids`/`item_ids`, each sorted by id (or, for a reused item
    vocabulary, its own order); the count filters then only drop pairs and, for users and new
    items, the ids no pair uses any more, which keeps both vocabularies sorted.
    """

    users: np.ndarray  # int32
    items: np.ndarray  # int32
    values: np.ndarray  # float32
    times: np.ndarray | None  # int64 unix seconds, latest event of the pair
    roles: np.ndarray | None  # split role codes (index into SPLIT_ROLES)
    user_ids: pl.Series
    item_ids: pl.Series

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.user_ids), len(self.item_ids)


def _index_pairs(
    con: duckdb.DuckDBPyConnection,
    item_vocab: Vocabulary | None,
    weights: str,
    use_time: bool,
    by_role: bool,
) -> Pairs:
    """Dense indices by joins against small sorted vocabulary tables; one fetch of the arrays."""

    def vocab_table(key: str) -> pl.Series:
        con.execute(
            f"CREATE TEMP TABLE recvae_{key}_vocab AS SELECT {key}, "
            f"CAST(row_number() OVER (ORDER BY {key}) - 1 AS BIGINT) AS {key}_index "
            f"FROM (SELECT DISTINCT {key} FROM recvae_pairs)"
        )
        return con.sql(f"SELECT {key} FROM recvae_{key}_vocab ORDER BY {key}_index").pl()[key]

    user_ids = vocab_table("user")
    item_ids = vocab_table("item") if item_vocab is None else item_vocab.ids
    value = {"binary": "1.0", "rating": "rating", "count": "events"}[weights]
    columns = [
        "CAST(u.user_index AS INTEGER) AS user_index",
        "CAST(i.item_index AS INTEGER) AS item_index",
        f"CAST({value} AS FLOAT) AS value",
    ]
    columns += ["e.time"] if use_time else []
    columns += ["e.role"] if by_role else []
    arrays = con.execute(
        f"SELECT {', '.join(columns)} FROM recvae_pairs e "
        "JOIN recvae_user_vocab u ON e.user = u.user JOIN recvae_item_vocab i ON e.item = i.item"
    ).fetchnumpy()
    return Pairs(
        users=np.asarray(arrays["user_index"]),
        items=np.asarray(arrays["item_index"]),
        values=np.asarray(arrays["value"], dtype=np.float32),
        times=np.asarray(arrays["time"], dtype=np.int64) if use_time else None,
        roles=np.asarray(arrays["role"]) if by_role else None,
        user_ids=user_ids,
        item_ids=item_ids,
    )


def _compact(index: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Renumber `index` to 0..m-1 over the m values it uses, in order; returns it and those."""
    used = np.zeros(size, dtype=bool)
    used[index] = True
    return (np.cumsum(used) - 1)[index].astype(np.int32), np.flatnonzero(used)


def _build_dataset(
    pairs: Pairs, keep: np.ndarray, item_vocab: Vocabulary | None, roles: list
) -> Dataset:
    """The kept pairs, renumbered and sorted by (user, item) once, into scipy CSR matrices."""
    rows, used_users = _compact(pairs.users[keep], pairs.shape[0])
    users = Vocabulary(pairs.user_ids.gather(used_users), name="user")
    if item_vocab is None:
        cols, used_items = _compact(pairs.items[keep], pairs.shape[1])
        items = Vocabulary(pairs.item_ids.gather(used_items), name="item")
    else:
        cols, items = pairs.items[keep], item_vocab
    shape = (len(users), len(items))
    # One sort by (row, column) gives canonical CSR for the values, the times and every role.
    order = np.argsort(rows.astype(np.int64) * shape[1] + cols)
    rows, cols = rows[order], cols[order]
    taken = np.flatnonzero(keep)[order]  # positions in the unfiltered pairs, in CSR order
    values = pairs.values[taken]
    times = pairs.times[taken] if pairs.times is not None else None

    if roles[0] is None:
        time_matrix = csr_from_sorted(rows, cols, times, shape) if times is not None else None
        return Dataset(csr_from_sorted(rows, cols, values, shape), users, items, times=time_matrix)
    role_codes = pairs.roles[taken]

    def csr(code: int, data: np.ndarray) -> sp.csr_matrix:
        mask = role_codes == code
        return csr_from_sorted(rows[mask], cols[mask], data[mask], shape)

    present = [(code, name) for code, name in enumerate(SPLIT_ROLES) if name in roles]
    parts = {name: csr(code, values) for code, name in present}
    matrix = _union(list(parts.values()))
    time_matrix = None
    if times is not None:
        time_matrix = _canonical(_union([csr(code, times) for code, _ in present]))
    return Dataset(matrix, users, items, split=_presplit(parts, roles), times=time_matrix)


def csr_from_sorted(
    rows: np.ndarray, cols: np.ndarray, data: np.ndarray, shape: tuple[int, int]
) -> sp.csr_matrix:
    """CSR straight from entries sorted by (row, column) without duplicates: no scipy COO pass."""
    indptr = np.zeros(shape[0] + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=shape[0]), out=indptr[1:])
    matrix = sp.csr_matrix((data, cols.astype(np.int32), indptr), shape=shape)
    matrix.has_sorted_indices = True
    matrix.has_canonical_format = True
    return matrix


def _canonical(matrix: sp.csr_matrix | None) -> sp.csr_matrix | None:
    if matrix is not None:
        matrix.sum_duplicates()
        matrix.sort_indices()
    return matrix


def _union(parts: list[sp.csr_matrix]) -> sp.csr_matrix:
    """Element-wise maximum, so a pair present in two roles is not counted twice."""
    result = parts[0]
    for part in parts[1:]:
        result = result.maximum(part)
    return sp.csr_matrix(result)


def _presplit(parts: dict[str, sp.csr_matrix], roles: list) -> Split:
    """Train matrix plus holdouts whose history is each evaluated user's train row."""
    train = parts["train"]

    def holdout(name: str) -> Holdout | None:
        if name not in parts:
            return None
        users = np.flatnonzero(parts[name].getnnz(axis=1) > 0).astype(np.int64)
        return Holdout(train[users], parts[name][users], users)

    return Split(
        train=train,
        valid=holdout("valid"),
        test=holdout("test"),
        protocol="presplit",
        params={"roles": list(roles)},
    )


def read_as(source: Source) -> dict[str, object]:
    """How a source was read and why: format, delimiter, header, its columns, the evidence."""
    found = source.detected
    return {
        "format": source.format,
        "delimiter": source.csv.get("delimiter"),
        "header": source.csv.get("header") if source.csv else None,
        "columns": list(source.csv.get("names") or source.types),
        "reason": found.reason if found else "",
    }


def describe_reading(manifest: dict) -> list[str]:
    """One line per source saying how it was read, for the console (from a dataset manifest)."""
    from recvae.data.dialect import show_delimiter

    lines = []
    for source in manifest.get("sources", []):
        how = source.get("read_as") or {}
        roles = ", ".join(f"{r}={c}" for r, c in source["columns"].items() if c)
        if how.get("format") in ("csv", "movielens"):
            shape = (
                f"a table, delimiter {show_delimiter(how['delimiter'])}, "
                f"{'header' if how['header'] else 'no header'}"
            )
        elif how.get("format") == "lightgcn":
            shape, roles = "LightGCN rows (user item item ...)", ""
        else:
            shape = how.get("format", source["format"])
        name = Path(source["path"]).name
        text = f"read {name} as {shape}" + (f"; columns {roles}" if roles else "")
        lines.append(text + (f" ({how['reason']})" if how.get("reason") else ""))
    return lines


def _manifest(
    sources: list[Source],
    records: list[dict],
    options: IngestOptions,
    rule: str,
    use_rating: bool,
    use_time: bool,
    rows_read: int,
    bad: dict,
    steps: list[dict],
    dropped_unknown: dict | None,
    dataset: Dataset,
) -> dict:
    from recvae.provenance import run_info

    manifest: dict[str, object] = {
        "format": "recvae-dataset/1",
        "created_by": "recvae ingest",
        "run": run_info(),
        "sources": [
            {
                "path": str(source.path.resolve()),
                "format": source.format,
                "role": source.role,
                "read_as": read_as(source),
                "columns": source.columns.as_dict(),
                "fingerprint": file_fingerprint(source.path),
                **record,
            }
            for source, record in zip(sources, records, strict=True)
        ],
        "options": options.as_manifest(),
        "used_columns": {"rating": use_rating, "time": use_time},
        "weights": options.weights,
        "dedupe_rule": rule if use_rating and options.weights == "rating" else "none",
        "rows_read": rows_read,
        "bad_rows": {"policy": options.on_bad_rows, **bad},
        "filters": steps,
        "counts": {
            "interactions": int(dataset.matrix.nnz),
            "users": len(dataset.users),
            "items": len(dataset.items),
        },
    }
    if dropped_unknown is not None:
        manifest["dropped_unknown_items"] = dropped_unknown
    return manifest
