"""`recvae bench`: run a benchmark suite and write a dated report directory."""

from __future__ import annotations

import dataclasses
import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer


def parse_data_paths(values: list[str]) -> dict[str, Path]:
    """['ml-1m=../data/ml-1m'] -> {'ml-1m': Path('../data/ml-1m')}, refusing malformed pairs."""
    from recvae.errors import RecvaeError

    paths: dict[str, Path] = {}
    for value in values:
        name, sep, path = value.partition("=")
        if not sep or not name or not path:
            raise RecvaeError(f"--data expects NAME=PATH, got {value!r}")
        paths[name] = Path(path)
    return paths


def bench(
    config: Annotated[
        Path, typer.Argument(help="Suite file (TOML), e.g. benchmarks/suites/ml-1m.toml")
    ],
    data: Annotated[
        list[str] | None,
        typer.Option(
            help="Path of a data set named in the suite, repeatable, "
            "e.g. --data ml-1m-lightgcn=../shared/datasets/ml-1m-lightgcn"
        ),
    ] = None,
    out: Annotated[
        Path, typer.Option(help="Where the dated report directory goes, e.g. benchmarks/reports")
    ] = Path("benchmarks/reports"),
    skip_missing: Annotated[
        bool,
        typer.Option(
            "--skip-missing",
            help="Leave out data sets whose path does not exist (with a message), not fail",
        ),
    ] = False,
    keep_models: Annotated[
        Path | None,
        typer.Option(
            help="Also save every fitted model under DIR/<data set>/<model>/<settings>-seed<S> "
            "(to reuse a long fit, e.g. EASE on Gowalla, in a blend)"
        ),
    ] = None,
) -> None:
    """Run every model of a suite on every data set, tune on validation, write the report."""
    from recvae.bench.config import load_suite
    from recvae.bench.report import write_report
    from recvae.bench.runner import run_suite
    from recvae.errors import RecvaeError
    from recvae.logs import status_console

    console = status_console()
    suite = load_suite(config, parse_data_paths(data or []))
    if skip_missing:
        present = [d for d in suite.datasets if d.path is None or d.path.exists()]
        for missing in [d for d in suite.datasets if d not in present]:
            console.print(f"[yellow]skipping data set {missing.name}: {missing.path} not found")
        if not present:
            raise RecvaeError("none of the suite's data sets exist here; nothing to run")
        suite = dataclasses.replace(suite, datasets=present)
    command = "recvae bench " + " ".join(shlex.quote(a) for a in sys.argv[2:])
    results = run_suite(
        suite,
        progress=lambda message: console.print(message, highlight=False),
        command=command,
        on_update=lambda partial: write_report(partial, out),  # a stopped run leaves its numbers
        keep_models=keep_models,
    )
    dest = write_report(results, out)
    console.print(f"report written to {dest}")
    for summary in results.summaries:
        shown = summary.error or ", ".join(
            f"{k} {summary.metrics[k]:.4f}"
            for k in ("recall@20", "ndcg@20")
            if k in summary.metrics
        )
        console.print(f"  {summary.dataset} {summary.label}: {shown}", highlight=False)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the app."""
    app.command(name="bench")(bench)
