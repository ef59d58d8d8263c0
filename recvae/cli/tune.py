"""`recvae tune`: search a model's settings with Optuna on a dataset's validation part."""

from __future__ import annotations

import math
import shlex
from pathlib import Path
from typing import Annotated, Any

import typer

from recvae.cli.bounds import strictly_between
from recvae.cli.device_option import DeviceOption, use_device


def register(app: typer.Typer) -> None:
    """Add this module's commands to the app."""
    app.command("tune")(tune_command)


def tune_command(
    dataset_dir: Annotated[
        Path, typer.Argument(help="Dataset directory from `recvae ingest`, e.g. data/ml-1m")
    ],
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            help="Study directory (created; reused to resume), e.g. studies/vae. Must be new, "
            "empty, or a study recvae wrote",
        ),
    ],
    model: Annotated[
        str,
        typer.Option(
            help="multvae, multdae, recvae, als, bpr, ease, popularity or blend, e.g. --model als"
        ),
    ] = "multvae",
    trials: Annotated[
        int,
        typer.Option(
            min=1,
            help="Total trials the study should hold (resumed studies count theirs), e.g. 30",
        ),
    ] = 20,
    timeout: Annotated[
        float | None,
        typer.Option(
            callback=strictly_between(0, math.inf),
            help="Stop starting new trials after this many seconds, e.g. 3600",
        ),
    ] = None,
    sampler: Annotated[
        str, typer.Option(help="tpe (Bayesian), random or grid, e.g. --sampler random")
    ] = "tpe",
    pruner: Annotated[
        str,
        typer.Option(
            help="Stop weak Mult-VAE/DAE trials early: median, halving or none, e.g. halving"
        ),
    ] = "median",
    prune_warmup: Annotated[
        int,
        typer.Option(
            min=0, help="Epochs every Mult-VAE/DAE trial runs before it may be pruned, e.g. 5"
        ),
    ] = 10,
    metric: Annotated[
        str, typer.Option(help="Validation metric to maximise, e.g. ndcg@100 or recall@20")
    ] = "ndcg@100",
    space: Annotated[
        Path | None,
        typer.Option(help="TOML file overriding the default search space, e.g. space.toml"),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the sampler and every trial, e.g. 0")] = 0,
    reference: Annotated[
        bool,
        typer.Option(
            "--reference/--no-reference",
            help="Also train the default settings once, to compare against",
        ),
    ] = True,
    device: DeviceOption = None,
) -> None:
    """Tune a model's settings on the dataset's validation part and write the best config.

    Every model can be tuned; a blend's study searches its normalisation and members' settings
    (MODEL.SETTING, e.g. ease.l2) and tunes its weights on validation in every trial.
    STUDY_DIR gets best.toml (for `recvae train --model MODEL --config`), report.md with plots,
    trials.csv / trials.json and the Optuna study (study.journal). Running the same command
    again resumes the study; --trials is the total it should reach. Exits with code 1 when no
    trial completed.

    Overwrites: those output files inside STUDY_DIR (each replaced atomically); a directory
    recvae did not write, or one holding the dataset or --space, is refused.
    """
    import logging

    import optuna

    from recvae.io import check_output
    from recvae.logs import status_console
    from recvae.tuning.report import best_trial, write_outputs
    from recvae.tuning.study import StudyOptions, run_study

    use_device(device)
    check_output(out, "study", [p for p in (dataset_dir, space) if p is not None])
    console = status_console()
    optuna.logging.set_verbosity(logging.WARNING)
    command = shlex.join(
        ["recvae", "tune", str(dataset_dir), "--model", model, "--trials", str(trials)]
        + (["--timeout", f"{timeout:g}"] if timeout is not None else [])
        + ["--sampler", sampler, "--pruner", pruner, "--prune-warmup", str(prune_warmup)]
        + ["--metric", metric]
        + (["--space", str(space)] if space is not None else [])
        + (["--device", device] if device is not None else [])
        + ["--seed", str(seed)]
        + ([] if reference else ["--no-reference"])
        + ["--out", str(out)]
    )
    options = StudyOptions(
        dataset_dir=dataset_dir, out=out, model=model, trials=trials, timeout=timeout,
        sampler=sampler, pruner=pruner, metric=metric, space_file=space, seed=seed,
        reference=reference, prune_warmup=prune_warmup, command=command,
    )  # fmt: skip

    def on_trial(trial: Any, counted: int) -> None:
        from recvae.tuning.report import state_name

        attrs = trial.user_attrs
        value = f"{trial.value:.4f}" if trial.value is not None else "-"
        epochs = f", {attrs['epochs']} epochs" if attrs.get("epochs") else ""
        error = f": {attrs['error']}" if attrs.get("error") else ""
        console.print(
            f"trial {trial.number} ({counted}/{trials}) {state_name(trial)}: {value}"
            f"{epochs}, {attrs.get('seconds', 0):.1f}s{error}",
            highlight=False,
        )

    run = run_study(options, on_trial=on_trial, on_message=console.print)
    write_outputs(run)
    best = best_trial(run.study)
    if best is None:
        console.print(f"no trial completed; report in {out / 'report.md'}")
        raise typer.Exit(1)
    console.print(
        f"best trial {best.number}: valid {run.metric} {best.value:.4f}"
        + (
            f" (defaults {run.reference.metrics[run.metric]:.4f})"
            if run.reference is not None
            else ""
        )
        + f"; wrote {out / 'best.toml'} and {out / 'report.md'}"
    )
