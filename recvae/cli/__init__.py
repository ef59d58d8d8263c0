"""The `recvae` command line: a thin typer app over the library.

Each subcommand lives in its own module with a `register(app)` function; heavy imports (torch,
duckdb) happen inside the commands so that `recvae --help` is quick. A `RecvaeError` becomes a
one-line red message and exit code 2 instead of a traceback.

Global options (before the subcommand) set up logging (recvae.logs: human or JSON lines) and,
for the commands that train or publish, an MLflow run (recvae.tracking):

    recvae --log-format json --mlflow-uri http://mlflow:5000 train data/ds --out models/vae
"""

from __future__ import annotations

import logging
import sys
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from recvae.errors import RecvaeError

app = typer.Typer(
    name="recvae",
    help="Mult-VAE collaborative filtering: ingest logs, train, evaluate, export top-N.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

err_console = Console(stderr=True, soft_wrap=True)  # one line in logs, whatever the width


def _register_commands() -> None:
    from recvae.cli import bench, demo, evaluate, ingest, models, recommend, split, train, tune

    for module in (ingest, split, train, evaluate, recommend, models, bench, tune, demo):
        module.register(app)
    from recvae.cli import nightly

    nightly.register(app)


# Commands whose runs are worth an MLflow run; `models list` or `version` are not.
TRACKED_COMMANDS = frozenset({"train", "tune", "nightly", "demo", "bench"})


_outcome: dict[str, bool] = {}  # this invocation's: did the subcommand return normally?


def _succeeded(*_args: object, **_kwargs: object) -> None:
    """Runs only when the subcommand returned normally: its MLflow run ends as FINISHED."""
    _outcome["ok"] = True


@app.callback(result_callback=_succeeded)
def _root(
    ctx: typer.Context,
    log_format: Annotated[
        str | None,
        typer.Option(
            "--log-format",
            envvar="RECVAE_LOG_FORMAT",
            help="human (default) or json: one JSON object per line on stderr, e.g. json",
        ),
    ] = None,
    log_level: Annotated[
        str | None,
        typer.Option(
            "--log-level", envvar="RECVAE_LOG_LEVEL", help="debug, info or warning, e.g. info"
        ),
    ] = None,
    mlflow_uri: Annotated[
        str | None,
        typer.Option(
            help="Track train/tune/nightly/demo/bench runs in MLflow (needs the mlflow package; "
            "default $MLFLOW_TRACKING_URI), e.g. http://mlflow:5000"
        ),
    ] = None,
    mlflow_experiment: Annotated[
        str | None,
        typer.Option(
            help="MLflow experiment (default $MLFLOW_EXPERIMENT_NAME, else recvae), e.g. nightly"
        ),
    ] = None,
) -> None:
    """Mult-VAE collaborative filtering: ingest logs, train, evaluate, export top-N."""
    from recvae import logs

    logs.configure(log_format, log_level)
    if ctx.invoked_subcommand in TRACKED_COMMANDS:
        from recvae import tracking

        sink = tracking.start_run(
            mlflow_uri, mlflow_experiment, run_name=ctx.invoked_subcommand,
            tags={"recvae.command": " ".join(sys.argv[1:])[:5000]},
        )  # fmt: skip
        _outcome["ok"] = False
        ctx.call_on_close(lambda: sink.end(failed=not _outcome["ok"]))


@app.command()
def version() -> None:
    """Print recvae's version and the versions of the libraries it runs on."""
    from recvae.provenance import package_versions

    for name, value in package_versions().items():
        typer.echo(f"{name} {value}")


_register_commands()


def main() -> None:
    try:
        app()
    except RecvaeError as error:
        # escape: messages quote config sections like [gate] that rich would read as markup
        # soft_wrap: one line however narrow the terminal (or pipe) is
        from recvae.logs import current_format

        if current_format() == "json":  # stderr stays one JSON record per line
            logging.getLogger("recvae.cli").error(str(error), extra={"event": "error"})
        else:
            message = f"[bold red]error:[/] {escape(str(error))}"
            err_console.print(message, highlight=False, soft_wrap=True)
        sys.exit(2)
