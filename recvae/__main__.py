"""`python -m recvae` runs the same typer app as the `recvae` console command."""

from recvae.cli import main

main()
