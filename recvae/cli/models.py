"""`recvae models list|show|add|promote|rollback|prune`: look after a model store.

Every subcommand but `add` refuses (one line, exit 2) a STORE that does not exist or is not a
store. `add` creates the store when the path is new or empty, and refuses any other directory.
Promoting a version that does not know some of the current model's items is refused without
--force; one that only adds items is promoted with a warning.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

models_app = typer.Typer(
    help="Model store: list versions, show one, add, promote, roll back, prune.",
    no_args_is_help=True,
)

Store = Annotated[Path, typer.Argument(help="Model store directory, e.g. models/")]
Force = Annotated[
    bool,
    typer.Option(
        "--force",
        help="Promote even when the version does not know some of the current model's items "
        "(the export then drops history on them)",
    ),
]


def _model_name(model_dir: Path) -> str:
    """The model name in model.json, or '?' when absent or damaged (listing must not fail)."""
    from recvae.errors import RecvaeError
    from recvae.models.base import read_model_json

    try:
        return read_model_json(model_dir)["model"]
    except RecvaeError:
        return "?"


def _promote(store: Any, version: str, reason: str, force: bool) -> None:
    from recvae.logs import status_console

    change = store.promote(version, reason=reason, force=force)
    typer.echo(f"current -> {version}")
    if change is not None:
        status_console(event="warning").print(
            f"[yellow]warning:[/] {change.describe()}", highlight=False, soft_wrap=True
        )


def register(app: typer.Typer) -> None:
    """Add this module's commands to the app."""
    app.add_typer(models_app, name="models")


def _headline_metrics(metadata: dict[str, Any]) -> str:
    """A short 'ndcg@100=0.41 recall@20=0.35' from whatever metrics the metadata holds."""
    training = metadata.get("training")
    best = training.get("best_metrics") if isinstance(training, dict) else None
    # nightly job and demo write "metrics"; `recvae train` writes training.best_metrics
    metrics = metadata.get("metrics") or best or {}
    if not isinstance(metrics, dict):
        return ""
    preferred = [key for key in ("ndcg@100", "recall@20", "recall@50") if key in metrics]
    keys = preferred or [key for key, value in metrics.items() if isinstance(value, float)][:3]
    return " ".join(f"{key}={metrics[key]:.4f}" for key in keys if isinstance(metrics[key], float))


@models_app.command("list")
def list_versions(store: Store) -> None:
    """List versions, oldest first; the current one is marked with *."""
    from rich.console import Console
    from rich.table import Table

    from recvae.registry import ModelStore

    model_store = ModelStore(store)
    table = Table("", "version", "model", "registered", "metrics")
    for version in model_store.list():
        model = _model_name(version.path)
        table.add_row(
            "*" if version.is_current else "",
            version.name,
            model,
            str(version.metadata.get("registered_at", "")),
            _headline_metrics(version.metadata),
        )
    Console().print(table)
    if model_store.current_name() is None:
        Console().print("no current model yet: promote one with `recvae models promote`")


@models_app.command()
def show(
    store: Store,
    version: Annotated[
        str | None, typer.Argument(help="Version, e.g. v0003 (default: current)")
    ] = None,
) -> None:
    """Print a version's metadata (metrics, data fingerprint, git commit) and model config."""
    from recvae.errors import RecvaeError
    from recvae.models.base import read_model_json
    from recvae.registry import ModelStore

    model_store = ModelStore(store)
    model_store.require_store()
    name = version or model_store.current_name()
    if name is None:
        raise RecvaeError(f"model store {store} has no current model; name a version")
    entry = model_store.get(name)
    try:
        model = read_model_json(entry.path)
    except RecvaeError as error:
        model = {"unreadable": str(error)}
    payload = {
        "version": entry.name,
        "current": entry.is_current,
        "path": str(entry.path),
        "model": model,
        "metadata": entry.metadata,
    }
    typer.echo(json.dumps(payload, indent=2, default=str))


@models_app.command()
def add(
    store: Store,
    model_dir: Annotated[Path, typer.Argument(help="Trained model directory, e.g. out/model")],
    promote_it: Annotated[
        bool, typer.Option("--promote", help="Also make it the current model")
    ] = False,
    force: Force = False,
) -> None:
    """Copy a trained model directory into the store as the next version.

    The model is loaded first: a damaged one is refused with one line, nothing is added.
    Writes: STORE/versions/vNNNN (a new version; nothing existing is replaced).
    """
    from recvae.artifact import load_artifact
    from recvae.io import check_output
    from recvae.registry import ModelStore

    check_output(store, "model store")
    load_artifact(model_dir)
    model_store = ModelStore(store)
    version = model_store.add(model_dir)
    typer.echo(f"added {version.name}")
    if promote_it:
        _promote(model_store, version.name, "added with --promote", force)


@models_app.command()
def promote(
    store: Store,
    version: Annotated[str, typer.Argument(help="Version to put in production, e.g. v0003")],
    force: Force = False,
) -> None:
    """Point `current` at a version (an atomic switch).

    Refused without --force when the version does not know some of the current model's items.
    """
    from recvae.registry import ModelStore

    _promote(ModelStore(store), version, "promoted by hand", force)


@models_app.command()
def rollback(store: Store) -> None:
    """Point `current` back at the version in production before it."""
    from recvae.registry import ModelStore

    model_store = ModelStore(store)
    model_store.require_store()
    target = model_store.rollback()
    typer.echo(f"current -> {target}")


@models_app.command()
def prune(
    store: Store,
    keep: Annotated[int, typer.Option(min=1, help="Newest versions to keep, e.g. 5")] = 5,
) -> None:
    """Delete old versions, keeping the newest N, the current one and the rollback target."""
    from recvae.registry import ModelStore

    removed = ModelStore(store).prune(keep)
    typer.echo(f"removed {', '.join(removed)}" if removed else "nothing to remove")
