"""`recvae models list|show|add|promote|rollback|prune`: look after a model store."""

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
        model_json = version.path / "model.json"
        model = (
            json.loads(model_json.read_text()).get("model", "?") if model_json.is_file() else "?"
        )
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
    from recvae.registry import ModelStore

    model_store = ModelStore(store)
    name = version or model_store.current_name()
    if name is None:
        raise RecvaeError(f"model store {store} has no current model; name a version")
    entry = model_store.get(name)
    model_json = entry.path / "model.json"
    payload = {
        "version": entry.name,
        "current": entry.is_current,
        "path": str(entry.path),
        "model": json.loads(model_json.read_text()) if model_json.is_file() else None,
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
) -> None:
    """Copy a trained model directory into the store as the next version."""
    from recvae.registry import ModelStore

    model_store = ModelStore(store)
    version = model_store.add(model_dir)
    typer.echo(f"added {version.name}")
    if promote_it:
        model_store.promote(version.name, reason="added with --promote")
        typer.echo(f"current -> {version.name}")


@models_app.command()
def promote(
    store: Store,
    version: Annotated[str, typer.Argument(help="Version to put in production, e.g. v0003")],
) -> None:
    """Point `current` at a version (an atomic switch)."""
    from recvae.registry import ModelStore

    ModelStore(store).promote(version, reason="promoted by hand")
    typer.echo(f"current -> {version}")


@models_app.command()
def rollback(store: Store) -> None:
    """Point `current` back at the version in production before it."""
    from recvae.registry import ModelStore

    target = ModelStore(store).rollback()
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
