"""`recvae train`: train any model, configured one way for all, into a model directory."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any

import typer

from recvae.cli.bounds import CPU_COUNT, strictly_between
from recvae.cli.device_option import DeviceOption, use_device


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


MODEL_HELP = (
    "auto (the default: fits a fixed set of candidates within --budget and keeps the best on "
    "validation), or one model: multvae, multdae, recvae, joint, ease, sparse_ease, gfcf, als, "
    "bpr, popularity, blend, e.g. --model ease"
)


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
    model: Annotated[str, typer.Option(help=MODEL_HELP)] = "auto",
    config: Annotated[
        Path | None,
        typer.Option(
            help="TOML file of the model's settings plus a [loop] table (blend: [[members]]), "
            "e.g. multvae.toml; see docs/training.md"
        ),
    ] = None,
    epochs: Annotated[int | None, typer.Option(min=1, help="Training epochs, e.g. 100")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed for everything random, e.g. 0")] = None,
    patience: Annotated[
        int | None,
        typer.Option(
            min=0,
            help="Stop after this many validations without improvement (0: never; default: "
            "scaled with the data set, at least 10 epochs and 500 updates), e.g. 20",
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
            min=0, max=CPU_COUNT, help=f"CPU threads, 0 = all cores (at most {CPU_COUNT}), e.g. 2"
        ),
    ] = None,
    metric: Annotated[
        str | None,
        typer.Option(
            help="Validation metric: picks the best epoch and a blend's weights, and leads the "
            "saved evaluation (default: the model's, ndcg@100), e.g. ndcg@20"
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
            "at most 10,000; --model auto: at least 1,000 where 3/4 are left), e.g. 5000",
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
    budget: Annotated[
        str | None,
        typer.Option(
            help="--model auto: time for choosing and refitting, e.g. 90s, 30m, 2h or 1h30m "
            "(default: scaled with the data set, 3 minutes + 1 per 100,000 interactions)"
        ),
    ] = None,
    device: DeviceOption = None,
) -> None:
    """Train any model on a dataset (its split's train part when it has one) and save it.

    Validation (early stopping, best epoch, a blend's tuned weights) uses the dataset's
    validation part, or a slice of users held out and recorded in the model's metadata. The
    model directory holds the weights, config, item vocabulary and metadata (validation
    metrics, data fingerprint, seed, versions).

    Overwrites: --out when it is a model directory written by recvae (replaced as a whole once
    training succeeds); a directory or file recvae did not write, or one holding an input
    (the dataset, --config, --checkpoint-dir, --log), is refused before training starts.

    Under torchrun (`torchrun --nproc-per-node N -m recvae train ...`) Mult-VAE/DAE train
    data-parallel over the N processes; rank 0 alone validates and writes (README "GPUs and
    clusters").
    """
    from recvae import distributed
    from recvae.data.dataset import Dataset
    from recvae.data.split import ProtocolSpec
    from recvae.io import check_output
    from recvae.logs import status_console
    from recvae.models.configs import setting_types
    from recvae.workflow.fit import TrainSpec, fit_model

    use_device(device)
    inputs = [p for p in (dataset_dir, config, checkpoint_dir, log) if p is not None]
    replacing = check_output(out, "model", inputs)
    if model == "auto" or budget is not None:
        given = {"--epochs": epochs, "--patience": patience, "--lr": lr,
                 "--batch-size": batch_size, "--set": set_ or None,
                 "--checkpoint-dir": checkpoint_dir, "--log": log}  # fmt: skip
        train_auto(
            dataset_dir, out, model, config, budget, seed, threads, metric, valid_users,
            validation, replacing, [flag for flag, value in given.items() if value is not None],
        )  # fmt: skip
        return
    if log is not None:
        check_output(log, "training log")  # it is rewritten on every run
    overrides = {
        "epochs": epochs, "seed": seed, "patience": patience, "lr": lr,
        "batch_size": batch_size, "threads": threads, "device": device,
        **parse_set_options(set_ or []),
    }  # fmt: skip
    if metric is not None and "metric" in setting_types(model):
        overrides["metric"] = metric
    spec = TrainSpec.from_toml(model, config, loop_overrides(model, overrides))
    main = join_torchrun(spec)
    dataset = Dataset.load(dataset_dir)
    split_seed = spec.seed if spec.seed is not None else (seed or 0)
    protocol = ProtocolSpec(
        "auto" if validation else "none", valid_users=valid_users or 0, seed=split_seed
    )
    if log is None and checkpoint_dir is not None:
        log = checkpoint_dir / "log.jsonl"
    console = status_console(quiet=not main)  # under torchrun, rank 0 reports
    ranks = distributed.ranks()
    world = f" on {ranks.world} processes" if ranks.world > 1 else ""
    console.print(f"training {model} on {dataset_dir} ({dataset.matrix.nnz:,} interactions){world}")
    result = fit_model(
        dataset, spec, protocol, checkpoint_dir=checkpoint_dir, log_path=log,
        progress=progress, metric=metric, dataset_path=dataset_dir,
    )  # fmt: skip
    if main:
        result.save(out)
    distributed.barrier()  # every rank returns once the model is written
    distributed.shutdown()
    meta = result.metadata
    split, training = meta["split"], meta["training"]
    console.print(
        f"trained on {split['train_users']:,} users, validated on {split['valid_users']:,} "
        f"({split['source']}) in {training['seconds']:.1f}s"
    )
    if replacing:
        console.print(f"replaced the existing model in {out}")
    summary = ", ".join(
        f"{key} {value:.4f}"
        for key, value in meta["metrics"].items()
        if key in ("ndcg@20", "recall@20", "ndcg@100")
    )
    epochs_note = (
        f"{training['epochs_run']} epochs ({training['stopped']}), best epoch "
        f"{training['best_epoch']}; "
        if "epochs_run" in training
        else ""
    )
    weights = f"weights {meta['config']['weights']}; " if model == "blend" else ""
    console.print(
        f"saved {out}: {epochs_note}{weights}"
        + (f"validation {summary}" if summary else "no validation")
    )


def join_torchrun(spec: Any) -> bool:
    """Under torchrun: join the process group (gloo on the CPU, NCCL on CUDA) for a model that
    trains data-parallel, refuse the others. Returns whether this process writes the output."""
    from recvae import distributed
    from recvae.errors import RecvaeError

    if not distributed.launched():
        return True
    if spec.model not in ("multvae", "multdae"):
        raise RecvaeError(
            f"data-parallel training (torchrun) supports multvae and multdae, not {spec.model}; "
            "run it as one process"
        )
    from recvae.device import model_device

    return distributed.init_from_env(model_device(spec.config.loop.device)).is_main


def loop_overrides(model: str, overrides: dict[str, Any]) -> dict[str, Any]:
    """The command's flags as settings of `model` (None = not given). ALS and BPR call their
    thread count `num_threads`; a model without randomness (EASE, popularity, a blend, whose
    members have their own) has no `seed`: --seed then seeds the validation split only. Any
    other key the model lacks fails in its config check."""
    from recvae.models.configs import setting_types

    given = {key: value for key, value in overrides.items() if value is not None}
    known = setting_types(model)
    if "threads" in given and "threads" not in known and "num_threads" in known:
        given["num_threads"] = given.pop("threads")
    if "seed" not in known:
        given.pop("seed", None)
    if "device" not in known:  # ALS, BPR, popularity; a blend's members take --device
        given.pop("device", None)  # through the run's device (recvae.device.set_run_device)
    return given


def train_auto(
    dataset_dir: Path,
    out: Path,
    model: str,
    config: Path | None,
    budget: str | None,
    seed: int | None,
    threads: int | None,
    metric: str | None,
    valid_users: int | None,
    validation: bool,
    replacing: bool,
    unused: list[str],
) -> None:
    """`recvae train --model auto`: choose among the fixed candidates within the budget
    (recvae.workflow.auto), print every candidate's row, save the refitted winner."""
    from recvae import distributed
    from recvae.config import load_config
    from recvae.data.dataset import Dataset
    from recvae.data.split import ProtocolSpec
    from recvae.errors import RecvaeError
    from recvae.logs import status_console
    from recvae.workflow.auto import AutoConfig, fit_auto, format_seconds

    if model != "auto":
        raise RecvaeError(f"--budget is for --model auto, not --model {model}")
    if unused:
        raise RecvaeError(
            f"{', '.join(unused)} cannot be used with --model auto (the default): it chooses "
            "each candidate's settings itself (give --budget, --metric, --seed, --threads or "
            "--config), or name the model to train with them, e.g. --model multvae"
        )
    if not validation:
        raise RecvaeError(
            "--model auto (the default) picks by validation: drop --no-validation, or name the "
            "model to train on every interaction, e.g. --model multvae"
        )
    if distributed.launched():
        raise RecvaeError(
            "--model auto (the default) runs as one process; under torchrun name a model that "
            "trains data-parallel: --model multvae or --model multdae"
        )
    overrides = {"budget": budget, "seed": seed, "threads": threads, "metric": metric}
    settings = load_config(AutoConfig, config, overrides)
    dataset = Dataset.load(dataset_dir)
    protocol = ProtocolSpec("auto", valid_users=valid_users or 0, seed=settings.seed)
    console = status_console()
    console.print(f"training auto on {dataset_dir} ({dataset.matrix.nnz:,} interactions)")

    def say(line: str) -> None:
        console.print(line, markup=False, highlight=False)

    result = fit_auto(dataset, settings, protocol, say=say, dataset_path=dataset_dir)
    result.fit.save(out)
    summary = result.summary
    say(candidate_table(summary))
    if replacing:
        console.print(f"replaced the existing model in {out}")
    metric_name = summary["metric"]
    refit = (
        f"refitted on all data in {format_seconds(summary['refit_seconds'])}"
        if summary["refit"]
        else "not refitted"
    )
    say(
        f"saved {out}: {result.winner} ({summary['winner_model']}), validation {metric_name} "
        f"{result.fit.metadata['metrics'][metric_name]:.4f}; {refit}; "
        f"{format_seconds(summary['total_seconds'])} of the {summary['budget']} budget"
    )


def candidate_table(summary: dict[str, Any]) -> str:
    """The candidates as a plain text table: score, time and why one was skipped."""
    metric = summary["metric"]
    width = max(len("candidate"), *(len(row["label"]) for row in summary["candidates"]))
    lines = [f"{'candidate':<{width}} {'status':<8} {metric:>10} {'seconds':>9}  notes"]
    for row in summary["candidates"]:
        score = f"{row['metrics'][metric]:.4f}" if row["status"] == "fitted" else "-"
        seconds = f"{row['fit_seconds']:.1f}" if row.get("fit_seconds") is not None else "-"
        notes = row.get("reason") or ""
        if row.get("epochs_run"):
            notes = f"{row['epochs_run']} epochs ({row['stopped']}), best {row['best_epoch']}"
        if row.get("weights"):
            notes = f"{' + '.join(row['members'])}, weights {row['weights']}"
        folds = row.get("fold_metrics") or []
        if len(folds) > 1:  # the score is pooled over the folds' users
            each = " / ".join(f"{value:.4f}" for value in folds)
            notes = f"{notes}; folds {each}" if notes else f"folds {each}"
        if row["label"] == summary["winner"]:
            notes = f"WINNER; {notes}" if notes else "WINNER"
        label, status = row["label"], row["status"]
        lines.append(f"{label:<{width}} {status:<8} {score:>10} {seconds:>9}  {notes}")
    return "\n".join(lines)
