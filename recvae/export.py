"""Writers for top-N exports: Parquet, CSV, or a table in a DuckDB database file. All atomic.

Readers never see a half-written export:
- Parquet and CSV are streamed into a temporary file beside the destination, fsynced, and renamed
  over it (`os.replace`) only after the last chunk, so the previous export stays in place until
  the new one is complete. The parent directory is fsynced after the rename.
- DuckDB: the rows go into a staging table `<table>__recvae_tmp` inside the destination database;
  when complete, one transaction drops the old table and renames the staging table to it. Other
  tables in the file are left alone, and a reader sees either the old or the new table. A staging
  table left by a crash is dropped by the next export.

Rows are consumed chunk by chunk (see `recvae.scoring.recommend_chunks`), so memory stays bounded.

What an export may replace (recvae.io.check_output, kind "export"): a Parquet file recvae wrote
(marked in its key-value metadata under "recvae", or with exactly the export's columns), a CSV
whose header is exactly the export's columns, or in a DuckDB file a table with exactly the
export's columns. Anything else is refused unless `overwrite=True` (`--overwrite`).
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pyarrow as pa

from recvae.errors import RecvaeError
from recvae.io import (
    EXPORT_COLUMNS,
    EXPORT_METADATA_KEY,
    atomic_file,
    check_output,
    is_duckdb_file,
)
from recvae.models.memory import FLOAT, MemoryEstimate, check_fits

FORMATS = ("parquet", "csv", "duckdb")
_SUFFIXES = {".parquet": "parquet", ".csv": "csv", ".duckdb": "duckdb", ".db": "duckdb"}
_TABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExportSummary:
    path: Path
    format: str
    rows: int
    table: str | None = None


def infer_format(dest: Path, fmt: str | None = None) -> str:
    """The output format: given explicitly, or from the file suffix (.parquet, .csv, .duckdb)."""
    if fmt is not None:
        if fmt not in FORMATS:
            raise RecvaeError(
                f"unknown export format {fmt!r}: expected one of {', '.join(FORMATS)}"
            )
        return fmt
    suffix = Path(dest).suffix.lower()
    if suffix not in _SUFFIXES:
        raise RecvaeError(
            f"cannot tell the export format of {dest} from its suffix: use .parquet, .csv, "
            "or .duckdb, or pass --format"
        )
    return _SUFFIXES[suffix]


def write_export(
    frames: Iterable[pl.DataFrame],
    dest: Path,
    schema: pl.Schema,
    fmt: str | None = None,
    table: str = "recommendations",
    overwrite: bool = False,
    marker: dict | None = None,
) -> ExportSummary:
    """Stream `frames` (all with `schema`) to `dest` atomically; return where and how many rows.

    `marker` (e.g. {"model_version": "v0003"}) is stored in a Parquet file's key-value metadata
    under "recvae", which is also what lets the next export replace the file. `overwrite` lets a
    DuckDB export replace a table whose columns are not the export's.
    """
    dest = Path(dest)
    fmt = infer_format(dest, fmt)
    if fmt == "parquet":
        rows = _write_parquet(frames, dest, schema, marker or {})
    elif fmt == "csv":
        rows = _write_csv(frames, dest, schema)
    else:
        rows = _write_duckdb(frames, dest, schema, table, overwrite)
    return ExportSummary(dest, fmt, rows, table if fmt == "duckdb" else None)


def _arrow_schema(schema: pl.Schema) -> pa.Schema:
    return pl.DataFrame(schema=schema).to_arrow().schema


def _as_arrow(frame: pl.DataFrame, schema: pl.Schema, arrow_schema: pa.Schema) -> pa.Table:
    if frame.schema != schema:
        frame = frame.cast(dict(schema))
    return frame.to_arrow().cast(arrow_schema)


def _write_parquet(
    frames: Iterable[pl.DataFrame], dest: Path, schema: pl.Schema, marker: dict
) -> int:
    import json

    import pyarrow.parquet as pq

    arrow_schema = _arrow_schema(schema)
    metadata = {EXPORT_METADATA_KEY: json.dumps({"kind": "recommendations", **marker})}
    rows = 0
    with (
        atomic_file(dest) as tmp,
        pq.ParquetWriter(tmp, arrow_schema.with_metadata(metadata), compression="zstd") as writer,
    ):
        for frame in frames:
            writer.write_table(_as_arrow(frame, schema, arrow_schema))
            rows += frame.height
    return rows


def _write_csv(frames: Iterable[pl.DataFrame], dest: Path, schema: pl.Schema) -> int:
    rows = 0
    with atomic_file(dest) as tmp, open(tmp, "wb") as handle:
        pl.DataFrame(schema=schema).write_csv(handle, include_header=True)
        for frame in frames:
            frame.cast(dict(schema)).write_csv(handle, include_header=False)
            rows += frame.height
    return rows


def _write_duckdb(
    frames: Iterable[pl.DataFrame], dest: Path, schema: pl.Schema, table: str, overwrite: bool
) -> int:
    import duckdb

    if not _TABLE_NAME.match(table):
        raise RecvaeError(
            f"DuckDB table name {table!r} must be letters, digits and underscores, e.g. "
            "recommendations"
        )
    staging = f"{table}__recvae_tmp"
    arrow_schema = _arrow_schema(schema)
    dest.parent.mkdir(parents=True, exist_ok=True)
    rows = 0
    try:
        con = duckdb.connect(str(dest))
    except duckdb.Error as error:
        raise RecvaeError(f"cannot open DuckDB database {dest}: {error}") from error
    try:
        _check_table_replaceable(con, dest, table, overwrite)
        con.execute(f'DROP TABLE IF EXISTS "{staging}"')
        con.register("recvae_chunk", pa.Table.from_batches([], schema=arrow_schema))
        con.execute(f'CREATE TABLE "{staging}" AS SELECT * FROM recvae_chunk')
        for frame in frames:
            con.register("recvae_chunk", _as_arrow(frame, schema, arrow_schema))
            con.execute(f'INSERT INTO "{staging}" SELECT * FROM recvae_chunk')
            rows += frame.height
        con.unregister("recvae_chunk")
        con.execute("BEGIN TRANSACTION")
        con.execute(f'DROP TABLE IF EXISTS "{table}"')
        con.execute(f'ALTER TABLE "{staging}" RENAME TO "{table}"')
        con.execute("COMMIT")
        con.execute("CHECKPOINT")
    except BaseException as error:
        _drop_staging(con, staging)
        if isinstance(error, duckdb.Error):
            raise RecvaeError(f"writing table {table} in {dest} failed: {error}") from error
        raise
    finally:
        con.close()
    return rows


def _check_table_replaceable(con: object, dest: Path, table: str, overwrite: bool) -> None:
    """Refuse to drop a table that is not a recvae export unless `overwrite`."""
    rows = con.execute(  # type: ignore[attr-defined]
        "SELECT column_name FROM information_schema.columns WHERE table_name = ? "
        "AND table_schema = 'main' ORDER BY ordinal_position",
        [table],
    ).fetchall()
    columns = tuple(row[0] for row in rows)
    if columns and columns != EXPORT_COLUMNS and not overwrite:
        raise RecvaeError(
            f"refusing to replace table {table} in {dest}: its columns ({', '.join(columns)}) are "
            "not a recvae recommendations export; choose another --table or pass --overwrite"
        )


def _drop_staging(con: object, staging: str) -> None:
    """Best effort: roll back an open transaction and remove the half-filled staging table."""
    import duckdb

    for statement in ("ROLLBACK", f'DROP TABLE IF EXISTS "{staging}"'):
        with contextlib.suppress(duckdb.Error):
            con.execute(statement)  # type: ignore[attr-defined]


@dataclass(frozen=True)
class ExportRequest:
    """Everything `recvae recommend` and the export job need to write one top-N export."""

    model: Path  # a model directory or a model store (its `current` model is used)
    history: Path  # a dataset directory or a log file ingested against the model's items
    dest: Path
    k: int = 100
    fmt: str | None = None
    table: str = "recommendations"
    users_file: Path | None = None
    allow_items_file: Path | None = None
    deny_items_file: Path | None = None
    exclude_seen: bool = True
    chunk_size: int = 1000
    item_block: int | None = None  # items per block for item-chunked top-K (None: all at once)
    shard: int = 0
    num_shards: int = 1
    ingest_options: object | None = None
    overwrite: bool = False  # replace a file at `dest` that recvae cannot tell it wrote


@dataclass(frozen=True)
class ExportResult:
    summary: ExportSummary
    model_version: str
    users: int
    fallback_users: int
    seconds: float
    notes: dict


def scoring_estimate(
    n_users: int, n_items: int, chunk_size: int, item_block: int | None
) -> MemoryEstimate:
    """What scoring adds to the loaded model: one chunk of users' scores over one item block
    (all items without a block), and the masked copy top-K works on."""
    rows = min(chunk_size, max(n_users, 1))
    columns = min(item_block or n_items, n_items)
    advice = "to need less: --item-block N (e.g. 50000) or a smaller --chunk-size"
    return MemoryEstimate("recommend", (("scores", 2 * rows * columns * FLOAT),), advice)


def export_top_n(request: ExportRequest, show_progress: bool = False) -> ExportResult:
    """Load the model and histories, score this shard's users in chunks, write atomically."""
    import time

    import numpy as np

    from recvae.artifact import item_popularity, load_artifact
    from recvae.registry import resolve_model_dir
    from recvae.scoring import (
        ScoringOptions,
        empty_frame,
        item_indices,
        load_history,
        read_ids,
        recommend_chunks,
        select_users,
        shard_users,
    )

    # fail on a bad destination before any work
    fmt = infer_format(request.dest, request.fmt)
    inputs = [request.model, request.history, request.users_file, request.allow_items_file]
    inputs.append(request.deny_items_file)
    check_output(
        request.dest, "export", [p for p in inputs if p is not None], overwrite=request.overwrite
    )
    if fmt == "duckdb" and Path(request.dest).is_file() and not is_duckdb_file(request.dest):
        raise RecvaeError(
            f"refusing to write the export to {request.dest}: it is not a DuckDB database"
        )
    model_dir, version = resolve_model_dir(request.model)
    artifact = load_artifact(model_dir)
    items = artifact.items
    user_ids, history, notes = load_history(request.history, items, request.ingest_options)
    wanted = read_ids(request.users_file, "user list") if request.users_file else None
    users = select_users(user_ids, history, wanted)
    users = users.take(shard_users(len(users), request.shard, request.num_shards))
    allow = deny = None
    if request.allow_items_file:
        allow, unknown = item_indices(read_ids(request.allow_items_file, "allow-list"), items)
        notes["allow_items"] = {"known": len(allow), "unknown_to_model": unknown}
    if request.deny_items_file:
        deny, unknown = item_indices(read_ids(request.deny_items_file, "deny-list"), items)
        notes["deny_items"] = {"known": len(deny), "unknown_to_model": unknown}
    popularity = item_popularity(model_dir)
    if popularity is None:
        # Older artifacts lack the training popularity: use the histories being scored.
        popularity = np.bincount(history.indices, minlength=len(items)).astype(np.float32)
        notes["popularity_source"] = "history being scored (model has no popularity.npy)"
    options = ScoringOptions(
        k=request.k,
        exclude_seen=request.exclude_seen,
        allow_items=allow,
        deny_items=deny,
        chunk_size=request.chunk_size,
        item_block=request.item_block,
    )
    check_fits(scoring_estimate(len(users), len(items), request.chunk_size, request.item_block))
    fallback_users = int((np.diff(users.history.indptr) == 0).sum())
    schema = empty_frame(users.ids.dtype, items.ids.dtype).schema
    start = time.perf_counter()
    with _progress(len(users), show_progress) as advance:
        frames = recommend_chunks(
            artifact.model, users, items, options, version, popularity, on_chunk=advance
        )
        summary = write_export(
            frames, request.dest, schema, request.fmt, request.table, request.overwrite,
            marker={"model_version": version, "shard": request.shard,
                    "num_shards": request.num_shards},
        )  # fmt: skip
    seconds = time.perf_counter() - start
    log.info(
        "exported %d rows for %d users (%d popularity fallback) with model %s to %s in %.1fs",
        summary.rows, len(users), fallback_users, version, summary.path, seconds,
        extra={"event": "export", "rows": summary.rows, "users": len(users),
               "fallback_users": fallback_users, "model_version": version,
               "path": str(summary.path), "seconds": round(seconds, 2)},
    )  # fmt: skip
    return ExportResult(summary, version, len(users), fallback_users, seconds, notes)


@contextlib.contextmanager
def _progress(total: int, show: bool) -> Iterator[Callable[[int], None]]:
    """A rich progress bar with users per second, or a no-op when not shown."""
    from recvae.logs import progress_bars

    if not progress_bars(show):
        yield lambda _n: None
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = (
        TextColumn("scoring users"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, transient=False) as progress:
        task = progress.add_task("users", total=total, rate="")

        def advance(n: int) -> None:
            progress.advance(task, n)
            speed = progress.tasks[task].speed
            progress.update(task, rate=f"{speed:,.0f} users/s" if speed else "")

        yield advance
