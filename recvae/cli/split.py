"""`recvae split`: not written yet (see the open issues)."""

import typer


def register(app: typer.Typer) -> None:
    """Add this module's commands to the app."""
