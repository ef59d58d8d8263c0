"""`recvae recommend`: top-N for every user (or a list of users), streamed to Parquet/CSV/DuckDB."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from recvae.cli.device_option import DeviceOption, use_device
from recvae.cli.reader_options import reader_options
from recvae.data.reader import ReaderOptions


def register(app: typer.Typer) -> None:
    """Add this module's commands to the app."""
    app.command()(recommend)


@reader_options(format_flag="--history-format")
def recommend(
    model: Annotated[
        Path,
        typer.Argument(help="Model directory, or model store (uses its current model), e.g. store"),
    ],
    history: Annotated[
        Path,
        typer.Option(
            help="Users' histories: a dataset directory from `recvae ingest`, or a log file "
            "ingested against the model's items, e.g. data/ds or logs/today.parquet"
        ),
    ],
    out: Annotated[
        Path,
        typer.Option(
            help="Output file: .parquet, .csv or .duckdb, e.g. recs.parquet. Replaces only an "
            "export recvae wrote unless --overwrite"
        ),
    ],
    k: Annotated[int, typer.Option(min=1, help="Items per user, e.g. 100")] = 100,
    format: Annotated[
        str | None,
        typer.Option("--format", help="parquet, csv or duckdb (default: from --out suffix)"),
    ] = None,
    table: Annotated[
        str, typer.Option(help="Table name when writing a DuckDB file, e.g. recommendations")
    ] = "recommendations",
    users: Annotated[
        Path | None,
        typer.Option(help="Only these users: one id per line (.txt) or first column, e.g. u.txt"),
    ] = None,
    allow_items: Annotated[
        Path | None,
        typer.Option(help="Recommend only these items (one id per line), e.g. in_stock.txt"),
    ] = None,
    deny_items: Annotated[
        Path | None,
        typer.Option(help="Never recommend these items (one id per line), e.g. retired.txt"),
    ] = None,
    include_seen: Annotated[
        bool, typer.Option(help="Also recommend items users already interacted with")
    ] = False,
    chunk_size: Annotated[
        int,
        typer.Option(
            min=1, help="Users scored at once; memory ~ chunk x items x 4 bytes, e.g. 1000"
        ),
    ] = 1000,
    item_block: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Score items in blocks of this many with a running top-K: memory ~ chunk x "
            "block x 4 bytes instead of chunk x items; same rows as without, e.g. 50000 "
            "(default: all items at once)",
        ),
    ] = None,
    history_table: Annotated[
        str | None,
        typer.Option(help="Table when --history is a DuckDB database file, e.g. events"),
    ] = None,
    shard: Annotated[
        int, typer.Option(min=0, help="Which slice of users to score, 0-based, e.g. 0")
    ] = 0,
    num_shards: Annotated[
        int,
        typer.Option(min=1, help="Number of disjoint user slices to split the export into, e.g. 4"),
    ] = 1,
    overwrite: Annotated[
        bool,
        typer.Option(
            "--overwrite",
            help="Replace --out even when recvae cannot tell it wrote it (a CSV or Parquet file "
            "without the export's columns, a DuckDB table with other columns)",
        ),
    ] = False,
    device: DeviceOption = None,
    *,
    reader: ReaderOptions,
) -> None:
    """Score users from their history, drop seen items, write top-K rows with original ids.

    Rows: user_id, rank, item_id, score, model_version, fallback (True: the user had no usable
    history and got the popularity ranking). The output appears only once complete.

    Under torchrun (`torchrun --nproc-per-node N -m recvae recommend ...`) each process scores
    one shard of the users and rank 0 publishes the one export once all are done.

    Overwrites: --out when it is an export recvae wrote (Parquet marked in its metadata or with
    the export's columns, a CSV with the export's header, or --table in a DuckDB file with the
    export's columns; other tables are left alone). Anything else needs --overwrite; an input
    is never overwritten.
    """
    from rich.console import Console

    from recvae import distributed
    from recvae.data.ingest import IngestOptions
    from recvae.export import ExportRequest, export_top_n

    use_device(device)
    request = ExportRequest(
        model=model,
        history=history,
        dest=out,
        k=k,
        fmt=format,
        table=table,
        users_file=users,
        allow_items_file=allow_items,
        deny_items_file=deny_items,
        exclude_seen=not include_seen,
        chunk_size=chunk_size,
        item_block=item_block,
        shard=shard,
        num_shards=num_shards,
        ingest_options=IngestOptions(**reader.reader_fields(), table=history_table),
        overwrite=overwrite,
    )
    if distributed.launched():  # torchrun: one shard per process, one export (recvae.fanout)
        from recvae.fanout import export_across_ranks

        result = export_across_ranks(request, show_progress=True)
        if distributed.launched_rank() != 0:
            return  # rank 0 reports
    else:
        result = export_top_n(request, show_progress=True)
    where = f"{out} (table {result.summary.table})" if result.summary.table else str(out)
    rate = result.users / result.seconds if result.seconds > 0 else float("inf")
    Console().print(
        f"wrote {result.summary.rows:,} rows for {result.users:,} users "
        f"({result.fallback_users:,} popularity fallback) with model {result.model_version} "
        f"to {where} in {result.seconds:.1f}s ({rate:,.0f} users/s)"
    )
    for key, value in result.notes.items():
        if key == "read_as":
            for line in value:
                Console().print(line, highlight=False, markup=False)
        elif key in ("allow_items", "deny_items", "popularity_source", "dropped_interactions"):
            Console().print(f"  {key}: {value}")
