"""`recvae` with a fault injected, for tests/test_distributed.py: run under torchrun in place of
`-m recvae`, the rank named by RECVAE_KILL_RANK kills itself (SIGKILL, no clean-up) as it starts
the 0-based epoch RECVAE_KILL_AT_EPOCH, once the checkpoint of the epochs before it is on disk
(RECVAE_KILL_CHECKPOINT/last). Only the first attempt dies: a run torchrun restarts itself
(--max-restarts) goes on. Not a test module and not part of recvae: the fault stays here.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

from recvae import distributed
from recvae.cli import main
from recvae.models.vae import AutoencoderTrainer


def wait_for_checkpoint(last: Path, epochs: int, timeout: float = 60.0) -> None:
    """Until `last` holds the state after `epochs` epochs (rank 0 writes it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if json.loads((last / "state.json").read_text())["loop"]["epoch"] >= epochs:
                return
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.05)
    raise TimeoutError(f"no checkpoint of epoch {epochs} in {last}")


def inject() -> None:
    rank = int(os.environ["RECVAE_KILL_RANK"])
    at = int(os.environ["RECVAE_KILL_AT_EPOCH"])
    last = Path(os.environ["RECVAE_KILL_CHECKPOINT"]) / "last"
    train_epoch = AutoencoderTrainer.train_epoch

    def killing_train_epoch(self, epoch, step, on_batch):
        first_attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") == "0"
        if epoch == at and distributed.ranks().rank == rank and first_attempt:
            wait_for_checkpoint(last, at)
            os.kill(os.getpid(), signal.SIGKILL)
        return train_epoch(self, epoch, step, on_batch)

    AutoencoderTrainer.train_epoch = killing_train_epoch  # type: ignore[method-assign]


if __name__ == "__main__":
    inject()
    sys.argv[0] = "recvae"
    main()
