"""`--device`, one option shared by the commands that run torch models (train, evaluate,
recommend, tune): where every Mult-VAE/DAE and RecVAE of the run trains and scores."""

from __future__ import annotations

from typing import Annotated

import typer

DeviceOption = Annotated[
    str | None,
    typer.Option(
        "--device",
        help="Where torch models (multvae, multdae, recvae, a blend's members) run: auto (CUDA "
        "when present), cpu, cuda or cuda:N; default: the model's [loop] device (training, cpu) "
        "or auto for a saved model, e.g. --device cuda",
    ),
]


def use_device(device: str | None) -> None:
    """Make `device` the run's device (checked now: no CUDA is one error line, exit code 2);
    None: each model's own setting."""
    from recvae.device import check_device_setting, set_run_device

    set_run_device(check_device_setting(device) if device is not None else None)
