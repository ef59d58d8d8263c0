"""`recvae split`: add an evaluation split to a dataset directory."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from recvae.cli.bounds import strictly_between


def split(
    dataset_dir: Annotated[
        Path, typer.Argument(help="Dataset directory written by `recvae ingest`, e.g. data/ml-1m")
    ],
    protocol: Annotated[
        str,
        typer.Option(
            help="strong: hold out whole users (Mult-VAE paper); weak: hold out part of every "
            "user's items (LightGCN), e.g. --protocol strong"
        ),
    ] = "strong",
    valid_users: Annotated[
        int, typer.Option(min=0, help="strong only: validation users, e.g. --valid-users 10000")
    ] = 0,
    test_users: Annotated[
        int, typer.Option(min=0, help="strong only: test users, e.g. --test-users 10000")
    ] = 0,
    heldout_fraction: Annotated[
        float,
        typer.Option(
            callback=strictly_between(0, 1),
            help="Share of each evaluated user's items held out (strong) or of every user's "
            "items (weak), e.g. --heldout-fraction 0.2",
        ),
    ] = 0.2,
    by_time: Annotated[
        bool,
        typer.Option(
            "--by-time", help="weak only: hold out each user's latest items instead of random ones"
        ),
    ] = False,
    seed: Annotated[int, typer.Option(help="Seed for the random split, e.g. --seed 0")] = 0,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace a split the dataset already has")
    ] = False,
) -> None:
    """Split a dataset for evaluation and store the split inside its directory (atomically).

    Overwrites: only DATASET_DIR/split, and only with --overwrite when a split is already there;
    the interactions and vocabularies are never touched.
    """
    from rich.console import Console

    from recvae.data.dataset import Dataset
    from recvae.data.split import ProtocolSpec, make_split
    from recvae.errors import RecvaeError
    from recvae.io import atomic_dir

    if protocol not in ("strong", "weak"):
        raise RecvaeError(f"--protocol must be 'strong' or 'weak', got {protocol!r}")
    if protocol == "weak" and (valid_users or test_users):
        raise RecvaeError("--valid-users/--test-users apply to --protocol strong only")
    if protocol == "strong" and by_time:
        raise RecvaeError("--by-time applies to --protocol weak only")
    dataset = Dataset.load(dataset_dir)
    if dataset.split is not None and not overwrite:
        raise RecvaeError(
            f"{dataset_dir} already has a {dataset.split.protocol!r} split; "
            "pass --overwrite to replace it"
        )
    spec = ProtocolSpec(protocol, valid_users, test_users, heldout_fraction, by_time, seed)
    parts = make_split(dataset, spec)
    # Only split/ is replaced (temporary directory, then rename): the interactions stay untouched.
    with atomic_dir(Path(dataset_dir) / "split") as tmp:
        parts.save(tmp)
    console = Console()
    console.print(f"wrote a {protocol} split to {dataset_dir / 'split'}")
    console.print(f"  train: {parts.train.shape[0]} users, {parts.train.nnz} interactions")
    for name, part in (("valid", parts.valid), ("test", parts.test)):
        if part is not None:
            console.print(f"  {name}: {part.history.shape[0]} users, {part.heldout.nnz} held out")


def register(app: typer.Typer) -> None:
    """Add this module's commands to the app."""
    app.command(name="split")(split)
