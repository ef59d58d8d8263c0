"""`recvae ingest` (logs -> dataset directory) and `recvae synth` (a synthetic, learnable log)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from recvae.cli.reader_options import reader_options
from recvae.data.reader import ReaderOptions


def register(app: typer.Typer) -> None:
    """Add this module's commands to the app."""
    app.command("ingest")(ingest_command)
    app.command("synth")(synth_command)


@reader_options()
def ingest_command(
    sources: Annotated[
        list[str],
        typer.Argument(
            help="Log files read as one log (CSV/TSV, Parquet, NDJSON, DuckDB, MovieLens, "
            "LightGCN .txt; .gz accepted), or a MovieLens name, e.g. ml-1m or train.txt valid.txt"
        ),
    ],
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            help="Dataset directory to write, e.g. data/ml1m. Replaces only a dataset directory "
            "recvae wrote (or an empty one); anything else there is refused",
        ),
    ],
    min_rating: Annotated[
        float | None,
        typer.Option(help="Keep ratings strictly greater than this, e.g. 3.5 keeps 4 and 5"),
    ] = None,
    weights: Annotated[
        str, typer.Option(help="Matrix values: binary (1.0), rating, or count of events")
    ] = "binary",
    dedupe: Annotated[
        str,
        typer.Option(
            help="Rating of a repeated (user, item) pair: auto (last if there is a time "
            "column, else max), last, first or max"
        ),
    ] = "auto",
    since: Annotated[
        str | None, typer.Option(help="Keep events at or after this time, e.g. 2024-01-01")
    ] = None,
    until: Annotated[
        str | None, typer.Option(help="Keep events before this time, e.g. 2024-07-01")
    ] = None,
    min_user_count: Annotated[
        int, typer.Option(min=0, help="Keep users with at least this many interactions, e.g. 5")
    ] = 0,
    min_item_count: Annotated[
        int, typer.Option(min=0, help="Keep items with at least this many interactions, e.g. 5")
    ] = 0,
    k_core: Annotated[
        int,
        typer.Option(
            min=0, help="Repeat user and item count filters (at least K) until stable, e.g. 10"
        ),
    ] = 0,
    on_bad_rows: Annotated[
        str, typer.Option(help="error: stop at a bad row; skip: drop and count them")
    ] = "error",
    table: Annotated[
        str | None, typer.Option(help="Table in a DuckDB database source, e.g. events")
    ] = None,
    query: Annotated[
        str | None,
        typer.Option(help="SQL over a DuckDB database source, e.g. 'SELECT * FROM events'"),
    ] = None,
    split_sources: Annotated[
        str | None,
        typer.Option(help="Role of each source for a pre-split log, e.g. train,valid"),
    ] = None,
    item_vocab: Annotated[
        Path | None,
        typer.Option(
            help="Reuse the items of this dataset directory or items.parquet; unknown items "
            "are dropped and counted, e.g. data/yesterday"
        ),
    ] = None,
    cache_dir: Annotated[
        Path | None, typer.Option(help="MovieLens download cache, e.g. ~/.cache/recvae")
    ] = None,
    *,
    reader: ReaderOptions,
) -> None:
    """Read interaction logs, filter them, and write a dataset directory (matrix + vocabularies).

    How each file was read (format, delimiter, header, columns, and why) is printed and recorded
    in the dataset's manifest.json.

    Overwrites: --out when it is a dataset directory written by recvae (it is replaced as a
    whole); a directory or file recvae did not write, or one holding an input, is refused.
    """
    from recvae.data.ingest import IngestOptions, ingest
    from recvae.data.vocab import Vocabulary
    from recvae.io import check_output

    inputs = [Path(s) for s in sources if Path(s).exists()]
    replacing = check_output(out, "dataset", inputs + ([item_vocab] if item_vocab else []))

    options = IngestOptions(
        **reader.reader_fields(),
        min_rating=min_rating,
        weights=weights,
        dedupe=dedupe,
        since=since,
        until=until,
        min_user_count=min_user_count,
        min_item_count=min_item_count,
        k_core=k_core,
        on_bad_rows=on_bad_rows,
        table=table,
        query=query,
        split_sources=split_sources.split(",") if split_sources else None,
        cache_dir=cache_dir,
    )
    vocab = None
    if item_vocab is not None:
        path = item_vocab / "items.parquet" if item_vocab.is_dir() else item_vocab
        if not path.is_file():
            from recvae.errors import RecvaeError

            raise RecvaeError(f"{item_vocab}: no items.parquet to reuse as the item vocabulary")
        vocab = Vocabulary.load(path)
    dataset = ingest(sources, options, item_vocab=vocab)
    dataset.save(out)
    if replacing:
        typer.echo(f"replaced the existing dataset in {out}", err=True)
    print_summary(dataset.manifest, out)


def print_summary(manifest: dict, out: Path) -> None:
    """Rows after each step, then users, items and nnz; bad rows and unknown items if any."""
    from rich.console import Console
    from rich.table import Table

    from recvae.data.ingest import describe_reading

    table = Table(title=f"ingest -> {out}", show_header=True)
    table.add_column("step")
    table.add_column("rows", justify="right")
    table.add_column("dropped", justify="right")
    table.add_row("read", f"{manifest['rows_read']:,}", "")
    for step in manifest["filters"]:
        name = step["step"] + (f" #{step['iteration']}" if "iteration" in step else "")
        dropped = step["rows_before"] - step["rows_after"]
        table.add_row(name, f"{step['rows_after']:,}", f"{dropped:,}")
    counts = manifest["counts"]
    for key in ("users", "items", "interactions"):
        table.add_row(key if key != "interactions" else "nnz", f"{counts[key]:,}", "")
    console = Console()
    for line in describe_reading(manifest):
        console.print(line, highlight=False, markup=False)
    console.print(table)
    bad = manifest["bad_rows"]
    if bad["count"]:
        console.print(f"skipped {bad['count']:,} bad rows; first examples:")
        for example in bad["examples"]:
            console.print(f"  {example['file']}: {example['problem']}", highlight=False)
    unknown = manifest.get("dropped_unknown_items")
    if unknown:
        console.print(
            f"dropped {unknown['events']:,} events on {unknown['distinct_items']:,} items "
            "unknown to the item vocabulary"
        )


def synth_command(
    out: Annotated[
        Path, typer.Option("--out", help="File to write: .csv, .parquet or .duckdb, e.g. log.csv")
    ],
    users: Annotated[int, typer.Option(min=1, help="Number of users, e.g. 10000")] = 10_000,
    items: Annotated[int, typer.Option(min=1, help="Number of items, e.g. 2000")] = 2_000,
    interactions: Annotated[int, typer.Option(min=1, help="Number of rows, e.g. 500000")] = 500_000,
    seed: Annotated[int, typer.Option(help="Random seed, e.g. 0")] = 0,
    table: Annotated[str, typer.Option(help="Table name for a .duckdb output, e.g. events")] = (
        "events"
    ),
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace --out when a file is already there")
    ] = False,
) -> None:
    """Write a synthetic interaction log with popularity skew and latent taste structure.

    Overwrites: nothing unless --overwrite (a file at --out may be someone's real log).
    """
    from rich.progress import Progress

    from recvae.data.synth import SynthConfig, write_synthetic_log
    from recvae.io import check_output

    check_output(out, "synthetic log", overwrite=overwrite)

    config = SynthConfig(n_users=users, n_items=items, n_interactions=interactions, seed=seed)
    with Progress(transient=True) as progress:
        task = progress.add_task("generating", total=interactions)
        rows = write_synthetic_log(
            config, out, table=table, on_rows=lambda n: progress.advance(task, n)
        )
    typer.echo(f"wrote {rows:,} interactions ({users:,} users x {items:,} items) to {out}")
