"""`recvae train`: train Mult-VAE or Mult-DAE on a dataset directory into a model directory."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from recvae.cli.bounds import CPU_COUNT, strictly_between


def register(app: typer.Typer) -> None:
    """Add this module's commands to the app."""
    app.command("train")(train_command)


def parse_set_options(values: list[str]) -> dict[str, Any]:
    """`key=value` pairs with TOML values (`hidden_dims=[600]`, `likelihood=gaussian`)."""
    import tomllib

    from recvae.errors import RecvaeError

    parsed: dict[str, Any] = {}
    for item in values:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise RecvaeError(f"--set expects key=value, got {item!r} (e.g. --set latent_dim=100)")
        try:
            parsed[key.strip()] = tomllib.loads(f"v = {raw.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            parsed[key.strip()] = raw.strip()  # a bare word such as gaussian
    return parsed


def train_command(
    dataset_dir: Annotated[
        Path, typer.Argument(help="Dataset directory from `recvae ingest`, e.g. data/ml-1m")
    ],
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            help="Model directory to write, e.g. models/vae. Replaces only a model directory "
            "recvae wrote (or an empty one); anything else there is refused",
        ),
    ],
    model: Annotated[
        str, typer.Option(help="multvae, multdae or recvae, e.g. --model recvae")
    ] = "multvae",
    config: Annotated[
        Path | None, typer.Option(help="TOML file of model settings, e.g. multvae.toml")
    ] = None,
    epochs: Annotated[int | None, typer.Option(min=1, help="Training epochs, e.g. 100")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed for everything random, e.g. 0")] = None,
    patience: Annotated[
        int | None,
        typer.Option(
            min=0, help="Stop after this many epochs without improvement (0: never), e.g. 20"
        ),
    ] = None,
    lr: Annotated[
        float | None,
        typer.Option(callback=strictly_between(0, math.inf), help="Adam learning rate, e.g. 0.001"),
    ] = None,
    batch_size: Annotated[
        int | None, typer.Option(min=1, help="Users per update, e.g. 500")
    ] = None,
    threads: Annotated[
        int | None,
        typer.Option(
            min=0, max=CPU_COUNT, help=f"Torch threads, 0 = all cores (at most {CPU_COUNT}), e.g. 2"
        ),
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set", help="Any other setting as key=value (TOML value), e.g. --set beta_cap=0.3"
        ),
    ] = None,
    valid_users: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Without a split in the dataset: users held out for validation (default 10%, "
            "at most 10,000), e.g. 5000",
        ),
    ] = None,
    validation: Annotated[
        bool,
        typer.Option(
            "--validation/--no-validation",
            help="--no-validation trains on every interaction for the full epoch budget",
        ),
    ] = True,
    checkpoint_dir: Annotated[
        Path | None,
        typer.Option(help="Keep best/last checkpoints here and resume from them, e.g. ckpt/"),
    ] = None,
    log: Annotated[
        Path | None,
        typer.Option(help="JSONL log, one line per epoch (default: CHECKPOINT_DIR/log.jsonl)"),
    ] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar per epoch")] = True,
) -> None:
    """Train a model on a dataset (its split's train part when it has one) and save it.

    Validation (early stopping, best epoch) uses the dataset's validation part, or a slice of
    users held out and recorded in the model's metadata. The model directory holds the weights,
    config, item vocabulary and metadata (metrics, data fingerprint, seed, versions).

    Overwrites: --out when it is a model directory written by recvae (replaced as a whole once
    training succeeds); a directory or file recvae did not write, or one holding an input
    (the dataset, --config, --checkpoint-dir, --log), is refused before training starts.
    """
    from rich.console import Console

    from recvae.artifact import Artifact, save_artifact
    from recvae.config import config_to_dict, load_config
    from recvae.data.dataset import Dataset
    from recvae.data.split import training_split
    from recvae.errors import RecvaeError
    from recvae.io import check_output
    from recvae.models import MODEL_CLASSES, model_class
    from recvae.provenance import run_info

    if model not in ("multvae", "multdae", "recvae"):
        known = ", ".join(sorted(MODEL_CLASSES))
        raise RecvaeError(
            f"recvae train trains multvae or multdae or recvae, got {model!r} "
            f"(registered models: {known})"
        )
    inputs = [p for p in (dataset_dir, config, checkpoint_dir, log) if p is not None]
    replacing = check_output(out, "model", inputs)
    cls: Any = model_class(model)
    overrides = {
        "epochs": epochs, "seed": seed, "patience": patience, "lr": lr,
        "batch_size": batch_size, "threads": threads, **parse_set_options(set_ or []),
    }  # fmt: skip
    settings = load_config(cls.config_class, config, overrides)
    dataset = Dataset.load(dataset_dir)
    run = training_split(dataset, valid_users, validation, seed=settings.seed)
    if log is None and checkpoint_dir is not None:
        log = checkpoint_dir / "log.jsonl"
    console = Console(stderr=True)
    valid_count = run.valid.history.shape[0] if run.valid is not None else 0
    console.print(
        f"training {model} on {run.train.shape[0]:,} users x {run.train.shape[1]:,} items "
        f"({run.train.nnz:,} interactions), validating on {valid_count:,} users "
        f"({run.validation['source']})"
    )
    started = time.perf_counter()
    trained = cls(settings).fit(
        run.train, run.valid, checkpoint_dir=checkpoint_dir, log_path=log, progress=progress
    )
    seconds = time.perf_counter() - started
    metadata = {
        "model": model,
        "config": config_to_dict(settings),
        "seed": settings.seed,
        "dataset": {
            "path": str(dataset_dir),
            "fingerprint": dataset.fingerprint(),
            "shape": list(dataset.matrix.shape),
            "nnz": int(dataset.matrix.nnz),
        },
        "validation": run.validation,
        "training": {
            "epochs_run": len(trained.history),
            "best_epoch": trained.best_epoch,
            "stopped": trained.stopped,
            "seconds": round(seconds, 2),
            "best_metrics": trained.best_metrics,
        },
        "run": run_info(),
    }
    save_artifact(Artifact(trained, dataset.items, metadata), out, train=run.train)
    if replacing:
        console.print(f"replaced the existing model in {out}")
    best = trained.best_metrics
    summary = ", ".join(
        f"{key} {best[key]:.4f}" for key in ("ndcg@20", "recall@20", "ndcg@100") if key in best
    )
    console.print(
        f"saved {out}: {len(trained.history)} epochs in {seconds:.1f}s ({trained.stopped}); "
        + (f"best epoch {trained.best_epoch}: {summary}" if best else "no validation")
    )
