"""`recvae nightly`: the scheduled job (ingest, volume gate, train, publish, prune, report)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    """Add this module's commands to the app."""
    app.command("nightly")(nightly_command)


def nightly_command(
    config: Annotated[
        Path | None,
        typer.Option(
            "--config", help="The job's TOML file, e.g. /etc/recvae/nightly.toml (see the docs)"
        ),
    ] = None,
    check: Annotated[
        bool,
        typer.Option(
            "--check",
            help="Only validate the whole config and the sources, then exit (0 when fine, 2 not)",
        ),
    ] = False,
    example: Annotated[
        bool,
        typer.Option("--example", help="Print an example config with every key, then exit"),
    ] = False,
) -> None:
    """Run the nightly job once: ingest the logs, refuse a collapsed data volume, train (warm
    started from the current model), evaluate new and current on the same validation users,
    promote and export as one step, prune, and write a JSON run report.

    Exit codes: 0 promoted and exported; 1 failed (current model and export unchanged); 2 bad
    config or sources (nothing started); 3 refused by the quality gate; 4 refused by the volume
    gate. The report is WORK_DIR/last-run.json (and WORK_DIR/runs/<time>-<pid>/report.{json,md}).

    Writes: new versions and the `current` pointer in the store, WORK_DIR (dataset, checkpoint,
    reports), and the export, which it replaces only when it is a recvae export (a DuckDB file:
    only its export table); anything else there stops the run at --check.

    Example: recvae nightly --config nightly.toml --check && recvae nightly --config nightly.toml
    """
    from importlib.resources import files

    from recvae.errors import RecvaeError
    from recvae.nightly import check as check_config
    from recvae.nightly import run_nightly

    if example:
        typer.echo(files("recvae").joinpath("nightly_example.toml").read_text(), nl=False)
        return
    if config is None:
        raise RecvaeError("recvae nightly needs --config FILE (or --example to print one)")
    if check:
        checked = check_config(config)
        typer.echo(
            f"{checked.config_path}: config and {len(checked.sources)} source(s) OK "
            f"(model {checked.model}, export {checked.export})"
        )
        return
    raise typer.Exit(run_nightly(config))
