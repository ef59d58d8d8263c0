"""`recvae evaluate`: score a trained model on held-out interactions without retraining.

Two sources of evaluation users:
- log files: `--history` (one or more files, read as one log) and `--heldout`, for instance a
  LightGCN `train.txt` and `test.txt`; users are matched by id, histories are folded in, items
  are mapped through the model's item vocabulary;
- a dataset directory's stored split: `--dataset DIR --part valid|test`.

Held-out items the model has never seen stay in the evaluation as items it cannot rank (they
count as misses), so a model is never flattered by dropping what it cannot find.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from recvae.cli.reader_options import reader_options
from recvae.data.reader import ReaderOptions

if TYPE_CHECKING:
    from recvae.data.split import Holdout
    from recvae.data.vocab import Vocabulary


def register(app: typer.Typer) -> None:
    """Add this module's commands to the app."""
    app.command("evaluate")(evaluate_command)


def holdout_from_logs(
    model_items: Vocabulary, history: list[Path], heldout: Path, options: Any
) -> tuple[Holdout, Vocabulary, dict[str, int], list[str]]:
    """Evaluation users from log files: (holdout, its item vocabulary, counts, how files were read).

    The item space is the model's items plus held-out items it does not know (scored -inf by
    `scorer_over_items`, so they count as misses). History items the model does not know are
    dropped: a model cannot fold in what it never saw. The history and held-out files are
    detected together, so a test.txt beside a LightGCN train.txt is read as LightGCN rows too.
    """
    import numpy as np
    import polars as pl
    import scipy.sparse as sp

    from recvae.data.ingest import describe_reading, ingest
    from recvae.data.sources import detect_sources
    from recvae.data.split import Holdout
    from recvae.data.vocab import Vocabulary
    from recvae.scoring import align_items

    options.validate()
    found = detect_sources([*history, heldout], options)
    lightgcn = options.format == "auto" and all(d.format == "lightgcn" for d in found)
    options = dataclasses.replace(options, format="lightgcn") if lightgcn else options
    history_ds = ingest(history, options)
    heldout_ds = ingest([heldout], options)
    reading = describe_reading(history_ds.manifest) + describe_reading(heldout_ds.manifest)
    known = model_items.ids
    extra = model_items.lookup(heldout_ds.items.ids).unknown
    if extra.dtype != known.dtype:
        known, extra = known.cast(pl.String), extra.cast(pl.String)
    target = Vocabulary(pl.concat([known, extra.rename(known.name)]), name=model_items.name)
    history_matrix = align_items(history_ds.matrix, history_ds.items, target)
    heldout_matrix = align_items(heldout_ds.matrix, heldout_ds.items, target)
    known = history_ds.users.lookup(heldout_ds.users.ids)
    # users with held-out items but no history get an empty row (scored from nothing)
    rows = np.full(len(heldout_ds.users), history_matrix.shape[0], dtype=np.int64)
    rows[known.found] = known.indices
    padded = sp.vstack([history_matrix, sp.csr_matrix((1, len(target)), dtype=np.float32)])
    history_rows = sp.csr_matrix(padded[rows])
    counts = {
        "users_without_history": len(known.unknown),
        "heldout_items_unknown_to_model": len(extra),
        "heldout_interactions_unknown_to_model": int(heldout_matrix[:, len(model_items) :].nnz),
        "history_interactions_dropped": int(history_ds.matrix.nnz - history_matrix.nnz),
    }
    users = np.arange(heldout_matrix.shape[0], dtype=np.int64)
    return Holdout(history_rows, heldout_matrix, users), target, counts, reading


@reader_options()
def evaluate_command(
    model_dir: Annotated[Path, typer.Argument(help="Model directory from `recvae train`")],
    history: Annotated[
        list[Path] | None,
        typer.Option(
            help="Users' histories (repeatable, read as one log), e.g. --history train.txt"
        ),
    ] = None,
    heldout: Annotated[
        Path | None, typer.Option(help="Held-out interactions to find, e.g. --heldout test.txt")
    ] = None,
    dataset: Annotated[
        Path | None,
        typer.Option(help="Evaluate a dataset directory's stored split instead, e.g. data/ml"),
    ] = None,
    part: Annotated[
        str, typer.Option(help="Which split part with --dataset: valid or test")
    ] = "test",
    k: Annotated[str, typer.Option(help="Cut-offs, comma separated, e.g. 20,50,100")] = "20,50,100",
    batch_size: Annotated[int, typer.Option(min=1, help="Users scored at once, e.g. 1000")] = 1000,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON object instead of a table")
    ] = False,
    *,
    reader: ReaderOptions,
) -> None:
    """Fold in each user's history, rank every unseen item, and score the held-out items."""
    from rich.console import Console
    from rich.table import Table

    from recvae.artifact import load_artifact
    from recvae.data.dataset import Dataset
    from recvae.data.ingest import IngestOptions
    from recvae.errors import RecvaeError
    from recvae.evaluate import evaluate
    from recvae.scoring import scorer_over_items

    try:
        ks = [int(value) for value in k.split(",") if value.strip()]
    except ValueError as error:
        raise RecvaeError(
            f"--k expects comma-separated integers, e.g. 20,50,100; got {k!r}"
        ) from error
    if not ks or min(ks) < 1:
        raise RecvaeError(f"--k expects cut-offs of at least 1, e.g. 20,50,100; got {k!r}")
    if dataset is not None and (history or heldout):
        raise RecvaeError("give either --dataset or --history/--heldout, not both")
    artifact = load_artifact(model_dir)
    notes: dict[str, Any] = {}
    reading: list[str] = []
    if dataset is not None:
        data = Dataset.load(dataset)
        if data.split is None or part not in ("valid", "test") or getattr(data.split, part) is None:
            raise RecvaeError(
                f"{dataset} has no {part!r} split part; create one with `recvae split` "
                "or pass --part valid|test"
            )
        holdout, target = getattr(data.split, part), data.items
    elif history and heldout is not None:
        holdout, target, notes, reading = holdout_from_logs(
            artifact.items, list(history), heldout, IngestOptions(**reader.reader_fields())
        )
    else:
        raise RecvaeError("give --history FILE and --heldout FILE, or --dataset DIR")
    scorer = scorer_over_items(artifact.model, artifact.items, target)
    result = evaluate(scorer, holdout, ks=ks, batch_size=batch_size)
    if as_json:
        payload = {**result.means, "users": result.users, **notes}
        payload["stderr"] = result.stderrs
        if reading:
            payload["read_as"] = reading
        typer.echo(json.dumps(payload))
        return
    table = Table(title=f"{model_dir}: {result.users:,} users")
    table.add_column("metric")
    table.add_column("mean", justify="right")
    table.add_column("std. error", justify="right")
    for key, value in result.means.items():
        table.add_row(key, f"{value:.4f}", f"{result.stderrs[key]:.4f}")
    console = Console()
    for line in reading:
        console.print(line, highlight=False, markup=False)
    console.print(table)
    for key, value in notes.items():
        console.print(f"  {key}: {value:,}")
