"""The `recvae` command line: a thin typer app over the library.

Each subcommand lives in its own module with a `register(app)` function; heavy imports (torch,
duckdb) happen inside the commands so that `recvae --help` is quick. A `RecvaeError` becomes a
one-line red message and exit code 2 instead of a traceback.
"""

from __future__ import annotations

import sys

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


@app.callback()
def _root() -> None:
    """Mult-VAE collaborative filtering: ingest logs, train, evaluate, export top-N."""


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
        err_console.print(f"[bold red]error:[/] {escape(str(error))}", highlight=False)
        sys.exit(2)
